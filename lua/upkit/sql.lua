-- upkit.sql: SQL through ODBC, and database backup and restore.
--
--   local sql = require "upkit.sql"
--   local db = sql.connect(conn_string_or_dsn, { timeout =, query_timeout =, on_message =,
--                          decimals = "string" | "number" })
--   db:exec(sql, ...)            --> rows affected (every result set consumed)
--   for row in db:rows(sql, ...) do ... end   -- break or error closes the cursor
--   db:query(sql, ...)           --> { row, ..., columns = { {name=, type=, ...}, ... } }
--   db:first(sql, ...)           --> row or nil
--   db:prepare(sql)              --> st; st:execute(...), st:rows(...), st:query(...), st:close()
--   db:begin() db:commit() db:rollback() db:transaction(fn, ...) db:cancel()
--   db:info()                    --> { dbms, dbms_version, driver, driver_version, database, ... }
--   sql.null (== json.null), sql.binary(s) (bind s as binary)
--   sql.backup(db, { to =, database =, method = "auto" | "sqlite" | "logical" | "mssql", progress = })
--   sql.restore(target, { from =, database =, replace = false, progress =, ... })
--   sql.verify(file [, { sha256 =, db = }])
--     --> { file, bytes, sha256, method, seconds, verified = true, ... }
--   sql.engine(db)               --> "mssql" | "sqlite" | "postgresql" | "generic"
--   db:load(block, { insert =, columns =, per_statement =, row_type =, record_text = })
--                                --> rows (a backup block into a table; see upkit.sql.logical)
-- Rows are keyed by column name (a repeated name becomes name_2, name_3, ...;
-- columns[i].label is the driver's name); NULL is sql.null. Errors are error objects
-- (docs/errors.md): code is SQL_ERROR, CONNECT_FAILED, AUTH_FAILED, TIMEOUT,
-- PERMISSION_DENIED, INTERRUPTED (Ctrl-C or db:cancel), ENOMEM, CLOSED, BUSY,
-- EINVAL...; sqlstate, native and diagnostics (every record, its text whole)
-- keep the driver's detail; messages never hold passwords.
local native = require "upkit._sql"
local upkit = require "upkit"
local util = require "upkit.util"

local M = {}

M.null = native.null
M.Connection = native.Connection
M.Statement = native.Statement
M.redact = native.redact

-- sql.binary(s): a parameter bound as binary data (SQL_C_BINARY).
function M.binary(s)
  if type(s) ~= "string" then upkit.error("EINVAL", "sql.binary: expected a string, got " .. type(s)) end
  return setmetatable({ s }, native.Binary)
end

-- psqlODBC's defaults read a whole result into memory and report booleans as
-- text; upkit streams results in blocks and means booleans. Debian's
-- odbcinst.ini turns psqlODBC's communication log on, a file in the
-- temporary folder that can hold statements and their values: upkit turns
-- it and the debug log off. These settings are added to a psqlODBC
-- connection string that does not set them itself.
local PSQLODBC = { { "UseDeclareFetch", "1" }, { "Fetch", "10000" }, { "BoolsAsChar", "0" },
                   { "CommLog", "0" }, { "Debug", "0" } }

local function psqlodbc_settings(cs)
  for _, kv in ipairs(PSQLODBC) do
    if not M.conn_value(cs, kv[1]) then cs = M.with_value(cs, kv[1], kv[2]) end
  end
  return cs
end

local function is_psqlodbc(name)
  name = (name or ""):lower()
  return name:find("psqlodbc", 1, true) or name:find("postgres", 1, true)
end

function M.connect(conn, opts)
  if type(conn) ~= "string" then
    upkit.error("EINVAL", "sql.connect: expected a connection string or DSN, got " .. type(conn))
  end
  if not conn:find("=", 1, true) then conn = "DSN=" .. conn end
  local driver = M.conn_value(conn, "Driver")
  if driver then
    if is_psqlodbc(driver) then conn = psqlodbc_settings(conn) end
    return native.connect(conn, opts)
  end
  -- a DSN: its driver is known once connected
  local db = native.connect(conn, opts)
  if is_psqlodbc(db:info().driver) and psqlodbc_settings(conn) ~= conn then
    db:close()
    db = native.connect(psqlodbc_settings(conn), opts)
  end
  return db
end

-- sql.conn_value(conn, key) -> the value of key in a connection string, or nil
function M.conn_value(cs, key)
  for k, v in (cs .. ";"):gmatch("%s*([^=;]+)=(%b{})%s*;") do
    if k:lower() == key:lower() then return v:sub(2, -2):gsub("}}", "}") end
  end
  for k, v in (cs .. ";"):gmatch("%s*([^=;]+)=([^;]*);") do
    if k:lower() == key:lower() then return v end
  end
end

-- sql.with_value(conn, key, value) -> the connection string with key set to value
function M.with_value(cs, key, value)
  local v = value:find("[;{}]") and ("{" .. value:gsub("}", "}}") .. "}") or value
  local out, found = {}, false
  for part in (cs .. ";"):gmatch("([^;]*);") do
    local k = part:match("^%s*([^=]+)=")
    if k and k:lower() == key:lower() then
      if not found then out[#out + 1] = key .. "=" .. v end
      found = true
    elseif part ~= "" then
      out[#out + 1] = part
    end
  end
  if not found then out[#out + 1] = key .. "=" .. v end
  return table.concat(out, ";")
end

local Connection, Statement = native.Connection, native.Statement

-- db:rows(sql, ...): generic-for iterator; its closing value closes the cursor.
function Connection:rows(sqltext, ...)
  local st = self:open(sqltext, ...)
  return st.fetch, st, nil, st
end

local function collect(st)
  local out = { columns = st:columns() }
  local n = 0
  for row in st.fetch, st do
    n = n + 1
    out[n] = row
  end
  return out
end

-- db:query(sql, ...) -> array of rows, with field columns
function Connection:query(sqltext, ...)
  local st <close> = self:open(sqltext, ...)
  return collect(st)
end

-- db:first(sql, ...) -> the first row, or nil
function Connection:first(sqltext, ...)
  local st <close> = self:open(sqltext, ...)
  return st:fetch()
end

-- db:transaction(fn, ...) -> fn's results; commits, or rolls back and re-raises.
function Connection:transaction(fn, ...)
  self:begin()
  local r = table.pack(pcall(fn, self, ...))
  if not r[1] then
    pcall(self.rollback, self)
    error(r[2], 0)
  end
  self:commit()
  return table.unpack(r, 2, r.n)
end

-- st:rows(...): execute a prepared statement and iterate its rows; the
-- closing value closes the cursor, not the statement.
function Statement:rows(...)
  self:execute(...)
  local closer = setmetatable({}, { __close = function() self:close_cursor() end })
  return self.fetch, self, nil, closer
end

-- st:query(...) -> array of rows, with field columns
function Statement:query(...)
  self:execute(...)
  local ok, res = pcall(collect, self)
  self:close_cursor()
  if not ok then error(res, 0) end
  return res
end

local function engine(db)
  local dbms = (db:info().dbms or ""):lower()
  if dbms:find("microsoft sql server", 1, true) then return "mssql" end
  if dbms:find("sqlite", 1, true) then return "sqlite" end
  if dbms:find("postgres", 1, true) then return "postgresql" end
  return "generic"
end
M.engine = engine

local function lazy(name)
  return require("upkit.sql." .. name)
end

setmetatable(M, { __index = function(_, k)
  if k == "mssql" or k == "logical" or k == "sqlite" or k == "connstr" then return lazy(k) end
end })

local BACKUP_KEYS = { to = "string", database = "string", method = "string", progress = "function|boolean",
                      visible_as = "string", test = "boolean" }
local VERIFY_KEYS = { sha256 = "string", db = "userdata|table", restore = "boolean", name = "string",
                      data_dir = "string", log_dir = "string" }
local RESTORE_KEYS = { from = "string", database = "string", replace = "boolean", progress = "function|boolean",
                       data_dir = "string", log_dir = "string", sha256 = "string" }

local function checkopts(fn, opts, keys)
  if opts == nil then upkit.error("EINVAL", fn .. ": options must be a table, got nil") end
  return util.check_opts(fn, opts, keys)
end

-- When the caller gives no progress function (nor false) and standard error
-- is a terminal: a copy of opts whose progress draws one line there, and a
-- function that ends that line. Otherwise opts and a no-op.
local function terminal_progress(fn, opts)
  local line = opts.progress == nil and require("upkit.progress").line()
  if not line then return opts, function() end end
  local t0 = upkit.now()
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.progress = function(p)
    local what = p.percent and string.format("%d%%", p.percent)
      or string.format("%s%d row%s", p.table and (p.table .. ": ") or "", p.rows or 0, p.rows == 1 and "" or "s")
    line.draw(false, "%s: %s, %.0f s", fn, what, upkit.now() - t0)
  end
  return o, line.done
end

-- A connection (or anything that answers like one) or a connection string, else EINVAL.
local function check_target(fn, db)
  if type(db) == "string" then return end
  if type(db) == "table" or type(db) == "userdata" then
    local ok, info = pcall(function() return db.info end)
    if ok and type(info) == "function" then return end
  end
  upkit.error("EINVAL", string.format("%s: expected a connection or a connection string, got %s", fn, type(db)))
end

-- sql.backup(db, { to =, database =, method = "auto", progress = fn })
--   db: a connection, or a connection string (connected and closed here).
--   --> { file, bytes, sha256, method, seconds }
function M.backup(db, opts)
  check_target("sql.backup", db)
  checkopts("sql.backup", opts, BACKUP_KEYS)
  if type(db) == "string" then
    local conn <close> = M.connect(db)
    return M.backup(conn, opts)
  end
  if type(opts.to) ~= "string" or opts.to == "" then upkit.error("EINVAL", "sql.backup: option 'to' (a file) is required") end
  local method = opts.method or "auto"
  local kind = engine(db)
  if method == "auto" then
    method = (kind == "mssql" or kind == "sqlite") and kind or "logical"
  end
  if method ~= "logical" and method ~= kind then
    upkit.error("EINVAL", string.format("sql.backup: method '%s' does not apply to %s", method, db:info().dbms))
  end
  if method ~= "mssql" then  -- (a SQL Server backup's path is on the server's machine)
    local fs = require "upkit.fs"
    local st = fs.stat(opts.to, { follow = true })
    if st and st.type == "dir" then
      upkit.error("EISDIR", "sql.backup: '" .. opts.to .. "' is a folder; give the backup file's path")
    end
    local folder = opts.to:match("^(.*)/[^/]*$") or "."
    if folder == "" then folder = "/" end
    local fst = fs.stat(folder, { follow = true })
    if not fst then upkit.error("ENOENT", "sql.backup: '" .. opts.to .. "': the folder '" .. folder .. "' does not exist") end
    if fst.type ~= "dir" then upkit.error("ENOTDIR", "sql.backup: '" .. opts.to .. "': '" .. folder .. "' is not a folder") end
  end
  local t0 = upkit.now()
  local o, done = terminal_progress("sql.backup", opts)
  local ok, r = pcall(lazy(method).backup, db, o)
  done()
  if not ok then error(r, 0) end
  r.method = method
  r.seconds = upkit.now() - t0
  return r
end

-- What kind of backup file is this? "sqlite", "logical" or "mssql". A SQL
-- Server backup is in Microsoft Tape Format, whose first block is "TAPE";
-- any other file is taken for one only when a SQL Server connection is
-- given (the server judges it), else it is BAD_FORMAT.
local function file_kind(path, fn, on_mssql)
  fn = fn or "sql.restore"
  if type(path) ~= "string" or path == "" then
    upkit.error("EINVAL", string.format("%s: expected a backup file's path, got %s", fn, type(path)))
  end
  local r <close> = require("upkit._backupfile").reader(path, fn)
  local head = r:magic(64)
  if head:sub(1, 16) == "SQLite format 3\0" then return "sqlite" end
  local magic = lazy("logical").MAGIC
  if head:sub(1, #magic) == magic or (#head < #magic and magic:sub(1, #head) == head and #head > 0) then
    return "logical"
  end
  if #head == 0 then upkit.error("BAD_FORMAT", fn .. ": '" .. path .. "': the file is empty") end
  if head:sub(1, 4) == "TAPE" or on_mssql then return "mssql" end
  upkit.error("BAD_FORMAT", string.format("%s: '%s' is not a backup upkit knows (a SQLite database, an upkit " ..
    "logical backup, or a SQL Server backup: pass { db = connection } for one)", fn, path), { path = path })
end
M.file_kind = file_kind

-- file_kind, except that on a SQL Server connection a file not readable here
-- is a SQL Server backup on the server's disk (the server reads it).
local function kind_on(path, db, fn)
  local on_mssql = db ~= nil and type(db) ~= "string" and engine(db) == "mssql"
  if on_mssql and type(path) == "string" then
    local f = io.open(path, "rb")
    if not f then return "mssql" end
    f:close()
  end
  return file_kind(path, fn, on_mssql)
end

-- sql.restore(target, { from =, database =, replace = false, progress = fn })
--   target: a connection, or a connection string (connected and closed here).
--   SQLite file backups: the target database is a file: `database` (a path;
--   relative to the connection's own file) or, when target is a connection
--   string, its Database= file.
--   --> { file, bytes, sha256, method, seconds, database, tables?, rows? }
function M.restore(target, opts)
  check_target("sql.restore", target)
  checkopts("sql.restore", opts, RESTORE_KEYS)
  if type(opts.from) ~= "string" then upkit.error("EINVAL", "sql.restore: option 'from' (a file) is required") end
  M.check_sha256("sql.restore", opts.sha256)
  local t0 = upkit.now()
  local kind = kind_on(opts.from, target, "sql.restore")
  local o, done = terminal_progress("sql.restore", opts)
  local r
  if kind == "sqlite" then
    r = lazy("sqlite").restore(target, o)
  else
    local db, own = target, false
    if type(target) == "string" then db, own = M.connect(target), true end
    local ok, res = pcall(lazy(kind).restore, db, o)
    if own then db:close() end
    done()
    if not ok then error(res, 0) end
    r = res
  end
  r.method = kind
  r.seconds = upkit.now() - t0
  return r
end

-- The digest a caller gives (opts.sha256): 64 hex digits, or EINVAL.
function M.check_sha256(fn, sha)
  if sha ~= nil and (type(sha) ~= "string" or not sha:match("^%x+$") or #sha ~= 64) then
    upkit.error("EINVAL", string.format("%s: option 'sha256' must be 64 hex digits, got %s", fn,
      type(sha) == "string" and ("'" .. sha .. "'") or type(sha)))
  end
  return sha and sha:lower()
end

-- sql.verify(file [, { sha256 =, db =, restore =, name =, data_dir =, log_dir = }]) -> { file, bytes, sha256, method, verified = true, ... }
-- A logical backup is read whole, every checksum and its structure checked;
-- a SQLite file is checked against the digest given (sha256) or else its
-- .sha256 file, which must then exist and be well formed; a SQL Server
-- backup needs db (the server reads it: it need not be visible here;
-- restore = true also restores it under a throw-away name and runs DBCC
-- CHECKDB). The file's digest must equal sha256 when given
-- (CHECKSUM_MISMATCH). Anything not verified raises; it never returns.
function M.verify(file, opts)
  opts = util.check_opts("sql.verify", opts, VERIFY_KEYS)
  M.check_sha256("sql.verify", opts.sha256)
  local kind = kind_on(file, opts.db, "sql.verify")
  local t0 = upkit.now()
  local r = lazy(kind).verify(file, opts)
  r.method = kind
  r.seconds = upkit.now() - t0
  return r
end

return M
