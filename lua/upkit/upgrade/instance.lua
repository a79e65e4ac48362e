-- upkit.upgrade.instance: what the procedures do to an Octopus Server instance
-- as a whole: is it running, stop every instance of its machine, start them
-- again, upgrade it along the upgrade path, test it.
--
--   I.running(cli, instance, url [, verify])   --> boolean (service control, else the API answering)
--   I.states(cli, opts)                        --> { [instance] = running? } (read only)
--   I.stop_all(cli, opts)                      --> names of the instances that were running
--   I.start(cli, names, opts)                  --  service --start, node --drain=false
--   I.wait_api(url, api_key, verify, timeout)  --> REST server, once /api answers with the key
--   I.upgrade(ctx, target, { cli =, url =, msiexec =, db =, start = }) --> versions installed
--   I.others_left_stopped(ctx, cli, names)     -- says which other instances stay stopped, and why
--   I.test(ctx, api, db, expect)               --> { version }, or TEST_FAILED
local upkit = require "upkit"
local fs = require "upkit.fs"
local log = require "upkit.log"
local version = require "upkit.version"
local octopus = require "upkit.octopus"
local clim = require "upkit.octopus.cli"
local V = require "upkit.upgrade.versions"
local D = require "upkit.upgrade.database"

local I = {}

-- The first web listen prefix of an instance's configuration file, as a URL upkit can reach.
local function listen_url(config_file)
  local ok, cfg = pcall(clim.read_config_file, config_file)
  local prefixes = ok and cfg["Octopus.WebPortal.ListenPrefixes"]
  if not prefixes then return nil end
  local first = prefixes:match("^%s*([^,;]+)")
  return first and (first:gsub("://[%+%*]", "://127.0.0.1"):gsub("://0%.0%.0%.0", "://127.0.0.1"))
end

--[[
I.running(cli, instance, url [, verify]) -> boolean. The Windows service's
state from the service control program when there is one (cli.service_control),
else whether the instance's API answers at url. Never a field of
list-instances, which says nothing about the service.
]]
function I.running(cli, instance, url, verify)
  if cli.service_control then
    local state = cli:service_state(instance)
    return state ~= "stopped" and state ~= "absent"
  end
  if not url then
    upkit.error("UNSUPPORTED", string.format("the state of instance %s cannot be known: give service_control (the " ..
      "service control program) or the instance's URL", instance))
  end
  return octopus.answers(url, { timeout = 5, verify = verify }) ~= nil
end

local function instance_url(cli, inst, opts)
  if opts.url and inst.name:lower() == cli.instance:lower() then return opts.url end
  return inst.config and listen_url(inst.config)
end

--[[
I.states(cli, { url =, verify = }) -> { [instance name] = running? } for every instance
list-instances shows: read only, for the checks before any change (a state that
cannot be known raises: UNSUPPORTED, BAD_FORMAT, TIMEOUT).
]]
function I.states(cli, opts)
  opts = opts or {}
  local out = {}
  for _, inst in ipairs(cli:instances()) do
    out[inst.name] = I.running(cli, inst.name, instance_url(cli, inst, opts), opts.verify)
  end
  return out
end

--[[
I.stop_all(cli, { url =, verify =, wait = 0, log = fn }) -> { names that were running }.
One MSI upgrades the program of every instance on the machine, so every
instance list-instances shows is drained (node --drain=true [--wait=N], 2018.1+)
and stopped (service --stop), as Octopus's own upgrade script does. Each must
then be seen stopped: STILL_RUNNING otherwise.
]]
function I.stop_all(cli, opts)
  opts = opts or {}
  local say = opts.log or function(...) log.info(...) end
  local was = {}
  for _, inst in ipairs(cli:instances()) do
    local url = instance_url(cli, inst, opts)
    if I.running(cli, inst.name, url, opts.verify) then
      was[#was + 1] = inst.name
      if cli:has_node_command() then cli:drain_node(opts.wait or 0, inst.name) end
      cli:service("stop", inst.name)
      if I.running(cli, inst.name, url, opts.verify) then
        upkit.error("STILL_RUNNING", string.format("instance %s still runs after service --stop", inst.name))
      end
      say("instance %s drained and stopped", inst.name)
    end
  end
  return was
end

--[[
I.start(cli, names, { url =, verify = }): service --start for each instance
named, then node --drain=false (2018.1+: the upgrade script's last command).
]]
function I.start(cli, names, opts)
  opts = opts or {}
  for _, name in ipairs(names) do
    cli:service("start", name)
    if cli:has_node_command() then cli:undrain_node(name) end
  end
end

-- I.wait_api(url, api_key, verify, timeout) -> REST server object, once /api answers.
function I.wait_api(url, api_key, verify, timeout)
  local deadline = upkit.now() + (timeout or 60)
  while true do
    local ok, s = pcall(octopus.connect, { url = url, api_key = api_key, verify = verify })
    if ok then return s end
    if upkit.now() > deadline or (upkit.is_error(s) and (s.code == "AUTH_FAILED" or s.code == "PERMISSION_DENIED")) then
      error(s, 0)
    end
    upkit.sleep(0.5)
  end
end

-- The released versions (the feed), once per run.
function I.released(ctx)
  if not ctx._released then
    ctx._released = octopus.versions { feed_url = ctx.params.versions_feed, verify = ctx.params.verify_tls,
                                       retries = 3 }
  end
  return ctx._released
end

-- An HTTP client for the download site, once per run.
function I.downloads(ctx)
  ctx._downloads = ctx._downloads or require("upkit.http").client { timeout = 600, retries = 3,
                                                                   verify = ctx.params.verify_tls }
  return ctx._downloads
end

-- The operator's installer digests (installer_digests: a file, or an http(s) URL), once per run.
function I.digests(ctx)
  local src = ctx.params.installer_digests
  if not src or src == "" then return nil end
  if not ctx._digests then
    if src:match("^https?://") then
      ctx._digests = I.downloads(ctx):get(src, { expect = { 200 } }).body
    else
      ctx._digests = require("upkit.fs").read(src)
    end
  end
  return ctx._digests
end

--[[
I.kept_installer(ctx, v) -> { file, sha256, verified } or nil: the installer of
version v kept in backup_dir/installers, when its SHA-256 is the one recorded
beside it (FILE.sha256, written when it was kept) and, when installer_digests is
a file, the one that list gives. Needs no network.
]]
function I.kept_installer(ctx, v)
  local dir = ctx.params.backup_dir
  if not dir or dir == "" then return nil end
  local file = dir .. "/installers/" .. V.msi_name(v)
  if not fs.exists(file) or not fs.exists(file .. ".sha256") then return nil end
  local recorded = fs.read(file .. ".sha256"):match("^(%x+)")
  local src = ctx.params.installer_digests
  if src and src ~= "" and not src:match("^https?://") then
    local listed = V.digest_of(fs.read(src), V.msi_name(v))
    if listed and listed ~= recorded then
      upkit.error("CHECKSUM_MISMATCH", string.format("the kept installer %s has the recorded digest %s; " ..
        "installer_digests lists %s", file, tostring(recorded), listed))
    end
  end
  if require("upkit.hash").file("sha256", file) ~= recorded then
    upkit.error("CHECKSUM_MISMATCH", string.format("the kept installer %s does not match its recorded digest %s",
                                                   file, tostring(recorded)))
  end
  return { file = file, sha256 = recorded, verified = true }
end

--[[
I.keep_installer(ctx, v) -> { file, sha256, verified }: the installer of version v
in backup_dir/installers (downloaded and checked as I.fetch does, unless it is
there already), its digest recorded beside it (FILE.sha256).
]]
function I.keep_installer(ctx, v)
  local kept = I.kept_installer(ctx, v)
  if kept then return kept end
  fs.mkdirs(ctx.params.backup_dir, { mode = "0700" })  -- the backup holds secrets: private
  local inst = V.fetch_installer(I.downloads(ctx), v, ctx.params.backup_dir .. "/installers",
                                 { download_url = ctx.params.download_url, digests = I.digests(ctx) })
  fs.write(inst.file .. ".sha256", inst.sha256 .. "  " .. V.msi_name(v) .. "\n", { mode = "0600" })
  require("upkit.upgrade.folders").private(ctx.params.backup_dir .. "/installers")
  return inst
end

-- The installer of version v: the one kept in backup_dir/installers, else downloaded into the run folder.
function I.fetch(ctx, v)
  local kept = I.kept_installer(ctx, v)
  if kept then return kept end
  return V.fetch_installer(I.downloads(ctx), v, ctx.run_dir .. "/installers",
                           { download_url = ctx.params.download_url, digests = I.digests(ctx) })
end

--[[
I.uninstall_unless(ctx, cli, msiexec, want) -> the version uninstalled, or nil
when none is installed or want is. The installed version's own installer
(msiexec /x; each Octopus version is its own product, an MSI refuses a
downgrade), kept in the backup or downloaded; the program must then be gone.
]]
function I.uninstall_unless(ctx, cli, msiexec, want)
  local current = cli:installed_version()
  if not current then ctx.log("no Octopus program is installed") return nil end
  if version.eq(current, want) then ctx.log("Octopus %s is installed", want) return nil end
  local inst = I.fetch(ctx, current)
  V.uninstall(msiexec, inst.file, ctx.run_dir .. "/logs", ctx.params.timeout)
  V.expect_uninstalled(cli)
  ctx.log("uninstalled Octopus %s", current)
  return current
end

-- I.install_version(ctx, cli, msiexec, want): install want (the kept installer, else downloaded), check the program.
function I.install_version(ctx, cli, msiexec, want)
  local inst = I.fetch(ctx, want)
  V.install(msiexec, inst.file, inst.sha256, ctx.run_dir .. "/logs", ctx.params.timeout)
  V.expect_program(cli, want)
  ctx.log("installed Octopus %s", want)
end

--[[
I.upgrade(ctx, target, { cli =, url =, msiexec =, db = ODBC string, start = true [, install] }) -> versions installed.
site.install(inst) -> { restart_needed }, when given, installs instead of msiexec
on this machine (a node reached through OpenSSH: upkit.upgrade.cluster).
Installs each version of the upgrade path in turn: download and check the
installer, stop every instance of the machine, install, check the program's
version, upgrade the database. The path starts at the older of the program's
version and the version whose database upgrade last completed (the
installation history): after a failed database upgrade the program is newer
than the schema. A hop whose program is installed is not installed again, so
a resumed upgrade goes on where it stopped. At the end (unless start = false)
this instance is started and undrained; other instances of the machine stay
stopped (I.others_left_stopped).
]]
function I.upgrade(ctx, target, site)
  local cli = site.cli
  local current = cli:program_version()
  local db <close> = require("upkit.sql").connect(site.db)
  local schema = D.schema_version(db)
  if not schema then
    upkit.error("NO_VERSION", "the database's OctopusServerInstallationHistory is empty: the schema's version is unknown")
  end
  if version.lt(schema, current) then
    ctx.log("the database was last upgraded to %s; the program is %s", schema, current)
    current = schema
  end
  local hops = V.upgrade_path(current, target, I.released(ctx))
  if #hops == 0 then ctx.log("already at %s", current) end
  if #hops > 1 then ctx.log("upgrade path: %s -> %s", current, table.concat(hops, " -> ")) end
  local others = {}
  local done = {}
  for _, hop in ipairs(hops) do
    local inst = I.fetch(ctx, hop)
    for _, name in ipairs(I.stop_all(cli, { url = site.url, verify = ctx.params.verify_tls, log = ctx.log })) do
      others[#others + 1] = name
    end
    if version.lt(cli:program_version(), hop) then
      local r = site.install and site.install(inst)
                or V.install(site.msiexec, inst.file, inst.sha256, ctx.run_dir .. "/logs", ctx.params.timeout)
      V.expect_program(cli, hop)
      ctx.log("installed %s%s", hop, r.restart_needed and " (Windows asks for a restart)" or "")
    end
    ctx.log("upgrading the database to %s", hop)
    cli:upgrade_database(ctx.params.skip_license_check)
    done[#done + 1] = hop
  end
  if site.start ~= false then
    I.start(cli, { cli.instance })
    I.others_left_stopped(ctx, cli, others)
  end
  return done
end

--[[
I.others_left_stopped(ctx, cli, names): the instances of names other than cli's
own were stopped because the MSI upgrades the program of every instance on the
machine; their databases are still at the old version, and upgrading them
without their own backup is not this procedure's to do. They stay stopped, and
the run says what each needs.
]]
function I.others_left_stopped(ctx, cli, names)
  local seen = {}
  for _, name in ipairs(names or {}) do
    if name:lower() ~= cli.instance:lower() and not seen[name:lower()] then
      seen[name:lower()] = true
      ctx.warn("instance %s of this machine was stopped for the upgrade and stays stopped: its program is now " ..
               "Octopus %s; back up its database, run `%s database --upgrade --instance=%s`, then start it",
               name, cli:program_version(), cli.exe, name)
    end
  end
end

--[[
I.test(ctx, api, db, expect) -> { version }. The checks of the guide's "test
the upgraded instance": version is the target, health is normal, counts of
projects, machines and tasks match the source, task logs and artifacts of old
deployments are readable, and the user's test function (expect.test) passes.
]]
function I.test(ctx, api, db, expect)
  local problems = {}
  local v = api:version()
  if expect.version and not version.eq(v, expect.version) then
    problems[#problems + 1] = string.format("version is %s, expected %s", v, expect.version)
  end
  local health = api:health()
  if health.IsOperatingNormally == false then
    problems[#problems + 1] = "health: " .. tostring(health.Description)
  end
  if expect.counts then
    local now = D.counts(db)
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

return I
