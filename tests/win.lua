-- upkit.win exists only in the Windows build: elsewhere require says so.
local T = require "upkit.test"

T.test("require 'upkit.win' outside Windows raises UNSUPPORTED", function()
  package.loaded["upkit.win"] = nil
  local e = T.raises("UNSUPPORTED", require, "upkit.win")
  T.contains(e.message, "Windows build")
end)

T.done()
