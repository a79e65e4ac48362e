-- upkit.sql.mssql: Microsoft SQL Server backup and restore through its own
-- T-SQL (BACKUP DATABASE, RESTORE VERIFYONLY / FILELISTONLY / DATABASE).
-- The statement builders are pure functions, so their text is testable
-- without a server:
--   mssql.ident(name)                     -> [name] with ] doubled
--   mssql.nstring(s)                      -> N'...' with ' doubled
--   mssql.backup_statement(db, file)      -> BACKUP DATABASE ...
--   mssql.verify_statement(file)          -> RESTORE VERIFYONLY ...
--   mssql.filelist_statement(file)        -> RESTORE FILELISTONLY ...
--   mssql.moves(filelist, name, data_dir, log_dir) -> { {logical, physical}, ... }
--   mssql.restore_statement(db, file, moves, replace) -> RESTORE DATABASE ...
local upkit = require "upkit"

local M = {}

function M.ident(name)
  return "[" .. tostring(name):gsub("%]", "]]") .. "]"
end

function M.nstring(s)
  return "N'" .. tostring(s):gsub("'", "''") .. "'"
end

function M.backup_statement(database, file)
  return "BACKUP DATABASE " .. M.ident(database) .. " TO DISK = " .. M.nstring(file) ..
    " WITH COPY_ONLY, CHECKSUM, INIT, FORMAT, STATS = 5"
end

function M.verify_statement(file)
  return "RESTORE VERIFYONLY FROM DISK = " .. M.nstring(file) .. " WITH CHECKSUM"
end

function M.filelist_statement(file)
  return "RESTORE FILELISTONLY FROM DISK = " .. M.nstring(file)
end

-- The server's default folders (SQL Server 2012 and later).
M.default_paths_query = "SELECT CAST(SERVERPROPERTY('InstanceDefaultDataPath') AS nvarchar(4000)) AS data_dir, " ..
  "CAST(SERVERPROPERTY('InstanceDefaultLogPath') AS nvarchar(4000)) AS log_dir"

local function join(dir, file)
  if dir:match("[\\/]$") then return dir .. file end
  return dir .. (dir:find("/", 1, true) and not dir:find("\\", 1, true) and "/" or "\\") .. file
end

local function field(row, name)
  for k, v in pairs(row) do
    if k:lower() == name:lower() then return v end
  end
end

-- New physical file names for each file of the backup: data files into
-- data_dir, the log into log_dir, all named after the new database.
function M.moves(filelist, name, data_dir, log_dir)
  local out, ndata, nlog = {}, 0, 0
  for _, f in ipairs(filelist) do
    local kind, logical = field(f, "Type"), field(f, "LogicalName")
    local physical = tostring(field(f, "PhysicalName") or "")
    local ext = physical:match("(%.[%w]+)$")
    local target
    if kind == "L" then
      nlog = nlog + 1
      target = join(log_dir, name .. (nlog == 1 and "_log" or ("_log" .. nlog)) .. (ext or ".ldf"))
    else
      ndata = ndata + 1
      target = join(data_dir, name .. (ndata == 1 and "" or ("_" .. ndata)) .. (ext or (ndata == 1 and ".mdf" or ".ndf")))
    end
    out[#out + 1] = { logical, target }
  end
  return out
end

function M.restore_statement(database, file, moves, replace)
  local parts = {}
  for _, m in ipairs(moves) do
    parts[#parts + 1] = "MOVE " .. M.nstring(m[1]) .. " TO " .. M.nstring(m[2])
  end
  parts[#parts + 1] = "CHECKSUM"
  if replace then parts[#parts + 1] = "REPLACE" end
  parts[#parts + 1] = "STATS = 5"
  return "RESTORE DATABASE " .. M.ident(database) .. " FROM DISK = " .. M.nstring(file) ..
    " WITH " .. table.concat(parts, ", ")
end

-- Percent messages ("10 percent processed.") as progress.
local function watch(db, opts, phase)
  if not opts.progress then return end
  db:on_message(function(msg)
    local pct = tostring(msg):match("(%d+) percent processed")
    if pct then opts.progress { phase = phase, percent = tonumber(pct) } end
  end)
end

local function local_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:close()
  return size
end

-- BACKUP DATABASE, then RESTORE VERIFYONLY. When the target folder is
-- visible from here (the server runs on this machine), the server writes a
-- temporary file that is verified, hashed and renamed into place; otherwise
-- the server writes opts.to itself.
function M.backup(db, opts)
  local database = opts.database or db:info().database
  local dir = opts.to:match("^(.*)[\\/][^\\/]*$") or "."
  local here = require("lfs").attributes(dir, "mode") == "directory"
  local file = here and (opts.to .. ".partial") or opts.to
  watch(db, opts, "backup")
  local ok, err = pcall(function()
    db:exec(M.backup_statement(database, file))
    db:exec(M.verify_statement(file))
  end)
  if opts.progress then db:on_message(nil) end
  if not ok then
    if here then os.remove(file) end
    error(err, 0)
  end
  local r = { file = opts.to, database = database }
  if here and local_file(file) then
    r.bytes = local_file(file)
    r.sha256 = require("upkit.hash").file("sha256", file)
    require("upkit._sql").rename(file, opts.to)
  end
  return r
end

function M.verify(file, opts)
  local db = opts.db
  if not db then
    upkit.error("BAD_FORMAT", "sql.verify: '" .. file .. "': not a SQLite or logical backup; a SQL Server backup needs { db = connection }")
  end
  db:exec(M.verify_statement(file))
  return { file = file, bytes = local_file(file) }
end

-- RESTORE FILELISTONLY, then RESTORE DATABASE under opts.database with
-- MOVE into the server's default folders (or opts.data_dir / opts.log_dir).
function M.restore(db, opts)
  if require("upkit.sql").engine(db) ~= "mssql" then
    upkit.error("BAD_FORMAT", "sql.restore: '" .. opts.from .. "': not a backup file upkit knows (SQLite, logical, or SQL Server on a SQL Server connection)")
  end
  local name = opts.database
  if type(name) ~= "string" or name == "" then upkit.error("EINVAL", "sql.restore: option 'database' (the new name) is required") end
  local exists = db:first("SELECT DB_ID(?) AS id", name)
  if exists and exists.id ~= require("upkit.sql").null and not opts.replace then
    upkit.error("NOT_EMPTY", "sql.restore: database " .. M.ident(name) .. " exists; pass replace = true to overwrite")
  end
  db:exec(M.verify_statement(opts.from))
  local filelist = db:query(M.filelist_statement(opts.from))
  local data_dir, log_dir = opts.data_dir, opts.log_dir
  if not data_dir or not log_dir then
    local d = db:first(M.default_paths_query)
    data_dir, log_dir = data_dir or d.data_dir, log_dir or d.log_dir
  end
  local moves = M.moves(filelist, name, data_dir, log_dir)
  watch(db, opts, "restore")
  local ok, err = pcall(db.exec, db, M.restore_statement(name, opts.from, moves, opts.replace))
  if opts.progress then db:on_message(nil) end
  if not ok then error(err, 0) end
  return { file = opts.from, database = name, moves = moves, bytes = local_file(opts.from) }
end

return M
