-- in-place-upgrade: upgrade an Octopus Server where it stands.
--
-- The guide's standard procedure and Octopus's own "automate upgrades"
-- script, with a backup first: download and check the installers of the whole
-- upgrade path; back up master key, licence and config; maintenance mode on;
-- wait until idle; delete the Service Watchdog (watchdog=true); drain and stop
-- every instance of the machine (one MSI upgrades them all); back up the
-- database (and the folders when the major version changes); install each
-- version of the path, checking the program's version, and upgrade the
-- database; start the instance again and undrain it (other instances of the
-- machine stay stopped: their databases need their own upgrade, and the run
-- says so); create the watchdog again; test; maintenance mode off. If a step fails, `upkit run rollback` with
-- the same backup_dir puts the previous version back.
local upkit = require "upkit"
local fs = require "upkit.fs"
local U = require "upkit.upgrade"
local S = U.steps
local I = require "upkit.upgrade.instance"

local params = U.params("server_url", "api_key", "instance", "server_exe", "service_control", "file_version", "watchdog", "msiexec",
  "db", "backup_dir", "download_url", "installer_digests", "versions_feed", "target_version", "timeout", "verify_tls", "skip_license_check",
  { name = "backup_folders", type = "choice", choices = { "auto", "always", "never" }, default = "auto",
    describe = "back up the folders: auto = when the major version changes" },
  { name = "leave_maintenance", type = "boolean", default = false,
    describe = "leave maintenance mode on at the end, for a manual check" })
for _, p in ipairs(S.BACKUP_PARAMS) do params[#params + 1] = p end

local function major(v) return tonumber(tostring(v):match("^(%d+)")) end

local backup_folders = S.backup_folders()
local backup_folders_run = backup_folders.run
backup_folders.run = function(ctx)
  local choice = ctx.params.backup_folders
  if choice == "never" or (choice == "auto" and major(ctx.state.source_version) == major(ctx.state.target)) then
    ctx.log("folders not backed up (backup_folders=%s, %s -> %s)", choice, ctx.state.source_version, ctx.state.target)
    return
  end
  return backup_folders_run(ctx)
end

--[[
The upgrade's undo puts the previous version back from this run's backup: every
instance stopped, the database restored from backup-database's file (its digest
checked first), the config file put back, the installed version uninstalled and the previous one installed
from the installers kept in backup_dir/installers (no network).
]]
local upgrade = S.upgrade("upgrade", "install each version on the path and upgrade the database (undo: the " ..
  "database from this run's backup, the previous version from the kept installer)", S.main_site(false))
upgrade.undo = function(ctx)
  local st, cli = ctx.state, U.cli(ctx)
  local b = st.database_backup or upkit.error("NOT_FOUND", "this run recorded no database backup to undo the upgrade with")
  U.stop_all(cli, { url = ctx.params.server_url, verify = ctx.params.verify_tls, log = ctx.log })
  U.set_api(ctx, nil)
  -- the restore compares the digest this run recorded (CHECKSUM_MISMATCH: not the backup it made)
  U.restore_database(b.file, U.db_connection(ctx), { replace = true, sha256 = b.sha256 })
  ctx.log("database restored from %s", b.file)
  local saved = ctx.params.backup_dir .. "/" .. ctx.params.instance .. ".config"
  if st.config_file and fs.exists(saved) then
    fs.copy(saved, st.config_file, { overwrite = true, verify = "sha256" })
    ctx.log("config file %s put back", st.config_file)
  end
  I.uninstall_unless(ctx, cli, ctx.params.msiexec, st.source_version)
  if not cli:installed_version() then I.install_version(ctx, cli, ctx.params.msiexec, st.source_version) end
end

local maintenance_off = S.maintenance_off()
local maintenance_off_run = maintenance_off.run
maintenance_off.describe = "turn maintenance mode off (unless leave_maintenance or it was on before)"
maintenance_off.run = function(ctx)
  if ctx.params.leave_maintenance then
    ctx.log("leave_maintenance=true: maintenance mode stays on for a manual check")
    return
  end
  return maintenance_off_run(ctx)
end

return {
  name = "in-place-upgrade",
  summary = "Upgrade an Octopus Server in place, with a backup first and a test after " ..
            "(--undo: maintenance, watchdog, drain and service back, and after the upgrade step the database and " ..
            "the previous version from this run's backup)",
  params = params,
  steps = {
    S.connect(),
    S.download_installers(),
    S.master_key(),
    S.licence_and_config(),
    S.maintenance_on(),
    S.wait_idle(),
    S.watchdog("delete"),
    S.drain_and_stop(),
    S.backup_database(),
    backup_folders,
    S.write_manifest(),
    upgrade,
    S.start_and_undrain(),
    S.watchdog("create"),
    S.test_main(),
    maintenance_off,
    S.maintenance_rescue(),
  },
  state_summary = S.state_summary,
}
