-- upkit.upgrade.cluster: the nodes of a high-availability cluster, driven
-- through OpenSSH (upkit.remote). Each node runs its own Octopus.Server,
-- msiexec and service control program; upkit needs none of its own there.
--
--   Cl.params([optional])       --> the parameters: nodes, known_hosts, identity, ssh_config,
--                                   parallel, node_server_exe, node_msiexec, node_service_control,
--                                   node_file_version, node_installer_dir, this_node
--   Cl.nodes(ctx)               --> { { label, target, r, cli } } connected once per run, side by side
--   Cl.labels(ctx)              --> every node's label, the main one first (from the parameters)
--   Cl.main_node(step)          --> the step with the first node as the main one when this_node = false
--   Cl.check(ctx, cs, version [, main_label]) -- every node: same program version, instance, database
--   Cl.install(ctx, inst)       -- one task per node, at most `parallel` at once: version and
--                                   installer digest, the installer copied once (verified), msiexec,
--                                   version again --> the number of nodes installed
--   Cl.install_on(ctx, node, inst) -- the installer copied once and msiexec /i on one node
--   Cl.copy_installer(ctx, node, inst, dst [, have]) --> "kept" or "copied"
--   Cl.versions(list [, limit]) --> every node's program version, read side by side
--   Cl.progress(ctx, label, state) / Cl.states(ctx) / Cl.state_lines(ctx) --> per-node progress
--                                   (nodes.json in the run folder)
--   Cl.rollback_steps()         --> rollback's stop, reinstall and start steps for the nodes
local upkit = require "upkit"
local fs = require "upkit.fs"
local json = require "upkit.json"
local version = require "upkit.version"
local remote = require "upkit.remote"
local shell = require "upkit.remote.shell"
local clim = require "upkit.octopus.cli"
local H = require "upkit.upgrade.handles"

local Cl = {}

-- Cl.params([optional]): with optional, nodes may be left out (rollback of a single server).
function Cl.params(optional)
  return {
    { name = "nodes", type = "string", list = true, required = not optional,
      describe = "the other nodes of the cluster, ssh://[user@]host[:port] each (a list in a config file, or " ..
                 "comma-separated)",
      validate = function(v)
        for _, t in ipairs(Cl.split(v)) do
          local ok, err = pcall(remote.parse_target, t)
          if not ok and t ~= "local" then return false, upkit.is_error(err) and err.message or tostring(err) end
        end
        return #Cl.split(v) > 0, "name at least one node"
      end },
    { name = "known_hosts", type = "path", describe = "known_hosts file with every node's host key (default: ssh's own)" },
    { name = "identity", type = "path", describe = "private key for the nodes (default: ssh's own, or its agent)" },
    { name = "ssh_config", type = "path", describe = "ssh client configuration file (default: the operator's own)" },
    { name = "parallel", type = "number", default = 4, describe = "nodes installed at once",
      validate = function(v) return v >= 1, "parallel must be 1 or more" end },
    { name = "node_server_exe", type = "string", default = H.DEFAULT_EXE,
      describe = "Octopus.Server on each node (the same path on every node)" },
    { name = "node_msiexec", type = "string", default = "msiexec", describe = "the installer program on each node" },
    { name = "node_service_control", type = "string", default = "sc.exe",
      describe = "the service control program on each node" },
    { name = "node_file_version", type = "string", default = "powershell",
      describe = "the file version reader on each node (powershell, another program, or empty)" },
    { name = "node_installer_dir", type = "string", default = "",
      describe = "folder on each node the installer is copied into (empty: the account's home folder)" },
    { name = "this_node", type = "boolean", default = true,
      describe = "the machine upkit runs on is a node of the cluster (false: every node is in nodes, and the " ..
                 "first of them is the main one)" },
  }
end

--[[
Cl.main_node(step) -> the step, for a run whose main node may be remote: with
this_node = false, the first node's command line (through OpenSSH) is the
run's main one (H.cli) in each of the step's functions, and the programs its
needs name (this machine's server_exe, msiexec...) are needed by none.
]]
function Cl.main_node(step)
  local out = {}
  for k, v in pairs(step) do out[k] = v end
  for _, k in ipairs { "needs", "check", "done", "run", "undo" } do
    local f = step[k]
    if type(f) == "function" then
      out[k] = function(ctx, ...)
        if ctx.params.this_node ~= false then return f(ctx, ...) end
        ctx._cli = ctx._cli or Cl.nodes(ctx)[1].cli
        local ret = f(ctx, ...)
        if k == "needs" and type(ret) == "table" then
          local copy = {}
          for nk, v in pairs(ret) do if nk ~= "programs" then copy[nk] = v end end
          return copy
        end
        return ret
      end
    end
  end
  return out
end

Cl.split = H.split_list

-- A node's runner for the Octopus command line: r:run, and whether a file exists there.
local Runner = {}
Runner.__index = Runner
function Runner:run(argv, opts) return self.r:run(argv, opts) end
function Runner:exists(path)
  local argv
  if self.r.shell == "posix" then argv = { "test", "-e", path }
  else argv = { "powershell", "-NoProfile", "-NonInteractive", "-Command",
                "if (Test-Path -LiteralPath " .. shell.quote_powershell(path) .. ") { exit 0 } else { exit 1 }" } end
  return self.r:run(argv, { timeout = 60 }).code == 0
end
-- A file of the node, read through sftp (verified) into the run's memory.
function Runner:read(path)
  local tmp = fs.tempdir("upkit-node-file")
  local ok, text = pcall(function()
    self.r:get(path, tmp .. "/file")
    return fs.read(tmp .. "/file")
  end)
  fs.remove(tmp, { recursive = true })
  if not ok then error(text, 0) end
  return text
end

-- A program named without a folder is looked up in the node's PATH (command -v, where.exe).
function Cl.resolve(r, exe, label)
  if exe:find("[/\\]") then return exe end
  local x = r.shell == "posix" and r:run({ "sh", "-c", 'command -v -- "$1"', "sh", exe }, { timeout = 60 })
            or r:run({ "where.exe", exe }, { timeout = 60 })
  local path = x.code == 0 and x.stdout:match("^%s*([^\r\n]-)%s*[\r\n]")
  if not path or path == "" then
    upkit.error("NO_VERSION", string.format("%s: %s is not in the node's PATH", label, exe), { path = exe })
  end
  return path
end

-- Cl.labels(ctx) -> every node's label, the main one first ("this node", or the
-- first of nodes with this_node = false), from the parameters alone.
function Cl.labels(ctx)
  local out, first = {}, ctx.params.this_node == false and 1 or 2
  if first == 2 then out[1] = "this node" end
  for i, target in ipairs(Cl.split(ctx.params.nodes or "")) do
    out[#out + 1] = string.format("node %d (%s)", i + first - 1, target)
  end
  return out
end

-- Cl.state_lines(ctx) -> "LABEL: state" of every node, in the list's order (for a state summary).
function Cl.state_lines(ctx)
  local t, lines = Cl.states(ctx), {}
  for _, l in ipairs(Cl.labels(ctx)) do lines[#lines + 1] = l .. ": " .. (t[l] or "not reached") end
  return lines
end

-- Cl.nodes(ctx) -> the nodes of the nodes parameter, connected side by side
-- (HOST_KEY, AUTH_FAILED, CONNECT_FAILED name the first node that failed, in the
-- list's order). They are numbered from 2 ("node 2 (ssh://...)"): this node is
-- node 1, unless the parameter this_node is false.
function Cl.nodes(ctx)
  if ctx._cluster then return ctx._cluster end
  local p = ctx.params
  local targets, fns, labels = Cl.split(p.nodes or ""), {}, Cl.labels(ctx)
  local skip = #labels - #targets  -- "this node"
  local function pick(v) return v ~= nil and v ~= "" and v or nil end
  for i, target in ipairs(targets) do
    fns[i] = function()
      local label = labels[i + skip]
      local r = remote.connect(target, { known_hosts = p.known_hosts, identity = p.identity, ssh_config = p.ssh_config })
      local ok, exe = pcall(Cl.resolve, r, p.node_server_exe, label)
      if not ok then r:close() error(exe, 0) end
      return { label = label, target = target, r = r,
               cli = clim.new { exe = exe, instance = p.instance, timeout = p.timeout,
                                service_control = pick(p.node_service_control), file_version = pick(p.node_file_version),
                                runner = setmetatable({ r = r }, Runner) } }
    end
  end
  local list, failed = {}, nil
  for i, res in ipairs(remote.parallel(fns)) do
    list[i] = res.value
    if not res.ok and not failed then
      failed = res.error
      if upkit.is_error(failed) and not failed.message:find("^node %d") then
        failed.message = labels[i + skip] .. ": " .. failed.message
      end
    end
  end
  if failed then
    for _, n in pairs(list) do n.r:close() end
    error(failed, 0)
  end
  ctx._cluster = list
  return list
end

function Cl.close(ctx)
  for _, n in ipairs(ctx._cluster or {}) do n.r:close() end
  ctx._cluster = nil
end

local function progress_file(ctx) return ctx.run_dir .. "/nodes.json" end

-- Every node's last recorded state: { [label] = text }.
function Cl.states(ctx)
  local ok, t = pcall(function() return json.decode(fs.read(progress_file(ctx))) end)
  return ok and type(t) == "table" and t or {}
end

function Cl.progress(ctx, label, state)
  local t = Cl.states(ctx)
  t[label] = state
  fs.write(progress_file(ctx), json.encode(t))
  ctx.log("%s: %s", label, state)
end

-- "node 2 (...): installed 2025.4.10700; node 3 (...): failed: ..." in the nodes' order.
function Cl.summary(ctx, labels)
  local t, parts = Cl.states(ctx), {}
  for _, l in ipairs(labels) do parts[#parts + 1] = l .. ": " .. (t[l] or "not reached") end
  return table.concat(parts, "; ")
end

-- Raise the first error of remote.parallel's entries (in the list's order).
local function first_error(results)
  for _, res in ipairs(results) do
    if not res.ok then error(res.error, 0) end
  end
  return results
end

-- Cl.check(ctx, main_cs, main_version [, main_label]): every node runs main_version,
-- has the instance, uses main_cs; the nodes are asked side by side.
function Cl.check(ctx, main_cs, main_version, main_label)
  main_label = main_label or "this node"
  local fns = {}
  for i, node in ipairs(Cl.nodes(ctx)) do
    fns[i] = function()
      local v = node.cli:program_version()
      if not version.eq(v, main_version) then
        upkit.error("VERSION_MISMATCH", string.format("%s runs %s, %s %s", node.label, v, main_label, main_version))
      end
      if not node.cli:has_instance() then
        upkit.error("NOT_FOUND", string.format("%s has no instance %s", node.label, ctx.params.instance))
      end
      if node.cli:connection_string() ~= main_cs then
        upkit.error("DATABASE_MISMATCH", string.format("%s uses another database than %s", node.label, main_label))
      end
    end
  end
  first_error(remote.parallel(fns))
end

local function join(dir, name, shell)
  if dir == nil or dir == "" then return name end
  local sep = shell == "posix" and "/" or "\\"
  return dir:match("[/\\]$") and dir .. name or dir .. sep .. name
end

-- A node's program version, read once afresh (one command), or nil when none can be read.
local function version_now(node)
  node.cli:forget_version()
  local argv, parse = node.cli:version_probe()
  return parse(node.r:run(argv, { timeout = 60 }))
end

-- Every node's program version, read side by side: { [i] = version or nil }.
function Cl.versions(list, limit)
  local fns = {}
  for i, node in ipairs(list) do fns[i] = function() return version_now(node) end end
  local out = {}
  for i, res in ipairs(remote.parallel(fns, { limit = limit })) do out[i] = res.ok and res.value or nil end
  return out
end

--[[
Cl.copy_installer(ctx, node, inst, dst [, have]) -> "kept" or "copied": the
installer at dst on the node, once: a file there with inst.sha256 is kept;
else r:put copies it (digest on both ends, renamed into place only when they
agree). have: the digest of dst already read (false: none there), else it is
read now. Inside remote.parallel several nodes copy at once.
]]
function Cl.copy_installer(ctx, node, inst, dst, have)
  if have == nil then
    local ok, hex = pcall(node.r.sha256, node.r, dst)
    if not ok and not (upkit.is_error(hex) and hex.code == "ENOENT") then error(hex, 0) end
    have = ok and hex
  end
  if have == inst.sha256 then
    Cl.progress(ctx, node.label, "installer already there (sha256 " .. inst.sha256 .. ")")
    return "kept"
  end
  node.r:put(inst.file, dst)
  Cl.progress(ctx, node.label, "installer copied (sha256 " .. inst.sha256 .. ")")
  return "copied"
end

-- msiexec's good exit codes: 0, and 3010 (a restart is needed; 3010 & 0xFF where an exit code is a byte)
local RESTART_CODES = { 0, 3010 & 0xFF, 3010 }
local RESTART_OK = {}
for _, c in ipairs(RESTART_CODES) do RESTART_OK[c] = true end

-- The installer's path and its log's on the node (node_installer_dir), and the msiexec command.
local function installer_on(ctx, node, inst)
  local name = inst.file:match("([^/\\]+)$")
  local dir = ctx.params.node_installer_dir
  local file, log = join(dir, name, node.r.shell), join(dir, "install-" .. name .. ".log", node.r.shell)
  return file, log, { ctx.params.node_msiexec, "/i", file, "/quiet", "/norestart", "/l*v", log }
end

-- msiexec's outcome on a node (code nil: it did not finish): raise EXIT_CODE or TIMEOUT with
-- installer_log (the log's path on the node) unless it succeeded.
local function msiexec_outcome(ctx, node, argv, code, result, log)
  if code and RESTART_OK[code] then return end
  local shown = table.concat(argv, " ")
  if code then
    local tail = (result.stderr or ""):match("([^\r\n]+)%s*$")
    upkit.error("EXIT_CODE", string.format("remote.run: %s: '%s' exited with code %d%s", node.r.target, shown, code,
                                           tail and (": " .. tail) or ""), { exit_code = code, installer_log = log })
  end
  if result.timed_out then
    upkit.error("TIMEOUT", string.format("remote.run: %s: '%s' timed out after %s s", node.r.target, shown,
                                         tostring(ctx.params.timeout)), { installer_log = log })
  end
  upkit.error("CONNECT_FAILED", string.format("remote.run: %s: '%s' did not finish: %s", node.r.target, shown,
                                              result.stderr or ""), { installer_log = log })
end

--[[
Cl.install_on(ctx, node, inst) -> { code, restart_needed, seconds, log }: the
installer copied once (Cl.copy_installer) into node_installer_dir, then
msiexec /i on the node (EXIT_CODE, TIMEOUT with the field installer_log: the
log's path on the node).
]]
function Cl.install_on(ctx, node, inst)
  local file, log, argv = installer_on(ctx, node, inst)
  Cl.copy_installer(ctx, node, inst, file)
  local r = node.r:run(argv, { timeout = ctx.params.timeout })
  msiexec_outcome(ctx, node, argv, r.code, r, log)
  return { code = r.code, restart_needed = r.code ~= 0, seconds = r.seconds, log = log }
end

--[[
One node's install (a task of Cl.install): nil when it already ran the version,
else { seconds }. Two sessions on the node (r:run_each) when the installer is
there already: its program version and the installer's digest; then msiexec
and the version again. A copy adds r:put's.
]]
local function install_node(ctx, node, inst, exact)
  local file, log, argv = installer_on(ctx, node, inst)
  node.cli:forget_version()
  local vargv, parse = node.cli:version_probe()
  local kind = shell.sha256_kind(node.r.shell)
  local first = node.r:run_each({ vargv, shell.sha256_argv(node.r.shell, file) }, { timeout = 3600 })
  local before = first[1] and parse(first[1])
  if before and (exact and version.eq(before, inst.version) or not exact and not version.lt(before, inst.version)) then
    Cl.progress(ctx, node.label, "runs " .. before)
    return nil
  end
  local have = first[2] and first[2].code == 0 and shell.parse_sha256(kind, first[2].stdout) or false
  Cl.copy_installer(ctx, node, inst, file, have)
  local t0 = upkit.now()
  local second = node.r:run_each({ argv, vargv }, { timeout = ctx.params.timeout + 60 })
  local seconds = upkit.now() - t0
  msiexec_outcome(ctx, node, argv, second[1] and second[1].code, second.result, log)
  local after = second[2] and parse(second[2])
  if not (after and version.eq(after, inst.version)) then
    upkit.error("VERSION_MISMATCH", string.format("Octopus %s after the install; %s was meant", tostring(after),
                                                  inst.version), { installer_log = log })
  end
  Cl.progress(ctx, node.label, string.format("installed %s in %.1f s", inst.version, seconds))
  return { seconds = seconds }
end

--[[
Cl.install(ctx, inst = { file, sha256, version } [, exact]) -> the number of nodes installed:
on every node whose program is older than inst.version (exact: other than),
one task per node, at most `parallel` at once (remote.parallel): read its
version; copy the installer once (Cl.copy_installer); msiexec /i; read its
version again. The nodes do not wait for each other between these, so N nodes
take about the slowest node's time. A node that fails does not stop the
others; then EXIT_CODE names every node's state, and a failed node's installer
log comes back into the run folder's logs/ (a good one stays beside the
installer on the node). Nodes already at the version are skipped (a resumed
run goes on with the others).
]]
function Cl.install(ctx, inst, exact)
  local nodes, labels, fns = Cl.nodes(ctx), {}, {}
  for i, node in ipairs(nodes) do
    labels[i] = node.label
    fns[i] = function() return install_node(ctx, node, inst, exact) end
  end
  local results, installed, failed = remote.parallel(fns, { limit = ctx.params.parallel }), 0, 0
  for i, res in ipairs(results) do
    local node = nodes[i]
    if res.ok then
      if res.value then installed = installed + 1 end
    else
      failed = failed + 1
      local err = res.error
      if upkit.is_error(err) and err.installer_log then
        fs.mkdirs(ctx.run_dir .. "/logs")
        pcall(node.r.get, node.r, err.installer_log, ctx.run_dir .. "/logs/" .. node.label:gsub("[^%w%.%-]+", "_") .. ".log")
      end
      Cl.progress(ctx, node.label, "failed: " .. (upkit.is_error(err) and err.message or tostring(err)))
    end
  end
  if failed > 0 then
    upkit.error("EXIT_CODE", string.format("the install failed on %d of %d nodes: %s", failed, #nodes,
                                           Cl.summary(ctx, labels)))
  end
  return installed
end

-- Rollback's steps for the other nodes (nothing to do without nodes): stop them
-- before the database is restored; put the backup's version on them (msiexec /x
-- of the installed version's installer, side by side, then Cl.install); start them.
function Cl.rollback_steps()
  local I = require "upkit.upgrade.instance"
  local function say(ctx, node) return function(fmt, ...) ctx.log("%s: " .. fmt, node.label, ...) end end
  return {
    stop = {
      name = "stop-other-nodes",
      describe = "drain and stop every instance of the other nodes (nodes; every node with this_node=false)",
      check = function(ctx)
        for _, node in ipairs(Cl.nodes(ctx)) do I.states(node.cli, { verify = ctx.params.verify_tls }) end
        return true
      end,
      run = function(ctx)
        for _, node in ipairs(Cl.nodes(ctx)) do
          I.stop_all(node.cli, { verify = ctx.params.verify_tls, log = say(ctx, node) })
          Cl.progress(ctx, node.label, "drained and stopped")
        end
      end,
    },
    reinstall = {
      name = "previous-version-on-other-nodes",
      describe = "uninstall the installed version on the other nodes (every node with this_node=false) and " ..
                 "install the backup's version",
      run = function(ctx)
        local want, nodes, fns = ctx.state.previous_version, Cl.nodes(ctx), {}
        for i, node in ipairs(nodes) do
          fns[i] = function()  -- the installed version's own installer, copied once, msiexec /x
            local now = version_now(node)
            if not now or version.eq(now, want) then return end
            local inst = I.fetch(ctx, now)
            local name = inst.file:match("([^/\\]+)$")
            local dir = ctx.params.node_installer_dir
            local dst = join(dir, name, node.r.shell)
            Cl.copy_installer(ctx, node, inst, dst)
            node.r:run({ ctx.params.node_msiexec, "/x", dst, "/quiet", "/norestart", "/l*v",
                         join(dir, "uninstall-" .. name .. ".log", node.r.shell) },
                       { timeout = ctx.params.timeout, ok = RESTART_CODES })
            Cl.progress(ctx, node.label, "uninstalled " .. now)
          end
        end
        local results = remote.parallel(fns, { limit = ctx.params.parallel })
        for i, res in ipairs(results) do
          if not res.ok then
            local err = res.error
            Cl.progress(ctx, nodes[i].label, "failed to uninstall: " .. (upkit.is_error(err) and err.message or tostring(err)))
          end
        end
        first_error(results)
        local inst = I.fetch(ctx, want)
        inst.version = want
        Cl.install(ctx, inst, true)
      end,
    },
    start = {
      name = "start-other-nodes",
      describe = "start and undrain the instance on the other nodes (every node with this_node=false)",
      run = function(ctx)
        for _, node in ipairs(Cl.nodes(ctx)) do
          I.start(node.cli, { ctx.params.instance })
          Cl.progress(ctx, node.label, "started and undrained")
        end
        if ctx.params.this_node == false then  -- the main node is one of them: wait for the API
          local p = ctx.params
          H.set_api(ctx, I.wait_api(p.server_url, p.api_key, p.verify_tls, 120))
        end
      end,
    },
  }
end

return Cl
