-- The SQL Server facts of tests/sim/FIDELITY.md section 10, held to: the
-- statements upkit sends have their documented form (the scripted driver
-- refuses any other, and answers RESTORE DATABASE only when it moves every
-- file RESTORE FILELISTONLY lists), upkit reads only the documented result
-- columns, and the error numbers, EngineEdition values, permissions and
-- connection-string keywords it relies on are Microsoft's.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local F = require "fakemssql"
local mssql = sql.mssql
local cs = sql.connstr

local BAK = [[D:\Backups\Octopus.bak]]

local function clean(srv)
  T.eq(srv:refused(), {}, "statements not in their documented form")
  T.eq(srv:unanswered(), {}, "statements the scripted server had no answer for")
end

-- The statements sent that begin with prefix, in order.
local function sent(srv, prefix)
  local out = {}
  for _, s in ipairs(srv:statements()) do
    if s:sub(1, #prefix) == prefix then out[#out + 1] = s end
  end
  return out
end

T.test("a backup, a restore over the database and a test restore send only documented forms", function()
  local srv = F.new(T.tmpdir(), { machine = "SQL01", sysadmin = true })
  srv:path([[D:\Backups]], false, true)
  srv:path(BAK, false, false)
  srv:rule { match = "^BACKUP DATABASE", results = F.progress("BACKUP", "Octopus", 1224) }
  srv:history("Octopus", BAK, 10043392)
  local db <close> = sql.connect(srv:conn())
  sql.backup(db, { to = BAK, database = "Octopus" })
  sql.restore(db, { from = BAK, database = "Octopus", replace = true })
  sql.verify(BAK, { db = db, restore = true, name = "upkit_verify_x" })
  clean(srv)
  -- BACKUP ... WITH CHECKSUM (and COPY_ONLY: the backup does not break the log chain), STATS for progress
  T.eq(sent(srv, "BACKUP"), { "BACKUP DATABASE [Octopus] TO DISK = N'" .. BAK .. "' WITH COPY_ONLY, CHECKSUM, INIT, FORMAT, STATS = 5" })
  -- every backup is read back by the server WITH CHECKSUM
  for _, s in ipairs(sent(srv, "RESTORE VERIFYONLY")) do T.contains(s, " WITH CHECKSUM") end
  T.eq(#sent(srv, "RESTORE VERIFYONLY"), 3)
  -- SINGLE_USER WITH ROLLBACK IMMEDIATE, RESTORE (a MOVE per FILELISTONLY LogicalName), MULTI_USER
  local order = {}
  for _, s in ipairs(srv:statements()) do
    if s:find("^ALTER DATABASE") or s:find("^RESTORE DATABASE") or s:find("^DBCC") or s:find("^DROP") then
      order[#order + 1] = s
    end
  end
  T.eq(order, {
    "ALTER DATABASE [Octopus] SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
    "RESTORE DATABASE [Octopus] FROM DISK = N'" .. BAK .. "' WITH MOVE N'Octopus' TO N'D:\\SQLData\\Octopus.mdf', " ..
      "MOVE N'Octopus_log' TO N'L:\\SQLLogs\\Octopus_log.ldf', CHECKSUM, REPLACE, STATS = 5",
    "ALTER DATABASE [Octopus] SET MULTI_USER",
    "RESTORE DATABASE [upkit_verify_x] FROM DISK = N'" .. BAK .. "' WITH MOVE N'Octopus' TO N'D:\\SQLData\\upkit_verify_x.mdf', " ..
      "MOVE N'Octopus_log' TO N'L:\\SQLLogs\\upkit_verify_x_log.ldf', CHECKSUM, STATS = 5",
    "DBCC CHECKDB ([upkit_verify_x]) WITH NO_INFOMSGS, ALL_ERRORMSGS",
    "DROP DATABASE [upkit_verify_x]",
  })
end)

T.test("the scripted driver refuses a statement that is not in its documented form", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  local db <close> = sql.connect(srv:conn())
  local wrong = {
    "BACKUP DATABASE [Octopus] TO DISK = N'D:\\b.bak' WITH CHECKSUMS",          -- no such option
    "BACKUP DATABASE [Octopus] DISK = N'D:\\b.bak'",                             -- TO missing
    "RESTORE VERIFYONLY DISK = N'D:\\b.bak'",                                    -- FROM missing
    "RESTORE VERIFYONLY FROM DISK = N'D:\\b.bak' WITH REPLACE",                  -- not a VERIFYONLY option
    "RESTORE DATABASE [Octopus] FROM DISK = N'D:\\b.bak' WITH MOVE N'Octopus' N'D:\\o.mdf'",  -- MOVE ... TO
    "ALTER DATABASE [Octopus] SET SINGLE_USER ROLLBACK IMMEDIATE",               -- WITH missing
    "ALTER DATABASE [Octopus] SET SINGLE_USER WITH ROLLBACK NOW",
    "DBCC CHECKDB [Octopus] WITH NO_INFOMSGS",                                   -- the name goes in parentheses
    "DROP DATABASE Octopus; DROP DATABASE [model]",
  }
  for _, stmt in ipairs(wrong) do
    local e = T.raises("SQL_ERROR", db.exec, db, stmt)
    T.eq(e.native, 50001, stmt)
    T.contains(e.message, "not the documented form")
  end
  T.eq(srv:refused(), wrong)
end)

T.test("a RESTORE DATABASE that does not MOVE every file FILELISTONLY lists is not answered", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  local db <close> = sql.connect(srv:conn())
  local moves = mssql.moves(db:query(mssql.filelist_statement(BAK)), "Octopus", [[D:\SQLData\]], [[L:\SQLLogs\]])
  T.eq(#moves, 2)
  -- without MOVE the files would go back to the backup's own paths (C:\Data\...)
  T.raises("SQL_ERROR", db.exec, db, mssql.restore_statement("Octopus", BAK, {}, true))
  -- a MOVE naming a file the backup does not have
  T.raises("SQL_ERROR", db.exec, db, mssql.restore_statement("Octopus", BAK,
    { { "Octopus_data", [[D:\SQLData\Octopus.mdf]] }, moves[2] }, true))
  -- one file left out
  T.raises("SQL_ERROR", db.exec, db, mssql.restore_statement("Octopus", BAK, { moves[1] }, true))
  T.eq(#srv:unanswered(), 3)
  T.eq(srv:refused(), {}, "each is a documented form, just not the right one")
  db:exec(mssql.restore_statement("Octopus", BAK, moves, true))
end)

T.test("upkit reads only RESTORE FILELISTONLY's documented columns: LogicalName, PhysicalName, Type, Size", function()
  local row = {}
  for i, c in ipairs(F.COLUMNS.FILELISTONLY) do row[c[1]] = ({ "Octo", [[C:\x\Octo.mdf]], "D", "PRIMARY", 1048576, 0, 1 })[i] end
  local log = { LogicalName = "Octo_log", PhysicalName = [[C:\x\Octo_log.ldf]], Type = "L", Size = 524288, FileID = 2 }
  local fs = { LogicalName = "Octo_fs", PhysicalName = [[C:\x\Octo_fs]], Type = "S", Size = 0, FileID = 65537 }
  local m = mssql.moves({ row, log, fs }, "New", [[D:\Data]], [[L:\Logs]])
  T.eq(m[1], { "Octo", [[D:\Data\New.mdf]], bytes = 1048576, log = false })
  T.eq(m[2], { "Octo_log", [[L:\Logs\New_log.ldf]], bytes = 524288, log = true })
  -- S: a FILESTREAM, FileTable or In-Memory OLTP container, a folder: no file extension is made up for it
  T.eq(m[3], { "Octo_fs", [[D:\Data\New_fs2]], bytes = 0, log = false })
end)

T.test("every result column mssql.lua reads by name from a RESTORE result set is a documented one", function()
  local documented = { HasBackupChecksums = true }
  for _, set in pairs(F.COLUMNS) do
    for _, c in ipairs(set) do documented[c[1]] = true end
  end
  local f = assert(io.open("lua/upkit/sql/mssql.lua", "r"))
  local src = f:read("a")
  f:close()
  local read = {}
  for name in src:gmatch('field%(%w+, "([^"]+)"%)') do read[#read + 1] = name end
  T.ok(#read >= 7, "mssql.lua reads its RESTORE columns through field()")
  for _, name in ipairs(read) do T.ok(documented[name], name .. " is a documented column of RESTORE FILELISTONLY/HEADERONLY") end
end)

T.test("upkit reads RESTORE HEADERONLY's DatabaseName, BackupFinishDate, BackupSize from the documented set", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true, backup_of = "OctoProd", backup_bytes = 123456 })
  local db <close> = sql.connect(srv:conn())
  local q = db:query(mssql.header_statement(BAK))
  local names = {}
  for i, c in ipairs(q.columns) do names[i] = c.name end
  T.eq(names[10], "DatabaseName")
  T.eq(names[#names], "HasBackupChecksums")
  local r = sql.verify(BAK, { db = db })
  T.eq(r.database, "OctoProd")
  T.eq(r.finished, "2026-11-30T02:00:00")
  clean(srv)
end)

T.test("xp_fileexist is read by position as dbatools' Test-DbaPath does, whatever its columns are named", function()
  local srv = F.new(T.tmpdir(), { machine = "SQL01", sysadmin = true })
  srv:rule { match = [[xp_fileexist N'D:\Backups']], results = { F.rs(
    { { "Datei existiert", "int" }, { "Datei ist ein Verzeichnis", "int" }, { "Uebergeordnetes Verzeichnis existiert", "int" } },
    { { 0, 1, 1 } }) } }
  srv:rule { match = [[xp_fileexist N'D:\Backups\Octopus.bak']], results = { F.rs(
    { { "a", "int" }, { "b", "int" }, { "c", "int" } }, { { 1, 0, 1 } }) } }
  local db <close> = sql.connect(srv:conn())
  local p = mssql.check_path(db, BAK)
  T.eq(p.folder, [[D:\Backups]])
  T.eq(p.exists, true)
  srv:rule({ match = [[xp_fileexist N'D:\Backups\Octopus.bak']], results = { F.rs(
    { { "a", "int" }, { "b", "int" }, { "c", "int" } }, { { 0, 1, 1 } }) } }, true)
  local db2 <close> = sql.connect(srv:conn())  -- the driver reads its script when it connects
  T.raises("EISDIR", mssql.check_path, db2, BAK)
  clean(srv)
end)

T.test("EngineEdition (SERVERPROPERTY): 5, 6, 8 and 11 stop a backup before any change; 2, 3, 4 and 9 do not", function()
  for ee, kind in pairs { [2] = "sqlserver", [3] = "sqlserver", [4] = "sqlserver", [9] = "sqlserver",
                          [5] = "azure_sql_database", [6] = "synapse", [8] = "managed_instance", [11] = "synapse" } do
    local srv = F.new(T.tmpdir(), { sysadmin = true, engine_edition = ee })
    local db <close> = sql.connect(srv:conn())
    T.eq(mssql.platform(db).kind, kind, "EngineEdition " .. ee)
    if kind ~= "sqlserver" then
      T.raises("UNSUPPORTED", sql.backup, db, { to = BAK, database = "Octopus" })
      T.eq(sent(srv, "BACKUP"), {})
    end
  end
end)

T.test("a login that may back up but lacks CREATE DATABASE is stopped before the server writes anything", function()
  local srv = F.new(T.tmpdir(), { sysadmin = false, can_backup = true })
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("PERMISSION_DENIED", sql.backup, db, { to = BAK, database = "Octopus" })
  T.contains(e.message, "RESTORE VERIFYONLY, HEADERONLY and FILELISTONLY need CREATE DATABASE permission")
  T.eq(sent(srv, "BACKUP"), {})
  -- and the scripted server would indeed not let it verify (the pages' Permissions)
  local v = T.raises("PERMISSION_DENIED", db.exec, db, mssql.verify_statement(BAK))
  T.eq(v.native, 262)
end)

T.test("3202 Write on ... failed: 112 is ENOSPC, 3203 Read on ... failed: 5 is PERMISSION_DENIED", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:path([[D:\Backups]], false, true)
  srv:path(BAK, false, false)
  srv:rule { match = "^BACKUP DATABASE", results = { { messages = { F.info("10 percent processed.", 3211) } }, { error = {
    F.err(3202, [[Write on "]] .. BAK .. [[" failed: 112(There is not enough space on the disk.)]]),
    F.err(3013, "BACKUP DATABASE is terminating abnormally.") } } } }
  srv:rule { match = "^RESTORE VERIFYONLY", results = { { error = {
    F.err(3203, [[Read on "]] .. BAK .. [[" failed: 5(Access is denied.)]]),
    F.err(3013, "VERIFY DATABASE is terminating abnormally.") } } } }
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("ENOSPC", sql.backup, db, { to = BAK, database = "Octopus" })
  T.eq(e.native, 3202)
  T.contains(e.message, "not enough space")
  local v = T.raises("PERMISSION_DENIED", sql.verify, BAK, { db = db })
  T.eq(v.native, 3203)
end)

T.test("restoring the database the connection itself uses stops before any change (3102)", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true, database = "Octopus" })
  local db <close> = sql.connect(srv:conn())
  local e = T.raises("BUSY", sql.restore, db, { from = BAK, database = "Octopus", replace = true })
  T.contains(e.message, "connect to master")
  T.eq(sent(srv, "ALTER"), {})
  T.eq(sent(srv, "RESTORE"), {})
end)

T.test("SqlClient synonyms from its DbConnectionStringSynonyms become the ODBC driver's keywords", function()
  local function tail(ado, o)
    o = o or {}
    o.driver = "ODBC Driver 18 for SQL Server"
    return (cs.to_odbc(ado, o):gsub("^Driver=[^;]*;", ""))
  end
  T.eq(tail("connecttimeout=15;workstationid=w1;packetsize=8000;columnEncryption=Enabled"),
       "WSID=w1;ColumnEncryption=Enabled;Encrypt=no")
  local _, extra = cs.to_odbc("ConnectTimeout=15;Packet Size=8000;Transparent Network IP Resolution=False",
                              { driver = "ODBC Driver 18 for SQL Server" })
  T.eq(extra.timeout, 15)
  T.eq(extra.ignored, { "Packet Size", "Transparent Network IP Resolution" })
  T.eq(tail("failoverpartner=sql02", { windows = true }), "Failover_Partner=sql02;Encrypt=no")
  -- the ODBC driver has Failover_Partner on Windows only
  local s, x = cs.to_odbc("Server=a;Failover Partner=sql02", { driver = "ODBC Driver 18 for SQL Server", windows = false })
  T.eq(s, "Driver=ODBC Driver 18 for SQL Server;Server=a;Encrypt=no")
  T.eq(x.ignored, { "Failover Partner" })
end)

T.test("Encrypt=Strict is a Driver 18 value: refused for Driver 17 and the old driver before connecting", function()
  T.eq((cs.to_odbc("Server=a;Encrypt=Strict", { driver = "ODBC Driver 18 for SQL Server" })),
       "Driver=ODBC Driver 18 for SQL Server;Server=a;Encrypt=strict")
  for _, d in ipairs { "ODBC Driver 17 for SQL Server", "SQL Server" } do
    local e = T.raises("UNSUPPORTED", cs.to_odbc, "Server=a;Encrypt=Strict", { driver = d })
    T.contains(e.message, "ODBC Driver 18")
    T.eq((cs.to_odbc("Server=a;Encrypt=Mandatory", { driver = d })), "Driver=" .. d .. ";Server=a;Encrypt=yes")
  end
end)

T.test("the scripted driver takes only the documented Encrypt values, and Strict ignores TrustServerCertificate", function()
  local srv = F.new(T.tmpdir(), { self_signed = true })
  local env = srv:odbcinst { "ODBC Driver 18 for SQL Server", "ODBC Driver 17 for SQL Server" }
  T.write_file(srv.dir .. "/enc.lua", [[
for _, c in ipairs {
  "Driver={ODBC Driver 18 for SQL Server};Server=s;Encrypt=true",
  "Driver={ODBC Driver 17 for SQL Server};Server=s;Encrypt=mandatory",
  "Driver={ODBC Driver 18 for SQL Server};Server=s;Encrypt=strict;TrustServerCertificate=yes",
  "Driver={ODBC Driver 18 for SQL Server};Server=s;Encrypt=mandatory;TrustServerCertificate=yes",
  "Driver={ODBC Driver 17 for SQL Server};Server=s;Encrypt=no",
} do
  local ok, e = pcall(require("upkit.sql").connect, c)
  io.write(ok and "connected" or tostring(e.message):match("documents") and "undocumented"
           or tostring(e.message):match("certificate verify failed") and "certificate" or tostring(e.message), "\n")
  if ok then e:close() end
end
]])
  local out = T.run_upkit(srv.dir, "run enc.lua", { env = env })
  T.contains(out, "undocumented\nundocumented\ncertificate\nconnected\nconnected\n")
end)

T.test("the old driver (SQL Server) says [Microsoft][ODBC SQL Server Driver], and upkit's message drops it", function()
  local srv = F.new(T.tmpdir(), { sysadmin = true })
  srv:rule { match = "^BACKUP DATABASE", results = { { error = {
    F.err(3201, "Cannot open backup device 'D:\\x.bak'. Operating system error 5(Access is denied.)."),
    F.err(3013, "BACKUP DATABASE is terminating abnormally.") } } } }
  local env = srv:odbcinst { "SQL Server" }
  T.write_file(srv.dir .. "/old.lua", [[
local sql = require "upkit.sql"
local db = sql.connect("Driver={SQL Server};Server=s;UID=u;PWD=p")
local ok, e = pcall(db.exec, db, "BACKUP DATABASE [Octopus] TO DISK = N'D:\\x.bak' WITH CHECKSUM")
io.write(e.diagnostics[1].message, "\n")
local ok2, e2 = pcall(sql.mssql.reraise, e, "backup")
io.write(e2.code, " ", e2.message, "\n")
]])
  local out = T.run_upkit(srv.dir, "run old.lua", { env = env })
  T.contains(out, "[Microsoft][ODBC SQL Server Driver][SQL Server]Cannot open backup device")
  T.contains(out, "PERMISSION_DENIED backup: Cannot open backup device")
end)

T.done()
