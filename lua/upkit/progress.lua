-- upkit.progress: one line of progress on standard error, redrawn in place,
-- and only when standard error is a terminal.
--
--   local line = progress.line()   -- nil when standard error is not a terminal
--   line.draw(final, fmt, ...)     -- at most every 0.25 s, unless final (which ends the line)
--   line.done()                    -- ends the line, if one was drawn and not ended
local upkit = require "upkit"

local M = {}

local EVERY = 0.25  -- seconds between redraws

function M.line()
  if not upkit.isatty(2) then return nil end
  local last, open = 0, false
  local line = {}
  function line.draw(final, fmt, ...)
    local now = upkit.now()
    if not final and now - last < EVERY then return end
    last, open = now, not final
    io.stderr:write("\r", string.format(fmt, ...), "   ", final and "\n" or "")
    io.stderr:flush()
  end
  function line.done()
    if open then io.stderr:write("\n") end
    open = false
  end
  return line
end

return M
