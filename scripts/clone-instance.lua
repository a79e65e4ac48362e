-- clone-instance: the recommended upgrade rehearsal. Clone an Octopus Server
-- onto a new server, make the clone harmless, upgrade it and test it, while the
-- main instance keeps running (it is in maintenance mode only while its
-- database is backed up).
--
-- Steps follow the guide "Upgrading from Octopus 3.x": back up master key and
-- licence; maintenance on; back up the database; maintenance off; restore it as a
-- new database; install the same version on the new server pointed at it (this
-- needs the master key); copy the folders; disable targets, workers, triggers and
-- subscriptions and give the clone a new installation id; upgrade it; test it.
local upkit = require "upkit"
local fs = require "upkit.fs"
local U = require "upkit.upgrade"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "service_control", "file_version", "db", "backup_dir",
  "download_url", "installer_digests", "versions_feed", "target_version", "timeout", "verify_tls", "skip_license_check",
  { name = "clone_server_exe", type = "path", default = U.DEFAULT_EXE,
    describe = "Octopus.Server executable on the new server (after the install)" },
  { name = "clone_msiexec", type = "path", default = "msiexec", describe = "the installer program on the new server" },
  { name = "clone_instance", type = "string", default = "OctopusServer", describe = "instance name of the clone" },
  { name = "clone_home", type = "path", required = true, describe = "home folder of the clone (config, folders)" },
  { name = "clone_db", type = "string", required = true,
    describe = "connection string of the clone's new database as the clone's server gets it (ADO.NET; an ODBC " ..
               "string is converted); the database must not exist or be empty" },
  { name = "clone_odbc", type = "string",
    describe = "ODBC connection string upkit uses to reach the clone's database (default: clone_db converted)" },
  { name = "clone_url", type = "string", required = true,
    describe = "URL the clone listens on (configure --webListenPrefixes)" },
  { name = "disable_targets", type = "boolean", default = true,
    describe = "disable targets, workers, triggers and subscriptions on the clone" },
  table.unpack(U.machine_params("clone", "new server")))

local function clone_cli(ctx) return U.other_cli(ctx, "clone") end
local function clone_odbc(ctx) return U.other_odbc(ctx, "clone") end

local function clone_site(ctx)
  return { cli = clone_cli(ctx), msiexec = ctx.params.clone_msiexec, db = clone_odbc(ctx), url = ctx.params.clone_url }
end

local function master_key(ctx)
  return ctx.secret((fs.read(ctx.params.backup_dir .. "/master-key.txt"):gsub("%s+$", "")))
end

-- The clone's folders: the main instance's, under clone_home.
local function clone_folders(ctx)
  local out = {}
  for name in pairs(ctx.state.server_folders) do out[name] = ctx.params.clone_home .. "/" .. name end
  return out
end

-- Maintenance mode on the main server only while its database is copied: the main
-- server keeps running and nothing of it changes, so the clone asks nothing.
local function no_question(step) step.changes = nil return step end

return {
  name = "clone-instance",
  summary = "Clone an Octopus Server to a new server, make it harmless, upgrade and test it (--undo: only " ..
            "the main server's maintenance mode; the clone is new: remove its server or database to start again)",
  params = params,
  steps = {
    S.connect(),
    S.master_key(),
    S.licence_and_config(),
    no_question(S.maintenance_on()),
    S.wait_idle(),
    S.backup_database(),
    no_question(S.maintenance_off()),
    {
      name = "restore-database",
      describe = "restore the backup as the clone's new database",
      done = function(ctx) return ctx.state.clone_restored == true end,
      run = function(ctx)
        local b = ctx.state.database_backup
        local r = U.restore_database(b.file, clone_odbc(ctx), { sha256 = b.sha256 })
        ctx.log("restored %s into the clone database (%s)", r.file or ctx.state.database_backup.file, r.method or "")
        return { clone_restored = true }
      end,
    },
    S.install_same_version("clone_msiexec", "new server"),
    {
      name = "configure-clone",
      describe = "create the clone's instance pointed at the restored database, with the master key",
      run = function(ctx)
        local p, cli = ctx.params, clone_cli(ctx)
        local key = master_key(ctx)
        fs.mkdirs(p.clone_home)
        if not cli:has_instance() then
          cli:create_instance(p.clone_home .. "/" .. p.clone_instance .. ".config", p.clone_home)
        end
        cli:set_database(U.ado_connection(p.clone_db), key)
        cli:run("configure", "--home=" .. p.clone_home, "--webListenPrefixes=" .. p.clone_url)
        cli:set_paths(clone_folders(ctx))
        cli:service("install")
      end,
    },
    {
      name = "copy-folders",
      describe = "copy Artifacts, Packages, TaskLogs and EventExports to the clone, verified",
      run = function(ctx)
        local main, dst = ctx.state.server_folders, clone_folders(ctx)
        local results = {}
        for name, path in pairs(main) do
          local manifest = ctx.run_dir .. "/" .. name .. ".SHA256SUMS"
          if fs.exists(path) then
            local r = fs.mirror(path, dst[name], { delete = true, manifest = manifest, verify = true })
            local v = fs.verify(dst[name], manifest)
            if not v.ok then
              upkit.error("CHECKSUM_MISMATCH", "the copy of " .. name .. " does not match its manifest", { path = dst[name] })
            end
            ctx.log("%s: %d files (%d copied, %d bytes)", name, r.files, r.copied, r.bytes)
            results[name] = { path = dst[name], manifest = manifest, files = r.files }
          else
            ctx.log("%s: %s does not exist on the main instance; nothing to copy", name, path)
          end
        end
        return { clone_folders = results }
      end,
    },
    {
      name = "make-clone-harmless",
      describe = "disable targets, workers, triggers, subscriptions; remove server nodes and extensions; new installation id",
      run = function(ctx)
        local db <close> = U.connect(clone_odbc(ctx))
        if ctx.params.disable_targets then
          for stmt, n in pairs(U.harden_clone(db)) do ctx.log("%-60s %d row%s", stmt, n, n == 1 and "" or "s") end
        else
          ctx.log("disable_targets=false: targets, workers, triggers and subscriptions stay as they are")
        end
        local id = U.new_installation_id(db)
        ctx.log("new installation id %s", id)
        return { clone_installation_id = id }
      end,
    },
    {
      name = "start-clone",
      describe = "start the clone and wait until its API answers",
      run = function(ctx)
        clone_cli(ctx):service("start")
        local api <close> = U.wait_api(ctx.params.clone_url, ctx.params.api_key, ctx.params.verify_tls, 60)
        ctx.log("clone answers at %s: Octopus %s", ctx.params.clone_url, api:version())
      end,
    },
    S.upgrade("upgrade-clone", function(ctx) return "upgrade the clone to " .. tostring(ctx.params.target_version) ..
                                                    " (with the documented intermediate stops)" end, clone_site),
    {
      name = "test-clone",
      describe = "test the clone: version, health, row counts, folders readable",
      run = function(ctx)
        local api <close> = U.wait_api(ctx.params.clone_url, ctx.params.api_key, ctx.params.verify_tls, 60)
        local db <close> = U.connect(clone_odbc(ctx))
        local folders = {}
        for _, f in pairs(ctx.state.clone_folders or {}) do folders[#folders + 1] = f end
        U.test_instance(ctx, api, db, { version = ctx.state.target, counts = ctx.state.source_counts,
                                        folders = folders })
        local id = U.installation_id(db)
        if id ~= ctx.state.clone_installation_id then
          upkit.error("TEST_FAILED", "the clone's installation id changed back to " .. tostring(id))
        end
      end,
    },
    S.maintenance_rescue(),
  },
  state_summary = S.state_summary,
}
