-- rollback: put an Octopus Server back as it was at a backup.
--
-- From a backup made by `backup` or `in-place-upgrade` (its backup_dir): delete
-- the Service Watchdog (watchdog=true); stop every instance of the machine;
-- restore the database; restore the folders the safe way (set the current ones
-- aside, copy the backup in, verify against the manifests, then remove the
-- set-aside copies); uninstall the installed product (each Octopus version is
-- its own product: an MSI refuses a downgrade) and install the version of the
-- backup, checking the program's version after each; put the config file back
-- (3.5+ keeps settings in the database, the file must match the version);
-- start; create the watchdog again; sanity checks; maintenance mode off.
-- The installers come from backup_dir/installers (kept by backup and
-- in-place-upgrade, digests beside them): a rollback needs no network. It asks
-- once, before the first change (the watchdog, then the service), listing what
-- it will change; a "no" leaves the server as it was. With nodes, the other
-- nodes of a cluster are stopped, put back on the backup's version and started
-- too; with this_node = false every node is in nodes and the first one is the
-- main one (its command line through OpenSSH; the config file is put back
-- there through sftp): README "Clusters".
local upkit = require "upkit"
local fs = require "upkit.fs"
local version = require "upkit.version"
local U = require "upkit.upgrade"
local S = U.steps
local I = require "upkit.upgrade.instance"
local Cl = require "upkit.upgrade.cluster"
local cluster = Cl.rollback_steps()  -- the other nodes of a cluster (nodes): README "Clusters"

local params = U.params("server_url", "api_key", "instance", "server_exe", "service_control", "file_version", "watchdog", "msiexec",
  "db", "backup_dir", "download_url", "installer_digests", "timeout", "verify_tls")
for _, p in ipairs(Cl.params(true)) do params[#params + 1] = p end

local function manifest(ctx)
  ctx._manifest = ctx._manifest or U.read_manifest(ctx.params.backup_dir)
  return ctx._manifest
end

-- A step of this machine's own program and service: with this_node = false
-- (every node is in nodes) the cluster's steps do it on every node instead.
local function this_machine(step)
  local out = {}
  for k, v in pairs(step) do out[k] = v end
  local function mine(ctx) return ctx.params.this_node ~= false end
  if step.needs then out.needs = function(ctx) return mine(ctx) and step.needs(ctx) or {} end end
  if step.check then out.check = function(ctx) return not mine(ctx) or step.check(ctx) end end
  if step.undo then out.undo = function(ctx) if mine(ctx) then return step.undo(ctx) end end end
  out.run = function(ctx)
    if mine(ctx) then return step.run(ctx) end
    ctx.log("this machine is no node (this_node=false): the nodes' own steps do this on every node")
  end
  return out
end

-- The installer of version v is kept in the backup (checked against its digest), or can be downloaded.
local function installer_available(ctx, v)
  if I.kept_installer(ctx, v) then return true end
  return S.reachable(ctx, { require("upkit.octopus").installer_url(v, ctx.params.download_url) },
                     "installer of Octopus " .. v .. " (not in " .. ctx.params.backup_dir .. "/installers)")
end

local procedure = {
  name = "rollback",
  summary = "Roll an Octopus Server back to a backup: database, folders, previous version (no network needed; " ..
            "--undo starts the stopped instances again; the restored database and program stay)",
  params = params,
  steps = {
    {
      name = "check-backup",
      describe = "check the backup is complete: backup.json, master key, database digest, folder manifests",
      -- The database backup against backup.json's digest (a file that changed
      -- since the backup is refused, whatever its sidecar says); a SQL Server
      -- backup is verified by the server (RESTORE VERIFYONLY, through master),
      -- which must also let this login restore over the database.
      check = function(ctx)
        local sql = require "upkit.sql"
        local m = manifest(ctx)
        local d = ctx.params.backup_dir
        if not m.database or not m.version then
          upkit.error("BAD_FORMAT", string.format("backup %s has no database or no version in backup.json", d))
        end
        local file, remote = U.backup_file(d, m)
        local sha = m.database.sha256
        if m.database.method == "mssql" then
          local cs = U.db_connection(ctx)
          local db <close> = sql.connect(sql.with_value(cs, "Database", "master"))
          sql.mssql.preflight(db, { database = sql.conn_value(cs, "Database"), restore = true })
          local seen = remote and m.database.visible_as or (not remote and file)
          if sha and seen and fs.exists(seen) then U.check_digest(seen, sha, "check-backup") end
          sql.verify(file, { db = db })
        else
          sql.verify(file, { sha256 = sha })
        end
        for name, f in pairs(m.folders or {}) do
          local sums = d .. "/folders/" .. name .. ".SHA256SUMS"
          if not fs.exists(sums) then
            upkit.error("BAD_FORMAT", string.format("backup %s has no manifest for folder %s", d, name))
          end
          if f.manifest_sha256 then U.check_digest(sums, f.manifest_sha256, "check-backup") end
        end
        U.cli(ctx):program_version()
        return true
      end,
      run = function(ctx)
        local m = manifest(ctx)
        ctx.log("backup of Octopus %s made %s", m.version, m.created)
        return { previous_version = m.version, installed_version = U.cli(ctx):program_version() }
      end,
    },
    S.watchdog("delete"),
    this_machine {
      name = "stop-instances",
      describe = "stop every Octopus instance of this machine",
      confirm = "Every Octopus instance of this machine stops; the database, folders and program are replaced.",
      needs = function(ctx) return S.machine_needs(ctx) end,
      check = function(ctx)
        U.states(U.cli(ctx), { url = ctx.params.server_url, verify = ctx.params.verify_tls })
        return true
      end,
      run = function(ctx)
        local was = U.stop_all(U.cli(ctx), { url = ctx.params.server_url, verify = ctx.params.verify_tls, log = ctx.log })
        return { stopped_instances = was }
      end,
      undo = function(ctx)
        U.start(U.cli(ctx), ctx.state.stopped_instances or {})
        ctx.log("started again: %s", table.concat(ctx.state.stopped_instances or {}, ", "))
      end,
    },
    cluster.stop,
    {
      name = "restore-database",
      describe = "restore the database backup over the current database",
      confirm = function(ctx) return ctx.params.instance end,
      run = function(ctx)
        local m = manifest(ctx)
        local file = U.backup_file(ctx.params.backup_dir, m)
        local r = U.restore_database(file, U.db_connection(ctx), { replace = true, sha256 = m.database.sha256 })
        ctx.log("database restored from %s", file)
        return { database_restored = r.method or true }
      end,
    },
    {
      name = "restore-folders",
      describe = "restore the folders: set the current ones aside, copy the backup in, verify, remove the aside copies",
      run = function(ctx)
        local folders, d = {}, ctx.params.backup_dir
        for name, f in pairs(manifest(ctx).folders or {}) do
          folders[name] = f.path
          if f.manifest_sha256 then U.check_digest(d .. "/folders/" .. name .. ".SHA256SUMS", f.manifest_sha256, "restore-folders") end
        end
        local r = U.restore_folders(ctx.params.backup_dir .. "/folders", folders)
        for name, res in pairs(r) do ctx.log("%s: %d files restored and verified", name, res.files) end
      end,
    },
    this_machine {
      name = "uninstall-current-version",
      describe = "uninstall the installed Octopus (its own installer, msiexec /x, from the backup) and check it is gone",
      changes = true,
      needs = function(ctx) return S.machine_needs(ctx, true) end,
      check = function(ctx)
        local current = U.cli(ctx):installed_version()
        return not current or version.eq(current, manifest(ctx).version) or installer_available(ctx, current)
      end,
      run = function(ctx)
        local gone = I.uninstall_unless(ctx, U.cli(ctx), ctx.params.msiexec, ctx.state.previous_version)
        return gone and { uninstalled = gone } or nil
      end,
    },
    this_machine {
      name = "install-previous-version",
      describe = "install the backup's version (its installer kept in the backup) and check the program is that version",
      changes = true,
      check = function(ctx) return installer_available(ctx, manifest(ctx).version) end,
      run = function(ctx)
        local want, cli = ctx.state.previous_version, U.cli(ctx)
        local current = cli:installed_version()
        if current and version.eq(current, want) then ctx.log("Octopus %s is installed", want) return end
        local db <close> = U.connect(U.db_connection(ctx))
        local history = U.previous_versions(db, 1)
        if history[1] and not version.eq(history[1], want) then
          ctx.warn("the restored installation history says %s was installed last; the backup says %s", history[1], want)
        end
        I.install_version(ctx, cli, ctx.params.msiexec, want)
      end,
    },
    cluster.reinstall,
    {
      name = "restore-config-file",
      describe = "put the instance's config file of the backup back in place",
      changes = true,
      run = function(ctx)
        local m = manifest(ctx)
        local saved = ctx.params.backup_dir .. "/" .. ctx.params.instance .. ".config"
        local target = m.config_file or U.cli(ctx):config_file()
        if not fs.exists(saved) then ctx.log("no config file in the backup; left as it is") return end
        local sha = (m.files or {})[ctx.params.instance .. ".config"]
        if sha then U.check_digest(saved, sha, "restore-config-file") end
        if ctx.params.this_node == false then
          Cl.nodes(ctx)[1].r:put(saved, target)  -- verified on both ends, renamed into place
        else
          fs.copy(saved, target, { overwrite = true, verify = "sha256" })
        end
        ctx.log("config file %s restored", target)
      end,
    },
    this_machine(S.start_and_undrain("start")),
    cluster.start,
    S.watchdog("create"),
    {
      name = "sanity-checks",
      describe = "version is the backup's, health is normal, row counts match the backup",
      run = function(ctx)
        local m = manifest(ctx)
        local db <close> = U.connect(U.db_connection(ctx))
        U.test_instance(ctx, U.api(ctx), db, { version = m.version, counts = m.counts })
      end,
    },
    {
      name = "maintenance-off",
      describe = "turn maintenance mode off if it is on",
      changes = true,
      run = function(ctx)
        local api = U.api(ctx)
        if api:maintenance() then api:set_maintenance(false) ctx.log("maintenance mode is off") end
      end,
    },
  },
  state_summary = function(ctx)
    local st, lines = ctx.state, {}
    if st.stopped_instances and #st.stopped_instances > 0 then
      lines[#lines + 1] = "service stopped: " .. table.concat(st.stopped_instances, ", ")
    end
    if st.database_restored then lines[#lines + 1] = "database: restored from the backup (" .. tostring(st.previous_version) .. ")" end
    if st.uninstalled then lines[#lines + 1] = "program: Octopus " .. st.uninstalled .. " uninstalled" end
    if #lines == 0 then lines[1] = "the server is as it was: nothing was changed" end
    lines[#lines + 1] = "to go on: fix the cause and resume this run"
    return lines
  end,
}
for i, step in ipairs(procedure.steps) do procedure.steps[i] = Cl.main_node(step) end
return procedure
