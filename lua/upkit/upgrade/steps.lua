-- upkit.upgrade.steps: the step library of the bundled procedures. Each
-- function returns a new step table; a procedure may rename it or wrap it.
local upkit = require "upkit"
local fs = require "upkit.fs"
local json = require "upkit.json"
local log = require "upkit.log"
local octopus = require "upkit.octopus"
local version = require "upkit.version"
local H = require "upkit.upgrade.handles"
local I = require "upkit.upgrade.instance"
local V = require "upkit.upgrade.versions"
local D = require "upkit.upgrade.database"
local util = require "upkit.util"
local F = require "upkit.upgrade.folders"

local S = {}

local function hashfile(path) return require("upkit.hash").file("sha256", path) end

--[[
S.machine_needs(ctx [, with_msiexec]) -> needs: the programs of this machine the
steps call (server_exe, the service control and file version programs when
given, msiexec when the step installs).
]]
function S.machine_needs(ctx, with_msiexec)
  local p = ctx.params
  local programs = { p.server_exe }
  for _, v in ipairs { p.service_control or "", p.file_version or "", with_msiexec and p.msiexec or "" } do
    if v ~= "" then programs[#programs + 1] = v end
  end
  return { programs = programs }
end

--[[
Preflight: the REST API answers with this key; the command line is the program
of this instance and of the version the API reports; the instance's
configuration file and folders are known. Run: the installed version (from the
API), the configuration file (list-instances) and the folders.
]]
function S.connect()
  return {
    name = "connect",
    describe = "reach the server's API and command line; note the installed version, config file and folders",
    needs = function(ctx) return S.machine_needs(ctx) end,
    check = function(ctx)
      local api, cli = H.api(ctx), H.cli(ctx)
      local v = api:version()
      local program = cli:program_version()
      if not version.eq(program, v) then
        upkit.error("VERSION_MISMATCH", string.format("the program %s is Octopus %s but the API reports %s: is " ..
          "server_exe the program of instance %s?", cli.exe, program, v, ctx.params.instance))
      end
      cli:config_file()
      H.server_folders(ctx)
      return true
    end,
    run = function(ctx)
      local v = H.api(ctx):version()
      ctx.log("Octopus Server %s at %s", v, ctx.params.server_url)
      return { source_version = v, config_file = H.cli(ctx):config_file(), server_folders = H.server_folders(ctx) }
    end,
  }
end

-- The master key, written with mode 0600. Without it a database backup is useless.
function S.master_key()
  return {
    name = "backup-master-key",
    describe = "save the master key (show-master-key) with mode 0600",
    -- A key saved earlier in backup_dir must be this server's: a backup made with
    -- another key could never be restored.
    check = function(ctx)
      local file = ctx.params.backup_dir .. "/master-key.txt"
      if not fs.exists(file) then return true end
      if (fs.read(file):gsub("%s+$", "")) ~= H.cli(ctx):master_key() then
        upkit.error("MASTER_KEY_MISMATCH", string.format("the master key in %s is not the master key of instance %s: " ..
          "choose another backup_dir, or remove the file if it is stale", file, ctx.params.instance))
      end
      return true
    end,
    done = function(ctx) return fs.exists(ctx.params.backup_dir .. "/master-key.txt") end,
    run = function(ctx)
      F.private_dir(ctx.params.backup_dir)
      local key = H.cli(ctx):master_key()
      local file = ctx.params.backup_dir .. "/master-key.txt"
      fs.write(file, key .. "\n", { mode = "0600" })
      ctx.log("master key saved to %s", file)
      return { master_key_file = file }
    end,
  }
end

-- The licence and the server configuration (its file, and what the command line reads from it).
-- What the server says now: { ["license.xml"] =, [instance .. ".config"] =, ["configuration.json"] = }.
local function licence_and_config_now(ctx)
  local cfgfile = ctx.state.config_file or H.cli(ctx):config_file()
  return {
    ["license.xml"] = H.api(ctx):get("/api/licenses/licenses-current").LicenseText or "",
    [ctx.params.instance .. ".config"] = H.read_file(ctx, cfgfile),
    ["configuration.json"] = json.encode(H.cli(ctx):configuration(), { pretty = true }),
  }, cfgfile
end

function S.licence_and_config()
  return {
    name = "backup-licence-config",
    describe = "save the licence, the instance's config file and its configuration settings",
    -- Done only when the saved files are what this server says now: files left
    -- in backup_dir by another server or an older backup are saved over.
    done = function(ctx)
      local d = ctx.params.backup_dir
      for f, now in pairs((licence_and_config_now(ctx))) do
        if not fs.exists(d .. "/" .. f) or fs.read(d .. "/" .. f) ~= now then return false end
      end
      return true
    end,
    run = function(ctx)
      local d = F.private_dir(ctx.params.backup_dir)
      local now, cfgfile = licence_and_config_now(ctx)
      -- the config file may hold secrets (a connection string password): 0600
      for f, data in pairs(now) do fs.write(d .. "/" .. f, data, { mode = "0600" }) end
      ctx.log("licence and configuration saved in %s", d)
      return { config_file = cfgfile }
    end,
  }
end

-- Maintenance mode on (remembering whether it was on already).
function S.maintenance_on(name)
  return {
    name = name or "maintenance-on",
    describe = "turn maintenance mode on: users cannot change anything or queue tasks",
    changes = true,
    -- journalled before the change: a run killed after turning it on knows, on
    -- resume, that it was off before (issue 18.12)
    before = function(ctx) return { was_on = H.api(ctx):maintenance() } end,
    run = function(ctx)
      local api = H.api(ctx)
      local was = ctx.before and ctx.before.was_on
      if was == nil then was = api:maintenance() end
      if not was then api:set_maintenance(true) end
      ctx.log(was and "maintenance mode was already on" or "maintenance mode is on")
      return { maintenance_was_on = was }
    end,
    -- back off only when this run turned it on
    undo = function(ctx)
      local was = ctx.state.maintenance_was_on
      if was == nil and ctx.before then was = ctx.before.was_on end
      if was then ctx.log("maintenance mode was on before the run; left on") return end
      H.api(ctx):set_maintenance(false)
      ctx.log("maintenance mode is off")
    end,
  }
end

-- Maintenance mode back off, unless it was on before this procedure.
function S.maintenance_off(name)
  return {
    name = name or "maintenance-off",
    describe = "turn maintenance mode off again (unless it was on before)",
    changes = true,
    run = function(ctx)
      if ctx.state.maintenance_was_on then
        ctx.log("maintenance mode was on before this procedure; leaving it on")
        return
      end
      H.api(ctx):set_maintenance(false)
      ctx.log("maintenance mode is off")
      return { maintenance_turned_off = true }
    end,
    undo = function(ctx)
      if ctx.state.maintenance_turned_off then H.api(ctx):set_maintenance(true) ctx.log("maintenance mode is on again") end
    end,
  }
end

--[[
S.maintenance_rescue(name) -> an on_failure step: after a failure, maintenance
mode goes back off when this run turned it on (maintenance-on's state) and no
step that changes the server more than that has finished (ctx.state has no
stopped_instances, no database restore, no install). Otherwise it is left on,
and the summary says so.
]]
function S.maintenance_rescue(name)
  return {
    name = name or "maintenance-back-off",
    describe = "after a failure before the service was touched: maintenance mode back off if this run turned it on",
    on_failure = true,
    run = function(ctx)
      local st = ctx.state
      if st.maintenance_was_on ~= false then return end
      if st.stopped_instances or st.installed or st.database_restored or st.maintenance_turned_off then
        ctx.log("the server was changed beyond maintenance mode: maintenance mode stays on")
        return
      end
      H.api(ctx):set_maintenance(false)
      ctx.log("nothing but maintenance mode was changed: maintenance mode is off again")
      return { maintenance_was_on = true }
    end,
  }
end

--[[
S.state_summary(ctx) -> lines: the state a failed run left the server in: service
stopped (ctx.state), maintenance mode, the program's and the database's versions
(read now, through the command line and the database, else what ctx.state
recorded), and the command that puts the backup back once there is one.
]]
function S.state_summary(ctx)
  local st, lines = ctx.state, {}
  if st.stopped_instances and #st.stopped_instances > 0 and not st.started then
    lines[#lines + 1] = "service stopped: " .. table.concat(st.stopped_instances, ", ")
  else
    lines[#lines + 1] = "service: as it was (not stopped by this run)"
  end
  if st.maintenance_was_on == false and not st.maintenance_turned_off then
    lines[#lines + 1] = "maintenance mode: on (turned on by this run)"
  end
  local okp, program = pcall(function() H.cli(ctx):forget_version() return H.cli(ctx):program_version() end)
  program = okp and program or (st.installed and st.installed[#st.installed]) or st.source_version
  if program then
    lines[#lines + 1] = "program: Octopus " .. tostring(program) ..
      (st.source_version and version.eq(program, st.source_version) and " (as before)" or "")
  end
  local okd, schema = pcall(function()
    local db <close> = H.connect(H.db_connection(ctx))
    return D.schema_version(db)
  end)
  if okd and schema then
    lines[#lines + 1] = "database: Octopus " .. tostring(schema) ..
      (st.source_version and version.eq(schema, st.source_version) and " (as before)" or "")
  end
  if st.database_backup then
    lines[#lines + 1] = "backup: " .. tostring(ctx.params.backup_dir) .. "; to go back to it: upkit run rollback " ..
      "--set backup_dir=" .. tostring(ctx.params.backup_dir)
  end
  return lines
end

-- Wait for running and queued tasks (of every space) to finish.
function S.wait_idle(name)
  return {
    name = name or "wait-until-idle",
    describe = "wait until no task is executing, cancelling or queued",
    run = function(ctx)
      H.api(ctx):wait_until_idle { timeout = ctx.params.timeout }
    end,
  }
end

-- The Service Watchdog off ("delete") before an upgrade, or on ("create") after, when watchdog=true.
function S.watchdog(action, name)
  return {
    name = name or ("watchdog-" .. action),
    describe = action == "delete" and "delete the Service Watchdog (watchdog=true), or it restarts the stopped service"
                                   or "create the Service Watchdog again (watchdog=true)",
    changes = true,
    run = function(ctx)
      if not ctx.params.watchdog then ctx.log("watchdog=false: no Service Watchdog to %s", action) return end
      H.cli(ctx):watchdog(action, "*")
      ctx.log("Service Watchdog: %s", action == "delete" and "deleted" or "created")
    end,
    undo = function(ctx)
      if not ctx.params.watchdog then return end
      local back = action == "delete" and "create" or "delete"
      H.cli(ctx):watchdog(back, "*")
      ctx.log("Service Watchdog: %s again", back == "create" and "created" or "deleted")
    end,
  }
end

--[[
Drain and stop every instance of the main machine (one MSI upgrades them all):
node --drain=true --wait=0 (2018.1+; on 3.x maintenance mode and the wait for
running tasks before stand in for it), service --stop, then each is checked
stopped.
]]
function S.drain_and_stop(name)
  return {
    name = name or "drain-and-stop",
    describe = "drain and stop every Octopus instance of this machine (list-instances)",
    confirm = "Every Octopus instance of this machine stops until the procedure starts it again.",
    needs = function(ctx) return S.machine_needs(ctx) end,
    check = function(ctx)  -- every instance's service state can be known before anything changes
      I.states(H.cli(ctx), { url = ctx.params.server_url, verify = ctx.params.verify_tls })
      return true
    end,
    run = function(ctx)
      local cli = H.cli(ctx)
      if not cli:has_node_command() then
        ctx.log("Octopus %s has no `node` command: maintenance mode and the wait for tasks stand in for the drain",
                cli:program_version())
      end
      local was = I.stop_all(cli, { url = ctx.params.server_url, verify = ctx.params.verify_tls, log = ctx.log })
      H.set_api(ctx, nil)
      return { stopped_instances = was }
    end,
    -- start (and undrain) the instances this step stopped
    undo = function(ctx)
      I.start(H.cli(ctx), ctx.state.stopped_instances or {})
      if #(ctx.state.stopped_instances or {}) > 0 then
        H.set_api(ctx, I.wait_api(ctx.params.server_url, ctx.params.api_key, ctx.params.verify_tls, 120))
        ctx.log("started and undrained again: %s", table.concat(ctx.state.stopped_instances, ", "))
      end
    end,
  }
end

-- Parameters of the database backup step, for the procedures that back up.
S.BACKUP_PARAMS = {
  { name = "db_backup_dir", type = "string",
    describe = "SQL Server: the folder for database.bak as the database server sees it (default: backup_dir); " ..
               "a remote server writes the file on its own disk" },
  { name = "db_backup_visible_as", type = "path",
    describe = "SQL Server: where this machine sees db_backup_dir (a mounted share), so the backup's SHA-256 " ..
               "can be computed; without it a remote backup is checked by the server only" },
  { name = "test_restore", type = "boolean", default = false,
    describe = "SQL Server: test the backup the way Test-DbaLastBackup does (restore under a throw-away name, " ..
               "DBCC CHECKDB, drop)" },
}

-- Where the database backup goes: { to = file as the server sees it, visible_as =, remote = bool }.
local function database_target(ctx, engine)
  local d = ctx.params.backup_dir
  if engine ~= "mssql" or not ctx.params.db_backup_dir or ctx.params.db_backup_dir == d then
    return { to = d .. "/database.bak" }
  end
  local sdir = ctx.params.db_backup_dir
  local sep = (sdir:find("\\", 1, true) and not sdir:find("/", 1, true)) and "\\" or "/"
  local vis = ctx.params.db_backup_visible_as
  return { to = sdir:gsub("[/\\]+$", "") .. sep .. "database.bak", visible_as = vis and (vis .. "/database.bak") }
end

-- Database backup into backup_dir (the engine's own method where it has one).
function S.backup_database(name)
  return {
    name = name or "backup-database",
    describe = "back up the Octopus database (copy-only, checksummed)",
    -- On SQL Server: the platform (Azure, Managed Instance, RDS stop here), the
    -- login's rights and the server's access to the backup folder.
    check = function(ctx)
      local sql = require "upkit.sql"
      local db <close> = H.connect(H.db_connection(ctx))
      if sql.engine(db) == "mssql" then
        sql.mssql.preflight(db, { to = database_target(ctx, "mssql").to })
      end
      return D.schema_version(db) ~= nil or upkit.error("NO_VERSION",
        "the database's OctopusServerInstallationHistory is empty: the schema's version is unknown")
    end,
    -- Done when the recorded backup is still there with its digest; a backup
    -- on a server's disk that this machine cannot read is made again (never hashed).
    done = function(ctx)
      local b = ctx.state.database_backup
      if not b or not b.sha256 or b.location == "server" and not b.visible_as then return false end
      local file = b.visible_as or b.file
      return fs.exists(file) and hashfile(file) == b.sha256
    end,
    run = function(ctx)
      local sql = require "upkit.sql"
      F.private_dir(ctx.params.backup_dir)
      local db <close> = H.connect(H.db_connection(ctx))
      local engine = sql.engine(db)
      local t = database_target(ctx, engine)
      local opts = { to = t.to }
      if engine == "mssql" then opts.visible_as, opts.test = t.visible_as, ctx.params.test_restore or nil end
      local r = sql.backup(db, opts)
      local here = r.location ~= "server"
      if here and fs.exists(r.file) then F.private(r.file) end
      local verified = type(r.verified) == "table" and r.verified or { r.sha256 and "sha256" or nil }
      local b = {
        file = r.file, location = r.location or "local", machine = r.machine,
        sha256 = r.sha256, bytes = r.bytes, method = r.method, finished = r.finished, verified = verified,
        digest = r.digest or (r.sha256 and ("sha256:" .. r.sha256)) or "none", visible_as = t.visible_as,
        tested = r.tested and true or nil,
      }
      ctx.log("database backed up to %s%s (%s bytes, %s, %s; verified: %s)", r.file,
              r.machine and (" on " .. r.machine) or "", tostring(r.bytes), r.method,
              r.sha256 and ("sha256 " .. r.sha256) or "no digest: the file is not readable here",
              table.concat(verified, ", "))
      return { database_backup = b, source_counts = D.counts(db) }
    end,
  }
end

-- The folders (Artifacts, Packages, TaskLogs, EventExports), with manifests.
function S.backup_folders(name)
  return {
    name = name or "backup-folders",
    describe = "copy Artifacts, Packages, TaskLogs and EventExports into the backup, with SHA-256 manifests",
    -- the backup's file system must hold the folders (checked before the first change)
    needs = function(ctx)
      local bytes = 0
      for _, path in pairs(ctx.state.server_folders or H.server_folders(ctx)) do
        if fs.exists(path) then bytes = bytes + fs.tree_size(path) end
      end
      local at = ctx.params.backup_dir
      while not fs.exists(at) and util.dirname(at) ~= at do at = util.dirname(at) end
      return { free = { { path = at, bytes = bytes } } }
    end,
    run = function(ctx)
      local folders = ctx.state.server_folders or H.server_folders(ctx)
      local root = F.private_dir(ctx.params.backup_dir) .. "/folders"
      local results = F.backup(folders, root)
      local out = {}
      for k, r in pairs(results) do
        out[k] = { path = folders[k], files = r.files, bytes = r.bytes, dir = "folders/" .. k,
                   manifest = "folders/" .. k .. ".SHA256SUMS", manifest_sha256 = hashfile(root .. "/" .. k .. ".SHA256SUMS") }
      end
      return { folders = out }
    end,
  }
end

-- Download and check the installers of the whole upgrade path, before any change.
-- S.reachable(ctx, urls, what) -> true, or NOT_FOUND (an HTTP status) / CONNECT_FAILED naming each URL.
function S.reachable(ctx, urls, what)
  local problems = require("upkit.procedure.checks").needs_problems({ needs = { urls = urls } }, ctx)
  if #problems == 0 then return true end
  local text = table.concat(problems, "; ")
  upkit.error(text:find("answered HTTP", 1, true) and "NOT_FOUND" or "CONNECT_FAILED", what .. ": " .. text)
end

-- The installers go into backup_dir/installers with their digests (FILE.sha256): the
-- installed version's too, so that a rollback needs no network (I.keep_installer).
function S.download_installers()
  local base = "download and check the installers of every version on the upgrade path, and the installed " ..
               "version's, into backup_dir/installers"
  return {
    name = "download-installers",
    -- --plan shows the resolved path (the program's version from the command line, the feed: no secret needed)
    describe = function(ctx)
      if not ctx or not ctx.params or not ctx.params.server_exe then return base end
      local ok, from = pcall(function() return H.cli(ctx):program_version() end)
      if not ok then return base end
      local ok2, line = pcall(function()
        local target = H.target(ctx)
        local hops = V.upgrade_path(from, target, I.released(ctx))
        return string.format("%s; path %s -> %s", base, from, #hops > 0 and table.concat(hops, " -> ") or "(none)")
      end)
      return ok2 and line or base .. " (path unknown: " .. tostring(type(line) == "table" and line.message or line) .. ")"
    end,
    needs = function(ctx)
      local n = S.machine_needs(ctx, true)
      n.urls = { ctx.params.versions_feed }
      return n
    end,
    check = function(ctx)  -- the path exists (known stops, no broken range) and its installers can be downloaded
      local from = H.api(ctx):version()
      local hops = V.upgrade_path(from, H.target(ctx), I.released(ctx))
      local urls = {}
      for _, v in ipairs { from, table.unpack(hops) } do
        if not I.kept_installer(ctx, v) then urls[#urls + 1] = octopus.installer_url(v, ctx.params.download_url) end
      end
      return S.reachable(ctx, urls, "installers")
    end,
    run = function(ctx)
      local target = H.target(ctx)
      local hops = V.upgrade_path(ctx.state.source_version, target, I.released(ctx))
      I.keep_installer(ctx, ctx.state.source_version)
      for _, v in ipairs(hops) do I.keep_installer(ctx, v) end
      ctx.log("upgrade path %s -> %s", ctx.state.source_version, #hops > 0 and table.concat(hops, " -> ") or "(none)")
      return { target = target, path = hops }
    end,
  }
end

-- The installer of the version backed up, kept in backup_dir/installers (the backup procedure).
function S.backup_installer(name)
  return {
    name = name or "backup-installer",
    describe = "download the installed version's installer into backup_dir/installers, with its digest, " ..
               "so that a rollback needs no network",
    check = function(ctx)
      local v = H.api(ctx):version()
      if I.kept_installer(ctx, v) then return true end
      local url = octopus.installer_url(v, ctx.params.download_url)
      return S.reachable(ctx, { url }, "installer")
    end,
    run = function(ctx)
      local inst = I.keep_installer(ctx, ctx.state.source_version or H.api(ctx):version())
      return { installer = { file = inst.file, sha256 = inst.sha256 } }
    end,
  }
end

-- The main instance's version, downloaded and installed on another server whose
-- installer program is the parameter msiexec_param (clone_msiexec, test_msiexec).
function S.install_same_version(msiexec_param, where)
  return {
    name = "install-same-version",
    describe = "download the main instance's version and install it on the " .. where,
    changes = true,
    needs = function(ctx) return { programs = { ctx.params[msiexec_param] } } end,
    check = function(ctx)  -- its installer is kept in the backup, or the download site has it
      local v = H.api(ctx):version()
      return I.kept_installer(ctx, v) ~= nil or S.reachable(ctx, { octopus.installer_url(v, ctx.params.download_url) },
                                                            "installer of Octopus " .. v)
    end,
    run = function(ctx)
      local v = ctx.state.source_version
      local inst = I.fetch(ctx, v)
      local r = V.install(ctx.params[msiexec_param], inst.file, inst.sha256, ctx.run_dir .. "/logs", ctx.params.timeout)
      ctx.log("installed Octopus %s on the %s (exit code %d)", v, where, r.code)
    end,
  }
end

--[[
S.upgrade(name, site) -> step: upgrade an instance along the upgrade path
(I.upgrade). site(ctx) -> { cli, msiexec, db (ODBC), url, start, restart }.
The target is ctx.state.target, or the target_version parameter. Returns
{ target, [key] = versions installed }.
]]
function S.upgrade(name, describe, site, key)
  return {
    name = name,
    describe = describe,
    changes = true,
    needs = function(ctx)
      local ok, where = pcall(site, ctx)
      return ok and where.msiexec and { programs = { where.msiexec } } or {}
    end,
    run = function(ctx)
      local target = ctx.state.target or H.target(ctx)
      local installed = I.upgrade(ctx, target, site(ctx))
      return { target = target, [key or "installed"] = installed }
    end,
  }
end

-- The main instance on this machine, for S.upgrade.
function S.main_site(start)
  return function(ctx)
    return { cli = H.cli(ctx), msiexec = ctx.params.msiexec, db = H.db_connection(ctx), url = ctx.params.server_url,
             start = start }
  end
end

-- Start the instance, take it out of drain, wait for the API; say which other instances stay stopped.
function S.start_and_undrain(name)
  return {
    name = name or "start-and-undrain",
    describe = "start the instance, take it out of drain, wait until the API answers",
    changes = true,
    run = function(ctx)
      local cli = H.cli(ctx)
      I.start(cli, { ctx.params.instance })
      H.set_api(ctx, I.wait_api(ctx.params.server_url, ctx.params.api_key, ctx.params.verify_tls, 120))
      ctx.log("instance %s started", ctx.params.instance)
      I.others_left_stopped(ctx, cli, ctx.state.stopped_instances)
      return { started = { ctx.params.instance } }
    end,
    undo = function(ctx)
      I.stop_all(H.cli(ctx), { url = ctx.params.server_url, verify = ctx.params.verify_tls, log = ctx.log })
      H.set_api(ctx, nil)
    end,
  }
end

-- Test the main instance after its upgrade: version, health, row counts, folders readable.
function S.test_main(name)
  return {
    name = name or "test",
    describe = "test the upgraded server: version, health, row counts, old task logs and artifacts readable",
    run = function(ctx)
      local db <close> = H.connect(H.db_connection(ctx))
      local folders = {}
      for fname, f in pairs(ctx.state.folders or {}) do
        folders[#folders + 1] = { path = f.path, manifest = ctx.params.backup_dir .. "/folders/" .. fname .. ".SHA256SUMS" }
      end
      I.test(ctx, H.api(ctx), db, { version = ctx.state.target, counts = ctx.state.source_counts, folders = folders })
    end,
  }
end

-- The database entry of backup.json: a file in the backup folder is named
-- relative to it, so a copied or moved backup restores from its own folder.
local function manifest_database(dir, b)
  if not b then return nil end
  local out = {}
  for k, v in pairs(b) do out[k] = v end
  if out.location ~= "server" then out.file = F.relative(dir, out.file) end
  return out
end

-- backup.json: what was saved where, with digests; the rollback reads it.
function S.write_manifest(name)
  return {
    name = name or "write-manifest",
    describe = "write backup.json: what was saved where, with digests",
    run = function(ctx)
      local d = F.private_dir(ctx.params.backup_dir)
      local files = {}
      for _, f in ipairs { "master-key.txt", "license.xml", "configuration.json", ctx.params.instance .. ".config" } do
        if fs.exists(d .. "/" .. f) then files[f] = hashfile(d .. "/" .. f) end
      end
      local m = {
        format = "upkit-octopus-backup/1", created = log.iso_now(), instance = ctx.params.instance,
        server_url = ctx.params.server_url, version = ctx.state.source_version, config_file = ctx.state.config_file,
        database = manifest_database(d, ctx.state.database_backup), folders = ctx.state.folders, files = files,
        counts = ctx.state.source_counts,
      }
      fs.write(d .. "/backup.json", json.encode(m, { pretty = true }), { mode = "0600" })
      ctx.log("backup of Octopus %s complete in %s", tostring(m.version), d)
      local names = {}
      for f in pairs(files) do names[#names + 1] = f end
      table.sort(names)
      for _, f in ipairs(names) do ctx.log("  %-28s sha256 %s", f, files[f]) end
      if m.database then ctx.log("  %-28s %s", m.database.file, m.database.digest or ("sha256:" .. tostring(m.database.sha256))) end
      for k, f in pairs(m.folders or {}) do ctx.log("  folders/%-20s %d files, %d bytes", k, f.files, f.bytes) end
      return { manifest = d .. "/backup.json" }
    end,
  }
end

return S
