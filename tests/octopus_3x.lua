-- upkit.octopus against a simulated 3.17.14 server: no spaces, no workers,
-- no project export; everything else as on a modern server.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local S = require "httpd"
local octopus = require "upkit.octopus"

local info, srv = S.octosim(T, "3.17.14", "--machines 65")
local function connect(key)
  return octopus.connect { url = srv.url, api_key = key or info.api_key, timeout = 10, backoff = 0.01,
                           feed_url = srv.url .. "/download/upgrade/v3", download_base = srv.url .. "/octopus",
                           log = function() end }
end
local function count(sql)
  return tonumber(T.sh("sqlite3 " .. T.q(info.database) .. " " .. T.q(sql)):match("%d+"))
end

T.test("a 3.17.14 server has no spaces", function()
  local s <close> = connect()
  T.eq(s:version(), "3.17.14")
  T.eq(s:has_spaces(), false)
  T.eq(s:spaces(), {})
  T.eq(s:path("machines", "Spaces-1"), "/api/machines")
end)

T.test("paging over several pages without spaces", function()
  local s <close> = connect()
  local n = 0
  for m in s:each("machines", { take = 10 }) do
    n = n + 1
    T.eq(m.SpaceId, nil)
  end
  T.eq(n, 65)
end)

T.test("set_disabled on 3.x: machines, triggers and subscriptions; workers are skipped", function()
  local s <close> = connect()
  local r = s:set_disabled("machines", true, { concurrency = 4 })
  T.eq({ r.changed, r.unchanged, r.total, #r.failed }, { 65, 0, 65, 0 })
  T.eq(count("SELECT COUNT(*) FROM Machine WHERE IsDisabled = 0"), 0)
  local t = s:set_disabled("projecttriggers", true)
  T.eq(t.changed, count("SELECT COUNT(*) FROM ProjectTrigger"))
  T.eq(s:set_disabled("subscriptions", true).changed, 3)
  local w = s:set_disabled("workers", true)
  T.eq(w.total, 0)
  T.match(w.skipped, "2018.7")
end)

T.test("maintenance, health (the server status), licence and nodes on 3.x; no server-folders endpoint", function()
  local s <close> = connect()
  T.eq(s:set_maintenance(true).changed, true)
  T.eq(s:set_maintenance(true).changed, false)
  T.eq(s:set_maintenance(false).on, false)
  local h = s:health()  -- 3.x has no /api/serverstatus/health: the server status stands in
  T.eq(h.IsInMaintenanceMode, false)
  T.eq(h.IsOperatingNormally, nil)
  T.eq(s:license_status().IsCompliant, true)
  -- no server-folders endpoint on 3.x: the procedures read show-configuration's folder keys
  T.raises("NOT_FOUND", s.server_folders, s)
  T.eq(#s:nodes(), 1)
  T.eq(s:wait_until_idle { timeout = 5, interval = 0.1 }.tasks, 0)
end)

T.test("project export and import need 2021.1: UNSUPPORTED names the version", function()
  local s <close> = connect()
  local e = T.raises("UNSUPPORTED", s.export_projects, s, { projects = { "Project 1" }, password = "pw1" })
  T.contains(e.message, "3.17.14")
  T.contains(e.message, "2021.1")
  T.raises("UNSUPPORTED", s.import_projects, s, { task_id = "ServerTasks-1", password = "pw1" })
end)

T.test("401 for a bad key and 403 for a non-administrator on 3.x", function()
  T.raises("AUTH_FAILED", connect, "API-NOTAKEYNOTAKEYNOTAKEY00")
  local u <close> = connect(info.user_api_key)
  T.raises("PERMISSION_DENIED", u.set_maintenance, u, true)
end)

T.test("the installer of the running version is on the download site", function()
  local s <close> = connect()
  local url = s:installer_url(s:version())
  local r = s.http:head(url)
  T.eq(r.status, 200)
  T.eq(s:versions()[1], "3.17.14")
end)

srv:stop()
T.done()
