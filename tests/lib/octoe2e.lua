-- octoe2e: the whole bundled set of Octopus procedures, end to end, from one source
-- version to the newest simulated one, against the strict simulator (small sizes):
-- backup (every file of Artifacts, Packages and TaskLogs counted against the
-- source), preflight, clone-instance, test-instance, in-place-upgrade, rollback,
-- ha-upgrade. Each procedure has its own backup folder.
--
--   require("octoe2e").run("2019.1.5")
local T = require "upkit.test"
local json = require "upkit.json"
local version = require "upkit.version"
local octofix = require "octofix"

local M = {}
local NEWEST = "2025.4.10700"

local function count_files(dir)
  local out = T.sh("find " .. T.q(dir) .. " -type f | wc -l")
  return tonumber(out:match("%d+"))
end

function M.run(source)
  local F = octofix.new { version = source, files = 6, package_mb = 1, machines = 4 }
  T.write_file(F.dir .. "/test-admin-password", "rehearsal-pw-77\n")

  local function run(procedure, extra, name)
    local cfg = F:config(extra, name)
    local pw = procedure == "test-instance" and (" --set test_admin_password_file=" ..
                                                 T.q(F.dir .. "/test-admin-password")) or ""
    local out, err, code = F:upkit("run " .. procedure .. " --yes " .. F:args(cfg) .. pw)
    T.eq(code, 0, procedure .. ": " .. (out .. err):sub(-3000))
    return out
  end

  T.test(source .. ": backup saves every file of Artifacts, Packages and TaskLogs", function()
    run("backup", { backup_dir = F.dir .. "/backup-b" }, "backup")
    local m = json.decode(T.read_file(F.dir .. "/backup-b/backup.json"))
    T.eq(m.version, source)
    for _, name in ipairs { "Artifacts", "Packages", "TaskLogs" } do
      local want = count_files(F.main.folders[name])
      T.ok(want > 0, name .. " has files in the source")
      T.eq(count_files(F.dir .. "/backup-b/folders/" .. name), want, name .. ": files in the backup")
      T.eq(m.folders[name].files, want, name .. ": files in backup.json")
    end
  end)

  T.test(source .. ": preflight passes and changes nothing", function()
    local before = octofix.dump(F.main.connection_string)
    local out = run("preflight", { backup_dir = F.dir .. "/backup-p" }, "preflight")
    T.contains(out, "ready to upgrade " .. source .. " -> " .. NEWEST)
    T.eq(octofix.dump(F.main.connection_string), before)
  end)

  T.test(source .. ": clone-instance clones, upgrades and tests the clone", function()
    local out = run("clone-instance", { backup_dir = F.dir .. "/backup-c" }, "clone")
    T.contains(out, "instance tests passed: version " .. NEWEST)
    T.eq(F:api("/api").Version, source, "main untouched")
  end)

  T.test(source .. ": test-instance rehearses on a new server", function()
    local t = F:machine("test-server")
    local db = F:new_database("OctopusTest")
    F.started[#F.started + 1] = { exe = t.server_exe, instance = "OctopusServer" }
    local projects = version.ge(source, "2021.1.0") and "Project 1" or ""
    local out = run("test-instance", {
      backup_dir = F.dir .. "/backup-t", test_server_exe = t.server_exe, test_msiexec = t.msiexec,
      test_service_control = t.sc, test_file_version = t.filever, test_home = t.machine .. "/Octopus",
      test_db = db.ado, test_odbc = db.odbc, test_url = t.url, projects = projects }, "test")
    T.contains(out, "instance tests passed: version " .. NEWEST)
    if projects ~= "" then
      T.contains(out, "imported Project 1 into the test instance")
    else
      T.contains(out, "no projects are imported, the test instance stays empty")
    end
    T.eq(F:api("/api").Version, source, "main untouched")
  end)

  T.test(source .. ": in-place-upgrade to the newest version", function()
    local out = run("in-place-upgrade", { backup_dir = F.dir .. "/backup-ip" }, "inplace")
    T.contains(out, "instance tests passed: version " .. NEWEST)
    T.eq(F:api("/api").Version, NEWEST)
  end)

  T.test(source .. ": rollback to the backup of the in-place upgrade", function()
    local out = run("rollback", { backup_dir = F.dir .. "/backup-ip" }, "rollback")
    T.contains(out, "uninstalled Octopus " .. NEWEST)
    T.contains(out, "installed Octopus " .. source)
    T.eq(F:api("/api").Version, source)
    T.eq(octofix.program_version(F.main.server_exe, F.main.filever), source)
  end)

  T.test(source .. ": ha-upgrade of a two-node cluster", function()
    local n = F:machine("node2")
    local node = F:add_node(n)
    local out = run("ha-upgrade", {
      backup_dir = F.dir .. "/backup-ha", nodes = "local", node_server_exe = node.server_exe,
      node_msiexec = node.msiexec, node_service_control = node.sc, node_file_version = node.filever,
      node_installer_dir = F.dir, node_offline_timeout = 60 }, "ha")
    T.contains(out, "2 nodes run Octopus " .. NEWEST)
    T.eq(octofix.program_version(node.server_exe, node.filever), NEWEST)
    T.eq(F:api("/api").Version, NEWEST)
  end)

  F:stop()
end

return M
