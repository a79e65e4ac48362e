-- What the platform seam answers for Lua: a program's file for a name
-- (proc.which, used by the preflight checks) and random UUIDs (upkit.uuid).
local T = require "upkit.test"
local upkit = require "upkit"
local proc = require "upkit.proc"
local fs = require "upkit.fs"

T.test("proc.which finds a program in PATH and gives its file", function()
  local sh = proc.which("sh")
  T.match(sh, "/sh$")
  T.eq(fs.stat(sh).type == "file" or fs.stat(sh).type == "link", true)
end)

T.test("proc.which: an unknown name, an empty name and a file that is not executable give nil", function()
  T.eq(proc.which("no-such-program-upkit"), nil)
  T.eq(proc.which(""), nil)
  local p = T.tmpdir() .. "/plain.txt"
  fs.write(p, "text")
  T.eq(proc.which(p), nil)
end)

T.test("proc.which keeps a path with a folder part as it is", function()
  local p = T.tmpdir() .. "/tool.sh"
  fs.write(p, "#!/bin/sh\nexit 0\n", { mode = "0755" })
  T.eq(proc.which(p), p)
end)

T.test("proc.which with a wrong argument raises EINVAL", function()
  T.raises("EINVAL", proc.which, {})
end)

T.test("upkit.hostname is this machine's name (the kernel's)", function()
  local f = assert(io.open("/proc/sys/kernel/hostname"))
  local want = f:read("l")
  f:close()
  T.eq(require("upkit").hostname(), want)
end)

T.test("upkit.uuid gives distinct version 4 UUIDs", function()
  local a, b = upkit.uuid(), upkit.uuid()
  T.match(a, "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$")
  T.ne(a, b)
end)

T.done()
