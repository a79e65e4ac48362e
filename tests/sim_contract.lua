-- The Octopus simulator checked with Octopus's own code (tests/contract): its REST resources
-- against @octopusdeploy/message-contracts, and the official @octopusdeploy/api-client driven
-- against it. `make deps` installs both at the versions tests/contract/package-lock.json pins.
local T = require "upkit.test"

local function node_test(file)
  local cmd = "cd tests/contract && node --test --test-reporter=tap " .. file .. " 2>&1"
  local out, status = T.sh(cmd)
  if status ~= 0 then T.diag(out:sub(-4000)) end
  T.eq(status, 0, "node --test " .. file .. " exit status")
  T.match(out, "\n# fail 0")
end

T.test("tests/contract has its npm packages (make deps)", function()
  local _, status = T.sh("test -f tests/contract/node_modules/@octopusdeploy/message-contracts/package.json"
    .. " && test -f tests/contract/node_modules/@octopusdeploy/api-client/package.json")
  T.eq(status, 0, "node_modules of tests/contract installed; run make deps")
end)

T.test("every simulated REST resource matches message-contracts", function()
  node_test("contract.test.js")
end)

T.test("the official api-client drives the simulator", function()
  node_test("client.test.js")
end)

T.done()
