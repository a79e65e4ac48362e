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
local clim = require "upkit.octopus.cli"
local H = require "upkit.upgrade.handles"
local V = require "upkit.upgrade.versions"

local Cl = {}

function Cl.params()
  return {
    { name = "nodes", type = "string", list = true, required = true,
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
  for i, target in ipairs(Cl.split(p.nodes)) do
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

--[[
Cl.install(ctx, inst = { file, sha256, version }): on every node whose program is
older than inst.version: the installer is copied once (kept when the node has a
file of the same SHA-256; r:put verifies the copy), then msiexec /i runs on the
nodes side by side, at most `parallel` at once; a failed node's installer log comes
back into the run folder's logs/ (a good one stays beside the installer on the node). A node that fails does not stop the others; then
EXIT_CODE names every node's state. Nodes already at the version are skipped
(a resumed run goes on with the nodes that are not).
]]
function Cl.install(ctx, inst)
  local nodes, labels, todo = Cl.nodes(ctx), {}, {}
  local name = inst.file:match("([^/\\]+)$")
  for _, node in ipairs(nodes) do
    labels[#labels + 1] = node.label
    node.cli:forget_version()
    local v = node.cli:installed_version()
    if v and not version.lt(v, inst.version) then
      Cl.progress(ctx, node.label, "runs " .. v)
    else
      local dst = join(ctx.params.node_installer_dir, name, node.r.shell)
      local okh, have = pcall(node.r.sha256, node.r, dst)
      if not (okh and have == inst.sha256) then node.r:put(inst.file, dst) end
      Cl.progress(ctx, node.label, "installer copied (sha256 " .. inst.sha256 .. ")")
      todo[#todo + 1] = { node = node, file = dst, log = join(ctx.params.node_installer_dir, "install-" .. name .. ".log",
                                                               node.r.shell) }
    end
  end
  local jobs = {}
  for i, t in ipairs(todo) do
    local restart = t.node.r.shell == "posix" and (3010 & 0xFF) or 3010
    jobs[i] = { node = t.node.r, argv = { ctx.params.node_msiexec, "/i", t.file, "/quiet", "/norestart", "/l*v", t.log },
                opts = { timeout = ctx.params.timeout, ok = { 0, restart } } }
  end
  local results = remote.run_all(jobs, { limit = ctx.params.parallel })
  local failed = 0
  fs.mkdirs(ctx.run_dir .. "/logs")
  for i, res in ipairs(results) do
    local node = todo[i].node
    if not res.ok then  -- the failed node's installer log, into the run folder (a good one stays on the node)
      pcall(node.r.get, node.r, todo[i].log, ctx.run_dir .. "/logs/" .. node.label:gsub("[^%w%.%-]+", "_") .. ".log")
    end
    if res.ok then
      local ok, err = pcall(V.expect_program, node.cli, inst.version)
      if ok then
        Cl.progress(ctx, node.label, string.format("installed %s in %.1f s", inst.version, res.seconds))
      else
        failed = failed + 1
        Cl.progress(ctx, node.label, "failed: " .. (upkit.is_error(err) and err.message or tostring(err)))
      end
    else
      failed = failed + 1
      local e = res.error
      Cl.progress(ctx, node.label, "failed: " .. (upkit.is_error(e) and e.message or tostring(e)))
    end
  end
  if failed > 0 then
    upkit.error("EXIT_CODE", string.format("the install failed on %d of %d nodes: %s", failed, #nodes,
                                                Cl.summary(ctx, labels)))
  end
  return results
end

return Cl
