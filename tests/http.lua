-- upkit.http against a real server on loopback (tests/lib/httpd.py): methods,
-- bodies, redirects, chunked replies, timeouts, retries, expect, c:all.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local S = require "httpd"
local http = require "upkit.http"
local upkit = require "upkit"

local srv = S.httpd(T)
local logs = {}
local function logger(level, msg) logs[#logs + 1] = level .. ": " .. msg end
local function client(opts)
  local o = { base = srv.url, timeout = 5, connect_timeout = 2, backoff = 0.01, log = logger }
  for k, v in pairs(opts or {}) do o[k] = v end
  return http.client(o)
end
local function key() return "k" .. math.random(1, 1e9) end

T.test("c:get returns status, headers in any case, body and url", function()
  local c <close> = client()
  local r = c:get("/echo")
  T.eq(r.status, 200)
  T.eq(r.headers["Content-Type"], "application/json")
  T.eq(r.headers["content-type"], "application/json")
  T.eq(r.headers["CONTENT-TYPE"], "application/json")
  T.eq(r:json().method, "GET")
  T.eq(r.url, srv.url .. "/echo")
  T.ok(r.seconds >= 0 and r.seconds < 5, "seconds")
end)

T.test("every method reaches the server with its body", function()
  local c <close> = client()
  for _, m in ipairs { "get", "post", "put", "delete", "patch" } do
    local r = c[m](c, "/echo", m ~= "get" and { body = "body of " .. m } or nil)
    local e = r:json()
    T.eq(e.method, m:upper())
    T.eq(e.body, m == "get" and "" or ("body of " .. m))
  end
  local r = c:head("/data?size=1234")
  T.eq(r.status, 200)
  T.eq(r.body, "")
  T.eq(r.headers["Content-Length"], "1234")
  T.eq(c:request { method = "OPTIONS", path = "/echo" }:json().method, "OPTIONS")
end)

T.test("json bodies are encoded with a JSON content type and decoded by r:json()", function()
  local c <close> = client()
  local e = c:post("/echo", { json = { Name = "web-01", IsDisabled = true, Tags = { "a", "b" } } }):json()
  T.eq(e.headers["content-type"], "application/json")
  T.eq(require("upkit.json").decode(e.body), { Name = "web-01", IsDisabled = true, Tags = { "a", "b" } })
end)

T.test("query tables are URL-encoded and added to the path", function()
  local c <close> = client()
  local e = c:get("/echo?x=1", { query = { states = "Executing,Queued", name = "a b&c" } }):json()
  T.eq(e.query, { x = "1", states = "Executing,Queued", name = "a b&c" })
end)

T.test("client headers are sent and request headers override them", function()
  local c <close> = client { headers = { ["X-One"] = "1", ["X-Two"] = "2" } }
  local e = c:get("/echo", { headers = { ["x-two"] = "two" } }):json()
  T.eq(e.headers["x-one"], "1")
  T.eq(e.headers["x-two"], "two")
end)

T.test("large bodies go up and come down whole", function()
  local c <close> = client()
  local big = string.rep("0123456789abcdef", 1 << 18)  -- 4 MiB
  local e = c:put("/echo", { body = big }):json()
  T.eq(#e.body, #big)
  T.eq(e.body == big, true)
  local r = c:get("/data?size=" .. (16 << 20))
  T.eq(#r.body, 16 << 20)
  T.eq(r.body:byte(252), 0)
  T.eq(r.body:byte(1 << 20), ((1 << 20) - 1) % 251)
end)

T.test("a chunked reply is assembled", function()
  local c <close> = client()
  T.eq(c:get("/chunked?parts=3").body, "part 0\npart 1\npart 2\n")
end)

T.test("connections are kept alive between requests", function()
  local c <close> = client()
  local p1 = c:get("/echo"):json().peer
  local p2 = c:post("/echo", { json = { 1 } }):json().peer
  local p3 = c:get("/echo"):json().peer
  T.eq(p2, p1)
  T.eq(p3, p1)
end)

T.test("a 4xx or 5xx status is an answer, not an error", function()
  local c <close> = client()
  T.eq(c:get("/status/404").status, 404)
  T.eq(c:get("/status/500").status, 500)
  T.eq(c:get("/status/401").body, "status 401")
end)

T.test("expect raises HTTP_STATUS with the status and the start of the body", function()
  local c <close> = client()
  T.eq(c:get("/status/201", { expect = { 200, 201 } }).status, 201)
  local e = T.raises("HTTP_STATUS", c.get, c, "/status/403?body=no+access+for+you", { expect = 200 })
  T.eq(e.status, 403)
  T.eq(e.body, "no access for you")
  T.contains(e.message, "GET " .. srv.url .. "/status/403")
  T.contains(e.message, "403")
end)

T.test("a body that is not JSON raises BAD_JSON from r:json()", function()
  local c <close> = client()
  local r = c:get("/badjson")
  T.eq(r.status, 200)
  local e = T.raises("BAD_JSON", r.json, r)
  T.contains(e.message, "/badjson")
end)

T.test("redirects are followed; 303 turns a POST into a GET", function()
  local c <close> = client()
  local r = c:get("/redirect/3")
  T.eq(r.status, 200)
  T.eq(r.url, srv.url .. "/echo")
  local e = c:post("/redirect?code=303&to=/echo", { json = { a = 1 } }):json()
  T.eq(e.method, "GET")
  e = c:put("/redirect?code=307&to=/echo", { body = "kept" }):json()
  T.eq(e.method, "PUT")
  T.eq(e.body, "kept")
end)

T.test("follow = false returns the redirect; too many redirects raise", function()
  local c <close> = client { max_redirects = 2 }
  local r = c:get("/redirect/1", { follow = false })
  T.eq(r.status, 302)
  T.eq(r.headers.location, "/echo")
  T.raises("NETWORK_ERROR", c.get, c, "/redirect/5")
end)

T.test("a slow server raises TIMEOUT (curl_code CURLE_OPERATION_TIMEDOUT) after the timeout", function()
  local c <close> = client { timeout = 0.5, retries = 0 }
  local t0 = upkit.now()
  local e = T.raises("TIMEOUT", c.get, c, "/slow?delay=3")
  T.eq(e.curl_code, "CURLE_OPERATION_TIMEDOUT")
  T.eq(type(e.curl_error), "string")
  T.ok(upkit.now() - t0 < 2, "gave up in time")
  T.contains(e.message, "GET " .. srv.url .. "/slow?delay=3")
end)

T.test("an unreachable server raises CONNECT_FAILED naming method and url", function()
  local c <close> = client { base = "http://127.0.0.1:1", retries = 1 }
  local e = T.raises("CONNECT_FAILED", c.delete, c, "/things/7")
  T.eq(e.curl_code, "CURLE_COULDNT_CONNECT")
  T.eq(e.native, nil)
  T.contains(e.message, "DELETE http://127.0.0.1:1/things/7")
  T.eq(e.attempts, 2)
end)

T.test("503 twice then 200: retried, and each retry logged", function()
  logs = {}
  local c <close> = client()
  local r = c:get("/flaky/" .. key() .. "?fails=2&status=503")
  T.eq(r.status, 200)
  T.eq(r:json().attempts, 3)
  T.eq(#logs, 2)
  T.match(logs[1], "^warn: http: GET .* answered 503; retry 1 of 3")
  T.match(logs[2], "retry 2 of 3")
end)

T.test("429, 502 and 504 are retried too; PUT and DELETE are retried", function()
  local c <close> = client()
  T.eq(c:put("/flaky/" .. key() .. "?fails=1&status=429", { json = {} }).status, 200)
  T.eq(c:delete("/flaky/" .. key() .. "?fails=1&status=502").status, 200)
  T.eq(c:get("/flaky/" .. key() .. "?fails=1&status=504").status, 200)
  T.eq(c:get("/flaky/" .. key() .. "?fails=1&status=500").status, 500, "500 is not retried")
end)

T.test("Retry-After is honoured and capped by retry_after_max", function()
  local c <close> = client()
  local t0 = upkit.now()
  T.eq(c:get("/flaky/" .. key() .. "?fails=1&retry_after=1").status, 200)
  T.ok(upkit.now() - t0 >= 0.95, "waited the Retry-After second")
  local c2 <close> = client { retry_after_max = 0.2 }
  t0 = upkit.now()
  T.eq(c2:get("/flaky/" .. key() .. "?fails=1&retry_after=30").status, 200)
  T.ok(upkit.now() - t0 < 2, "capped")
end)

T.test("Retry-After as an HTTP date waits until then, by the server's own clock", function()
  local function enc(s) return (s:gsub("[^%w]", function(ch) return string.format("%%%02X", ch:byte()) end)) end
  local c <close> = client { backoff = 0.05 }
  local t0 = upkit.now()
  local at = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
  T.eq(c:get("/flaky/" .. key() .. "?fails=1&retry_after=" .. enc(at)).status, 200)
  local waited = upkit.now() - t0
  T.ok(waited >= 0.95 and waited < 3.5, "waited until the date (" .. waited .. " s)")
  t0 = upkit.now()
  local past = os.date("!%A, %d-%b-%y %H:%M:%S GMT", os.time() - 3600)  -- the old RFC 850 form
  T.eq(c:get("/flaky/" .. key() .. "?fails=1&retry_after=" .. enc(past)).status, 200)
  T.ok(upkit.now() - t0 < 0.9, "a date gone by: at once")
  t0 = upkit.now()
  T.eq(c:get("/flaky/" .. key() .. "?fails=1&retry_after=" .. enc("soon, please")).status, 200)
  T.ok(upkit.now() - t0 < 0.9, "not a date: the client's own backoff")
end)

T.test("proxy: requests go through the proxy named, its password never shown", function()
  -- The test server answers a request in proxy form (an absolute URL) itself: a host
  -- name that resolves nowhere is reached only through it.
  local c <close> = client { proxy = srv.url }
  local e = c:get("http://upkit-proxy-test.invalid/echo?x=1"):json()
  T.eq(e.target, "http://upkit-proxy-test.invalid/echo?x=1")
  T.eq(e.headers.host, "upkit-proxy-test.invalid")
  T.eq(e.query, { x = "1" })
  local direct <close> = client()
  T.eq(direct:get("/echo"):json().target, "/echo", "without a proxy: origin form")
  local bad <close> = client { proxy = "http://user:proxy-secret-77@127.0.0.1:1", retries = 0 }
  local err = T.raises("CONNECT_FAILED", bad.get, bad, "http://upkit-proxy-test.invalid/echo")
  T.ok(not err.message:find("proxy-secret-77", 1, true), "no proxy password in: " .. err.message)
end)

T.test("a POST is not retried unless retry_post is set", function()
  local c <close> = client()
  local k = key()
  T.eq(c:post("/flaky/" .. k .. "?fails=1", { json = {} }).status, 503)
  T.eq(c:get("/count/" .. k):json().count, 1)
  local k2 = key()
  T.eq(c:post("/flaky/" .. k2 .. "?fails=1", { json = {}, retry_post = true }).status, 200)
  T.eq(c:get("/count/" .. k2):json().count, 2)
end)

T.test("when retries run out the last status is returned, or raised with expect", function()
  local c <close> = client { retries = 2 }
  local k = key()
  T.eq(c:get("/flaky/" .. k .. "?fails=10").status, 503)
  T.eq(c:get("/count/" .. k):json().count, 3)
  local e = T.raises("HTTP_STATUS", c.get, c, "/flaky/" .. key() .. "?fails=10", { expect = 200 })
  T.eq(e.status, 503)
end)

T.test("a dropped connection is retried, then raises NETWORK_ERROR (CURLE_GOT_NOTHING)", function()
  logs = {}
  local c <close> = client { retries = 1 }
  local e = T.raises("NETWORK_ERROR", c.get, c, "/drop")
  T.eq(e.attempts, 2)
  T.eq(#logs, 1)
end)

T.test("c:all returns results in order, failures as { error = }", function()
  local c <close> = client { retries = 0 }
  local reqs = {}
  for i = 1, 40 do reqs[i] = { method = "PUT", path = "/echo", json = { i = i } } end
  reqs[41] = { path = "/status/404", expect = 200 }
  reqs[42] = { url = "http://127.0.0.1:1/nothing" }
  reqs[43] = { path = "/status/404" }
  local res, failures = c:all(reqs, { concurrency = 8 })
  T.eq(#res, 43)
  for i = 1, 40 do
    T.eq(res[i].status, 200)
    T.eq(require("upkit.json").decode(res[i]:json().body).i, i)
  end
  T.eq(res[41].error.code, "HTTP_STATUS")
  T.eq(res[42].error.code, "CONNECT_FAILED")
  T.eq(res[42].error.curl_code, "CURLE_COULDNT_CONNECT")
  T.eq(res[43].status, 404)
  T.eq(failures, 2)
end)

T.test("c:all runs requests concurrently", function()
  local c <close> = client()
  local reqs = {}
  for i = 1, 16 do reqs[i] = { path = "/slow?delay=0.4&i=" .. i } end
  local t0 = upkit.now()
  local res, failures = c:all(reqs, { concurrency = 8 })
  local dt = upkit.now() - t0
  T.eq(failures, 0)
  T.ok(dt < 1.6, "16 x 0.4 s at 8 at once took " .. dt)
  T.ok(dt >= 0.75, "two rounds")
  T.eq(res[16].body, "slow")
end)

T.test("c:all retries 503s and follows redirects per request", function()
  local c <close> = client()
  local reqs = {}
  for i = 1, 10 do reqs[i] = { path = "/flaky/" .. key() .. "?fails=" .. (i % 3) } end
  reqs[11] = { path = "/redirect/2" }
  local res, failures = c:all(reqs)
  T.eq(failures, 0)
  for i = 1, 10 do T.eq(res[i]:json().attempts, i % 3 + 1) end
  T.eq(res[11]:json().path, "/echo")
  T.eq(#c:all({}), 0)
end)

T.test("unknown options raise EINVAL naming the key", function()
  local e = T.raises("EINVAL", http.client, { bsae = "x" })
  T.contains(e.message, "bsae")
  local c <close> = client()
  T.contains(T.raises("EINVAL", c.get, c, "/echo", { jsno = {} }).message, "jsno")
  T.raises("EINVAL", c.get, c, "/echo", { timeout = "soon" })
  T.raises("EINVAL", c.all, c, {}, { concurency = 2 })
  T.raises("EINVAL", c.download, c, "/data", "/tmp/x", { sha = "1" })
  local nobase <close> = http.client {}
  T.raises("EINVAL", nobase.get, nobase, "/relative")
end)

T.test("close is idempotent; a closed client raises CLOSED", function()
  local c = client()
  c:close()
  c:close()
  T.eq(c:is_open(), false)
  T.raises("CLOSED", c.get, c, "/echo")
  T.match(tostring(c), "closed")
end)

T.test("a client left open is closed by __gc: it leaves the open handles", function()
  local function open_clients()
    local n = 0
    for _, t in ipairs(upkit.open_handles()) do if t == "upkit.http.Client" then n = n + 1 end end
    return n
  end
  local before = open_clients()
  local weak = setmetatable({}, { __mode = "v" })
  do
    local c = client()
    weak[1] = c
    T.eq(c:get("/echo").status, 200)
    T.eq(open_clients(), before + 1)
  end
  collectgarbage()
  collectgarbage()
  T.eq(weak[1], nil, "the client was collected")
  T.eq(open_clients(), before)
end)

T.test("a bad request in c:all raises EINVAL and leaves the client working", function()
  local c <close> = client()
  local e = T.raises("EINVAL", c._all, c, { { method = "GET", url = srv.url .. "/echo", headers = {} }, 5 })
  T.contains(e.message, "request 2")
  e = T.raises("EINVAL", c._all, c, { { method = "GET", url = srv.url .. "/echo", headers = {} }, { method = "GET" } })
  T.contains(e.message, "no url")
  local res, failures = c:all { { path = "/echo" }, { path = "/echo" } }
  T.eq(failures, 0)
  T.eq(res[2].status, 200)
  T.eq(c:get("/echo").status, 200)
end)

srv:stop()
T.done()
