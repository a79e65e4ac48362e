-- upkit.win (make test-windows, upkit.exe under Wine): the version resource of
-- an executable, and services through the Service Control Manager (Wine's
-- MSIServer is started and stopped).
local T = require "upkit.test"
local win = require "upkit.win"

T.test("upkit.hostname is the NetBIOS name Windows gives COMPUTERNAME", function()
  local h = require("upkit").hostname()
  T.eq(type(h), "string")
  T.eq(h:upper(), (os.getenv("COMPUTERNAME") or ""):upper())
  T.eq(#h > 0 and #h <= 15, true)  -- NetBIOS names are at most 15 characters
end)

T.test("win.file_version reads the version resource of a system DLL", function()
  local v = win.file_version("C:/Windows/System32/kernel32.dll")
  T.match(v.file, "^%d+%.%d+%.%d+%.%d+$")
  T.match(v.product, "^%d+%.%d+%.%d+%.%d+$")
  T.ok(v.strings.FileVersion, "FileVersion string")
end)

T.test("upkit.exe carries its own version resource (upkit.version)", function()
  local exe = require("upkit.proc").which("upkit")
  local v = win.file_version(exe)
  T.eq(v.file, require("upkit").version .. ".0")
  T.eq(v.strings.ProductName, "upkit")
end)

T.test("win.file_version: a missing file is ENOENT, a file without a resource NOT_FOUND", function()
  T.raises("ENOENT", win.file_version, "C:/no/such/file.exe")
  local p = require("upkit.fs").tempdir("upkit-win") .. "/plain.txt"
  require("upkit.fs").write(p, "not a program")
  T.raises("NOT_FOUND", win.file_version, p)
end)

T.test("win.service describes a running service", function()
  local s = win.service("PlugPlay")
  T.eq(s.state, "running")
  T.ok(s.pid > 0, "pid")
  T.eq(s.name, "PlugPlay")
  T.ok(s.binary_path and s.start_type, "binary_path and start_type")
end)

T.test("win.service on an unknown name raises NOT_FOUND with the Windows error", function()
  local e = T.raises("NOT_FOUND", win.service, "NoSuchServiceUpkit")
  T.eq(e.errno, 1060)
end)

T.test("win.service_start and win.service_stop wait for the state; again is not an error", function()
  local s = win.service_start("MSIServer", { timeout = 30 })
  T.eq(s.state, "running")
  T.eq(win.service_start("MSIServer", { timeout = 30 }).state, "running")
  s = win.service_stop("MSIServer", { timeout = 30 })
  T.eq(s.state, "stopped")
  T.eq(win.service_stop("MSIServer", { timeout = 30 }).state, "stopped")
end)

T.test("win.service_wait raises TIMEOUT when the state does not come", function()
  local e = T.raises("TIMEOUT", win.service_wait, "MSIServer", "running", { timeout = 0.3, interval = 0.1 })
  T.eq(e.state, "stopped")
end)

T.test("upkit.uuid gives distinct version 4 UUIDs (CNG's random source)", function()
  local upkit = require "upkit"
  local a, b = upkit.uuid(), upkit.uuid()
  T.match(a, "^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$")
  T.eq(#a, 36)
  T.ne(a, b)
end)

T.test("the REPL's line reader: no console is ENOTTY, a completer must be a function", function()
  local repl = require "upkit._repl"
  T.raises("ENOTTY", repl.readline, "> ")
  T.raises("EINVAL", repl.set_completer, 42)
  repl.set_completer(function() return {} end)
  repl.set_completer(nil)
  T.raises("EINVAL", repl.add_history, {})
end)

T.test("wrong arguments are EINVAL", function()
  T.raises("EINVAL", win.service_wait, "MSIServer", "flying")
  T.raises("EINVAL", win.service_stop, "MSIServer", { timeout = "soon" })
  T.raises("EINVAL", win.service_stop, "MSIServer", { wait = 1 })
end)

T.done()
