-- sshd: throw-away OpenSSH servers on loopback for tests and benchmarks.
--
--   package.path = "tests/lib/?.lua;" .. package.path
--   local sshd = require "sshd"
--   local node = sshd.start([{ sftp = "/path/to/sftp-server wrapper", config = "extra lines",
--                               env = { NAME = "value" } (the sessions' environment),
--                               ipv6 = true (also listen on [::1]), life = seconds }])
--   node.target       -- "ssh://USER@127.0.0.1:PORT"
--   node.port, node.user, node.dir, node.pid
--   node.home         -- the sessions' HOME: a folder of the node's own (env.HOME overrides)
--   node.identity     -- the user's private key (its public half is authorized)
--   node.known_hosts  -- a known_hosts file holding this server's host key
--   node.fingerprint  -- the host key's SHA256 fingerprint ("SHA256:...")
--   node.ssh_config   -- an empty client config file (so the operator's own is not read)
--   node.opts()       -- options for remote.connect: known_hosts, identity, ssh_config
--   node.stop([keep_files]) -- stop the server and its connections (by pid), then
--                     remove its folder unless keep_files; idempotent
--   sshd.keygen(path) -- a new ed25519 key pair at path and path .. ".pub"
--   sshd.fingerprint(pubfile) -- "SHA256:..."
--
-- Each server runs as the current user from Debian's openssh-server
-- (/usr/sbin/sshd -D -e -f CONFIG) with a host key, a user key and a
-- config it generates in a temporary folder of its own, on a free port of
-- 127.0.0.1. It stops itself after a bounded life (default 900 s) even if
-- the test dies, and is stopped when the table is collected. As root it
-- needs /run/sshd (made here); as another user, an account that is not
-- locked (sshd with UsePAM no refuses one, such as nobody's).
--
-- Each node is a machine of its own, so its sessions get a HOME of their own
-- (node.home): the login shell of the account that runs the tests reads its
-- startup files from HOME for every session (bash's ~/.bashrc under sshd),
-- and those of the machine's own account (a pyenv setup took 90 ms of CPU a
-- session) are not the simulated node's. sshd reads only the first SetEnv
-- line: give variables with env, never with a SetEnv line in config.
local T = require "upkit.test"

local M = {}

local SSHD = "/usr/sbin/sshd"

local q, read = T.q, T.read_file

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1", "r")
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local function must(cmd)
  local out, ok = sh(cmd)
  if not ok then error("sshd: command failed: " .. cmd .. "\n" .. out, 2) end
  return out
end

local function write(path, data, mode)
  T.write_file(path, data)
  if mode then must("chmod " .. mode .. " " .. q(path)) end
end

function M.keygen(path)
  must("ssh-keygen -q -t ed25519 -N '' -C upkit-test -f " .. q(path))
  return path
end

function M.fingerprint(pubfile)
  return (must("ssh-keygen -l -E sha256 -f " .. q(pubfile))):match("(SHA256:%S+)")
end

local function alive(pid)
  local _, ok = sh("kill -0 " .. pid)
  if not ok then return false end
  local stat = read("/proc/" .. pid .. "/stat") or ""
  return not stat:match("^%d+ %b() Z")
end

-- The pids of the processes descending from pid (its connections and their sessions).
local function descendants(pid)
  local out = sh("ps -e -o pid= -o ppid=")
  local children = {}
  for p, pp in out:gmatch("(%d+)%s+(%d+)") do
    children[pp] = children[pp] or {}
    table.insert(children[pp], p)
  end
  local list, queue = {}, { tostring(pid) }
  while #queue > 0 do
    local p = table.remove(queue)
    for _, c in ipairs(children[p] or {}) do
      list[#list + 1] = c
      queue[#queue + 1] = c
    end
  end
  return list
end

function M.start(opts)
  opts = opts or {}
  if not io.open(SSHD) then
    error("sshd: " .. SSHD .. " is missing; install the Debian package openssh-server (make deps)")
  end
  local base = os.getenv("TMPDIR") or "/tmp"
  local self = {}
  self.dir = (must("mktemp -d " .. q(base .. "/upkit-sshd.XXXXXX"))):match("^(%S+)")
  self.user = (must("id -un")):match("^(%S+)")
  local d = self.dir
  must("chmod 700 " .. q(d))
  M.keygen(d .. "/host_key")
  self.identity = M.keygen(d .. "/user_key")
  self.fingerprint = M.fingerprint(d .. "/host_key.pub")
  write(d .. "/authorized_keys", read(d .. "/user_key.pub"), "600")
  self.ssh_config = d .. "/ssh_config"
  write(self.ssh_config, "", "600")
  if (must("id -u")):match("^0%s") then must("mkdir -p /run/sshd && chmod 755 /run/sshd") end
  local life = opts.life or 900
  self.home = d .. "/home"
  must("mkdir -p " .. q(self.home))
  local env = { HOME = self.home }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local names = {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  local setenv = {}
  for i, k in ipairs(names) do
    local kv = k .. "=" .. tostring(env[k])
    if kv:find('"', 1, true) then error("sshd: env." .. k .. " holds a double quote, which SetEnv cannot take", 2) end
    if kv:find("%s") then kv = '"' .. kv .. '"' end
    setenv[i] = kv
  end
  local started
  for _ = 1, 20 do
    self.port = math.random(20000, 60000)
    write(d .. "/sshd_config", table.concat({
      "Port " .. self.port,
      "ListenAddress 127.0.0.1",
      opts.ipv6 and "ListenAddress [::1]" or "",
      "HostKey " .. d .. "/host_key",
      "PidFile " .. d .. "/sshd.pid",
      "AuthorizedKeysFile " .. d .. "/authorized_keys",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "UsePAM no",
      "StrictModes no",
      "AllowTcpForwarding no",
      "X11Forwarding no",
      "PrintMotd no",
      "MaxSessions 50",
      "MaxStartups 50:30:100",
      "LogLevel VERBOSE",
      "Subsystem sftp " .. (opts.sftp or "internal-sftp"),
      "SetEnv " .. table.concat(setenv, " "),
      opts.config or "",
    }, "\n") .. "\n", "600")
    os.remove(d .. "/sshd.log")
    -- timeout bounds the server's life; setsid keeps it out of the test's process group
    local pid = must(string.format("setsid timeout %d %s -D -e -f %s >%s 2>&1 </dev/null & echo $!",
      life, SSHD, q(d .. "/sshd_config"), q(d .. "/sshd.log")))
    self.pid = tonumber(pid:match("%d+"))
    local deadline = os.time() + 15
    while os.time() <= deadline do
      local log = read(d .. "/sshd.log") or ""
      if log:find("Server listening on", 1, true) then started = true break end
      if not alive(self.pid) then break end
      os.execute("sleep 0.05")
    end
    if started then break end
    local log = read(d .. "/sshd.log") or ""
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    if not log:find("Address already in use", 1, true) then
      error("sshd: the server did not start:\n" .. log)
    end
  end
  if not started then error("sshd: no free port found") end
  self.target = string.format("ssh://%s@127.0.0.1:%d", self.user, self.port)
  self.known_hosts = d .. "/known_hosts"
  local pub = read(d .. "/host_key.pub"):match("^(%S+ %S+)")
  write(self.known_hosts, string.format("[127.0.0.1]:%d,[::1]:%d %s\n", self.port, self.port, pub), "600")

  function self.opts(extra)
    local o = { known_hosts = self.known_hosts, identity = self.identity, ssh_config = self.ssh_config }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  function self.log() return read(d .. "/sshd.log") or "" end

  function self.stop(keep_files)
    if not self.pid then
      if not keep_files then os.execute("rm -rf " .. q(d)) end
      return
    end
    local pid = self.pid
    self.pid = nil
    local kids = descendants(pid)
    os.execute("kill " .. pid .. " 2>/dev/null")
    for _, k in ipairs(kids) do os.execute("kill " .. k .. " 2>/dev/null") end
    for _ = 1, 100 do
      local any = alive(pid)
      for _, k in ipairs(kids) do any = any or alive(k) end
      if not any then break end
      os.execute("sleep 0.05")
    end
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    for _, k in ipairs(kids) do os.execute("kill -KILL " .. k .. " 2>/dev/null") end
    if not keep_files then os.execute("rm -rf " .. q(d)) end
  end

  return setmetatable(self, { __gc = function(t) t.stop() end })
end

return M
