-- upkit.upgrade.handles: the parameters the bundled procedures share, and the
-- handles a step makes from them (command line, REST API, database, versions).
-- Handles are kept in ctx for the run (ctx._cli, ctx._api, ...).
local upkit = require "upkit"
local fs = require "upkit.fs"
local version = require "upkit.version"
local octopus = require "upkit.octopus"
local clim = require "upkit.octopus.cli"
local I = require "upkit.upgrade.instance"

local H = {}

local DEFAULT_EXE = [[C:\Program Files\Octopus Deploy\Octopus\Octopus.Server.exe]]
H.DEFAULT_EXE = DEFAULT_EXE

H.P = {
  server_url = { name = "server_url", type = "string", required = true,
                 describe = "URL of the Octopus Server (its web portal)" },
  api_key = { name = "api_key", type = "secret", required = true, env = "OCTOPUS_API_KEY",
              describe = "API key of a user with Administer System" },
  instance = { name = "instance", type = "string", default = clim.DEFAULT_INSTANCE,
               describe = "Octopus Server instance name" },
  server_exe = { name = "server_exe", type = "path", default = DEFAULT_EXE, describe = "the Octopus.Server executable" },
  service_control = { name = "service_control", type = "string", default = "sc.exe",
                      describe = "the Windows service control program, asked for the services' state " ..
                                 "(sc.exe query); empty: a service runs when its API answers" },
  file_version = { name = "file_version", type = "string", default = "powershell",
                   describe = "reads the Octopus.Server executable's file version: powershell (FileVersionInfo), " ..
                              "another program given the file's path, or empty: the program's `version` command" },
  watchdog = { name = "watchdog", type = "boolean", default = false,
               describe = "the machine runs Octopus's Service Watchdog: delete it before the upgrade and create " ..
                          "it again after (watchdog --delete/--create), as the upgrade guide says" },
  msiexec = { name = "msiexec", type = "path", default = "msiexec", describe = "the Windows installer program" },
  db = { name = "db", type = "string",
         describe = "ODBC connection string of the Octopus database (default: the instance's configuration)" },
  backup_dir = { name = "backup_dir", type = "path", required = true,
                 describe = "folder for the backup (master key, licence, config, database, folders)" },
  download_url = { name = "download_url", type = "string", default = octopus.DOWNLOAD_BASE,
                   describe = "where installers Octopus.<version>-x64.msi are downloaded from" },
  installer_digests = { name = "installer_digests", type = "string",
                        describe = "SHA-256 digests of the installers (sha256sum lines), a file or an http(s) URL; " ..
                                   "Octopus publishes none: without it a download is checked for completeness only" },
  versions_feed = { name = "versions_feed", type = "string", default = octopus.FEED_URL,
                    describe = "JSON list of released versions" },
  target_version = { name = "target_version", type = "string", default = "latest",
                     describe = "version to upgrade to, or 'latest'" },
  timeout = { name = "timeout", type = "number", default = 3600,
              describe = "seconds any one command (installer, database upgrade) may take" },
  verify_tls = { name = "verify_tls", type = "boolean", default = true,
                 describe = "verify the server's TLS certificate" },
  skip_license_check = { name = "skip_license_check", type = "boolean", default = false,
                         describe = "pass --skipLicenseCheck to the database upgrade" },
}

-- Pick shared parameters by name, plus extra ones: H.params("server_url", ..., { extra })
function H.params(...)
  local out = {}
  for _, p in ipairs { ... } do
    if type(p) == "string" then
      out[#out + 1] = H.P[p] or upkit.error("EINVAL", "no shared parameter " .. p)
    else
      out[#out + 1] = p
    end
  end
  return out
end

-- H.split_list("a, b,,c") -> { "a", "b", "c" }: a comma-separated parameter.
function H.split_list(s)
  local out = {}
  for item in tostring(s or ""):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end

--[[
H.new_cli(ctx, exe, instance [, machine]) -> a command line for an Octopus.Server program of this run.
machine = { service_control =, file_version = } names that machine's tools when it is not the
main one (nil: the service_control and file_version parameters; "": none).
]]
function H.new_cli(ctx, exe, instance, machine)
  local function pick(k)
    local v = machine and machine[k]
    if v == nil then v = ctx.params[k] end
    return v ~= nil and v ~= "" and v or nil
  end
  return clim.new { exe = exe, instance = instance, timeout = ctx.params.timeout,
                    service_control = pick("service_control"), file_version = pick("file_version") }
end

-- Parameters naming another machine's tools: PREFIX_service_control and
-- PREFIX_file_version. Their names are written out here (not built from the
-- prefix) so that the engine, which reads procedure files as text to tell a
-- config key of another procedure from a typo, finds them.
local MACHINE_PARAMS = {
  clone = { "clone_service_control", "clone_file_version" },
  test = { "test_service_control", "test_file_version" },
}

function H.machine_params(prefix, where)
  local names = MACHINE_PARAMS[prefix] or upkit.error("EINVAL", "no machine parameters for " .. tostring(prefix))
  return {
    { name = names[1], type = "string",
      describe = "the service control program on the " .. where .. " (default: service_control)" },
    { name = names[2], type = "string",
      describe = "the file version reader on the " .. where .. " (default: file_version)" },
  }
end

function H.machine_of(ctx, prefix)
  return { service_control = ctx.params[prefix .. "_service_control"], file_version = ctx.params[prefix .. "_file_version"] }
end

-- Another machine's instance (PREFIX "clone" or "test"): its command line from
-- PREFIX_server_exe, PREFIX_instance and that machine's tools, made once per run.
function H.other_cli(ctx, prefix)
  local key = "_cli_" .. prefix
  ctx[key] = ctx[key] or H.new_cli(ctx, ctx.params[prefix .. "_server_exe"], ctx.params[prefix .. "_instance"],
                                   H.machine_of(ctx, prefix))
  return ctx[key]
end

-- That instance's database as ODBC: PREFIX_odbc, or PREFIX_db (ADO.NET) converted.
function H.other_odbc(ctx, prefix)
  local D = require "upkit.upgrade.database"
  return ctx.params[prefix .. "_odbc"] or D.odbc_connection(ctx.params[prefix .. "_db"])
end

-- The main instance's command line.
function H.cli(ctx)
  ctx._cli = ctx._cli or H.new_cli(ctx, ctx.params.server_exe, ctx.params.instance)
  return ctx._cli
end

-- A file of the main instance's machine: read here, or through its command
-- line's runner when that machine is a node reached through OpenSSH.
function H.read_file(ctx, path)
  local runner = H.cli(ctx).runner
  if runner and runner.read then return runner:read(path) end
  return fs.read(path)
end

-- The main instance's REST API (connected once per run).
function H.api(ctx)
  if not ctx._api then
    local p = ctx.params
    ctx._api = octopus.connect { url = p.server_url, api_key = p.api_key, verify = p.verify_tls }
  end
  return ctx._api
end

-- Replace the run's REST client of the main instance (the old one is closed).
function H.set_api(ctx, api)
  if ctx._api and ctx._api ~= api then ctx._api:close() end
  ctx._api = api
  return api
end

-- The main instance's database: the db parameter, or the instance's ADO.NET string as ODBC.
function H.db_connection(ctx)
  local D = require "upkit.upgrade.database"
  if ctx.params.db then return D.odbc_connection(ctx.params.db) end
  ctx.state.db_connection = ctx.state.db_connection or D.odbc_connection(H.cli(ctx):connection_string())
  return ctx.state.db_connection
end

-- A fresh database connection; close it (local db <close> = H.connect(cs)).
function H.connect(cs)
  return require("upkit.sql").connect(cs)
end

-- The version to upgrade to: the parameter, or the newest released one.
function H.target(ctx)
  local t = ctx.params.target_version
  local released = I.released(ctx)
  if t == "latest" then return version.max(released) end
  for _, v in ipairs(released) do if version.eq(v, t) then return v end end
  upkit.error("NOT_FOUND", string.format("version %s is not in the list of released versions (%s)", t,
                                         ctx.params.versions_feed))
end

--[[
H.server_folders(ctx) -> { Artifacts =, Packages =, TaskLogs = [, EventExports =] }.
From the running server (GET /api/configuration/server-folders/values, as
Octopus's upgrade script does), else from the instance's configuration
(Octopus.Folders.ArtifactsDirectory, PackagesDirectory, LogDirectory). From
2023.3 the event exports folder is HOME/EventExports, its documented default
(no source shows its key). Never empty: a server that names no folder stops
the procedure (BAD_RESPONSE).
]]
function H.server_folders(ctx)
  local out = {}
  local ok, f = pcall(function() return H.api(ctx):server_folders() end)
  if ok then
    out = { Artifacts = f.artifacts, Packages = f.packages, TaskLogs = f.task_logs, EventExports = f.event_exports }
    if not out.EventExports and version.ge(H.api(ctx):version(), clim.EVENT_EXPORTS_SINCE) then
      -- the endpoint names three folders; event exports (2023.3+) have no documented key: the default
      out.EventExports = H.cli(ctx):folders().EventExports
    end
  elseif upkit.is_error(f) and f.code == "NOT_FOUND" then
    out = H.cli(ctx):folders()
  else
    error(f, 0)
  end
  for _, k in ipairs { "Artifacts", "Packages", "TaskLogs" } do
    if type(out[k]) ~= "string" or out[k] == "" then
      upkit.error("BAD_RESPONSE", string.format("the server names no %s folder: upkit cannot back it up", k))
    end
  end
  if type(out.EventExports) ~= "string" or out.EventExports == "" then out.EventExports = nil end
  return out
end

return H
