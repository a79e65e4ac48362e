-- sql.backup on SQL Server, through unixODBC and the scripted SQL Server
-- driver (tests/lib/fakemssql.lua): an on-premises server on this machine, a
-- remote one whose folder upkit cannot see, a login lacking rights, a folder
-- the service account cannot see, Azure SQL Database, Managed Instance, RDS.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local F = require "fakemssql"
local mssql = sql.mssql

local function no_unanswered(srv)
  T.eq(srv:unanswered(), {}, "statements the scripted server had no answer for")
end

local function backups_sent(srv)
  local n = 0
  for _, s in ipairs(srv:statements()) do
    if s:find("^BACKUP") then n = n + 1 end
  end
  return n
end

T.test("on a server on this machine the backup is written beside, verified, hashed and renamed into place", function()
  local dir = T.tmpdir()
  local to = dir .. "/database.bak"
  local srv = F.new(dir, { machine = mssql.hostname(), sysadmin = true })
  srv:rule { match = "^BACKUP DATABASE", writes = { path = to .. ".partial", bytes = 8192 },
             results = F.progress("BACKUP", "Octopus", 1224) }
  srv:history("Octopus", to .. ".partial", 8192)
  local db <close> = sql.connect(srv:conn())
  local seen = {}
  local r = sql.backup(db, { to = to, database = "Octopus", progress = function(p) seen[#seen + 1] = p.percent end })
  T.eq(r.method, "mssql")
  T.eq(r.location, "local")
  T.eq(r.reachable, true)
  T.eq(r.bytes, 8192)
  T.eq(r.sha256, require("upkit.hash").file("sha256", to))
  T.eq(r.digest, "sha256:" .. r.sha256)
  T.eq(r.verified, { "CHECKSUM", "RESTORE VERIFYONLY", "sha256" })
  T.eq(r.machine, mssql.hostname())
  T.eq(seen, { 10, 40, 70, 100 })
  T.ok(not io.open(to .. ".partial"), "the temporary file is gone")
  T.ok(srv:sent("BACKUP DATABASE [Octopus] TO DISK = N'" .. to .. ".partial' WITH COPY_ONLY, CHECKSUM, INIT, FORMAT, STATS = 5"))
  T.ok(srv:sent("RESTORE VERIFYONLY FROM DISK = N'" .. to .. ".partial' WITH CHECKSUM"))
  T.ok(not srv:sent("xp_fileexist"), "a folder visible here needs no question to the server")
  no_unanswered(srv)
end)

T.test("on a remote server the result says where the file is, on which machine, and how it was verified", function()
  local dir = T.tmpdir()
  local to = [[D:\Backups\Octopus.bak]]
  local srv = F.new(dir, { machine = "SQL01", sysadmin = true })
  srv:path([[D:\Backups]], false, true)
  srv:path(to, false, false)
  srv:rule { match = "^BACKUP DATABASE", results = F.progress("BACKUP", "Octopus", 1224) }
  srv:history("Octopus", to, 10043392)
  local db <close> = sql.connect(srv:conn())
  local r = sql.backup(db, { to = to, database = "Octopus" })
  T.eq(r.file, to)
  T.eq(r.machine, "SQL01")
  T.eq(r.location, "server")
  T.eq(r.reachable, false)
  T.eq(r.bytes, 10043392)
  T.eq(r.sha256, nil)
  T.eq(r.finished, "2026-11-30T02:00:00")
  T.eq(r.size_from, "msdb.dbo.backupset")
  T.eq(r.verified, { "CHECKSUM", "RESTORE VERIFYONLY" })
  T.contains(r.digest, "none: the file is on SQL01")
  -- what a procedure logs can always be formatted
  T.contains(string.format("%s (%d bytes) %s", r.file, r.bytes, r.digest), "10043392 bytes")
  T.contains(r.summary, [[D:\Backups\Octopus.bak on SQL01 (10043392 bytes, CHECKSUM, RESTORE VERIFYONLY]])
  no_unanswered(srv)
end)

T.test("a login that may not read msdb takes the backup's size and time from RESTORE HEADERONLY", function()
  local to = [[D:\Backups\Octopus.bak]]
  local srv = F.new(T.tmpdir(), { sysadmin = false, can_backup = true, create_database = true, backup_bytes = 7340032 })
  srv:rule { match = "^BACKUP DATABASE", results = F.progress("BACKUP", "Octopus", 896) }
  srv:rule { match = "msdb.dbo.backupset", results = { { error = {
    F.err(229, "The SELECT permission was denied on the object 'backupset', database 'msdb', schema 'dbo'.") } } } }
  local db <close> = sql.connect(srv:conn())
  local r = sql.backup(db, { to = to, database = "Octopus" })
  T.eq(r.bytes, 7340032)
  T.eq(r.finished, "2026-11-30T02:00:00")
  T.contains(r.size_from, "RESTORE HEADERONLY (msdb.dbo.backupset is not readable")
  no_unanswered(srv)
end)

T.test("BACKUP DATABASE permission denied (262) from the server is PERMISSION_DENIED", function()
  local to = [[D:\Backups\Octopus.bak]]
  local srv = F.new(T.tmpdir(), { sysadmin = false, can_backup = true, create_database = true })
  srv:rule { match = "^BACKUP DATABASE", results = { { error = {
    F.err(262, "BACKUP DATABASE permission denied in database 'Octopus'."),
    F.err(3013, "BACKUP DATABASE is terminating abnormally.") } } } }
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("PERMISSION_DENIED", sql.backup, db, { to = to, database = "Octopus" })
  T.eq(e.native, 262)
  T.contains(e.message, "BACKUP DATABASE permission denied in database 'Octopus'.")
end)

T.test("a remote backup is hashed when upkit sees the server's file through visible_as", function()
  local dir = T.tmpdir()
  local to = [[\\SQL01\Backups\Octopus.bak]]
  local share = dir .. "/share-Octopus.bak"
  local srv = F.new(dir, { machine = "SQL01", sysadmin = true })
  srv:path([[\\SQL01\Backups]], false, true)
  srv:path(to, true, false)
  srv:rule { match = "^BACKUP DATABASE", writes = { path = share, bytes = 5000 }, results = F.progress("BACKUP", "Octopus", 10) }
  srv:history("Octopus", to, 5000)
  local db <close> = sql.connect(srv:conn())
  local r = sql.backup(db, { to = to, database = "Octopus", visible_as = share })
  T.eq(r.location, "server")
  T.eq(r.reachable, true)
  T.eq(r.bytes, 5000)
  T.eq(r.sha256, require("upkit.hash").file("sha256", share))
  no_unanswered(srv)
end)

T.test("a login without BACKUP DATABASE rights is stopped before the server writes anything", function()
  local dir = T.tmpdir()
  local srv = F.new(dir, { login = "octo", sysadmin = false, can_backup = false })
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("PERMISSION_DENIED", sql.backup, db, { to = [[D:\Backups\o.bak]], database = "Octopus" })
  T.contains(e.message, "login 'octo' may not back up [Octopus]")
  T.contains(e.message, "db_backupoperator")
  T.eq(backups_sent(srv), 0)
  no_unanswered(srv)
end)

T.test("a database the server does not have is NOT_FOUND before any backup", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  local db <close> = sql.connect(srv:conn())
  T.raises("NOT_FOUND", sql.backup, db, { to = [[D:\Backups\o.bak]], database = "Nope" })
  T.eq(backups_sent(srv), 0)
end)

T.test("a folder the service account cannot see stops the backup (xp_fileexist, as Test-DbaPath) and names the account", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true, service_account = [[NT Service\MSSQL$SQLEXPRESS]] })
  srv:path([[E:\Nowhere]], false, false, false)
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("NOT_FOUND", sql.backup, db, { to = [[E:\Nowhere\o.bak]], database = "Octopus" })
  T.contains(e.message, [[NT Service\MSSQL$SQLEXPRESS on SQL01 cannot see the folder 'E:\Nowhere']])
  T.eq(backups_sent(srv), 0)
  no_unanswered(srv)
end)

T.test("a backup path that is a folder on the server is EISDIR", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:path([[D:\Backups]], false, true)
  srv:path([[D:\Backups\Octopus.bak]], false, true)
  local db <close> = sql.connect(srv:conn())
  T.raises("EISDIR", sql.backup, db, { to = [[D:\Backups\Octopus.bak]], database = "Octopus" })
  T.eq(backups_sent(srv), 0)
end)

T.test("Cannot open backup device with operating system error 5 is PERMISSION_DENIED, with SQL Server's numbers kept", function()
  local to = [[D:\Backups\Octopus.bak]]
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:path([[D:\Backups]], false, true)
  srv:path(to, false, false)
  srv:rule { match = "^BACKUP DATABASE", results = { { error = {
    F.err(3201, "Cannot open backup device '" .. to .. "'. Operating system error 5(Access is denied.)."),
    F.err(3013, "BACKUP DATABASE is terminating abnormally.") } } } }
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("PERMISSION_DENIED", sql.backup, db, { to = to, database = "Octopus" })
  T.eq(e.native, 3201)
  T.eq(e.sqlstate, "42000")
  T.eq(#e.diagnostics, 2)
  T.eq(e.diagnostics[2].native, 3013)
  T.contains(e.message, "Operating system error 5(Access is denied.)")
  T.contains(e.message, "on SQL01")
  T.ok(not srv:sent("RESTORE VERIFYONLY"))
end)

T.test("Cannot open backup device with operating system error 3 (no such folder) is NOT_FOUND", function()
  local to = [[D:\Gone\Octopus.bak]]
  local srv = F.new(T.tmpdir(), { sysadmin = false, can_backup = true, create_database = true })  -- xp_fileexist cannot tell: the backup says
  srv:rule { match = "^BACKUP DATABASE", results = { { error = {
    F.err(3201, "Cannot open backup device '" .. to .. "'. Operating system error 3(The system cannot find the path specified.)."),
    F.err(3013, "BACKUP DATABASE is terminating abnormally.") } } } }
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("NOT_FOUND", sql.backup, db, { to = to, database = "Octopus" })
  T.eq(e.native, 3201)
  T.ok(not srv:sent("xp_fileexist"), "xp_fileexist is not asked for a login that is not sysadmin")
  no_unanswered(srv)
end)

local platforms = {
  { name = "Azure SQL Database", o = { engine_edition = 5, edition = "SQL Azure", version = "12.0.2000.8" },
    says = { "Azure SQL Database", "method = \"logical\"", "point-in-time restore" } },
  { name = "Azure SQL Managed Instance", o = { engine_edition = 8, edition = "SQL Azure", version = "12.0.2000.8" },
    says = { "Azure SQL Managed Instance", "TO URL", "COPY_ONLY" } },
  { name = "Amazon RDS", o = { rds = true, edition = "Standard Edition (64-bit)", version = "15.0.4236.7" },
    says = { "Amazon RDS for SQL Server", "rds_backup_database", "snapshot" } },
}

for _, p in ipairs(platforms) do
  T.test(p.name .. ": sql.backup stops before any change and says what to do instead", function()
    p.o.sysadmin = true
    local srv = F.new(T.tmpdir(), p.o)
    local db <close> = sql.connect(srv:conn())
    local e = T.raises("UNSUPPORTED", sql.backup, db, { to = [[D:\b\o.bak]], database = "Octopus" })
    for _, s in ipairs(p.says) do T.contains(e.message, s) end
    T.eq(srv:statements(), { mssql.platform_query }, "only the platform was asked")
    local e2 = T.raises("UNSUPPORTED", mssql.preflight, db, { database = "Octopus", to = [[D:\b\o.bak]] })
    T.eq(e2.platform, mssql.platform(db).kind)
  end)
end

T.test("mssql.platform names the kind of server", function()
  local kinds = {}
  for _, o in ipairs { {}, { engine_edition = 5 }, { engine_edition = 8 }, { rds = true } } do
    local srv = F.new(T.tmpdir(), o)
    local db <close> = sql.connect(srv:conn())
    kinds[#kinds + 1] = mssql.platform(db).kind
  end
  T.eq(kinds, { "sqlserver", "azure_sql_database", "managed_instance", "rds" })
end)

T.test("mssql.preflight checks platform, rights and path without changing anything", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true, version = "16.0.1000.6" })
  srv:path([[D:\Backups]], false, true)
  srv:path([[D:\Backups\o.bak]], true, false)
  local db <close> = sql.connect(srv:conn())
  local r = mssql.preflight(db, { database = "Octopus", to = [[D:\Backups\o.bak]], restore = true })
  T.eq(r.platform.kind, "sqlserver")
  T.eq(r.platform.major, 16)
  T.eq(r.rights.sysadmin, true)
  T.eq(r.path.folder, [[D:\Backups]])
  T.eq(r.path.exists, true)
  T.eq(r.path.checked, true)
  for _, s in ipairs(srv:statements()) do
    T.ok(not (s:find("^BACKUP") or s:find("^RESTORE") or s:find("^ALTER")), "preflight changed nothing: " .. s)
  end
  no_unanswered(srv)
end)

T.test("the password never reaches an error, the connection's label or the driver's log", function()
  local srv = F.new(T.tmpdir(), { sysadmin = false, can_backup = false })
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("PERMISSION_DENIED", sql.backup, db, { to = [[D:\b\o.bak]], database = "Octopus" })
  T.ok(not tostring(e):find("s3cr", 1, true))
  T.ok(not tostring(db):find("s3cr", 1, true))
  T.ok(not T.read_file(srv.log_path):find("s3cr", 1, true))
  T.contains(T.read_file(srv.log_path), "UID=octo")
end)

T.done()
