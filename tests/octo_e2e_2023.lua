-- The whole bundled set of Octopus procedures end to end from 2023.4.8166 to the newest
-- simulated version (tests/lib/octoe2e.lua).
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
require("octoe2e").run("2023.4.8166")
T.done()
