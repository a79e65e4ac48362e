-- upkit.installer: run an installer package only after its SHA-256 matches.
--
--   installer.run{ file = "Octopus.msi", sha256 = "<hex>", log = "install.log",
--                  program = { "msiexec" }, args = { "INSTALLLOCATION=C:\\Octopus" },
--                  timeout = 3600, redact = { ... } }
--     --> { code, restart_needed, log, seconds, stdout, stderr }
--
-- Runs `<program...> /i FILE /quiet /norestart /l*v LOG <args...>` (msiexec's
-- own form on Windows; program is a parameter so tests and other platforms
-- give a stand-in). Success codes are 0 and 3010; 3010 is reported as
-- restart_needed = true. A digest that differs raises CHECKSUM_MISMATCH
-- before anything runs; another exit code raises EXIT_CODE, a timeout TIMEOUT.
-- On a POSIX host a parent sees only the low 8 bits of an exit code, so a
-- stand-in's 3010 arrives as 194: it is reported as code 3010 (and
-- exit_status = 194).
local upkit = require "upkit"
local hash = require "upkit.hash"
local proc = require "upkit.proc"

local M = {}

local RESTART = 3010                          -- ERROR_SUCCESS_REBOOT_REQUIRED
local POSIX = package.config:sub(1, 1) == "/"

local spec = { file = "string", sha256 = "string", log = "string", program = "table",
               args = "table", timeout = "number", redact = "table", cwd = "string" }

function M.run(opts)
  if type(opts) ~= "table" then
    upkit.error("EINVAL", "installer.run: expected an options table, got " .. type(opts))
  end
  for k, v in pairs(opts) do
    if not spec[k] then upkit.error("EINVAL", "installer.run: unknown option '" .. tostring(k) .. "'") end
    if type(v) ~= spec[k] then
      upkit.error("EINVAL", string.format("installer.run: option '%s' must be a %s, got %s", k, spec[k], type(v)))
    end
  end
  for _, k in ipairs { "file", "sha256", "log" } do
    if not opts[k] then upkit.error("EINVAL", "installer.run: option '" .. k .. "' is required") end
  end
  local want = opts.sha256:lower()
  if not want:match("^%x+$") or #want ~= 64 then
    upkit.error("EINVAL", "installer.run: sha256 must be 64 hexadecimal digits")
  end
  local got = hash.file("sha256", opts.file)
  if got ~= want then
    upkit.error("CHECKSUM_MISMATCH", string.format(
      "installer.run: '%s' has SHA-256 %s, expected %s; not running it", opts.file, got, want),
      { expected = want, actual = got })
  end
  local argv = {}
  for _, a in ipairs(opts.program or { "msiexec" }) do argv[#argv + 1] = a end
  for _, a in ipairs { "/i", opts.file, "/quiet", "/norestart", "/l*v", opts.log } do argv[#argv + 1] = a end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local restart = POSIX and (RESTART & 0xFF) or RESTART
  local r = proc.run(argv, { ok = { 0, restart }, timeout = opts.timeout, redact = opts.redact, cwd = opts.cwd })
  local code = r.code == restart and RESTART or r.code
  return { code = code, exit_status = r.code, restart_needed = code == RESTART, log = opts.log,
           seconds = r.seconds, stdout = r.stdout, stderr = r.stderr }
end

return M
