-- The simulator refuses what a real Octopus Server refuses (tests/sim/test_fidelity.py, one row of
-- tests/sim/FIDELITY.md per check), as one TAP test.
local T = require "upkit.test"

T.test("the simulator refuses the wrong forms (tests/sim/test_fidelity.py)", function()
  local out, status = T.sh("python3 -m unittest discover -s tests/sim -p 'test_fidelity.py' 2>&1")
  if status ~= 0 then T.diag(out:sub(-3000)) end
  T.eq(status, 0, "python3 -m unittest exit status")
  T.match(out, "\nOK")
end)

T.done()
