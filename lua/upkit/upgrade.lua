-- upkit.upgrade: the building blocks of the bundled Octopus upgrade procedures
-- (scripts/*.lua). Each function does one documented operation of the upgrade
-- guide (see octopus-reference.md) and raises an error object when it fails.
--
--   U.server{ exe =, instance =, timeout = }      the Octopus.Server command line
--   U.odbc_connection(cs)                          ADO.NET connection string -> ODBC
--   U.upgrade_path(from, to, available)            versions to install, in order
--   U.fetch_installer(version, dir, opts)          download + digest check
--   U.install(msiexec, file, sha256, log_dir)      run the installer (one retry for
--                                                  "local hard drive")
--   U.harden_clone(db)                             make a cloned database harmless
--   U.new_installation_id(db)                      give a clone its own identity
--   U.counts(db)                                   rows that must survive an upgrade
--   U.previous_versions(db)                        installation history, newest first
local upkit = require "upkit"
local fs = require "upkit.fs"
local proc = require "upkit.proc"
local json = require "upkit.json"
local log = require "upkit.log"
local version = require "upkit.version"

local U = {}

---------------------------------------------------------------------------
-- Parameters shared by the procedures (each procedure picks what it needs)
---------------------------------------------------------------------------

U.P = {
  server_url = { name = "server_url", type = "string", required = true,
                 describe = "URL of the Octopus Server (its web portal)" },
  api_key = { name = "api_key", type = "secret", required = true, env = "OCTOPUS_API_KEY",
              describe = "API key of a user with Administer System" },
  instance = { name = "instance", type = "string", default = "OctopusServer",
               describe = "Octopus Server instance name" },
  server_exe = { name = "server_exe", type = "path",
                 default = [[C:\Program Files\Octopus Deploy\Octopus\Octopus.Server.exe]],
                 describe = "the Octopus.Server executable" },
  msiexec = { name = "msiexec", type = "path", default = "msiexec", describe = "the Windows installer program" },
  db = { name = "db", type = "string",
         describe = "ODBC connection string of the Octopus database (default: read from show-configuration)" },
  backup_dir = { name = "backup_dir", type = "path", required = true,
                 describe = "folder for the backup (master key, licence, config, database, folders)" },
  download_url = { name = "download_url", type = "string", default = "https://download.octopusdeploy.com/octopus",
                   describe = "where installers Octopus.<version>-x64.msi are downloaded from" },
  versions_feed = { name = "versions_feed", type = "string", default = "https://octopus.com/download/upgrade/v3",
                    describe = "JSON list of released versions" },
  target_version = { name = "target_version", type = "string", default = "latest",
                     describe = "version to upgrade to, or 'latest'" },
  timeout = { name = "timeout", type = "number", default = 3600,
              describe = "seconds any one command (installer, database upgrade) may take" },
  verify_tls = { name = "verify_tls", type = "boolean", default = true,
                 describe = "verify the server's TLS certificate" },
}

-- Pick shared parameters by name, plus extra ones: U.params("server_url", ..., { extra })
function U.params(...)
  local out = {}
  for _, p in ipairs { ... } do
    if type(p) == "string" then
      out[#out + 1] = assert(U.P[p], "no shared parameter " .. p)
    else
      out[#out + 1] = p
    end
  end
  return out
end

---------------------------------------------------------------------------
-- The Octopus.Server command line
---------------------------------------------------------------------------

local Server = {}
Server.__index = Server

-- U.server{ exe =, instance =, timeout =, secrets = {...} } -> server command line
function U.server(o)
  return setmetatable({ exe = o.exe, instance = o.instance or "OctopusServer", timeout = o.timeout or 3600,
                        secrets = o.secrets or {} }, Server)
end

-- server:run(command, args...) -> stdout; raises with the command's stderr.
-- The output goes to the run's log file, except for commands that print secrets.
local QUIET = { ["show-master-key"] = true, ["show-configuration"] = true }

-- Commands that only read; any other may change what show-configuration says.
local READS = { ["show-master-key"] = true, ["show-configuration"] = true, ["version"] = true,
                ["list-instances"] = true }

function Server:run(command, ...)
  if not READS[command] then self.config_cache = nil end
  local argv = { self.exe, command, "--instance=" .. self.instance, ... }
  local r = proc.run(argv, { timeout = self.timeout, redact = self.secrets, ok = { 0 },
                             on_stdout = not QUIET[command] and function(line) log.debug("%s", line) end or nil })
  return r.stdout
end

function Server:show_master_key()
  local out = self:run("show-master-key", "--format=json")
  local key = json.decode(out).MasterKey
  if type(key) ~= "string" or key == "" then
    upkit.error("BAD_OUTPUT", "Octopus.Server show-master-key printed no master key")
  end
  log.secret(key)
  self.secrets[#self.secrets + 1] = key
  return key
end

-- show-configuration, read once until a command that may change it runs.
function Server:configuration()
  self.config_cache = self.config_cache or json.decode(self:run("show-configuration", "--format=json"))
  return self.config_cache
end

function Server:version()
  return json.decode(self:run("version", "--format=json")).Version
end

function Server:instances()
  return json.decode(self:run("list-instances", "--format=json"))
end

function Server:service(action)
  return self:run("service", "--" .. action)
end

function Server:upgrade_database(skip_license_check)
  if skip_license_check then return self:run("database", "--upgrade", "--skipLicenseCheck") end
  return self:run("database", "--upgrade")
end

function Server:drain(on)
  return self:run("node", "--drain=" .. tostring(on and true or false), "--wait=0")
end

-- The ODBC connection string of the instance's database.
function Server:connection_string()
  local cs = self:configuration()["Octopus.Storage.ExternalDatabaseConnectionString"]
  if type(cs) ~= "string" or cs == "" then
    upkit.error("BAD_OUTPUT", "show-configuration has no Octopus.Storage.ExternalDatabaseConnectionString")
  end
  return U.odbc_connection(cs)
end

-- The instance's folders from show-configuration: { Artifacts =, Packages =, TaskLogs =, EventExports = }
function Server:folders()
  local c = self:configuration()
  local f = {}
  for _, name in ipairs { "Artifacts", "Packages", "TaskLogs", "EventExports" } do
    local p = c["Octopus.Folders." .. name]
    if type(p) == "string" and p ~= "" then f[name] = p end
  end
  return f
end

---------------------------------------------------------------------------
-- Connection strings
---------------------------------------------------------------------------

local ADO_TO_ODBC = {
  ["server"] = "Server", ["data source"] = "Server", ["address"] = "Server", ["addr"] = "Server",
  ["database"] = "Database", ["initial catalog"] = "Database",
  ["user id"] = "UID", ["uid"] = "UID", ["user"] = "UID",
  ["password"] = "PWD", ["pwd"] = "PWD",
  ["encrypt"] = "Encrypt", ["trustservercertificate"] = "TrustServerCertificate",
}

--[[
U.odbc_connection(cs [, driver]) -> ODBC connection string. Octopus stores an
ADO.NET string (Server=...;Database=...;Integrated Security=SSPI); ODBC wants
Driver=...;Server=...;Database=...;Trusted_Connection=yes. A string that names
a Driver already is returned as it is.
]]
function U.odbc_connection(cs, driver)
  if cs:lower():find("driver%s*=") then return cs end
  local parts = { "Driver={" .. (driver or "ODBC Driver 18 for SQL Server") .. "}" }
  for pair in cs:gmatch("[^;]+") do
    local k, v = pair:match("^%s*(.-)%s*=%s*(.-)%s*$")
    if k then
      local lk = k:lower()
      if lk == "integrated security" or lk == "trusted_connection" then
        local lv = v:lower()
        if lv == "true" or lv == "sspi" or lv == "yes" then parts[#parts + 1] = "Trusted_Connection=yes" end
      elseif ADO_TO_ODBC[lk] then
        if ADO_TO_ODBC[lk] == "PWD" then log.secret(v) end
        if v:find("[;{}]") then v = "{" .. v:gsub("}", "}}") .. "}" end
        parts[#parts + 1] = ADO_TO_ODBC[lk] .. "=" .. v
      end
    end
  end
  return table.concat(parts, ";")
end

---------------------------------------------------------------------------
-- Versions and installers
---------------------------------------------------------------------------

--[[
U.upgrade_path(from, to, available) -> { versions to install in order, ending with to }.
The documented stops: from before 2021.1 to 2023.4 or later, go to 2021.1 first;
from 2024.3 or earlier to 2025.4 or later, stop at a version between 2024.3.600
and 2025.4.10666. available is the list of released versions (the feed).
]]
function U.upgrade_path(from, to, available)
  local cmp = version.compare
  if cmp(to, from) < 0 then
    upkit.error("EINVAL", string.format("target version %s is older than the installed %s", to, from))
  end
  local sorted = {}
  for _, v in ipairs(available) do sorted[#sorted + 1] = v end
  table.sort(sorted, function(a, b) return cmp(a, b) < 0 end)
  local function newest(lo, hi)  -- newest available v with lo <= v <= hi
    local best
    for _, v in ipairs(sorted) do
      if cmp(v, lo) >= 0 and cmp(v, hi) <= 0 then best = v end
    end
    return best
  end
  local path, cur = {}, from
  if cmp(cur, "2021.1.0") < 0 and cmp(to, "2023.4.0") >= 0 then
    local stop = newest("2021.1.0", "2021.1.999999")
    if not stop then upkit.error("NO_VERSION", "the upgrade needs a stop at 2021.1, and no 2021.1 release is available") end
    path[#path + 1], cur = stop, stop
  end
  if cmp(cur, "2024.3.600") < 0 and cmp(to, "2025.4.10666") > 0 then
    local stop = newest("2024.3.600", "2025.4.10666")
    if not stop then
      upkit.error("NO_VERSION", "the upgrade needs a stop between 2024.3.600 and 2025.4.10666, and no such release is available")
    end
    path[#path + 1], cur = stop, stop
  end
  if cmp(to, cur) > 0 then path[#path + 1] = to end
  return path
end

-- The newest version in a list.
function U.latest(available)
  local best
  for _, v in ipairs(available) do
    if not best or version.compare(v, best) > 0 then best = v end
  end
  return best
end

function U.msi_name(v) return "Octopus." .. v .. "-x64.msi" end

--[[
U.fetch_installer(client, version, dir, { download_url = , sha256 = }) -> { file, sha256 }
Downloads Octopus.<version>-x64.msi into dir (resuming, atomic). The expected
digest comes from opts.sha256, else from SHA256SUMS beside the installers.
A file already there with the right digest is not downloaded again.
]]
function U.fetch_installer(client, v, dir, opts)
  local name = U.msi_name(v)
  local base = opts.download_url:gsub("/+$", "")
  local want = opts.sha256
  if not want then
    local r = client:get(base .. "/SHA256SUMS", { expect = { 200 } })
    for line in r.body:gmatch("[^\n]+") do
      local digest, file = line:match("^(%x+)%s+%*?(.-)%s*$")
      if file == name then want = digest:lower() end
    end
    if not want then upkit.error("NO_DIGEST", string.format("no SHA-256 digest for %s in %s/SHA256SUMS", name, base)) end
  end
  fs.mkdirs(dir)
  local file = dir .. "/" .. name
  if fs.exists(file) and require("upkit.hash").file("sha256", file) == want then
    log.info("installer %s already downloaded and verified", name)
    return { file = file, sha256 = want }
  end
  client:download(base .. "/" .. name, file, { sha256 = want, resume = true })
  log.info("downloaded %s (sha256 %s)", name, want)
  return { file = file, sha256 = want }
end

--[[
U.install(msiexec, file, sha256, log_dir, timeout) -> { code, restart_needed, log }
Runs the installer after checking its digest. When the installer fails with
"Installation directory must be on a local hard drive", it is run once more
with WIXUI_DONTVALIDATEPATH="1", as Octopus documents.
]]
function U.install(msiexec, file, sha256, log_dir, timeout)
  local installer = require "upkit.installer"
  fs.mkdirs(log_dir)
  local base = log_dir .. "/install-" .. file:match("([^/\\]+)$")
  local function attempt(extra, suffix)
    return installer.run { file = file, sha256 = sha256, log = base .. suffix .. ".log",
                           program = { msiexec }, args = extra, timeout = timeout }
  end
  local ok, res = pcall(attempt, {}, "")
  if ok then return res end
  local text = fs.exists(base .. ".log") and fs.read(base .. ".log") or ""
  if text:find("must be on a local hard drive", 1, true) then
    log.warn("installer refused the installation folder; running it again with WIXUI_DONTVALIDATEPATH=\"1\"")
    return attempt({ 'WIXUI_DONTVALIDATEPATH="1"' }, "-retry")
  end
  error(res, 0)
end

---------------------------------------------------------------------------
-- Database: what the procedures read and change
---------------------------------------------------------------------------

local function table_exists(db, name)
  local dbms = db:info().dbms:lower()
  if dbms:find("sqlite") then
    return db:first("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", name) ~= nil
  end
  return db:first("SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = ?", name) ~= nil
end
U.table_exists = table_exists

local function column_exists(db, tbl, col)
  local dbms = db:info().dbms:lower()
  if dbms:find("sqlite") then
    for row in db:rows("SELECT name FROM pragma_table_info(?)", tbl) do
      if row.name == col then return true end
    end
    return false
  end
  return db:first("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = ? AND COLUMN_NAME = ?",
                  tbl, col) ~= nil
end

-- Statements that make a clone harmless (octopus-reference.md, "Making a clone harmless").
function U.harden_statements(db)
  local out = {}
  local function add(sql) out[#out + 1] = sql end
  add("DELETE FROM OctopusServerNode")
  if table_exists(db, "OctopusServerNodeStatus") then add("DELETE FROM OctopusServerNodeStatus") end
  for _, t in ipairs { "Subscription", "ProjectTrigger", "Machine", "Worker" } do
    if table_exists(db, t) and column_exists(db, t, "IsDisabled") then
      add("UPDATE " .. t .. " SET IsDisabled = 1")
    end
  end
  add("DELETE FROM ExtensionConfiguration WHERE Id IN ('authentication-octopusid', 'jira-integration')")
  return out
end

-- U.harden_clone(db) -> { [statement] = rows affected }, in one transaction.
function U.harden_clone(db)
  local counts = {}
  local stmts = U.harden_statements(db)
  db:transaction(function()
    for _, s in ipairs(stmts) do counts[s] = db:exec(s) end
  end)
  return counts
end

local function new_guid()
  return upkit.uuid()
end
U.new_guid = new_guid

--[[
U.new_installation_id(db) -> id: a new lower-case GUID in the upgradeavailability
row's JSON (dbo.Configuration, $.InstallationId).
]]
function U.new_installation_id(db)
  local row = db:first("SELECT JSON FROM Configuration WHERE Id = 'upgradeavailability'")
  if not row then upkit.error("NOT_FOUND", "the Configuration table has no 'upgradeavailability' row") end
  local doc = json.decode(row.JSON)
  local id = new_guid()
  doc.InstallationId = id
  local n = db:exec("UPDATE Configuration SET JSON = ? WHERE Id = 'upgradeavailability'", json.encode(doc))
  if n ~= 1 then upkit.error("NOT_FOUND", "updating the installation id changed " .. tostring(n) .. " rows") end
  return id
end

function U.installation_id(db)
  local row = db:first("SELECT JSON FROM Configuration WHERE Id = 'upgradeavailability'")
  return row and json.decode(row.JSON).InstallationId
end

-- Rows that an upgrade must keep: { Project =, Machine =, ServerTask =, ... }.
function U.counts(db)
  local out = {}
  for _, t in ipairs { "Project", "Environment", "Machine", "ServerTask", "Event" } do
    if table_exists(db, t) then out[t] = db:first("SELECT COUNT(*) AS n FROM " .. t).n end
  end
  return out
end

-- Previously installed versions, newest first (OctopusServerInstallationHistory).
function U.previous_versions(db, n)
  local dbms = db:info().dbms:lower()
  local sql = dbms:find("sql server")
    and string.format("SELECT TOP %d [Version] FROM [dbo].[OctopusServerInstallationHistory] ORDER BY Installed DESC", n or 5)
    or string.format("SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC LIMIT %d", n or 5)
  local out = {}
  for row in db:rows(sql) do out[#out + 1] = row.Version end
  return out
end

---------------------------------------------------------------------------
-- Handles a step needs, made from the parameters
---------------------------------------------------------------------------

-- The main instance's command line.
function U.cli(ctx)
  local p = ctx.params
  ctx._cli = ctx._cli or U.server { exe = p.server_exe, instance = p.instance, timeout = p.timeout }
  return ctx._cli
end

-- The main instance's REST API (connected once per process).
function U.api(ctx)
  if not ctx._api then
    local p = ctx.params
    ctx._api = require("upkit.octopus").connect { url = p.server_url, api_key = p.api_key, verify = p.verify_tls }
  end
  return ctx._api
end

-- The main instance's database connection string (parameter, or from show-configuration).
function U.db_connection(ctx)
  if ctx.params.db then return U.odbc_connection(ctx.params.db) end
  ctx.state.db_connection = ctx.state.db_connection or U.cli(ctx):connection_string()
  return ctx.state.db_connection
end

-- A fresh database connection; close it (local db <close> = U.connect(cs)).
function U.connect(cs)
  return require("upkit.sql").connect(cs)
end

-- An HTTP client for the download site.
function U.downloads(ctx)
  ctx._downloads = ctx._downloads or require("upkit.http").client { timeout = 600, retries = 3,
                                                                   verify = ctx.params.verify_tls }
  return ctx._downloads
end

-- The released versions: the feed's Version entries.
function U.released_versions(ctx)
  if not ctx._released then
    local r = U.downloads(ctx):get(ctx.params.versions_feed, { expect = { 200 } })
    local list = {}
    for _, e in ipairs(r:json()) do
      if type(e) == "table" and e.Version then list[#list + 1] = e.Version end
    end
    ctx._released = list
  end
  return ctx._released
end

-- The version to upgrade to: the parameter, or the newest released one.
function U.target(ctx)
  local t = ctx.params.target_version
  local released = U.released_versions(ctx)
  if t == "latest" then return U.latest(released) end
  for _, v in ipairs(released) do if v == t then return t end end
  upkit.error("NO_VERSION", string.format("version %s is not in the list of released versions (%s)", t,
                                          ctx.params.versions_feed))
end

-- Is the instance's service running? (list-instances)
function Server:running()
  for _, i in ipairs(self:instances()) do
    if i.InstanceName == self.instance then return i.Running == true end
  end
  return false
end

--[[
U.restore_database(file, target_cs [, { replace = bool }]) -> result of sql.restore.
target_cs is the ODBC connection string of the database to create (or, with
replace, to overwrite). SQLite: its Database= file. SQL Server: the server is
reached through the master database and the backup restored under the name in
Database=. Other engines: a logical restore into Database=.
]]
function U.restore_database(file, target_cs, opts)
  local sql = require "upkit.sql"
  local replace = opts and opts.replace or false
  local driver = (sql.conn_value(target_cs, "Driver") or ""):lower()
  if driver:find("sqlite") then
    return sql.restore(target_cs, { from = file, replace = replace })
  end
  local name = sql.conn_value(target_cs, "Database")
  if not name then
    upkit.error("EINVAL", "the target connection string names no Database=: " .. sql.redact(target_cs))
  end
  local admin = driver:find("sql server") and sql.with_value(target_cs, "Database", "master")
                or sql.with_value(target_cs, "Database", "postgres")
  local db <close> = sql.connect(admin)
  return sql.restore(db, { from = file, database = name, replace = replace })
end

--[[
U.upgrade_instance(ctx, cli, msiexec, target, log_dir, db_cs) -> list of versions installed.
Installs each version of the upgrade path in turn: download and check the
installer, stop the service, install, upgrade the database, start. The path
starts at the version whose database upgrade last completed (the installation
history), not at the installed program: after a failed database upgrade the
program is already newer than the schema. A hop whose program is installed is
not installed again, so a resumed upgrade goes on where it stopped.
]]
function U.upgrade_instance(ctx, cli, msiexec, target, log_dir, db_cs)
  local current = cli:version()
  if db_cs then
    local db <close> = U.connect(db_cs)
    local last = U.previous_versions(db, 1)[1]
    if last and version.compare(last, current) < 0 then
      ctx.log("the database was last upgraded to %s; the program is %s", last, current)
      current = last
    end
  end
  local hops = U.upgrade_path(current, target, U.released_versions(ctx))
  if #hops == 0 then ctx.log("already at %s", current) end
  if #hops > 1 then ctx.log("upgrade path: %s -> %s", current, table.concat(hops, " -> ")) end
  local done = {}
  for _, hop in ipairs(hops) do
    local inst = U.fetch_installer(U.downloads(ctx), hop, ctx.run_dir .. "/installers",
                                   { download_url = ctx.params.download_url })
    if cli:running() then cli:service("stop") end
    if version.compare(cli:version(), hop) < 0 then
      local r = U.install(msiexec, inst.file, inst.sha256, log_dir, ctx.params.timeout)
      ctx.log("installed %s%s", hop, r.restart_needed and " (Windows asks for a restart)" or "")
    end
    ctx.log("upgrading the database to %s", hop)
    cli:upgrade_database(ctx.params.skip_license_check)
    cli:service("start")
    done[#done + 1] = hop
  end
  return done
end

-- U.wait_api(url, api_key, verify, timeout) -> octopus server object, once /api answers.
function U.wait_api(url, api_key, verify, timeout)
  local octopus = require "upkit.octopus"
  local deadline = upkit.now() + (timeout or 60)
  while true do
    local ok, s = pcall(octopus.connect, { url = url, api_key = api_key, verify = verify })
    if ok then return s end
    if upkit.now() > deadline then error(s, 0) end
    upkit.sleep(0.5)
  end
end

--[[
U.test_instance(ctx, api, db, expect) -> report. The checks of the guide's
"test the upgraded instance": version is the target, health is normal, counts of
projects, machines and tasks match the source, task logs and artifacts of old
deployments are readable, and the user's test function (expect.test) passes.
]]
function U.test_instance(ctx, api, db, expect)
  local problems = {}
  local v = api:version()
  if expect.version and version.compare(v, expect.version) ~= 0 then
    problems[#problems + 1] = string.format("version is %s, expected %s", v, expect.version)
  end
  local health = api:health()
  if health.IsOperatingNormally == false then
    problems[#problems + 1] = "health: " .. tostring(health.Description)
  end
  if expect.counts then
    local now = U.counts(db)
    for t, n in pairs(expect.counts) do
      if now[t] ~= n then problems[#problems + 1] = string.format("%s rows: %s, expected %d", t, tostring(now[t]), n) end
    end
  end
  for _, f in ipairs(expect.folders or {}) do
    local r = fs.verify(f.path, f.manifest)
    if #r.missing > 0 or #r.different > 0 then
      problems[#problems + 1] = string.format("%s: %d missing, %d different files", f.path, #r.missing, #r.different)
    end
  end
  if expect.test then
    local ok, err = pcall(expect.test, api, db, ctx)
    if not ok then problems[#problems + 1] = "test function: " .. tostring(err) end
  end
  if #problems > 0 then
    upkit.error("TEST_FAILED", "the upgraded instance failed its tests: " .. table.concat(problems, "; "))
  end
  ctx.log("instance tests passed: version %s, health normal, counts match, folders readable", v)
  return { version = v }
end

-- Bytes in a file or a folder tree (links not followed).
function U.tree_size(path)
  local lfs = require "lfs"
  local a = lfs.symlinkattributes(path)
  if not a then return 0 end
  if a.mode ~= "directory" then return a.size end
  local total = 0
  for name in lfs.dir(path) do
    if name ~= "." and name ~= ".." then total = total + U.tree_size(path .. "/" .. name) end
  end
  return total
end

-- Read a backup's backup.json.
function U.read_manifest(dir)
  local file = dir .. "/backup.json"
  if not fs.exists(file) then
    upkit.error("ENOENT", string.format("'%s' is not an upkit backup: it has no backup.json", dir))
  end
  return json.decode(fs.read(file))
end

---------------------------------------------------------------------------
-- Folders
---------------------------------------------------------------------------

--[[
U.backup_folders(folders, root) -> { [name] = mirror result }: each folder is
mirrored into root/<name> with its manifest root/<name>.SHA256SUMS (sha256sum -c
format, relative paths), every copied file read back and compared. Re-running
it finishes an interrupted backup.
]]
function U.backup_folders(folders, root)
  local results = {}
  fs.mkdirs(root)
  for name, path in pairs(folders) do
    if fs.exists(path) then
      results[name] = fs.mirror(path, root .. "/" .. name, { delete = true, manifest = root .. "/" .. name .. ".SHA256SUMS",
                                                             verify = true, progress = true })
      log.info("folder %s: %d files, %d copied, %d skipped (already there), %d bytes", name, results[name].files,
               results[name].copied, results[name].skipped, results[name].bytes)
    else
      log.warn("folder %s (%s) does not exist; nothing to back up", name, path)
    end
  end
  return results
end

--[[
U.restore_folders(root, folders) -> { [name] = mirror result }: the safe way of
the rollback guide. Each current folder is set aside, the backup copied in and
verified against its manifest; the set-aside copies are removed only when every
folder verified. Re-running it after an interruption finishes the job.
]]
function U.restore_folders(root, folders)
  local aside, results = {}, {}
  for name, path in pairs(folders) do
    local src, manifest = root .. "/" .. name, root .. "/" .. name .. ".SHA256SUMS"
    if fs.exists(src) then
      local side = path .. ".upkit-aside"
      if fs.exists(side) then
        -- a resumed restore: the set-aside copy is the original
        if fs.exists(path) then fs.remove(path, { recursive = true }) end
      elseif fs.exists(path) then
        local ok, err = os.rename(path, side)
        if not ok then upkit.error("EIO", string.format("cannot set %s aside: %s", path, tostring(err))) end
      end
      aside[name] = side
      fs.mkdirs(path)
      results[name] = fs.mirror(src, path, { delete = true })
      local v = fs.verify(path, manifest)
      if not v.ok then
        upkit.error("VERIFY_FAILED", string.format(
          "restored folder %s does not match the backup manifest (%d missing, %d different); the original is kept at %s",
          path, #v.missing, #v.different, side))
      end
    end
  end
  for _, side in pairs(aside) do
    if fs.exists(side) then fs.remove(side, { recursive = true }) end
  end
  return results
end

---------------------------------------------------------------------------
-- Lists, project packages and other nodes (test-instance, ha-upgrade)
---------------------------------------------------------------------------

-- U.split_list("a, b,,c") -> { "a", "b", "c" }: a comma-separated parameter.
function U.split_list(s)
  local out = {}
  for item in tostring(s or ""):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end

--[[
U.save_export(api, task_id, file [, space]) -> { file, bytes }: downloads the
package a project export task left as an artifact (2021.1+) into file, mode
0600 (sensitive values in it are sealed with the export password).
]]
function U.save_export(api, task_id, file, space)
  local items = api:get(api:path("artifacts", space or "Spaces-1"), { query = { regarding = task_id } }).Items or {}
  local content = items[1] and items[1].Links and items[1].Links.Content
  if not content then
    upkit.error("NOT_FOUND", string.format("the export task %s left no package among its artifacts", task_id))
  end
  local body = api:get(content)
  if type(body) ~= "string" or body == "" then
    upkit.error("BAD_RESPONSE", string.format("the export package of task %s is empty", task_id))
  end
  fs.write(file, body, { mode = "0600" })
  return { file = file, bytes = #body }
end

--[[
U.import_file(api, file, password, { space =, timeout = }) -> the finished task.
Imports a saved export package into another server (ImportSource of type
"file"; the file must be readable by that server) and waits for the task.
]]
function U.import_file(api, file, password, opts)
  opts = opts or {}
  log.secret(password)
  local reply = api:post(api:path("projects/import-export/import", opts.space or "Spaces-1"), {
    ImportSource = { Type = "file", Path = file },
    Password = { HasValue = true, NewValue = password } })
  if not reply.TaskId then upkit.error("BAD_RESPONSE", "the project import returned no TaskId") end
  return api:wait_task(reply.TaskId, { timeout = opts.timeout })
end

-- The node name an instance runs as (show-configuration), or nil.
function Server:node_name()
  local n = self:configuration()["Octopus.Server.NodeName"]
  return type(n) == "string" and n ~= "" and n or nil
end

-- server:create_api_key(user, purpose) -> a new API key for the user. Only where
-- the command line has `create-api-key` (the simulator does; Octopus Server does
-- not). The output is kept out of the log.
function Server:create_api_key(user, purpose)
  local r = proc.run({ self.exe, "create-api-key", "--instance=" .. self.instance, "--user=" .. user,
                       "--purpose=" .. purpose, "--format=json" },
                     { timeout = self.timeout, redact = self.secrets, ok = { 0 } })
  local ok, doc = pcall(json.decode, r.stdout)
  local key = ok and type(doc) == "table" and doc.ApiKey
  if type(key) ~= "string" or key == "" then
    upkit.error("BAD_OUTPUT", "Octopus.Server create-api-key printed no API key")
  end
  log.secret(key)
  self.secrets[#self.secrets + 1] = key
  return key
end

--[[
U.mark_nodes_offline(db, names) -> rows changed: the nodes' rows in
OctopusServerNode get IsOffline = 1. Only for nodes whose service was seen
stopped: the database upgrade (2023.2.9755+) refuses while a node looks alive,
and a node marks itself online again when it starts.
]]
function U.mark_nodes_offline(db, names)
  local n = 0
  for _, name in ipairs(names) do
    n = n + db:exec("UPDATE OctopusServerNode SET IsOffline = 1 WHERE Name = ?", name)
  end
  return n
end

---------------------------------------------------------------------------
-- Steps shared by the procedures. Each returns a step table; a procedure may
-- rename it or wrap its functions.
---------------------------------------------------------------------------

local S = {}
U.steps = S

local function hashfile(path) return require("upkit.hash").file("sha256", path) end

-- Preflight: the REST API answers with this key, the command line works.
function S.connect()
  return {
    name = "connect",
    describe = "reach the server's API and command line; note the installed version",
    check = function(ctx)
      local api = U.api(ctx)
      local v = U.cli(ctx):version()
      if version.compare(v, api:version()) ~= 0 then
        upkit.error("VERSION_MISMATCH", string.format("the command line reports %s but the API reports %s: is " ..
          "server_exe the program of instance %s?", v, api:version(), ctx.params.instance))
      end
      return true
    end,
    run = function(ctx)
      local v = U.api(ctx):version()
      ctx.log("Octopus Server %s at %s", v, ctx.params.server_url)
      return { source_version = v }
    end,
  }
end

-- The master key, written with mode 0600. Without it a database backup is useless.
function S.master_key()
  return {
    name = "backup-master-key",
    describe = "save the master key (show-master-key) with mode 0600",
    -- A key saved earlier in backup_dir must be this server's: a backup made with
    -- another key could never be restored.
    check = function(ctx)
      local file = ctx.params.backup_dir .. "/master-key.txt"
      if not fs.exists(file) then return true end
      if (fs.read(file):gsub("%s+$", "")) ~= U.cli(ctx):show_master_key() then
        upkit.error("MASTER_KEY_MISMATCH", string.format("the master key in %s is not the master key of instance %s: " ..
          "choose another backup_dir, or remove the file if it is stale", file, ctx.params.instance))
      end
      return true
    end,
    done = function(ctx) return fs.exists(ctx.params.backup_dir .. "/master-key.txt") end,
    run = function(ctx)
      fs.mkdirs(ctx.params.backup_dir, { mode = "0700" })
      local key = U.cli(ctx):show_master_key()
      local file = ctx.params.backup_dir .. "/master-key.txt"
      fs.write(file, key .. "\n", { mode = "0600" })
      ctx.log("master key saved to %s", file)
      return { master_key_file = file }
    end,
  }
end

-- The licence and the server configuration (file and show-configuration).
function S.licence_and_config()
  return {
    name = "backup-licence-config",
    describe = "save the licence, the instance's config file and its show-configuration output",
    done = function(ctx)
      local d = ctx.params.backup_dir
      return fs.exists(d .. "/license.xml") and fs.exists(d .. "/configuration.json")
    end,
    run = function(ctx)
      local d = ctx.params.backup_dir
      fs.mkdirs(d, { mode = "0700" })
      local lic = U.api(ctx):get("/api/licenses/licenses-current").LicenseText or ""
      fs.write(d .. "/license.xml", lic, { mode = "0600" })
      local cfg = U.cli(ctx):configuration()
      local cfgfile = cfg["Octopus.Server.ConfigurationFilePath"]
      if cfgfile and fs.exists(cfgfile) then
        -- the config file may hold secrets (a connection string password): 0600
        fs.write(d .. "/" .. ctx.params.instance .. ".config", fs.read(cfgfile), { mode = "0600" })
      end
      fs.write(d .. "/configuration.json", json.encode(cfg, { pretty = true }), { mode = "0600" })
      ctx.log("licence and configuration saved in %s", d)
      return { config_file = cfgfile }
    end,
  }
end

-- Maintenance mode on (remembering whether it was on already).
function S.maintenance_on(name)
  return {
    name = name or "maintenance-on",
    describe = "turn maintenance mode on: users cannot change anything or queue tasks",
    run = function(ctx)
      local api = U.api(ctx)
      local was = api:maintenance()
      if not was then api:set_maintenance(true) end
      ctx.log(was and "maintenance mode was already on" or "maintenance mode is on")
      return { maintenance_was_on = was }
    end,
  }
end

-- Maintenance mode back off, unless it was on before this procedure.
function S.maintenance_off(name)
  return {
    name = name or "maintenance-off",
    describe = "turn maintenance mode off again (unless it was on before)",
    run = function(ctx)
      if ctx.state.maintenance_was_on then
        ctx.log("maintenance mode was on before this procedure; leaving it on")
        return
      end
      U.api(ctx):set_maintenance(false)
      ctx.log("maintenance mode is off")
    end,
  }
end

-- Wait for running and queued tasks to finish.
function S.wait_idle()
  return {
    name = "wait-until-idle",
    describe = "wait until no task is executing, cancelling or queued",
    run = function(ctx)
      U.api(ctx):wait_until_idle { timeout = ctx.params.timeout }
    end,
  }
end

-- Database backup into backup_dir (the engine's own method where it has one).
function S.backup_database(name)
  return {
    name = name or "backup-database",
    describe = "back up the Octopus database (copy-only, checksummed)",
    check = function(ctx)
      local db <close> = U.connect(U.db_connection(ctx))
      return db:info().dbms ~= nil
    end,
    done = function(ctx)
      local b = ctx.state.database_backup
      return b ~= nil and fs.exists(b.file) and hashfile(b.file) == b.sha256
    end,
    run = function(ctx)
      fs.mkdirs(ctx.params.backup_dir)
      local db <close> = U.connect(U.db_connection(ctx))
      local r = require("upkit.sql").backup(db, { to = ctx.params.backup_dir .. "/database.bak" })
      ctx.log("database backed up to %s (%d bytes, %s, sha256 %s)", r.file, r.bytes, r.method, r.sha256)
      return { database_backup = { file = r.file, sha256 = r.sha256, bytes = r.bytes, method = r.method },
               source_counts = U.counts(db) }
    end,
  }
end

-- The folders (Artifacts, Packages, TaskLogs, EventExports), with manifests.
function S.backup_folders(name)
  return {
    name = name or "backup-folders",
    describe = "copy Artifacts, Packages, TaskLogs and EventExports into the backup, with SHA-256 manifests",
    run = function(ctx)
      local folders = U.cli(ctx):folders()
      local results = U.backup_folders(folders, ctx.params.backup_dir .. "/folders")
      local out = {}
      for k, r in pairs(results) do out[k] = { path = folders[k], files = r.files, bytes = r.bytes } end
      return { folders = out }
    end,
  }
end

-- Download and check the installers of the whole upgrade path, before any change.
function S.download_installers()
  return {
    name = "download-installers",
    describe = "download and check the installers of every version on the upgrade path",
    run = function(ctx)
      local target = U.target(ctx)
      local hops = U.upgrade_path(ctx.state.source_version, target, U.released_versions(ctx))
      for _, v in ipairs(hops) do
        U.fetch_installer(U.downloads(ctx), v, ctx.run_dir .. "/installers", { download_url = ctx.params.download_url })
      end
      ctx.log("upgrade path %s -> %s", ctx.state.source_version, #hops > 0 and table.concat(hops, " -> ") or "(none)")
      return { target = target, path = hops }
    end,
  }
end

-- The main instance's version, downloaded and installed on another server whose
-- installer program is the parameter msiexec_param (clone_msiexec, test_msiexec).
function S.install_same_version(msiexec_param, where)
  return {
    name = "install-same-version",
    describe = "download the main instance's version and install it on the " .. where,
    run = function(ctx)
      local v = ctx.state.source_version
      local inst = U.fetch_installer(U.downloads(ctx), v, ctx.run_dir .. "/installers",
                                     { download_url = ctx.params.download_url })
      local r = U.install(ctx.params[msiexec_param], inst.file, inst.sha256, ctx.run_dir .. "/logs", ctx.params.timeout)
      ctx.log("installed Octopus %s on the %s (exit code %d)", v, where, r.code)
    end,
  }
end

-- Start the service (if stopped), take the node out of drain, wait for the API.
function S.start_and_undrain(name)
  return {
    name = name or "start-and-undrain",
    describe = "start the service, take the node out of drain, wait until the API answers",
    run = function(ctx)
      local cli = U.cli(ctx)
      if not cli:running() then cli:service("start") end
      cli:drain(false)
      ctx._api = U.wait_api(ctx.params.server_url, ctx.params.api_key, ctx.params.verify_tls, 120)
    end,
  }
end

-- backup.json: what was saved where, with digests; the rollback reads it.
function S.write_manifest()
  return {
    name = "write-manifest",
    describe = "write backup.json: what was saved where, with digests",
    run = function(ctx)
      local d = ctx.params.backup_dir
      local files = {}
      for _, f in ipairs { "master-key.txt", "license.xml", "configuration.json", ctx.params.instance .. ".config" } do
        if fs.exists(d .. "/" .. f) then files[f] = hashfile(d .. "/" .. f) end
      end
      local m = {
        format = "upkit-octopus-backup/1", created = log.iso_now(), instance = ctx.params.instance,
        server_url = ctx.params.server_url, version = ctx.state.source_version,
        database = ctx.state.database_backup, folders = ctx.state.folders, files = files,
        counts = ctx.state.source_counts,
      }
      fs.write(d .. "/backup.json", json.encode(m, { pretty = true }), { mode = "0600" })
      ctx.log("backup of Octopus %s complete in %s", tostring(m.version), d)
      local names = {}
      for f in pairs(files) do names[#names + 1] = f end
      table.sort(names)
      for _, f in ipairs(names) do ctx.log("  %-28s sha256 %s", f, files[f]) end
      if m.database then ctx.log("  %-28s sha256 %s", "database.bak", m.database.sha256) end
      for k, f in pairs(m.folders or {}) do ctx.log("  folders/%-20s %d files, %d bytes", k, f.files, f.bytes) end
      return { manifest = d .. "/backup.json" }
    end,
  }
end

return U
