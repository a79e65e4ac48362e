-- The clone-instance procedure against the Octopus simulator: the clone is
-- harmless, upgraded through the documented stops and tested; the main instance
-- is untouched, also when the clone's database upgrade fails.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local octofix = require "octofix"

local F = octofix.new { version = "3.17.14" }
local main_before = octofix.dump(F.main.connection_string)
local clone_cs = "Driver=SQLite3;Database=" .. F.clone_db_file

local function clone_api(path)
  local http = require "upkit.http"
  local c <close> = http.client { base = F.clone_url, headers = { ["X-Octopus-ApiKey"] = F.main.api_key } }
  return c:get(path):json()
end

T.test("clone-instance with a fault in the clone's database upgrade stops there, main untouched", function()
  T.write_file(F.clone.machine .. "/faults.json", json.encode { migration_fail_at = "2024.4.7000" })
  local cfg = F:config()
  local out, err, code = F:upkit("run clone-instance --yes " .. F:args(cfg))
  T.eq(code, 1, out .. err)
  T.contains(err, "step 'upgrade-clone' of clone-instance failed")
  T.contains(err, "--resume")
  T.contains(out, "test-clone")
  T.eq(octofix.dump(F.main.connection_string), main_before, "main database row for row")
  T.eq(F:api("/api").Version, "3.17.14")
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  -- the failing migration rolled back; the last completed upgrade is the 2021.1 stop
  local v = octofix.query(clone_cs, "SELECT Version FROM SchemaVersions ORDER BY Id DESC LIMIT 1")[1].Version
  T.ne(v, "2024.4.7000")
  local h = octofix.query(clone_cs, "SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC")
  T.eq(h[1].Version, "2021.1.7687")
end)

T.test("after the cause is fixed, --resume finishes the clone from the failed step", function()
  os.remove(F.clone.machine .. "/faults.json")
  local out, err, code = F:upkit("run clone-instance --resume --yes " .. F:args(F.dir .. "/site.json"))
  T.eq(code, 0, out .. err)
  T.contains(out, "backup-database        finished")
  T.contains(out, "upgrade-clone          ok")
  T.contains(out, "Result: success")
end)

T.test("the clone runs the newest version and its targets, workers, triggers and subscriptions are disabled", function()
  T.eq(clone_api("/api").Version, "2025.4.10700")
  for _, t in ipairs { "Machine", "ProjectTrigger", "Subscription" } do
    T.eq(octofix.query(clone_cs, "SELECT COUNT(*) AS n FROM " .. t .. " WHERE IsDisabled = 0")[1].n, 0, t)
  end
  T.eq(#octofix.query(clone_cs,
    "SELECT Id FROM ExtensionConfiguration WHERE Id IN ('authentication-octopusid', 'jira-integration')"), 0)
  local main_node = F:sql("SELECT Name FROM OctopusServerNode")[1].Name
  T.eq(#octofix.query(clone_cs, "SELECT Name FROM OctopusServerNode WHERE Name = ?", main_node), 0,
       "the main instance's node row is gone from the clone")
  local history = octofix.query(clone_cs, "SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed")
  T.eq(history[#history].Version, "2025.4.10700")
end)

T.test("the clone has its own installation id, the main one keeps its own", function()
  local main_id = json.decode(F:sql("SELECT JSON FROM Configuration WHERE Id = 'upgradeavailability'")[1].JSON).InstallationId
  local clone_id = json.decode(octofix.query(clone_cs,
    "SELECT JSON FROM Configuration WHERE Id = 'upgradeavailability'")[1].JSON).InstallationId
  T.ne(clone_id, main_id)
  T.match(clone_id, "^%x+%-%x+%-%x+%-%x+%-%x+$")
  T.eq(clone_api("/api").InstallationId, clone_id)
end)

T.test("the clone's folders hold the main instance's files, and counts match", function()
  for _, name in ipairs { "Artifacts", "Packages", "TaskLogs" } do
    T.eq(octofix.tree_digest(F.clone.machine .. "/Octopus/" .. name), octofix.tree_digest(F.main.folders[name]), name)
  end
  for _, t in ipairs { "Project", "Machine", "ServerTask" } do
    T.eq(octofix.query(clone_cs, "SELECT COUNT(*) AS n FROM " .. t)[1].n, F:sql("SELECT COUNT(*) AS n FROM " .. t)[1].n, t)
  end
end)

T.test("the main instance is untouched: same rows, version, maintenance off, targets enabled", function()
  T.eq(octofix.dump(F.main.connection_string), main_before)
  T.eq(F:api("/api").Version, "3.17.14")
  T.eq(F:sql("SELECT COUNT(*) AS n FROM Machine WHERE IsDisabled = 1")[1].n, 0)
end)

T.test("the master key is in no log or journal of the run", function()
  local logs = T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt " .. T.q(F.dir) .. "/runs/*/journal.jsonl")
  T.ok(#logs > 1000)
  T.eq(logs:find(F.main.master_key, 1, true), nil)
  T.eq(logs:find(F.main.api_key, 1, true), nil)
end)

F:stop()
T.done()
