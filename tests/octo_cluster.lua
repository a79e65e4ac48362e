-- ha-upgrade over OpenSSH: a three-node simulated 2023.4.8166 cluster (this
-- node plus two nodes, each a simulator machine of its own behind its own sshd
-- on loopback). A changed host key and an unreachable node are refused before
-- any change; an installer that fails on one node stops the run with every
-- node's state, and --resume finishes; the cluster ends on the newest version;
-- rollback with the same nodes puts every node back.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local octofix = require "octofix"
local sshd = require "sshd"

local F = octofix.new { version = "2023.4.8166" }
local machines, nodes, servers = {}, {}, {}
for i = 2, 3 do
  local m = F:machine("node" .. i)
  machines[i] = m
  nodes[i] = F:add_node(m)
  servers[i] = sshd.start { env = { PATH = m.machine .. "/bin:" .. m.machine .. "/ProgramFiles/OctopusDeploy/Octopus:" ..
    os.getenv("PATH"), OCTOSIM_FAULT_NODE_OFFLINE_DELAY = "0.05" } }
end
-- one known_hosts and one key for the whole cluster, as an operator has
local known_hosts = F.dir .. "/known_hosts"
T.write_file(known_hosts, T.read_file(servers[2].known_hosts) .. T.read_file(servers[3].known_hosts))
T.sh("cat " .. T.q(servers[2].dir .. "/user_key.pub") .. " >> " .. T.q(servers[3].dir .. "/authorized_keys"))

-- the cluster is up once all three nodes have registered in the database
local upkit = require "upkit"
for _ = 1, 200 do
  if #F:sql("SELECT Id FROM OctopusServerNode") == 3 then break end
  upkit.sleep(0.1)
end

local function cluster_config(extra, name)
  local cfg = { nodes = { servers[2].target, servers[3].target }, known_hosts = known_hosts,
                identity = servers[2].identity, ssh_config = servers[2].ssh_config, parallel = 2,
                node_server_exe = "Octopus.Server", node_msiexec = "msiexec", node_service_control = "sc",
                node_file_version = "filever", node_installer_dir = F.dir, node_offline_timeout = 60 }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return F:config(cfg, name)
end

local function versions()
  return { octofix.program_version(F.main.server_exe, F.main.filever),
           octofix.program_version(machines[2].server_exe, machines[2].filever),
           octofix.program_version(machines[3].server_exe, machines[3].filever) }
end

local function unchanged(before)
  T.eq(octofix.dump(F.main.connection_string), before, "database row for row")
  T.eq(versions(), { "2023.4.8166", "2023.4.8166", "2023.4.8166" })
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  T.ok(octofix.answers(F.main.url) and octofix.answers(nodes[2].url) and octofix.answers(nodes[3].url),
       "every node still runs")
end

-- After a rollback: every node runs 2023.4.8166 on a 2023.4.8166 schema, and all three come back online.
local function rolled_back()
  T.eq(versions(), { "2023.4.8166", "2023.4.8166", "2023.4.8166" })
  T.eq(F:sql("SELECT Version FROM SchemaVersions ORDER BY Id DESC LIMIT 1")[1].Version, "2023.4.8166")
  local up = 0
  for _ = 1, 100 do
    up = 0
    for _, n in ipairs(F:api("/api/octopusservernodes/summary").Nodes) do if not n.IsOffline then up = up + 1 end end
    if up == 3 then break end
    upkit.sleep(0.2)
  end
  T.eq(up, 3, "every node online again")
end

T.test("a changed host key of one node is refused before any change", function()
  local before = octofix.dump(F.main.connection_string)
  local other = sshd.keygen(F.dir .. "/other_host_key")
  local kh = F.dir .. "/known_hosts.changed"
  T.write_file(kh, T.read_file(servers[2].known_hosts) ..
    string.format("[127.0.0.1]:%d %s\n", servers[3].port, T.read_file(other .. ".pub"):match("^(%S+ %S+)")))
  local out, err, code = F:upkit("run ha-upgrade --yes " .. F:args(cluster_config({ known_hosts = kh }, "changed-key")))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "check of step 'check-nodes' failed")
  T.contains(out .. err, "node 3 (" .. servers[3].target .. ")")
  T.contains(out .. err, servers[3].fingerprint)
  T.contains(err, "nothing was changed")
  unchanged(before)
end)

T.test("a node that cannot be reached fails the check; nothing changed anywhere", function()
  local before = octofix.dump(F.main.connection_string)
  local dead = "ssh://127.0.0.1:" .. octofix.free_port()
  local out, err, code = F:upkit("run ha-upgrade --yes " ..
    F:args(cluster_config({ nodes = { servers[2].target, dead } }, "unreachable")))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "check of step 'check-nodes' failed")
  T.contains(out .. err, "node 3 (" .. dead .. ")")
  T.contains(err, "nothing was changed")
  unchanged(before)
end)

T.test("an online node left out of nodes fails the check (STILL_RUNNING); nothing changed anywhere", function()
  local before = octofix.dump(F.main.connection_string)
  local out, err, code = F:upkit("run ha-upgrade --yes " ..
    F:args(cluster_config({ nodes = { servers[2].target } }, "left-out")))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "check of step 'check-nodes' failed")
  T.contains(out .. err, "3 nodes are online")
  T.contains(out .. err, "only 2 are given (this node and nodes)")
  T.contains(err, "nothing was changed")
  unchanged(before)
end)

T.test("an installer that fails on node 3 stops the run with every node's state; --resume finishes", function()
  T.write_file(machines[3].machine .. "/faults.json", json.encode { msi_exit = 1603 })
  local cfg = cluster_config()
  local out, err, code = F:upkit("run ha-upgrade --yes " .. F:args(cfg))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "step 'install-other-nodes' failed")
  T.contains(out .. err, "node 2 (" .. servers[2].target .. "): installed 2025.4.10700")
  T.contains(out .. err, "node 3 (" .. servers[3].target .. "): failed")
  T.eq(versions()[2], "2025.4.10700")
  T.eq(versions()[3], "2023.4.8166")
  -- node_installer_dir is one folder of this machine for both nodes: the first to look copies it
  T.match(out .. err, "node [23] %([^)]+%): installer copied %(sha256 ")
  -- the failed run's state summary: every node's state, this node's included
  T.contains(out .. err, "this node: drained and stopped")
  -- the installer on the nodes (node_installer_dir): kept, not copied again, when its digest is right
  local msi = F.dir .. "/Octopus.2025.4.10700-x64.msi"
  local inode = T.sh("stat -c %i " .. T.q(msi))
  os.remove(machines[3].machine .. "/faults.json")
  out, err, code = F:upkit("run ha-upgrade --yes --resume " .. F:args(cfg))
  T.eq(code, 0, out .. err)
  T.contains(out, "node 2 (" .. servers[2].target .. "): runs 2025.4.10700")
  T.contains(out, "node 3 (" .. servers[3].target .. "): installer already there (sha256 ")
  T.eq(T.sh("stat -c %i " .. T.q(msi)), inode, "the installer was not copied again")
  T.contains(out, "node 3 (" .. servers[3].target .. "): installed 2025.4.10700")
  T.contains(out, "3 nodes run Octopus 2025.4.10700")
  T.contains(out, "instance tests passed: version 2025.4.10700")
end)

T.test("every node runs the newest version, online, undrained; the node logs came back", function()
  T.eq(versions(), { "2025.4.10700", "2025.4.10700", "2025.4.10700" })
  for _, url in ipairs { F.main.url, nodes[2].url, nodes[3].url } do T.ok(octofix.answers(url), url) end
  local list = F:api("/api/octopusservernodes/summary").Nodes
  T.eq(#list, 3)
  for _, n in ipairs(list) do
    T.eq(n.IsOffline, false, n.Name)
    T.eq(n.IsInMaintenanceMode, false, n.Name)
  end
  T.eq(F:sql("SELECT Version FROM SchemaVersions ORDER BY Id DESC LIMIT 1")[1].Version, "2025.4.10700")
  local logs = T.sh("ls " .. T.q(F.dir) .. "/runs/*/logs/")
  T.contains(logs, "node_3")
end)

T.test("rollback with the same nodes puts the whole cluster back on 2023.4.8166", function()
  -- a file of the installer's name with other content on the nodes is replaced by a verified copy
  local old_msi = F.dir .. "/Octopus.2023.4.8166-x64.msi"
  T.write_file(old_msi, "not the installer")
  local out, err, code = F:upkit("run rollback --yes " .. F:args(cluster_config(nil, "rollback")))
  T.eq(code, 0, out .. err)
  T.match(out, "node [23] %([^)]+%): installer copied %(sha256 ")
  T.ok(T.read_file(old_msi) ~= "not the installer", "the wrong file was replaced")
  T.contains(out, "node 2 (" .. servers[2].target .. "): uninstalled 2025.4.10700")
  T.contains(out, "node 3 (" .. servers[3].target .. "): installed 2023.4.8166")
  rolled_back()
end)

local all_remote_config
T.test("every node remote (this_node=false): three ssh nodes, the coordinator none of them, end to end to the newest", function()
  -- the main machine behind an sshd of its own too; this machine's programs do not exist
  local m = F.main.machine
  servers[1] = sshd.start { env = { PATH = m .. "/bin:" .. m .. "/ProgramFiles/OctopusDeploy/Octopus:" .. os.getenv("PATH"),
                                    OCTOSIM_FAULT_NODE_OFFLINE_DELAY = "0.05" } }
  T.sh("cat " .. T.q(servers[2].dir .. "/user_key.pub") .. " >> " .. T.q(servers[1].dir .. "/authorized_keys"))
  local kh = F.dir .. "/known_hosts.all"
  T.write_file(kh, T.read_file(known_hosts) .. T.read_file(servers[1].known_hosts))
  local none = F.dir .. "/no-such-machine"
  all_remote_config = cluster_config({ nodes = { servers[1].target, servers[2].target, servers[3].target },
    this_node = false, known_hosts = kh, backup_dir = F.dir .. "/backup-all-remote",
    server_exe = none .. "/Octopus.Server", msiexec = none .. "/msiexec", service_control = "", file_version = "" },
    "all-remote")
  local out, err, code = F:upkit("run ha-upgrade --yes " .. F:args(all_remote_config))
  T.eq(code, 0, out .. err)
  local n1 = "node 1 (" .. servers[1].target .. ")"
  T.contains(out, n1 .. ": checked: Octopus 2023.4.8166")
  T.contains(out, n1 .. ": installer copied (sha256 ")
  T.contains(out, "upgrading the database to 2025.4.10700")
  T.contains(out, n1 .. ": runs 2025.4.10700")
  T.contains(out, "node 3 (" .. servers[3].target .. "): installed 2025.4.10700")
  T.contains(out, "3 nodes run Octopus 2025.4.10700")
  T.eq(versions(), { "2025.4.10700", "2025.4.10700", "2025.4.10700" })
  T.eq(F:sql("SELECT Version FROM SchemaVersions ORDER BY Id DESC LIMIT 1")[1].Version, "2025.4.10700")
  T.ok(T.read_file(F.dir .. "/backup-all-remote/master-key.txt") ~= "", "the master key came through node 1")
  T.contains(T.read_file(F.dir .. "/backup-all-remote/" .. F.main.instance .. ".config"), "Octopus")
  for _, n in ipairs(F:api("/api/octopusservernodes/summary").Nodes) do T.eq(n.IsOffline, false, n.Name) end
end)

T.test("rollback with this_node=false and the same three ssh nodes puts every node back on 2023.4.8166", function()
  local out, err, code = F:upkit("run rollback --yes " .. F:args(all_remote_config))
  T.eq(code, 0, out .. err)
  T.contains(out, "this machine is no node (this_node=false)")
  T.match(out, "config file [^\n]+ restored")
  T.contains(out, "node 1 (" .. servers[1].target .. "): uninstalled 2025.4.10700")
  T.contains(out, "node 1 (" .. servers[1].target .. "): installed 2023.4.8166")
  T.contains(out, "node 3 (" .. servers[3].target .. "): started and undrained")
  rolled_back()
end)

F:stop()
for i = 1, 3 do if servers[i] then servers[i].stop() end end
T.done()
