-- The backup procedure against the Octopus simulator: what it saves, that the
-- saved database and folders are whole, and what stops it before any change.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local sql = require "upkit.sql"
local hash = require "upkit.hash"
local octofix = require "octofix"

local F = octofix.new { version = "3.17.14" }
local cfg = F:config()
local backup = F.dir .. "/backup"

local function mode_of(path)
  return (T.sh("stat -c %a " .. T.q(path)):gsub("%s+", ""))
end

-- What must not change when nothing is supposed to change.
local function snapshot()
  return { db = octofix.dump(F.main.connection_string), folders = octofix.tree_digest(F.main.home),
           maintenance = F:api("/api/maintenanceconfiguration").IsInMaintenanceMode }
end

T.test("a missing parameter stops backup with exit 2 and names it", function()
  local _, err, code = F:upkit("run backup --set server_url=" .. F.main.url)
  T.eq(code, 2)
  T.contains(err, "missing parameter 'backup_dir'")
  T.contains(err, "missing parameter 'api_key' (set OCTOPUS_API_KEY or give api_key_file)")
end)

T.test("plan and --check change nothing", function()
  local before = snapshot()
  local out, _, code = F:upkit("plan backup " .. F:args(cfg))
  T.eq(code, 0)
  T.contains(out, "backup-database")
  T.contains(out, "api_key                = (set)")
  out, _, code = F:upkit("run backup --check " .. F:args(cfg))
  T.eq(code, 0)
  T.contains(out, "All checks passed.")
  T.eq(snapshot(), before)
  T.eq(io.open(backup .. "/master-key.txt"), nil)
end)

T.test_root("--check refuses a backup folder whose file system cannot hold the folders", function()
  local mnt = F.dir .. "/small"
  T.sh("mkdir -p " .. T.q(mnt))
  local _, st = T.sh("mount -t tmpfs -o size=64k tmpfs " .. T.q(mnt) .. " 2>&1")
  T.eq(st, 0, "mount a 64 KiB tmpfs")
  local before = snapshot()
  local out, err, code = F:upkit("run backup --check " .. F:args(cfg) .. " --set backup_dir=" .. T.q(mnt .. "/b"))
  T.sh("umount " .. T.q(mnt))
  T.eq(code, 1, out .. err)
  T.match(out .. err, "backup%-folders")
  T.match(out .. err, "MB needed")
  T.eq(snapshot(), before)
end)

T.test("a wrong API key stops before any change, naming the cause", function()
  local before = snapshot()
  T.write_file(F.dir .. "/bad-key", "API-WRONGWRONGWRONG\n")
  local _, err, code = F:upkit("run backup --config " .. T.q(cfg) .. " --set api_key_file=" .. T.q(F.dir .. "/bad-key")
                               .. " --runs " .. T.q(F.dir .. "/runs"))
  T.eq(code, 1)
  T.contains(err, "preflight checks failed; nothing was changed")
  T.match(F:upkit("run backup --check --config " .. T.q(cfg) .. " --set api_key_file=" .. T.q(F.dir .. "/bad-key")), "401")
  T.eq(err:find("API-WRONG", 1, true), nil, "the key is not printed")
  T.eq(snapshot(), before)
end)

T.test("an unreachable server stops before any change", function()
  local port = octofix.free_port()
  local out, err, code = F:upkit("run backup " .. F:args(cfg) .. " --set server_url=http://127.0.0.1:" .. port)
  T.eq(code, 1)
  T.contains(out .. err, "CURLE_COULDNT_CONNECT")
  T.contains(err, "nothing was changed")
  T.eq(io.open(backup .. "/master-key.txt"), nil)
end)

T.test("backup saves master key, licence, config, database and folders, with digests", function()
  local out, err, code = F:upkit("run backup " .. F:args(cfg))
  T.eq(code, 0, err)
  T.contains(out, "Result: success")
  T.eq(T.read_file(backup .. "/master-key.txt"), F.main.master_key .. "\n")
  T.eq(mode_of(backup .. "/master-key.txt"), "600")
  T.eq(mode_of(backup), "700")
  T.contains(T.read_file(backup .. "/license.xml"), "License")
  T.eq(T.read_file(backup .. "/OctopusServer.config"), T.read_file(F.main.config))
  local m = json.decode(T.read_file(backup .. "/backup.json"))
  T.eq(m.version, "3.17.14")
  T.eq(m.files["master-key.txt"], hash.file("sha256", backup .. "/master-key.txt"))
  T.eq(m.database.file, "database.bak", "backup.json names its files relative to its folder")
  T.eq(m.database.location, "local")
  T.eq(m.database.digest, "sha256:" .. m.database.sha256)
  T.eq(m.database.sha256, hash.file("sha256", backup .. "/database.bak"))
  T.eq(m.folders.TaskLogs.manifest_sha256, hash.file("sha256", backup .. "/folders/TaskLogs.SHA256SUMS"))
  -- issue 18.7: nothing in the backup is readable by another user
  local loose = T.sh("find " .. T.q(backup) .. " \\( -type f -perm /077 \\) -o \\( -type d -perm /077 \\) | wc -l")
  T.eq(loose, "0\n", "every file 0600 or tighter, every folder 0700")
  T.eq(m.counts.Machine, F:sql("SELECT COUNT(*) AS n FROM Machine")[1].n)
  T.ok(m.folders.TaskLogs.files > 0, "task logs saved")
end)

T.test("the saved database restores to the same rows", function()
  local m = json.decode(T.read_file(backup .. "/backup.json"))
  local target = "Driver=SQLite3;Database=" .. F.dir .. "/restored.db"
  sql.restore(target, { from = backup .. "/" .. m.database.file })
  -- the backup was taken in maintenance mode: that one row differs, nothing else
  local saved, live = octofix.dump(target), octofix.dump(F.main.connection_string)
  for _, t in ipairs { saved, live } do
    for i = #t.Configuration, 1, -1 do
      if t.Configuration[i].Id == "maintenance" then table.remove(t.Configuration, i) end
    end
  end
  T.eq(saved, live)
end)

T.test("the saved folders pass sha256sum -c against their manifests", function()
  for _, name in ipairs { "Artifacts", "Packages", "TaskLogs" } do
    local out, status = T.sh(string.format("cd %s && sha256sum --quiet -c %s 2>&1", T.q(backup .. "/folders/" .. name),
                                           T.q(backup .. "/folders/" .. name .. ".SHA256SUMS")))
    T.eq(status, 0, name .. ": " .. out)
  end
  T.eq(octofix.tree_digest(backup .. "/folders/TaskLogs"), octofix.tree_digest(F.main.folders.TaskLogs))
end)

T.test("maintenance mode is off after backup, and the secrets are in no log", function()
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  local logs = T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt " .. T.q(F.dir) .. "/runs/*/journal.jsonl")
  T.ok(#logs > 0)
  T.eq(logs:find(F.main.master_key, 1, true), nil, "master key")
  T.eq(logs:find(F.main.api_key, 1, true), nil, "API key")
end)

T.test("a master key of another server in backup_dir stops before any change", function()
  local other = F.dir .. "/other-backup"
  os.execute("mkdir -p " .. T.q(other))
  T.write_file(other .. "/master-key.txt", "c29tZSBvdGhlciBrZXk=\n")
  local before = snapshot()
  local _, err, code = F:upkit("run backup " .. F:args(cfg) .. " --set backup_dir=" .. T.q(other))
  T.eq(code, 1)
  T.contains(err, "nothing was changed")
  T.contains(T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt"), "MASTER_KEY_MISMATCH")
  T.eq(snapshot(), before)
end)

T.test("stale licence and configuration files in backup_dir are saved over, and a folder others can read warns", function()
  local stale = F.dir .. "/stale-backup"
  os.execute("mkdir -p " .. T.q(stale) .. " && chmod 755 " .. T.q(stale))
  T.write_file(stale .. "/license.xml", "<License>another server's</License>")
  T.write_file(stale .. "/configuration.json", "{}")
  T.write_file(stale .. "/OctopusServer.config", "<config>stale</config>")
  local out, err, code = F:upkit("run backup " .. F:args(cfg) .. " --set backup_dir=" .. T.q(stale))
  T.eq(code, 0, out .. err)
  T.eq(out:find("backup-licence-config: already done", 1, true), nil, "the stale files do not make the step skip")
  T.contains(out .. err, "is readable by other users")
  T.eq(T.read_file(stale .. "/OctopusServer.config"), T.read_file(F.main.config))
  T.ne(T.read_file(stale .. "/license.xml"), "<License>another server's</License>")
  T.eq(T.read_file(stale .. "/license.xml"), T.read_file(backup .. "/license.xml"))
  T.ne(T.read_file(stale .. "/configuration.json"), "{}")
  local m = json.decode(T.read_file(stale .. "/backup.json"))
  T.eq(m.files["license.xml"], hash.file("sha256", stale .. "/license.xml"))
  T.eq(mode_of(stale .. "/license.xml"), "600")
  -- run again: now the files are this server's, the step is skipped
  out, err, code = F:upkit("run backup " .. F:args(cfg) .. " --set backup_dir=" .. T.q(stale))
  T.eq(code, 0, out .. err)
  T.contains(out, "backup-licence-config: already done")
end)

T.test("a backup killed during maintenance-on resumes and ends with maintenance off", function()
  local kb, runs = F.dir .. "/kill-backup", F.dir .. "/kill-runs"
  local args = string.format("--config %s --set api_key_file=%s --runs %s --set backup_dir=%s", T.q(cfg),
                             T.q(F.dir .. "/api-key"), T.q(runs), T.q(kb))
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  T.write_file(F.main.machine .. "/faults.json", json.encode { rest_delay_ms = 400 })
  os.execute("sleep 0.7")  -- a running server re-reads faults.json twice a second
  local pid = T.sh(string.format("cd %s && (%s run backup %s >kill-run.out 2>&1 & echo $!)", T.q(F.dir),
                                 T.q(T.upkit_bin()), args)):match("%d+")
  local started = false
  for _ = 1, 600 do
    local j = T.sh("cat " .. T.q(runs) .. "/*/journal.jsonl 2>/dev/null")
    if j:find('"step%-started"[^\n]*"maintenance%-on"') or j:find('"maintenance%-on"[^\n]*"step%-started"') then
      started = true
      break
    end
    os.execute("sleep 0.02")
  end
  os.execute("kill -STOP " .. pid)
  T.ok(started, "the run reached maintenance-on: " .. T.read_file(F.dir .. "/kill-run.out"))
  -- what the killed run's request did: maintenance is on, the journal has no step-done for it
  os.remove(F.main.machine .. "/faults.json")
  os.execute("sleep 0.7")
  local http = require "upkit.http"
  local c <close> = http.client { base = F.main.url, headers = { ["X-Octopus-ApiKey"] = F.main.api_key } }
  local mc = c:get("/api/maintenanceconfiguration"):json()
  mc.IsInMaintenanceMode = true
  c:put("/api/maintenanceconfiguration", { json = mc })
  os.execute("kill -KILL " .. pid .. "; kill -CONT " .. pid .. " 2>/dev/null; sleep 0.2")
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, true)
  T.eq(T.sh("cat " .. T.q(runs) .. "/*/journal.jsonl"):find('"step%-done"[^\n]*"maintenance%-on"'), nil)
  local out, err, code = F:upkit("run backup --resume " .. args)
  T.eq(code, 0, out .. err)
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false, "the resumed run knew it was off before")
end)

T.test("a backup killed during the folder copy resumes without losing or recopying files", function()
  local big = octofix.new { version = "3.17.14", files = 3000, package_mb = 150 }
  local bcfg = big:config()
  local pid = T.sh(string.format("cd %s && (%s run backup %s >/dev/null 2>&1 & echo $!)", T.q(big.dir),
                                 T.q(T.upkit_bin()), big:args(bcfg))):match("%d+")
  local logs = big.dir .. "/backup/folders/TaskLogs"
  local present = 0
  for _ = 1, 300 do
    present = tonumber((T.sh("ls " .. T.q(logs) .. " 2>/dev/null | wc -l"))) or 0
    if present >= 20 then break end
    os.execute("sleep 0.05")
  end
  os.execute("kill -9 " .. pid)
  T.ok(present >= 20, "the copy had started")
  os.execute("sleep 0.3")
  local out, err, code = big:upkit("run backup --resume " .. big:args(bcfg))
  T.eq(code, 0, err)
  local skipped = tonumber(out:match("folder TaskLogs: %d+ files, %d+ copied, (%d+) skipped"))
  T.ok(skipped and skipped >= present, "files copied before the kill are not copied again")
  local check, status = T.sh(string.format("cd %s && sha256sum --quiet -c ../TaskLogs.SHA256SUMS 2>&1", T.q(logs)))
  T.eq(status, 0, check)
  T.eq(octofix.tree_digest(logs), octofix.tree_digest(big.main.folders.TaskLogs))
  T.eq(T.sh("find " .. T.q(big.dir .. "/backup") .. " -name '*.upkit-tmp*' | wc -l"), "0\n", "no temporary files left")
  big:stop()
end)

F:stop()
T.done()
