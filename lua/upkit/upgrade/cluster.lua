-- upkit.upgrade.cluster: the other nodes of a high-availability cluster,
-- driven through OpenSSH (upkit.remote). Each node runs its own Octopus.Server,
-- msiexec and service control program; upkit needs none of its own there.
--
--   Cl.params()                 --> the parameters: nodes, known_hosts, identity, ssh_config,
--                                   parallel, node_server_exe, node_msiexec, node_service_control,
--                                   node_file_version, node_installer_dir
--   Cl.nodes(ctx)               --> { { label, target, r, cli } } connected once per run
--   Cl.check(ctx, cs, version)  -- every node: same program version, instance, database
--   Cl.install(ctx, inst)       -- copy the installer once (verified) and install it on every
--                                   node not at inst.version, at most `parallel` at once
--   Cl.progress(ctx, label, state) / Cl.states(ctx) --> per-node progress (nodes.json in the run folder)
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
  }
end

function Cl.split(v)
  local out = {}
  for item in tostring(v or ""):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end

-- A node's runner for the Octopus command line: r:run, and whether a file exists there.
local Runner = {}
Runner.__index = Runner
function Runner:run(argv, opts) return self.r:run(argv, opts) end
function Runner:exists(path)
  local argv
  if self.r.shell == "posix" then argv = { "test", "-e", path }
  else argv = { "powershell", "-NoProfile", "-NonInteractive", "-Command",
                "if (Test-Path -LiteralPath '" .. path:gsub("'", "''") .. "') { exit 0 } else { exit 1 }" } end
  return self.r:run(argv, { timeout = 60 }).code == 0
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

-- Cl.nodes(ctx) -> every other node, connected (HOST_KEY, AUTH_FAILED, CONNECT_FAILED name it).
function Cl.nodes(ctx)
  if ctx._cluster then return ctx._cluster end
  local p = ctx.params
  local list = {}
  for i, target in ipairs(Cl.split(p.nodes or "")) do
    local ok, r = pcall(remote.connect, target, { known_hosts = p.known_hosts, identity = p.identity,
                                                  ssh_config = p.ssh_config })
    if not ok then
      for _, n in ipairs(list) do n.r:close() end
      if upkit.is_error(r) then
        r.message = string.format("node %d (%s): %s", i + 1, target, r.message)
        error(r, 0)
      end
      error(r, 0)
    end
    local function pick(v) return v ~= nil and v ~= "" and v or nil end
    local label = string.format("node %d (%s)", i + 1, target)
    list[#list + 1] = {
      label = label, target = target, r = r,
      cli = clim.new { exe = Cl.resolve(r, p.node_server_exe, label), instance = p.instance, timeout = p.timeout,
                       service_control = pick(p.node_service_control), file_version = pick(p.node_file_version),
                       runner = setmetatable({ r = r }, Runner) },
    }
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

-- Cl.check(ctx, main_cs, main_version): every node runs main_version, has the instance, uses main_cs.
function Cl.check(ctx, main_cs, main_version)
  for _, node in ipairs(Cl.nodes(ctx)) do
    local v = node.cli:program_version()
    if not version.eq(v, main_version) then
      upkit.error("VERSION_MISMATCH", string.format("%s runs %s, this node %s", node.label, v, main_version))
    end
    if not node.cli:has_instance() then
      upkit.error("NOT_FOUND", string.format("%s has no instance %s", node.label, ctx.params.instance))
    end
    if node.cli:connection_string() ~= main_cs then
      upkit.error("DATABASE_MISMATCH", string.format("%s uses another database than this node", node.label))
    end
  end
end

local function join(dir, name, shell)
  if dir == nil or dir == "" then return name end
  local sep = shell == "posix" and "/" or "\\"
  return dir:match("[/\\]$") and dir .. name or dir .. sep .. name
end

-- The command that prints a file's SHA-256 on a node of this shell (as r:sha256 reads it).
local function sha256_argv(shell_kind, path)
  if shell_kind == "posix" then
    return { "sh", "-c", 'if command -v sha256sum >/dev/null 2>&1; then sha256sum -- "$1"; else shasum -a 256 -- "$1"; fi',
             "upkit-sha256", path }
  elseif shell_kind == "cmd" then
    return { "certutil", "-hashfile", path, "SHA256" }
  end
  return { "powershell", "-NoProfile", "-NonInteractive", "-Command",
           "(Get-FileHash -Algorithm SHA256 -LiteralPath '" .. path:gsub("'", "''") .. "').Hash" }
end

-- Run one command per node side by side (at most limit at once): { [i] = run_all entry }.
local function side_by_side(list, argv_of, opts, limit)
  local jobs = {}
  for i, item in ipairs(list) do jobs[i] = { node = item.r, argv = argv_of(item), opts = opts } end
  if #jobs == 0 then return {} end
  return remote.run_all(jobs, { limit = limit })
end

-- Every node's program version, read side by side: { [i] = version or nil }.
function Cl.versions(list, limit)
  local parsers, out = {}, {}
  local res = side_by_side(list, function(node)
    node.cli:forget_version()
    local argv, parse = node.cli:version_probe()
    parsers[node] = parse
    return argv
  end, { timeout = 60, ok = { 0, 1, 2, 127 } }, limit)
  for i, node in ipairs(list) do
    local r = res[i]
    out[i] = r and r.result and parsers[node](r.result) or nil
  end
  return out
end

--[[
Cl.install(ctx, inst = { file, sha256, version }): on every node whose program is
older than inst.version: the installer is copied once (kept when the node has a
file of the same SHA-256; r:put verifies the copy), then msiexec /i runs on the
nodes side by side, at most `parallel` at once, and each program's version is
read again. The versions and digests are read side by side too, so N nodes take
about the slowest node's time. A node that fails does not stop the others; then
EXIT_CODE names every node's state; a failed node's installer log comes back
into the run folder's logs/ (a good one stays beside the installer on the node).
Nodes already at the version (or newer, unless exact) are skipped (a resumed run
goes on with the others).
]]
function Cl.install(ctx, inst, exact)
  local nodes, labels, todo = Cl.nodes(ctx), {}, {}
  local limit = ctx.params.parallel
  local name = inst.file:match("([^/\\]+)$")
  local before = Cl.versions(nodes, limit)
  for i, node in ipairs(nodes) do
    labels[#labels + 1] = node.label
    if before[i] and (exact and version.eq(before[i], inst.version) or not exact and not version.lt(before[i], inst.version)) then
      Cl.progress(ctx, node.label, "runs " .. before[i])
    else
      todo[#todo + 1] = { node = node, r = node.r, file = join(ctx.params.node_installer_dir, name, node.r.shell),
                          log = join(ctx.params.node_installer_dir, "install-" .. name .. ".log", node.r.shell) }
    end
  end
  local have = side_by_side(todo, function(t) return sha256_argv(t.r.shell, t.file) end,
                            { timeout = 3600, ok = { 0, 1, 2 } }, limit)
  for i, t in ipairs(todo) do
    local got = have[i].result and shell.parse_sha256(t.r.shell, have[i].result.stdout)
    if got ~= inst.sha256 then t.r:put(inst.file, t.file) end
    Cl.progress(ctx, t.node.label, "installer copied (sha256 " .. inst.sha256 .. ")")
  end
  local results = side_by_side(todo, function(t)
    return { ctx.params.node_msiexec, "/i", t.file, "/quiet", "/norestart", "/l*v", t.log }
  end, { timeout = ctx.params.timeout, ok = { 0, 3010 & 0xFF, 3010 } }, limit)
  local installed = {}
  for i, t in ipairs(todo) do installed[i] = t.node end
  local after = Cl.versions(installed, limit)
  local failed = 0
  fs.mkdirs(ctx.run_dir .. "/logs")
  for i, res in ipairs(results) do
    local node = todo[i].node
    local problem
    if not res.ok then
      problem = upkit.is_error(res.error) and res.error.message or tostring(res.error)
    elseif not (after[i] and version.eq(after[i], inst.version)) then
      problem = string.format("Octopus %s after the install; %s was meant", tostring(after[i]), inst.version)
    end
    if problem then
      failed = failed + 1
      local dst = ctx.run_dir .. "/logs/" .. node.label:gsub("[^%w%.%-]+", "_") .. ".log"
      pcall(node.r.get, node.r, todo[i].log, dst)
      Cl.progress(ctx, node.label, "failed: " .. problem)
    else
      Cl.progress(ctx, node.label, string.format("installed %s in %.1f s", inst.version, res.seconds))
    end
  end
  if failed > 0 then
    upkit.error("EXIT_CODE", string.format("the install failed on %d of %d nodes: %s", failed, #nodes,
                                           Cl.summary(ctx, labels)))
  end
  return results
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
      describe = "drain and stop every instance of the other nodes (nodes)",
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
      describe = "uninstall the installed version on the other nodes and install the backup's version",
      run = function(ctx)
        local want, nodes = ctx.state.previous_version, Cl.nodes(ctx)
        local limit = ctx.params.parallel
        local now, todo = Cl.versions(nodes, limit), {}
        for i, node in ipairs(nodes) do
          if now[i] and not version.eq(now[i], want) then
            local inst = I.fetch(ctx, now[i])
            local name = inst.file:match("([^/\\]+)$")
            local dst = join(ctx.params.node_installer_dir, name, node.r.shell)
            local okh, have = pcall(node.r.sha256, node.r, dst)
            if not (okh and have == inst.sha256) then node.r:put(inst.file, dst) end
            todo[#todo + 1] = { node = node, r = node.r, file = dst, from = now[i],
                                log = join(ctx.params.node_installer_dir, "uninstall-" .. name .. ".log", node.r.shell) }
          end
        end
        local res = side_by_side(todo, function(t)
          return { ctx.params.node_msiexec, "/x", t.file, "/quiet", "/norestart", "/l*v", t.log }
        end, { timeout = ctx.params.timeout, ok = { 0, 3010 & 0xFF, 3010 } }, limit)
        for i, r in ipairs(res) do
          if not r.ok then
            Cl.progress(ctx, todo[i].node.label, "failed to uninstall: " .. tostring(r.error and r.error.message))
            error(r.error, 0)
          end
          Cl.progress(ctx, todo[i].node.label, "uninstalled " .. todo[i].from)
        end
        local inst = I.fetch(ctx, want)
        inst.version = want
        Cl.install(ctx, inst, true)
      end,
    },
    start = {
      name = "start-other-nodes",
      describe = "start and undrain the instance on the other nodes",
      run = function(ctx)
        for _, node in ipairs(Cl.nodes(ctx)) do
          I.start(node.cli, { ctx.params.instance })
          Cl.progress(ctx, node.label, "started and undrained")
        end
      end,
    },
  }
end

return Cl
