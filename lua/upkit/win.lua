-- upkit.win: what procedures need from Windows itself (Windows builds only;
-- require raises UNSUPPORTED elsewhere).
--
--   win.file_version(path) --> { file = "3.17.2.0", product = "3.17.2.0",
--       strings = { FileVersion, ProductVersion, ProductName, CompanyName, FileDescription } }
--       the version resource of an executable or DLL (how Octopus's own DSC reads the
--       installed version); NOT_FOUND when the file has none, ENOENT when it is missing
--   win.service(name) --> { name, display_name, state, pid, exit_code, service_exit_code,
--       start_type, binary_path, account, accepts_stop }
--       state: "stopped", "start_pending", "stop_pending", "running", "paused", ...;
--       NOT_FOUND when there is no such service
--   win.service_wait(name, state [, { timeout = 60, interval = 0.25 }]) --> service
--       TIMEOUT when the service is not in state by then
--   win.service_stop(name [, { timeout = 60 }]) --> service (stopped)
--   win.service_start(name [, { timeout = 60 }]) --> service (running)
--       both wait for the state; nothing to do is not an error; a service that
--       falls back to stopped while starting raises EXIT_CODE with its exit codes
--
-- Through the Service Control Manager, never by parsing sc.exe's output.
local upkit = require "upkit"

local ok, native = pcall(require, "upkit._win")
if not ok then
  upkit.error("UNSUPPORTED", "upkit.win: only the Windows build of upkit has it")
end
local util = require "upkit.util"

local M = {}

M.file_version = native.file_version
M.service = native.service_query

local STATES = { stopped = true, start_pending = true, stop_pending = true, running = true,
                 continue_pending = true, pause_pending = true, paused = true }

local WAIT_OPTS = { timeout = "number", interval = "number" }

local function wait(fn, name, state, opts)
  opts = util.check_opts(fn, opts, WAIT_OPTS)
  if not STATES[state] then util.einval("%s: unknown state '%s'", fn, tostring(state)) end
  local timeout, interval = opts.timeout or 60, opts.interval or 0.25
  if timeout < 0 or interval <= 0 then util.einval("%s: timeout and interval must be positive", fn) end
  local deadline = upkit.now() + timeout
  while true do
    local s = native.service_query(name)
    if s.state == state then return s end
    if state == "running" and s.state == "stopped" and fn == "win.service_start" then
      upkit.error("EXIT_CODE", string.format(
        "%s: service '%s' stopped while starting (exit code %d, service exit code %d)",
        fn, name, s.exit_code, s.service_exit_code),
        { exit_code = s.exit_code, service_exit_code = s.service_exit_code })
    end
    if upkit.now() >= deadline then
      upkit.error("TIMEOUT", string.format("%s: service '%s' is %s, not %s, after %g s",
        fn, name, s.state, state, timeout), { state = s.state })
    end
    upkit.sleep(interval)
  end
end

function M.service_wait(name, state, opts)
  return wait("win.service_wait", name, state, opts)
end

local STOP_OPTS = { timeout = "number" }

function M.service_stop(name, opts)
  opts = util.check_opts("win.service_stop", opts, STOP_OPTS)
  native.service_control(name, "stop")
  return wait("win.service_stop", name, "stopped", opts)
end

function M.service_start(name, opts)
  opts = util.check_opts("win.service_start", opts, STOP_OPTS)
  native.service_control(name, "start")
  return wait("win.service_start", name, "running", opts)
end

return M
