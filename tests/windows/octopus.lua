-- The Octopus procedures with upkit.exe under Wine (make test-windows), against the
-- simulator through its Windows-side stand-ins: forward.exe copied as Octopus.Server.exe,
-- msiexec.exe, sc.exe and filever.exe, each with a .forward file naming the simulator's Unix
-- stand-in that tests/sim/winforward.py (started by tests/windows/run.sh) runs for it.
--
-- Tested: the backup upkit.exe makes equals the one the Linux build makes of the same instance
-- with the same parameters (3.17.14 and 2023.4); in-place-upgrade and rollback with upkit.exe;
-- the stand-ins' full exit codes (3010, 1603, 1060), an unreachable forwarder and a refused
-- target as clear errors, and a form the simulator refuses failing under Wine too. Paths: the simulated machine, its database and both backups are in a
-- Unix folder (UPKIT_TEST_UNIX_TMP), which upkit.exe opens as /tmp/... (Wine resolves it on
-- the current drive, Z:, which is /). The backup folder is given to upkit.exe in that Unix
-- form because the SQLite ODBC driver, which writes the database backup, runs on the Unix
-- side (with SQL Server the backup path is the server's, too); the stand-ins are given in
-- Windows form (Z:\...).
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local upkit = require "upkit"
local fs = require "upkit.fs"
local json = require "upkit.json"
local proc = require "upkit.proc"
local hash = require "upkit.hash"
local octofix = require "octofix"

local UNIX, INFO, EXE = os.getenv("UPKIT_TEST_UNIX_TMP"), os.getenv("UPKIT_TEST_FORWARD"),
  os.getenv("UPKIT_TEST_FORWARD_EXE")
if not (UNIX and INFO and EXE) then
  T.skip("the Octopus procedures under Wine",
         "UPKIT_TEST_UNIX_TMP, UPKIT_TEST_FORWARD or UPKIT_TEST_FORWARD_EXE is not set (make test-windows sets them)")
  T.done()
  return
end

local fwd = json.decode(fs.read(INFO))
local D = UNIX .. "/octopus-" .. upkit.uuid():sub(1, 8)
fs.mkdirs(D .. "/win")

-- A Unix path as upkit.exe's users would write it on Windows.
local function win(path) return "Z:" .. path:gsub("/", "\\") end

-- A Windows-side stand-in at path (a .exe) for target (a Unix stand-in, or program:NAME).
local function standin(path, target, port)
  if not fs.exists(path) then fs.copy(EXE, path) end
  fs.write(path .. ".forward", string.format("port=%d\ntoken=%s\ntarget=%s\n", port or fwd.port, fwd.token, target))
  return path
end

-- Run a Unix program the forwarder was started with (octosim, upkit-linux): its proc result.
local function unix(name, args, opts)
  local argv = { standin(D .. "/win/" .. name .. ".exe", "program:" .. name) }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  opts = opts or {}
  opts.timeout = opts.timeout or 300
  return proc.run(argv, opts)
end

-- The download site (backup keeps the installer of the running version), from the simulator's
-- installer files: its first line is its URL.
local downloads = D .. "/downloads"
unix("octosim", { "downloads", "--dir", downloads }, { ok = { 0 } })
local site = proc.spawn({ standin(D .. "/win/octosim.exe", "program:octosim"), "download-site", "--dir", downloads,
                          "--port", "0" }, { stderr = "null" })
local site_url = site:lines()()
T.match(site_url or "", "^http://127%.0%.0%.1:%d+$", "the download site answers")

-- A config file for the procedures: the instance, its programs (exes), backup_dir and the rest.
local function config(S, name, exes, extra)
  local cfg = {
    server_url = S.main.url, instance = S.main.instance, db = S.main.connection_string, timeout = 120,
    server_exe = exes.server_exe, msiexec = exes.msiexec, service_control = exes.sc, file_version = exes.filever,
    backup_dir = S.dir .. "/backup-" .. name, download_url = site_url .. "/octopus",
    installer_digests = downloads .. "/SHA256SUMS", versions_feed = site_url .. "/download/upgrade/v3",
  }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local path = S.dir .. "/" .. name .. ".json"
  fs.write(path, json.encode(cfg))
  return path
end

-- A simulated instance of version, started (what tests/lib/octofix.lua makes on Linux), with
-- its Windows-side stand-ins (W) and the config files of the Windows (WCFG) and Linux (LCFG) runs.
local function new_site(version, tag)
  local S = { dir = D .. "/" .. tag }
  S.main = json.decode(unix("octosim", { "create", "--home", S.dir .. "/main", "--version", version, "--start" },
                            { ok = { 0 } }).stdout)
  local w = S.dir .. "/win/"
  fs.mkdirs(w)
  S.W = {
    server_exe = standin(w .. "Octopus.Server.exe", S.main.server_exe),
    msiexec = standin(w .. "msiexec.exe", S.main.msiexec),
    sc = standin(w .. "sc.exe", S.main.sc),
    filever = standin(w .. "filever.exe", S.main.filever),
  }
  fs.write(S.dir .. "/api-key", S.main.api_key .. "\n")
  S.WCFG = config(S, "windows", { server_exe = win(S.W.server_exe), msiexec = win(S.W.msiexec), sc = win(S.W.sc),
                                  filever = win(S.W.filever) }, { api_key_file = win(S.dir .. "/api-key") })
  S.LCFG = config(S, "linux", S.main, { api_key_file = S.dir .. "/api-key" })
  return S
end

local S3 = new_site("3.17.14", "v3")
local main, W, WCFG = S3.main, S3.W, S3.WCFG

-- upkit.exe's arguments to run procedure NAME with a config, the API key file and a runs folder.
local function proc_args(name, cfg, runs, ...)
  local a = { "run", name, "--config", cfg, "--runs", runs }
  for _, x in ipairs { ... } do a[#a + 1] = x end
  return a
end

local function api(path)
  local http = require "upkit.http"
  local c <close> = http.client { base = main.url, headers = { ["X-Octopus-ApiKey"] = main.api_key } }
  return c:get(path):json()
end
local before_upgrade

-- upkit.exe (this program) in D: its proc result.
local function upkit_exe(args)
  local argv = { proc.which("upkit") }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, { cwd = D, timeout = 300, ok = { 0, 1, 2, 3 } })
end

local function run_args(cfg, runs, ...)
  return proc_args("backup", cfg, runs, ...)
end

T.test("a stand-in sends its arguments (UTF-16 to UTF-8), folder and stdin; Wine paths arrive as Unix paths", function()
  local args = { "pl\xc3\xa4in", "two words", 'a "quoted" one', [[back\slash\]], "", "\xe2\x82\xac\xf0\x9f\x90\x99",
                 win(D .. "/x.txt"), "--config=" .. win(D), "/quiet" }
  local input = string.rep("0123456789abcdef", 8192)  -- 128 KiB
  local r = unix("echo", args, { cwd = win(D), stdin = input, ok = { 0 } })
  local want = { D, "pl\xc3\xa4in", "two words", 'a "quoted" one', [[back\slash\]], "", "\xe2\x82\xac\xf0\x9f\x90\x99",
                 D .. "/x.txt", "--config=" .. D, "/quiet" }
  T.eq(r.stdout, table.concat(want, "\n") .. "\n" .. input)
  r = unix("echo", {}, { cwd = D, ok = { 0 } })  -- no stdin given (NUL): none is sent
  T.eq(r.stdout, D .. "\n")
end)

T.test("a stand-in the forwarder refuses is a clear error", function()
  local exe = standin(D .. "/win/sh.exe", "/bin/sh")
  local ok, e = pcall(proc.run, { exe, "-c", "exit 0" }, { ok = { 0 }, timeout = 60 })
  T.eq(ok, false)
  T.eq(e.exit_code, 5)  -- ERROR_ACCESS_DENIED
  T.contains(e.message, "forward.exe: the forwarder refused: /bin/sh is not a stand-in of the simulator")
end)

T.test("a stand-in returns the full Windows exit code to upkit.exe (3010, 1603), and its output", function()
  -- an empty second machine: msiexec there meets no running service
  local m = json.decode(unix("octosim", { "machine", "--root", D .. "/second" }, { ok = { 0 } }).stdout)
  local msiexec = standin(D .. "/win/second-msiexec.exe", m.msiexec)
  fs.write(m.machine .. "/faults.json", json.encode { msi_exit = 3010 })
  local msi = win(downloads .. "/Octopus.3.17.14-x64.msi")
  local r = proc.run({ msiexec, "/i", msi, "/quiet", "/l*v", win(D .. "/msi.log") }, { ok = { 3010 }, timeout = 120 })
  T.eq(r.code, 3010)
  T.contains(fs.read(D .. "/msi.log"), "MainEngineThread is returning 3010")
  T.contains(r.stderr, "exit code 3010")
  fs.write(m.machine .. "/faults.json", json.encode { msi_exit = 1603 })
  local ok, e = pcall(proc.run, { msiexec, "/i", msi, "/quiet" }, { ok = { 0 }, timeout = 120 })
  T.eq(ok, false)
  T.eq(e.exit_code, 1603)
  T.contains(e.message, "exited with code 1603")
  r = proc.run({ W.sc, "query", "NoSuchServiceUpkit" }, { ok = { 1060 } })
  T.contains(r.stdout, "FAILED 1060")
  r = proc.run({ W.filever, W.server_exe }, { ok = { 0 } })
  T.eq(r.stdout, "3.17.14.0\n", "filever.exe of the Windows-side Octopus.Server.exe asks the simulator's")
end)

T.test("an unreachable forwarder, or another server on its port, is a clear error, quickly", function()
  local dead = D .. "/win/dead"
  fs.mkdirs(dead)
  local port = 1  -- tcpmux: privileged and unused on the test machines
  local exe = standin(dead .. "/Octopus.Server.exe", main.server_exe, port)
  local t0 = upkit.now()
  local ok, e = pcall(proc.run, { exe, "version" }, { ok = { 0 }, timeout = 60 })
  T.eq(ok, false)
  T.eq(e.exit_code, 1)
  T.contains(e.message, "cannot reach the forwarder at 127.0.0.1:1")
  T.ok(upkit.now() - t0 < 20, "no hang")
  -- another server on the port (the loopback HTTP server of run.sh) answers with no frame of ours
  local http_port = tonumber((os.getenv("UPKIT_TEST_HTTP") or ""):match(":(%d+)"))
  if http_port then
    local other = standin(dead .. "/msiexec.exe", main.msiexec, http_port)
    t0 = upkit.now()
    ok, e = pcall(proc.run, { other, "/i", "x.msi" }, { ok = { 0 }, timeout = 60 })
    T.eq(ok, false)
    T.eq(e.exit_code, 1)
    T.contains(e.message, "forward.exe: the forwarder sent a frame of bad length")
    T.ok(upkit.now() - t0 < 20, "no hang")
  end
  local cfg = config(S3, "dead", { server_exe = win(exe), msiexec = win(W.msiexec), sc = win(W.sc), filever = win(W.filever) },
                     { api_key_file = win(S3.dir .. "/api-key") })
  local r = upkit_exe(run_args(cfg, D .. "/runs-dead"))
  T.eq(r.code, 1, r.stdout .. r.stderr)
  T.contains(r.stdout .. r.stderr, "cannot reach the forwarder")
  T.eq(fs.exists(S3.dir .. "/backup-dead/master-key.txt"), false)
end)

T.test("a wrong form the simulator refuses still fails under Wine", function()
  -- `list-instances` takes no --instance (FIDELITY.md section 2): refused with exit 1
  local ok, e = pcall(proc.run, { W.server_exe, "list-instances", "--instance=" .. main.instance }, { ok = { 0 } })
  T.eq(ok, false)
  T.eq(e.exit_code, 1)
  T.contains(e.message, "Unrecognized command line arguments")
end)

-- Every file of a backup folder: { [relative path] = { size, sha256 } }. The database's
-- file and its digest differ in bytes between two backups of a running server (its
-- heartbeat, OctopusServerNode.LastSeen, moves between them): they are compared by content.
local BY_CONTENT = { ["database.bak"] = true, ["database.bak.sha256"] = true, ["backup.json"] = true }
local function backup_files(dir)
  local out = {}
  for _, e in ipairs(fs.scan(dir)) do
    if e.type == "file" then
      out[e.path] = BY_CONTENT[e.path] and {} or { size = e.size, sha256 = hash.file("sha256", dir .. "/" .. e.path) }
    end
  end
  return out
end

-- backup.json without what must differ: when it was made, and the database file's digest.
local function manifest(dir)
  local m = json.decode(fs.read(dir .. "/backup.json"))
  T.match(m.created, "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$")
  T.eq(m.database.digest, "sha256:" .. hash.file("sha256", dir .. "/" .. m.database.file))
  m.created, m.database.digest, m.database.sha256, m.database.bytes = nil, nil, nil, nil
  return m
end

-- Back up S's instance with upkit.exe under Wine and with the Linux build, the same parameters
-- but for the stand-ins' form and the backup folder; the two backups must be the same.
local function same_backups(S, version)
  local r = upkit_exe(run_args(S.WCFG, S.dir .. "/runs-windows"))
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.contains(r.stdout, "Result: success")
  local l = unix("upkit-linux", run_args(S.LCFG, S.dir .. "/runs-linux"), { cwd = D, ok = { 0, 1, 2 } })
  T.eq(l.code, 0, l.stdout .. l.stderr)
  local wb, lb = S.dir .. "/backup-windows", S.dir .. "/backup-linux"
  -- the same manifest: version, counts, config, files and folders with their digests
  local wm = manifest(wb)
  T.eq(wm, manifest(lb))
  T.eq(wm.version, version)
  T.ok(wm.folders.TaskLogs.files > 0, "task logs saved")
  -- the same files, byte for byte (the folders' SHA256SUMS included)
  T.eq(backup_files(wb), backup_files(lb))
  T.eq(fs.read(wb .. "/master-key.txt"), S.main.master_key .. "\n")
  -- the same database: every row of every table (octofix.dump leaves out the heartbeat)
  local wd = octofix.dump("Driver=SQLite3;Database=" .. wb .. "/database.bak")
  T.eq(wd, octofix.dump("Driver=SQLite3;Database=" .. lb .. "/database.bak"))
  T.eq(wd.Machine, octofix.dump(S.main.connection_string).Machine)
  return wm
end

T.test("upkit.exe run backup under Wine equals the Linux build's backup (3.17.14)", function()
  same_backups(S3, "3.17.14")
end)

T.test("upkit.exe run backup under Wine equals the Linux build's backup (2023.4: spaces, event exports)", function()
  local S = new_site("2023.4.8166", "v2023")
  local ok, err = pcall(function()
    local m = same_backups(S, "2023.4.8166")
    T.ok(m.folders.EventExports, "event exports saved")
  end)
  pcall(proc.run, { S.W.server_exe, "service", "--stop", "--instance=" .. S.main.instance }, { timeout = 60 })
  if not ok then error(err, 0) end
end)

T.test("in-place-upgrade under Wine: 3.17.14 -> 2019.1.5 through msiexec.exe, sc.exe and Octopus.Server.exe", function()
  before_upgrade = octofix.dump(main.connection_string)
  local r = upkit_exe(proc_args("in-place-upgrade", WCFG, D .. "/runs-upgrade", "--yes", "--set", "target_version=2019.1.5",
                                "--set", "backup_dir=" .. D .. "/backup-upgrade"))
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.contains(r.stdout, "Result: success")
  T.eq(api("/api").Version, "2019.1.5")
  T.eq(proc.run({ W.filever, win(W.server_exe) }, { ok = { 0 } }).stdout, "2019.1.5.0\n")
  T.eq(api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
end)

T.test("rollback under Wine: 2019.1.5 -> 3.17.14, the database row for row", function()
  T.ok(before_upgrade, "the upgrade ran")
  local r = upkit_exe(proc_args("rollback", WCFG, D .. "/runs-rollback", "--yes", "--set", "backup_dir=" .. D .. "/backup-upgrade"))
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.contains(r.stdout, "Result: success")
  T.eq(api("/api").Version, "3.17.14")
  T.eq(proc.run({ W.filever, win(W.server_exe) }, { ok = { 0 } }).stdout, "3.17.14.0\n")
  T.eq(octofix.dump(main.connection_string), before_upgrade)
  T.eq(api("/api/maintenanceconfiguration").IsInMaintenanceMode, false)
end)

-- Stop the instance's service (the stand-in, as the procedures do).
pcall(proc.run, { W.server_exe, "service", "--stop", "--instance=" .. main.instance }, { timeout = 60 })

T.test("ending a stand-in (kill, timeout) ends its Unix target: the download site stops", function()
  local http = require "upkit.http"
  local function feed()
    local c <close> = http.client { base = site_url, timeout = 2, retries = 0 }
    return c:get("/download/upgrade/v3")
  end
  T.eq(feed().status, 200)
  site:close()
  local last  -- a request in flight may break first (NETWORK_ERROR); then nothing listens
  for _ = 1, 100 do
    local ok, e = pcall(feed)
    last = ok and "answered" or e.code
    if last == "CONNECT_FAILED" then break end
    upkit.sleep(0.1)
  end
  T.eq(last, "CONNECT_FAILED", "the download site is gone")
end)
T.done()
