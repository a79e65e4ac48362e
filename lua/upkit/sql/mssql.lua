-- upkit.sql.mssql: Microsoft SQL Server backup, verification and restore
-- through its own T-SQL, with the checks a real server needs first.
--
-- Statement builders (pure, testable as text):
--   mssql.ident(name), mssql.nstring(s)
--   mssql.backup_statement(db, file), mssql.verify_statement(file),
--   mssql.filelist_statement(file), mssql.header_statement(file),
--   mssql.moves(filelist, name, data_dir, log_dir), mssql.restore_statement(db, file, moves, replace)
-- Every server fact these rely on (statements, result columns, error numbers,
-- EngineEdition values, permissions) is cited in tests/sim/FIDELITY.md
-- section 10, and the scripted driver refuses any other form.
-- Checks a procedure's preflight can call (each reads only; none changes anything):
--   mssql.platform(db)                      -> { kind = "sqlserver"|"azure_sql_database"|"managed_instance"|"synapse"|"rds", ... }
--   mssql.check_platform(db, what)          -> platform, or UNSUPPORTED saying what to do instead
--   mssql.rights(db, database)              -> { login, sysadmin, dbcreator, create_database, backup, owner, exists }
--   mssql.check_backup_rights(db, database) -> rights, or PERMISSION_DENIED naming what is missing
--   mssql.check_restore_rights(db, database)-> rights, or PERMISSION_DENIED naming what is missing
--   mssql.check_path(db, file)              -> { folder, machine, service_account }, or NOT_FOUND / EISDIR
--   mssql.preflight(db, { database =, to =, restore = bool }) -> { platform, rights, path }
-- Operations (called by upkit.sql):
--   mssql.backup(db, opts), mssql.verify(file, opts), mssql.restore(db, opts)
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

function M.header_statement(file)
  return "RESTORE HEADERONLY FROM DISK = " .. M.nstring(file)
end

-- The server's default folders (SQL Server 2012 and later).
M.default_paths_query = "SELECT CAST(SERVERPROPERTY('InstanceDefaultDataPath') AS nvarchar(4000)) AS data_dir, " ..
  "CAST(SERVERPROPERTY('InstanceDefaultLogPath') AS nvarchar(4000)) AS log_dir"

-- What the server is (SERVERPROPERTY): EngineEdition 5 is Azure SQL
-- Database, 6 Azure Synapse Analytics, 8 Azure SQL Managed Instance, 11
-- Azure Synapse serverless SQL pool; Amazon RDS keeps an ordinary edition
-- but has its own rdsadmin database.
M.platform_query = "SELECT CAST(SERVERPROPERTY('EngineEdition') AS int) AS engine_edition, " ..
  "CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition, " ..
  "CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version, " ..
  "CAST(SERVERPROPERTY('MachineName') AS nvarchar(128)) AS machine, " ..
  "CAST(SERVERPROPERTY('ServerName') AS nvarchar(256)) AS server_name, " ..
  "CAST(DB_ID(N'rdsadmin') AS int) AS rdsadmin"

-- The login's rights for a database (Microsoft's BACKUP and RESTORE pages):
-- BACKUP needs sysadmin, db_owner or db_backupoperator, which
-- HAS_PERMS_BY_NAME(db, 'DATABASE', 'BACKUP DATABASE') answers; RESTORE over
-- an existing database needs sysadmin, dbcreator or being its owner (dbo; the
-- db_owner role is not enough); RESTORE of a new one needs CREATE DATABASE.
-- RESTORE VERIFYONLY, HEADERONLY and FILELISTONLY need CREATE DATABASE too
-- (their pages' Permissions), so every backup (verified) and restore does.
-- CREATE DATABASE is a permission in master, implied by the server's CREATE
-- ANY DATABASE (and so by dbcreator and sysadmin).
M.rights_query = "SELECT SUSER_SNAME() AS login, IS_SRVROLEMEMBER('sysadmin') AS sysadmin, " ..
  "IS_SRVROLEMEMBER('dbcreator') AS dbcreator, " ..
  "HAS_PERMS_BY_NAME(N'master', N'DATABASE', N'CREATE DATABASE') AS create_database, " ..
  "HAS_PERMS_BY_NAME(?, 'DATABASE', 'BACKUP DATABASE') AS can_backup, " ..
  "(SELECT CASE WHEN d.owner_sid = SUSER_SID() THEN 1 ELSE 0 END FROM sys.databases AS d WHERE d.name = ?) AS is_owner, " ..
  "DB_ID(?) AS database_id"

-- The newest backup of a database to a file, from the server's own history.
M.history_query = "SELECT TOP (1) bs.backup_finish_date AS finished, bs.backup_size AS backup_size, " ..
  "bs.compressed_backup_size AS compressed_size, bs.has_backup_checksums AS has_checksums, " ..
  "bs.is_copy_only AS copy_only, bmf.physical_device_name AS device " ..
  "FROM msdb.dbo.backupset AS bs JOIN msdb.dbo.backupmediafamily AS bmf ON bmf.media_set_id = bs.media_set_id " ..
  "WHERE bs.database_name = ? AND bmf.physical_device_name = ? ORDER BY bs.backup_finish_date DESC"

-- Free space of each volume that holds a database file (VIEW SERVER STATE;
-- VIEW SERVER PERFORMANCE STATE from SQL Server 2022), with the bytes the
-- files of the database being replaced (if any) hold there.
M.volumes_query = "SELECT vs.volume_mount_point AS mount, MAX(vs.available_bytes) AS available, " ..
  "SUM(CASE WHEN f.database_id = DB_ID(?) THEN CAST(f.size AS bigint) * 8192 ELSE 0 END) AS replaced " ..
  "FROM sys.master_files AS f CROSS APPLY sys.dm_os_volume_stats(f.database_id, f.file_id) AS vs " ..
  "GROUP BY vs.volume_mount_point"

M.service_query = "SELECT TOP (1) service_account FROM sys.dm_server_services WHERE servicename LIKE N'SQL Server (%'"

local function join(dir, file)
  if dir:match("[\\/]$") then return dir .. file end
  return dir .. (dir:find("/", 1, true) and not dir:find("\\", 1, true) and "/" or "\\") .. file
end

local function folder_of(path)
  return path:match("^(.*)[\\/][^\\/]*$") or ""
end

local function field(row, name)
  for k, v in pairs(row) do
    if k:lower() == name:lower() then return v end
  end
end

local null = require("upkit._sql").null

local function value(v)
  if v == null then return nil end
  return v
end

local function yes(v) return value(v) ~= nil and tonumber(v) == 1 or v == true end

-- New physical file names for each file of the backup (RESTORE FILELISTONLY:
-- LogicalName, PhysicalName, Type D/L/F/S, Size in bytes): data files into
-- data_dir, the log into log_dir, all named after the new database.
function M.moves(filelist, name, data_dir, log_dir)
  local out, ndata, nlog = {}, 0, 0
  for _, f in ipairs(filelist) do
    local kind, logical = field(f, "Type"), field(f, "LogicalName")
    local physical = tostring(value(field(f, "PhysicalName")) or "")
    local ext = physical:match("(%.[%w]+)$")
    local target
    if kind == "L" then
      nlog = nlog + 1
      target = join(log_dir, name .. (nlog == 1 and "_log" or ("_log" .. nlog)) .. (ext or ".ldf"))
    elseif kind == "S" or kind == "F" then
      -- a FILESTREAM, FileTable or In-Memory OLTP container (S) or a full-text
      -- catalog (F) is a folder: named after the database, no file extension
      ndata = ndata + 1
      target = join(data_dir, name .. "_" .. (kind == "S" and "fs" or "ft") .. ndata)
    else
      ndata = ndata + 1
      target = join(data_dir, name .. (ndata == 1 and "" or ("_" .. ndata)) .. (ext or (ndata == 1 and ".mdf" or ".ndf")))
    end
    out[#out + 1] = { logical, target, bytes = tonumber(value(field(f, "Size"))) or 0, log = kind == "L" }
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

---------------------------------------------------------------------------
-- Server errors in upkit's words
---------------------------------------------------------------------------

-- Windows error numbers SQL Server quotes: 3201 "Cannot open backup device
-- '%ls'. Operating system error %ls.", 3202 "Write on "%ls" failed: %ls" and
-- 3203 "Read on "%ls" failed: %ls", where %ls is "N(text)".
local OS_ERRORS = { [2] = "NOT_FOUND", [3] = "NOT_FOUND", [5] = "PERMISSION_DENIED", [32] = "EBUSY",
                    [53] = "CONNECT_FAILED", [67] = "NOT_FOUND", [112] = "ENOSPC", [1326] = "PERMISSION_DENIED" }
-- SQL Server's permission errors: 229 (object), 262 (statement), 300 (server state), 3110 (restore).
local PERMISSION = { [229] = true, [262] = true, [297] = true, [300] = true, [3110] = true }
-- A damaged backup: 3183 (error on a page), 3189 (damage detected), 3241 and
-- 3242 (not a valid backup set); DBCC CHECKDB's consistency errors are 8900-8999.
local function damaged(n) return n == 3183 or n == 3189 or n == 3241 or n == 3242 or (n and n >= 8900 and n < 9000) end

--[[
Re-raise a SQL error from the server with a code that says what happened to
the file or right (3201/3202/3203 with OS error 5 is PERMISSION_DENIED, 3
NOT_FOUND, 112 ENOSPC; 229/262/300 PERMISSION_DENIED; 3101 BUSY; a damaged backup or
a consistency error BAD_FORMAT), keeping sqlstate,
native and diagnostics; what prefixes the message.
]]
local function reraise(err, what)
  if type(err) ~= "table" or not err.diagnostics then error(err, 0) end
  local code = err.code
  local text = {}
  for _, d in ipairs(err.diagnostics) do
    text[#text + 1] = (d.message or ""):gsub("^%[Microsoft%]%[[^%]]*%]%[SQL Server%]", "")
    local n = tonumber(d.native)
    if n == 3201 or n == 3202 or n == 3203 or n == 3013 then
      local m = d.message or ""
      local os_err = tonumber(m:match("[Oo]perating system error (%d+)") or m:match("failed: (%d+)%("))
      if os_err and OS_ERRORS[os_err] then code = OS_ERRORS[os_err] end
    elseif n and PERMISSION[n] then
      code = "PERMISSION_DENIED"
    elseif n == 3101 then
      code = "BUSY"
    elseif damaged(n) then
      code = "BAD_FORMAT"
    end
  end
  upkit.error(code, what .. ": " .. table.concat(text, " "), {
    sqlstate = err.sqlstate or (err.diagnostics[1] and (err.diagnostics[1].sqlstate or err.diagnostics[1].state)),
    native = err.native, diagnostics = err.diagnostics,
  })
end
M.reraise = reraise

local function run(db, what, stmt, ...)
  local ok, r = pcall(db.exec, db, stmt, ...)
  if not ok then reraise(r, what) end
  return r
end

local function query(db, what, stmt, ...)
  local ok, r = pcall(db.query, db, stmt, ...)
  if not ok then reraise(r, what) end
  return r
end

local function first(db, what, stmt, ...)
  local ok, r = pcall(db.first, db, stmt, ...)
  if not ok then reraise(r, what) end
  return r
end

---------------------------------------------------------------------------
-- Platform, rights, paths
---------------------------------------------------------------------------

-- mssql.platform(db) -> { kind, engine_edition, edition, product_version, major, machine, server }
local platforms = setmetatable({}, { __mode = "k" })
function M.platform(db)
  if platforms[db] then return platforms[db] end
  local r = first(db, "mssql.platform", M.platform_query) or {}
  local ee = tonumber(value(r.engine_edition))
  local p = {
    engine_edition = ee, edition = value(r.edition) or "", product_version = value(r.product_version) or "",
    machine = value(r.machine) or "", server = value(r.server_name) or "",
    kind = ee == 5 and "azure_sql_database" or ee == 8 and "managed_instance"
      or (ee == 6 or ee == 11) and "synapse" or value(r.rdsadmin) and "rds" or "sqlserver",
  }
  p.major = tonumber(p.product_version:match("^(%d+)")) or 0
  platforms[db] = p
  return p
end

-- What to do instead, per platform and operation.
local ADVICE = {
  azure_sql_database = {
    name = "Azure SQL Database",
    backup = "it has no BACKUP DATABASE: take upkit's logical backup (sql.backup with method = \"logical\"), " ..
      "or rely on Azure's automatic backups and point-in-time restore (or CREATE DATABASE ... AS COPY OF)",
    restore = "it cannot RESTORE a .bak: restore upkit's logical backup into it, or use Azure's point-in-time restore",
  },
  managed_instance = {
    name = "Azure SQL Managed Instance",
    backup = "it only backs up to Azure Blob storage (BACKUP DATABASE ... TO URL = 'https://...' WITH COPY_ONLY, " ..
      "with a credential for the container), not to a disk file: take that backup yourself, use upkit's logical " ..
      "backup (method = \"logical\"), or the platform's point-in-time restore",
    restore = "it restores only FROM URL (Azure Blob storage): upload the backup and RESTORE ... FROM URL, " ..
      "or use the platform's point-in-time restore",
  },
  synapse = {
    name = "Azure Synapse Analytics",
    backup = "it has no BACKUP DATABASE: use its restore points (dedicated pool) or upkit's logical backup " ..
      "(method = \"logical\")",
    restore = "it cannot RESTORE a .bak: restore upkit's logical backup into it, or use its restore points",
  },
  rds = {
    name = "Amazon RDS for SQL Server",
    backup = "it does not allow BACKUP DATABASE TO DISK: use its native backup to S3 (exec msdb.dbo.rds_backup_database, " ..
      "with the SQLSERVER_BACKUP_RESTORE option group), an RDS snapshot, or upkit's logical backup (method = \"logical\")",
    restore = "it does not allow RESTORE FROM DISK: use msdb.dbo.rds_restore_database from S3, an RDS snapshot " ..
      "restore, or restore upkit's logical backup",
  },
}

--[[
mssql.check_platform(db, what) -> platform. what is "backup" or "restore".
Raises UNSUPPORTED before any change on Azure SQL Database, Managed Instance,
Azure Synapse and Amazon RDS, with what to do instead.
]]
function M.check_platform(db, what)
  local p = M.platform(db)
  local a = ADVICE[p.kind]
  if a then
    upkit.error("UNSUPPORTED", string.format("sql.%s: the server %s is %s (SQL Server %s): %s", what,
      p.server, a.name, p.product_version, a[what]), { platform = p.kind })
  end
  return p
end

-- mssql.rights(db, database) -> { login, sysadmin, dbcreator, create_database, backup, owner, exists }
function M.rights(db, database)
  local r = first(db, "mssql.rights", M.rights_query, database, database, database) or {}
  return {
    login = value(r.login) or "?", sysadmin = yes(r.sysadmin), dbcreator = yes(r.dbcreator),
    create_database = yes(r.create_database), backup = yes(r.can_backup),
    owner = yes(r.is_owner), exists = value(r.database_id) ~= nil,
  }
end

-- RESTORE VERIFYONLY, HEADERONLY and FILELISTONLY need CREATE DATABASE.
local function check_reads_backups(r, what)
  if not (r.sysadmin or r.dbcreator or r.create_database) then
    upkit.error("PERMISSION_DENIED", string.format(
      "%s: the login '%s' may not read backup files: RESTORE VERIFYONLY, HEADERONLY and FILELISTONLY need " ..
      "CREATE DATABASE permission (GRANT CREATE ANY DATABASE TO [%s], or the dbcreator server role)",
      what, r.login, r.login))
  end
end

function M.check_backup_rights(db, database)
  local r = M.rights(db, database)
  if not r.exists then
    upkit.error("NOT_FOUND", string.format("sql.backup: the server has no database %s", M.ident(database)))
  end
  if not (r.sysadmin or r.backup) then
    upkit.error("PERMISSION_DENIED", string.format(
      "sql.backup: the login '%s' may not back up %s: it needs the sysadmin server role, or the db_owner or " ..
      "db_backupoperator role in the database (ALTER ROLE db_backupoperator ADD MEMBER ...)", r.login, M.ident(database)))
  end
  check_reads_backups(r, "sql.backup (RESTORE VERIFYONLY of the new file)")
  return r
end

function M.check_restore_rights(db, database)
  local r = M.rights(db, database)
  if r.exists and not (r.sysadmin or r.dbcreator or r.owner) then
    upkit.error("PERMISSION_DENIED", string.format(
      "sql.restore: the login '%s' may not restore over %s: it needs the sysadmin or dbcreator server role, " ..
      "or to own the database (dbo); membership of db_owner is not enough (ALTER SERVER ROLE dbcreator ADD MEMBER [%s])",
      r.login, M.ident(database), r.login))
  elseif not r.exists and not (r.sysadmin or r.dbcreator or r.create_database) then
    upkit.error("PERMISSION_DENIED", string.format(
      "sql.restore: the login '%s' may not create %s: it needs CREATE DATABASE permission (CREATE ANY DATABASE, " ..
      "the dbcreator server role)", r.login, M.ident(database)))
  end
  check_reads_backups(r, "sql.restore")
  return r
end

-- The SQL Server service account, when the login may read sys.dm_server_services.
local function service_account(db)
  local ok, r = pcall(db.first, db, M.service_query)
  return ok and r and value(r.service_account) or "the SQL Server service account"
end

-- xp_fileexist is undocumented: like dbatools' Test-DbaPath, read its first
-- column as "the file exists" and its second as "it is a folder", whatever
-- their names.
local function fileexist(db, path)
  local q = query(db, "mssql.check_path", "EXEC master.dbo.xp_fileexist " .. M.nstring(path))
  local row, cols = q[1] or {}, q.columns or {}
  local function at(i) return cols[i] and yes(row[cols[i].name]) or false end
  return { exists = at(1), is_dir = at(2) }
end

--[[
mssql.check_path(db, file) -> { folder, machine, service_account, exists }
The backup file is written by the SQL Server service account on the database
server, not by upkit's user, and the path is the server's. dbatools'
Test-DbaPath asks the server itself: `EXEC master.dbo.xp_fileexist <path>`,
which runs as the service account and returns three flags (File Exists,
File is a Directory, Parent Directory Exists); the path passes when it is a
file or a folder. We do the same for the backup's folder (it must be a folder
the service account sees) and for the file (it must not be a folder). Like
Test-DbaPath this proves the service account can see the folder, not that it
may write there: the backup itself proves that (BACKUP ... WITH CHECKSUM
writes, RESTORE VERIFYONLY reads it back as the same account), and a failure
there says which right is missing (3201 with the operating system error).
xp_fileexist answers all zeros to a login that is not sysadmin, so then the
check cannot tell and says so in the result (checked = false).
]]
function M.check_path(db, file)
  local p = M.platform(db)
  local folder = folder_of(file)
  if folder == "" then
    upkit.error("EINVAL", "sql.backup: '" .. file .. "' is not a full path on the database server")
  end
  local r = M.rights(db, "master")
  local out = { folder = folder, machine = p.machine, checked = r.sysadmin }
  if not r.sysadmin then
    out.reason = "xp_fileexist tells only sysadmin logins what the service account sees"
    return out
  end
  local d = fileexist(db, folder)
  if not (d.is_dir or d.exists) then
    upkit.error("NOT_FOUND", string.format(
      "sql.backup: %s on %s cannot see the folder '%s' (xp_fileexist, as dbatools' Test-DbaPath): create it on the " ..
      "database server and give that account modify rights, or choose a folder it can write", service_account(db), p.machine, folder))
  end
  local f = fileexist(db, file)
  if f.is_dir then
    upkit.error("EISDIR", string.format("sql.backup: '%s' on %s is a folder; give the backup file's path", file, p.machine))
  end
  out.exists = f.exists
  return out
end

--[[
mssql.preflight(db, { database =, to =, restore = bool }) -> { platform, rights, path }
Everything a procedure should know before maintenance mode goes on; raises
UNSUPPORTED, PERMISSION_DENIED, NOT_FOUND or EISDIR with what to do.
]]
function M.preflight(db, opts)
  local database = opts.database or db:info().database
  local out = { platform = M.check_platform(db, opts.restore and "restore" or "backup") }
  out.rights = M.check_backup_rights(db, database)
  if opts.restore then M.check_restore_rights(db, database) end
  if opts.to then out.path = M.check_path(db, opts.to) end
  return out
end

---------------------------------------------------------------------------
-- Backup
---------------------------------------------------------------------------

-- Percent messages ("10 percent processed.") as progress.
local function watch(db, opts, phase)
  if not opts.progress then return end
  db:on_message(function(msg)
    local pct = tostring(msg):match("(%d+) percent processed")
    if pct then opts.progress { phase = phase, percent = tonumber(pct) } end
  end)
end

local function unwatch(db, opts)
  if opts.progress then db:on_message(nil) end
end

local function local_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:close()
  return size
end

local function hostname()
  local ok, h = pcall(require("upkit").hostname)
  return ok and h or ""
end
M.hostname = hostname

-- Is the server on this machine, with the backup's folder visible here?
local function on_this_machine(p, file)
  local dir = folder_of(file)
  if dir == "" then dir = "." end
  local short = function(h) return (h:match("^[^.]+") or h):lower() end  -- MachineName is the NetBIOS name
  return p.machine ~= "" and short(p.machine) == short(hostname()) and
    require("lfs").attributes(dir, "mode") == "directory"
end

local function header(db, file)
  local h = first(db, "sql.verify: RESTORE HEADERONLY of '" .. file .. "'", M.header_statement(file)) or {}
  return { database = value(field(h, "DatabaseName")), finished = value(field(h, "BackupFinishDate")),
           bytes = tonumber(value(field(h, "BackupSize"))) or 0, has_checksums = yes(field(h, "HasBackupChecksums")) }
end

-- The server's record of the backup just written to file: msdb's history,
-- or the file's own header when the login may not read msdb (229).
local function history(db, database, file)
  local ok, h = pcall(first, db, "sql.backup: reading msdb.dbo.backupset", M.history_query, database, file)
  if not ok then
    if not (type(h) == "table" and h.code == "PERMISSION_DENIED") then error(h, 0) end
    local hd = header(db, file)
    hd.source = "RESTORE HEADERONLY (msdb.dbo.backupset is not readable: " .. tostring(h.message) .. ")"
    return hd
  end
  if not h then
    upkit.error("BAD_RESPONSE", string.format("sql.backup: msdb.dbo.backupset has no backup of %s to '%s'",
      M.ident(database), file))
  end
  return {
    finished = value(h.finished), has_checksums = yes(h.has_checksums), copy_only = yes(h.copy_only),
    bytes = tonumber(value(h.compressed_size)) or tonumber(value(h.backup_size)) or 0, source = "msdb.dbo.backupset",
  }
end

--[[
mssql.backup(db, { to =, database =, progress =, visible_as =, test = }) ->
  { file, machine, server, database, location = "local"|"server", reachable,
    bytes, size_from, finished, verified = { ... }, sha256 (when reachable), digest, summary, tested? }
Stops with UNSUPPORTED (Azure, Managed Instance, RDS), PERMISSION_DENIED or
NOT_FOUND before the server writes anything. The server writes the file;
when it runs on this machine and the folder is visible here, it writes a
temporary file that is verified, hashed and renamed into place. Otherwise
the file stays on the server (location = "server") and is described by the
server's checksum, RESTORE VERIFYONLY and msdb's backup history; its SHA-256
is computed only when upkit can read it (visible_as: where this machine sees
the server's file, a mounted share for instance). digest always says which.
]]
function M.backup(db, opts)
  local database = opts.database or db:info().database
  local p = M.check_platform(db, "backup")
  M.check_backup_rights(db, database)
  local here = on_this_machine(p, opts.to)
  if not here then M.check_path(db, opts.to) end
  local file = here and (opts.to .. ".partial") or opts.to
  watch(db, opts, "backup")
  local ok, err = pcall(function()
    run(db, string.format("sql.backup: %s on %s to '%s'", M.ident(database), p.machine, file),
        M.backup_statement(database, file))
    run(db, "sql.backup: RESTORE VERIFYONLY of '" .. file .. "'", M.verify_statement(file))
  end)
  unwatch(db, opts)
  if not ok then
    if here then os.remove(file) end
    error(err, 0)
  end
  local h = history(db, database, file)
  local r = {
    file = opts.to, machine = p.machine, server = p.server, database = database,
    location = here and "local" or "server", finished = h.finished, bytes = h.bytes, size_from = h.source,
    verified = { "CHECKSUM", "RESTORE VERIFYONLY" }, reachable = false,
  }
  if not h.has_checksums then
    upkit.error("BAD_FORMAT", string.format("sql.backup: msdb says the backup of %s to '%s' has no checksums", M.ident(database), file))
  end
  local seen = here and file or opts.visible_as
  local size = seen and local_size(seen)
  if size then
    r.reachable, r.bytes, r.size_from = true, size, "file"
    r.sha256 = require("upkit.hash").file("sha256", seen)
    r.verified[#r.verified + 1] = "sha256"
    if here then require("upkit.fs").rename(file, opts.to) end
    r.digest = "sha256:" .. r.sha256
  else
    r.digest = string.format("none: the file is on %s and not readable from this machine; the server checked it " ..
      "(CHECKSUM, RESTORE VERIFYONLY)", p.machine)
  end
  if opts.test then
    r.tested = M.verify(opts.to, { db = db, restore = true }).tested
    r.verified[#r.verified + 1] = "restore + DBCC CHECKDB"
  end
  r.summary = string.format("%s on %s (%d bytes, %s, finished %s)", r.file, r.machine, r.bytes,
    table.concat(r.verified, ", "), tostring(r.finished))
  return r
end

---------------------------------------------------------------------------
-- Restore
---------------------------------------------------------------------------

-- Bytes each target folder needs, checked against the free space of its volume.
local function check_space(db, moves, replacing)
  local need = {}
  for _, m in ipairs(moves) do
    local dir = folder_of(m[2])
    need[dir] = (need[dir] or 0) + (m.bytes or 0)
  end
  local ok, vols = pcall(db.query, db, M.volumes_query, replacing or "")
  if not ok then
    return { checked = false, reason = "free space unknown: sys.dm_os_volume_stats needs VIEW SERVER STATE (" ..
      tostring(type(vols) == "table" and vols.message or vols) .. ")" }
  end
  local out = { checked = true, folders = {} }
  for dir, bytes in pairs(need) do
    local best
    for _, v in ipairs(vols) do
      local mount = value(v.mount)
      if mount and dir:lower():sub(1, #mount) == mount:lower() and (not best or #mount > #value(best.mount)) then best = v end
    end
    if not best then
      out.checked = false
      out.reason = "free space unknown: no database file on the volume of '" .. dir .. "'"
    else
      local free = (tonumber(value(best.available)) or 0) + (tonumber(value(best.replaced)) or 0)
      out.folders[dir] = { need = bytes, free = free, volume = value(best.mount) }
      if free < bytes then
        upkit.error("ENOSPC", string.format("sql.restore: '%s' (volume %s) has %d MB free; the restore needs %d MB " ..
          "(RESTORE FILELISTONLY sizes)", dir, value(best.mount), free // 1000000, bytes // 1000000))
      end
    end
  end
  return out
end

-- RESTORE FILELISTONLY, the target folders and the MOVE list, space checked.
local function plan(db, file, name, opts, replacing)
  local filelist = query(db, "sql.restore: RESTORE FILELISTONLY of '" .. file .. "'", M.filelist_statement(file))
  local data_dir, log_dir = opts.data_dir, opts.log_dir
  if not data_dir or not log_dir then
    local d = first(db, "sql.restore", M.default_paths_query) or {}
    data_dir, log_dir = data_dir or value(d.data_dir), log_dir or value(d.log_dir)
  end
  if not data_dir or not log_dir then
    upkit.error("UNSUPPORTED", "sql.restore: the server has no default data or log folder " ..
      "(SERVERPROPERTY('InstanceDefaultDataPath') is NULL before the late-2015 updates of SQL Server 2012): " ..
      "pass data_dir and log_dir")
  end
  local moves = M.moves(filelist, name, data_dir, log_dir)
  return moves, check_space(db, moves, replacing and name)
end

local function restore_into(db, opts, file, name, moves)
  watch(db, opts, "restore")
  local ok, err = pcall(run, db, "sql.restore: " .. M.ident(name) .. " from '" .. file .. "'",
                        M.restore_statement(name, file, moves, opts.replace))
  unwatch(db, opts)
  if not ok then error(err, 0) end
end

--[[
mssql.restore(db, { from =, database =, replace =, data_dir =, log_dir =, progress = })
  -> { file, database, moves, replaced, space, bytes }
Before any change: the platform, the rights (sysadmin, dbcreator or dbo to
restore over a database), RESTORE VERIFYONLY, FILELISTONLY and the free
space of the target folders. Over an existing database (replace = true) the
database is set SINGLE_USER WITH ROLLBACK IMMEDIATE first, as dbatools does,
and MULTI_USER again afterwards whatever happened.
]]
function M.restore(db, opts)
  local name = opts.database
  if type(name) ~= "string" or name == "" then upkit.error("EINVAL", "sql.restore: option 'database' (the new name) is required") end
  M.check_platform(db, "restore")
  local rights = M.check_restore_rights(db, name)
  if rights.exists and not opts.replace then
    upkit.error("NOT_EMPTY", "sql.restore: database " .. M.ident(name) .. " exists; pass replace = true to overwrite")
  end
  local current = db:info().database
  if rights.exists and type(current) == "string" and current:lower() == name:lower() then
    upkit.error("BUSY", "sql.restore: this connection uses " .. M.ident(name) .. " itself, and RESTORE cannot replace " ..
      "the database of its own session (error 3102): connect to master (Database=master) to restore it")
  end
  run(db, "sql.restore: RESTORE VERIFYONLY of '" .. opts.from .. "'", M.verify_statement(opts.from))
  local moves, space = plan(db, opts.from, name, opts, rights.exists)
  if rights.exists then
    run(db, "sql.restore: ending the other sessions of " .. M.ident(name),
        "ALTER DATABASE " .. M.ident(name) .. " SET SINGLE_USER WITH ROLLBACK IMMEDIATE")
    local ok, err = pcall(restore_into, db, opts, opts.from, name, moves)
    local back, berr = pcall(run, db, "sql.restore: setting " .. M.ident(name) .. " back to MULTI_USER",
                             "ALTER DATABASE " .. M.ident(name) .. " SET MULTI_USER")
    if not ok then error(err, 0) end
    if not back then error(berr, 0) end
  else
    restore_into(db, opts, opts.from, name, moves)
  end
  return { file = opts.from, database = name, moves = moves, replaced = rights.exists, space = space,
           bytes = local_size(opts.from) or 0 }
end

---------------------------------------------------------------------------
-- Verify
---------------------------------------------------------------------------

--[[
mssql.verify(file, { db =, restore = bool, name =, data_dir =, log_dir = })
  -> { file, database, finished, bytes, verified = { ... }, tested? }
RESTORE VERIFYONLY ... WITH CHECKSUM on the server (which reads the file:
it need not be visible here), RESTORE HEADERONLY for what the backup holds.
restore = true tests it the way dbatools' Test-DbaLastBackup does: restore
under a throw-away name into the default folders, DBCC CHECKDB, drop it.
]]
function M.verify(file, opts)
  local db = opts and opts.db
  if not db then
    upkit.error("EINVAL", "sql.verify: '" .. file .. "' is a SQL Server backup: RESTORE VERIFYONLY runs on the " ..
      "server, so pass { db = connection }")
  end
  run(db, "sql.verify: RESTORE VERIFYONLY of '" .. file .. "'", M.verify_statement(file))
  local h = header(db, file)
  local r = { file = file, database = h.database, finished = h.finished,
              bytes = local_size(file) or h.bytes, verified = { "CHECKSUM", "RESTORE VERIFYONLY" } }
  if not opts.restore then return r end
  M.check_platform(db, "restore")
  local name = opts.name or string.format("upkit_verify_%s_%d", tostring(h.database or "db"):gsub("[^%w_]", "_"), os.time())
  M.check_restore_rights(db, name)
  if M.rights(db, name).exists then
    upkit.error("NOT_EMPTY", "sql.verify: the throw-away database " .. M.ident(name) .. " exists already")
  end
  local moves = plan(db, file, name, opts, false)
  restore_into(db, { progress = opts.progress }, file, name, moves)
  local ok, err = pcall(run, db, "sql.verify: DBCC CHECKDB of the restored copy " .. M.ident(name),
                        "DBCC CHECKDB (" .. M.ident(name) .. ") WITH NO_INFOMSGS, ALL_ERRORMSGS")
  local dropped, derr = pcall(run, db, "sql.verify: dropping the throw-away database " .. M.ident(name),
                              "DROP DATABASE " .. M.ident(name))
  if not ok then error(err, 0) end
  if not dropped then error(derr, 0) end
  r.tested = { name = name, checkdb = "clean", dropped = true }
  r.verified[#r.verified + 1] = "restore + DBCC CHECKDB"
  return r
end

return M
