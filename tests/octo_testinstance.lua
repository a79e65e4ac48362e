-- The test-instance procedure against the Octopus simulator: a new instance of
-- the main version with a new database gets the chosen projects, is upgraded and
-- tested while the main instance is untouched; on a 3.x main instance projects
-- cannot be asked for, an empty test instance can, and upgrade_main goes on with
-- the main instance.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local octofix = require "octofix"

local F = octofix.new { version = "2021.1.7687" }
local test_cs = F:new_database("OctopusTest").odbc
T.write_file(F.dir .. "/test-admin-password", "rehearsal-pw-41\n")

local function config(fix, extra, name)
  local db = fix:new_database("OctopusTest")
  local cfg = {
    test_server_exe = fix.clone.server_exe, test_msiexec = fix.clone.msiexec, test_home = fix.clone.machine .. "/Octopus",
    test_db = db.ado, test_odbc = db.odbc, test_url = fix.clone_url,
    test_service_control = fix.clone.sc or "", test_file_version = fix.clone.filever or "",
  }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return fix:config(cfg, name)
end

local function args(fix, cfg)
  return fix:args(cfg) .. " --set test_admin_password_file=" .. T.q(fix.dir .. "/test-admin-password")
end

T.test("a missing parameter stops before anything, with exit code 2", function()
  local cfg = F:config({ test_server_exe = F.clone.server_exe, test_home = F.clone.machine .. "/Octopus",
                         test_url = F.clone_url }, "no-db")
  local out, err, code = F:upkit("run test-instance --yes " .. args(F, cfg))
  T.eq(code, 2, out .. err)
  T.contains(err, "missing parameter 'test_db'")
  T.eq(T.read_file(F.clone.server_exe), nil, "nothing installed on the test server")
end)

local main_before = octofix.dump(F.main.connection_string)
local export_task

-- A dump without what the export itself records on main: its task, its artifact
-- and the id counters.
local function without_export(dump)
  local out = {}
  for t, rows in pairs(dump) do
    if t ~= "KeyAllocation" then
      out[t] = {}
      for _, r in ipairs(rows) do
        if not ((t == "ServerTask" and r.Id == export_task) or (t == "Artifact" and r.ServerTaskId == export_task)) then
          out[t][#out[t] + 1] = r
        end
      end
    end
  end
  return out
end

T.test("2021.1: the chosen projects are exported, imported, and the test instance upgraded and tested", function()
  local cfg = config(F, { projects = "Project 2, Projects-4" })
  local out, err, code = F:upkit("run test-instance --yes " .. args(F, cfg))
  T.eq(code, 0, out .. err)
  T.contains(out, "exported Project 2, Project 4")
  export_task = out:match("exported Project 2, Project 4 %(task (ServerTasks%-%d+)%)")
  T.ok(export_task, "the export task is named")
  T.contains(out, "upgrade path: 2021.1.7687 -> 2024.4.7000 -> 2025.4.10700")
  T.contains(out, "instance tests passed: version 2025.4.10700")
  T.contains(out, "upgrade_main=false: the main instance is left as it is")
  local names = {}
  for _, r in ipairs(octofix.query(test_cs, "SELECT Name FROM Project ORDER BY Name")) do names[#names + 1] = r.Name end
  T.eq(names, { "Project 2", "Project 4" })
  local key = T.read_file(F.dir .. "/backup/test-api-key.txt"):gsub("%s+$", "")
  local http = require "upkit.http"
  local c <close> = http.client { base = F.clone_url, headers = { ["X-Octopus-ApiKey"] = key } }
  T.eq(c:get("/api"):json().Version, "2025.4.10700")
  T.eq(c:get("/api/Spaces-1/projects"):json().TotalResults, 2)
  local h = octofix.query(test_cs, "SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC")
  T.eq(h[1].Version, "2025.4.10700")
end)

T.test("the main instance is untouched but for the export task: same rows, version, maintenance off", function()
  local after = octofix.dump(F.main.connection_string)
  T.eq(#after.ServerTask, #main_before.ServerTask + 1)
  T.contains(F:sql("SELECT Filename FROM Artifact WHERE ServerTaskId = ?", export_task)[1].Filename, export_task)
  T.eq(without_export(after), without_export(main_before), "main database row for row")
  T.eq(F:api("/api").Version, "2021.1.7687")
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
end)

T.test("the test instance has its own master key and installation id, saved 0600 with the export package", function()
  local key = T.read_file(F.dir .. "/backup/test-master-key.txt"):gsub("%s+$", "")
  T.ne(key, F.main.master_key)
  for _, f in ipairs { "master-key.txt", "test-master-key.txt", "test-api-key.txt", "projects-export.zip",
                       "projects-export.password" } do
    T.eq(T.sh("stat -c %a " .. T.q(F.dir .. "/backup/" .. f)), "600\n", f)
  end
  T.eq(T.sh("stat -c %a " .. T.q(F.dir .. "/backup")), "700\n", "the backup folder (test-database.bak in it)")
  local id = "SELECT JSON FROM Configuration WHERE Id = 'upgradeavailability'"
  T.ne(octofix.query(test_cs, id)[1].JSON, F:sql(id)[1].JSON)
end)

T.test("no secret is in the logs or the journal", function()
  local logs = T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt " .. T.q(F.dir) .. "/runs/*/journal.jsonl")
  T.ok(#logs > 1000)
  for _, s in ipairs { F.main.api_key, F.main.master_key, "rehearsal-pw-41",
                       (T.read_file(F.dir .. "/backup/test-api-key.txt"):gsub("%s+$", "")),
                       (T.read_file(F.dir .. "/backup/test-master-key.txt"):gsub("%s+$", "")),
                       (T.read_file(F.dir .. "/backup/projects-export.password"):gsub("%s+$", "")) } do
    T.eq(logs:find(s, 1, true), nil, "a secret in the logs")
  end
end)

F:stop()

local G = octofix.new { version = "3.17.14" }
T.write_file(G.dir .. "/test-admin-password", "rehearsal-pw-41\n")
local g_before = octofix.dump(G.main.connection_string)
local g_test_cs = G:new_database("OctopusTest").odbc

T.test("3.17.14: asking for projects fails the preflight check, nothing changed", function()
  local cfg = config(G, { projects = "Project 1" }, "projects")
  local out, err, code = G:upkit("run test-instance --yes " .. args(G, cfg))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "check of step 'check-projects' failed")
  T.contains(out .. err, "do not exist before Octopus 2021.1 and the main instance runs 3.17.14")
  T.contains(err, "nothing was changed")
  T.eq(T.read_file(G.clone.server_exe), nil, "nothing installed on the test server")
  T.eq(octofix.dump(G.main.connection_string), g_before)
end)

T.test("3.17.14: an empty test instance (said so), upgraded and tested; upgrade_main=true upgrades main in place", function()
  local cfg = config(G, { upgrade_main = true })
  local out, err, code = G:upkit("run test-instance --yes " .. args(G, cfg))
  T.eq(code, 0, out .. err)
  T.contains(out, "project export and import do not exist before Octopus 2021.1 (main runs 3.17.14): no projects " ..
                  "are imported, the test instance stays empty")
  T.eq(octofix.query(g_test_cs, "SELECT COUNT(*) AS n FROM Project")[1].n, 0)
  local h = octofix.query(g_test_cs, "SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC")
  T.eq(h[1].Version, "2025.4.10700")
  -- the main instance, after its own backup
  T.eq(G:api("/api").Version, "2025.4.10700")
  T.eq(G:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  T.eq(G:sql("SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC LIMIT 1")[1].Version,
       "2025.4.10700")
  T.eq(G:sql("SELECT COUNT(*) AS n FROM Project")[1].n, g_before.Project and #g_before.Project)
  local m = require("upkit.json").decode(T.read_file(G.dir .. "/backup/backup.json"))
  T.eq(m.version, "3.17.14")
  T.ok(m.database and m.folders and m.folders.TaskLogs, "database and folders of main backed up")
end)

G:stop()
T.done()
