-- SQL Server backup and restore statements, checked as text against
-- Microsoft's documented syntax. The flows that send them run through
-- unixODBC and the scripted SQL Server driver: tests/sql_mssql_backup.lua,
-- tests/sql_mssql_restore.lua, tests/sql_mssql_connstr.lua.
local T = require "upkit.test"
local sql = require "upkit.sql"
local mssql = sql.mssql

T.test("identifiers are bracket-quoted with ] doubled", function()
  T.eq(mssql.ident("Octopus"), "[Octopus]")
  T.eq(mssql.ident("a]b[c"), "[a]]b[c]")
end)

T.test("file names are N'...' literals with ' doubled", function()
  T.eq(mssql.nstring([[C:\Backups\O'Brien.bak]]), [[N'C:\Backups\O''Brien.bak']])
end)

T.test("BACKUP DATABASE is COPY_ONLY with CHECKSUM, INIT, FORMAT and STATS", function()
  T.eq(mssql.backup_statement("Octopus]Deploy", [[D:\b\o'p.bak]]),
    [==[BACKUP DATABASE [Octopus]]Deploy] TO DISK = N'D:\b\o''p.bak' WITH COPY_ONLY, CHECKSUM, INIT, FORMAT, STATS = 5]==])
end)

T.test("RESTORE VERIFYONLY and FILELISTONLY name the file", function()
  T.eq(mssql.verify_statement([[D:\o.bak]]), [[RESTORE VERIFYONLY FROM DISK = N'D:\o.bak' WITH CHECKSUM]])
  T.eq(mssql.filelist_statement([[D:\o.bak]]), [[RESTORE FILELISTONLY FROM DISK = N'D:\o.bak']])
end)

local filelist = {
  { LogicalName = "Octopus", PhysicalName = [[C:\Data\Octopus.mdf]], Type = "D", Size = "104857600" },
  { LogicalName = "Octopus_2", PhysicalName = [[C:\Data\Octopus_2.ndf]], Type = "D", Size = "1048576" },
  { LogicalName = "Octopus_log", PhysicalName = [[C:\Logs\Octopus_log.ldf]], Type = "L", Size = "52428800" },
}

T.test("RESTORE DATABASE moves each file under the new name into the data and log folders", function()
  local moves = mssql.moves(filelist, "OctoClone", [[E:\SQLData\]], [[F:\SQLLogs]])
  T.eq(moves, {
    { "Octopus", [[E:\SQLData\OctoClone.mdf]], bytes = 104857600, log = false },
    { "Octopus_2", [[E:\SQLData\OctoClone_2.ndf]], bytes = 1048576, log = false },
    { "Octopus_log", [[F:\SQLLogs\OctoClone_log.ldf]], bytes = 52428800, log = true },
  })
  T.eq(mssql.restore_statement("OctoClone", [[D:\o.bak]], moves, false),
    [[RESTORE DATABASE [OctoClone] FROM DISK = N'D:\o.bak' WITH MOVE N'Octopus' TO N'E:\SQLData\OctoClone.mdf', ]] ..
    [[MOVE N'Octopus_2' TO N'E:\SQLData\OctoClone_2.ndf', MOVE N'Octopus_log' TO N'F:\SQLLogs\OctoClone_log.ldf', ]] ..
    [[CHECKSUM, STATS = 5]])
  T.contains(mssql.restore_statement("X", "f", moves, true), "CHECKSUM, REPLACE, STATS = 5")
end)

T.done()
