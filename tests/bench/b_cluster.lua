-- ha-upgrade's install on the other nodes (upkit.upgrade.cluster: one task per
-- node: version read, installer checked on the node, msiexec, version read
-- again; the nodes side by side) on 1, 3 and 6 nodes, each behind its own
-- loopback sshd (a HOME of its own, as a machine of its own has), whose
-- stand-in installer sleeps 1 s. Compared with one node's installer run alone
-- through r:run (1 s plus one ssh session): the overhead (seconds above it:
-- the version and digest read before and the version read after) is in the
-- name; the aim is at most 0.5 s above it at every N.
package.path = "tests/bench/?.lua;tests/lib/?.lua;" .. package.path
local B = require "benchlib"
local remote = require "upkit.remote"
local clim = require "upkit.octopus.cli"
local Cl = require "upkit.upgrade.cluster"
local sshd = require "sshd"

local SLEEP = 1
local dir = B.workdir() .. "/cluster"
os.execute("rm -rf " .. B.q(dir) .. " && mkdir -p " .. B.q(dir))
dir = B.sh("cd " .. B.q(dir) .. " && pwd"):gsub("\n$", "")

local function write(path, text, mode)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. B.q(path)) end
end

-- Stand-ins, the same path on every node; each node's state is in $BENCH_NODE.
write(dir .. "/Octopus.Server", '#!/bin/sh\nprintf \'{"NuGetVersion":"%s"}\\n\' "$(cat "$BENCH_NODE/version")"\n', "755")
write(dir .. "/msiexec", '#!/bin/sh\nsleep ' .. SLEEP .. '\necho 2.0.0 > "$BENCH_NODE/version"\n: > "$6"\n', "755")
local msi = dir .. "/Octopus.2.0.0-x64.msi"
B.sh("head -c 1048576 /dev/urandom > " .. B.q(msi))
local sha = require("upkit.hash").file("sha256", msi)

local servers, nodes = {}, {}
local ok, err = pcall(function()
  for i = 1, 6 do
    local nd = dir .. "/node" .. i
    os.execute("mkdir -p " .. B.q(nd))
    servers[i] = sshd.start { env = { BENCH_NODE = nd } }
    local r = remote.connect(servers[i].target, servers[i].opts())
    nodes[i] = { label = "node " .. i, r = r, dir = nd,
                 cli = clim.new { exe = dir .. "/Octopus.Server", timeout = 60, runner = {
                   run = function(_, argv, o) return r:run(argv, o) end, exists = function() return true end } } }
  end
  -- the slowest node's own time: its stand-in installer through r:run
  local one = B.time(function()
    nodes[1].r:run({ dir .. "/msiexec", "/i", msi, "/quiet", "/norestart", "/l*v", dir .. "/one.log" }, { ok = { 0 } })
  end, 3)
  for _, n in ipairs { 1, 3, 6 } do
    local ctx = { params = { parallel = n, timeout = 60, node_msiexec = dir .. "/msiexec", node_installer_dir = dir },
                  run_dir = dir .. "/run" .. n, log = function() end, _cluster = { table.unpack(nodes, 1, n) } }
    os.execute("mkdir -p " .. B.q(ctx.run_dir))
    local t = B.time(function()
      for i = 1, n do write(nodes[i].dir .. "/version", "1.0.0\n") end
      Cl.install(ctx, { file = msi, sha256 = sha, version = "2.0.0" })
    end, 3)
    B.report { name = string.format("ha-upgrade install on %d node%s (+%.2f s)", n, n > 1 and "s" or "", t - one),
               unit = "installs/s", upkit = 1 / t, tool = string.format("one node's installer (%.2f s)", one),
               other = 1 / one, aim = one / (one + 0.5) }
  end
end)
for i = 1, 6 do
  if nodes[i] then nodes[i].r:close() end
  if servers[i] then servers[i].stop() end
end
os.execute("rm -rf " .. B.q(dir))
if not ok then error(err, 0) end
