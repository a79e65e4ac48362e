-- SQL Server connection strings both ways (ADO.NET <-> ODBC), every keyword
-- SqlClient and the ODBC Driver document, the newest installed driver, and
-- Driver 18's encryption default, through unixODBC with an odbcinst.ini.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local F = require "fakemssql"
local cs = sql.connstr

local D18 = "ODBC Driver 18 for SQL Server"
local function odbc(ado, o)
  o = o or {}
  o.driver = o.driver or D18
  return (cs.to_odbc(ado, o))
end
local function tail(ado, o) return (odbc(ado, o):gsub("^Driver=[^;]*;", "")) end

T.test("Data Source and its synonyms become Server, keeping tcp:, instance names and ports", function()
  T.eq(tail("Data Source=tcp:sql01.corp,1433"), "Server=tcp:sql01.corp,1433;Encrypt=no")
  T.eq(tail([[Server=(local)\SQLEXPRESS]]), [[Server=(local)\SQLEXPRESS;Encrypt=no]])
  T.eq(tail([[Address=.\SQLEXPRESS]]), [[Server=.\SQLEXPRESS;Encrypt=no]])
  T.eq(tail("Addr=10.0.0.5,14330"), "Server=10.0.0.5,14330;Encrypt=no")
  T.eq(tail("Network Address=np:\\\\sql01\\pipe\\sql\\query"), "Server=np:\\\\sql01\\pipe\\sql\\query;Encrypt=no")
end)

T.test("Initial Catalog/Database, User ID/UID/User and Password/PWD", function()
  T.eq(tail("Initial Catalog=Octopus;User ID=octo;Password=pw"), "Database=Octopus;UID=octo;PWD=pw;Encrypt=no")
  T.eq(tail("Database=Octopus;UID=octo;PWD=pw"), "Database=Octopus;UID=octo;PWD=pw;Encrypt=no")
  T.eq(tail("user=octo"), "UID=octo;Encrypt=no")
end)

T.test("Integrated Security / Trusted_Connection (true, yes, SSPI) become Trusted_Connection=yes; false is left out", function()
  for _, v in ipairs { "True", "yes", "SSPI", "sspi" } do
    T.eq(tail("Integrated Security=" .. v), "Trusted_Connection=yes;Encrypt=no")
  end
  T.eq(tail("Trusted_Connection=True"), "Trusted_Connection=yes;Encrypt=no")
  T.eq(tail("Integrated Security=False;User ID=sa"), "UID=sa;Encrypt=no")
  T.raises("EINVAL", cs.to_odbc, "Integrated Security=maybe", { driver = D18 })
end)

T.test("Encrypt is always said, so Driver 18's default cannot change what worked under Octopus", function()
  T.eq(tail("Server=a"), "Server=a;Encrypt=no")
  T.eq(tail("Server=a;Encrypt=True"), "Server=a;Encrypt=yes")
  T.eq(tail("Server=a;Encrypt=Mandatory"), "Server=a;Encrypt=yes")
  T.eq(tail("Server=a;Encrypt=false"), "Server=a;Encrypt=no")
  T.eq(tail("Server=a;Encrypt=Optional"), "Server=a;Encrypt=no")
  T.eq(tail("Server=a;Encrypt=Strict"), "Server=a;Encrypt=strict")
  T.eq(odbc("Server=a", { encrypt_default = "yes" }), "Driver=" .. D18 .. ";Server=a;Encrypt=yes")
  T.raises("EINVAL", cs.to_odbc, "Encrypt=sometimes", { driver = D18 })
end)

T.test("TrustServerCertificate, MultiSubnetFailover, ApplicationIntent and their spaced spellings", function()
  T.eq(tail("TrustServerCertificate=True"), "TrustServerCertificate=yes;Encrypt=no")
  T.eq(tail("Trust Server Certificate=false"), "TrustServerCertificate=no;Encrypt=no")
  T.eq(tail("MultiSubnetFailover=True"), "MultiSubnetFailover=yes;Encrypt=no")
  T.eq(tail("Multi Subnet Failover=True"), "MultiSubnetFailover=yes;Encrypt=no")
  T.eq(tail("ApplicationIntent=readonly"), "ApplicationIntent=ReadOnly;Encrypt=no")
  T.eq(tail("Application Intent=ReadWrite"), "ApplicationIntent=ReadWrite;Encrypt=no")
  T.raises("EINVAL", cs.to_odbc, "ApplicationIntent=ReadMostly", { driver = D18 })
end)

T.test("the other keywords with an ODBC equivalent", function()
  T.eq(tail("Application Name=Octopus;Workstation ID=web1;Failover Partner=sql02;MultipleActiveResultSets=True",
            { windows = true }),
    "APP=Octopus;WSID=web1;Failover_Partner=sql02;MARS_Connection=yes;Encrypt=no")
  T.eq(tail("AttachDBFilename=C:\\d\\o.mdf;Current Language=us_english;Connect Retry Count=3;Connect Retry Interval=10"),
    "AttachDBFileName=C:\\d\\o.mdf;Language=us_english;ConnectRetryCount=3;ConnectRetryInterval=10;Encrypt=no")
  T.eq(tail("Host Name In Certificate=sql.corp;Server Certificate=C:\\c.cer;IP Address Preference=IPv4First"),
    "HostnameInCertificate=sql.corp;ServerCertificate=C:\\c.cer;IpAddressPreference=IPv4First;Encrypt=no")
  T.eq(tail("Server SPN=MSSQLSvc/sql01:1433;Failover Partner SPN=MSSQLSvc/sql02:1433;Network Library=dbmssocn",
            { windows = true }),
    "ServerSPN=MSSQLSvc/sql01:1433;FailoverPartnerSPN=MSSQLSvc/sql02:1433;Network=dbmssocn;Encrypt=no")
  T.eq(tail("Authentication=Active Directory Password;Column Encryption Setting=Enabled"),
    "Authentication=ActiveDirectoryPassword;ColumnEncryption=Enabled;Encrypt=no")
  T.eq(tail("Authentication=Active Directory Managed Identity"), "Authentication=ActiveDirectoryMsi;Encrypt=no")
end)

T.test("Connect Timeout becomes the connection's timeout; client-only keywords are listed as ignored", function()
  local s, extra = cs.to_odbc("Server=a;Connect Timeout=45;Pooling=false;Max Pool Size=200;Persist Security Info=True;" ..
    "Packet Size=8192;Command Timeout=60", { driver = D18 })
  T.eq(s, "Driver=" .. D18 .. ";Server=a;Encrypt=no")
  T.eq(extra.timeout, 45)
  T.eq(extra.ignored, { "Pooling", "Max Pool Size", "Persist Security Info", "Packet Size", "Command Timeout" })
  T.eq(select(2, cs.to_odbc("Server=a;Timeout=5", { driver = D18 })).timeout, 5)
  T.eq(select(2, cs.to_odbc("Server=a;Connection Timeout=7", { driver = D18 })).timeout, 7)
end)

T.test("ADO.NET quoting: ' and \" quotes, the quote doubled, spaces kept inside, keys case-insensitive, last wins", function()
  local p = cs.parse_ado([[  data source = sql01 ;PASSWORD='a;b''c';User ID="x ""y"" ";initial catalog=A;Initial Catalog=B]])
  T.eq(p, { { key = "Data Source", value = "sql01" }, { key = "Password", value = "a;b'c" },
            { key = "User ID", value = 'x "y" ' }, { key = "Initial Catalog", value = "B" } })
  T.eq(tail([[Password='a;b}c']]), "PWD={a;b}}c};Encrypt=no")
  T.eq(cs.parse_ado("a==b=c")[1], { key = "a=b", value = "c" })
  T.raises("EINVAL", cs.parse_ado, "Server='open")
  T.raises("EINVAL", cs.parse_ado, "Server;Database=x")
end)

T.test("ODBC quoting: braces with } doubled, both ways", function()
  T.eq(cs.parse_odbc("Driver={ODBC Driver 18 for SQL Server};PWD={a;b}}c};UID=x"),
    { { key = "Driver", value = "ODBC Driver 18 for SQL Server" }, { key = "PWD", value = "a;b}c" }, { key = "UID", value = "x" } })
  T.eq(cs.quote_odbc("plain"), "plain")
  T.eq(cs.quote_odbc("a}b"), "{a}}b}")
  T.eq(cs.quote_ado("plain"), "plain")
  T.eq(cs.quote_ado("a;b"), '"a;b"')
  T.eq(cs.quote_ado('say "hi";'), [['say "hi";']])
  T.eq(cs.quote_ado([[both ' and "]]), [["both ' and """]])
  T.raises("EINVAL", cs.parse_odbc, "PWD={open")
end)

T.test("ODBC back to ADO.NET for Octopus, every keyword", function()
  local ado, extra = cs.to_ado("Driver={ODBC Driver 17 for SQL Server};Server=tcp:sql01\\OCTO,1433;Database=OctoClone;" ..
    "UID=octo;PWD={p;w};Trusted_Connection=no;Encrypt=yes;TrustServerCertificate=yes;MultiSubnetFailover=yes;" ..
    "ApplicationIntent=ReadOnly;APP=upkit;WSID=w1;Failover_Partner=sql02;MARS_Connection=yes;Language=us_english;" ..
    "ConnectRetryCount=2;ConnectRetryInterval=5;HostnameInCertificate=h;ServerCertificate=c;IpAddressPreference=IPv6First;" ..
    "ServerSPN=s;FailoverPartnerSPN=f;Network=dbmssocn;Authentication=ActiveDirectoryIntegrated;ColumnEncryption=Enabled;" ..
    "AttachDBFileName=x.mdf;AutoTranslate=no", { timeout = 30 })
  T.eq(ado, [[Data Source=tcp:sql01\OCTO,1433;Initial Catalog=OctoClone;User ID=octo;Password="p;w";Encrypt=True;]] ..
    "TrustServerCertificate=True;MultiSubnetFailover=True;ApplicationIntent=ReadOnly;Application Name=upkit;" ..
    "Workstation ID=w1;Failover Partner=sql02;MultipleActiveResultSets=True;Current Language=us_english;" ..
    "Connect Retry Count=2;Connect Retry Interval=5;Host Name In Certificate=h;Server Certificate=c;" ..
    "IP Address Preference=IPv6First;Server SPN=s;Failover Partner SPN=f;Network Library=dbmssocn;" ..
    "Authentication=Active Directory Integrated;Column Encryption Setting=Enabled;AttachDBFilename=x.mdf;Connect Timeout=30")
  T.eq(extra.ignored, { "AutoTranslate" })
  T.eq(cs.to_ado("Server=a;Trusted_Connection=yes;Encrypt=no"), "Data Source=a;Integrated Security=True;Encrypt=False")
  T.eq(cs.to_ado("Server=a;Encrypt=strict"), "Data Source=a;Encrypt=Strict")
  T.raises("EINVAL", cs.to_ado, "DSN=octopus")
end)

T.test("a round trip keeps what Octopus and the server need", function()
  local ado = [[Data Source=(local)\SQLEXPRESS;Initial Catalog=Octopus;Integrated Security=True;TrustServerCertificate=True]]
  local back = cs.to_ado(odbc(ado))
  T.eq(back, [[Data Source=(local)\SQLEXPRESS;Initial Catalog=Octopus;Integrated Security=True;TrustServerCertificate=True;Encrypt=False]])
  T.eq(cs.parse_ado(back)[2].value, "Octopus")
end)

T.test("a string that already names Driver= or DSN= is used as it is", function()
  local s = "Driver={ODBC Driver 17 for SQL Server};Server=a"
  T.eq(cs.to_odbc(s), s)
  T.eq(cs.to_odbc("DSN=octo"), "DSN=octo")
end)

T.test("the newest Microsoft driver is picked: 18, then 17, then the old SQL Server", function()
  T.eq(cs.pick_driver { "SQL Server", "ODBC Driver 17 for SQL Server", "ODBC Driver 18 for SQL Server", "PostgreSQL Unicode" },
    "ODBC Driver 18 for SQL Server")
  T.eq(cs.pick_driver { "SQL Server", "ODBC Driver 17 for SQL Server" }, "ODBC Driver 17 for SQL Server")
  T.eq(cs.pick_driver { "SQLite3", "SQL Server" }, "SQL Server")
  T.eq(cs.pick_driver { "SQLite3" }, nil)
  T.raises("NOT_FOUND", cs.to_odbc, "Server=a", { drivers = { "SQLite3" } })
end)

-- A child upkit with an odbcinst.ini naming the scripted driver as Microsoft's drivers.
local function child(srv, names, ado)
  local dir = srv.dir
  T.write_file(dir .. "/connect.lua", [[
local sql = require "upkit.sql"
local s, extra = sql.connstr.to_odbc(arg[1])
io.write(s, "\n")
local ok, e = pcall(sql.connect, s, { timeout = extra.timeout })
if ok then io.write("connected ", e:info().dbms, "\n") e:close()
else io.write("failed ", tostring(e.sqlstate or e.code), " ", tostring(e.native), " ", tostring(e), "\n") end
]])
  return T.run_upkit(dir, "run connect.lua " .. T.q(ado), { env = srv:odbcinst(names) })
end

T.test("through unixODBC: the newest installed driver is found in odbcinst.ini and loaded", function()
  local srv = F.new(T.tmpdir(), {})
  local out, errout, code = child(srv, { "ODBC Driver 17 for SQL Server", "ODBC Driver 18 for SQL Server", "SQL Server" },
    "Server=sql01;Initial Catalog=Octopus;User ID=octo;Password=pw")
  T.eq(code, 0, errout)
  T.contains(out, "Driver=ODBC Driver 18 for SQL Server;Server=sql01;Database=Octopus;UID=octo;PWD=pw;Encrypt=no")
  T.contains(out, "connected Microsoft SQL Server")
  local ev = srv:events()[1]
  T.eq(ev.driver, "ODBC Driver 18 for SQL Server")
  T.eq(ev.encrypt, false)
  T.ok(not T.read_file(srv.log_path):find("PWD=pw", 1, true), "the driver's log holds no password")
end)

T.test("Driver 18 against a self-signed server: Encrypt=yes alone fails as it would, TrustServerCertificate carried works", function()
  local srv = F.new(T.tmpdir(), { self_signed = true })
  local names = { "ODBC Driver 18 for SQL Server" }
  local out = child(srv, names, "Server=sqlexpress;Encrypt=True")
  T.contains(out, "failed")
  T.contains(out, "08001")
  T.contains(out, "certificate verify failed:self-signed certificate")
  out = child(srv, names, "Server=sqlexpress;Encrypt=True;TrustServerCertificate=True")
  T.contains(out, "connected Microsoft SQL Server")
  -- no Encrypt in Octopus's string (System.Data.SqlClient did not encrypt): still works under Driver 18
  out = child(srv, names, [[Server=.\SQLEXPRESS;Initial Catalog=Octopus;Integrated Security=SSPI]])
  T.contains(out, "Encrypt=no")
  T.contains(out, "connected Microsoft SQL Server")
end)

T.test("the scripted driver itself encrypts by default as Driver 18 does (the defect the carried Encrypt avoids)", function()
  local srv = F.new(T.tmpdir(), { self_signed = true })
  local env = srv:odbcinst { "ODBC Driver 18 for SQL Server" }
  T.write_file(srv.dir .. "/raw.lua", [[
local ok, e = pcall(require("upkit.sql").connect, "Driver={ODBC Driver 18 for SQL Server};Server=sqlexpress;Trusted_Connection=yes")
io.write(ok and "connected" or tostring(e.native) .. " " .. tostring(e), "\n")
]])
  local out = T.run_upkit(srv.dir, "run raw.lua", { env = env })
  T.contains(out, "certificate verify failed")
end)

T.test("login failures keep SQL Server's numbers: 18456 Login failed, 4060 Cannot open database", function()
  local srv = F.new(T.tmpdir(), { connect_error = {
    F.err(4060, [[Cannot open database "Octopus" requested by the login. The login failed.]], "42000"),
    F.err(18456, "Login failed for user 'octo'.", "28000") } })
  local e = T.raises("AUTH_FAILED", sql.connect, srv:conn())  -- 18456's class 28, though second
  T.eq(e.native, 4060)
  T.eq(e.diagnostics[2].native, 18456)
  T.contains(tostring(e), "Login failed for user 'octo'.")
  T.ok(not tostring(e):find("s3cr", 1, true), "no password in the message")
end)

T.done()
