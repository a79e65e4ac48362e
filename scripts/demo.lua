-- demo: clone a simulated Octopus 3.17.14 server and upgrade the clone to the newest version.
--
-- Runs the bundled clone-instance procedure end to end against the Octopus
-- simulator of the source tree (tests/sim): it creates a seeded 3.17.14 instance
-- and a download site on 127.0.0.1 in a temporary folder, and an empty "new
-- server" for the clone, then runs clone-instance, prints its summary, and stops
-- everything it started. The run folder (journal and log) goes where every run's
-- goes, upkit-runs/ in the working folder, so the summary names a folder that
-- stays; the temporary folder with the simulated servers is removed unless --keep.
-- Usage: upkit run demo [--keep]
local upkit = require "upkit"
local fs = require "upkit.fs"
local proc = require "upkit.proc"
local json = require "upkit.json"

local keep = false
for _, a in ipairs(arg or {}) do
  if a == "--keep" then keep = true
  elseif a == "--help" or a == "-h" then
    print("usage: upkit run demo [--keep]\n\nClones a simulated Octopus 3.17.14 server and upgrades the clone " ..
          "to the newest simulated version.\nThe run's journal and log are kept in upkit-runs/ of the working folder.\n" ..
          "--keep leaves the temporary folder with the simulated servers in place too.")
    return 0
  else
    io.stderr:write("demo: unknown argument '", a, "'\n")
    return 2
  end
end

local sim
for _, root in ipairs(upkit.roots()) do
  if fs.exists(root .. "/tests/sim/octosim.py") then sim = root .. "/tests/sim/octosim.py" break end
end
if not sim then
  io.stderr:write("demo: the Octopus simulator (tests/sim/octosim.py) is in the source tree only\n")
  return 1
end

local function octosim(...)
  local r = proc.run({ "python3", sim, ... }, { timeout = 300, ok = { 0 } })
  return json.decode(r.stdout)
end

local RUNS = "upkit-runs"  -- the default runs folder: kept after the demo folder is removed
local dir = fs.tempdir("upkit-demo")
print("demo folder: " .. dir)
local started, site = {}, nil

local function cleanup()
  for _, s in ipairs(started) do
    pcall(proc.run, { s.exe, "service", "--stop", "--instance=" .. s.instance }, { timeout = 60 })
  end
  if site then site:close() end
  if not keep then fs.remove(dir, { recursive = true }) end
end

local ok, code = xpcall(function()
  print("creating a simulated Octopus 3.17.14 server ...")
  local main = octosim("create", "--home", dir .. "/main", "--version", "3.17.14", "--start")
  started[#started + 1] = { exe = main.server_exe, instance = main.instance }
  local clone = octosim("machine", "--root", dir .. "/new-server")
  site = proc.spawn({ "python3", sim, "download-site", "--dir", main.downloads, "--port", "0" }, {})
  local site_url = site:lines()()
  print("download site: " .. site_url)

  local free = proc.run({ "python3", "-c",
    "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" }, { ok = { 0 } })
  local clone_url = string.format("http://127.0.0.1:%d/", tonumber(free.stdout:match("%d+")))
  local config = dir .. "/site.lua"
  -- the clone's database on the new server's simulated SQL Server: the server gets the
  -- ADO.NET string, upkit reaches the same database through ODBC
  local sqlserver = dir .. "/new-server/sqlserver"
  fs.mkdirs(sqlserver)
  local values = {
    server_url = main.url, server_exe = main.server_exe, instance = main.instance, db = main.connection_string,
    service_control = main.sc, file_version = main.filever, backup_dir = dir .. "/backup",
    download_url = site_url .. "/octopus", versions_feed = site_url .. "/download/upgrade/v3",
    installer_digests = main.downloads .. "/SHA256SUMS",
    clone_server_exe = clone.server_exe, clone_msiexec = clone.msiexec, clone_service_control = clone.sc,
    clone_file_version = clone.filever, clone_home = clone.machine .. "/Octopus",
    clone_db = "Data Source=" .. sqlserver .. ";Initial Catalog=OctopusClone",
    clone_odbc = "Driver=SQLite3;Database=" .. sqlserver .. "/OctopusClone.db", clone_url = clone_url,
  }
  local keys = {}
  for k in pairs(values) do keys[#keys + 1] = k end
  table.sort(keys)
  local lines = { "return {" }
  for _, k in ipairs(keys) do lines[#lines + 1] = string.format("  %s = %q,", k, values[k]) end
  lines[#lines + 1] = "}"
  fs.write(config, table.concat(lines, "\n") .. "\n")
  fs.write(dir .. "/api-key", main.api_key .. "\n", { mode = "0600" })
  started[#started + 1] = { exe = clone.server_exe, instance = "OctopusServer" }
  local cli = require "upkit.cli"
  return cli.main { "run", "clone-instance", "--config", config, "--set", "api_key_file=" .. dir .. "/api-key",
                    "--runs", RUNS, "--yes" }
end, debug.traceback)
cleanup()
if keep then
  print("demo folder kept: " .. dir)
else
  print("demo folder removed (the simulated servers); the run's journal and log stay in " .. RUNS .. "/")
end
if not ok then
  io.stderr:write("demo failed: ", tostring(code), "\n")
  return 1
end
return code
