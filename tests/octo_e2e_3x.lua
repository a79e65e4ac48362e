-- The whole bundled set of Octopus procedures end to end from 3.17.14 to the newest
-- simulated version (tests/lib/octoe2e.lua).
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
require("octoe2e").run("3.17.14")
T.done()
