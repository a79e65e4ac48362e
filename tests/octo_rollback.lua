-- in-place-upgrade that fails, then rollback: the database comes back row for
-- row, the folders match the manifests, the previous version runs, maintenance off.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local octofix = require "octofix"

local F = octofix.new { version = "3.17.14" }
local cfg = F:config()
local before = octofix.dump(F.main.connection_string)
local function folders_digest()
  local out = {}
  for _, name in ipairs { "Artifacts", "Packages", "TaskLogs" } do out[name] = octofix.tree_digest(F.main.folders[name]) end
  return out
end
local folders_before = folders_digest()

local function version_of(exe) return octofix.program_version(exe, F.main.filever) end

T.test("in-place-upgrade stops at the failing database upgrade and says how to go on", function()
  T.write_file(F.main.machine .. "/faults.json", json.encode { migration_fail_at = "2024.4.7000" })
  local out, err, code = F:upkit("run in-place-upgrade --yes " .. F:args(cfg))
  T.eq(code, 1, out .. err)
  T.contains(err, "step 'upgrade' of in-place-upgrade failed")
  T.contains(out, "backup-database        ok")
  T.ok(io.open(F.dir .. "/backup/backup.json"), "the backup was made before the upgrade")
  os.remove(F.main.machine .. "/faults.json")
end)

T.test("rollback without a terminal and without --yes refuses before any change", function()
  local _, err, code = F:upkit("run rollback " .. F:args(cfg))
  T.eq(code, 2)
  T.contains(err, "step 'stop-instances' is destructive")
end)

T.test("rollback refuses a damaged backup before any change", function()
  local bad = F.dir .. "/bad-backup"
  os.execute(string.format("cp -a %s %s", T.q(F.dir .. "/backup"), T.q(bad)))
  local m = json.decode(T.read_file(bad .. "/backup.json"))
  local db = bad .. "/database.bak"
  T.sh(string.format("truncate -s %d %s", m.database.bytes // 2, T.q(db)))
  m.database.file = db
  T.write_file(bad .. "/backup.json", json.encode(m))
  local _, err, code = F:upkit("run rollback --yes " .. F:args(cfg) .. " --set backup_dir=" .. T.q(bad))
  T.eq(code, 1)
  T.contains(err, "preflight checks failed; nothing was changed")
  T.ne(version_of(F.main.server_exe), "3.17.14", "nothing was rolled back")
end)

T.test("rollback restores the database row for row, the folders and the previous version", function()
  local out, err, code = F:upkit("run rollback --yes " .. F:args(cfg))
  T.eq(code, 0, out .. err)
  T.contains(out, "Result: success")
  T.eq(octofix.dump(F.main.connection_string), before)
  T.eq(folders_digest(), folders_before)
  T.eq(T.read_file(F.main.config), T.read_file(F.dir .. "/backup/OctopusServer.config"), "config file put back")
  T.eq(version_of(F.main.server_exe), "3.17.14")
  T.eq(F:api("/api").Version, "3.17.14")
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
  local aside = T.sh("find " .. T.q(F.main.machine) .. " -name '*.upkit-aside' | wc -l")
  T.eq(aside, "0\n", "the set-aside folders are removed once all is verified")
end)

T.test("the restored folders pass sha256sum -c against the backup's manifests", function()
  local m = json.decode(T.read_file(F.dir .. "/backup/backup.json"))
  for name, f in pairs(m.folders) do
    local out, status = T.sh(string.format("cd %s && sha256sum --quiet -c %s 2>&1", T.q(f.path),
      T.q(F.dir .. "/backup/folders/" .. name .. ".SHA256SUMS")))
    T.eq(status, 0, name .. ": " .. out)
  end
end)

F:stop()
T.done()
