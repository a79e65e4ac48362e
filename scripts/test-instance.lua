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
-- test it. With upgrade_main: maintenance on (main), drain and stop every
-- instance of the main machine, back up its database and folders, upgrade it in
-- place, start, undrain, test, maintenance off. `upkit run rollback` with the
-- same backup_dir undoes a failed main upgrade.
--
-- The test instance's API key. A new database has no API key. The procedure
-- makes one (or takes test_api_key) and gives it to the administrator test_admin
-- with `admin --username --password --apiKey` (documented on the command's
-- page); the key is kept in backup_dir/test-api-key.txt (0600). A server whose
-- `admin` refuses --apiKey stops the run, saying how to create a key in the web
-- portal and resume with test_api_key_file.
--
-- Projects. Export and import exist from Octopus 2021.1; there is no documented
-- route before (Octopus.Migrator's partial export is not automated here). On an
-- older main instance a non-empty `projects` fails the preflight check (nothing
-- is changed); with `projects` empty the test instance stays empty and the run
-- says so. The package the export leaves on main is saved in backup_dir
-- (projects-export.zip, its password beside it, both 0600) and uploaded to the
-- test instance (import-export/import-files), which then imports it; the test
-- instance never gets the main instance's API key.
local upkit = require "upkit"
local fs = require "upkit.fs"
local version = require "upkit.version"
local octopus = require "upkit.octopus"
local U = require "upkit.upgrade"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "service_control", "file_version",
  "watchdog", "msiexec", "db", "backup_dir", "download_url", "installer_digests", "versions_feed", "target_version", "timeout",
  "verify_tls", "skip_license_check",
  { name = "test_server_exe", type = "path", default = U.DEFAULT_EXE,
    describe = "Octopus.Server executable on the test server (after the install)" },
  { name = "test_msiexec", type = "path", default = "msiexec", describe = "the installer program on the test server" },
  { name = "test_instance", type = "string", default = "OctopusServer", describe = "instance name of the test instance" },
  { name = "test_home", type = "path", required = true, describe = "home folder of the test instance (config, folders)" },
  { name = "test_db", type = "string", required = true,
    describe = "connection string of the test instance's new database as its server gets it (ADO.NET; an ODBC " ..
               "string is converted); the server creates the database" },
  { name = "test_odbc", type = "string",
    describe = "ODBC connection string upkit uses to reach the test database (default: test_db converted)" },
  { name = "test_url", type = "string", required = true,
    describe = "URL the test instance listens on (configure --webListenPrefixes)" },
  { name = "test_admin", type = "string", default = "upkit-admin",
    describe = "administrator created in the test instance (admin --username)" },
  { name = "test_admin_password", type = "secret", required = true,
    describe = "password of that administrator (admin --password)" },
  { name = "test_api_key", type = "secret",
    describe = "API key for test_admin on the test instance (default: upkit makes one and sets it with admin --apiKey)" },
  { name = "projects", type = "string", default = "",
    describe = "projects to export from main into the test instance: comma-separated names or ids (2021.1+)" },
  { name = "upgrade_main", type = "boolean", default = false,
    describe = "after the test instance passed its tests, upgrade the main instance in place" },
  table.unpack(U.machine_params("test", "test server")))

local function test_cli(ctx) return U.other_cli(ctx, "test") end
local function test_odbc(ctx) return U.other_odbc(ctx, "test") end

local function saved(ctx, name)
  return ctx.params.backup_dir .. "/" .. name
end

-- The test instance's API key: the parameter, or the one this procedure made.
local function test_key(ctx)
  if ctx.params.test_api_key then return ctx.params.test_api_key end
  local file = saved(ctx, "test-api-key.txt")
  if not fs.exists(file) then
    upkit.error("NOT_FOUND", "no API key for the test instance: give test_api_key_file")
  end
  return ctx.secret((fs.read(file):gsub("%s+$", "")))
end

local function test_api(ctx, fresh)
  if fresh or not ctx._test_api then
    if ctx._test_api then ctx._test_api:close() end
    ctx._test_api = U.wait_api(ctx.params.test_url, test_key(ctx), ctx.params.verify_tls, 120)
  end
  return ctx._test_api
end

-- An API key in Octopus's form: API- and 27 upper-case letters and digits.
local function new_api_key()
  local h = require("upkit.hash").new("sha256")
  h:update(U.new_guid(), U.new_guid())
  local raw = h:digest()
  h:close()
  local alphabet, out = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", {}
  for i = 1, 27 do
    local b = raw:byte(i)
    out[i] = alphabet:sub(b % 36 + 1, b % 36 + 1)
  end
  return "API-" .. table.concat(out)
end

local function test_site(ctx)
  return { cli = test_cli(ctx), msiexec = ctx.params.test_msiexec, db = test_odbc(ctx), url = ctx.params.test_url }
end

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
  summary = "Rehearse the upgrade on a new test instance with a few projects, then optionally upgrade main in place " ..
            "(--undo: main's maintenance, watchdog, drain and service; the test instance is new, its server is removed by hand)",
  params = params,
  steps = {
    S.connect(),
    S.master_key(),
    S.licence_and_config(),
    {
      name = "check-projects",
      describe = "the projects asked for exist, and the main instance can export them (2021.1+)",
      check = function(ctx)
        local wanted = U.split_list(ctx.params.projects)
        if #wanted == 0 then return true end
        local api = U.api(ctx)
        if version.lt(api:version(), octopus.EXPORT_SINCE) then
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
        if version.lt(ctx.state.source_version, octopus.EXPORT_SINCE) then
          ctx.log("project export and import do not exist before Octopus 2021.1 (main runs %s): no projects are " ..
                  "imported, the test instance stays empty", ctx.state.source_version)
        elseif #wanted == 0 then
          ctx.log("no projects chosen (projects is empty): the test instance stays empty")
        end
      end,
    },
    S.install_same_version("test_msiexec", "test server"),
    {
      name = "create-test-instance",
      describe = "create the test instance with a new empty database, save its master key, load the licence",
      run = function(ctx)
        local p, cli = ctx.params, test_cli(ctx)
        fs.mkdirs(p.test_home)
        if not cli:has_instance() then
          cli:create_instance(p.test_home .. "/" .. p.test_instance .. ".config", p.test_home)
        end
        cli:run("configure", "--home=" .. p.test_home, "--webListenPrefixes=" .. p.test_url)
        local ado = U.ado_connection(p.test_db)
        if cli:setting("Octopus.Storage.ExternalDatabaseConnectionString") == ado then
          ctx.log("the test instance's database exists already (an earlier run created it)")
        else
          cli:set_database(ado, nil, true)
        end
        local keyfile = saved(ctx, "test-master-key.txt")
        fs.write(keyfile, cli:master_key() .. "\n", { mode = "0600" })
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
      describe = "create the test instance's administrator with an API key (admin --apiKey); start the instance",
      run = function(ctx)
        local p, cli = ctx.params, test_cli(ctx)
        cli:secret(p.test_admin_password)
        local file = saved(ctx, "test-api-key.txt")
        local key = p.test_api_key or (fs.exists(file) and (fs.read(file):gsub("%s+$", ""))) or new_api_key()
        cli:secret(key)
        local ok, err = pcall(cli.run, cli, "admin", "--username=" .. p.test_admin, "--password=" .. p.test_admin_password,
                              "--apiKey=" .. key)
        if not ok then
          if upkit.is_error(err) and err.code == "EXIT_CODE" and tostring(err):find("Unrecognized", 1, true) then
            upkit.error("UNSUPPORTED", string.format("Octopus %s's `admin` takes no --apiKey: create the administrator " ..
              "with `%s admin --instance=%s --username=%s --password=...`, start the instance, sign in at %s, create " ..
              "an API key (Profile, My API Keys), write it to a file and resume with --set test_api_key_file=FILE",
              cli:program_version(), p.test_server_exe, p.test_instance, p.test_admin, p.test_url))
          end
          error(err, 0)
        end
        if not p.test_api_key then fs.write(file, key .. "\n", { mode = "0600" }) end
        cli:service("start")
        local api = test_api(ctx, true)
        ctx.log("test instance answers at %s: Octopus %s; the API key of %s is in %s", p.test_url, api:version(),
                p.test_admin, p.test_api_key and "test_api_key" or file)
      end,
    },
    {
      name = "export-projects",
      describe = "export the chosen projects from the main instance (2021.1+) and save the package",
      run = function(ctx)
        local wanted = U.split_list(ctx.params.projects)
        local api = U.api(ctx)
        if #wanted == 0 or version.lt(api:version(), octopus.EXPORT_SINCE) then
          ctx.log("nothing to export")
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
        local pkg = api:save_export(r.task_id, saved(ctx, "projects-export.zip"))
        ctx.log("exported %s (task %s) to %s, %d bytes", table.concat(exported, ", "), r.task_id, pkg.file, pkg.bytes)
        return { export_file = pkg.file, export_task = r.task_id, exported = exported }
      end,
    },
    {
      name = "import-projects",
      describe = "upload the exported package to the test instance and import it",
      run = function(ctx)
        if not ctx.state.export_file then
          ctx.log("nothing to import")
          return
        end
        local password = ctx.secret((fs.read(saved(ctx, "projects-export.password")):gsub("%s+$", "")))
        local api = test_api(ctx)
        local r = api:import_upload { file = ctx.state.export_file, password = password, timeout = ctx.params.timeout }
        local have = {}
        for p in api:each("projects", { space = "Spaces-1", take = 1000 }) do have[p.Name] = true end
        for _, name in ipairs(ctx.state.exported) do
          if not have[name] then
            upkit.error("TASK_FAILED", string.format("import task %s finished, but project '%s' is not in the test " ..
              "instance", r.task_id, name))
          end
        end
        ctx.log("imported %s into the test instance (task %s)", table.concat(ctx.state.exported, ", "), r.task_id)
        return { imported = ctx.state.exported }
      end,
    },
    {
      name = "backup-test-database",
      describe = "back up the test instance's database",
      run = function(ctx)
        local db <close> = U.connect(test_odbc(ctx))
        local r = require("upkit.sql").backup(db, { to = saved(ctx, "test-database.bak") })
        ctx.log("test database backed up to %s (%d bytes, sha256 %s)", r.file, r.bytes, r.sha256)
        return { test_database_backup = { file = r.file, sha256 = r.sha256, bytes = r.bytes, method = r.method },
                 test_counts = U.counts(db) }
      end,
    },
    S.upgrade("upgrade-test-instance", function(ctx) return "upgrade the test instance to " ..
      tostring(ctx.params.target_version) .. " (with the documented intermediate stops)" end, test_site, "test_installed"),
    {
      name = "test-test-instance",
      describe = "test the test instance: version, health, row counts, imported projects present",
      run = function(ctx)
        local db <close> = U.connect(test_odbc(ctx))
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
    main_only(S.watchdog("delete"), "main-watchdog-delete"),
    main_only(S.drain_and_stop(), "main-drain-and-stop"),
    main_only(S.backup_database(), "main-backup-database"),
    main_only(S.backup_folders(), "main-backup-folders"),
    main_only(S.write_manifest(), "main-write-manifest"),
    main_only(S.upgrade(nil, "install each version on the path on the main instance and upgrade its database",
                        S.main_site(false)), "main-upgrade"),
    main_only(S.start_and_undrain(), "main-start-and-undrain"),
    main_only(S.watchdog("create"), "main-watchdog-create"),
    main_only(S.test_main(), "main-test"),
    main_only(S.maintenance_off(), "main-maintenance-off"),
    S.maintenance_rescue(),
  },
  state_summary = S.state_summary,
}
