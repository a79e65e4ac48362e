-- Issue 18.1 against the Octopus simulator: a rollback restores only what the
-- backup's backup.json recorded. A database.bak changed after the backup (and
-- its .sha256 sidecar deleted) is refused by check-backup and by the restore
-- itself; a backup folder copied elsewhere restores from the copy, never from
-- the folder an older manifest's absolute path names.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local sql = require "upkit.sql"
local octofix = require "octofix"

local F = octofix.new { version = "3.17.14" }
local cfg = F:config()
local backup = F.dir .. "/backup"

local function names()
  local out = {}
  for _, r in ipairs(F:sql("SELECT Name FROM Project ORDER BY Id")) do out[#out + 1] = r.Name end
  return out
end

local function copy_backup(to)
  T.sh(string.format("cp -a %s %s", T.q(backup), T.q(to)))
  return to
end

local out, err, code = F:upkit("run backup " .. F:args(cfg))
assert(code == 0, out .. err)
local saved = names()
assert(#saved > 0, "the simulator's database has projects")
local m = json.decode(T.read_file(backup .. "/backup.json"))

T.test("a database.bak changed after the backup, its sidecar deleted, is refused by check-backup", function()
  local bad = copy_backup(F.dir .. "/tampered")
  local conn = "Driver=SQLite3;Database=" .. bad .. "/database.bak"
  octofix.query(conn, "UPDATE Project SET Name = 'tampered'")
  os.remove(bad .. "/database.bak.sha256")
  F:sql("UPDATE Project SET Name = 'changed since the backup'")
  local o, e, c = F:upkit("run rollback --yes " .. F:args(cfg) .. " --set backup_dir=" .. T.q(bad))
  T.eq(c, 1, o .. e)
  T.contains(e, "preflight checks failed; nothing was changed")
  T.contains(T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt"), "CHECKSUM_MISMATCH")
  T.eq(names()[1], "changed since the backup", "nothing was restored")
end)

T.test("the restore itself refuses a file that does not match backup.json's digest", function()
  local U = require "upkit.upgrade"
  local bad = F.dir .. "/tampered/database.bak"
  local target = "Driver=SQLite3;Database=" .. F.dir .. "/restored.db"
  local e = T.raises("CHECKSUM_MISMATCH", U.restore_database, bad, target, { replace = true, sha256 = m.database.sha256 })
  T.contains(e.message, m.database.sha256)
  T.eq(io.open(F.dir .. "/restored.db"), nil, "no database was written")
end)

T.test("a folder manifest changed after the backup (a file and its line rewritten) is refused before any change", function()
  local bad = copy_backup(F.dir .. "/tampered-folders")
  local sums = bad .. "/folders/TaskLogs.SHA256SUMS"
  local first_line = T.read_file(sums):match("^[^\n]*\n")
  local name = first_line:match("^%x+  (.*)\n$")
  T.write_file(bad .. "/folders/TaskLogs/" .. name, "rewritten")
  local fixed = T.sh("cd " .. T.q(bad .. "/folders/TaskLogs") .. " && sha256sum " .. T.q(name))
  T.write_file(sums, fixed .. T.read_file(sums):sub(#first_line + 1))
  local o, e, c = F:upkit("run rollback --yes " .. F:args(cfg) .. " --set backup_dir=" .. T.q(bad))
  T.eq(c, 1, o .. e)
  T.contains(e, "preflight checks failed; nothing was changed")
  T.contains(T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt"), "TaskLogs.SHA256SUMS' has SHA-256")
end)

T.test("a backup folder copied elsewhere restores from the copy (backup.json's paths are relative)", function()
  local copy = copy_backup(F.dir .. "/copy")
  T.eq(json.decode(T.read_file(copy .. "/backup.json")).database.file, "database.bak")
  os.rename(backup, F.dir .. "/original-moved")  -- the original folder is gone
  F:sql("UPDATE Project SET Name = 'changed since the backup'")
  local o, e, c = F:upkit("run rollback --yes " .. F:args(cfg) .. " --set backup_dir=" .. T.q(copy))
  T.eq(c, 0, o .. e)
  T.eq(names(), saved)
  os.rename(F.dir .. "/original-moved", backup)
end)

T.test("an older backup.json with absolute paths outside the copy: the copy's file is used, with a warning", function()
  local copy = copy_backup(F.dir .. "/copy-old")
  local old = json.decode(T.read_file(copy .. "/backup.json"))
  old.database.file = backup .. "/database.bak"  -- the original folder, as manifests used to say
  T.write_file(copy .. "/backup.json", json.encode(old))
  -- by now the original folder holds another database (with its own sidecar)
  F:sql("UPDATE Project SET Name = 'changed since the backup'")
  sql.backup(F.main.connection_string, { to = F.dir .. "/other.bak" })
  T.sh(string.format("cp %s %s && cp %s.sha256 %s.sha256", T.q(F.dir .. "/other.bak"), T.q(backup .. "/database.bak"),
                     T.q(F.dir .. "/other.bak"), T.q(backup .. "/database.bak")))
  local o, e, c = F:upkit("run rollback --yes " .. F:args(cfg) .. " --set backup_dir=" .. T.q(copy))
  T.eq(c, 0, o .. e)
  T.contains(o .. e, "outside the backup folder")
  T.eq(names(), saved)
end)

F:stop()
T.done()
