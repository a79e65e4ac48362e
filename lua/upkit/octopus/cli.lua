-- upkit.octopus.cli: the Octopus.Server command line of one instance on one machine.
-- (The REST API is upkit.octopus; this module runs the program.)
--
--   local cli = require "upkit.octopus.cli"
--   local c = cli.new{ exe = [[C:\...\Octopus.Server.exe]], instance = "OctopusServer",
--                      timeout = 3600, service_control = "sc.exe", file_version = "powershell" }
--   c:program_version()      --> "2023.4.8166": the executable's file version (file_version; in the
--                                Windows build upkit.win reads it itself), else the `version`
--                                command; NO_VERSION when unreadable
--   c:installed_version()    --> the same read afresh, or nil when there is none
--   c:instances()            --> { { name =, config = }, ... }   (list-instances: every instance)
--   c:config_file()          --> this instance's configuration file (list-instances)
--   c:configuration()        --> { [key] = value } (show-configuration from 3.5, the XML file before)
--   c:connection_string()    --> the database's ADO.NET connection string
--   c:folders()              --> { Artifacts =, Packages =, TaskLogs = [, EventExports =] } (never empty)
--   c:master_key()           --> the master key (kept out of logs)
--   c:service(action)        --  service --stop | --start | --install
--   c:service_state()        --> "running" | "stopped" | "absent" (the service control program;
--                                in the Windows build the Service Control Manager through upkit.win)
--   c:drain_node(wait)       --  node --drain=true --wait=SECONDS (2018.1+; UNSUPPORTED before)
--   c:undrain_node()         --  node --drain=false
--   c:watchdog(action, instances) -- watchdog --delete | --create --instances=...
--   c:upgrade_database(skip_license_check)   (--skipLicenseCheck from 2018.8.9)
--   c:set_database(ado, master_key [, create]) -- database --connectionString (2018.1+), configure
--                                               --storageConnectionString on 3.x
--   c:run(command, args...)  --> stdout; --instance is added for commands that take it
--
-- Options are per command, as the command line's own help pages list them
-- (tests/sim/FIDELITY.md has each with its source): `version` and
-- `list-instances` take no --instance; `node` does not exist before 2018.1 and
-- its --wait comes in 2019.1, only with --drain=true; `show-configuration` from
-- 3.5; `create-instance --home` from 3.16.4; `database --connectionString`
-- from 2018.1 (3.x: `configure --storageConnectionString`), `database --upgrade`
-- from 3.13.9, `--skipLicenseCheck` from 2018.8.9; `path --eventExports` from
-- 2023.3; `watchdog` from 3.9. Options are picked by the installed program's
-- version.
local upkit = require "upkit"
local proc = require "upkit.proc"
local json = require "upkit.json"
local log = require "upkit.log"
local version = require "upkit.version"
local shell = require "upkit.remote.shell"

local M = {}

M.NODE_SINCE = "2018.1.0"                -- the `node` command (OctopusDeploy/Issues #4588)
M.NODE_WAIT_SINCE = "2019.1.0"           -- node --wait (OctopusDeploy/Issues #5410)
M.SHOW_CONFIGURATION_SINCE = "3.5.0"     -- OctopusDSC Test-OctopusVersionSupportsShowConfiguration
M.CREATE_HOME_SINCE = "3.16.4"           -- OctopusDSC Test-OctopusVersionSupportsHomeDirectoryDuringCreateInstance
M.DATABASE_CONNSTR_SINCE = "2018.1.0"    -- database --connectionString (OctopusDSC: 4.0)
M.DATABASE_UPGRADE_SINCE = "3.13.9"      -- OctopusDSC Test-OctopusVersionSupportsDatabaseUpgrade
M.SKIP_LICENSE_SINCE = "2018.8.9"        -- OctopusDSC Test-OctopusVersionSupportsSkipLicenseCheck
M.EVENT_EXPORTS_SINCE = "2023.3.0"
M.WATCHDOG_SINCE = "3.9.0"               -- OctopusDeploy/Issues #3067
M.DEFAULT_INSTANCE = "OctopusServer"

-- Commands that do not act on one instance: no --instance.
local MACHINE_WIDE = { ["version"] = true, ["list-instances"] = true, ["watchdog"] = true }
-- Commands whose output holds secrets: never logged.
local QUIET = { ["show-master-key"] = true, ["show-configuration"] = true }
-- Commands that only read; any other may change what the configuration says.
local READS = { ["show-master-key"] = true, ["show-configuration"] = true, ["version"] = true,
                ["list-instances"] = true }

local Cli = {}
Cli.__index = Cli

-- cli.new{ exe, instance, timeout, service_control, secrets [, runner] } -> command line.
-- runner: where the commands run (an upkit.remote node: runner:run(argv, opts) and
-- runner:exists(path)); default this machine (proc.run).
function M.new(o)
  if type(o) ~= "table" or type(o.exe) ~= "string" or o.exe == "" then
    upkit.error("EINVAL", "octopus.cli.new: exe (the Octopus.Server program) is required")
  end
  return setmetatable({ exe = o.exe, instance = o.instance or M.DEFAULT_INSTANCE, timeout = o.timeout or 3600,
                        service_control = o.service_control, file_version = o.file_version,
                        secrets = o.secrets or {}, runner = o.runner }, Cli)
end

local function run(self, argv, opts)
  if self.runner then return self.runner:run(argv, opts) end
  return proc.run(argv, opts)
end

function Cli:secret(value)
  log.secret(value)
  self.secrets[#self.secrets + 1] = value
  return value
end

-- c:exec(command, instance_or_false, args...) -> proc result
local function exec(self, command, instance, ...)
  if not READS[command] then self.config_cache = nil end
  local argv = { self.exe, command }
  if instance then argv[#argv + 1] = "--instance=" .. instance end
  for _, a in ipairs { ... } do argv[#argv + 1] = a end
  return run(self, argv, { timeout = self.timeout, redact = self.secrets, ok = { 0 },
                          on_stdout = not QUIET[command] and function(line) log.debug("%s", line) end or nil })
end

function Cli:run(command, ...)
  return exec(self, command, not MACHINE_WIDE[command] and self.instance or false, ...).stdout
end

-- The same command for another instance of this machine.
function Cli:run_for(instance, command, ...)
  return exec(self, command, instance, ...).stdout
end

---------------------------------------------------------------------------
-- Version
---------------------------------------------------------------------------

local function parse_version(s)
  if type(s) ~= "string" then return nil end
  local v = s:match("(%d+%.%d+%.%d+[%w%.%-]*)")
  if not v then return nil end
  v = v:gsub("%+.*$", "")
  local ok = pcall(version.parse, v)
  return ok and v or nil
end
M.parse_version = parse_version

-- The version in a file version resource: its first three parts (the fourth is the build's).
local function file_version_of(text)
  local a, b, c = tostring(text):match("(%d+)%.(%d+)%.(%d+)")
  return a and (a .. "." .. b .. "." .. c) or nil
end

-- upkit.win in the Windows build, nil elsewhere.
local function native_win()
  local ok, win = pcall(require, "upkit.win")
  return ok and win or nil
end

local function file_version_argv(self)
  local prog = self.file_version
  if prog:lower():match("powershell") or prog:lower():match("pwsh") then
    return { prog, "-NoProfile", "-NonInteractive", "-Command",
             "[System.Diagnostics.FileVersionInfo]::GetVersionInfo(" .. shell.quote_powershell(self.exe) .. ").FileVersion" }
  end
  return { prog, self.exe }
end

local function from_file_version(self)
  local prog = self.file_version
  local r = run(self, file_version_argv(self), { timeout = 60 })
  if r.timed_out then upkit.error("TIMEOUT", string.format("%s %s did not answer within 60 s", prog, self.exe)) end
  return r.code == 0 and file_version_of(r.stdout) or nil
end

local function version_of_json(out)
  local dok, doc = pcall(json.decode, out)
  if dok and type(doc) == "table" then
    return parse_version(doc.NuGetVersion) or parse_version(doc.MajorMinorPatch) or parse_version(doc.InformationalVersion)
  end
  return parse_version(out)
end

--[[
c:version_probe() -> argv, parse: the command program_version runs (the file
version reader, else the `version` command), for a caller that runs it itself
(side by side on several nodes); parse(result) -> the version, or nil.
]]
function Cli:version_probe()
  if self.file_version then
    return file_version_argv(self), function(r) return r.code == 0 and file_version_of(r.stdout) or nil end
  end
  return { self.exe, "version", "--format=json" }, function(r) return r.code == 0 and version_of_json(r.stdout) or nil end
end

local function from_version_command(self)
  local ok, out = pcall(self.run, self, "version", "--format=json")
  if not ok then
    if upkit.is_error(out) and out.code == "EXIT_CODE" then return nil end  -- a version without the command
    error(out, 0)
  end
  return version_of_json(out)
end

--[[
c:program_version() -> the installed program's version. The executable's file
version (what OctopusDSC reads: FileVersionInfo), through the file_version
program; without one, the program's `version` command (documented for recent
versions only; its JSON fields are the shared framework's NuGetVersion,
MajorMinorPatch, InformationalVersion). NO_VERSION when the program is not
there or neither gives a version: never guessed.
]]
function Cli:program_version()
  if self.version_cache then return self.version_cache end
  local f = not self.runner and io.open(self.exe, "rb")
  if f then f:close() end
  if not (f or (self.runner and self.runner:exists(self.exe))) then
    upkit.error("NO_VERSION", string.format("Octopus.Server is not installed here: %s does not exist", self.exe),
                { path = self.exe })
  end
  local v
  local win = not self.file_version and not self.runner and native_win()
  if win then
    local ok, info = pcall(win.file_version, self.exe)
    if not ok and not (upkit.is_error(info) and info.code == "NOT_FOUND") then error(info, 0) end
    v = ok and file_version_of(info.file) or nil
  elseif self.file_version then v = from_file_version(self) else v = from_version_command(self) end
  if not v then
    upkit.error("NO_VERSION", string.format("the version of %s cannot be read (%s)", self.exe,
      self.file_version and (self.file_version .. " printed none") or "its `version` command printed none"))
  end
  self.version_cache = v
  return v
end

-- Forget the cached version (after an install or an uninstall).
function Cli:forget_version() self.version_cache = nil end

-- c:installed_version() -> the program's version read afresh, or nil when none can be
-- read (NO_VERSION: not installed); other failures raise.
function Cli:installed_version()
  self.version_cache = nil
  local ok, v = pcall(self.program_version, self)
  if ok then return v end
  if upkit.is_error(v) and v.code == "NO_VERSION" then return nil end
  error(v, 0)
end

local function since(self, v) return version.ge(self:program_version(), v) end
function Cli:has_node_command() return since(self, M.NODE_SINCE) end
function Cli:since(v) return since(self, v) end

---------------------------------------------------------------------------
-- Instances and configuration
---------------------------------------------------------------------------

-- c:instances() -> { { name, config } } of every instance on the machine.
function Cli:instances()
  local out = self:run("list-instances", "--format=json")
  local ok, doc = pcall(json.decode, out)
  if not ok or type(doc) ~= "table" then
    upkit.error("BAD_FORMAT", "Octopus.Server list-instances --format=json printed no JSON list")
  end
  local list = {}
  for _, i in ipairs(doc) do
    if type(i) == "table" and type(i.InstanceName) == "string" then
      list[#list + 1] = { name = i.InstanceName, config = i.ConfigurationFilePath }
    end
  end
  return list
end

function Cli:has_instance(name)
  name = (name or self.instance):lower()
  for _, i in ipairs(self:instances()) do if i.name:lower() == name then return true end end
  return false
end

-- This instance's configuration file, from list-instances.
function Cli:config_file()
  for _, i in ipairs(self:instances()) do
    if i.name:lower() == self.instance:lower() then
      if type(i.config) ~= "string" or i.config == "" then
        upkit.error("BAD_FORMAT", "list-instances gives no ConfigurationFilePath for instance " .. self.instance)
      end
      return i.config
    end
  end
  upkit.error("NOT_FOUND", string.format("%s has no instance '%s' (list-instances)", self.exe, self.instance))
end

local ENTITIES = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'" }
local function unxml(s)
  return (s:gsub("&(#?%w+);", function(e)
    if e:sub(1, 1) == "#" then
      local n = e:sub(2, 2) == "x" and tonumber(e:sub(3), 16) or tonumber(e:sub(2))
      return n and utf8.char(n) or "&" .. e .. ";"
    end
    return ENTITIES[e] or ("&" .. e .. ";")
  end))
end

-- The settings of an instance's XML configuration file: <set key="...">value</set>.
function M.read_config_file(path)
  local f, err = io.open(path, "r")
  if not f then upkit.error("ENOENT", string.format("cannot read the configuration file '%s': %s", path, tostring(err)),
                            { path = path }) end
  local text = f:read("a")
  f:close()
  local out = {}
  for key, value in text:gmatch('<set%s+key="([^"]*)"%s*>(.-)</set>') do out[unxml(key)] = unxml(value) end
  for key in text:gmatch('<set%s+key="([^"]*)"%s*/>') do out[unxml(key)] = "" end
  return out
end

--[[
c:configuration() -> { [key] = value }: show-configuration --format=json from
3.5 (read once until a command that may change it runs); before 3.5 the
instance's XML configuration file named by list-instances.
]]
function Cli:configuration()
  if self.config_cache then return self.config_cache end
  local cfg
  if since(self, M.SHOW_CONFIGURATION_SINCE) then
    local out = self:run("show-configuration", "--format=json")
    local ok, doc = pcall(json.decode, out)
    if not ok or type(doc) ~= "table" then
      upkit.error("BAD_FORMAT", "Octopus.Server show-configuration --format=json printed no JSON object")
    end
    cfg = doc
  else
    cfg = M.read_config_file(self:config_file())
  end
  self.config_cache = cfg
  return cfg
end

function Cli:setting(key)
  local v = self:configuration()[key]
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- The database's connection string as the server keeps it (ADO.NET).
function Cli:connection_string()
  return self:setting("Octopus.Storage.ExternalDatabaseConnectionString") or upkit.error("BAD_FORMAT",
    string.format("the configuration of instance %s has no Octopus.Storage.ExternalDatabaseConnectionString",
                  self.instance))
end

function Cli:node_name()
  return self:setting("Octopus.Server.NodeName")
end

-- The folder keys of the configuration (OctopusDSC reads the same).
M.FOLDER_KEYS = { Artifacts = "Octopus.Folders.ArtifactsDirectory", Packages = "Octopus.Folders.PackagesDirectory",
                  TaskLogs = "Octopus.Folders.LogDirectory" }

-- c:folders() -> { Artifacts, Packages, TaskLogs [, EventExports] } from the configuration; BAD_FORMAT
-- when a key is missing. The event exports folder (2023.3+) has no documented key: HOME/EventExports,
-- its documented default.
function Cli:folders()
  local out, missing = {}, {}
  for name, key in pairs(M.FOLDER_KEYS) do
    out[name] = self:setting(key)
    if not out[name] then missing[#missing + 1] = key end
  end
  if #missing > 0 then
    table.sort(missing)
    upkit.error("BAD_FORMAT", string.format("the configuration of instance %s has no %s", self.instance,
                                            table.concat(missing, ", ")))
  end
  local home = self:setting("Octopus.Home")
  if home and since(self, M.EVENT_EXPORTS_SINCE) then
    out.EventExports = home .. (home:find("\\", 1, true) and "\\" or "/") .. "EventExports"
  end
  return out
end

-- The master key; kept out of every log from here on.
function Cli:master_key()
  local out = self:run("show-master-key")
  local key
  local ok, doc = pcall(json.decode, out)
  if ok and type(doc) == "table" then key = doc.MasterKey end
  key = key or out:match("([%w+/=]+)%s*$")
  if type(key) ~= "string" or #key < 16 then
    upkit.error("BAD_FORMAT", "Octopus.Server show-master-key printed no master key")
  end
  return self:secret(key)
end

---------------------------------------------------------------------------
-- Service, node, watchdog, database
---------------------------------------------------------------------------

function Cli:service(action, instance)
  return self:run_for(instance or self.instance, "service", "--" .. action)
end

-- The Windows service of an instance: OctopusDeploy, or "OctopusDeploy: NAME".
function M.service_name(instance)
  if instance == nil or instance:lower() == M.DEFAULT_INSTANCE:lower() then return "OctopusDeploy" end
  return "OctopusDeploy: " .. instance
end

--[[
c:service_state([instance]) -> "running" | "stopped" | "absent": asks the
service control program (`sc.exe query NAME`; its STATE line). "absent"
when the service does not exist (error 1060). Other states (pending) are
reported as their name, lower case. UNSUPPORTED without a service control
program; BAD_FORMAT when its output has no STATE.
]]
function Cli:service_state(instance)
  local win = not self.service_control and native_win()
  if win then
    local ok, s = pcall(win.service, M.service_name(instance or self.instance))
    if ok then return s.state end
    if upkit.is_error(s) and s.code == "NOT_FOUND" then return "absent" end
    error(s, 0)
  end
  if not self.service_control then
    upkit.error("UNSUPPORTED", "the service state of an instance needs the service control program (service_control)")
  end
  local name = M.service_name(instance or self.instance)
  local r = run(self, { self.service_control, "query", name }, { timeout = 60 })
  if r.timed_out then
    upkit.error("TIMEOUT", string.format("%s query \"%s\" did not answer within 60 s", self.service_control, name))
  end
  local text = (r.stdout or "") .. (r.stderr or "")
  local state = text:match("STATE%s*:%s*%d+%s+([%u_]+)")
  if state then return state:lower() end
  if text:find("1060", 1, true) then return "absent" end
  upkit.error("BAD_FORMAT", string.format("%s query \"%s\" printed no STATE (exit code %s)", self.service_control,
                                          name, tostring(r.code)), { exit_code = r.code })
end

local function need_node(self)
  if not self:has_node_command() then
    upkit.error("UNSUPPORTED", string.format("Octopus %s has no `node` command (it arrived in %s): use maintenance " ..
      "mode and wait for the running tasks", self:program_version(), M.NODE_SINCE))
  end
end

-- c:drain_node([wait [, instance]]): node --drain=true [--wait=SECONDS] (--wait from 2019.1).
function Cli:drain_node(wait, instance)
  need_node(self)
  if wait and since(self, M.NODE_WAIT_SINCE) then
    return self:run_for(instance or self.instance, "node", "--drain=true", "--wait=" .. tostring(wait))
  end
  return self:run_for(instance or self.instance, "node", "--drain=true")
end

-- c:undrain_node([instance]): node --drain=false and nothing else (--wait is refused with it).
function Cli:undrain_node(instance)
  need_node(self)
  return self:run_for(instance or self.instance, "node", "--drain=false")
end

-- c:watchdog("delete" | "create", instances) ; instances: "*" or a comma-separated list
function Cli:watchdog(action, instances)
  if not since(self, M.WATCHDOG_SINCE) then
    upkit.error("UNSUPPORTED", string.format("Octopus %s has no `watchdog` command (from %s)", self:program_version(),
                                             M.WATCHDOG_SINCE))
  end
  return self:run("watchdog", "--" .. action, "--instances=" .. (instances or "*"))
end

-- c:upgrade_database(skip_license_check): database --upgrade [--skipLicenseCheck (2018.8.9+)]
function Cli:upgrade_database(skip_license_check)
  if not since(self, M.DATABASE_UPGRADE_SINCE) then
    upkit.error("UNSUPPORTED", string.format("Octopus %s has no `database --upgrade` (from %s)", self:program_version(),
                                             M.DATABASE_UPGRADE_SINCE))
  end
  if skip_license_check then
    if not since(self, M.SKIP_LICENSE_SINCE) then
      log.warn("Octopus %s has no --skipLicenseCheck (from %s): the database upgrade checks the licence",
               self:program_version(), M.SKIP_LICENSE_SINCE)
    else
      return self:run("database", "--upgrade", "--skipLicenseCheck")
    end
  end
  return self:run("database", "--upgrade")
end

--[[
c:set_database(ado, master_key [, create]): point the instance at a database
(an ADO.NET connection string: the server uses SqlClient) with its master key;
create = true makes a new database (then master_key may be nil: the server
makes one). From 2018.1 `database --connectionString`; on 3.x
`configure --storageConnectionString --masterKey` (OctopusDSC's route), then
`database --create`.
]]
function Cli:set_database(ado, master_key, create)
  if master_key then self:secret(master_key) end
  local key = master_key and ("--masterKey=" .. master_key) or nil
  if since(self, M.DATABASE_CONNSTR_SINCE) then
    local args = { "--connectionString=" .. ado }
    if key then args[#args + 1] = key end
    if create then args[#args + 1] = "--create" end
    return self:run("database", table.unpack(args))
  end
  if key then self:run("configure", "--storageConnectionString=" .. ado, key)
  else self:run("configure", "--storageConnectionString=" .. ado) end
  if create then return self:run("database", "--create") end
end

-- c:create_instance(config_file, home): --home only where the command has it (3.16.4+).
function Cli:create_instance(config_file, home)
  if since(self, M.CREATE_HOME_SINCE) then
    return self:run("create-instance", "--config=" .. config_file, "--home=" .. home)
  end
  return self:run("create-instance", "--config=" .. config_file)
end

-- c:set_paths{ Artifacts =, Packages =, TaskLogs =, EventExports = }: `path`, with the options the version has.
local PATH_FLAGS = { Artifacts = "--artifacts", TaskLogs = "--taskLogs", Packages = "--nugetRepository",
                     EventExports = "--eventExports" }
function Cli:set_paths(folders)
  local args = {}
  for name, path in pairs(folders) do
    if PATH_FLAGS[name] and (name ~= "EventExports" or since(self, M.EVENT_EXPORTS_SINCE)) then
      args[#args + 1] = PATH_FLAGS[name] .. "=" .. path
    end
  end
  table.sort(args)
  if #args > 0 then return self:run("path", table.unpack(args)) end
end

M.Cli = Cli
return M
