-- preflight and in-place-upgrade against the Octopus simulator.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local octofix = require "octofix"

local F = octofix.new { version = "3.17.14" }
local cfg = F:config()

T.test("preflight reports the upgrade path with its stops and the 3.x notes, and changes nothing", function()
  local before = octofix.dump(F.main.connection_string)
  local out, err, code = F:upkit("run preflight " .. F:args(cfg))
  T.eq(code, 0, out .. err)
  T.contains(out, "needs intermediate stops: 2021.1.7687 -> 2024.4.7000 -> 2025.4.10700")
  T.contains(out, "licence is compliant")
  T.contains(out, "2019.1: spaces arrive")
  T.contains(out, "ready to upgrade 3.17.14 -> 2025.4.10700")
  T.eq(octofix.dump(F.main.connection_string), before)
end)

T.test("preflight fails, listing every problem, for a version that does not exist and a busy server", function()
  local task = F:api("/api")  -- the server answers
  T.ok(task.Version)
  local http = require "upkit.http"
  local c <close> = http.client { base = F.main.url, headers = { ["X-Octopus-ApiKey"] = F.main.api_key } }
  c:post("/api/tasks", { json = { Name = "Health", SimDurationSeconds = 30 }, expect = { 201 } })
  local out, err, code = F:upkit("run preflight " .. F:args(cfg) .. " --set target_version=2099.1.1")
  T.eq(code, 1, out .. err)
  T.contains(err, "PREFLIGHT_FAILED")
  T.contains(err, "target-version: version 2099.1.1 is not in the list of released versions")
  T.contains(err, "tasks: 1 tasks are executing or queued")
end)

T.test("preflight finds a backup folder without room for the backup", function()
  local tiny = F.dir .. "/tiny"
  os.execute("mkdir -p " .. T.q(tiny))
  local _, st = T.sh("mount -t tmpfs -o size=64k tmpfs " .. T.q(tiny) .. " 2>&1")
  T.eq(st, 0, "mount a 64 KiB tmpfs")
  local ok, err = pcall(function()
    local out, e, code = F:upkit("run preflight " .. F:args(cfg) .. " --set backup_dir=" .. T.q(tiny .. "/b"))
    T.eq(code, 1, out .. e)
    T.match(e, "free%-disk: .*tiny/b has 0 MB free; the backup needs about %d+ MB")
  end)
  os.execute("umount " .. T.q(tiny))
  if not ok then error(err, 0) end
end)

T.test("in-place-upgrade goes through every stop to the newest version and tests it (no digest list)", function()
  -- the queued task above finishes while maintenance mode waits for it
  local nodigests = F:config({ installer_digests = "" }, "nodigests")
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(nodigests) .. " --set timeout=90")
  T.eq(code, 0, out .. err)
  T.contains(out .. err, "Octopus publishes no digest, so only a complete download is checked")
  T.contains(out, "upgrade path 3.17.14 -> 2021.1.7687 -> 2024.4.7000 -> 2025.4.10700")
  T.contains(out, "instance tests passed: version 2025.4.10700")
  T.eq(F:api("/api").Version, "2025.4.10700")
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  local m = json.decode(T.read_file(F.dir .. "/backup/backup.json"))
  T.eq(m.version, "3.17.14")
  T.ok(m.folders and m.folders.TaskLogs, "folders backed up on a major version change")
  local h = F:sql("SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC")
  T.eq(h[1].Version, "2025.4.10700")
end)

T.test("in-place-upgrade again is a no-op that still tests the server", function()
  os.execute("rm -rf " .. T.q(F.dir .. "/backup2"))
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(cfg) .. " --set backup_dir=" ..
                                 T.q(F.dir .. "/backup2"))
  T.eq(code, 0, out .. err)
  T.contains(out, "already at 2025.4.10700")
end)

F:stop()
T.done()
