-- upkit.octopus.cli in the Windows build: without a file_version or
-- service_control program configured, the version comes from the executable's
-- version resource and the service state from the Service Control Manager.
local T = require "upkit.test"
local cli = require "upkit.octopus.cli"
local proc = require "upkit.proc"

T.test("program_version reads the executable's version resource", function()
  local exe = proc.which("upkit")  -- any program with a version resource will do
  local c = cli.new { exe = exe }
  T.eq(c:program_version(), require("upkit").version)
end)

T.test("a program without a version resource is NO_VERSION", function()
  local c = cli.new { exe = proc.which("cmd") and (T.tmpdir() .. "/plain.exe") }
  require("upkit.fs").write(c.exe, "not a program")
  T.raises("NO_VERSION", c.program_version, c)
end)

T.test("service_state asks the Service Control Manager: an instance with no service is absent", function()
  local c = cli.new { exe = "C:/Octopus/Octopus.Server.exe", instance = "NoSuchInstanceUpkit" }
  T.eq(c:service_state(), "absent")
end)

T.done()
