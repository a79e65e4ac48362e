-- sql.restore and sql.verify on SQL Server, through unixODBC and the
-- scripted SQL Server driver: rights checked first, SINGLE_USER during a
-- restore over a database and MULTI_USER whatever happens, MOVE into the
-- server's default folders with their free space checked, verification on
-- the server (the file need not be visible here), and the Test-DbaLastBackup
-- style test restore.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local F = require "fakemssql"
local mssql = sql.mssql

local BAK = [[D:\Backups\Octopus.bak]]

local function no_unanswered(srv)
  T.eq(srv:unanswered(), {}, "statements the scripted server had no answer for")
end

-- The statements sent, from the first one starting with one of the verbs given.
local function changes(srv)
  local out = {}
  for _, s in ipairs(srv:statements()) do
    local verb = s:match("^(%u+ %u+)")
    if verb == "ALTER DATABASE" or verb == "RESTORE DATABASE" or verb == "DROP DATABASE" or s:find("^DBCC") then
      out[#out + 1] = s:gsub(" FROM DISK.*", ""):gsub(" WITH NO_INFOMSGS.*", "")
    end
  end
  return out
end

T.test("sql.verify of a SQL Server backup without a connection says the server must read it (EINVAL)", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/database.bak", "TAPE\0\0\0\0")
  local e = T.raises("EINVAL", sql.verify, dir .. "/database.bak")
  T.contains(e.message, "RESTORE VERIFYONLY runs on the server, so pass { db = connection }")
end)

T.test("sql.verify with the connection verifies a file only the server sees, and reads its header", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  local db <close> = sql.connect(srv:conn())
  local r = sql.verify(BAK, { db = db })
  T.eq(r.method, "mssql")
  T.eq(r.database, "Octopus")
  T.eq(r.bytes, 10043392)
  T.eq(r.verified, { "CHECKSUM", "RESTORE VERIFYONLY" })
  T.eq(srv:statements(), { mssql.verify_statement(BAK), mssql.header_statement(BAK) })
end)

T.test("on a SQL Server connection a logical backup file readable here is still verified as logical", function()
  local dir = T.tmpdir()
  local src <close> = sql.connect(require("odbc.drivers").sqlite_conn(dir .. "/src.db"))
  src:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
  src:exec("INSERT INTO t VALUES (1, 'a')")
  sql.backup(src, { to = dir .. "/logical.upk", method = "logical" })
  local srv = F.new(dir, { sysadmin = true })
  local db <close> = sql.connect(srv:conn())
  T.eq(sql.verify(dir .. "/logical.upk", { db = db }).method, "logical")
  T.eq(srv:statements(), {}, "the server was not asked")
end)

T.test("a damaged backup fails verification with BAD_FORMAT and SQL Server's number", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:rule { match = "^RESTORE VERIFYONLY", results = { { error = {
    F.err(3189, "Damage to the backup set was detected."),
    F.err(3013, "VERIFY DATABASE is terminating abnormally.") } } } }
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("BAD_FORMAT", sql.verify, BAK, { db = db })
  T.eq(e.native, 3189)
end)

T.test("restore under a new name: rights, VERIFYONLY, FILELISTONLY, space, then MOVE into the default folders", function()
  local srv = F.new(T.tmpdir(), { sysadmin = false, dbcreator = true })
  local db <close> = sql.connect(srv:conn())
  local r = sql.restore(db, { from = BAK, database = "OctoClone" })
  T.eq(r.method, "mssql")
  T.eq(r.replaced, false)
  T.eq(r.moves[1][2], [[D:\SQLData\OctoClone.mdf]])
  T.eq(r.moves[2][2], [[L:\SQLLogs\OctoClone_log.ldf]])
  T.eq(r.space.checked, true)
  T.eq(r.space.folders[ [[D:\SQLData]] ].need, 104857600)
  T.eq(r.space.folders[ [[L:\SQLLogs]] ].volume, [[L:\]])
  local st = srv:statements()
  T.eq(st[#st], "RESTORE DATABASE [OctoClone] FROM DISK = N'D:\\Backups\\Octopus.bak' WITH MOVE N'Octopus' TO " ..
    "N'D:\\SQLData\\OctoClone.mdf', MOVE N'Octopus_log' TO N'L:\\SQLLogs\\OctoClone_log.ldf', CHECKSUM, STATS = 5")
  T.eq(changes(srv), { "RESTORE DATABASE [OctoClone]" })
  no_unanswered(srv)
end)

T.test("restore over an existing database: SINGLE_USER WITH ROLLBACK IMMEDIATE, RESTORE ... REPLACE, MULTI_USER", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  local db <close> = sql.connect(srv:conn())
  T.raises("NOT_EMPTY", sql.restore, db, { from = BAK, database = "Octopus" })
  local r = sql.restore(db, { from = BAK, database = "Octopus", replace = true })
  T.eq(r.replaced, true)
  T.eq(changes(srv), { "ALTER DATABASE [Octopus] SET SINGLE_USER WITH ROLLBACK IMMEDIATE", "RESTORE DATABASE [Octopus]",
                       "ALTER DATABASE [Octopus] SET MULTI_USER" })
  T.contains(srv:statements()[#srv:statements() - 1], "CHECKSUM, REPLACE, STATS = 5")
  no_unanswered(srv)
end)

T.test("a restore that fails still puts the database back to MULTI_USER, and the server's error is kept", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:rule { match = "^RESTORE DATABASE", results = { { messages = { F.info("10 percent processed.", 3211) } }, { error = {
    F.err(3101, "Exclusive access could not be obtained because the database is in use."),
    F.err(3013, "RESTORE DATABASE is terminating abnormally.") } } } }
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("BUSY", sql.restore, db, { from = BAK, database = "Octopus", replace = true })
  T.eq(e.native, 3101)
  T.eq(changes(srv), { "ALTER DATABASE [Octopus] SET SINGLE_USER WITH ROLLBACK IMMEDIATE", "RESTORE DATABASE [Octopus]",
                       "ALTER DATABASE [Octopus] SET MULTI_USER" })
end)

T.test("a login with db_owner only may not restore over the database: PERMISSION_DENIED before any change", function()
  local srv = F.new(T.tmpdir(), { login = "octo", sysadmin = false, dbcreator = false, can_backup = true })
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("PERMISSION_DENIED", sql.restore, db, { from = BAK, database = "Octopus", replace = true })
  T.contains(e.message, "login 'octo' may not restore over [Octopus]")
  T.contains(e.message, "sysadmin or dbcreator")
  T.contains(e.message, "db_owner is not enough")
  T.eq(changes(srv), {})
  no_unanswered(srv)
end)

T.test("the database's owner (dbo) may restore over it", function()
  local srv = F.new(T.tmpdir(), { login = "octo", owner_of = { Octopus = true }, create_database = true })
  local db <close> = sql.connect(srv:conn())
  T.eq(sql.restore(db, { from = BAK, database = "Octopus", replace = true }).replaced, true)
end)

T.test("a login without CREATE DATABASE may not restore under a new name", function()
  local srv = F.new(T.tmpdir(), { login = "reader" })
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("PERMISSION_DENIED", sql.restore, db, { from = BAK, database = "OctoClone" })
  T.contains(e.message, "CREATE DATABASE permission (CREATE ANY DATABASE")
  T.eq(changes(srv), {})
end)

T.test("not enough free space in the default data folder stops the restore before any change (ENOSPC)", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true, volumes = { { [[D:\]], 50e6, 0 }, { [[L:\]], 200e9, 0 } } })
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("ENOSPC", sql.restore, db, { from = BAK, database = "OctoClone" })
  T.contains(e.message, [['D:\SQLData' (volume D:\) has 50 MB free; the restore needs 104 MB]])
  T.eq(changes(srv), {})
end)

T.test("the space the replaced database's files hold counts as free", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true, volumes = { { [[D:\]], 50e6, 80e6 }, { [[L:\]], 200e9, 0 } } })
  local db <close> = sql.connect(srv:conn())
  local r = sql.restore(db, { from = BAK, database = "Octopus", replace = true })
  T.eq(r.space.folders[ [[D:\SQLData]] ].free, 130000000)
end)

T.test("without VIEW SERVER STATE the restore goes on and says the space was not checked", function()
  local srv = F.new(T.tmpdir(), { sysadmin = false, dbcreator = true })
  srv:rule { match = "sys.dm_os_volume_stats", results = { { error = {
    F.err(300, "VIEW SERVER STATE permission was denied on object 'server', database 'master'."),
    F.err(297, "The user does not have permission to perform this action.") } } } }
  local db <close> = sql.connect(srv:conn())
  local r = sql.restore(db, { from = BAK, database = "OctoClone" })
  T.eq(r.space.checked, false)
  T.contains(r.space.reason, "VIEW SERVER STATE")
end)

T.test("data_dir and log_dir replace the server's default folders", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true, volumes = { { "/var/opt/mssql/", 10e9, 0 } } })
  local db <close> = sql.connect(srv:conn())
  local r = sql.restore(db, { from = BAK, database = "OctoClone", data_dir = "/var/opt/mssql/data", log_dir = "/var/opt/mssql/log" })
  T.eq(r.moves[1][2], "/var/opt/mssql/data/OctoClone.mdf")
  T.eq(r.space.folders["/var/opt/mssql/log"].volume, "/var/opt/mssql/")
  T.ok(not srv:sent("InstanceDefaultDataPath"))
end)

for _, p in ipairs { { "Azure SQL Database", { engine_edition = 5 } }, { "Managed Instance", { engine_edition = 8 } },
                     { "Amazon RDS", { rds = true } } } do
  T.test(p[1] .. ": sql.restore stops before any change with what to do instead", function()
    p[2].sysadmin = true
    local srv = F.new(T.tmpdir(), p[2])
    local db <close> = sql.connect(srv:conn())
    local e = T.raises("UNSUPPORTED", sql.restore, db, { from = BAK, database = "Octopus", replace = true })
    T.contains(e.message, "sql.restore: the server SQL01 is")
    T.eq(srv:statements(), { mssql.platform_query })
  end)
end

T.test("verify with restore = true restores under a throw-away name, runs DBCC CHECKDB and drops it", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  local db <close> = sql.connect(srv:conn())
  local r = sql.verify(BAK, { db = db, restore = true, name = "upkit_verify_test" })
  T.eq(r.tested, { name = "upkit_verify_test", checkdb = "clean", dropped = true })
  T.eq(r.verified, { "CHECKSUM", "RESTORE VERIFYONLY", "restore + DBCC CHECKDB" })
  T.eq(changes(srv), { "RESTORE DATABASE [upkit_verify_test]", "DBCC CHECKDB ([upkit_verify_test])",
                       "DROP DATABASE [upkit_verify_test]" })
  T.contains(srv:statements()[#srv:statements() - 2], "MOVE N'Octopus' TO N'D:\\SQLData\\upkit_verify_test.mdf'")
  no_unanswered(srv)
end)

T.test("verify with restore = true: a consistency error is BAD_FORMAT and the copy is dropped all the same", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:rule { match = "^DBCC CHECKDB", results = { { error = {
    F.err(8928, "Object ID 1977058079, index ID 1, partition ID 72057594048086016, alloc unit ID 72057594054443008 " ..
      "(type In-row data): Page (1:296) could not be processed.  See other errors for details.", "42000"),
    F.err(8989, "CHECKDB found 0 allocation errors and 1 consistency errors in database 'upkit_verify_x'.") } } } }
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("BAD_FORMAT", sql.verify, BAK, { db = db, restore = true, name = "upkit_verify_x" })
  T.eq(e.native, 8928)
  T.ok(srv:sent("DROP DATABASE [upkit_verify_x]"))
end)

T.test("sql.backup with test = true also test-restores the new backup", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:path([[D:\Backups]], false, true)
  srv:path(BAK, false, false)
  srv:rule { match = "^BACKUP DATABASE", results = F.progress("BACKUP", "Octopus", 1224) }
  srv:history("Octopus", BAK, 10043392)
  local db <close> = sql.connect(srv:conn())
  local r = sql.backup(db, { to = BAK, database = "Octopus", test = true })
  T.eq(r.verified, { "CHECKSUM", "RESTORE VERIFYONLY", "restore + DBCC CHECKDB" })
  T.eq(r.tested.checkdb, "clean")
  T.ok(srv:sent("DROP DATABASE [upkit_verify_Octopus_"))
  no_unanswered(srv)
end)

T.done()
