-- SQL Server backup and restore: no server can run here, so the generated
-- T-SQL is checked as text against Microsoft's documented syntax, and the
-- flow is driven through a stand-in connection that records statements.
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
  { LogicalName = "Octopus", PhysicalName = [[C:\Data\Octopus.mdf]], Type = "D" },
  { LogicalName = "Octopus_2", PhysicalName = [[C:\Data\Octopus_2.ndf]], Type = "D" },
  { LogicalName = "Octopus_log", PhysicalName = [[C:\Logs\Octopus_log.ldf]], Type = "L" },
}

T.test("RESTORE DATABASE moves each file under the new name into the data and log folders", function()
  local moves = mssql.moves(filelist, "OctoClone", [[E:\SQLData\]], [[F:\SQLLogs]])
  T.eq(moves, {
    { "Octopus", [[E:\SQLData\OctoClone.mdf]] },
    { "Octopus_2", [[E:\SQLData\OctoClone_2.ndf]] },
    { "Octopus_log", [[F:\SQLLogs\OctoClone_log.ldf]] },
  })
  T.eq(mssql.restore_statement("OctoClone", [[D:\o.bak]], moves, false),
    [[RESTORE DATABASE [OctoClone] FROM DISK = N'D:\o.bak' WITH MOVE N'Octopus' TO N'E:\SQLData\OctoClone.mdf', ]] ..
    [[MOVE N'Octopus_2' TO N'E:\SQLData\OctoClone_2.ndf', MOVE N'Octopus_log' TO N'F:\SQLLogs\OctoClone_log.ldf', ]] ..
    [[CHECKSUM, STATS = 5]])
  T.contains(mssql.restore_statement("X", "f", moves, true), "CHECKSUM, REPLACE, STATS = 5")
end)

-- A stand-in connection: says it is SQL Server and records what it runs.
local function fake(exists)
  local db = { ran = {}, handler = nil }
  function db:info() return { dbms = "Microsoft SQL Server", database = "Octopus" } end
  function db:exec(s)
    self.ran[#self.ran + 1] = s
    if self.handler and s:match("^BACKUP") then self.handler("10 percent processed.") self.handler("100 percent processed.") end
    return 0
  end
  function db:on_message(fn) self.handler = fn end
  function db:first(s)
    self.ran[#self.ran + 1] = s
    if s:find("DB_ID", 1, true) then return { id = exists and 5 or sql.null } end
    return { data_dir = [[C:\Data\]], log_dir = [[C:\Logs\]] }
  end
  function db:query(s)
    self.ran[#self.ran + 1] = s
    return filelist
  end
  return db
end

T.test("sql.backup on SQL Server runs BACKUP then VERIFYONLY and reports percent progress", function()
  local db = fake()
  local seen = {}
  local r = sql.backup(db, { to = [[\\server\share\o.bak]], progress = function(p) seen[#seen + 1] = p.percent end })
  T.eq(r.method, "mssql")
  T.eq(db.ran[1], [[BACKUP DATABASE [Octopus] TO DISK = N'\\server\share\o.bak' WITH COPY_ONLY, CHECKSUM, INIT, FORMAT, STATS = 5]])
  T.eq(db.ran[2], [[RESTORE VERIFYONLY FROM DISK = N'\\server\share\o.bak' WITH CHECKSUM]])
  T.eq(seen, { 10, 100 })
end)

T.test("sql.restore on SQL Server restores under the new name into the default folders", function()
  local dir = T.tmpdir()
  local file = dir .. "/o.bak"
  T.write_file(file, "TAPE")  -- a SQL Server backup starts with its own header
  local db = fake(false)
  local r = sql.restore(db, { from = file, database = "OctoClone" })
  T.eq(r.method, "mssql")
  T.eq(r.database, "OctoClone")
  T.eq(db.ran[#db.ran], "RESTORE DATABASE [OctoClone] FROM DISK = N'" .. file ..
    [[' WITH MOVE N'Octopus' TO N'C:\Data\OctoClone.mdf', MOVE N'Octopus_2' TO N'C:\Data\OctoClone_2.ndf', ]] ..
    [[MOVE N'Octopus_log' TO N'C:\Logs\OctoClone_log.ldf', CHECKSUM, STATS = 5]])
  T.raises("NOT_EMPTY", sql.restore, fake(true), { from = file, database = "OctoClone" })
  local again = fake(true)
  sql.restore(again, { from = file, database = "OctoClone", replace = true, data_dir = "/d", log_dir = "/l" })
  T.contains(again.ran[#again.ran], "MOVE N'Octopus' TO N'/d/OctoClone.mdf'")
  T.contains(again.ran[#again.ran], "REPLACE")
  T.raises("EINVAL", sql.restore, fake(false), { from = file })
end)

T.done()
