-- test-instance: the guide's alternative to a clone. Install the main
-- instance's version on a new server with a new, empty database, bring over a
-- handful of projects, upgrade that test instance and test it; then, when
-- upgrade_main is true, upgrade the main instance in place.
--
-- Steps follow "Upgrading from Octopus 3.x", "Alternative approach - create a
-- test instance": back up master key and licence; download the main instance's
-- version and install it on the new server; create the test instance with a new
-- database (its own new master key, saved as test-master-key.txt) and the main
-- instance's licence; export the chosen projects from main and import them into
-- the test instance; back up the test database; upgrade the test instance and
-- test it. With upgrade_main: maintenance on (main), drain and stop, back up its
-- database and folders, upgrade it in place, start, undrain, test, maintenance
-- off. `upkit run rollback` with the same backup_dir undoes a failed main upgrade.
--
-- The test instance's API key. A new database has no API key, so none can be
-- given before the run. The procedure creates the administrator test_admin
-- (`admin --username --password`); then it uses test_api_key when given.
-- Without it: with create_test_api_key=true it runs `create-api-key --user`
-- (a command of the simulator and of sites that add one; Octopus Server itself
-- has none) and keeps the key in backup_dir/test-api-key.txt (0600); otherwise
-- the step stops and says how to create a key in the web portal and resume
-- with test_api_key_file.
--
-- Projects. Export and import exist from Octopus 2021.1. On an older main
-- instance a non-empty `projects` fails the preflight check (nothing is
-- changed); with `projects` empty the test instance stays empty and the run
-- says so. The package the export leaves on main is saved in backup_dir
-- (projects-export.zip, its password beside it, both 0600) and imported from
-- that file, so the test instance never gets the main instance's API key; the
-- test server must be able to read backup_dir (upkit runs its installer, so it
-- is on that server or a share of it).
local upkit = require "upkit"
local fs = require "upkit.fs"
local version = require "upkit.version"
local U = require "upkit.upgrade"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "msiexec", "db", "backup_dir",
  "download_url", "versions_feed", "target_version", "timeout", "verify_tls",
  { name = "test_server_exe", type = "path", default = [[C:\Program Files\Octopus Deploy\Octopus\Octopus.Server.exe]],
    describe = "Octopus.Server executable on the test server (after the install)" },
  { name = "test_msiexec", type = "path", default = "msiexec", describe = "the installer program on the test server" },
  { name = "test_instance", type = "string", default = "OctopusServer", describe = "instance name of the test instance" },
  { name = "test_home", type = "path", required = true, describe = "home folder of the test instance (config, folders)" },
  { name = "test_db", type = "string", required = true,
    describe = "ODBC connection string of the test instance's new database (database --create makes it)" },
  { name = "test_url", type = "string", required = true,
    describe = "URL the test instance listens on (configure --webListenPrefixes)" },
  { name = "test_admin", type = "string", default = "upkit-admin",
    describe = "administrator created in the test instance (admin --username)" },
  { name = "test_admin_password", type = "secret", required = true,
    describe = "password of that administrator (admin --password)" },
  { name = "test_api_key", type = "secret",
    describe = "API key of test_admin on the test instance (see create_test_api_key)" },
  { name = "create_test_api_key", type = "boolean", default = false,
    describe = "without test_api_key: create one with `create-api-key` (not a command of Octopus Server itself)" },
  { name = "projects", type = "string", default = "",
    describe = "projects to export from main into the test instance: comma-separated names or ids (2021.1+)" },
  { name = "upgrade_main", type = "boolean", default = false,
    describe = "after the test instance passed its tests, upgrade the main instance in place" },
  { name = "skip_license_check", type = "boolean", default = false,
    describe = "pass --skipLicenseCheck to the database upgrades" })

local function test_cli(ctx)
  local p = ctx.params
  ctx._test = ctx._test or U.server { exe = p.test_server_exe, instance = p.test_instance, timeout = p.timeout }
  return ctx._test
end

local function saved(ctx, name)
  return ctx.params.backup_dir .. "/" .. name
end

-- The test instance's API key: the parameter, or the one this procedure created.
local function test_key(ctx)
  if ctx.params.test_api_key then return ctx.params.test_api_key end
  local file = saved(ctx, "test-api-key.txt")
  if not fs.exists(file) then
    upkit.error("NO_API_KEY", "no API key for the test instance: give test_api_key_file (or create_test_api_key=true)")
  end
  return ctx.secret((fs.read(file):gsub("%s+$", "")))
end

local function test_api(ctx, fresh)
  if fresh or not ctx._test_api then
    ctx._test_api = U.wait_api(ctx.params.test_url, test_key(ctx), ctx.params.verify_tls, 120)
  end
  return ctx._test_api
end

local EXPORT_SINCE = "2021.1.0"

-- The steps of the main instance's upgrade run only with upgrade_main=true.
local function main_only(step, name)
  step.name = name
  local run, check, done = step.run, step.check, step.done
  step.run = function(ctx)
    if not ctx.params.upgrade_main then
      ctx.log("upgrade_main=false: the main instance is left as it is")
      return
    end
    return run(ctx)
  end
  if check then step.check = function(ctx) return not ctx.params.upgrade_main or check(ctx) end end
  if done then step.done = function(ctx) return ctx.params.upgrade_main and done(ctx) end end
  return step
end

return {
  name = "test-instance",
  summary = "Rehearse the upgrade on a new test instance with a few projects, then optionally upgrade main in place",
  params = params,
  steps = {
    S.connect(),
    S.master_key(),
    S.licence_and_config(),
    S.install_same_version("test_msiexec", "test server"),
    {
      name = "create-test-instance",
      describe = "create the test instance with a new empty database, save its master key, load the licence",
      run = function(ctx)
        local p, cli = ctx.params, test_cli(ctx)
        fs.mkdirs(p.test_home)
        local known = false
        for _, i in ipairs(cli:instances()) do if i.InstanceName == p.test_instance then known = true end end
        if not known then
          cli:run("create-instance", "--config=" .. p.test_home .. "/" .. p.test_instance .. ".config",
                  "--home=" .. p.test_home)
        end
        cli:run("configure", "--home=" .. p.test_home, "--webListenPrefixes=" .. p.test_url)
        if cli:configuration()["Octopus.Storage.ExternalDatabaseConnectionString"] == p.test_db then
          ctx.log("the test instance's database exists already (an earlier run created it)")
        else
          cli:run("database", "--connectionString=" .. p.test_db, "--create")
        end
        local keyfile = saved(ctx, "test-master-key.txt")
        fs.write(keyfile, cli:show_master_key() .. "\n", { mode = "0600" })
        ctx.log("the test instance's master key is saved in %s", keyfile)
        local lic = saved(ctx, "license.xml")
        if fs.exists(lic) and fs.read(lic):find("<License", 1, true) then
          cli:run("license", "--licenseFile=" .. lic)
          ctx.log("the main instance's licence is loaded into the test instance")
        end
        cli:service("install")
        return { test_master_key_file = keyfile }
      end,
    },
    {
      name = "test-api-key",
      describe = "create the test instance's administrator and get an API key for it",
      run = function(ctx)
        local p, cli = ctx.params, test_cli(ctx)
        cli.secrets[#cli.secrets + 1] = p.test_admin_password
        cli:run("admin", "--username=" .. p.test_admin, "--password=" .. p.test_admin_password)
        local file = saved(ctx, "test-api-key.txt")
        if p.test_api_key then
          ctx.log("using test_api_key for %s", p.test_admin)
        elseif fs.exists(file) then
          ctx.log("using the API key created earlier (%s)", file)
        elseif p.create_test_api_key then
          local key = cli:create_api_key(p.test_admin, "upkit test-instance")
          fs.write(file, key .. "\n", { mode = "0600" })
          ctx.log("created an API key for %s, saved in %s", p.test_admin, file)
        else
          upkit.error("NO_API_KEY", string.format("the test instance needs an API key: start it (%s service --start " ..
            "--instance=%s), sign in at %s as %s, create an API key (Profile, My API Keys), write it to a file and " ..
            "resume with --set test_api_key_file=FILE", p.test_server_exe, p.test_instance, p.test_url, p.test_admin))
        end
        if not cli:running() then cli:service("start") end
        local api = test_api(ctx, true)
        ctx.log("test instance answers at %s: Octopus %s", p.test_url, api:version())
      end,
    },
    {
      name = "export-projects",
      describe = "export the chosen projects from the main instance (2021.1+) and save the package",
      check = function(ctx)
        local wanted = U.split_list(ctx.params.projects)
        if #wanted == 0 then return true end
        local api = U.api(ctx)
        if version.compare(api:version(), EXPORT_SINCE) < 0 then
          upkit.error("UNSUPPORTED", string.format("projects were asked for (%s), but project export and import " ..
            "do not exist before Octopus 2021.1 and the main instance runs %s: set projects empty for an empty " ..
            "test instance", table.concat(wanted, ", "), api:version()))
        end
        local known = {}
        for p in api:each("projects", { space = "Spaces-1", take = 1000 }) do known[p.Name], known[p.Id] = true, true end
        for _, w in ipairs(wanted) do
          if not known[w] then upkit.error("NOT_FOUND", string.format("the main instance has no project '%s'", w)) end
        end
        return true
      end,
      run = function(ctx)
        local wanted = U.split_list(ctx.params.projects)
        local api = U.api(ctx)
        if version.compare(api:version(), EXPORT_SINCE) < 0 then
          ctx.log("project export and import do not exist before Octopus 2021.1 (main runs %s): the test " ..
                  "instance stays empty", api:version())
          return
        end
        if #wanted == 0 then
          ctx.log("no projects chosen (projects is empty): the test instance stays empty")
          return
        end
        local names = {}
        for p in api:each("projects", { space = "Spaces-1", take = 1000 }) do names[p.Id], names[p.Name] = p.Name, p.Name end
        local exported = {}
        for _, w in ipairs(wanted) do exported[#exported + 1] = names[w] end
        local password = ctx.secret(U.new_guid())
        local pwfile = saved(ctx, "projects-export.password")
        fs.write(pwfile, password .. "\n", { mode = "0600" })
        local r = api:export_projects { projects = wanted, password = password, timeout = ctx.params.timeout }
        local pkg = U.save_export(api, r.task_id, saved(ctx, "projects-export.zip"))
        ctx.log("exported %s (task %s) to %s, %d bytes", table.concat(exported, ", "), r.task_id, pkg.file, pkg.bytes)
        return { export_file = pkg.file, export_task = r.task_id, exported = exported }
      end,
    },
    {
      name = "import-projects",
      describe = "import the exported projects into the test instance",
      run = function(ctx)
        if not ctx.state.export_file then
          ctx.log("nothing to import")
          return
        end
        local password = ctx.secret((fs.read(saved(ctx, "projects-export.password")):gsub("%s+$", "")))
        local api = test_api(ctx)
        local task = U.import_file(api, ctx.state.export_file, password, { timeout = ctx.params.timeout })
        local have = {}
        for p in api:each("projects", { space = "Spaces-1", take = 1000 }) do have[p.Name] = true end
        for _, name in ipairs(ctx.state.exported) do
          if not have[name] then
            upkit.error("IMPORT_FAILED", string.format("import task %s finished, but project '%s' is not in the test " ..
              "instance", task.Id, name))
          end
        end
        ctx.log("imported %s into the test instance (task %s)", table.concat(ctx.state.exported, ", "), task.Id)
        return { imported = ctx.state.exported }
      end,
    },
    {
      name = "backup-test-database",
      describe = "back up the test instance's database",
      run = function(ctx)
        local db <close> = U.connect(U.odbc_connection(ctx.params.test_db))
        local r = require("upkit.sql").backup(db, { to = saved(ctx, "test-database.bak") })
        ctx.log("test database backed up to %s (%d bytes, sha256 %s)", r.file, r.bytes, r.sha256)
        return { test_database_backup = { file = r.file, sha256 = r.sha256, bytes = r.bytes, method = r.method },
                 test_counts = U.counts(db) }
      end,
    },
    {
      name = "upgrade-test-instance",
      describe = function(ctx) return "upgrade the test instance to " .. tostring(ctx.params.target_version) ..
                                      " (with the documented intermediate stops)" end,
      run = function(ctx)
        local target = U.target(ctx)
        local hops = U.upgrade_instance(ctx, test_cli(ctx), ctx.params.test_msiexec, target, ctx.run_dir .. "/logs",
                                        U.odbc_connection(ctx.params.test_db))
        return { target = target, test_installed = hops }
      end,
    },
    {
      name = "test-test-instance",
      describe = "test the test instance: version, health, row counts, imported projects present",
      run = function(ctx)
        local db <close> = U.connect(U.odbc_connection(ctx.params.test_db))
        U.test_instance(ctx, test_api(ctx, true), db, {
          version = ctx.state.target, counts = ctx.state.test_counts,
          test = function(api)
            local have = {}
            for p in api:each("projects", { space = "Spaces-1", take = 1000 }) do have[p.Name] = true end
            for _, name in ipairs(ctx.state.imported or {}) do
              if not have[name] then error("imported project '" .. name .. "' is missing after the upgrade", 0) end
            end
          end })
      end,
    },
    main_only(S.maintenance_on(), "main-maintenance-on"),
    main_only(S.wait_idle(), "main-wait-until-idle"),
    main_only({
      describe = "drain the main node and stop its service",
      run = function(ctx)
        local cli = U.cli(ctx)
        cli:drain(true)
        if cli:running() then cli:service("stop") end
      end,
    }, "main-drain-and-stop"),
    main_only(S.backup_database(), "main-backup-database"),
    main_only(S.backup_folders(), "main-backup-folders"),
    main_only(S.write_manifest(), "main-write-manifest"),
    main_only({
      describe = "install each version on the path on the main instance and upgrade its database",
      run = function(ctx)
        local installed = U.upgrade_instance(ctx, U.cli(ctx), ctx.params.msiexec, ctx.state.target,
                                             ctx.run_dir .. "/logs", U.db_connection(ctx))
        return { installed = installed }
      end,
    }, "main-upgrade"),
    main_only({
      describe = "start the main instance's service and take the node out of drain",
      run = function(ctx)
        local cli = U.cli(ctx)
        if not cli:running() then cli:service("start") end
        cli:drain(false)
        ctx._api = U.wait_api(ctx.params.server_url, ctx.params.api_key, ctx.params.verify_tls, 120)
      end,
    }, "main-start-and-undrain"),
    main_only({
      describe = "test the main instance: version, health, row counts, old task logs and artifacts readable",
      run = function(ctx)
        local db <close> = U.connect(U.db_connection(ctx))
        local folders = {}
        for name, f in pairs(ctx.state.folders or {}) do
          folders[#folders + 1] = { path = f.path, manifest = saved(ctx, "folders/" .. name .. ".SHA256SUMS") }
        end
        U.test_instance(ctx, U.api(ctx), db, { version = ctx.state.target, counts = ctx.state.source_counts,
                                               folders = folders })
      end,
    }, "main-test"),
    main_only(S.maintenance_off(), "main-maintenance-off"),
  },
}
