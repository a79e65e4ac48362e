-- The backup and rollback procedures with the Octopus database on a remote
-- SQL Server (issue 13): the database parameter `db` is the scripted ODBC
-- driver (tests/lib/fakemssql.lua), which answers every statement the
-- procedures send as SQL Server would and fails the test on any other; the
-- rest of the server is the Octopus simulator. The backup file is written by
-- the database server on its own disk (db_backup_dir), which upkit cannot see.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local octofix = require "octofix"
local FM = require "fakemssql"

local F = octofix.new { version = "3.17.14" }
local cfg = F:config()
local backup = F.dir .. "/backup"
local server_dir, server_file = [[D:\Backups]], [[D:\Backups\database.bak]]

local srv = FM.new(F.dir, { machine = "SQL01", sysadmin = true, database = "Octopus" })
srv:path(server_dir, false, true)
srv:path(server_file, false, false)
srv:rule { match = "^BACKUP DATABASE [Octopus]", results = FM.progress("BACKUP", "Octopus", 1224) }
srv:history("Octopus", server_file, 10043392)
srv:rule { match = "OctopusServerInstallationHistory", results = { FM.rs({ { "Version", "text" } }, { { "3.17.14" } }) } }
srv:rule { match = "INFORMATION_SCHEMA.TABLES", params = '["Project"]',
           results = { FM.rs({ { "TABLE_NAME", "text" } }, { { "Project" } }) } }
srv:rule { match = "INFORMATION_SCHEMA.TABLES", results = { FM.rs({ { "TABLE_NAME", "text" } }, {}) } }
srv:rule { match = "SELECT COUNT(*) AS n FROM Project", results = { FM.rs({ { "n", "int" } }, { { 12 } }) } }

local db_arg = " --set db=" .. T.q(srv:conn())
local db_args = db_arg .. " --set db_backup_dir=" .. T.q(server_dir)

T.test("backup with the database on a remote SQL Server: the manifest says where the file is and how it was verified", function()
  local out, err, code = F:upkit("run backup " .. F:args(cfg) .. db_args)
  T.eq(code, 0, out .. err .. json.encode(srv:unanswered()))
  T.eq(srv:unanswered(), {})
  local m = json.decode(T.read_file(backup .. "/backup.json"))
  T.eq(m.database.file, server_file, "the server's own path")
  T.eq(m.database.location, "server")
  T.eq(m.database.machine, "SQL01")
  T.eq(m.database.method, "mssql")
  T.eq(m.database.sha256, nil, "no digest of a file upkit cannot read")
  T.contains(m.database.digest, "none: the file is on SQL01")
  T.eq(m.database.verified, { "CHECKSUM", "RESTORE VERIFYONLY" })
  T.eq(m.database.bytes, 10043392)
  T.eq(m.counts, { Project = 12 })
  T.contains(out, "no digest: the file is not readable here")
  T.ok(srv:sent("xp_fileexist N'D:\\Backups'"), "preflight asked the server whether it sees the folder")
end)

T.test("rollback from the SQL Server backup runs to the end: verified and restored by the server through master", function()
  local first, first_event = #srv:statements(), #srv:events()
  local out, err, code = F:upkit("run rollback --yes " .. F:args(cfg) .. db_arg)
  T.eq(code, 0, out .. err .. json.encode(srv:unanswered()))
  T.contains(out, "Result: success")
  T.eq(srv:unanswered(), {})
  local sent = {}
  for i, s in ipairs(srv:statements()) do
    if i > first and (s:find("^RESTORE") or s:find("^ALTER")) then sent[#sent + 1] = s:match("^(%u+ %u+)") end
  end
  -- check-backup: the server verifies the file; restore-database: verified again, then SINGLE_USER, RESTORE, MULTI_USER
  T.eq(sent, { "RESTORE VERIFYONLY", "RESTORE HEADERONLY", "RESTORE VERIFYONLY", "RESTORE FILELISTONLY", "ALTER DATABASE",
               "RESTORE DATABASE", "ALTER DATABASE" })
  local conn  -- the driver logs the connection string at connect; statements follow on that connection
  for i, e in ipairs(srv:events()) do
    if i <= first_event then e = {} end
    if e.event == "connect" then conn = e.connection end
    if e.event == "exec" and e.sql:find("^RESTORE") then
      T.eq(conn:match("Database=(%w+)"), "master", "verified and restored through master: " .. e.sql)
    end
  end
  T.eq(F:api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
end)

T.test("db_backup_visible_as: the server's file seen through a share is hashed, and check-backup compares it", function()
  local share, b2 = F.dir .. "/share", F.dir .. "/backup-share"
  os.execute("mkdir -p " .. T.q(share))
  T.write_file(share .. "/database.bak", "TAPE as the server wrote it")  -- what the share shows of the server's file
  local out, err, code = F:upkit("run backup " .. F:args(cfg) .. db_args .. " --set backup_dir=" .. T.q(b2) ..
                                 " --set db_backup_visible_as=" .. T.q(share) .. " --set test_restore=true")
  T.eq(code, 0, out .. err .. json.encode(srv:unanswered()))
  local m = json.decode(T.read_file(b2 .. "/backup.json"))
  T.eq(m.database.location, "server")
  T.eq(m.database.sha256, require("upkit.hash").file("sha256", share .. "/database.bak"))
  T.eq(m.database.digest, "sha256:" .. m.database.sha256)
  T.eq(m.database.tested, true, "test_restore: restored under another name, DBCC CHECKDB, dropped")
  T.ok(srv:sent("DBCC CHECKDB"), "DBCC CHECKDB ran")
  T.eq(srv:unanswered(), {})
  -- the share's file changes after the backup: the rollback refuses it before any change
  T.write_file(share .. "/database.bak", "TAPE changed since")
  local _, e2, c2 = F:upkit("run rollback --yes " .. F:args(cfg) .. db_arg .. " --set backup_dir=" .. T.q(b2))
  T.eq(c2, 1)
  T.contains(e2, "preflight checks failed; nothing was changed")
  T.contains(T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt"), "CHECKSUM_MISMATCH")
end)

T.test("a login that may not restore over the database stops the rollback before any change", function()
  os.execute("mkdir -p " .. T.q(F.dir .. "/weak"))
  local weak = FM.new(F.dir .. "/weak", { machine = "SQL01", sysadmin = false, can_backup = true, database = "Octopus" })
  local _, err, code = F:upkit("run rollback --yes " .. F:args(cfg) .. " --set db=" .. T.q(weak:conn()))
  T.eq(code, 1)
  T.contains(err, "preflight checks failed; nothing was changed")
  T.contains(T.sh("cat " .. T.q(F.dir) .. "/runs/*/log.txt"), "PERMISSION_DENIED")
  T.eq(weak:sent("RESTORE DATABASE"), false)
end)

F:stop()
T.done()
