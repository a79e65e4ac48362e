-- upkit.upgrade.versions: the upgrade path, the installers and the program.
--
--   V.upgrade_path(from, to, available)   --> versions to install, in order
--   V.fetch_installer(client, v, dir, { download_url =, digests =, sha256 = }) --> { file, sha256, verified }
--   V.install(msiexec, file, sha256, log_dir, timeout)   --> installer.run's result
--   V.uninstall(msiexec, file, log_dir, timeout)          --> { code, restart_needed, log }
--   V.expect_program(cli, want)   --> checks the installed program is `want` (VERSION_MISMATCH)
local upkit = require "upkit"
local fs = require "upkit.fs"
local log = require "upkit.log"
local proc = require "upkit.proc"
local version = require "upkit.version"
local octopus = require "upkit.octopus"

local V = {}

-- Released versions in ranges the upgrade must not land on: { from_at_least, lo, hi_excluded, why }.
-- OctopusDeploy/Issues #7790: from 2021.3.12912 or later, a version from 2022.1.2735 up to
-- 2022.3's first release breaks the upgrade.
V.BROKEN = {
  { from = "2021.3.12912", lo = "2022.1.2735", hi = "2022.3.0",
    why = "OctopusDeploy/Issues #7790: from 2021.3.12912 or later, versions from 2022.1.2735 up to " ..
          "2022.3's first release break the upgrade" },
}

local function broken(from, v)
  for _, b in ipairs(V.BROKEN) do
    if version.ge(from, b.from) and version.ge(v, b.lo) and version.lt(v, b.hi) then return b end
  end
end

--[[
V.upgrade_path(from, to, available) -> { versions to install in order, ending with to }.
The documented stops: from before 2021.1 to 2023.4 or later, go to 2021.1 first;
from 2024.3 or earlier to 2025.4 or later, stop at a version between 2024.3.600
and 2025.4.10666. No stop and no target lands on a known broken range (#7790).
available is the list of released versions (the feed).
]]
function V.upgrade_path(from, to, available)
  if version.lt(to, from) then
    upkit.error("EINVAL", string.format("target version %s is older than the installed %s", to, from))
  end
  local b = broken(from, to)
  if b then
    upkit.error("UNSUPPORTED", string.format("the upgrade %s -> %s is not possible (%s): choose a target from %s on",
                                             from, to, b.why, b.hi))
  end
  local sorted = version.sort({ table.unpack(available) })
  local function newest(lo, hi, cur)  -- newest available v with lo <= v <= hi that is not broken from cur
    local best
    for _, v in ipairs(sorted) do
      if version.ge(v, lo) and version.le(v, hi) and not broken(cur, v) then best = v end
    end
    return best
  end
  local path, cur = {}, from
  if version.lt(cur, "2021.1.0") and version.ge(to, "2023.4.0") then
    local stop = newest("2021.1.0", "2021.1.999999", cur)
    if not stop then upkit.error("NOT_FOUND", "the upgrade needs a stop at 2021.1, and no 2021.1 release is available") end
    path[#path + 1], cur = stop, stop
  end
  if version.lt(cur, "2024.3.600") and version.gt(to, "2025.4.10666") then
    local stop = newest("2024.3.600", "2025.4.10666", cur)
    if not stop then
      upkit.error("NOT_FOUND", "the upgrade needs a stop between 2024.3.600 and 2025.4.10666, and no such release is available")
    end
    path[#path + 1], cur = stop, stop
  end
  if version.gt(to, cur) then path[#path + 1] = to end
  return path
end

function V.msi_name(v) return (octopus.installer_url(v, ""):gsub("^/", "")) end

-- The digest of name in a text of sha256sum lines ("<hex>  <file>" or "<hex> *<file>"), or nil.
function V.digest_of(text, name)
  for line in (text or ""):gmatch("[^\n]+") do
    local digest, file = line:match("^(%x+)%s+%*?(.-)%s*$")
    if file == name and #digest == 64 then return digest:lower() end
  end
end

local function sidecar(file) return file .. ".sha256" end

--[[
V.fetch_installer(client, version, dir, { download_url =, digests =, sha256 = })
-> { file, sha256, verified }. Downloads Octopus.<version>-x64.msi into dir
(resuming a broken transfer, complete or nothing, atomic). Octopus publishes no
digests: the expected one comes from opts.sha256 or from opts.digests (the text
of an operator's sha256sum list); verified says whether there was one. Without
it the download is only known to be complete (and msiexec refuses a damaged
package); its digest is kept beside it (FILE.sha256), so a later run installs
exactly the file that was downloaded. A file already there with the expected
(or kept) digest is not downloaded again.
]]
function V.fetch_installer(client, v, dir, opts)
  local url = octopus.installer_url(v, opts.download_url)
  local name = V.msi_name(v)
  local want = opts.sha256 and opts.sha256:lower()
  if not want and opts.digests then
    want = V.digest_of(opts.digests, name) or upkit.error("NOT_FOUND",
      string.format("the installer digests (installer_digests) list no SHA-256 for %s", name))
  end
  fs.mkdirs(dir)
  local file = dir .. "/" .. name
  local known = want or (fs.exists(sidecar(file)) and fs.read(sidecar(file)):match("^(%x+)"))
  if known and fs.exists(file) and require("upkit.hash").file("sha256", file) == known then
    log.info("installer %s already downloaded (sha256 %s)", name, known)
    return { file = file, sha256 = known, verified = want ~= nil }
  end
  local r = client:download(url, file, { sha256 = want, resume = true })
  if want then
    log.info("downloaded %s (sha256 %s, as expected)", name, want)
  else
    fs.write(sidecar(file), r.sha256 .. "  " .. name .. "\n")
    log.warn("downloaded %s (sha256 %s): Octopus publishes no digest, so only a complete download is checked; " ..
             "give installer_digests to check it", name, r.sha256)
  end
  return { file = file, sha256 = r.sha256, verified = want ~= nil }
end

local function log_base(log_dir, file, what)
  fs.mkdirs(log_dir)
  return log_dir .. "/" .. what .. "-" .. file:match("([^/\\]+)$")
end

--[[
V.install(msiexec, file, sha256, log_dir, timeout) -> { code, restart_needed, log }
msiexec /i FILE /quiet /norestart /l*v LOG after checking the digest. There is
no retry with WIXUI_DONTVALIDATEPATH: that property only switches off the path
check of the interactive installation dialog, which /quiet never shows, so a
quiet install that failed would fail the same way again.
]]
function V.install(msiexec, file, sha256, log_dir, timeout)
  return require("upkit.installer").run { file = file, sha256 = sha256, log = log_base(log_dir, file, "install") .. ".log",
                                           program = { msiexec }, timeout = timeout }
end

--[[
V.uninstall(msiexec, file, log_dir, timeout) -> { code, restart_needed, log }
msiexec /x FILE /quiet /norestart /l*v LOG: FILE is the installer of the
installed version (each Octopus version is its own product). Uninstalling
removes the program folder only; home, configuration and instances stay.
]]
function V.uninstall(msiexec, file, log_dir, timeout)
  local logfile = log_base(log_dir, file, "uninstall") .. ".log"
  local restart = package.config:sub(1, 1) == "/" and (3010 & 0xFF) or 3010
  local r = proc.run({ msiexec, "/x", file, "/quiet", "/norestart", "/l*v", logfile },
                     { timeout = timeout, ok = { 0, restart } })
  return { code = r.code == restart and 3010 or r.code, restart_needed = r.code == restart, log = logfile }
end

-- V.expect_program(cli, want): the installed program is version want, else VERSION_MISMATCH.
function V.expect_program(cli, want)
  cli:forget_version()
  local got = cli:program_version()
  if not version.eq(got, want) then
    upkit.error("VERSION_MISMATCH", string.format("%s is Octopus %s after the install; %s was meant", cli.exe, got, want))
  end
  return got
end

-- V.expect_uninstalled(cli): the program is gone (its version cannot be read).
function V.expect_uninstalled(cli)
  local got = cli:installed_version()
  if got then
    upkit.error("VERSION_MISMATCH", string.format("Octopus %s is still installed at %s after the uninstall", got, cli.exe))
  end
end

return V
