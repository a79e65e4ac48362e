-- upkit.http on Windows (make test-windows): libcurl with Schannel against the
-- loopback server tests/run.sh starts (tests/lib/httpd.py); its URL is in
-- UPKIT_TEST_HTTP.
local T = require "upkit.test"
local http = require "upkit.http"
local fs = require "upkit.fs"
local hash = require "upkit.hash"

local base = os.getenv("UPKIT_TEST_HTTP")
if not base then
  T.skip("upkit.http under Wine", "UPKIT_TEST_HTTP is not set (make test-windows sets it)")
  T.done()
  return
end

T.test("GET /echo returns 200 and a JSON body", function()
  local c = http.client { base = base, timeout = 20 }
  local r = c:get("/echo?x=1")
  T.eq(r.status, 200)
  T.eq(r:json().method, "GET")
  c:close()
end)

T.test("a 404 is a status, not an error", function()
  local c = http.client { base = base, timeout = 20 }
  T.eq(c:get("/status/404").status, 404)
  c:close()
end)

T.test("download writes the file and checks its sha256", function()
  local p = T.tmpdir() .. "/data.bin"
  local c = http.client { base = base, timeout = 20 }
  c:download("/data?size=200000", p)
  T.eq(#fs.read(p), 200000)
  local sum = hash.file("sha256", p)
  local q = T.tmpdir() .. "/again.bin"
  c:download("/data?size=200000", q, { sha256 = sum })
  T.raises("CHECKSUM_MISMATCH", c.download, c, "/data?size=200000", T.tmpdir() .. "/bad.bin",
           { sha256 = string.rep("0", 64) })
  c:close()
end)

T.test("a closed port raises CONNECT_FAILED", function()
  local c = http.client { base = "http://127.0.0.1:1", timeout = 10, retries = 0 }
  T.raises("CONNECT_FAILED", c.get, c, "/")
  c:close()
end)

T.test("a slow answer raises TIMEOUT", function()
  local c = http.client { base = base, timeout = 1, retries = 0 }
  T.raises("TIMEOUT", c.get, c, "/slow?delay=5")
  c:close()
end)

T.done()
