-- The bundled procedures' recovery path (issue 14): --check verifies what every
-- step needs, --plan shows the upgrade path without the API key, in-place-upgrade
-- asks before its first change, a failure says what state the server is in (and
-- turns maintenance back off when nothing else changed), --undo puts maintenance,
-- drain and service back, the backup keeps its installers so a rollback needs no
-- network, and a declined rollback leaves the server as it was.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local octofix = require "octofix"

local F = octofix.new { version = "3.17.14" }
local cfg = F:config()
local function version_of() return octofix.program_version(F.main.server_exe, F.main.filever) end
local function maintenance() return F:api("/api/maintenanceconfiguration").IsInMaintenanceMode end
local function check_line(out, step)
  return out:match("\n%s*check " .. step:gsub("%-", "%%-") .. "%s+([^\n]*)") or ""
end

T.test("in-place-upgrade --check: a missing msiexec fails the check of the steps that install", function()
  local missing = F.dir .. "/no-such/msiexec"
  local out, err, code = F:upkit("run in-place-upgrade --check " .. F:args(F:config({ msiexec = missing }, "c1")))
  T.eq(code, 1, out .. err)
  T.contains(check_line(out, "download-installers"), "FAILED: program '" .. missing .. "' not found")
  T.contains(check_line(out, "drain-and-stop"), "ok")
  T.contains(out, "check(s) failed")
end)

T.test("in-place-upgrade --check: an unreachable versions feed fails, naming the feed", function()
  local feed = "http://127.0.0.1:1/download/upgrade/v3"
  local out, err, code = F:upkit("run in-place-upgrade --check " .. F:args(F:config({ versions_feed = feed }, "c2")))
  T.eq(code, 1, out .. err)
  T.contains(check_line(out, "download-installers"), "FAILED: " .. feed .. " cannot be reached")
end)

T.test("in-place-upgrade --check: a target version that does not exist fails, naming it", function()
  local out, err, code = F:upkit("run in-place-upgrade --check " .. F:args(F:config({ target_version = "2099.1.1" }, "c3")))
  T.eq(code, 1, out .. err)
  T.contains(check_line(out, "download-installers"), "FAILED: version 2099.1.1 is not in the list of released versions")
end)

T.test("in-place-upgrade --check: an installer the download site does not have fails, naming its URL", function()
  local out, err, code = F:upkit("run in-place-upgrade --check " ..
                                 F:args(F:config({ download_url = F.site_url .. "/nothing-here" }, "c4")))
  T.eq(code, 1, out .. err)
  T.contains(check_line(out, "download-installers"), "FAILED: installers: " .. F.site_url .. "/nothing-here/")
  T.contains(check_line(out, "download-installers"), "answered HTTP 404")
end)

T.test("--plan shows the resolved path of latest with its stops, without the API key", function()
  local out, err, code = T.run_upkit(F.dir, "run in-place-upgrade --plan --config " .. T.q(cfg) .. " --runs " ..
                                     T.q(F.dir .. "/runs"), { env = "UPKIT_API_KEY=" })
  T.eq(code, 0, out .. err)
  local path = out:match("path 3%.17%.14 %-> ([^\n]*)")
  T.ok(path, "the path is shown: " .. out)
  T.ok(path:match("^2021%.1%.%d+ %-> "), "the 2021.1 stop comes first: " .. path)
  T.ok(path:match("2024%.") or path:match("2025%.4%."), "the 2024.3-2025.4 stop is on the path: " .. path)
end)

T.test("in-place-upgrade without --yes and without a terminal refuses before any change", function()
  local out, err, code = F:upkit("run in-place-upgrade " .. F:args(cfg))
  T.eq(code, 2, out .. err)
  T.contains(err, "step 'drain-and-stop' is destructive")
  T.eq(maintenance(), false)
  T.eq(F:api("/api").Version, "3.17.14")
end)

T.test("a failure before the service was touched: maintenance mode back off, the summary says the state", function()
  local api = require("upkit.octopus").connect { url = F.main.url, api_key = F.main.api_key }
  api:post("/api/tasks", { Name = "Health", SimDurationSeconds = 60 })
  local out, err, code = F:upkit("run in-place-upgrade --yes " ..
                                 F:args(F:config({ timeout = 3, backup_dir = F.dir .. "/backup-idle" }, "idle")))
  T.eq(code, 1, out .. err)
  T.contains(err, "step 'wait-until-idle' of in-place-upgrade failed")
  T.contains(out .. err, "nothing but maintenance mode was changed: maintenance mode is off again")
  T.contains(out .. err, "service: as it was (not stopped by this run)")
  T.eq(maintenance(), false, "maintenance mode is off again")
  T.eq(F:api("/api").Version, "3.17.14")
  -- let the task end before the next tests
  for _, t in ipairs(api:get("/api/tasks?states=Executing,Queued").Items or {}) do
    api:post("/api/tasks/" .. t.Id .. "/cancel", {})
  end
  api:wait_until_idle { timeout = 30 }
end)

T.test("a failure after the stop: the summary says the service is stopped; --undo starts it, maintenance off", function()
  local dir = F.dir .. "/backup-undo"
  os.execute("mkdir -p " .. T.q(dir .. "/database.bak"))  -- the backup cannot be written
  local c = F:config({ backup_dir = dir }, "undo")
  local runs = F.dir .. "/runs-undo"
  local args = F:args(c):gsub(T.q(F.dir .. "/runs"), T.q(runs))
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. args)
  T.eq(code, 1, out .. err)
  T.contains(err, "step 'backup-database' of in-place-upgrade failed")
  T.contains(out .. err, "service stopped: " .. F.main.instance)
  T.contains(out .. err, "maintenance mode: on (turned on by this run)")
  T.contains(out .. err, "program: Octopus 3.17.14 (as before)")
  T.contains(out .. err, "database: Octopus 3.17.14 (as before)")
  T.contains(out .. err, "or undo what this run did (maintenance-on, watchdog-delete, drain-and-stop)")
  T.eq(octofix.answers(F.main.url), false, "the service is stopped")
  out, err, code = F:upkit("run in-place-upgrade --undo --yes " .. args)
  T.eq(code, 0, out .. err)
  T.eq(octofix.answers(F.main.url), true, "the service runs again")
  T.eq(maintenance(), false, "maintenance mode is off again")
  T.eq(F:api("/api").Version, "3.17.14")
  os.execute("rm -rf " .. T.q(dir))
end)

T.test("backup keeps the installer of the version it backs up, its digest recorded beside it", function()
  local dir = F.dir .. "/backup-plain"
  local out, err, code = F:upkit("run backup " .. F:args(F:config({ backup_dir = dir }, "plain")))
  T.eq(code, 0, out .. err)
  local kept = dir .. "/installers/Octopus.3.17.14-x64.msi"
  T.eq(T.read_file(kept .. ".sha256"):match("^(%x+)"), require("upkit.hash").file("sha256", kept))
  local listed = T.read_file(F.main.downloads .. "/SHA256SUMS"):match("(%x+)%s+%*?Octopus%.3%.17%.14%-x64%.msi")
  T.eq(T.read_file(kept .. ".sha256"):match("^(%x+)"), listed, "checked against installer_digests")
  T.eq(maintenance(), false)
end)

local before_upgrade = octofix.dump(F.main.connection_string)

T.test("in-place-upgrade keeps the installers of the installed version and of the path in the backup", function()
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(cfg))
  T.eq(code, 0, out .. err)
  local kept = F.dir .. "/backup/installers/Octopus.3.17.14-x64.msi"
  T.ok(io.open(kept), "the installed version's installer is kept")
  local digest = T.read_file(kept .. ".sha256"):match("^(%x+)")
  T.eq(digest, require("upkit.hash").file("sha256", kept), "its digest is recorded beside it")
end)

T.test("--undo of a finished in-place-upgrade puts the previous version and its database back", function()
  local runs = T.sh("ls -d " .. T.q(F.dir .. "/runs") .. "/in-place-upgrade-* | tail -n 1"):gsub("%s+$", "")
  local out, err, code = F:upkit("run in-place-upgrade --undo " .. T.q(runs) .. " --plan " .. F:args(cfg))
  T.eq(code, 0, out .. err)
  T.contains(out, "upgrade")
  out, err, code = F:upkit("run in-place-upgrade --undo " .. T.q(runs) .. " --yes " .. F:args(cfg))
  T.eq(code, 0, out .. err)
  T.eq(version_of(), "3.17.14")
  T.eq(F:api("/api").Version, "3.17.14")
  T.eq(maintenance(), false)
  T.eq(octofix.dump(F.main.connection_string), before_upgrade, "the database is the one before the upgrade")
  out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(cfg))
  T.eq(code, 0, "upgraded again for the rollback tests: " .. out .. err)
end)

local upgraded = F:api("/api").Version
local before_rollback = octofix.dump(F.main.connection_string)

T.test("rollback --check with the download site down and an installer missing from the backup fails, naming it", function()
  local bad = F.dir .. "/backup-noinst"
  os.execute(string.format("cp -a %s %s && rm -rf %s", T.q(F.dir .. "/backup"), T.q(bad), T.q(bad .. "/installers")))
  local out, err, code = F:upkit("run rollback --check " .. F:args(F:config({
    backup_dir = bad, download_url = "http://127.0.0.1:1/octopus" }, "noinst")))
  T.eq(code, 1, out .. err)
  T.contains(check_line(out, "install-previous-version"), "FAILED: installer of Octopus 3.17.14")
  T.contains(check_line(out, "install-previous-version"), "cannot be reached")
end)

-- from here on the download site is down: the network is unreachable
F.site:close()
F.site = nil
local offline = F:config({ installer_digests = "", versions_feed = "http://127.0.0.1:1/feed",
                           download_url = "http://127.0.0.1:1/octopus" }, "offline")

local ok_pty, pty = pcall(require, "pty")
local has_tmux = os.execute("command -v tmux >/dev/null 2>&1")
if ok_pty and has_tmux then
  T.test("rollback with a declined confirmation and no network finds the server as it was", function()
    local cmd = string.format("cd %s && %s %s run rollback %s", T.q(F.dir), "OCTOSIM_FAULT_NODE_OFFLINE_DELAY=0.05",
                              T.q(T.upkit_bin()), F:args(offline))
    pty.run(cmd, function(term)
      local screen = term:wait_for("to continue:")
      T.contains(screen, "- stop-instances:")
      T.contains(screen, "- install-previous-version:")
      T.ok(screen:find("- watchdog-delete:", 1, true) < screen:find("- stop-instances:", 1, true))
      T.eq(octofix.answers(F.main.url), true, "the service runs while the question waits")
      term:send("no", "Enter")
      T.eq(term:wait_exit(), 3)
    end)
    T.eq(octofix.answers(F.main.url), true, "the service still runs")
    T.eq(F:api("/api").Version, upgraded)
    T.eq(octofix.dump(F.main.connection_string), before_rollback, "the database is as it was")
  end)
else
  T.skip("the declined rollback in a terminal", "tmux is not installed")
end

T.test("rollback needs no network: the installers come from the backup", function()
  local out, err, code = F:upkit("run rollback --check " .. F:args(offline))
  T.eq(code, 0, "--check passes without the network: " .. out .. err)
  T.contains(check_line(out, "install-previous-version"), "ok")
  out, err, code = F:upkit("run rollback --yes " .. F:args(offline))
  T.eq(code, 0, out .. err)
  T.eq(version_of(), "3.17.14")
  T.eq(F:api("/api").Version, "3.17.14")
  T.eq(octofix.dump(F.main.connection_string), before_upgrade, "the database is the backup's")
end)

F:stop()
T.done()
