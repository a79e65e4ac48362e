-- c:download: temporary file, Range resume after a dropped connection,
-- digest check, atomic rename, progress; and every way it can fail.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local S = require "httpd"
local http = require "upkit.http"
local hash = require "upkit.hash"

local srv = S.httpd(T)
local dir = T.tmpdir()
local logs = {}
local function client(opts)
  local o = { base = srv.url, timeout = 5, backoff = 0.01, log = function(l, m) logs[#logs + 1] = m end }
  for k, v in pairs(opts or {}) do o[k] = v end
  return http.client(o)
end

local block = {}
for i = 0, 250 do block[#block + 1] = string.char(i) end
block = table.concat(block)
local function pattern(n) return block:rep(n // 251 + 1):sub(1, n) end
local function sha(s) return hash.new("sha256"):update(s):hex() end
local function exists(p) local f = io.open(p, "rb") if f then f:close() end return f ~= nil end
local n = 0
local function target() n = n + 1 return dir .. "/file" .. n .. ".msi" end
-- the resumable temporary of a download (upkit.fs's scheme: <folder>/.upkit-tmp/<name>.part)
local function part(f) return require("upkit.fs").temp_path(f, { resumable = true }) end
local SIZE = 3 * 1000 * 1000 + 7
local WANT = sha(pattern(SIZE))

T.test("download streams to the file, checks sha256 and leaves no temporary file", function()
  local c <close> = client()
  local f = target()
  local r = c:download("/data?size=" .. SIZE, f, { sha256 = WANT:upper() })
  T.eq(r.bytes, SIZE)
  T.eq(r.sha256, WANT)
  T.eq(r.status, 200)
  T.eq(r.file, f)
  T.eq(hash.file("sha256", f), WANT)
  T.eq(exists(part(f)), false)
  T.eq(part(f), dir .. "/.upkit-tmp/" .. f:match("[^/]+$") .. ".part")
end)

T.test("a dropped connection is resumed with a Range request", function()
  logs = {}
  local c <close> = client()
  local f = target()
  local r = c:download("/file/drop1?size=" .. SIZE .. "&drop=1000000", f, { sha256 = WANT })
  T.eq(r.resumes, 1)
  T.eq(r.bytes, SIZE)
  T.eq(hash.file("sha256", f), WANT)
  T.eq(#logs, 1)
  T.match(logs[1], "%[NETWORK_ERROR CURLE_PARTIAL_FILE%]")
end)

T.test("a server that ignores Range gets the file again from the start", function()
  local c <close> = client()
  local f = target()
  local r = c:download("/file/norange?norange=1&size=" .. SIZE .. "&drop=700000", f, { sha256 = WANT })
  T.eq(r.bytes, SIZE)
  T.eq(hash.file("sha256", f), WANT)
end)

T.test("a temporary file left by an earlier run is continued", function()
  local c <close> = client()
  local f = target()
  T.write_file(part(f), pattern(SIZE):sub(1, 1234567))
  local r = c:download("/data?size=" .. SIZE, f, { sha256 = WANT })
  T.eq(r.status, 206)
  T.eq(hash.file("sha256", f), WANT)
end)

T.test("resume = false starts again from zero", function()
  local c <close> = client()
  local f = target()
  T.write_file(part(f), "garbage that must not survive")
  c:download("/data?size=" .. SIZE, f, { sha256 = WANT, resume = false })
  T.eq(hash.file("sha256", f), WANT)
end)

T.test("a complete temporary file is accepted after a 416", function()
  local c <close> = client()
  local f = target()
  T.write_file(part(f), pattern(5000))
  local r = c:download("/data?size=5000", f, { sha256 = sha(pattern(5000)) })
  T.eq(r.bytes, 5000)
  T.eq(T.read_file(f), pattern(5000))
end)

T.test("a digest mismatch raises CHECKSUM_MISMATCH and removes the temporary file", function()
  local c <close> = client()
  local f = target()
  local e = T.raises("CHECKSUM_MISMATCH", c.download, c, "/data?size=1000", f, { sha256 = WANT })
  T.eq(e.expected, WANT)
  T.eq(e.actual, sha(pattern(1000)))
  T.eq(exists(f), false)
  T.eq(exists(part(f)), false)
end)

T.test("a 404 raises HTTP_STATUS and writes nothing", function()
  local c <close> = client()
  local f = target()
  local e = T.raises("HTTP_STATUS", c.download, c, "/status/404", f)
  T.eq(e.status, 404)
  T.eq(exists(f), false)
  T.eq(exists(part(f)), false)
end)

T.test("a download follows redirects", function()
  local c <close> = client()
  local f = target()
  c:download("/redirect?code=302&to=/data%3Fsize%3D4000", f, { sha256 = sha(pattern(4000)) })
  T.eq(T.read_file(f), pattern(4000))
end)

T.test("progress is called with growing byte counts and ends at the total", function()
  local c <close> = client()
  local calls = {}
  c:download("/data?size=" .. SIZE, target(), {
    progress = function(done, total) calls[#calls + 1] = { done, total } end })
  T.ok(#calls >= 1)
  for i = 2, #calls do T.ok(calls[i][1] >= calls[i - 1][1], "grows") end
  T.eq(calls[#calls], { SIZE, SIZE })
end)

T.test("a program started during a download does not inherit the file being written", function()
  local c <close> = client()
  local f = target()
  local listing
  c:download("/data?size=" .. SIZE, f, { progress = function()
    if not listing then
      listing = require("upkit.proc").run({ "sh", "-c", "ls -l /proc/$$/fd" }).stdout
    end
  end })
  T.ok(listing, "a program ran during the download")
  T.ok(not listing:find(".part", 1, true), "the download's descriptor leaked:\n" .. listing)
end)

T.test("an error in the progress callback aborts the transfer and is raised", function()
  local c <close> = client()
  local upkit = require "upkit"
  local e = T.raises("STOP_HERE", c.download, c, "/data?size=" .. SIZE, target(), {
    progress = function() upkit.error("STOP_HERE", "stopped by the callback") end })
  T.eq(e.message, "stopped by the callback")
  T.eq(c:get("/echo").status, 200, "the client still works")
end)

T.test("a stalled transfer raises TIMEOUT", function()
  local c <close> = client { retries = 0 }
  T.raises("TIMEOUT", c.download, c, "/stall?after=1000", target(), { timeout = 1 })
end)

T.test("a missing target folder raises ENOENT", function()
  local c <close> = client()
  T.raises("ENOENT", c.download, c, "/data?size=10", dir .. "/no/such/dir/f.bin")
end)

T.test("an unreachable server raises CONNECT_FAILED", function()
  local c <close> = client { retries = 0 }
  local e = T.raises("CONNECT_FAILED", c.download, c, "http://127.0.0.1:1/x.msi", target())
  T.contains(e.message, "GET http://127.0.0.1:1/x.msi")
end)

srv:stop()
T.done()
