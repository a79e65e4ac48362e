-- The procedures against what a real Octopus Server does (tests/sim/FIDELITY.md):
-- a version that cannot be read stops before any change; tasks of every space
-- are waited for; the Service Watchdog is deleted before the upgrade and created
-- after; every instance of the machine is stopped for the MSI; a path through
-- OctopusDeploy/Issues #7790 is refused before any change; a node that does not
-- mark itself offline stops ha-upgrade with STILL_RUNNING, the database untouched.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local proc = require "upkit.proc"
local octofix = require "octofix"

T.test("3.17.14 without a file version reader: NO_VERSION before any change (3.x has no `version` command)", function()
  local F = octofix.new { version = "3.17.14", files = 2 }
  local cfg = F:config({ file_version = "" })
  local before = octofix.dump(F.main.connection_string)
  local out, err, code = F:upkit("run backup " .. F:args(cfg))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "[NO_VERSION]")
  T.contains(err, "nothing was changed")
  T.eq(io.open(F.dir .. "/backup/master-key.txt"), nil)
  T.eq(octofix.dump(F.main.connection_string), before)
  F:stop()
end)

T.test("#7790: from 2021.3.12912 to 2022.1.2735 is refused by the checks, before any change", function()
  local F = octofix.new { version = "2021.3.12912", files = 2 }
  local cfg = F:config({ target_version = "2022.1.2735" })
  local before = octofix.dump(F.main.connection_string)
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(cfg))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "check of step 'download-installers' failed")
  T.contains(out .. err, "OctopusDeploy/Issues #7790")
  T.contains(err, "nothing was changed")
  T.eq(octofix.dump(F.main.connection_string), before)
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  F:stop()
end)

T.test("a service state that cannot be known stops in-place-upgrade in its checks, before any change", function()
  local F = octofix.new { version = "2019.1.5", files = 2 }
  local sc = F.dir .. "/sc-broken"
  T.write_file(sc, "#!/bin/sh\necho 'Access is denied.'\nexit 5\n")
  T.sh("chmod +x " .. T.q(sc))
  local before = octofix.dump(F.main.connection_string)
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(F:config({ service_control = sc })))
  T.eq(code, 1, out .. err)
  T.contains(out .. err, "check of step 'drain-and-stop' failed")
  T.contains(out .. err, "printed no STATE")
  T.contains(err, "nothing was changed")
  T.eq(octofix.dump(F.main.connection_string), before)
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  F:stop()
end)

local F = octofix.new { version = "2023.4.8166", files = 3 }

-- A second instance on the main machine, with its own database, running.
local second_url = string.format("http://127.0.0.1:%d/", octofix.free_port())
do
  local home = F.main.machine .. "/Second"
  local function server(...)
    local argv = { F.main.server_exe, ... }
    argv[#argv + 1] = "--instance=Second"
    proc.run(argv, { timeout = 120, ok = { 0 }, env = octofix.ENV })
  end
  server("create-instance", "--config=" .. home .. "/Second.config", "--home=" .. home)
  server("database", "--connectionString=Data Source=" .. F.main.sqlserver .. ";Initial Catalog=Second", "--create")
  server("configure", "--home=" .. home, "--webListenPrefixes=" .. second_url)
  server("service", "--install", "--start")
  F.started[#F.started + 1] = { exe = F.main.server_exe, instance = "Second" }
end

T.test("preflight counts the tasks of every space (spaces=all&includeSystem=true)", function()
  local http = require "upkit.http"
  local c <close> = http.client { base = F.main.url, headers = { ["X-Octopus-ApiKey"] = F.main.api_key } }
  local space = c:post("/api/spaces", { json = { Name = "Second space" }, expect = { 200, 201 } }):json().Id
  c:post("/api/tasks", { json = { Name = "Health", SpaceId = space, SimDurationSeconds = 4 }, expect = { 201 } })
  local default_space = c:get("/api/tasks", { query = { states = "Executing,Queued" } }):json().TotalResults
  T.eq(default_space, 0, "the default space alone shows no task")
  local out, err, code = F:upkit("run preflight " .. F:args(F:config()))
  T.eq(code, 1, out .. err)
  T.contains(err, "tasks: 1 tasks are executing or queued")
end)

T.test("in-place-upgrade deletes the watchdog, stops every instance of the machine, creates the watchdog again", function()
  proc.run({ F.main.server_exe, "watchdog", "--create", "--instances=*" }, { ok = { 0 }, env = octofix.ENV })
  T.ok(octofix.answers(second_url), "the second instance runs")
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(F:config({ watchdog = true })))
  T.eq(code, 0, out .. err)
  T.contains(out, "Service Watchdog: deleted")
  T.contains(out, "instance Second drained and stopped")
  T.contains(out, "instance OctopusServer drained and stopped")
  T.contains(out .. err, "instance Second of this machine was stopped for the upgrade and stays stopped")
  T.contains(out, "Service Watchdog: created")
  T.eq(F:api("/api").Version, "2025.4.10700")
  T.eq(octofix.program_version(F.main.server_exe, F.main.filever), "2025.4.10700")
  T.ok(not octofix.answers(second_url), "the second instance stays stopped (its database is still 2023.4.8166)")
  local wd = json.decode(T.read_file(F.main.machine .. "/watchdog.json"))
  T.eq(wd.Instances, "*")
end)

T.test("ha-upgrade: a node that does not mark itself offline stops the run with STILL_RUNNING", function()
  local G = octofix.new { version = "2023.4.8166", files = 2 }
  T.write_file(G.clone.machine .. "/faults.json", json.encode { node_offline_delay = 60 })
  local node = G:add_node(nil, { env = {} })  -- its server takes the delay from faults.json
  local cfg = G:config({ nodes = "local", node_server_exe = node.server_exe, node_msiexec = node.msiexec,
                         node_service_control = node.sc, node_file_version = node.filever,
                         node_offline_timeout = 4 })
  local out, err, code = G:upkit("run ha-upgrade --yes " .. G:args(cfg))
  T.eq(code, 1, out .. err)
  T.contains(err, "[STILL_RUNNING]")
  T.contains(err, "have not marked themselves offline: " .. node.name)
  T.eq(G:sql("SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC LIMIT 1")[1].Version,
       "2023.4.8166", "the database was not upgraded")
  T.eq(io.open(G.dir .. "/backup/database.bak"), nil, "the run stopped before the backup")
  G:stop()
end)

T.test("installers: an operator's digest is checked; a list without the file stops; none published", function()
  local V = require "upkit.upgrade.versions"
  local http = require "upkit.http"
  local c <close> = http.client { timeout = 30 }
  local dir = F.dir .. "/installers-test"
  local opts = { download_url = F.site_url .. "/octopus" }
  T.eq(c:get(F.site_url .. "/octopus/SHA256SUMS").status, 404, "the download site publishes no digests")
  opts.digests = string.rep("0", 64) .. "  Octopus.2025.4.10700-x64.msi\n"
  T.raises("CHECKSUM_MISMATCH", V.fetch_installer, c, "2025.4.10700", dir, opts)
  T.eq(io.open(dir .. "/Octopus.2025.4.10700-x64.msi"), nil, "a file that does not match is not kept")
  opts.digests = string.rep("0", 64) .. "  Octopus.2024.4.7000-x64.msi\n"
  T.raises("NOT_FOUND", V.fetch_installer, c, "2025.4.10700", dir, opts)
  opts.digests = T.read_file(F.main.downloads .. "/SHA256SUMS")
  local r = V.fetch_installer(c, "2025.4.10700", dir, opts)
  T.eq(r.verified, true)
  opts.digests = nil
  r = V.fetch_installer(c, "2024.4.7000", dir, opts)
  T.eq(r.verified, false)
  T.eq(T.read_file(dir .. "/Octopus.2024.4.7000-x64.msi.sha256"), r.sha256 .. "  Octopus.2024.4.7000-x64.msi\n",
       "the digest of an unverified download is kept beside it")
end)

F:stop()
T.done()
