-- octofix: a simulated Octopus site for procedure tests: a started main instance,
-- a download site, an empty new server for clones, and helpers to run upkit.
--
--   local F = require("octofix").new{ version = "3.17.14", files = 20 }
--   F.main (octosim create's JSON), F.site_url, F.clone (new server), F.dir
--   F:config{ extra = ... } -> path of a config file for the procedures
--   F:upkit(args [, env]) -> stdout, stderr, exit code
--   F:sql(query) -> rows of the main database (through upkit.sql)
--   F:machine(name) another empty server; F:add_node([machine]) a second node of the
--                main instance on the new server or that machine (HA)
--   F:stop()     stops every service and server it started
--   octofix.program_version(exe), octofix.answers(url)
local T = require "upkit.test"
local json = require "upkit.json"
local proc = require "upkit.proc"
local sql = require "upkit.sql"

local M = {}
local Fix = {}
Fix.__index = Fix

local SIM = "tests/sim/octosim.py"

-- A stopped 2019+ node marks itself offline a moment later (2 s in the simulator):
-- the fixtures shorten the delay to keep the tests quick.
M.ENV = { OCTOSIM_FAULT_NODE_OFFLINE_DELAY = "0.05" }
local ENV_SH = {}   -- the same, as shell words
for k, v in pairs(M.ENV) do ENV_SH[#ENV_SH + 1] = k .. "=" .. T.q(v) end
ENV_SH = table.concat(ENV_SH, " ")

local function octosim(...)
  local r = proc.run({ "python3", SIM, ... }, { timeout = 120, ok = { 0 }, env = M.ENV })
  return json.decode(r.stdout)
end
M.octosim = octosim

function M.free_port()
  local r = proc.run({ "python3", "-c",
    "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" }, { ok = { 0 } })
  return tonumber(r.stdout:match("%d+"))
end

function M.new(o)
  o = o or {}
  local self = setmetatable({ dir = T.tmpdir(), started = {} }, Fix)
  local args = { "create", "--home", self.dir .. "/main", "--version", o.version or "3.17.14", "--start" }
  if o.files then args[#args + 1] = "--files"; args[#args + 1] = tostring(o.files) end
  if o.package_mb then args[#args + 1] = "--package-mb"; args[#args + 1] = tostring(o.package_mb) end
  if o.machines then args[#args + 1] = "--machines"; args[#args + 1] = tostring(o.machines) end
  self.main = octosim(table.unpack(args))
  self.started[#self.started + 1] = { exe = self.main.server_exe, instance = self.main.instance }
  self.clone = octosim("machine", "--root", self.dir .. "/new-server")
  self.clone_port = M.free_port()
  self.clone_url = string.format("http://127.0.0.1:%d/", self.clone_port)
  self.clone_db_file = self:new_database("OctopusClone").file
  self.site = proc.spawn({ "python3", SIM, "download-site", "--dir", self.main.downloads, "--port", "0" },
                         { stderr = "null", env = M.ENV })
  self.site_url = self.site:lines()()
  T.write_file(self.dir .. "/api-key", self.main.api_key .. "\n")
  return self
end

-- A database NAME on the simulated SQL Server of the new server: { ado =, odbc = } (the
-- server gets the ADO.NET string; upkit reaches the same database through ODBC).
function Fix:new_database(name)
  local folder = self.main.sqlserver and (self.dir .. "/new-server/sqlserver") or (self.dir .. "/new-server")
  os.execute("mkdir -p " .. T.q(folder))
  local odbc = "Driver=SQLite3;Database=" .. folder .. "/" .. name .. ".db"
  if not self.main.sqlserver then return { ado = odbc, odbc = odbc, file = folder .. "/" .. name .. ".db" } end
  return { ado = "Data Source=" .. folder .. ";Initial Catalog=" .. name, odbc = odbc, file = folder .. "/" .. name .. ".db" }
end

-- A config file with the site's values; extra fields are added or override.
function Fix:config(extra, name)
  local clone_db = self:new_database("OctopusClone")
  local cfg = {
    server_url = self.main.url, server_exe = self.main.server_exe, instance = self.main.instance,
    msiexec = self.main.msiexec, backup_dir = self.dir .. "/backup", db = self.main.connection_string,
    service_control = self.main.sc or "", file_version = self.main.filever or "",
    download_url = self.site_url .. "/octopus", versions_feed = self.site_url .. "/download/upgrade/v3",
    installer_digests = self.main.downloads .. "/SHA256SUMS",  -- the operator's list (Octopus publishes none)
    clone_server_exe = self.clone.server_exe, clone_msiexec = self.clone.msiexec,
    clone_service_control = self.clone.sc or "", clone_file_version = self.clone.filever or "",
    clone_home = self.clone.machine .. "/Octopus", clone_db = clone_db.ado, clone_odbc = clone_db.odbc,
    clone_url = self.clone_url, timeout = 120,
  }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  if cfg.clone_server_exe then self.started[#self.started + 1] = { exe = cfg.clone_server_exe, instance = "OctopusServer" } end
  local path = self.dir .. "/" .. (name or "site") .. ".json"
  T.write_file(path, json.encode(cfg))
  return path
end

-- Run upkit in the fixture's folder: stdout, stderr, exit code.
function Fix:upkit(args, env) return T.run_upkit(self.dir, args, { env = ENV_SH .. " " .. (env or "") }) end

-- The arguments every procedure run gets: config, API key file, runs folder.
function Fix:args(config)
  return string.format("--config %s --set api_key_file=%s --runs %s", T.q(config), T.q(self.dir .. "/api-key"),
                       T.q(self.dir .. "/runs"))
end

-- Query a database through upkit.sql: a list of rows.
function M.query(conn, q, ...)
  local db <close> = sql.connect(conn)
  local rows = db:query(q, ...)
  rows.columns = nil
  return rows
end

function Fix:sql(q, ...) return M.query(self.main.connection_string, q, ...) end

-- Every row of every table of a SQLite database, ordered: for row-for-row
-- comparisons. A running server's heartbeat (LastSeen of OctopusServerNode and
-- OctopusServerNodeStatus) is left out.
function M.dump(conn)
  local db <close> = sql.connect(conn)
  local out = {}
  for t in db:rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") do
    local rows = db:query("SELECT * FROM [" .. t.name .. "] ORDER BY 1")
    rows.columns = nil
    if t.name == "OctopusServerNode" or t.name == "OctopusServerNodeStatus" then
      for _, r in ipairs(rows) do r.LastSeen = nil end
    end
    out[t.name] = rows
  end
  return out
end

-- The manifest of a folder tree, as sha256sum -c reads it.
function M.tree_digest(dir)
  return (T.sh(string.format("cd %s && find . -type f -print0 | sort -z | xargs -0 -r sha256sum", T.q(dir))))
end

function Fix:api(path, key)
  local http = require "upkit.http"
  local c <close> = http.client { base = self.main.url, headers = { ["X-Octopus-ApiKey"] = key or self.main.api_key } }
  return c:get(path):json()
end

-- Another empty server: octosim machine's JSON plus url (a free port on 127.0.0.1).
function Fix:machine(name)
  local m = octosim("machine", "--root", self.dir .. "/" .. name)
  m.url = string.format("http://127.0.0.1:%d/", M.free_port())
  return m
end

-- A second node of the main instance on the new server (high availability), or on
-- machine n: the main version installed, an instance on the same database with the
-- same master key, listening on n.url (default clone_url), started.
-- opts.env: the environment of its commands (default octofix.ENV).
-- -> { server_exe, msiexec, sc, filever, url, name }
function Fix:add_node(n, opts)
  n = n or self.clone
  local env = opts and opts.env or M.ENV
  local url = n.url or self.clone_url
  local m = self.main
  local msi = m.downloads .. "/Octopus." .. m.version .. "-x64.msi"
  proc.run({ n.msiexec, "/i", msi, "/quiet" }, { timeout = 120, ok = { 0 } })
  local home = n.machine .. "/Octopus"
  local function server(...)
    local argv = { n.server_exe, ... }
    argv[#argv + 1] = "--instance=" .. m.instance
    proc.run(argv, { timeout = 120, ok = { 0 }, env = env })
  end
  local v = require "upkit.version"
  if v.ge(m.version, "3.16.4") then
    server("create-instance", "--config=" .. home .. "/" .. m.instance .. ".config", "--home=" .. home)
  else
    server("create-instance", "--config=" .. home .. "/" .. m.instance .. ".config")
  end
  if v.ge(m.version, "2018.1.0") then
    server("database", "--connectionString=" .. m.sql_connection_string, "--masterKey=" .. m.master_key)
  else
    server("configure", "--storageConnectionString=" .. m.sql_connection_string, "--masterKey=" .. m.master_key)
  end
  server("configure", "--home=" .. home, "--webListenPrefixes=" .. url)
  server("service", "--install", "--start")
  self.started[#self.started + 1] = { exe = n.server_exe, instance = m.instance }
  return { server_exe = n.server_exe, msiexec = n.msiexec, sc = n.sc, filever = n.filever, url = url, name = n.name }
end

-- The program's version as upkit reads it (upkit.octopus.cli, through the machine's
-- file version stand-in), or nil when none is installed.
function M.program_version(exe, filever)
  local c = require("upkit.octopus.cli").new { exe = exe, timeout = 60, file_version = filever }
  local ok, v = pcall(c.program_version, c)
  return ok and v or nil
end

-- Does an instance's API answer at url? (what the procedures ask when there is no service control program)
function M.answers(url)
  return require("upkit.octopus").answers(url, { timeout = 5 }) ~= nil
end

function Fix:stop()
  for _, s in ipairs(self.started) do
    pcall(proc.run, { s.exe, "service", "--stop", "--instance=" .. s.instance }, { timeout = 60, env = M.ENV })
  end
  if self.site then self.site:close() self.site = nil end
end

return M
