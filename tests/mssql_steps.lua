-- The procedures' database steps against SQL Server, through unixODBC and
-- the scripted driver: the backup step with a backup file on a remote server
-- that upkit cannot see, and the rollback's restore over the database
-- (upkit.upgrade's restore_database, reached through a driver named in an
-- odbcinst.ini as Microsoft's).
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local F = require "fakemssql"
local U = require "upkit.upgrade"

-- A scripted server SQL01 that backs Octopus up to dir/backup/database.bak
-- (bytes long), a folder and a file upkit cannot see.
local function remote_backup(bytes)
  local dir = T.tmpdir()
  local backup_dir = dir .. "/backup"
  local file = backup_dir .. "/database.bak"
  local srv = F.new(dir, { machine = "SQL01", sysadmin = true, database = "Octopus" })
  srv:path(backup_dir, false, true)
  srv:path(file, false, false)
  srv:rule { match = "^BACKUP DATABASE [Octopus]", results = F.progress("BACKUP", "Octopus", 1224) }
  srv:history("Octopus", file, bytes)
  return srv, backup_dir, file
end

T.test("the backup step handles a backup file on a remote server it cannot see", function()
  local srv, backup_dir, file = remote_backup(10043392)
  srv:rule { match = "INFORMATION_SCHEMA.TABLES", params = '["Project"]',
             results = { F.rs({ { "TABLE_NAME", "text" } }, { { "Project" } }) } }
  srv:rule { match = "INFORMATION_SCHEMA.TABLES", results = { F.rs({ { "TABLE_NAME", "text" } }, {}) } }
  srv:rule { match = "SELECT COUNT(*) AS n FROM Project", results = { F.rs({ { "n", "int" } }, { { 12 } }) } }
  local logs = {}
  local ctx = { params = { db = srv:conn(), backup_dir = backup_dir }, state = {},
                log = function(fmt, ...) logs[#logs + 1] = string.format(fmt, ...) end }
  local out = U.steps.backup_database().run(ctx)
  T.eq(out.database_backup.file, file)
  T.eq(out.database_backup.bytes, 10043392)
  T.eq(out.database_backup.method, "mssql")
  T.eq(out.source_counts, { Project = 12 })
  T.contains(logs[1], "10043392 bytes")
  T.eq(srv:unanswered(), {})
end)

T.test("every bundled procedure's backup step handles a backup file on a remote server it cannot see", function()
  local checked = {}
  for script in io.popen("ls scripts/*.lua"):lines() do
    local desc = dofile(script)
    for _, step in ipairs(type(desc) == "table" and desc.steps or {}) do
      if step.name:find("backup%-database$") then
        local srv, backup_dir, file = remote_backup(4096)
        srv:rule { match = "INFORMATION_SCHEMA.TABLES", results = { F.rs({ { "TABLE_NAME", "text" } }, {}) } }
        local ctx = { params = { db = srv:conn(), backup_dir = backup_dir, upgrade_main = true }, state = {},
                      log = function() end, warn = function() end }
        T.eq(step.done and step.done(ctx) or false, false, script .. ": nothing is done yet")
        local out = step.run(ctx)
        T.eq(out.database_backup.location, "server", script)
        T.eq(out.database_backup.file, file, script)
        T.eq(out.database_backup.sha256, nil, script)
        ctx.state.database_backup = out.database_backup
        T.eq(step.done and step.done(ctx) or false, false, script .. ": a file it cannot read is never taken for done")
        T.eq(srv:unanswered(), {}, script)
        checked[#checked + 1] = script:match("([^/]+)%.lua$")
      end
    end
  end
  table.sort(checked)
  T.eq(checked, { "backup", "clone-instance", "ha-upgrade", "in-place-upgrade", "test-instance" })
end)

T.test("the rollback's restore over the database checks rights, ends the sessions, restores, and puts MULTI_USER back", function()
  local dir = T.tmpdir()
  local srv = F.new(dir, { sysadmin = true })
  local env = srv:odbcinst { "ODBC Driver 17 for SQL Server", "ODBC Driver 18 for SQL Server" }
  T.write_file(dir .. "/restore.lua", [[
local U = require "upkit.upgrade"
local r = U.restore_database([==[D:\Backups\Octopus.bak]==],
  "Driver={ODBC Driver 18 for SQL Server};Server=SQL01;Database=Octopus;UID=octo;PWD=pw;Encrypt=no", { replace = true })
io.write(require("upkit.json").encode({ database = r.database, replaced = r.replaced, method = r.method }))
]])
  local out, err, code = T.run_upkit(dir, "run restore.lua", { env = env })
  T.eq(code, 0, err)
  T.eq(json.decode(out), { database = "Octopus", replaced = true, method = "mssql" })
  local changes = {}
  for _, s in ipairs(srv:statements()) do
    if s:find("^ALTER") or s:find("^RESTORE DATABASE") then changes[#changes + 1] = s:gsub(" FROM DISK.*", "") end
  end
  T.eq(changes, { "ALTER DATABASE [Octopus] SET SINGLE_USER WITH ROLLBACK IMMEDIATE", "RESTORE DATABASE [Octopus]",
                  "ALTER DATABASE [Octopus] SET MULTI_USER" })
  T.eq(srv:events()[1].connection:match("Database=(%w+)"), "master", "restored from the master database")
  T.eq(srv:unanswered(), {})
end)

T.done()
