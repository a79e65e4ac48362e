-- upkit.sql.connstr: SQL Server connection strings both ways. Octopus keeps an
-- ADO.NET (SqlClient) string; upkit connects through ODBC; a clone or a test
-- instance must be given an ADO.NET string back.
--
--   local cs = require "upkit.sql.connstr"
--   cs.parse_ado(s)           -> { {key=, value=}, ... } (canonical SqlClient keywords)
--   cs.parse_odbc(s)          -> { {key=, value=}, ... } (keys as written)
--   cs.to_odbc(ado [, { driver =, drivers =, encrypt_default = "no" }])
--       -> odbc string, { timeout =, ignored = { keyword, ... }, driver = }
--   cs.to_ado(odbc [, { timeout = }]) -> ADO.NET string, { ignored = { keyword, ... } }
--   cs.pick_driver(names)     -> the newest Microsoft driver's name in names, or nil
--   cs.installed_drivers()    -> names of the ODBC drivers unixODBC knows
--   cs.quote_ado(v), cs.quote_odbc(v)
--
-- Keywords: Microsoft's SqlConnection.ConnectionString reference and
-- Microsoft.Data.SqlClient's DbConnectionStringKeywords/Synonyms (every
-- synonym), and the "DSN and connection string keywords" page of the ODBC
-- Driver for SQL Server (tests/sim/FIDELITY.md section 10). Server names keep their form: "tcp:" and "np:"
-- prefixes, "host\instance", and a port after a comma mean the same to both.
-- Driver 18 encrypts and checks the certificate unless told otherwise, while
-- System.Data.SqlClient (Octopus before it moved to Microsoft.Data.SqlClient)
-- did not encrypt by default: the ODBC string always says Encrypt= (the
-- ADO.NET value, else encrypt_default) so a self-signed SQL Express that worked
-- under Octopus keeps working under Driver 18.
local upkit = require "upkit"

local M = {}

-- SqlClient keyword (lower case, synonyms included) -> canonical SqlClient name.
local ADO_NAMES = {}
local ADO_CANON = {
  { "Data Source", "server", "address", "addr", "network address" },
  { "Initial Catalog", "database" },
  { "User ID", "uid", "user" },
  { "Password", "pwd" },
  { "Integrated Security", "trusted_connection" },
  { "Encrypt" },
  { "TrustServerCertificate", "trust server certificate" },
  { "MultiSubnetFailover", "multi subnet failover" },
  { "ApplicationIntent", "application intent" },
  { "Connect Timeout", "connection timeout", "timeout", "connecttimeout" },
  { "Application Name", "app" },
  { "Workstation ID", "wsid", "workstationid" },
  { "Failover Partner", "failoverpartner" },
  { "MultipleActiveResultSets", "multiple active result sets" },
  { "AttachDBFilename", "extended properties", "initial file name" },
  { "Current Language", "language" },
  { "Authentication" },
  { "Column Encryption Setting", "columnencryption" },
  { "Connect Retry Count", "connectretrycount" },
  { "Connect Retry Interval", "connectretryinterval" },
  { "Host Name In Certificate", "hostnameincertificate" },
  { "Server Certificate", "servercertificate" },
  { "IP Address Preference", "ipaddresspreference" },
  { "Server SPN", "serverspn" },
  { "Failover Partner SPN", "failoverpartnerspn" },
  { "Network Library", "net", "network" },
  { "Packet Size", "packetsize" },
  { "Persist Security Info", "persistsecurityinfo" },
  { "Pooling" }, { "Max Pool Size" }, { "Min Pool Size" }, { "Enlist" },
  { "Load Balance Timeout", "connection lifetime" },
  { "Pool Blocking Period", "poolblockingperiod" },
  { "Transaction Binding" }, { "Type System Version" }, { "User Instance" }, { "Replication" },
  { "Context Connection" }, { "Asynchronous Processing", "async" }, { "Command Timeout" },
  { "Enclave Attestation Url" }, { "Attestation Protocol" }, { "Connection Reset" },
  { "Transparent Network IP Resolution", "transparentnetworkipresolution" },
}
for _, names in ipairs(ADO_CANON) do
  for _, n in ipairs(names) do ADO_NAMES[n:lower()] = names[1] end
  ADO_NAMES[names[1]:lower()] = names[1]
end

-- Canonical SqlClient name -> ODBC Driver keyword, for those with one.
local TO_ODBC = {
  ["Data Source"] = "Server", ["Initial Catalog"] = "Database", ["User ID"] = "UID", ["Password"] = "PWD",
  ["MultiSubnetFailover"] = "MultiSubnetFailover", ["ApplicationIntent"] = "ApplicationIntent",
  ["Application Name"] = "APP", ["Workstation ID"] = "WSID", ["Failover Partner"] = "Failover_Partner",
  ["AttachDBFilename"] = "AttachDBFileName", ["Current Language"] = "Language",
  ["Connect Retry Count"] = "ConnectRetryCount", ["Connect Retry Interval"] = "ConnectRetryInterval",
  ["Host Name In Certificate"] = "HostnameInCertificate", ["Server Certificate"] = "ServerCertificate",
  ["IP Address Preference"] = "IpAddressPreference", ["Server SPN"] = "ServerSPN",
  ["Failover Partner SPN"] = "FailoverPartnerSPN", ["Network Library"] = "Network",
}
-- The ODBC driver has these on Windows only (its keyword table: platform W).
local WINDOWS_ONLY = { ["Failover Partner"] = true, ["Failover Partner SPN"] = true }
local FROM_ODBC = {}
for ado, odbc in pairs(TO_ODBC) do FROM_ODBC[odbc:lower()] = ado end
FROM_ODBC["addr"], FROM_ODBC["address"] = "Data Source", "Data Source"
FROM_ODBC["net"] = "Network Library"

-- Authentication: SqlClient spells the methods with spaces, ODBC without.
local AUTH = {
  ["sql password"] = "SqlPassword", ["active directory password"] = "ActiveDirectoryPassword",
  ["active directory integrated"] = "ActiveDirectoryIntegrated",
  ["active directory interactive"] = "ActiveDirectoryInteractive",
  ["active directory managed identity"] = "ActiveDirectoryMsi", ["active directory msi"] = "ActiveDirectoryMsi",
  ["active directory service principal"] = "ActiveDirectoryServicePrincipal",
}
local AUTH_BACK = {
  sqlpassword = "Sql Password", activedirectorypassword = "Active Directory Password",
  activedirectoryintegrated = "Active Directory Integrated", activedirectoryinteractive = "Active Directory Interactive",
  activedirectorymsi = "Active Directory Managed Identity",
  activedirectoryserviceprincipal = "Active Directory Service Principal",
}

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function truthy(v, fn, key)
  local l = trim(v):lower()
  if l == "true" or l == "yes" or l == "sspi" then return true end
  if l == "false" or l == "no" then return false end
  upkit.error("EINVAL", string.format("%s: %s=%s is not true or false", fn, key, v))
end

--[[
The pairs of an ADO.NET string, in order, last one of a key kept in its first
place (SqlClient keeps the last value). Values may be quoted with ' or "
(the quote doubled inside); a key's '=' is written '=='.
]]
function M.parse_ado(s)
  if type(s) ~= "string" then upkit.error("EINVAL", "connstr.parse_ado: expected a string, got " .. type(s)) end
  local out, index, i, n = {}, {}, 1, #s
  while i <= n do
    while i <= n and s:sub(i, i):match("[%s;]") do i = i + 1 end
    if i > n then break end
    local key = {}
    while i <= n do
      local c = s:sub(i, i)
      if c == "=" then
        if s:sub(i + 1, i + 1) == "=" then key[#key + 1] = "=" i = i + 2 else break end
      elseif c == ";" then
        upkit.error("EINVAL", "connstr.parse_ado: '" .. trim(table.concat(key)) .. "' has no value")
      else
        key[#key + 1] = c
        i = i + 1
      end
    end
    if i > n then upkit.error("EINVAL", "connstr.parse_ado: '" .. trim(table.concat(key)) .. "' has no value") end
    i = i + 1
    while i <= n and s:sub(i, i):match("%s") do i = i + 1 end
    local q, value = s:sub(i, i), nil
    if q == "'" or q == '"' then
      local parts, j = {}, i + 1
      while true do
        local k = s:find(q, j, true)
        if not k then upkit.error("EINVAL", "connstr.parse_ado: a quoted value does not end") end
        parts[#parts + 1] = s:sub(j, k - 1)
        if s:sub(k + 1, k + 1) == q then parts[#parts + 1] = q j = k + 2 else i = k + 1 break end
      end
      value = table.concat(parts)
      while i <= n and s:sub(i, i):match("%s") do i = i + 1 end
      if i <= n and s:sub(i, i) ~= ";" then upkit.error("EINVAL", "connstr.parse_ado: text after a quoted value") end
    else
      local k = s:find(";", i, true) or n + 1
      value = trim(s:sub(i, k - 1))
      i = k
    end
    local raw = trim(table.concat(key))
    local canon = ADO_NAMES[raw:lower():gsub("%s+", " ")] or raw
    if index[canon:lower()] then
      out[index[canon:lower()]].value = value
    else
      out[#out + 1] = { key = canon, value = value }
      index[canon:lower()] = #out
    end
  end
  return out
end

-- The pairs of an ODBC string: values may be in braces, } doubled inside.
function M.parse_odbc(s)
  if type(s) ~= "string" then upkit.error("EINVAL", "connstr.parse_odbc: expected a string, got " .. type(s)) end
  local out, i, n = {}, 1, #s
  while i <= n do
    while i <= n and s:sub(i, i):match("[%s;]") do i = i + 1 end
    if i > n then break end
    local e = s:find("=", i, true)
    if not e then upkit.error("EINVAL", "connstr.parse_odbc: '" .. trim(s:sub(i)) .. "' has no value") end
    local key = trim(s:sub(i, e - 1))
    i = e + 1
    while i <= n and s:sub(i, i) == " " do i = i + 1 end
    local value
    if s:sub(i, i) == "{" then
      local parts, j = {}, i + 1
      while true do
        local k = s:find("}", j, true)
        if not k then upkit.error("EINVAL", "connstr.parse_odbc: the value of " .. key .. " has no closing }") end
        parts[#parts + 1] = s:sub(j, k - 1)
        if s:sub(k + 1, k + 1) == "}" then parts[#parts + 1] = "}" j = k + 2 else i = k + 1 break end
      end
      value = table.concat(parts)
      local k = s:find(";", i, true) or n + 1
      i = k
    else
      local k = s:find(";", i, true) or n + 1
      value = trim(s:sub(i, k - 1))
      i = k
    end
    out[#out + 1] = { key = key, value = value }
  end
  return out
end

-- An ODBC value, in braces when it needs them.
function M.quote_odbc(v)
  v = tostring(v)
  if v:find("[;{}=]") or v:match("^%s") or v:match("%s$") then return "{" .. v:gsub("}", "}}") .. "}" end
  return v
end

-- An ADO.NET value, quoted when it needs it (" preferred, ' when it holds ").
function M.quote_ado(v)
  v = tostring(v)
  if not (v:find("[;'\"]") or v:match("^%s") or v:match("%s$")) then return v end
  if not v:find('"', 1, true) then return '"' .. v .. '"' end
  if not v:find("'", 1, true) then return "'" .. v .. "'" end
  return '"' .. v:gsub('"', '""') .. '"'
end

--[[
The newest Microsoft ODBC driver for SQL Server among names: the highest
"ODBC Driver N for SQL Server" (18, then 17, ...), else the old "SQL Server".
]]
function M.pick_driver(names)
  local best, bestn
  for _, name in ipairs(names or {}) do
    local n = tonumber(name:match("^ODBC Driver (%d+) for SQL Server$"))
    if n and (not bestn or n > bestn) then best, bestn = name, n end
  end
  if best then return best end
  for _, name in ipairs(names or {}) do
    if name == "SQL Server" then return name end
  end
  return nil
end

-- The drivers unixODBC knows (odbcinst -q -d; it honours ODBCSYSINI and ODBCINSTINI).
function M.installed_drivers()
  local ok, r = pcall(require("upkit.proc").run, { "odbcinst", "-q", "-d" }, { timeout = 10 })
  local names = {}
  if not ok or r.code ~= 0 then return names end
  for name in r.stdout:gmatch("%[([^%]\n]+)%]") do names[#names + 1] = name end
  return names
end

local function encrypt_value(v, fn)
  local l = trim(v):lower()
  if l == "true" or l == "yes" or l == "mandatory" then return "yes" end
  if l == "false" or l == "no" or l == "optional" then return "no" end
  if l == "strict" then return "strict" end
  upkit.error("EINVAL", string.format("%s: Encrypt=%s is not true, false, mandatory, optional or strict", fn, v))
end

--[[
cs.to_odbc(ado [, { driver =, drivers =, encrypt_default =, windows = }]) -> ODBC string, extra
driver: the ODBC driver's name (default: the newest installed, from drivers or
cs.installed_drivers()). extra.timeout is Connect Timeout (ODBC sets it as
an attribute: sql.connect's timeout); extra.ignored lists the SqlClient
keywords that only concern the .NET client (pooling and the like), and
Failover Partner (SPN) off Windows, where the ODBC driver has no
Failover_Partner. windows: the platform (default: this one).
A string that already names a Driver= or DSN= is returned as it is.
]]
function M.to_odbc(ado, opts)
  local fn = "connstr.to_odbc"
  opts = opts or {}
  for _, p in ipairs(M.parse_odbc_safe(ado)) do
    local k = p.key:lower()
    if k == "driver" or k == "dsn" then return ado, { ignored = {} } end
  end
  local pairs_ = M.parse_ado(ado)
  local driver = opts.driver or M.pick_driver(opts.drivers or M.installed_drivers())
  if not driver then
    upkit.error("NOT_FOUND", fn .. ": no Microsoft ODBC driver for SQL Server is installed " ..
                "(install ODBC Driver 18 for SQL Server, msodbcsql18)")
  end
  local out = { "Driver=" .. M.quote_odbc(driver) }
  local extra = { ignored = {}, driver = driver }
  local windows = opts.windows
  if windows == nil then windows = package.config:sub(1, 1) == "\\" end
  local encrypt
  for _, p in ipairs(pairs_) do
    local k, v = p.key, p.value
    if k == "Integrated Security" then
      if truthy(v, fn, k) then out[#out + 1] = "Trusted_Connection=yes" end
    elseif k == "Encrypt" then
      encrypt = encrypt_value(v, fn)
    elseif k == "TrustServerCertificate" or k == "MultipleActiveResultSets" then
      out[#out + 1] = (k == "TrustServerCertificate" and k or "MARS_Connection") .. "=" .. (truthy(v, fn, k) and "yes" or "no")
    elseif k == "MultiSubnetFailover" then
      out[#out + 1] = k .. "=" .. (truthy(v, fn, k) and "yes" or "no")
    elseif k == "ApplicationIntent" then
      local l = v:lower()
      if l ~= "readonly" and l ~= "readwrite" then upkit.error("EINVAL", fn .. ": ApplicationIntent=" .. v .. " is not ReadOnly or ReadWrite") end
      out[#out + 1] = "ApplicationIntent=" .. (l == "readonly" and "ReadOnly" or "ReadWrite")
    elseif k == "Connect Timeout" then
      extra.timeout = tonumber(v) or upkit.error("EINVAL", fn .. ": Connect Timeout=" .. v .. " is not a number")
    elseif k == "Authentication" then
      out[#out + 1] = "Authentication=" .. (AUTH[v:lower()] or v:gsub("%s+", ""))
    elseif k == "Column Encryption Setting" then
      out[#out + 1] = "ColumnEncryption=" .. v
    elseif TO_ODBC[k] and not (WINDOWS_ONLY[k] and not windows) then
      out[#out + 1] = TO_ODBC[k] .. "=" .. M.quote_odbc(v)
    else
      extra.ignored[#extra.ignored + 1] = k
    end
  end
  encrypt = encrypt or opts.encrypt_default or "no"
  -- Strict (TDS 8.0) is a Driver 18 value; Driver 17 and the old driver take yes and no only
  local major = driver == "SQL Server" and 0 or tonumber(driver:match("^ODBC Driver (%d+) for SQL Server$"))
  if encrypt == "strict" and major and major < 18 then
    upkit.error("UNSUPPORTED", fn .. ": Encrypt=Strict needs ODBC Driver 18 for SQL Server or later; '" .. driver ..
                "' knows only yes and no (install msodbcsql18)")
  end
  out[#out + 1] = "Encrypt=" .. encrypt
  return table.concat(out, ";"), extra
end

-- parse_odbc that never raises (for telling the two syntaxes apart).
function M.parse_odbc_safe(s)
  local ok, r = pcall(M.parse_odbc, s)
  return ok and r or {}
end

--[[
cs.to_ado(odbc [, { timeout = }]) -> ADO.NET string for Octopus, { ignored = }.
Driver= is dropped; ODBC-only keywords (AutoTranslate, QuotedId, ...) are
listed in ignored; a DSN's own settings cannot be carried (EINVAL).
]]
function M.to_ado(odbc, opts)
  local fn = "connstr.to_ado"
  opts = opts or {}
  local out, ignored = {}, {}
  local function add(k, v) out[#out + 1] = k .. "=" .. M.quote_ado(v) end
  for _, p in ipairs(M.parse_odbc(odbc)) do
    local k, v = p.key:lower(), p.value
    local l = v:lower()
    if k == "dsn" or k == "filedsn" then
      upkit.error("EINVAL", fn .. ": a DSN's settings live in odbc.ini; give the server and database instead")
    elseif k == "driver" then
      -- ADO.NET names no driver
    elseif k == "trusted_connection" then
      if l == "yes" or l == "true" then add("Integrated Security", "True") end
    elseif k == "encrypt" then
      local e = encrypt_value(v, fn)
      add("Encrypt", e == "yes" and "True" or e == "no" and "False" or "Strict")
    elseif k == "trustservercertificate" or k == "multisubnetfailover" or k == "mars_connection" then
      local name = k == "trustservercertificate" and "TrustServerCertificate"
        or k == "multisubnetfailover" and "MultiSubnetFailover" or "MultipleActiveResultSets"
      add(name, truthy(v, fn, p.key) and "True" or "False")
    elseif k == "applicationintent" then
      add("ApplicationIntent", l == "readonly" and "ReadOnly" or "ReadWrite")
    elseif k == "authentication" then
      add("Authentication", AUTH_BACK[l] or v)
    elseif k == "columnencryption" then
      add("Column Encryption Setting", v)
    elseif FROM_ODBC[k] then
      add(FROM_ODBC[k], v)
    else
      ignored[#ignored + 1] = p.key
    end
  end
  if opts.timeout then add("Connect Timeout", tostring(opts.timeout)) end
  return table.concat(out, ";"), { ignored = ignored }
end

return M
