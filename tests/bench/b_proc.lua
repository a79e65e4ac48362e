-- proc.run of /bin/true 1,000 times against the same loop in sh.
package.path = "tests/bench/?.lua;" .. package.path
local B = require "benchlib"
local proc = require "upkit.proc"

local n = 1000
local t_run = B.time(function()
  for _ = 1, n do proc.run({ "/bin/true" }) end
end, 3)
local t_sh = B.sh_time(string.format("sh -c 'i=0; while [ $i -lt %d ]; do /bin/true; i=$((i+1)); done'", n), 3)
B.report { name = "proc.run /bin/true x1000", unit = "runs/s", upkit = n / t_run,
           tool = "sh loop of /bin/true", other = n / t_sh }
