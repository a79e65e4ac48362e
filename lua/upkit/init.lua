-- upkit: the host's own functions for scripts.
--   upkit.error(code, message [, fields])   raise an error object
--   upkit.new_error(code, message [, fields]) -> error object
--   upkit.is_error(v) -> boolean
--   upkit.versions() -> { upkit, lua, libcurl, openssl, unixodbc }
--   upkit.roots() -> library roots in search order
--   upkit.now(), upkit.sleep(seconds), upkit.isatty(fd), upkit.pid()
--   upkit.uuid() -> a random version 4 UUID (the system's random source)
--   upkit.errno_name(n) -> "ENOENT": the error code of an errno (io.open's third result)
local core = require "upkit._core"

local M = {}
for k, v in pairs(core) do M[k] = v end

-- upkit.check(cond, code, fmt, ...): raise an error object unless cond holds.
function M.check(cond, code, fmt, ...)
  if cond then return cond end
  core.error(code, string.format(fmt, ...))
end

-- upkit.breakpoint(): opens the debug REPL when the run has --debug; a no-op otherwise.
function M.breakpoint()
  local hook = M._breakpoint_hook
  if hook then return hook(3) end
end

M.version = core.VERSION  -- the libraries' versions are asked only by upkit.versions()
return M
