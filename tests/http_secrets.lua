-- Secrets never leak: API keys in headers and apikey= query values appear
-- in no error, log line or UPKIT_HTTP_TRACE output. A child upkit runs the
-- failing and succeeding paths with tracing on; its whole output is searched.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local S = require "httpd"
local http = require "upkit.http"

local srv = S.httpd(T)
local dir = T.tmpdir()
local KEY = "API-SECRETKEY0123456789ABCDEF"
local TOKEN = "Bearer TOKEN-SECRET-42"

local child = [[
local http = require "upkit.http"
local base, KEY, TOKEN = ...
local function try(f, ...)
  local ok, e = pcall(f, ...)
  print(ok and ("ok " .. tostring(e.status or e.bytes)) or ("error " .. tostring(e.code) .. ": " .. tostring(e)))
  if not ok then for k, v in pairs(e) do print("  ", k, tostring(v)) end end
end
local c = http.client{ base = base, timeout = 2, backoff = 0.01, retries = 1,
  headers = { ["X-Octopus-ApiKey"] = KEY, Authorization = TOKEN } }
try(c.get, c, "/echo?apikey=" .. KEY)
try(c.get, c, "/status/401?body=" .. KEY, { expect = 200 })
try(c.get, c, "/flaky/s1?fails=1&apikey=" .. KEY)
try(c.post, c, "/echo", { json = { ApiKey = KEY } })
try(c.get, c, "/drop?apikey=" .. KEY)
try(c.get, c, "/slow?delay=3&apikey=" .. KEY, { timeout = 0.3 })
try(c.get, c, "/redirect/2?apikey=" .. KEY)
try(c.download, c, "/file/s2?size=300000&drop=1000&apikey=" .. KEY, os.getenv("OUT") .. "/f.bin")
try(c.download, c, "/data?size=10&apikey=" .. KEY, os.getenv("OUT") .. "/g.bin", { sha256 = "00" })
try(c.get, c, "http://user:" .. KEY .. "@127.0.0.1:1/x")
local res = c:all({ { path = "/echo?apikey=" .. KEY }, { url = "http://127.0.0.1:1/?apikey=" .. KEY },
                    { path = "/status/403", expect = 200 } })
for i, r in ipairs(res) do print(i, r.status, r.error and tostring(r.error)) end
local c2 = http.client{ base = base, headers = { ["X-Custom-Token"] = KEY }, secret_headers = { "X-Custom-Token" },
  retries = 0, timeout = 2 }
try(c2.get, c2, "http://127.0.0.1:1/")
try(c2.get, c2, "/echo")
c:close() c2:close()
]]
T.write_file(dir .. "/child.lua", child)

T.test("no secret appears in errors, logs or traces", function()
  local out, status = T.sh(string.format("OUT=%s UPKIT_HTTP_TRACE=1 %s run %s %s %s %s 2>&1",
    T.q(dir), T.q(T.upkit_bin()), T.q(dir .. "/child.lua"), T.q(srv.url), T.q(KEY), T.q(TOKEN)))
  T.eq(status, 0)
  T.ok(not out:find(KEY, 1, true), "the API key leaked:\n" .. out)
  T.ok(not out:find("SECRETKEY", 1, true), "part of the API key leaked")
  T.ok(not out:find("TOKEN-SECRET", 1, true), "the bearer token leaked")
  T.contains(out, "> GET " .. srv.url .. "/echo?apikey=***")
  T.contains(out, "> X-Octopus-ApiKey: ***")
  T.contains(out, "> Authorization: ***")
  T.contains(out, "< 200")
  T.contains(out, "error NETWORK_ERROR")
  T.contains(out, "error TIMEOUT")
  T.contains(out, "error HTTP_STATUS")
  T.contains(out, "error CHECKSUM_MISMATCH")
  T.contains(out, "retry 1 of 1")
end)

T.test("secret headers are not sent to another origin on a redirect", function()
  local port = srv.url:match(":(%d+)$")
  local c <close> = http.client { base = srv.url, headers = { ["X-Octopus-ApiKey"] = KEY, ["X-Other"] = "kept" } }
  local same = c:get("/redirect?to=/echo"):json()
  T.eq(same.headers["x-octopus-apikey"], KEY)
  local other = c:get("/redirect?to=http://localhost:" .. port .. "/echo"):json()
  T.eq(other.headers["x-octopus-apikey"], nil)
  T.eq(other.headers["x-other"], "kept")
end)

T.test("http.redact hides apikey values, URL passwords and given values", function()
  T.eq(http.redact("GET http://h/api?apikey=ABC123&x=1"), "GET http://h/api?apikey=***&x=1")
  T.eq(http.redact("http://u:pw@h/"), "http://u:***@h/")
  T.eq(http.redact("key is SECRET1", { "SECRET1" }), "key is ***")
  T.eq(http.redact(http.redact("a?apikey=Z: failed")), "a?apikey=***: failed")
end)

local octochild = [[
local octopus = require "upkit.octopus"
local url, key, ukey = ...
local function try(f, ...)
  local ok, e = pcall(f, ...)
  print(ok and "ok" or ("error " .. tostring(e.code) .. ": " .. tostring(e)))
end
local s = octopus.connect { url = url, api_key = key, backoff = 0.01 }
try(s.set_maintenance, s, true)
try(s.set_maintenance, s, false)
try(s.set_disabled, s, "machines", true)
try(s.export_projects, s, { projects = { "Project 1" }, password = "PASSWORD-SECRET-77", timeout = 20 })
try(s.get, s, "/api/Spaces-1/machines/Machines-9999?apikey=" .. key)
local u = octopus.connect { url = url, api_key = ukey }
try(u.set_maintenance, u, true)
try(octopus.connect, { url = url, api_key = key .. "X" })
try(octopus.connect, { url = "http://127.0.0.1:1", api_key = key, retries = 1, backoff = 0.01 })
s:close() u:close()
]]
T.write_file(dir .. "/octochild.lua", octochild)

T.test("no API key or password appears in the output of upkit.octopus, traces included", function()
  local info, sim = S.octosim(T, "2023.4.8166")
  local out, status = T.sh(string.format("UPKIT_HTTP_TRACE=1 %s run %s %s %s %s 2>&1",
    T.q(T.upkit_bin()), T.q(dir .. "/octochild.lua"), T.q(sim.url), T.q(info.api_key), T.q(info.user_api_key)))
  sim:stop()
  T.eq(status, 0)
  T.ok(not out:find(info.api_key, 1, true), "the admin API key leaked:\n" .. out)
  T.ok(not out:find(info.api_key:sub(5, 20), 1, true), "part of the admin API key leaked")
  T.ok(not out:find(info.user_api_key, 1, true), "the user API key leaked")
  T.ok(not out:find("PASSWORD-SECRET-77", 1, true), "the export password leaked")
  T.contains(out, "> X-Octopus-ApiKey: ***")
  T.contains(out, "error PERMISSION_DENIED")
  T.contains(out, "error AUTH_FAILED")
  T.contains(out, "error NOT_FOUND")
  T.contains(out, "error CONNECT_FAILED")
end)

srv:stop()
T.done()
