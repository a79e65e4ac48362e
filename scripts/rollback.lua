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
local upkit = require "upkit"
local fs = require "upkit.fs"
local version = require "upkit.version"
local U = require "upkit.upgrade"
local S = U.steps
local Cl = require "upkit.upgrade.cluster"
local cluster = Cl.rollback_steps()  -- the other nodes of a cluster (nodes): README "Clusters"

local params = U.params("server_url", "api_key", "instance", "server_exe", "service_control", "file_version", "watchdog", "msiexec",
  "db", "backup_dir", "download_url", "installer_digests", "timeout", "verify_tls")
for _, p in ipairs(Cl.params(true)) do params[#params + 1] = p end

local function manifest(ctx)
  ctx._manifest = ctx._manifest or U.read_manifest(ctx.params.backup_dir)
  return ctx._manifest
end

return {
  name = "rollback",
  summary = "Roll an Octopus Server back to a backup: database, folders, previous version",
  params = params,
  steps = {
    {
      name = "check-backup",
      describe = "check the backup is complete: backup.json, master key, database digest, folder manifests",
      check = function(ctx)
        local m = manifest(ctx)
        local d = ctx.params.backup_dir
        if not m.database or not m.version then
          upkit.error("BAD_FORMAT", string.format("backup %s has no database or no version in backup.json", d))
        end
        require("upkit.sql").verify(m.database.file)
        for name in pairs(m.folders or {}) do
          if not fs.exists(d .. "/folders/" .. name .. ".SHA256SUMS") then
            upkit.error("BAD_FORMAT", string.format("backup %s has no manifest for folder %s", d, name))
          end
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
    {
      name = "stop-instances",
      describe = "stop every Octopus instance of this machine",
      check = function(ctx)
        U.states(U.cli(ctx), { url = ctx.params.server_url, verify = ctx.params.verify_tls })
        return true
      end,
      run = function(ctx)
        local was = U.stop_all(U.cli(ctx), { url = ctx.params.server_url, verify = ctx.params.verify_tls, log = ctx.log })
        return { stopped_instances = was }
      end,
    },
    cluster.stop,
    {
      name = "restore-database",
      describe = "restore the database backup over the current database",
      confirm = function(ctx) return ctx.params.instance end,
      run = function(ctx)
        local m = manifest(ctx)
        local r = U.restore_database(m.database.file, U.db_connection(ctx), { replace = true })
        ctx.log("database restored from %s", m.database.file)
        return { database_restored = r.method or true }
      end,
    },
    {
      name = "restore-folders",
      describe = "restore the folders: set the current ones aside, copy the backup in, verify, remove the aside copies",
      run = function(ctx)
        local folders = {}
        for name, f in pairs(manifest(ctx).folders or {}) do folders[name] = f.path end
        local r = U.restore_folders(ctx.params.backup_dir .. "/folders", folders)
        for name, res in pairs(r) do ctx.log("%s: %d files restored and verified", name, res.files) end
      end,
    },
    {
      name = "uninstall-current-version",
      describe = "uninstall the installed Octopus (its own installer, msiexec /x) and check it is gone",
      run = function(ctx)
        local want, cli = ctx.state.previous_version, U.cli(ctx)
        local current = cli:installed_version()
        if not current then
          ctx.log("no Octopus program is installed")
          return
        end
        if version.eq(current, want) then
          ctx.log("Octopus %s, the backup's version, is installed", want)
          return
        end
        local inst = U.fetch(ctx, current)
        U.uninstall(ctx.params.msiexec, inst.file, ctx.run_dir .. "/logs", ctx.params.timeout)
        U.expect_uninstalled(cli)
        ctx.log("uninstalled Octopus %s", current)
        return { uninstalled = current }
      end,
    },
    {
      name = "install-previous-version",
      describe = "install the backup's version and check the program is that version",
      run = function(ctx)
        local want, cli = ctx.state.previous_version, U.cli(ctx)
        local current = cli:installed_version()
        if current and version.eq(current, want) then ctx.log("Octopus %s is installed", want) return end
        local db <close> = U.connect(U.db_connection(ctx))
        local history = U.previous_versions(db, 1)
        if history[1] and not version.eq(history[1], want) then
          ctx.warn("the restored installation history says %s was installed last; the backup says %s", history[1], want)
        end
        local inst = U.fetch(ctx, want)
        U.install(ctx.params.msiexec, inst.file, inst.sha256, ctx.run_dir .. "/logs", ctx.params.timeout)
        U.expect_program(cli, want)
        ctx.log("installed Octopus %s", want)
      end,
    },
    cluster.reinstall,
    {
      name = "restore-config-file",
      describe = "put the instance's config file of the backup back in place",
      run = function(ctx)
        local m = manifest(ctx)
        local saved = ctx.params.backup_dir .. "/" .. ctx.params.instance .. ".config"
        local target = m.config_file or U.cli(ctx):config_file()
        if not fs.exists(saved) then ctx.log("no config file in the backup; left as it is") return end
        fs.copy(saved, target, { overwrite = true, verify = "sha256" })
        ctx.log("config file %s restored", target)
      end,
    },
    S.start_and_undrain("start"),
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
      run = function(ctx)
        local api = U.api(ctx)
        if api:maintenance() then api:set_maintenance(false) ctx.log("maintenance mode is off") end
      end,
    },
  },
}
