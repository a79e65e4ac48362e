-- upkit.octopus against the simulator: a 2023.4 instance with two spaces.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local S = require "httpd"
local octopus = require "upkit.octopus"
local json = require "upkit.json"
local upkit = require "upkit"

local info, srv = S.octosim(T, "2023.4.8166")
-- A second space with its own targets, workers and a subscription; a second node.
S.sqlite(info.database, [[
INSERT INTO Space VALUES ('Spaces-2','Second','second',0,0,'{"Id":"Spaces-2","Name":"Second","Slug":"second","IsDefault":false}');
INSERT INTO Machine (Id, Name, IsDisabled, JSON, SpaceId) VALUES
  ('Machines-901','s2-a',0,'{"Id":"Machines-901","Name":"s2-a","IsDisabled":false,"Roles":["web"]}','Spaces-2'),
  ('Machines-902','s2-b',0,'{"Id":"Machines-902","Name":"s2-b","IsDisabled":false,"Roles":[]}','Spaces-2'),
  ('Machines-903','s2-c',1,'{"Id":"Machines-903","Name":"s2-c","IsDisabled":true,"Roles":[]}','Spaces-2');
INSERT INTO Worker (Id, Name, IsDisabled, JSON, SpaceId) VALUES
  ('Workers-1','w1',0,'{"Id":"Workers-1","Name":"w1","IsDisabled":false}','Spaces-1'),
  ('Workers-2','w2',0,'{"Id":"Workers-2","Name":"w2","IsDisabled":false}','Spaces-1'),
  ('Workers-3','w3',0,'{"Id":"Workers-3","Name":"w3","IsDisabled":false}','Spaces-2');
INSERT INTO Subscription (Id, Name, Type, IsDisabled, JSON, SpaceId) VALUES
  ('Subscriptions-9','s2 hook','Event',0,'{"Id":"Subscriptions-9","Name":"s2 hook","IsDisabled":false}','Spaces-2');
INSERT INTO OctopusServerNode (Id, Name, LastSeen, Rank, IsOffline, MaxConcurrentTasks, IsInMaintenanceMode, JSON)
  SELECT 'OctopusServerNodes-NODE2', 'NODE2', LastSeen, Rank, 0, 5, 0, JSON FROM OctopusServerNode LIMIT 1;
]])

local logs = {}
local function connect(key)
  return octopus.connect { url = srv.url, api_key = key or info.api_key, timeout = 10, backoff = 0.01,
                           feed_url = srv.url .. "/download/upgrade/v3", download_base = srv.url .. "/octopus",
                           log = function(l, m) logs[#logs + 1] = l .. ": " .. m end }
end
local function count(sql)
  local out = T.sh("sqlite3 " .. T.q(info.database) .. " " .. T.q(sql))
  return tonumber(out:match("%d+"))
end

T.test("connect reads the version and knows the server has spaces", function()
  local s <close> = connect()
  T.eq(s:version(), "2023.4.8166")
  T.eq(s:has_spaces(), true)
  T.eq(s.url, srv.url)
  local s2 <close> = octopus.connect { url = srv.url .. "/api/", api_key = info.api_key }
  T.eq(s2:version(), "2023.4.8166")
end)

T.test("a wrong API key raises AUTH_FAILED and names no key", function()
  local e = T.raises("AUTH_FAILED", connect, "API-WRONGWRONGWRONGWRONG1234")
  T.eq(e.status, 401)
  T.ok(not tostring(e):find("WRONGWRONG", 1, true), "key in message")
end)

T.test("an unreachable server raises CONNECT_FAILED", function()
  T.raises("CONNECT_FAILED", octopus.connect, { url = "http://127.0.0.1:1", api_key = "API-X", retries = 0 })
end)

T.test("connect checks its options", function()
  T.raises("EINVAL", octopus.connect, { url = srv.url })
  T.raises("EINVAL", octopus.connect, { url = srv.url, api_key = info.api_key, apikey = "x" })
end)

T.test("maintenance mode goes on and off; switching to the same state is a no-op that says so", function()
  local s <close> = connect()
  T.eq(s:maintenance(), false)
  logs = {}
  T.eq(s:set_maintenance(true), { changed = true, on = true })
  T.eq(s:maintenance(), true)
  T.eq(s:status().IsInMaintenanceMode, true)
  T.eq(s:set_maintenance(true), { changed = false, on = true })
  T.match(logs[#logs], "already on")
  T.eq(s:set_maintenance(false), { changed = true, on = false })
  T.eq(s:maintenance(), false)
end)

T.test("a non-administrator gets PERMISSION_DENIED for maintenance mode", function()
  local s <close> = connect(info.user_api_key)
  T.eq(s:maintenance(), false)
  local e = T.raises("PERMISSION_DENIED", s.set_maintenance, s, true)
  T.eq(e.status, 403)
  T.contains(e.message, "PUT /api/maintenanceconfiguration")
  T.contains(e.message, "AdministerSystem")
end)

T.test("status, health, licence status and server folders", function()
  local s <close> = connect()
  T.eq(s:status().IsInMaintenanceMode, false)
  T.eq(s:health().IsOperatingNormally, true)
  T.eq(s:license_status().IsCompliant, true)
  local f = s:server_folders()
  T.eq(f.artifacts, info.folders.Artifacts)
  T.eq(f.task_logs, info.folders.TaskLogs)
  T.eq(f.event_exports, nil, "the endpoint names three folders (Octopus's upgrade script reads exactly these)")
  T.ok(f.packages)
end)

T.test("spaces lists every space", function()
  local s <close> = connect()
  local ids = {}
  for _, sp in ipairs(s:spaces()) do ids[#ids + 1] = sp.Id end
  T.eq(ids, { "Spaces-1", "Spaces-2" })
end)

T.test("each follows Page.Next over several pages", function()
  local s <close> = connect()
  local names, pages = {}, 0
  for m in s:each("machines", { space = "Spaces-1", take = 5 }) do names[#names + 1] = m.Name end
  T.eq(#names, 12)
  T.eq(names[1], "target-00001")
  T.eq(names[12], "target-00012")
  T.eq(#s:list("machines", { space = "Spaces-2", take = 2 }), 3)
  T.eq(#s:list("machines", { take = 7 }), 12, "no space: the default space")
  for _ in s:each("environments", { take = 1 }) do pages = pages + 1 end
  T.eq(pages, 3)
  T.raises("NOT_FOUND", s.list, s, "machines", { space = "Spaces-9" })
end)

T.test("set_disabled disables machines in every space and counts what changed", function()
  local s <close> = connect()
  local r = s:set_disabled("machines", true)
  T.eq(r.total, 15)
  T.eq(r.changed, 14)
  T.eq(r.unchanged, 1)
  T.eq(#r.failed, 0)
  T.eq(count("SELECT COUNT(*) FROM Machine WHERE IsDisabled = 0"), 0)
  local m = s:get("/api/Spaces-1/machines/Machines-3")
  T.eq(m.IsDisabled, true)
  T.eq(m.Endpoint.CommunicationStyle, "TentaclePassive", "the whole resource was kept")
  r = s:set_disabled("machines", true)
  T.eq({ r.changed, r.unchanged }, { 0, 15 })
  r = s:set_disabled("machines", false, { space = "Spaces-2" })
  T.eq({ r.changed, r.unchanged, r.total }, { 3, 0, 3 })
end)

T.test("set_disabled covers workers, project triggers and subscriptions", function()
  local s <close> = connect()
  local w = s:set_disabled("workers", true)
  T.eq({ w.changed, w.total }, { 3, 3 })
  local t = s:set_disabled("projecttriggers", true)
  T.eq(t.total, count("SELECT COUNT(*) FROM ProjectTrigger"))
  T.eq(t.changed, t.total)
  T.eq(count("SELECT COUNT(*) FROM ProjectTrigger WHERE IsDisabled = 0"), 0)
  local sub = s:set_disabled("subscriptions", true)
  T.eq({ sub.changed, sub.total }, { 4, 4 })
  T.eq(count("SELECT COUNT(*) FROM Subscription WHERE IsDisabled = 0"), 0)
  T.raises("EINVAL", s.set_disabled, s, "tenants", true)
end)

T.test("set_disabled reports each failed PUT and goes on with the others", function()
  local admin <close> = connect()
  admin:set_disabled("machines", false)
  admin:set_maintenance(true)
  local s <close> = connect(info.user_api_key)
  local r = s:set_disabled("machines", true, { space = "Spaces-2" })
  admin:set_maintenance(false)
  T.eq(r.changed, 0)
  T.eq(#r.failed, 3)
  T.eq(r.failed[1].error.code, "PERMISSION_DENIED")
  T.eq(r.failed[1].space, "Spaces-2")
  T.match(r.failed[1].id, "^Machines%-90")
end)

T.test("wait_until_idle waits for queued and running tasks; wait_task returns the task", function()
  local s <close> = connect()
  local t = s:post("/api/tasks", { Name = "Health", SimDurationSeconds = 0.6 })
  local r = s:wait_until_idle { timeout = 15, interval = 0.1 }
  T.eq(r.tasks, 0)
  T.eq(s:get("/api/tasks/" .. t.Id).State, "Success", "the task had finished when wait_until_idle returned")
  T.eq(s:wait_task(t.Id, { interval = 0.1 }).State, "Success")
end)

T.test("wait_until_idle raises TIMEOUT naming the tasks still running", function()
  local s <close> = connect()
  local t = s:post("/api/tasks", { Name = "Backup", SimDurationSeconds = 1.5 })
  local e = T.raises("TIMEOUT", s.wait_until_idle, s, { timeout = 0.3, interval = 0.1 })
  T.contains(e.message, t.Id)
  T.raises("TIMEOUT", s.wait_task, s, t.Id, { timeout = 0.2, interval = 0.1 })
  T.eq(s:wait_task(t.Id, { interval = 0.1 }).State, "Success")
end)

T.test("nodes and drain by id and by name; draining twice is a no-op", function()
  local s <close> = connect()
  local nodes = s:nodes()
  T.eq(#nodes, 2)
  local r = s:drain("NODE2", true)
  T.eq(r.changed, true)
  T.eq(r.node.IsInMaintenanceMode, true)
  T.eq(s:drain("OctopusServerNodes-NODE2", true).changed, false)
  T.eq(s:drain(r.node, false).node.IsInMaintenanceMode, false)
  local u <close> = connect(info.user_api_key)
  T.raises("PERMISSION_DENIED", u.drain, u, "NODE2", true)
  T.raises("NOT_FOUND", s.drain, s, "OctopusServerNodes-NONE", true)
end)

T.test("export and import projects wait for their tasks", function()
  local s <close> = connect()
  local ex = s:export_projects { projects = { "Project 1", "Projects-2" }, password = "export-pass-1", timeout = 20 }
  T.match(ex.task_id, "^ServerTasks%-")
  T.eq(ex.task.State, "Success")
  local im = s:import_projects { task_id = ex.task_id, password = "export-pass-1", timeout = 20 }
  T.eq(im.task.State, "Success")
  T.raises("NOT_FOUND", s.export_projects, s, { projects = { "No Such Project" }, password = "x1x" })
  T.raises("EINVAL", s.export_projects, s, { projects = { "Project 1" } })
end)

T.test("an import with the wrong password raises TASK_FAILED", function()
  local s <close> = connect()
  local ex = s:export_projects { projects = { "Project 3" }, password = "right-pass", timeout = 20 }
  local e = T.raises("TASK_FAILED", s.import_projects, s,
    { task_id = ex.task_id, password = "wrong-pass", timeout = 20, interval = 0.1 })
  T.eq(e.task.State, "Failed")
end)

T.test("versions come from the download feed, ascending and numeric", function()
  local s <close> = connect()
  local v = s:versions()
  T.eq(v[1], "3.17.14")
  T.eq(v[#v], "2025.4.10700")
  T.ok(#v >= 6)
  T.eq(octopus.versions { feed_url = srv.url .. "/download/upgrade/v3" }, v)
  T.raises("HTTP_STATUS", octopus.versions, { feed_url = srv.url .. "/download/upgrade/v9", retries = 0 })
end)

T.test("installer_url points at the download site; the installer downloads and matches its digest", function()
  local s <close> = connect()
  local url = s:installer_url("2023.4.8166")
  T.eq(url, srv.url .. "/octopus/Octopus.2023.4.8166-x64.msi")
  T.eq(octopus.installer_url("3.17.14"), "https://download.octopusdeploy.com/octopus/Octopus.3.17.14-x64.msi")
  local feed = json.decode(T.read_file(info.downloads .. "/versions.json"))
  local want
  for _, e in ipairs(feed) do if e.Version == "2023.4.8166" then want = e.Sha256 end end
  local file = T.tmpdir() .. "/Octopus.msi"
  local r = s.http:download(url, file, { sha256 = want })
  T.eq(r.sha256, want)
  T.raises("EINVAL", octopus.installer_url, "latest")
end)

T.test("server errors carry the status and the server's message", function()
  local s <close> = connect()
  local e = T.raises("NOT_FOUND", s.get, s, "/api/Spaces-1/machines/Machines-999999")
  T.eq(e.status, 404)
  T.contains(e.message, "Machines-999999")
  e = T.raises("HTTP_STATUS", s.put, s, "/api/Spaces-1/machines/Machines-1", { Id = "Machines-2" })
  T.eq(e.status, 400)
end)

T.test("a server answering 503 is retried with its Retry-After", function()
  local faults = info.machine .. "/faults.json"
  T.write_file(faults, json.encode { rest_error_first = 1000000000, retry_after = 1 })
  upkit.sleep(0.7)  -- the simulator re-reads its faults every 0.5 s
  os.execute("(sleep 1.2; rm -f " .. T.q(faults) .. ") &")
  logs = {}
  local s <close> = octopus.connect { url = srv.url, api_key = info.api_key, retries = 6,
    log = function(l, m) logs[#logs + 1] = m end }
  T.eq(s:version(), "2023.4.8166")
  T.ok(#logs >= 1, "a retry was logged")
  T.match(logs[1], "GET " .. srv.url:gsub("%p", "%%%0") .. "/api answered 503; retry 1 of 6 in 1%.00 s")
end)

srv:stop()
T.done()
