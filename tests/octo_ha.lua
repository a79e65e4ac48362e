-- The ha-upgrade procedure against a simulated two-node cluster on 2023.4.8166,
-- the other node given as nodes = { "local" } (the local special case: its tools
-- are programs of this machine, node_server_exe and the like):
-- the database upgrade refuses while another node runs (2023.2.9755+), so the
-- upgrade succeeds only because every node is stopped first; afterwards both
-- nodes run the newest version. A node that cannot be reached stops the run in
-- a check, before any change.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local proc = require "upkit.proc"
local octofix = require "octofix"

local F = octofix.new { version = "2023.4.8166" }
local node2 = F:add_node()

local function node_api(url, path)
  local http = require "upkit.http"
  local c <close> = http.client { base = url, headers = { ["X-Octopus-ApiKey"] = F.main.api_key } }
  return c:get(path):json()
end

local function cli_version(exe)
  return octofix.program_version(exe, exe == F.main.server_exe and F.main.filever or F.clone.filever)
end
local function running(url) return octofix.answers(url) end

T.test("the fixture is a cluster: two nodes online on one database", function()
  T.eq(node_api(node2.url, "/api").Version, "2023.4.8166")
  local online = 0
  for _, n in ipairs(F:api("/api/octopusservernodes/summary").Nodes) do
    if not n.IsOffline then online = online + 1 end
  end
  T.eq(online, 2)
end)

local function local_node(extra, name)
  local cfg = { nodes = "local", node_server_exe = node2.server_exe, node_msiexec = node2.msiexec,
                node_service_control = F.clone.sc, node_file_version = F.clone.filever,
                node_installer_dir = F.dir, node_offline_timeout = 60 }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return F:config(cfg, name)
end

T.test("a target that is not ssh:// or local exits 2 before anything runs", function()
  local out, err, code = F:upkit("run ha-upgrade --yes " .. F:args(local_node({ nodes = "ftp://octo2" }, "bad-target")))
  T.eq(code, 2, out .. err)
  T.contains(err, "parameter 'nodes'")
  -- a list in the config file: each item one target, without a comma
  out, err, code = F:upkit("run ha-upgrade --yes " .. F:args(local_node({ nodes = { "local", "ssh://a,ssh://b" } }, "comma")))
  T.eq(code, 2, out .. err)
  T.contains(err, "parameter 'nodes': item 2 must be a string without a comma")
end)

T.test("a node that cannot be reached fails the check before any change", function()
  local before = octofix.dump(F.main.connection_string)
  local cfg = local_node({ node_server_exe = F.dir .. "/no-such-node/Octopus.Server" }, "wrong-node")
  local out, err, code = F:upkit("run ha-upgrade --yes " .. F:args(cfg))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "check of step 'check-nodes' failed")
  T.contains(out .. err, "no-such-node/Octopus.Server does not exist")
  T.contains(err, "nothing was changed")
  T.eq(octofix.dump(F.main.connection_string), before, "database row for row")
  T.eq(F:api("/api").Version, "2023.4.8166")
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  T.ok(running(F.main.url) and running(node2.url), "both nodes still run")
end)

T.test("ha-upgrade stops both nodes, upgrades the database once, then every node, and tests the cluster", function()
  local pidfile = F.clone.machine .. "/services/OctopusDeploy.pid"
  local pid_before = T.read_file(pidfile)
  local cfg = local_node()
  local out, err, code = F:upkit("run ha-upgrade --yes " .. F:args(cfg))
  T.eq(code, 0, out .. err)
  T.contains(out, "node 2 (local): drained and stopped")
  T.ok(pid_before and T.read_file(pidfile) and T.read_file(pidfile) ~= pid_before, "node 2 was stopped and started again")
  T.contains(out, "upgrade path 2023.4.8166 -> 2024.4.7000 -> 2025.4.10700")
  T.contains(out, "2 nodes run Octopus 2025.4.10700")
  T.contains(out, "instance tests passed: version 2025.4.10700")
end)

T.test("both nodes run the newest version (command line and API), online, undrained; maintenance off", function()
  for _, exe in ipairs { F.main.server_exe, node2.server_exe } do
    T.eq(cli_version(exe), "2025.4.10700", exe)
  end
  T.eq(F:api("/api").Version, "2025.4.10700")
  T.eq(node_api(node2.url, "/api").Version, "2025.4.10700")
  T.ok(running(F.main.url) and running(node2.url), "both nodes run")
  local nodes = F:api("/api/octopusservernodes/summary").Nodes
  T.eq(#nodes, 2)
  for _, n in ipairs(nodes) do
    T.eq(n.IsOffline, false, n.Name)
    T.eq(n.IsInMaintenanceMode, false, n.Name)
  end
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
end)

T.test("the database was upgraded once per version, and backed up before", function()
  local h = F:sql("SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC")
  T.eq(h[1].Version, "2025.4.10700")
  T.eq(h[2].Version, "2024.4.7000")
  T.eq(F:sql("SELECT Version FROM SchemaVersions ORDER BY Id DESC LIMIT 1")[1].Version, "2025.4.10700")
  local m = json.decode(T.read_file(F.dir .. "/backup/backup.json"))
  T.eq(m.version, "2023.4.8166")
  T.ok(m.database and m.folders and m.folders.TaskLogs, "database and folders backed up")
end)

T.test("the master key and API key are in no log or journal", function()
  local logs = T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt " .. T.q(F.dir) .. "/runs/*/journal.jsonl")
  T.ok(#logs > 1000)
  T.eq(logs:find(F.main.master_key, 1, true), nil)
  T.eq(logs:find(F.main.api_key, 1, true), nil)
end)

F:stop()
T.done()
