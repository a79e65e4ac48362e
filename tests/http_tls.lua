-- TLS: a self-signed certificate (made here with `openssl req`) is refused
-- by default, accepted with cafile; verify = false works and warns each time.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local S = require "httpd"
local http = require "upkit.http"

local dir = T.tmpdir()
local cert, keyf = dir .. "/cert.pem", dir .. "/key.pem"
local _, status = T.sh(string.format(
  "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 -subj /CN=127.0.0.1 " ..
  "-addext subjectAltName=IP:127.0.0.1 2>&1", T.q(keyf), T.q(cert)))
assert(status == 0, "openssl req failed")
local srv = S.httpd(T, "--tls-cert " .. T.q(cert) .. " --tls-key " .. T.q(keyf))
local logs = {}
local function client(opts)
  local o = { base = srv.url, timeout = 5, retries = 0, log = function(l, m) logs[#logs + 1] = l .. ": " .. m end }
  for k, v in pairs(opts or {}) do o[k] = v end
  return http.client(o)
end

T.test("the server speaks https", function()
  T.match(srv.url, "^https://127%.0%.0%.1:%d+$")
end)

T.test("a self-signed certificate is refused by default", function()
  local c <close> = client()
  local e = T.raises("TLS_FAILED", c.get, c, "/echo")
  T.contains(e.message, "GET " .. srv.url .. "/echo")
  T.eq(e.curl_code, "CURLE_PEER_FAILED_VERIFICATION")
  T.eq(e.native, nil)
end)

T.test("the certificate is accepted with cafile", function()
  local c <close> = client { cafile = cert }
  local r = c:get("/echo")
  T.eq(r.status, 200)
  T.eq(r:json().method, "GET")
  T.eq(c:put("/echo", { json = { a = 1 } }):json().body, '{"a":1}')
end)

T.test("a download over https with cafile checks its digest", function()
  local c <close> = client { cafile = cert }
  local r = c:download("/data?size=100000", dir .. "/d.bin")
  T.eq(r.bytes, 100000)
end)

T.test("the host name is checked against the certificate", function()
  local port = srv.url:match(":(%d+)$")
  local c <close> = client { base = "https://localhost:" .. port, cafile = cert }
  T.raises("TLS_FAILED", c.get, c, "/echo")
end)

T.test("a missing cafile raises TLS_FAILED (CURLE_SSL_CACERT_BADFILE)", function()
  local c <close> = client { cafile = dir .. "/none.pem" }
  local e = T.raises("TLS_FAILED", c.get, c, "/echo")
  T.eq(e.curl_code, "CURLE_SSL_CACERT_BADFILE")
end)

T.test("verify = false connects and logs a warning on every request", function()
  logs = {}
  local c <close> = client { verify = false }
  T.eq(c:get("/echo").status, 200)
  T.eq(c:get("/echo").status, 200)
  local res = c:all { { path = "/echo" }, { path = "/echo" } }
  T.eq(res[2].status, 200)
  T.eq(#logs, 3)
  T.match(logs[1], "^warn: http: GET https://127.0.0.1:%d+/echo: TLS certificate verification is off")
end)

T.test("plain http to the https port fails with a transport error", function()
  local c <close> = client { base = (srv.url:gsub("^https", "http")) }
  local e = T.raises(nil, c.get, c, "/echo")
  T.ok(e.code == "NETWORK_ERROR" or e.code == "TLS_FAILED", e.code)
  T.match(e.curl_code, "^CURLE_")
  T.eq(type(e.curl_error), "string")
end)

srv:stop()
T.done()
