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
local upkit = require "upkit"
local json = require "upkit.json"
local sql = require "upkit.sql"

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

--[[
D.restore(file, target_cs [, { replace = bool }]) -> result of sql.restore.
target_cs is the ODBC connection string of the database to create (or, with
replace, to overwrite). The backup file's kind says how: a SQLite file
becomes the target's Database= file; a SQL Server backup is restored through
the server's master database under the name in Database=; a logical backup
is loaded into Database= through the server's postgres database.
]]
function D.restore(file, target_cs, opts)
  local replace = opts and opts.replace or false
  local kind = sql.file_kind(file)
  if kind == "sqlite" then
    return sql.restore(target_cs, { from = file, replace = replace })
  end
  local name = sql.conn_value(target_cs, "Database")
  if not name then
    upkit.error("EINVAL", "the target connection string names no Database=: " .. sql.redact(target_cs))
  end
  local admin = sql.with_value(target_cs, "Database", kind == "mssql" and "master" or "postgres")
  local db <close> = sql.connect(admin)
  return sql.restore(db, { from = file, database = name, replace = replace })
end

return D
