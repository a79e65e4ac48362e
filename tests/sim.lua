-- The Octopus simulator's own test suite (Python unittest), as one TAP test. The refusal tests
-- (test_fidelity.py) run from tests/sim_fidelity.lua, beside this one.
local T = require "upkit.test"

T.test("the Octopus simulator passes its own tests (tests/sim/test_*.py but test_fidelity.py)", function()
  local out, status = T.sh("python3 -m unittest discover -s tests/sim -p 'test_[!f]*.py' 2>&1")
  if status ~= 0 then T.diag(out:sub(-3000)) end
  T.eq(status, 0, "python3 -m unittest exit status")
  T.match(out, "\nOK")
end)

T.done()
