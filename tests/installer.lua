-- upkit.installer: checksum first, msiexec's arguments, success codes, timeout.
local T = require "upkit.test"
local installer = require "upkit.installer"
local hash = require "upkit.hash"

local dir = T.tmpdir()
local msi = dir .. "/Octopus.x64.msi"
T.write_file(msi, "pretend MSI package")
local digest = hash.file("sha256", msi)

-- A stand-in for msiexec: checks its arguments, writes the log, exits with $EXIT_WITH.
local fake_msiexec = dir .. "/msiexec"
T.write_file(fake_msiexec, [[#!/bin/sh
[ "$1" = /i ] && [ "$3" = /quiet ] && [ "$4" = /norestart ] && [ "$5" = '/l*v' ] || { echo "bad args: $*" >&2; exit 1620; }
printf 'installing %s\n' "$2" > "$6"
shift 6
printf '%s\n' "$@" >> "$(dirname "$0")/extra-args"
[ -n "$SLEEP" ] && sleep "$SLEEP"
exit "$(cat "$(dirname "$0")/exit-code" 2>/dev/null || echo 0)"
]])
T.sh("chmod +x " .. T.q(fake_msiexec))
local function exit_with(code) T.write_file(dir .. "/exit-code", tostring(code)) end

T.test("installer.run runs msiexec /i FILE /quiet /norestart /l*v LOG and returns the code", function()
  exit_with(0)
  local log = dir .. "/install.log"
  local r = installer.run { file = msi, sha256 = digest, log = log, program = { fake_msiexec },
                            args = { "INSTALLLOCATION=/opt/octopus" } }
  T.eq(r.code, 0)
  T.eq(r.restart_needed, false)
  T.eq(r.log, log)
  T.eq(T.read_file(log), "installing " .. msi .. "\n")
  T.eq(T.read_file(dir .. "/extra-args"), "INSTALLLOCATION=/opt/octopus\n")
end)

T.test("exit code 3010 succeeds and says a restart is needed", function()
  exit_with(3010 & 0xFF)  -- what a POSIX parent sees of msiexec's 3010
  local r = installer.run { file = msi, sha256 = digest, log = dir .. "/l2", program = { fake_msiexec } }
  T.eq(r.code, 3010)
  T.eq(r.exit_status, 194)
  T.eq(r.restart_needed, true)
end)

T.test("a digest that differs raises CHECKSUM_MISMATCH and runs nothing", function()
  exit_with(0)
  local log = dir .. "/never.log"
  local err = T.raises("CHECKSUM_MISMATCH", installer.run,
    { file = msi, sha256 = string.rep("0", 64), log = log, program = { fake_msiexec } })
  T.contains(err.message, msi)
  T.eq(T.read_file(log), nil)
end)

T.test("another exit code raises EXIT_CODE with the code", function()
  exit_with(3)
  local err = T.raises("EXIT_CODE", installer.run, { file = msi, sha256 = digest, log = dir .. "/l3", program = { fake_msiexec } })
  T.eq(err.exit_code, 3)
end)

T.test("a hanging installer is stopped by the timeout", function()
  exit_with(0)
  local slow = dir .. "/slow-msiexec"
  T.write_file(slow, "#!/bin/sh\nsleep 30\n")
  T.sh("chmod +x " .. T.q(slow))
  T.raises("TIMEOUT", installer.run, { file = msi, sha256 = digest, log = dir .. "/l4", program = { slow }, timeout = 0.3 })
end)

T.test("missing file, missing options and a missing program raise codes", function()
  T.raises("ENOENT", installer.run, { file = dir .. "/none.msi", sha256 = digest, log = dir .. "/l" })
  T.raises("EINVAL", installer.run, { file = msi, log = dir .. "/l" })
  T.raises("EINVAL", installer.run, { file = msi, sha256 = "abc", log = dir .. "/l" })
  T.raises("EINVAL", installer.run, { file = msi, sha256 = digest, log = dir .. "/l", bogus = true })
  T.raises("ENOENT", installer.run, { file = msi, sha256 = digest, log = dir .. "/l", program = { dir .. "/no-msiexec" } })
end)

T.done()
