-- upkit.upgrade.connstr: Octopus keeps an ADO.NET (SqlClient) connection
-- string; upkit talks ODBC. Both directions, for the keywords SqlClient and the
-- Microsoft ODBC drivers share. (A local converter until upkit.sql has one.)
--
--   connstr.odbc("Server=db;Database=Octopus;Integrated Security=SSPI")
--     --> "Driver={ODBC Driver 18 for SQL Server};Server=db;Database=Octopus;Trusted_Connection=yes"
--   connstr.ado("Driver={ODBC Driver 18 for SQL Server};Server=db;Database=Octopus;UID=u;PWD=p")
--     --> "Server=db;Database=Octopus;User ID=u;Password=p"
local upkit = require "upkit"
local log = require "upkit.log"

local M = {}
M.DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"

-- "k=v;k={v;w}" -> { { key, value }, ... } (ODBC braces; ADO.NET double quotes)
local function pairs_of(cs)
  local out, i, n = {}, 1, #cs
  while i <= n do
    local k, rest = cs:match("^%s*([^=;]-)%s*=%s*()", i)
    if not k then
      local j = cs:find(";", i, true)
      i = j and j + 1 or n + 1
    else
      local v
      local c = cs:sub(rest, rest)
      if c == "{" or c == '"' or c == "'" then
        local close = c == "{" and "}" or c
        local j, buf = rest + 1, {}
        while j <= n do
          local ch = cs:sub(j, j)
          if ch == close then
            if cs:sub(j + 1, j + 1) == close then buf[#buf + 1] = close; j = j + 2
            else j = j + 1 break end
          else buf[#buf + 1] = ch; j = j + 1 end
        end
        v = table.concat(buf)
        local semi = cs:find(";", j, true)
        i = semi and semi + 1 or n + 1
      else
        local semi = cs:find(";", rest, true)
        v = cs:sub(rest, (semi or n + 1) - 1):match("^(.-)%s*$")
        i = semi and semi + 1 or n + 1
      end
      if k ~= "" then out[#out + 1] = { k, v } end
    end
  end
  return out
end
M.parse = pairs_of

local ADO_TO_ODBC = {
  ["server"] = "Server", ["data source"] = "Server", ["address"] = "Server", ["addr"] = "Server",
  ["network address"] = "Server",
  ["database"] = "Database", ["initial catalog"] = "Database",
  ["user id"] = "UID", ["uid"] = "UID", ["user"] = "UID",
  ["password"] = "PWD", ["pwd"] = "PWD",
  ["encrypt"] = "Encrypt", ["trustservercertificate"] = "TrustServerCertificate",
  ["trust server certificate"] = "TrustServerCertificate",
  ["multisubnetfailover"] = "MultiSubnetFailover", ["multi subnet failover"] = "MultiSubnetFailover",
  ["applicationintent"] = "ApplicationIntent", ["application intent"] = "ApplicationIntent",
}
local ODBC_TO_ADO = {
  server = "Server", database = "Database", uid = "User ID", pwd = "Password", encrypt = "Encrypt",
  trustservercertificate = "TrustServerCertificate", multisubnetfailover = "MultiSubnetFailover",
  applicationintent = "ApplicationIntent",
}

local function yes(v)
  v = v:lower()
  return v == "true" or v == "sspi" or v == "yes"
end

local function odbc_value(v)
  if v:find("[;{}]") or v:match("^%s") or v:match("%s$") then return "{" .. v:gsub("}", "}}") .. "}" end
  return v
end

local function ado_value(v)
  if v:find("[;\"']") or v:match("^%s") or v:match("%s$") then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

-- Does the string name an ODBC driver or DSN (it is ODBC already)?
function M.is_odbc(cs)
  for _, kv in ipairs(pairs_of(cs)) do
    local k = kv[1]:lower()
    if k == "driver" or k == "dsn" or k == "filedsn" then return true end
  end
  return false
end

--[[
connstr.odbc(cs [, driver]) -> ODBC connection string. An ADO.NET string
(Server=...;Database=...;Integrated Security=SSPI) becomes
Driver={driver};Server=...;Database=...;Trusted_Connection=yes. A string that
names a Driver or DSN is returned as it is. Keywords ODBC has no equivalent
for (Connect Timeout, Pooling, ...) are left out.
]]
function M.odbc(cs, driver)
  if type(cs) ~= "string" or cs == "" then upkit.error("EINVAL", "connstr.odbc: expected a connection string") end
  if M.is_odbc(cs) then return cs end
  local parts = { "Driver={" .. (driver or M.DEFAULT_DRIVER) .. "}" }
  for _, kv in ipairs(pairs_of(cs)) do
    local lk, v = kv[1]:lower(), kv[2]
    if lk == "integrated security" or lk == "trusted_connection" then
      if yes(v) then parts[#parts + 1] = "Trusted_Connection=yes" end
    elseif ADO_TO_ODBC[lk] then
      if ADO_TO_ODBC[lk] == "PWD" then log.secret(v) end
      parts[#parts + 1] = ADO_TO_ODBC[lk] .. "=" .. odbc_value(v)
    end
  end
  return table.concat(parts, ";")
end

--[[
connstr.ado(cs) -> ADO.NET (SqlClient) connection string, for
`Octopus.Server database --connectionString`. SqlClient refuses keywords it
does not know, so Driver, DSN and driver-specific keywords are left out.
A string without Driver/DSN is taken as ADO.NET already and returned as it is.
]]
function M.ado(cs)
  if type(cs) ~= "string" or cs == "" then upkit.error("EINVAL", "connstr.ado: expected a connection string") end
  if not M.is_odbc(cs) then return cs end
  local parts = {}
  for _, kv in ipairs(pairs_of(cs)) do
    local lk, v = kv[1]:lower(), kv[2]
    if lk == "trusted_connection" then
      if yes(v) then parts[#parts + 1] = "Integrated Security=true" end
    elseif ODBC_TO_ADO[lk] then
      if lk == "pwd" then log.secret(v) end
      parts[#parts + 1] = ODBC_TO_ADO[lk] .. "=" .. ado_value(v)
    end
  end
  return table.concat(parts, ";")
end

return M
