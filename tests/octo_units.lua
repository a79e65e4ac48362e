-- The parts of the Octopus procedures that need no server: the upgrade-path
-- planner (documented stops, OctopusDeploy/Issues #7790), ADO.NET <-> ODBC
-- connection strings, URI templates, the configuration file, the command line's
-- reading of versions and service states, the installer's arguments, and the
-- folder map that must never be empty.
local T = require "upkit.test"
local V = require "upkit.upgrade.versions"
local C = require "upkit.upgrade.database"
local H = require "upkit.upgrade.handles"
local octopus = require "upkit.octopus"
local clim = require "upkit.octopus.cli"

local FEED = { "3.17.14", "2019.1.5", "2021.1.7687", "2021.3.12912", "2022.1.2735", "2023.4.8166", "2024.4.7000",
               "2025.4.10700" }

T.test("upgrade path: the documented stops at 2021.1 and between 2024.3.600 and 2025.4.10666", function()
  T.eq(V.upgrade_path("3.17.14", "2025.4.10700", FEED), { "2021.1.7687", "2024.4.7000", "2025.4.10700" })
  T.eq(V.upgrade_path("2019.1.5", "2023.4.8166", FEED), { "2021.1.7687", "2023.4.8166" })
  T.eq(V.upgrade_path("2023.4.8166", "2025.4.10700", FEED), { "2024.4.7000", "2025.4.10700" })
  T.eq(V.upgrade_path("2024.4.7000", "2024.4.7000", FEED), {})
  T.raises("EINVAL", V.upgrade_path, "2024.4.7000", "2023.4.8166", FEED)
  T.raises("NOT_FOUND", V.upgrade_path, "3.17.14", "2025.4.10700", { "2025.4.10700" })
end)

T.test("upgrade path: #7790, from 2021.3.12912 on, never lands on 2022.1.2735 up to 2022.3", function()
  local e = T.raises("UNSUPPORTED", V.upgrade_path, "2021.3.12912", "2022.1.2735", FEED)
  T.contains(e.message, "#7790")
  T.contains(e.message, "choose a target from 2022.3.0 on")
  T.eq(V.upgrade_path("2021.3.12912", "2023.4.8166", FEED), { "2023.4.8166" })
  T.eq(V.upgrade_path("2021.1.7687", "2022.1.2735", FEED), { "2022.1.2735" }, "before 2021.3.12912 the path is fine")
  -- a stop is never taken in the broken range either
  T.eq(V.upgrade_path("2021.3.12912", "2025.4.10700", { "2022.2.1", "2024.4.7000", "2025.4.10700" }),
       { "2024.4.7000", "2025.4.10700" })
end)

T.test("connection strings: ADO.NET to ODBC and back through upkit.sql.connstr", function()
  local D18 = "ODBC Driver 18 for SQL Server"
  T.eq(C.odbc_connection("Server=db1;Database=Octopus;Integrated Security=SSPI;Connect Timeout=30", D18),
       "Driver=ODBC Driver 18 for SQL Server;Server=db1;Database=Octopus;Trusted_Connection=yes;Encrypt=no")
  T.eq(C.odbc_connection("Driver=SQLite3;Database=/x.db"), "Driver=SQLite3;Database=/x.db", "ODBC already")
  T.eq(C.ado_connection("Data Source=db1;Initial Catalog=Octopus"), "Data Source=db1;Initial Catalog=Octopus",
       "ADO.NET already")
  local back = C.ado_connection(C.odbc_connection("Server=a;Database=b;User ID=c;Password=d", D18))
  T.contains(back, "User ID=c")
  T.contains(back, "Password=d")
  T.raises("EINVAL", C.ado_connection, "")
  T.raises("EINVAL", C.odbc_connection, "")
end)

T.test("links are URI templates: expanded with values, stripped without", function()
  T.eq(octopus.expand("/api/Spaces-1/projects/Projects-1/triggers{?skip,take,partialName}"),
       "/api/Spaces-1/projects/Projects-1/triggers")
  T.eq(octopus.expand("/api/tasks{/id}{?skip,take,spaces,includeSystem}", { id = "ServerTasks-1" }),
       "/api/tasks/ServerTasks-1")
  T.eq(octopus.expand("/api/tasks{/id}{?skip,take,spaces,includeSystem}", { take = 10, spaces = "all" }),
       "/api/tasks?take=10&spaces=all")
  T.eq(octopus.expand("/api/machines?skip=30{&take}", { take = 30 }), "/api/machines?skip=30&take=30")
  T.eq(octopus.expand("/api/x{?q}", { q = "a b&c" }), "/api/x?q=a%20b%26c")
  T.eq(octopus.expand("/api/Spaces-1/machines?skip=10&take=10"), "/api/Spaces-1/machines?skip=10&take=10")
end)

T.test("the configuration file (XML) is read with its entities", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/i.config", [[<?xml version="1.0" encoding="utf-8"?>
<octopus-settings xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <set key="Octopus.Home">C:\Octopus</set>
  <set key="Octopus.Storage.ExternalDatabaseConnectionString">Server=db;Database=O&amp;D;Password=&quot;x&lt;y&quot;</set>
  <set key="Octopus.Folders.ArtifactsDirectory">C:\Octopus\Artifacts</set>
  <set key="Empty" />
</octopus-settings>]])
  local cfg = clim.read_config_file(dir .. "/i.config")
  T.eq(cfg["Octopus.Home"], [[C:\Octopus]])
  T.eq(cfg["Octopus.Storage.ExternalDatabaseConnectionString"], 'Server=db;Database=O&D;Password="x<y"')
  T.eq(cfg["Empty"], "")
  T.raises("ENOENT", clim.read_config_file, dir .. "/missing.config")
end)

-- A stand-in program: a shell script printing `out` and exiting with `code`, recording its argv.
local function standin(dir, name, out, code)
  local path = dir .. "/" .. name
  T.write_file(path, string.format("#!/bin/sh\necho \"$@\" >> %s.argv\nprintf '%%s' %s\nexit %d\n", T.q(path),
                                   T.q(out), code or 0))
  T.sh("chmod +x " .. T.q(path))
  return path
end

T.test("the program's version: the file version's first three parts, never guessed", function()
  local dir = T.tmpdir()
  local exe = standin(dir, "Octopus.Server", "", 0)
  local c = clim.new { exe = exe, file_version = standin(dir, "filever", "2023.4.8166.0\n") }
  T.eq(c:program_version(), "2023.4.8166")
  T.eq(T.read_file(dir .. "/filever.argv"), exe .. "\n", "the file version reader gets the executable's path")
  local silent = clim.new { exe = exe, file_version = standin(dir, "nothing", "") }
  local e = T.raises("NO_VERSION", silent.program_version, silent)
  T.contains(e.message, "printed none")
  e = T.raises("NO_VERSION", function() return clim.new { exe = dir .. "/absent" }:program_version() end)
  T.contains(e.message, "does not exist")
  -- without a file version reader: `version --format=json`, with no --instance
  local cmd = standin(dir, "cmd", '{"InformationalVersion":"2024.4.7000+Branch.main","NuGetVersion":"2024.4.7000"}')
  T.eq(clim.new { exe = cmd }:program_version(), "2024.4.7000")
  T.eq(T.read_file(dir .. "/cmd.argv"), "version --format=json\n")
  -- a program whose `version` is refused (3.x) gives NO_VERSION, not a guess
  T.raises("NO_VERSION", function() return clim.new { exe = standin(dir, "old", "", 1) }:program_version() end)
end)

T.test("the service state comes from the service control program, never from list-instances", function()
  local dir = T.tmpdir()
  local function state(out, code)
    local sc = standin(dir, "sc" .. tostring(code) .. #out, out, code)
    return clim.new { exe = "/x", instance = "Blue", service_control = sc }:service_state()
  end
  T.eq(state("SERVICE_NAME: OctopusDeploy: Blue\n        STATE              : 4  RUNNING\n"), "running")
  T.eq(state("        STATE              : 1  STOPPED\n"), "stopped")
  T.eq(state("[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\n\nThe specified service does not exist\n", 36),
       "absent")
  T.raises("BAD_FORMAT", state, "garbage\n", 1)
  T.contains(T.sh("cat " .. T.q(dir) .. "/sc*.argv"), "query OctopusDeploy: Blue")
  T.eq(clim.service_name("OctopusServer"), "OctopusDeploy")
  T.raises("UNSUPPORTED", function() return clim.new { exe = "/x" }:service_state() end)
end)

T.test("the installer runs once, quietly, with no WIXUI_DONTVALIDATEPATH retry", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/Octopus.1.2.3-x64.msi", "package")
  local digest = require("upkit.hash").file("sha256", dir .. "/Octopus.1.2.3-x64.msi")
  local msiexec = standin(dir, "msiexec", "Installation directory must be on a local hard drive.", 67)
  local e = T.raises("EXIT_CODE", V.install, msiexec, dir .. "/Octopus.1.2.3-x64.msi", digest, dir .. "/logs", 30)
  T.eq(e.exit_code, 67)
  local argv = T.read_file(dir .. "/msiexec.argv")
  T.eq(select(2, argv:gsub("\n", "")), 1, "one run")
  T.eq(argv:find("WIXUI", 1, true), nil)
  T.contains(argv, "/i " .. dir .. "/Octopus.1.2.3-x64.msi /quiet /norestart /l*v " .. dir .. "/logs/install-")
end)

T.test("a server that names no folder stops the procedure: the folder map is never empty", function()
  local function ctx_with(folders, err)
    return { params = {}, state = {}, _api = {
      version = function() return "2022.1.2735" end,
      server_folders = function() if err then error(err, 0) end return folders end } }
  end
  local e = T.raises("BAD_RESPONSE", H.server_folders, ctx_with({}))
  T.contains(e.message, "names no Artifacts folder")
  T.raises("BAD_RESPONSE", H.server_folders, ctx_with({ artifacts = "/a", packages = "/p", task_logs = "" }))
  T.eq(H.server_folders(ctx_with({ artifacts = "/a", packages = "/p", task_logs = "/t" })),
       { Artifacts = "/a", Packages = "/p", TaskLogs = "/t" })
  -- another failure than 404 is not hidden behind the configuration's keys
  local boom = require("upkit").new_error("PERMISSION_DENIED", "403")
  T.raises("PERMISSION_DENIED", H.server_folders, ctx_with(nil, boom))
end)

T.done()
