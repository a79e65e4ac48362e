-- fakemssql: a SQL Server for the tests, made of the scripted ODBC driver
-- (tests/odbcdrv/fakemssql.c, built as build/test/fakemssql.so by make test)
-- and a script of the answers a real server gives to the statements upkit
-- sends. Messages, numbers and SQLSTATEs are SQL Server's own (Microsoft's
-- "Database engine events and errors" pages).
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
o.login ("octo"), o.sysadmin, o.dbcreator, o.create_any_database,
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

function Server:defaults()
  local o = self.o
  local d = {}
  local function add(r) d[#d + 1] = r end
  add { match = "SERVERPROPERTY('EngineEdition')", results = { rs(
    { { "engine_edition", "int" }, { "edition", "text" }, { "product_version", "text" }, { "machine", "text" },
      { "server_name", "text" }, { "rdsadmin", "int" } },
    { { o.engine_edition or 3, o.edition or "Enterprise Edition (64-bit)", o.version or "15.0.4153.1", o.machine,
        o.server or o.machine, o.rds and 7 or json.null } }) } }
  local rights_cols = { { "login", "text" }, { "sysadmin", "int" }, { "dbcreator", "int" }, { "create_any_database", "int" },
                        { "can_backup", "int" }, { "is_owner", "int" }, { "database_id", "int" } }
  local function b(v) return v and 1 or 0 end
  local function rights_row(name, id)
    local owner = o.owner_of and o.owner_of[name]
    return { o.login or "octo", b(o.sysadmin), b(o.dbcreator), b(o.sysadmin or o.dbcreator or o.create_any_database),
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
  add { match = "^RESTORE VERIFYONLY", results = { { messages = { info("The backup set on file 1 is valid.", 3262) } } } }
  add { match = "^RESTORE HEADERONLY", results = { rs(
    { { "DatabaseName", "text" }, { "BackupFinishDate", "datetime" }, { "BackupSize", "decimal" }, { "HasBackupChecksums", "bit" } },
    { { o.backup_of or "Octopus", "2026-11-30T02:00:00", o.backup_bytes or 10043392, true } }) } }
  add { match = "^RESTORE FILELISTONLY", results = { rs(
    { { "LogicalName", "text" }, { "PhysicalName", "text" }, { "Type", "text" }, { "Size", "decimal" } },
    o.filelist or { { "Octopus", [[C:\Data\Octopus.mdf]], "D", 104857600 },
                    { "Octopus_log", [[C:\Data\Octopus_log.ldf]], "L", 52428800 } }) } }
  add { match = "^RESTORE DATABASE", results = F.progress("RESTORE", "Octopus", 1224) }
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
  local script = { log = self.log_path, dbms_version = self.o.dbms_version or "15.00.4153", database = "master",
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

function Server:statements()
  local out = {}
  for _, e in ipairs(self:events()) do
    if e.event == "exec" then out[#out + 1] = e.sql end
  end
  return out
end

function Server:unanswered()
  local out = {}
  for _, e in ipairs(self:events()) do
    if e.unanswered then out[#out + 1] = e.sql end
  end
  return out
end

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
