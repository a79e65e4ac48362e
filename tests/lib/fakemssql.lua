-- fakemssql: a SQL Server for the tests, made of the scripted ODBC driver
-- (tests/odbcdrv/fakemssql.c, built as build/test/fakemssql.so by make test)
-- and a script of the answers a real server gives to the statements upkit
-- sends. Messages, numbers and SQLSTATEs are SQL Server's own (Microsoft's
-- "Database engine events and errors" pages), statements must have their
-- documented form (F.FORMS) and result sets have their documented columns;
-- tests/sim/FIDELITY.md section 10 cites each.
--
--   local F = require "fakemssql"
--   local srv = F.new(T.tmpdir(), { machine = "SQL01", login = "octo", sysadmin = true, ... })
--   srv:rule { match = "^BACKUP DATABASE", results = { ... } }   -- answered before the defaults
--   local db = sql.connect(srv:conn())                         -- Driver=<so>;...;UpkitScript=<script>
--   srv:statements() -> { sql, ... } ; srv:unanswered() -> { sql, ... } ; srv:events()
--   srv:odbcinst({ "ODBC Driver 18 for SQL Server", ... }) -> env words for a child upkit
local json = require "upkit.json"

local F = {}

-- The driver: build/test/fakemssql.so of the tree this file belongs to.
function F.so()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/tests/lib/[^/]*$") or "."
  local path = here .. "/build/test/fakemssql.so"
  if not io.open(path, "rb") then
    error("fakemssql: " .. path .. " is missing: run make test (or make build/test/fakemssql.so)")
  end
  if path:sub(1, 1) ~= "/" then path = os.getenv("PWD") .. "/" .. path end
  return path
end

local function info(message, native) return { state = "01000", native = native or 0, message = message } end
local function err(native, message, state) return { state = state or "42000", native = native, message = message } end
F.info, F.err = info, err

-- The informational messages of a BACKUP or RESTORE WITH STATS = 5, as SQL Server sends them.
function F.progress(verb, database, pages)
  local out = {}
  for pct = 10, 100, 30 do out[#out + 1] = { messages = { info(pct .. " percent processed.", 3211) } } end
  out[#out + 1] = { messages = {
    info(string.format("Processed %d pages for database '%s', file '%s' on file 1.", pages, database, database), 4035),
    info(string.format("%s DATABASE successfully processed %d pages in 0.215 seconds (44.570 MB/sec).", verb, pages + 3), 3014),
  } }
  return out
end

local Server = {}
Server.__index = Server

--[[
F.new(dir, o): o.machine ("SQL01"), o.server (o.machine), o.version
("15.0.4153.1", SQL Server 2019), o.engine_edition (3: Enterprise), o.rds,
o.login ("octo"), o.sysadmin, o.dbcreator, o.create_database (CREATE DATABASE
permission, which RESTORE VERIFYONLY/HEADERONLY/FILELISTONLY need),
o.can_backup, o.owner_of = { db = true }, o.databases = { name = id },
o.data_dir, o.log_dir, o.volumes = { { mount, available, replaced } }, o.service_account,
o.database (Database= of srv:conn(), "master").
]]
function F.new(dir, o)
  o = o or {}
  local s = setmetatable({ dir = dir, o = o, rules = {}, script_path = dir .. "/fakemssql.json",
                           log_path = dir .. "/fakemssql.log" }, Server)
  o.machine = o.machine or "SQL01"
  o.databases = o.databases or { Octopus = 5 }
  s:write()
  return s
end

local function rs(columns, rows) return { columns = columns, rows = rows } end
F.rs = rs

-- POSIX ERE pieces: a [bracketed] identifier, an N'...' string, an integer.
local ID, NSTR, INT = [=[\[([^]]|\]\])+\]]=], "N'([^']|'')*'", "[0-9]+"
local function opts(list) return "(" .. table.concat(list, "|") .. ")(, (" .. table.concat(list, "|") .. "))*" end
-- The options upkit may use of those each statement's page documents.
local BACKUP_OPTS = { "COPY_ONLY", "COMPRESSION", "NO_COMPRESSION", "INIT", "NOINIT", "FORMAT", "NOFORMAT", "SKIP",
                      "NOSKIP", "CHECKSUM", "NO_CHECKSUM", "STOP_ON_ERROR", "CONTINUE_AFTER_ERROR", "STATS = " .. INT,
                      "STATS", "BLOCKSIZE = " .. INT, "BUFFERCOUNT = " .. INT, "MAXTRANSFERSIZE = " .. INT }
local READ_OPTS = { "CHECKSUM", "NO_CHECKSUM", "STOP_ON_ERROR", "CONTINUE_AFTER_ERROR", "FILE = " .. INT,
                    "STATS = " .. INT, "STATS" }
local RESTORE_OPTS = { "MOVE " .. NSTR .. " TO " .. NSTR, "RECOVERY", "NORECOVERY", "REPLACE", "RESTRICTED_USER",
                       "FILE = " .. INT, "CHECKSUM", "NO_CHECKSUM", "STOP_ON_ERROR", "CONTINUE_AFTER_ERROR",
                       "STATS = " .. INT, "STATS", "KEEP_REPLICATION", "KEEP_CDC" }
--[[
The documented syntax of each statement upkit sends (MS-Learn pages, named in
source); the driver refuses a statement that begins with prefix and does
not match regex. Only the subset of the grammar upkit could use is allowed,
so a form outside it fails as it would be unverified.
]]
F.FORMS = {
  { prefix = "BACKUP DATABASE ", source = "MS-Learn: BACKUP (Transact-SQL)",
    regex = "^BACKUP DATABASE " .. ID .. " TO DISK = " .. NSTR .. "( WITH " .. opts(BACKUP_OPTS) .. ")?$" },
  { prefix = "RESTORE VERIFYONLY ", source = "MS-Learn: RESTORE VERIFYONLY (Transact-SQL)",
    regex = "^RESTORE VERIFYONLY FROM DISK = " .. NSTR .. "( WITH " .. opts(READ_OPTS) .. ")?$" },
  { prefix = "RESTORE HEADERONLY ", source = "MS-Learn: RESTORE HEADERONLY (Transact-SQL)",
    regex = "^RESTORE HEADERONLY FROM DISK = " .. NSTR .. "( WITH " .. opts(READ_OPTS) .. ")?$" },
  { prefix = "RESTORE FILELISTONLY ", source = "MS-Learn: RESTORE FILELISTONLY (Transact-SQL)",
    regex = "^RESTORE FILELISTONLY FROM DISK = " .. NSTR .. "( WITH " .. opts(READ_OPTS) .. ")?$" },
  { prefix = "RESTORE DATABASE ", source = "MS-Learn: RESTORE Statements (Transact-SQL) and RESTORE Arguments",
    regex = "^RESTORE DATABASE " .. ID .. " FROM DISK = " .. NSTR .. "( WITH " .. opts(RESTORE_OPTS) .. ")?$" },
  { prefix = "ALTER DATABASE ", source = "MS-Learn: ALTER DATABASE SET Options (Transact-SQL), db_user_access_option",
    regex = "^ALTER DATABASE " .. ID .. " SET (SINGLE_USER|RESTRICTED_USER|MULTI_USER)" ..
            "( WITH (ROLLBACK IMMEDIATE|ROLLBACK AFTER " .. INT .. "( SECONDS)?|NO_WAIT))?$" },
  { prefix = "DBCC CHECKDB", source = "MS-Learn: DBCC CHECKDB (Transact-SQL)",
    regex = "^DBCC CHECKDB \\(" .. ID .. "\\)( WITH (NO_INFOMSGS|ALL_ERRORMSGS|PHYSICAL_ONLY|DATA_PURITY|EXTENDED_LOGICAL_CHECKS)" ..
            "(, (NO_INFOMSGS|ALL_ERRORMSGS|PHYSICAL_ONLY|DATA_PURITY|EXTENDED_LOGICAL_CHECKS))*)?$" },
  { prefix = "DROP DATABASE ", source = "MS-Learn: DROP DATABASE (Transact-SQL)", regex = "^DROP DATABASE " .. ID .. "$" },
  { prefix = "EXEC master.dbo.xp_fileexist", source = "dbatools Test-DbaPath (xp_fileexist is undocumented)",
    regex = "^EXEC master\\.dbo\\.xp_fileexist " .. NSTR .. "$" },
}

-- A literal for a POSIX ERE.
function F.ere(text) return (text:gsub("[%^%$%(%)%.%[%]%*%+%?%{%}|\\]", "\\%0")) end

--[[
The documented result columns (MS-Learn's RESTORE FILELISTONLY and RESTORE
HEADERONLY pages), in their order; the scripted answers use these names and
nothing else. FILELISTONLY's first seven columns; HEADERONLY's first
nineteen, then HasBackupChecksums (the columns between and after are left
out: upkit reads none of them).
]]
F.COLUMNS = {
  FILELISTONLY = { { "LogicalName", "text" }, { "PhysicalName", "text" }, { "Type", "text" }, { "FileGroupName", "text" },
                   { "Size", "decimal" }, { "MaxSize", "decimal" }, { "FileID", "bigint" } },
  HEADERONLY = { { "BackupName", "text" }, { "BackupDescription", "text" }, { "BackupType", "int" },
                 { "ExpirationDate", "datetime" }, { "Compressed", "int" }, { "Position", "int" }, { "DeviceType", "int" },
                 { "UserName", "text" }, { "ServerName", "text" }, { "DatabaseName", "text" }, { "DatabaseVersion", "int" },
                 { "DatabaseCreationDate", "datetime" }, { "BackupSize", "decimal" }, { "FirstLSN", "decimal" },
                 { "LastLSN", "decimal" }, { "CheckpointLSN", "decimal" }, { "DatabaseBackupLSN", "decimal" },
                 { "BackupStartDate", "datetime" }, { "BackupFinishDate", "datetime" } },
}

function Server:defaults()
  local o = self.o
  local d = {}
  local function add(r) d[#d + 1] = r end
  add { match = "SERVERPROPERTY('EngineEdition')", results = { rs(
    { { "engine_edition", "int" }, { "edition", "text" }, { "product_version", "text" }, { "machine", "text" },
      { "server_name", "text" }, { "rdsadmin", "int" } },
    { { o.engine_edition or 3, o.edition or "Enterprise Edition (64-bit)", o.version or "15.0.4153.1", o.machine,
        o.server or o.machine, o.rds and 7 or json.null } }) } }
  local rights_cols = { { "login", "text" }, { "sysadmin", "int" }, { "dbcreator", "int" }, { "create_database", "int" },
                        { "can_backup", "int" }, { "is_owner", "int" }, { "database_id", "int" } }
  local function b(v) return v and 1 or 0 end
  local function rights_row(name, id)
    local owner = o.owner_of and o.owner_of[name]
    return { o.login or "octo", b(o.sysadmin), b(o.dbcreator), b(o.sysadmin or o.dbcreator or o.create_database),
             b(o.sysadmin or o.can_backup), id and b(owner) or json.null, id or json.null }
  end
  for name, id in pairs(o.databases) do
    add { match = "IS_SRVROLEMEMBER('sysadmin')", params = json.encode({ name, name, name }),
          results = { rs(rights_cols, { rights_row(name, id) }) } }
  end
  add { match = "IS_SRVROLEMEMBER('sysadmin')", results = { rs(rights_cols, { rights_row(nil, nil) }) } }
  add { match = "InstanceDefaultDataPath", results = { rs({ { "data_dir", "text" }, { "log_dir", "text" } },
    { { o.data_dir or [[D:\SQLData\]], o.log_dir or [[L:\SQLLogs\]] } }) } }
  add { match = "sys.dm_os_volume_stats", results = { rs({ { "mount", "text" }, { "available", "bigint" }, { "replaced", "bigint" } },
    o.volumes or { { [[D:\]], 500e9, 0 }, { [[L:\]], 200e9, 0 } }) } }
  add { match = "sys.dm_server_services", results = { rs({ { "service_account", "text" } },
    { { o.service_account or [[NT Service\MSSQLSERVER]] } }) } }
  if not (o.sysadmin or o.dbcreator or o.create_database) then
    -- reading a backup needs CREATE DATABASE (the pages' Permissions); the
    -- exact error a server gives then is unverified: 262 is its documented form
    for _, verb in ipairs { "VERIFY", "HEADERONLY", "FILELISTONLY" } do
      add { match = "^RESTORE " .. (verb == "VERIFY" and "VERIFYONLY" or verb), results = { { error = {
        err(262, "CREATE DATABASE permission denied in database 'master'."),
        err(3013, (verb == "VERIFY" and "VERIFY DATABASE" or "RESTORE " .. verb) .. " is terminating abnormally.") } } } }
    end
  end
  add { match = "^RESTORE VERIFYONLY", results = { { messages = { info("The backup set on file 1 is valid.", 3262) } } } }
  local header = {}
  for i, c in ipairs(F.COLUMNS.HEADERONLY) do header[i] = c end
  header[#header + 1] = { "HasBackupChecksums", "bit" }
  local hrow = { "upkit", json.null, 1, json.null, 0, 1, 2, o.login or "octo", o.server or o.machine, o.backup_of or "Octopus",
                 904, "2026-01-01T00:00:00", o.backup_bytes or 10043392, 1, 2, 1, 0, "2026-11-30T01:59:00",
                 "2026-11-30T02:00:00", true }
  add { match = "^RESTORE HEADERONLY", results = { rs(header, { hrow }) } }
  local filelist = {}
  for i, f in ipairs(o.filelist or { { "Octopus", [[C:\Data\Octopus.mdf]], "D", 104857600 },
                                     { "Octopus_log", [[C:\Data\Octopus_log.ldf]], "L", 52428800 } }) do
    filelist[i] = { f[1], f[2], f[3], f[3] == "L" and json.null or "PRIMARY", f[4], 35184372080640, i }
  end
  add { match = "^RESTORE FILELISTONLY", results = { rs(F.COLUMNS.FILELISTONLY, filelist) } }
  -- RESTORE DATABASE answers only when it moves every file FILELISTONLY lists (in its order)
  local moves = {}
  for _, f in ipairs(filelist) do moves[#moves + 1] = "MOVE N'" .. F.ere(f[1]:gsub("'", "''")) .. "' TO N'([^']|'')*', " end
  add { match = "^RESTORE DATABASE", regex = " WITH " .. table.concat(moves), results = F.progress("RESTORE", "Octopus", 1224) }
  add { match = "SET SINGLE_USER WITH ROLLBACK IMMEDIATE", results = { { messages = {
    info("Nonqualified transactions are being rolled back. Estimated rollback completion: 100%.", 5060) } } } }
  add { match = "SET MULTI_USER", results = {} }
  add { match = "^DBCC CHECKDB", results = {} }
  add { match = "^DROP DATABASE", results = {} }
  return d
end

function Server:write()
  local rules = {}
  for _, r in ipairs(self.rules) do rules[#rules + 1] = r end
  for _, r in ipairs(self:defaults()) do rules[#rules + 1] = r end
  local script = { log = self.log_path, forms = F.FORMS, dbms_version = self.o.dbms_version or "15.00.4153", database = "master",
                   user = "dbo", server = self.o.machine, self_signed = self.o.self_signed or false,
                   connect_error = self.o.connect_error, rules = rules }
  local f = assert(io.open(self.script_path, "w"))
  f:write(json.encode(script))
  f:close()
end

-- Add a rule answered before the defaults (and before earlier rules when first is true).
function Server:rule(r, first)
  if first then table.insert(self.rules, 1, r) else self.rules[#self.rules + 1] = r end
  self:write()
  return self
end

-- xp_fileexist's answer for a path: File Exists, File is a Directory, Parent Directory Exists.
function Server:path(path, exists, isdir, parent)
  local b = function(v) return v and 1 or 0 end
  return self:rule { match = "xp_fileexist N'" .. path:gsub("'", "''") .. "'", results = { rs(
    { { "File Exists", "int" }, { "File is a Directory", "int" }, { "Parent Directory Exists", "int" } },
    { { b(exists), b(isdir), b(parent ~= false) } }) } }
end

-- msdb's record of a backup of database to file.
function Server:history(database, file, bytes, checksums)
  return self:rule { match = "msdb.dbo.backupset", params = json.encode({ database, file }), results = { rs(
    { { "finished", "datetime" }, { "backup_size", "decimal" }, { "compressed_size", "decimal" },
      { "has_checksums", "bit" }, { "copy_only", "bit" }, { "device", "text" } },
    { { "2026-11-30T02:00:00", bytes, bytes, checksums ~= false, true, file } }) } }
end

-- The connection string (extra: more keyword=value pairs).
function Server:conn(extra)
  return "Driver=" .. F.so() .. ";Server=" .. self.o.machine .. ";Database=" .. (self.o.database or "master") .. ";UID=" .. (self.o.login or "octo") ..
    ";PWD={s3cr;et}" .. (extra and (";" .. extra) or "") .. ";UpkitScript=" .. self.script_path
end

function Server:events()
  local out = {}
  local f = io.open(self.log_path, "r")
  if not f then return out end
  for line in f:lines() do out[#out + 1] = json.decode(line) end
  f:close()
  return out
end

-- The statements of the logged events for which keep(event) is true, in order.
local function statements(srv, keep)
  local out = {}
  for _, e in ipairs(srv:events()) do
    if keep(e) then out[#out + 1] = e.sql end
  end
  return out
end

-- Every statement executed; those the script had no answer for; those not in their documented form.
function Server:statements() return statements(self, function(e) return e.event == "exec" end) end
function Server:unanswered() return statements(self, function(e) return e.unanswered end) end
function Server:refused() return statements(self, function(e) return e.refused end) end

-- Whether a statement containing text was sent.
function Server:sent(text)
  for _, s in ipairs(self:statements()) do
    if s:find(text, 1, true) then return true end
  end
  return false
end

--[[
srv:odbcinst(names) -> environment words (ODBCSYSINI=... ODBCINSTINI=...
UPKIT_FAKE_MSSQL=...) for a child process: an odbcinst.ini in the server's
folder where each name is a driver section loading the scripted driver.
]]
function Server:odbcinst(names)
  local lines = {}
  for _, n in ipairs(names) do
    lines[#lines + 1] = "[" .. n .. "]\nDescription=upkit test driver\nDriver=" .. F.so() .. "\nUsageCount=1\n"
  end
  local f = assert(io.open(self.dir .. "/odbcinst.ini", "w"))
  f:write(table.concat(lines, "\n"))
  f:close()
  local q = function(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
  return "ODBCSYSINI=" .. q(self.dir) .. " ODBCINSTINI=odbcinst.ini UPKIT_FAKE_MSSQL=" .. q(self.script_path)
end

return F
