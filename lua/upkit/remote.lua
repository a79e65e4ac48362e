-- upkit.remote: run commands on other machines through the system's OpenSSH client.
--
--   local r <close> = remote.connect("ssh://admin@octo2:22" [, opts])
--   r:run(argv [, opts])      --> { code, signal, stdout, stderr, seconds, timed_out, ... } like proc.run
--   r:spawn(argv [, opts])    --> process: :wait([timeout]) -> result or nil, :kill(), :running(), :close()
--   r:put(local, remote)      --> { bytes, sha256, seconds }   (sftp; verified; atomic)
--   r:get(remote, local)      --> { bytes, sha256, seconds }
--   r:run_each({ argv, ... } [, opts]) --> { { code, stdout }, ..., result }: one session for all
--   r:sha256(remote)          --> hex digest of a file on the node
--   r:upkit(args [, opts])    --> run result + { run_dir, into, journal, log }
--   r:close()                 -- ends the master connection; idempotent (also __close, __gc)
--   remote.connect("local")   -- this machine, with the same methods (proc and fs underneath)
--   remote.run_all(jobs [, { limit }]) --> per job { target, ok, result, error, seconds }
--   remote.parallel(fns [, { limit }]) --> per function { ok, value, error, seconds }: functions
--                             side by side; each waits for its commands while the others run
--   r.shell                   -- "posix", "cmd" or "powershell" (detected, or opts.shell)
--   remote.quote_posix(s), remote.quote_cmd(s), remote.quote_powershell(s)
--
-- connect opts: user, port (override the target's); known_hosts (a file: only
-- it is trusted; default: the operator's own files); identity (a private key
-- file; then only it is offered); ssh_config (a client config file instead of
-- the operator's ~/.ssh/config); options (table of extra ssh options,
-- { ServerAliveInterval = 10, ProxyJump = "bastion" }; those upkit.remote
-- sets itself, such as StrictHostKeyChecking, are EINVAL); connect_timeout (seconds, default 10);
-- persist (seconds the master stays up with no client, default 300); shell
-- ("posix", "cmd", "powershell": default, ask the node); ssh, sftp (the
-- programs, default "ssh" and "sftp").
--
-- One master connection per node (ControlMaster, its socket in a private
-- 0700 folder); every run and transfer goes through it. BatchMode and
-- StrictHostKeyChecking=yes: nothing is asked, and a host key that is
-- unknown or differs from known_hosts raises HOST_KEY naming the key's
-- fingerprint (field fingerprint). Refused keys raise AUTH_FAILED; a host
-- that cannot be reached, CONNECT_FAILED (within connect_timeout).
--
-- r:run opts are proc.run's: timeout, grace, ok, redact, stdin, cwd, env,
-- env_mode, capture_limit, on_stdout, on_stderr; as with proc.run, redact
-- hides secrets in messages and in the lines given to the callbacks, and the
-- result keeps the output as it came. r:spawn takes the same but timeout and
-- ok, and keeps stdout in the result of :wait. On a POSIX node the
-- command runs under a watchdog holding the session's input: when the ssh
-- client ends (a timeout, Ctrl-C, :kill(), this process killed) the
-- session's whole process group is ended on the node (TERM, KILL after grace). The
-- exit code is the command's; a command ended by signal N shows as code
-- 128+N, as a POSIX shell reports it. cwd, env and stdin need a POSIX node.
local upkit = require "upkit"
local util = require "upkit.util"
local proc = require "upkit.proc"
local fs = require "upkit.fs"
local hash = require "upkit.hash"
local json = require "upkit.json"
local shell = require "upkit.remote.shell"

local M = {}
M.quote_posix = shell.quote_posix
M.quote_cmd = shell.quote_cmd
M.quote_powershell = shell.quote_powershell
M.command_line = shell.command_line

local einval = util.einval
local checkopts = util.check_opts

-- The tasks of remote.parallel (coroutines): a process one of them waits for
-- lets the others run.
local tasks = setmetatable({}, { __mode = "k" })

-- proc.run for upkit.remote. Outside a task of remote.parallel it is
-- proc.run; inside one, the process starts and the task waits for it while
-- the others run, and remote.parallel ends it at popts.timeout as proc.run
-- does (TERM to its group, KILL after popts.grace). popts has no ok.
local function run_proc(argv, popts)
  if not tasks[coroutine.running()] then return proc.run(argv, popts) end
  local sopts = {}
  for k, v in pairs(popts) do if k ~= "timeout" and k ~= "grace" then sopts[k] = v end end
  sopts.on_stdout = sopts.on_stdout or function() end  -- proc.spawn keeps stdout when lines go to a callback
  local p <close> = proc.spawn(argv, sopts)
  local ok, r = coroutine.yield(p, popts.timeout, popts.grace)
  if not ok then error(r, 0) end
  return r
end

local connect_spec = {
  user = "string", port = "number", known_hosts = "string", identity = "string",
  ssh_config = "string", options = "table", connect_timeout = "number", persist = "number",
  shell = "string", ssh = "string", sftp = "string",
}
local run_spec = {
  timeout = "number", grace = "number", ok = "table", redact = "table", stdin = "string table",
  cwd = "string", env = "table", env_mode = "string", capture_limit = "number",
  on_stdout = "function", on_stderr = "function",
}
local spawn_spec = {}
for k, v in pairs(run_spec) do spawn_spec[k] = v end
spawn_spec.timeout, spawn_spec.ok = nil, nil
local transfer_spec = { timeout = "number" }
local upkit_spec = {
  path = "string", into = "string", cwd = "string", timeout = "number", grace = "number",
  ok = "table", redact = "table", env = "table", on_stdout = "function", on_stderr = "function",
}

-- ssh://[user@]host[:port], host a name, an IPv4 address or [IPv6].
function M.parse_target(target)
  if type(target) ~= "string" then einval("remote.connect: target must be a string, got %s", type(target)) end
  local rest = target:match("^ssh://(.+)$")
  if not rest then einval("remote.connect: '%s' is not ssh://[user@]host[:port]", target) end
  local user, hostport = rest:match("^([^@]+)@(.+)$")
  hostport = hostport or rest
  local host, port = hostport:match("^%[([%x:%.]+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([%w][%w%.%-_]*):?(%d*)$") end
  if not host or (user and not user:match("^[%w][%w%.%-_\\]*$")) then
    einval("remote.connect: '%s' is not ssh://[user@]host[:port]", target)
  end
  port = port ~= "" and math.tointeger(tonumber(port)) or nil
  if port and (port < 1 or port > 65535) then einval("remote.connect: port %d out of range in '%s'", port, target) end
  return user, host, port
end

-- A value for an ssh -o option: % and spaces would be read as tokens and separators.
local function cfgval(what, v)
  v = tostring(v)
  if v:find('[\r\n"]') then einval("remote.connect: %s '%s' holds a quote or a line break", what, v) end
  v = v:gsub("%%", "%%%%")
  if v:find("%s") then v = '"' .. v .. '"' end
  return v
end

local Remote = {}
Remote.__index = Remote

local function describe(self)
  return string.format("ssh://%s%s%s", self.user and (self.user .. "@") or "",
    self.host:find(":", 1, true) and ("[" .. self.host .. "]") or self.host, self.port and (":" .. self.port) or "")
end

-- ssh's own messages, without its debug lines.
local function ssh_messages(stderr)
  local out = {}
  for line in stderr:gmatch("[^\r\n]+") do
    if not line:match("^debug%d:") and not line:match("^@+$") then out[#out + 1] = line end
  end
  return table.concat(out, "\n")
end

-- Raise the error that ssh's standard error describes (exit status 255).
local function ssh_error(self, what, r)
  local err = r.stderr or ""
  local fields = { target = self.target, exit_code = r.code }
  local msgs = ssh_messages(err)
  local fp = err:match("Server host key: %S+ (SHA256:[%w%+/=]+)")
    or err:match("key sent by the remote host is\r?\n(SHA256:[%w%+/=]+)")
  fields.fingerprint = fp
  local code, why
  if r.timed_out then
    code, why = "CONNECT_FAILED", string.format("no answer within %s s", tostring(self.connect_timeout))
  elseif err:find("IDENTIFICATION HAS CHANGED", 1, true) or err:find("has changed and you have requested", 1, true) then
    code = "HOST_KEY"
    why = string.format("the host key (%s) differs from the one in known_hosts%s; it may have been replaced, "
      .. "or someone is in the middle", fp or "fingerprint not shown",
      self.known_hosts and (" ('" .. self.known_hosts .. "')") or "")
  elseif err:find("Host key verification failed", 1, true) or err:find("host key is known for", 1, true) then
    code = "HOST_KEY"
    why = string.format("the host key (%s) is not in known_hosts%s; check the fingerprint with the node's "
      .. "administrator and add the key", fp or "fingerprint not shown",
      self.known_hosts and (" ('" .. self.known_hosts .. "')") or "")
  elseif err:find("Permission denied", 1, true) or err:find("Too many authentication failures", 1, true) then
    code, why = "AUTH_FAILED", "the server refused the key: " .. msgs
  else
    code, why = "CONNECT_FAILED", msgs ~= "" and msgs or ("ssh exited with code " .. tostring(r.code))
  end
  upkit.error(code, string.format("remote: %s: %s: %s", self.target, what, why), fields)
end

-- ssh options that upkit.remote sets itself and options may not change (lower case).
local RESERVED = {
  batchmode = "", stricthostkeychecking = "", updatehostkeys = "", remotecommand = "",
  clearallforwardings = "", permitlocalcommand = "", controlpath = "", controlmaster = "",
  controlpersist = " (use opts.persist)", connecttimeout = " (use opts.connect_timeout)",
  userknownhostsfile = " (use opts.known_hosts)", globalknownhostsfile = " (use opts.known_hosts)",
  identityfile = " (use opts.identity)", identitiesonly = " (use opts.identity)", user = " (use opts.user)",
  port = " (use opts.port)", requesttty = "", loglevel = "",
}

-- ssh options every client of this connection uses.
local function common_options(self, opts)
  local o = {}
  local function add(k, v) o[#o + 1] = "-o"; o[#o + 1] = k .. "=" .. v end
  if opts.ssh_config then o[#o + 1] = "-F"; o[#o + 1] = opts.ssh_config end
  add("BatchMode", "yes")
  add("StrictHostKeyChecking", "yes")
  add("UpdateHostKeys", "no")
  -- the operator's config may add a command or forwardings to the host: not on these connections
  add("RemoteCommand", "none")
  add("ClearAllForwardings", "yes")
  add("PermitLocalCommand", "no")
  add("ControlPath", cfgval("control path", self.control))
  add("ConnectTimeout", tostring(math.max(1, math.ceil(self.connect_timeout))))
  if opts.known_hosts then
    add("UserKnownHostsFile", cfgval("known_hosts", opts.known_hosts))
    add("GlobalKnownHostsFile", "/dev/null")
  end
  if opts.identity then
    add("IdentityFile", cfgval("identity", opts.identity))
    add("IdentitiesOnly", "yes")
  end
  if self.user then add("User", cfgval("user", self.user)) end
  if self.port then add("Port", tostring(self.port)) end
  local keys = {}
  for k in pairs(opts.options or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if type(k) ~= "string" or not k:match("^%a+$") then einval("remote.connect: options key %s is not an ssh option", tostring(k)) end
    local own = RESERVED[k:lower()]
    if own then einval("remote.connect: options.%s is set by upkit.remote itself%s", k, own) end
    add(k, cfgval("option " .. k, opts.options[k]))
  end
  -- first value wins in ssh: these defaults come after the caller's options
  add("ServerAliveInterval", "15")
  add("ServerAliveCountMax", "3")
  return o
end

local function argv_of(...)
  local argv = {}
  for _, part in ipairs { ... } do
    for _, a in ipairs(part) do argv[#argv + 1] = a end
  end
  return argv
end

-- The command line for the node's ssh server: the master socket, then the command.
function Remote:_ssh(command)
  return argv_of({ self.ssh }, self.common, self.mux, { "-T", "--", self.host, command })
end

local function closed_check(self, fn)
  if self.closed then upkit.error("CLOSED", string.format("remote.%s: the connection to %s is closed", fn, self.target)) end
end

-- Run a command line (already quoted for the node's shell) over the master.
function Remote:_raw(command, popts, what)
  local r = run_proc(self:_ssh(command), popts)
  if r.code == 255 and not r.timed_out then self:_check_ssh(r, what) end
  return r
end

-- Exit status 255 is ssh's own failure when its messages say so (else the command's code).
function Remote:_check_ssh(r, what)
  local msgs = ssh_messages(r.stderr)
  if msgs:match("^ssh: ") or msgs:find("Connection closed by", 1, true) or msgs:find("Control socket", 1, true)
    or msgs:find("mux_client", 1, true) or msgs:find("Connection to .* closed") or msgs:find("Broken pipe", 1, true)
    or msgs:find("Host key verification failed", 1, true) or msgs:find("Permission denied (", 1, true)
    or msgs:find("^Connection closed%.?%s*$") or msgs:find("\nConnection closed%.?%s*$") then
    ssh_error(self, what, r)
  end
end

function M.connect(target, opts)
  opts = checkopts("remote.connect", opts, connect_spec)
  if target == "local" then return M.local_node() end
  local user, host, port = M.parse_target(target)
  if opts.shell and opts.shell ~= "posix" and opts.shell ~= "cmd" and opts.shell ~= "powershell" then
    einval("remote.connect: shell must be \"posix\", \"cmd\" or \"powershell\", got '%s'", opts.shell)
  end
  if opts.port and (math.type(opts.port) ~= "integer" or opts.port < 1 or opts.port > 65535) then
    einval("remote.connect: port must be an integer 1..65535, got %s", tostring(opts.port))
  end
  for _, k in ipairs { "known_hosts", "identity", "ssh_config" } do
    if opts[k] and not fs.exists(opts[k]) then
      upkit.error("ENOENT", string.format("remote.connect: %s '%s' does not exist", k, opts[k]), { path = opts[k] })
    end
  end
  local self = setmetatable({
    user = opts.user or user, host = host, port = opts.port or port,
    connect_timeout = opts.connect_timeout or 10, known_hosts = opts.known_hosts,
    ssh = opts.ssh or "ssh", sftp = opts.sftp or "sftp",
  }, Remote)
  self.target = describe(self)
  self.dir = fs.tempdir("upkit-ssh")
  self.control = self.dir .. "/cm"
  local ok, err = pcall(function()
    self.common = common_options(self, opts)
    -- clients become the master again if it went away (ControlPersist ended it, or it was killed)
    local persist = "ControlPersist=" .. math.max(1, math.ceil(opts.persist or 300))
    self.mux = { "-o", "ControlMaster=auto", "-o", persist }
    local master = argv_of({ self.ssh }, self.common, {
      "-o", "ControlMaster=yes", "-o", persist, "-o", "LogLevel=DEBUG1", "-f", "-N", "--", self.host })
    local r = run_proc(master, { timeout = self.connect_timeout * 2 + 10, grace = 1 })
    if r.code ~= 0 then ssh_error(self, "connect", r) end
    self.connected = true
    -- The ssh clients' standard input: a FIFO that this process holds open and
    -- never writes, so a session's input stays open while its client runs and
    -- ends when the client ends (then the node's watchdog ends the command).
    -- When this process dies, its end of the clients' output pipes closes and
    -- OpenSSH ends the sessions the same way (tested with SIGKILL).
    self.fifo_path = self.dir .. "/in"
    proc.run({ "mkfifo", "-m", "600", self.fifo_path }, { ok = { 0 } })
    self.fifo = assert(io.open(self.fifo_path, "r+"))
    self.shell = opts.shell or self:_detect()
  end)
  if not ok then
    self:close()
    error(err, 0)
  end
  return self
end

function Remote:_detect()
  local r = self:_raw(shell.PROBE, { timeout = self.connect_timeout * 2 + 10 }, "shell probe")
  local kind = shell.classify(r.stdout)
  if not kind then
    upkit.error("UNSUPPORTED", string.format("remote: %s: cannot tell the node's shell from its answer %q "
      .. "(give opts.shell)", self.target, r.stdout .. r.stderr))
  end
  return kind
end

-- A folder of this connection's own on the node (for stdin files), made on first use.
function Remote:_tempdir()
  if self.remote_tmp then return self.remote_tmp end
  if self.shell ~= "posix" then
    upkit.error("UNSUPPORTED", string.format("remote: %s: a temporary folder needs a POSIX node", self.target))
  end
  local r = self:_raw("mktemp -d \"${TMPDIR:-/tmp}/upkit-remote.XXXXXX\"", { timeout = 60 }, "mktemp")
  local d = r.code == 0 and r.stdout:match("^(/[^\n]+)\n$")
  if not d then
    upkit.error("EXIT_CODE", string.format("remote: %s: mktemp -d failed: %s", self.target, r.stderr),
      { exit_code = r.code })
  end
  self.remote_tmp = d
  return d
end

local function okset(list)
  if not list then return nil end
  local s = {}
  for _, c in ipairs(list) do s[c] = true end
  return s
end

local redactor = proc.redactor

local MAX_COMMAND = 128 * 1024 - 1

-- Check argv and options; build the command line for the node's shell.
local function prepare(self, fn, argv, opts, spec)
  closed_check(self, fn)
  opts = checkopts("remote." .. fn, opts, spec)
  if type(argv) ~= "table" or #argv == 0 then einval("remote.%s: argv must be a non-empty array of strings", fn) end
  local args = {}
  for i, a in ipairs(argv) do
    if type(a) == "number" then a = tostring(a) end
    if type(a) ~= "string" then einval("remote.%s: argv[%d] must be a string, got %s", fn, i, type(a)) end
    args[i] = a
  end
  if opts.timeout and opts.timeout < 0 then einval("remote.%s: timeout must be >= 0", fn) end
  if opts.env_mode and opts.env_mode ~= "add" and opts.env_mode ~= "replace" then
    einval("remote.%s: env_mode must be \"add\" or \"replace\", got '%s'", fn, opts.env_mode)
  end
  for k, v in pairs(opts.env or {}) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then einval("remote.%s: env key %s is not a variable name", fn, tostring(k)) end
    if v ~= false and type(v) ~= "string" and type(v) ~= "number" then
      einval("remote.%s: env.%s must be a string, a number or false, got %s", fn, k, type(v))
    end
  end
  local job = { fn = fn, args = args, opts = opts, hide = redactor(opts.redact) }
  job.shown = job.hide(table.concat(args, " "))
  if self.shell == "posix" then
    if opts.stdin then job.stdin_remote = self:_stdin_file(opts.stdin) end
    job.command = shell.posix_wrapper(args, { grace = opts.grace, cwd = opts.cwd, stdin = job.stdin_remote,
      env = opts.env, env_mode = opts.env_mode })
  else
    for _, k in ipairs { "cwd", "env", "env_mode", "stdin" } do
      if opts[k] then
        upkit.error("UNSUPPORTED", string.format("remote.%s: option '%s' needs a POSIX node; %s runs %s",
          fn, k, self.target, self.shell))
      end
    end
    job.command = shell.command_line(self.shell, args)
  end
  -- sshd hands the command to the shell as one argument: Linux takes at most 128 KiB in one
  if #job.command > MAX_COMMAND then
    upkit.error("E2BIG", string.format("remote.%s: %s: the command line for '%s' is %d bytes; a node takes at "
      .. "most %d (pass large data with stdin or a file)", fn, self.target, job.shown:sub(1, 80), #job.command,
      MAX_COMMAND))
  end
  job.popts = { redact = opts.redact, stdin = { file = self.fifo_path }, capture_limit = opts.capture_limit,
    on_stdout = opts.on_stdout, on_stderr = opts.on_stderr }
  return job
end

-- The result of a finished job: ssh's own failures and a missing cwd raised.
local function finish(self, job, r)
  if job.stdin_remote then
    pcall(self._raw, self, "rm -f -- " .. shell.quote_posix(job.stdin_remote), { timeout = 60 }, "rm")
  end
  if r.code == 255 and not r.timed_out then self:_check_ssh(r, "'" .. job.shown .. "'") end
  if job.opts.cwd and r.code == 127 and r.stderr:sub(-#shell.NO_CWD) == shell.NO_CWD then
    upkit.error("ENOENT", string.format("remote.%s: %s: cannot enter folder '%s' to run '%s'", job.fn, self.target,
      job.opts.cwd, job.shown), { path = job.opts.cwd, target = self.target })
  end
  r.pid = nil
  if r.timed_out then r.code, r.signal, r.signal_name = nil, nil, nil end
  return r
end

-- With opts.ok: TIMEOUT when the command timed out, EXIT_CODE when its code is not in ok.
local function check_outcome(target, job, r)
  local accept = okset(job.opts.ok)
  if not accept then return end
  if r.timed_out then
    upkit.error("TIMEOUT", string.format("remote.run: %s: '%s' timed out after %s s", target, job.shown,
      tostring(job.opts.timeout)), { result = r, target = target })
  end
  if not (r.code and accept[r.code]) then
    local tail = {}
    for line in r.stderr:gmatch("[^\n]+") do
      tail[#tail + 1] = line
      if #tail > 10 then table.remove(tail, 1) end
    end
    local why = r.code and ("exited with code " .. r.code) or ("was killed by signal " .. tostring(r.signal))
    upkit.error("EXIT_CODE", job.hide(string.format("remote.run: %s: '%s' %s%s", target,
      table.concat(job.args, " "), why, #tail > 0 and (": " .. table.concat(tail, "\n")) or "")),
      { exit_code = r.code, signal = r.signal, result = r, target = target })
  end
end

-- r:run(argv [, opts]) -> proc.run's result for the command on the node.
function Remote:run(argv, opts)
  local job = prepare(self, "run", argv, opts, run_spec)
  opts = job.opts
  job.popts.timeout, job.popts.grace = opts.timeout, opts.grace
  local r = finish(self, job, run_proc(self:_ssh(job.command), job.popts))
  check_outcome(self.target, job, r)
  return r
end

-- r:spawn(argv [, opts]) -> a remote process: :wait([timeout]) -> result (stdout and
-- stderr kept, as r:run's) or nil,
-- :kill() (ends the command on the node, as a timeout does), :running(), :close().
-- opts: run's, without timeout and ok.
local RemoteProcess = {}
RemoteProcess.__index = RemoteProcess

function Remote:spawn(argv, opts)
  local job = prepare(self, "spawn", argv, opts, spawn_spec)
  -- proc.spawn keeps stdout in the result only when lines go to a callback
  job.popts.on_stdout = job.popts.on_stdout or function() end
  local ok, p = pcall(proc.spawn, self:_ssh(job.command), job.popts)
  if not ok then
    if job.stdin_remote then finish(self, job, { code = 0 }) end
    error(p, 0)
  end
  return setmetatable({ p = p, finish = function(r) return finish(self, job, r) end }, RemoteProcess)
end

function RemoteProcess:wait(timeout)
  if self.result then return self.result end
  local r = self.p:wait(timeout)
  if not r then return nil end
  self.p:close()
  self.result = self.finish(r)
  return self.result
end

function RemoteProcess:kill()
  if not self.result and self.p:running() then self.p:kill("TERM") end
end

function RemoteProcess:running()
  return not self.result and self.p:running()
end

function RemoteProcess:close()
  self.p:close()
end
RemoteProcess.__close = RemoteProcess.close
RemoteProcess.__gc = RemoteProcess.close

local function random_tag()
  return string.format("%d-%06x", upkit.pid(), math.random(0, 0xffffff))
end

local each_spec = { timeout = "number", grace = "number", redact = "table" }

local function check_each(fn, argvs)
  if type(argvs) ~= "table" or #argvs == 0 then einval("remote.%s: expects a non-empty array of argv arrays", fn) end
  for i, argv in ipairs(argvs) do
    if type(argv) ~= "table" or #argv == 0 then einval("remote.%s: item %d is not a non-empty argv array", fn, i) end
  end
end

--[[
r:run_each(argvs [, opts]) -> { { code, stdout }, ..., result = the session's run
result (stderr, seconds, timed_out) }: the commands one after the other in one
session (one round trip for all: shell.sequence), each with no standard input.
opts: timeout and grace (for the whole), redact. A sequence cut short (its
timeout, the connection lost) has fewer entries than argvs.
]]
function Remote:run_each(argvs, opts)
  closed_check(self, "run_each")
  opts = checkopts("remote.run_each", opts, each_spec)
  check_each("run_each", argvs)
  local tag = "upkit-seq-" .. random_tag()
  local r = self:run(shell.sequence(self.shell, argvs, tag), opts)
  local out = shell.parse_sequence(r.stdout, tag)
  out.result = r
  return out
end

-- The stdin option as a file on the node.
function Remote:_stdin_file(stdin)
  local path = stdin
  local tmp
  if type(stdin) == "table" then
    path = stdin.file
    if type(path) ~= "string" then einval("remote.run: stdin must be a string or { file = path }") end
  else
    tmp = self.dir .. "/stdin"
    fs.write(tmp, stdin, { mode = "0600" })
    path = tmp
  end
  local dest = self:_tempdir() .. "/stdin-" .. random_tag()  -- one per command: spawned ones overlap
  self:_sftp({ "put " .. M.sftp_quote(path) .. " " .. M.sftp_quote(dest) }, "stdin upload", 3600)
  if tmp then os.remove(tmp) end
  return dest
end

-- A path as one word of an sftp batch line. Inside double quotes sftp reads
-- \" and \\ as the characters and takes ? [ * literally (it escapes them
-- itself for its globbing); a leading - would be read as a flag.
function M.sftp_quote(p)
  if type(p) ~= "string" or p == "" then einval("remote: a path must be a non-empty string") end
  if p:find("[\r\n%z]") then einval("remote: path %q holds a line break or NUL, which sftp cannot take", p) end
  if p:sub(1, 1) == "-" then p = "./" .. p end
  return '"' .. p:gsub('[\\"]', "\\%0") .. '"'
end

-- Run sftp with a batch of commands over the master connection.
function Remote:_sftp(lines, what, timeout)
  local batch = self.dir .. "/batch"
  for _, line in ipairs(lines) do
    if #line > 2000 then
      upkit.error("ENAMETOOLONG", string.format("remote: %s: sftp %s: the paths are too long for an sftp command "
        .. "(%d bytes; sftp reads at most 2047)", self.target, what, #line))
    end
  end
  fs.write(batch, table.concat(lines, "\n") .. "\n", { mode = "0600" })
  local argv = argv_of({ self.sftp, "-b", batch }, self.common, self.mux, { "--",
    self.host:find(":", 1, true) and ("[" .. self.host .. "]") or self.host })
  local r = run_proc(argv, { timeout = timeout })
  os.remove(batch)
  if r.timed_out then
    upkit.error("TIMEOUT", string.format("remote: %s: sftp %s timed out after %s s", self.target, what,
      tostring(timeout)), { target = self.target })
  end
  if r.code ~= 0 then
    self:_check_ssh(r, "sftp " .. what)
    local msgs = ssh_messages(r.stderr)
    if msgs:find("No such file", 1, true) then
      upkit.error("ENOENT", string.format("remote: %s: sftp %s: %s", self.target, what, msgs), { target = self.target })
    elseif msgs:find("Permission denied", 1, true) then
      upkit.error("EACCES", string.format("remote: %s: sftp %s: %s", self.target, what, msgs), { target = self.target })
    end
    upkit.error("EXIT_CODE", string.format("remote: %s: sftp %s failed (code %s): %s", self.target, what,
      tostring(r.code), msgs), { exit_code = r.code, target = self.target })
  end
  return r
end

-- The SHA-256 of a file on the node.
function Remote:sha256(path)
  closed_check(self, "sha256")
  local r = self:_raw(shell.sha256_command(self.shell, path), { timeout = 3600 }, "sha256")
  local hex = r.code == 0 and shell.parse_sha256(self.shell, r.stdout)
  if not hex then
    local msg = ssh_messages(r.stderr) .. r.stdout
    upkit.error(shell.is_missing(msg) and "ENOENT" or "BAD_RESPONSE",
      string.format("remote: %s: cannot hash '%s': %s", self.target, path, msg), { path = path, target = self.target })
  end
  return hex
end

-- Compare two digests of one transfer; raise CHECKSUM_MISMATCH when they differ.
function M.check_digest(what, src, want, dst, got)
  if want ~= got then
    upkit.error("CHECKSUM_MISMATCH", string.format("%s: '%s' (sha256 %s) arrived as '%s' with sha256 %s; "
      .. "the damaged copy was removed", what, src, tostring(want), dst, tostring(got)), { path = dst })
  end
end

local function split_remote(shell_kind, path)
  local dir, base
  if shell_kind == "posix" then dir, base = path:match("^(.*/)([^/]+)$")
  else dir, base = path:match("^(.*[/\\:])([^/\\:]+)$") end
  if not dir then return "", path end
  return dir, base
end


-- r:put(local, remote): upload to a temporary name beside remote, compare
-- the node's SHA-256 with the local one, then rename into place.
-- The checks put and get share: an open connection, their options, a local path.
local function transfer_start(self, fn, opts, path)
  closed_check(self, fn)
  opts = checkopts("remote." .. fn, opts, transfer_spec)
  if type(path) ~= "string" or path == "" then einval("remote.%s: local path must be a non-empty string", fn) end
  return opts, upkit.now()
end

function Remote:put(src, dst, opts)
  local t0
  opts, t0 = transfer_start(self, "put", opts, src)
  local st = fs.stat(src)
  if not st then upkit.error("ENOENT", string.format("remote.put: '%s' does not exist", src), { path = src }) end
  if st.type ~= "file" then einval("remote.put: '%s' is not a file", src) end
  local want = hash.file("sha256", src)
  local dir, base = split_remote(self.shell, dst)
  local tmp = dir .. "." .. base .. ".upkit-" .. random_tag() .. ".part"
  local what = string.format("put '%s' -> '%s'", src, dst)
  local ok, err = pcall(function()
    self:_sftp({ "put " .. M.sftp_quote(src) .. " " .. M.sftp_quote(tmp) }, what, opts.timeout)
    M.check_digest("remote.put: " .. self.target, src, want, tmp, self:sha256(tmp))
    self:_sftp({ "rename " .. M.sftp_quote(tmp) .. " " .. M.sftp_quote(dst) }, what, 600)
  end)
  if not ok then
    pcall(self._sftp, self, { "-rm " .. M.sftp_quote(tmp) }, "remove " .. tmp, 600)
    error(err, 0)
  end
  return { bytes = st.size, sha256 = want, seconds = upkit.now() - t0 }
end

-- r:get(remote, local): hash on the node, download into this connection's
-- private folder, compare, then copy into place atomically (fs.copy).
function Remote:get(src, dst, opts)
  local t0
  opts, t0 = transfer_start(self, "get", opts, dst)
  local want = self:sha256(src)
  local tmp = self.dir .. "/get-" .. random_tag()
  local ok, err = pcall(function()
    self:_sftp({ "get " .. M.sftp_quote(src) .. " " .. M.sftp_quote(tmp) },
      string.format("get '%s' -> '%s'", src, dst), opts.timeout)
    M.check_digest("remote.get: " .. self.target, src, want, tmp, hash.file("sha256", tmp))
    local c = fs.copy(tmp, dst, { overwrite = true, verify = "sha256", progress = false })
    M.check_digest("remote.get: " .. self.target, src, want, dst, c.sha256)
    return c
  end)
  os.remove(tmp)
  if not ok then error(err, 0) end
  return { bytes = err.bytes, sha256 = want, seconds = upkit.now() - t0 }
end

-- The run folder a procedure run printed: its text line or its JSON summary.
function M.run_folder(stdout)
  local dir = stdout:match("\nrun folder: ([^\r\n]+)") or stdout:match("^run folder: ([^\r\n]+)")
  if dir then return dir end
  for line in stdout:gmatch("[^\r\n]+") do
    if line:sub(1, 1) == "{" then
      local ok, rec = pcall(json.decode, line)
      if ok and type(rec) == "table" and rec.event == "summary" and type(rec.run) == "string" then return rec.run end
    end
  end
  return nil
end

-- r:upkit(args [, opts]): run upkit on the node (opts.path, default "upkit"),
-- then copy the run folder's journal and log into opts.into/<run folder name>.
function Remote:upkit(args, opts)
  closed_check(self, "upkit")
  opts = checkopts("remote.upkit", opts, upkit_spec)
  if type(args) ~= "table" then einval("remote.upkit: args must be an array of strings") end
  local argv = { opts.path or "upkit" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = self:run(argv, { timeout = opts.timeout, grace = opts.grace, redact = opts.redact, cwd = opts.cwd,
    env = opts.env, on_stdout = opts.on_stdout, on_stderr = opts.on_stderr })
  if r.timed_out then
    upkit.error("TIMEOUT", string.format("remote.upkit: %s: '%s' timed out after %s s", self.target,
      table.concat(argv, " "), tostring(opts.timeout)), { result = r, target = self.target })
  end
  local run_dir = M.run_folder(r.stdout)
  if run_dir then
    if opts.cwd and not shell.is_absolute(self.shell, run_dir) then run_dir = opts.cwd .. "/" .. run_dir end
    r.run_dir = run_dir
    if opts.into then
      local name = run_dir:match("([^/\\]+)[/\\]*$")
      r.into = opts.into .. "/" .. name
      fs.mkdirs(r.into)
      r.journal = r.into .. "/journal.jsonl"
      self:get(run_dir .. "/journal.jsonl", r.journal)
      local okl, errl = pcall(self.get, self, run_dir .. "/log.txt", r.into .. "/log.txt")
      if okl then r.log = r.into .. "/log.txt"
      elseif not (upkit.is_error(errl) and errl.code == "ENOENT") then error(errl, 0) end
    end
  end
  local accept = okset(opts.ok or { 0 })
  if not accept[r.code] then
    upkit.error("EXIT_CODE", string.format("remote.upkit: %s: '%s' exited with code %d%s", self.target,
      table.concat(argv, " "), r.code, r.into and (" (journal and log in '" .. r.into .. "')") or ""),
      { exit_code = r.code, result = r, target = self.target })
  end
  return r
end

-- r:close(): end the master connection and remove the private folder. Never raises.
function Remote:close()
  if self.closed then return end
  self.closed = true
  if self.remote_tmp then
    pcall(self._raw, self, "rm -rf -- " .. shell.quote_posix(self.remote_tmp), { timeout = 30 }, "rm")
  end
  if self.connected then
    pcall(proc.run, argv_of({ self.ssh }, self.common, { "-O", "exit", "--", self.host }), { timeout = 30 })
  end
  if self.fifo then self.fifo:close(); self.fifo = nil end
  if self.dir then pcall(fs.remove, self.dir, { recursive = true }) end
end

Remote.__close = Remote.close
Remote.__gc = Remote.close

-- The coordinator as a node: remote.connect("local") gives the same methods
-- over proc and fs, so a cluster's list may name this machine too. Commands
-- run here as proc.run runs them (a signal is reported as signal, not
-- 128+N); put and get are fs.copy with SHA-256 verification.
local Local = { shell = "posix", target = "local" }
Local.__index = Local
Local.__tostring = function(self) return "upkit.remote (local" .. (self.closed and ", closed)" or ")") end

function M.local_node()
  return setmetatable({}, Local)
end

function Local:run(argv, opts)
  closed_check(self, "run")
  opts = checkopts("remote.run", opts, run_spec)
  if not tasks[coroutine.running()] then return proc.run(argv, opts) end
  if type(argv) ~= "table" or #argv == 0 then einval("remote.run: argv must be a non-empty array of strings") end
  local popts = {}
  for k, v in pairs(opts) do if k ~= "ok" then popts[k] = v end end
  local r = run_proc(argv, popts)
  check_outcome(self.target, { opts = opts, args = argv, shown = proc.redactor(opts.redact)(table.concat(argv, " ")),
                               hide = proc.redactor(opts.redact) }, r)
  return r
end

function Local:spawn(argv, opts)
  closed_check(self, "spawn")
  local popts = {}
  for k, v in pairs(checkopts("remote.spawn", opts, spawn_spec)) do popts[k] = v end
  popts.grace = nil
  popts.on_stdout = popts.on_stdout or function() end
  local p = proc.spawn(argv, popts)
  return setmetatable({ p = p, finish = function(r) r.pid = nil; return r end }, RemoteProcess)
end

local function local_copy(self, fn, src, dst, opts)
  closed_check(self, fn)
  checkopts("remote." .. fn, opts, transfer_spec)
  local c = fs.copy(src, dst, { overwrite = true, verify = "sha256", progress = false })
  return { bytes = c.bytes, sha256 = c.sha256, seconds = c.seconds }
end
function Local:put(src, dst, opts) return local_copy(self, "put", src, dst, opts) end
function Local:get(src, dst, opts) return local_copy(self, "get", src, dst, opts) end

function Local:sha256(path)
  closed_check(self, "sha256")
  return hash.file("sha256", path)
end

Local.upkit = Remote.upkit

function Local:run_each(argvs, opts)
  closed_check(self, "run_each")
  opts = checkopts("remote.run_each", opts, each_spec)
  check_each("run_each", argvs)
  local out, t0, stderr = {}, upkit.now(), {}
  for i, argv in ipairs(argvs) do
    local left = opts.timeout and math.max(0, opts.timeout - (upkit.now() - t0))
    local r = self:run(argv, { timeout = left, grace = opts.grace, redact = opts.redact, stdin = "" })
    stderr[i] = r.stderr
    out.result = { stderr = table.concat(stderr), seconds = upkit.now() - t0, timed_out = r.timed_out }
    if r.timed_out then break end
    out[i] = { code = r.code, stdout = r.stdout }
  end
  return out
end

function Local:close() self.closed = true end
Local.__close = Local.close

--[[
remote.parallel(fns [, { limit }]) -> one entry per function, in order:
  { ok, value (what it returned), error (what it raised), seconds }
Runs the functions side by side, at most limit at once (default: all), and
waits for every one. Each runs as a task: while a command it started through
upkit.remote (r:run, r:put, r:get, r:sha256, r:upkit, remote.connect, and
the local node's run) runs, the other tasks go on; anything else it does
(a local file copy, a sleep) holds them all. A function that raises records
its error and the others go on; Ctrl-C (INTERRUPTED) ends every task's
command and is raised.
]]
local SLICE = 0.002  -- seconds of waiting on one process before looking at the next

function M.parallel(fns, opts)
  opts = checkopts("remote.parallel", opts, { limit = "number" })
  if type(fns) ~= "table" then einval("remote.parallel: expects an array of functions") end
  for i, fn in ipairs(fns) do
    if type(fn) ~= "function" then einval("remote.parallel: item %d is a %s, not a function", i, type(fn)) end
  end
  local limit = math.max(1, math.floor(opts.limit or #fns))
  local out, live, nexti = {}, {}, 1
  local function interrupted(err)  -- Ctrl-C: every task's command ends, and it is raised
    for _, t in ipairs(live) do coroutine.close(t.co) end
    error(err, 0)
  end
  -- Resume a task (with the outcome of the process it waits for): true while it still runs.
  local function resume(t, ...)
    local ok, a, b, c = coroutine.resume(t.co, ...)
    if ok and coroutine.status(t.co) == "suspended" then
      t.p, t.deadline, t.grace = a, b and (upkit.now() + b), c
      return true
    end
    if not ok then
      coroutine.close(t.co)
      if upkit.is_error(a) and a.code == "INTERRUPTED" then interrupted(a) end
    end
    out[t.i] = { ok = ok, value = ok and a or nil, error = not ok and a or nil, seconds = upkit.now() - t.t0 }
    return false
  end
  while nexti <= #fns or #live > 0 do
    while #live < limit and nexti <= #fns do
      local t = { i = nexti, co = coroutine.create(fns[nexti]), t0 = upkit.now() }
      tasks[t.co] = true
      nexti = nexti + 1
      if resume(t) then live[#live + 1] = t end
    end
    -- proc's wait(0) does not read the pipes: a short wait on each process in turn;
    -- the last one left is waited for until its deadline
    local alone = #live == 1 and nexti > #fns
    for k = #live, 1, -1 do
      local t = live[k]
      local slice = alone and (t.deadline and math.max(0, t.deadline - upkit.now()) or math.huge) or SLICE
      local ok, r = pcall(t.p.wait, t.p, slice)
      if ok and not r and t.deadline and upkit.now() >= t.deadline then
        ok, r = pcall(t.p.wait, t.p, 0, t.grace or 5)  -- ends its group, as proc.run's timeout does
      end
      if not ok and upkit.is_error(r) and r.code == "INTERRUPTED" then interrupted(r) end
      if (not ok or r) and not resume(t, ok, r) then table.remove(live, k) end
    end
  end
  return out
end

-- remote.run_all(jobs [, { limit }]) -> one entry per job, in order:
--   { target, ok, result, error, seconds }
-- jobs: { { node = r, argv = {...}, opts = { timeout, ok, grace, ... } }, ... }
-- r:run of each job side by side (remote.parallel), at most limit at once
-- (default: all), waiting for every one: a job that fails (its exit code not
-- in ok, default { 0 }; its timeout; a connection lost) records its error
-- object and the others go on. A job's timeout ends its command on the node
-- as r:run's does.
local run_all_job = { node = "table", argv = "table", opts = "table" }

function M.run_all(jobs, opts)
  opts = checkopts("remote.run_all", opts, { limit = "number" })
  if type(jobs) ~= "table" then einval("remote.run_all: jobs must be an array of { node =, argv =, opts = }") end
  local fns = {}
  for i, job in ipairs(jobs) do
    checkopts("remote.run_all: job " .. i, job, run_all_job)
    if not job.node or type(job.node.run) ~= "function" then einval("remote.run_all: job %d has no node", i) end
    local jo = {}
    for k, v in pairs(job.opts or {}) do jo[k] = v end
    jo.ok = jo.ok or { 0 }
    fns[i] = function() return job.node:run(job.argv, jo) end
  end
  local out = {}
  for i, e in ipairs(M.parallel(fns, opts)) do
    local err = e.error
    out[i] = { target = jobs[i].node.target, ok = e.ok, error = err, seconds = e.seconds,
               result = e.ok and e.value or (type(err) == "table" and err.result or nil) }
  end
  return out
end

function Remote:__tostring()
  return string.format("upkit.remote (%s%s)", self.target, self.closed and ", closed" or "")
end

return M
