-- upkit.upgrade.database: what the procedures read and change in the Octopus database.
--
--   D.table_exists(db, name), D.column_exists(db, table, column)
--   D.harden_statements(db), D.harden_clone(db)    make a cloned database harmless
--   D.new_installation_id(db), D.installation_id(db)
--   D.counts(db)                  rows an upgrade must keep
--   D.previous_versions(db [, n]) installation history, newest first
--   D.schema_version(db)          the version the database was last upgraded to, or nil
--   D.restore(file, target_cs [, { replace = }])
--   D.new_guid()
--   D.odbc_connection(cs [, driver])  Octopus's ADO.NET string as ODBC for upkit (upkit.sql.connstr)
--   D.ado_connection(cs)              an ODBC string as ADO.NET for Octopus (a clone's, a test instance's)
local upkit = require "upkit"
local json = require "upkit.json"
local sql = require "upkit.sql"
local log = require "upkit.log"

local D = {}

function D.table_exists(db, name)
  if sql.engine(db) == "sqlite" then
    return db:first("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", name) ~= nil
  end
  return db:first("SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = ?", name) ~= nil
end

function D.column_exists(db, tbl, col)
  if sql.engine(db) == "sqlite" then
    for row in db:rows("SELECT name FROM pragma_table_info(?)", tbl) do
      if row.name == col then return true end
    end
    return false
  end
  return db:first("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = ? AND COLUMN_NAME = ?",
                  tbl, col) ~= nil
end

-- Statements that make a clone harmless (octopus-reference.md, "Making a clone harmless").
function D.harden_statements(db)
  local out = {}
  out[#out + 1] = "DELETE FROM OctopusServerNode"
  if D.table_exists(db, "OctopusServerNodeStatus") then out[#out + 1] = "DELETE FROM OctopusServerNodeStatus" end
  for _, t in ipairs { "Subscription", "ProjectTrigger", "Machine", "Worker" } do
    if D.table_exists(db, t) and D.column_exists(db, t, "IsDisabled") then
      out[#out + 1] = "UPDATE " .. t .. " SET IsDisabled = 1"
    end
  end
  out[#out + 1] = "DELETE FROM ExtensionConfiguration WHERE Id IN ('authentication-octopusid', 'jira-integration')"
  return out
end

-- D.harden_clone(db) -> { [statement] = rows affected }, in one transaction.
function D.harden_clone(db)
  local counts = {}
  local stmts = D.harden_statements(db)
  db:transaction(function()
    for _, s in ipairs(stmts) do counts[s] = db:exec(s) end
  end)
  return counts
end

-- A new lower-case random GUID (version 4), from the system's random source.
D.new_guid = upkit.uuid

local function availability(db)
  local row = db:first("SELECT JSON FROM Configuration WHERE Id = 'upgradeavailability'")
  if not row then upkit.error("NOT_FOUND", "the Configuration table has no 'upgradeavailability' row") end
  return json.decode(row.JSON)
end

-- D.new_installation_id(db) -> id: a new GUID in the upgradeavailability row ($.InstallationId).
function D.new_installation_id(db)
  local doc = availability(db)
  local id = D.new_guid()
  doc.InstallationId = id
  local n = db:exec("UPDATE Configuration SET JSON = ? WHERE Id = 'upgradeavailability'", json.encode(doc))
  if n ~= 1 then upkit.error("NOT_FOUND", "updating the installation id changed " .. tostring(n) .. " rows") end
  return id
end

function D.installation_id(db)
  return availability(db).InstallationId
end

-- Rows that an upgrade must keep: { Project =, Machine =, ServerTask =, ... }.
function D.counts(db)
  local out = {}
  for _, t in ipairs { "Project", "Environment", "Machine", "ServerTask", "Event" } do
    if D.table_exists(db, t) then out[t] = db:first("SELECT COUNT(*) AS n FROM " .. t).n end
  end
  return out
end

-- Previously installed versions, newest first (OctopusServerInstallationHistory).
function D.previous_versions(db, n)
  local q = sql.engine(db) == "mssql"
    and string.format("SELECT TOP %d [Version] FROM [dbo].[OctopusServerInstallationHistory] ORDER BY Installed DESC", n or 5)
    or string.format("SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC LIMIT %d", n or 5)
  local out = {}
  for row in db:rows(q) do out[#out + 1] = row.Version end
  return out
end

-- The version whose database upgrade last completed, or nil when the history is empty.
function D.schema_version(db)
  return D.previous_versions(db, 1)[1]
end

-- Does the string name an ODBC driver or DSN (it is ODBC already)?
local function is_odbc(cs)
  for _, p in ipairs(sql.connstr.parse_odbc_safe(cs)) do
    local k = p.key:lower()
    if k == "driver" or k == "dsn" or k == "filedsn" then return true end
  end
  return false
end

-- Passwords of a connection string are secrets (redacted from logs and the journal).
local function secrets(cs, odbc)
  local ok, list = pcall(odbc and sql.connstr.parse_odbc or sql.connstr.parse_ado, cs)
  for _, p in ipairs(ok and list or {}) do
    local k = p.key:lower()
    if k == "pwd" or k == "password" then log.secret(p.value) end
  end
  return cs
end

--[[
D.odbc_connection(cs [, driver]) -> ODBC string. Octopus's configuration holds
an ADO.NET (SqlClient) string; upkit connects through ODBC with the newest
Microsoft driver installed (or driver). A string that is ODBC already (it
names Driver= or DSN=) is returned as it is.
]]
function D.odbc_connection(cs, driver)
  if type(cs) ~= "string" or cs == "" then upkit.error("EINVAL", "odbc_connection: expected a connection string") end
  if is_odbc(cs) then return secrets(cs, true) end
  secrets(cs, false)
  return secrets((sql.connstr.to_odbc(cs, { driver = driver })), true)
end

--[[
D.ado_connection(cs) -> ADO.NET string for Octopus (database --connectionString).
An ODBC string loses its Driver= and ODBC-only keywords; a string that names
no driver or DSN is taken as ADO.NET already and returned as it is.
]]
function D.ado_connection(cs)
  if type(cs) ~= "string" or cs == "" then upkit.error("EINVAL", "ado_connection: expected a connection string") end
  if not is_odbc(cs) then return secrets(cs, false) end
  return secrets((sql.connstr.to_ado(cs)), false)
end

-- D.check_digest(file, sha256, what): the file's SHA-256 is the one backup.json recorded, or CHECKSUM_MISMATCH.
function D.check_digest(file, sha, what)
  local got = require("upkit.hash").file("sha256", file)
  if got ~= sha:lower() then
    upkit.error("CHECKSUM_MISMATCH", string.format("%s: '%s' has SHA-256 %s but backup.json recorded %s: the backup " ..
      "was changed or damaged since it was made; refusing it", what or "backup", file, got, sha:lower()), { path = file })
  end
  return got
end

--[[
D.restore(file, target_cs [, { replace = bool, sha256 = }]) -> result of sql.restore.
sha256: the digest backup.json recorded; the restore refuses a file that
does not match it (CHECKSUM_MISMATCH). A SQL Server backup on the server's
own disk (not readable here) is checked by the server instead.
target_cs is the ODBC connection string of the database to create (or, with
replace, to overwrite). The backup file's kind says how: a SQLite file
becomes the target's Database= file; a SQL Server backup is restored through
the server's master database under the name in Database=; a logical backup
is loaded into Database= through the server's postgres database.
]]
function D.restore(file, target_cs, opts)
  local replace = opts and opts.replace or false
  local sha = opts and opts.sha256
  local readable = io.open(file, "rb")
  if readable then readable:close() end
  local kind = readable and sql.file_kind(file) or "mssql"
  if kind == "sqlite" then
    return sql.restore(target_cs, { from = file, replace = replace, sha256 = sha })
  end
  if readable and sha then D.check_digest(file, sha, "restore") end
  local name = sql.conn_value(target_cs, "Database")
  if not name then
    upkit.error("EINVAL", "the target connection string names no Database=: " .. sql.redact(target_cs))
  end
  local admin = sql.with_value(target_cs, "Database", kind == "mssql" and "master" or "postgres")
  local db <close> = sql.connect(admin)
  return sql.restore(db, { from = file, database = name, replace = replace, sha256 = readable and sha or nil })
end

return D
