-- fsfault: damage what upkit writes, while it writes it.
--
--   local progress, corrupted = fsfault.corrupt_temp(dir, "^big%.bin%.")
--   fs.copy(src, dst, { verify = "sha256", progress = progress })
--   T.ok(corrupted(), "the temporary file was found")
--
-- The progress function overwrites the start of the first temporary file
-- in dir's private folder (.upkit-tmp) whose name matches the Lua pattern, once.
local T = require "upkit.test"
local lfs = require "lfs"

local M = {}

function M.corrupt_temp(dir, pattern)
  local done = false
  local function progress()
    if done then return end
    local private = dir .. "/.upkit-tmp"
    local tmp
    if lfs.attributes(private, "mode") == "directory" then
      for name in lfs.dir(private) do
        if name ~= "." and name ~= ".." and name:find(pattern) then tmp = name break end
      end
    end
    if tmp then
      local f = assert(io.open(private .. "/" .. tmp, "r+b"))
      f:write("CORRUPT")
      f:close()
      done = true
    end
  end
  return progress, function() return done end
end

return M
