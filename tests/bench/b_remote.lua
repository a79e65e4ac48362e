-- upkit.remote: r:run of `true` over the multiplexed master connection, against
-- a fresh `ssh host true` per command (a login each time), on a loopback sshd;
-- r:put of a 64 MiB file (sftp + SHA-256 on both ends) against a plain `sftp put`;
-- and remote.run_all of a 1 s command on 1, 3 and 6 nodes against one node.
package.path = "tests/bench/?.lua;tests/lib/?.lua;" .. package.path
local B = require "benchlib"
local remote = require "upkit.remote"
local sshd = require "sshd"

local node = sshd.start()
local ok, err = pcall(function()
  local r <close> = remote.connect(node.target, node.opts())
  local n = 50
  local t_mux = B.time(function()
    for _ = 1, n do r:run({ "true" }, { ok = { 0 } }) end
  end, 3)
  local fresh = string.format("ssh -F %s -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s "
    .. "-o IdentitiesOnly=yes -i %s -p %d %s@127.0.0.1 true", B.q(node.ssh_config), B.q(node.known_hosts),
    B.q(node.identity), node.port, node.user)
  local t_fresh = B.sh_time(string.format("i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done", n, fresh), 3)
  B.report { name = "remote r:run true x" .. n .. " (one master)", unit = "runs/s", upkit = n / t_mux,
             tool = "ssh host true (fresh login)", other = n / t_fresh }

  local dir = B.workdir() .. "/remote"
  os.execute("rm -rf " .. B.q(dir) .. " && mkdir -p " .. B.q(dir))
  dir = B.sh("cd " .. B.q(dir) .. " && pwd"):gsub("\n$", "")  -- remote paths are absolute
  local src = dir .. "/payload.bin"
  B.sh("head -c 67108864 /dev/urandom > " .. B.q(src))
  local mib = 64
  local t_put = B.time(function() r:put(src, dir .. "/put.bin") end, 3)
  local batch = dir .. "/batch"
  local f = assert(io.open(batch, "w"))
  f:write(string.format('put "%s" "%s"\n', src, dir .. "/plain.bin"))
  f:close()
  local t_sftp = B.sh_time(string.format("sftp -q -b %s -F %s -o BatchMode=yes -o UserKnownHostsFile=%s "
    .. "-o IdentitiesOnly=yes -i %s -P %d %s@127.0.0.1 >/dev/null", B.q(batch), B.q(node.ssh_config),
    B.q(node.known_hosts), B.q(node.identity), node.port, node.user), 3)
  B.report { name = "remote r:put 64 MiB (verified, atomic)", unit = "MiB/s", upkit = mib / t_put,
             tool = "sftp put (no digest)", other = mib / t_sftp }
  os.execute("rm -rf " .. B.q(dir))
end)
node.stop()
if not ok then error(err, 0) end

-- remote.run_all: a 1 s command on 1, 3 and 6 nodes side by side against the
-- same command on one node with r:run: the ratio is how close N nodes come to
-- the time of one (1.00x: no cost for the extra nodes).
local nodes, conns = {}, {}
ok, err = pcall(function()
  for i = 1, 6 do
    nodes[i] = sshd.start()
    conns[i] = remote.connect(nodes[i].target, nodes[i].opts())
  end
  local one = B.time(function() conns[1]:run({ "sleep", "1" }, { ok = { 0 } }) end, 3)
  for _, n in ipairs { 1, 3, 6 } do
    local jobs = {}
    for i = 1, n do jobs[i] = { node = conns[i], argv = { "sleep", "1" } } end
    local t = B.time(function()
      for _, e in ipairs(remote.run_all(jobs)) do assert(e.ok, e.error) end
    end, 3)
    B.report { name = string.format("remote.run_all sleep 1 on %d node%s", n, n > 1 and "s" or ""),
               unit = "runs/s", upkit = 1 / t, tool = "r:run sleep 1 on one node", other = 1 / one }
  end
end)
for i = 1, 6 do
  if conns[i] then conns[i]:close() end
  if nodes[i] then nodes[i].stop() end
end
if not ok then error(err, 0) end
