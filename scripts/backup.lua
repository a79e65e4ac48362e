-- backup: save everything an Octopus Server upgrade or rollback needs.
--
-- Master key (without it the database is useless), licence, the instance's
-- configuration file (3.5+ moved settings into the database: keep the file for a
-- downgrade), the database (copy-only) and the four folders with SHA-256
-- manifests; backup.json lists what was saved where, with digests. The installer of
-- the backed-up version is kept in backup_dir/installers (digest beside it), so a
-- rollback needs no network.
-- Maintenance mode is on while the database is copied (set maintenance=false
-- to leave the server as it is).
local U = require "upkit.upgrade"
local S = U.steps

local maintenance = {
  name = "maintenance", type = "boolean", default = true,
  describe = "turn maintenance mode on while the database is backed up",
}

-- Maintenance mode on for the copy, then off: the server keeps running, so a
-- backup asks nothing (changes = nil); its undo still turns it back.
local function when_maintenance(step)
  step.changes = nil
  local run = step.run
  step.run = function(ctx)
    if not ctx.params.maintenance then ctx.log("maintenance=false: skipped") return end
    return run(ctx)
  end
  return step
end

return {
  name = "backup",
  summary = "Back up an Octopus Server: master key, licence, config, database, folders",
  params = U.params("server_url", "api_key", "instance", "server_exe", "file_version", "db", "backup_dir", "timeout",
                    "verify_tls", "download_url", "installer_digests", maintenance, table.unpack(S.BACKUP_PARAMS)),
  steps = {
    S.connect(),
    S.backup_installer(),
    S.master_key(),
    S.licence_and_config(),
    when_maintenance(S.maintenance_on()),
    when_maintenance(S.wait_idle()),
    S.backup_database(),
    when_maintenance(S.maintenance_off()),
    S.backup_folders(),
    S.write_manifest(),
    S.maintenance_rescue(),
  },
  state_summary = S.state_summary,
}
