-- fsfault: damage what upkit writes, while it writes it.
--
--   local progress, corrupted = fsfault.corrupt_temp(dir, "big.bin.*upkit-tmp")
--   fs.copy(src, dst, { verify = "sha256", progress = progress })
--   T.ok(corrupted(), "the temporary file was found")
--
-- The progress function overwrites the start of the first temporary file
-- in dir whose name matches the grep pattern, once.
local T = require "upkit.test"

local M = {}

function M.corrupt_temp(dir, pattern)
  local done = false
  local function progress()
    if done then return end
    local tmp = T.sh("ls -A " .. T.q(dir) .. " | grep " .. T.q(pattern)):match("[^\n]+")
    if tmp then
      local f = assert(io.open(dir .. "/" .. tmp, "r+b"))
      f:write("CORRUPT")
      f:close()
      done = true
    end
  end
  return progress, function() return done end
end

return M
