-- in-place-upgrade: upgrade an Octopus Server where it stands.
--
-- The guide's standard procedure, with a backup first: download and check the
-- installers of the whole upgrade path; maintenance mode on; wait until idle;
-- drain the node and stop the service; back up master key, licence, config,
-- database (and the folders when the major version changes); install each
-- version of the path and upgrade the database; start; undrain; test;
-- maintenance mode off. If a step fails, `upkit run rollback` with the same
-- backup_dir puts the previous version back.
local U = require "upkit.upgrade"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "msiexec", "db", "backup_dir",
  "download_url", "versions_feed", "target_version", "timeout", "verify_tls",
  { name = "backup_folders", type = "choice", choices = { "auto", "always", "never" }, default = "auto",
    describe = "back up the folders: auto = when the major version changes" },
  { name = "leave_maintenance", type = "boolean", default = false,
    describe = "leave maintenance mode on at the end, for a manual check" },
  { name = "skip_license_check", type = "boolean", default = false,
    describe = "pass --skipLicenseCheck to the database upgrade" })

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

return {
  name = "in-place-upgrade",
  summary = "Upgrade an Octopus Server in place, with a backup first and a test after",
  params = params,
  steps = {
    S.connect(),
    S.download_installers(),
    S.master_key(),
    S.licence_and_config(),
    S.maintenance_on(),
    S.wait_idle(),
    {
      name = "drain-and-stop",
      describe = "drain the node and stop the Octopus service",
      run = function(ctx)
        local cli = U.cli(ctx)
        cli:drain(true)
        if cli:running() then cli:service("stop") end
      end,
    },
    S.backup_database(),
    backup_folders,
    S.write_manifest(),
    {
      name = "upgrade",
      describe = function(ctx) return "install each version on the path and upgrade the database" end,
      run = function(ctx)
        local installed = U.upgrade_instance(ctx, U.cli(ctx), ctx.params.msiexec, ctx.state.target,
                                             ctx.run_dir .. "/logs", U.db_connection(ctx))
        return { installed = installed }
      end,
    },
    S.start_and_undrain(),
    {
      name = "test",
      describe = "test the upgraded server: version, health, row counts, old task logs and artifacts readable",
      run = function(ctx)
        local db <close> = U.connect(U.db_connection(ctx))
        local folders = {}
        for name, f in pairs(ctx.state.folders or {}) do
          folders[#folders + 1] = { path = f.path, manifest = ctx.params.backup_dir .. "/folders/" .. name .. ".SHA256SUMS" }
        end
        U.test_instance(ctx, U.api(ctx), db, { version = ctx.state.target, counts = ctx.state.source_counts,
                                               folders = folders })
      end,
    },
    {
      name = "maintenance-off",
      describe = "turn maintenance mode off (unless leave_maintenance or it was on before)",
      run = function(ctx)
        if ctx.params.leave_maintenance then
          ctx.log("leave_maintenance=true: maintenance mode stays on for a manual check")
          return
        end
        return S.maintenance_off().run(ctx)
      end,
    },
  },
}
