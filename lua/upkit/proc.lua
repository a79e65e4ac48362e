-- upkit.proc: start programs from an argv array (never a shell).
--
--   proc.run(argv [, opts]) --> { code, signal, stdout, stderr, seconds, timed_out,
--                                 stdout_truncated, stderr_truncated, pid, lingered }
--   proc.spawn(argv [, opts]) --> process with :wait([timeout]) -> result or nil,
--       :kill([signal]), :pid(), :running(), :lines() (stdout lines), :close(),
--       :write(s [, timeout]) -> true (or false, bytes taken) and :close_stdin()
--       with stdin = { pipe = true }
--   proc.which(name) --> the program file proc.spawn would start for name (PATH
--       lookup; on Windows also .exe, .com, .bat, .cmd), or nil when there is none
--
-- opts: cwd; env (table of NAME = value, false removes NAME); env_mode
-- ("add": added to the inherited environment (default), "replace": only
-- env); stdin (a string, or { file = path }; default: nothing, /dev/null;
-- proc.spawn also { pipe = true }: stdin stays open for :write until :close_stdin);
-- stdout/stderr ("pipe" (default), "null", "inherit"); capture_limit
-- (bytes kept per stream, default 64 MiB: beyond it the tail is kept and
-- <stream>_truncated is set); on_stdout/on_stderr (called with each line
-- as it arrives; an error in one ends the process group and is raised
-- after it is reaped); redact (secrets replaced by *** in every message
-- and in the lines given to the callbacks).
-- proc.run only: timeout (seconds; then SIGTERM to the whole process
-- group, SIGKILL after grace seconds (default 5), timed_out = true);
-- ok = { 0, 3010 } (other exit codes raise EXIT_CODE with the code and
-- the last lines of stderr; a timeout raises TIMEOUT).
-- A program that cannot start raises ENOENT/EACCES naming it and the
-- folder. Ctrl-C while waiting ends the process group and raises INTERRUPTED.
--
-- Grandchildren (a background process the program started, which inherited
-- its stdout or stderr): the pipes are read until they close, so such a
-- process keeps its output and does not die of SIGPIPE while it writes.
-- After the program itself exits this goes on for at most `linger` seconds
-- (default 5, never past `timeout`); if the pipes are still held open then,
-- upkit stops reading and closes its ends (a grandchild writing after that
-- gets EPIPE/SIGPIPE), the result says lingered = true, and a warning names
-- the command. So output is never lost silently and proc.run never hangs
-- on a grandchild. Start a daemon with its output redirected to avoid this.
-- proc.spawn: stdout read with :lines() is not kept in result.stdout; an
-- undrained pipe fills and blocks the program, so give stdout = "null"
-- or "inherit" to a chatty program whose output you do not read.
local upkit = require "upkit"
local native = require "upkit._proc"

local util = require "upkit.util"

local M = {}

M.which = native.which

local einval = util.einval

local spec = {
  cwd = "string", env = "table", env_mode = "string", stdin = "string table",
  stdout = "string", stderr = "string", capture_limit = "number",
  on_stdout = "function", on_stderr = "function", redact = "table", linger = "number",
}
local run_spec = { timeout = "number", grace = "number", ok = "table" }

local full_spec = setmetatable({}, { __index = spec })
for k, v in pairs(run_spec) do full_spec[k] = v end

local function checkopts(fn, opts, extra)
  return util.check_opts(fn, opts, extra and full_spec or spec)
end

-- proc.redactor(secrets) -> function(s): s with every secret (longest first)
-- replaced by "***"; non-strings pass through. upkit.remote uses it too.
local function redactor(secrets)
  local list = {}
  for _, s in ipairs(secrets or {}) do
    if type(s) == "string" and s ~= "" then list[#list + 1] = s end
  end
  if #list == 0 then return function(s) return s end end
  table.sort(list, function(a, b) return #a > #b end)
  return function(s)
    if type(s) ~= "string" then return s end
    for _, secret in ipairs(list) do
      local i = 1
      local out = {}
      while true do
        local a, b = s:find(secret, i, true)
        if not a then break end
        out[#out + 1] = s:sub(i, a - 1)
        out[#out + 1] = "***"
        i = b + 1
      end
      out[#out + 1] = s:sub(i)
      s = table.concat(out)
    end
    return s
  end
end

local function build_env(fn, env, mode)
  mode = mode or "add"
  if mode ~= "add" and mode ~= "replace" then
    einval("%s: env_mode must be \"add\" or \"replace\", got '%s'", fn, tostring(mode))
  end
  if env == nil and mode == "add" then return nil end
  local merged, order = {}, {}
  if mode == "add" then
    for _, kv in ipairs(native.environ()) do
      local k = kv:match("^([^=]*)=")
      if k and not merged[k] then order[#order + 1] = k end
      if k then merged[k] = kv:sub(#k + 2) end
    end
  end
  for k, v in pairs(env or {}) do
    if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
      einval("%s: env key %s is not a variable name", fn, tostring(k))
    end
    if v == false then
      merged[k] = nil
    elseif type(v) == "string" or type(v) == "number" then
      if merged[k] == nil then order[#order + 1] = k end
      merged[k] = tostring(v)
    else
      einval("%s: env.%s must be a string, a number or false, got %s", fn, k, type(v))
    end
  end
  local list = {}
  for _, k in ipairs(order) do
    if merged[k] ~= nil then list[#list + 1] = k .. "=" .. merged[k] end
  end
  return list
end

local function check_argv(fn, argv)
  if type(argv) ~= "table" or #argv == 0 then
    einval("%s: argv must be a non-empty array of strings", fn)
  end
  for i, a in ipairs(argv) do
    if type(a) ~= "string" then
      if type(a) == "number" then argv[i] = tostring(a)
      else einval("%s: argv[%d] must be a string, got %s", fn, i, type(a)) end
    end
  end
end

-- Re-raise err with every secret hidden.
local function reraise(err, hide)
  if upkit.is_error(err) then
    err.message = hide(err.message)
    error(err, 0)
  end
  upkit.error("LUA_ERROR", hide(tostring(err)))
end

local function start(fn, argv, opts, hide)
  check_argv(fn, argv)
  local copts = {
    cwd = opts.cwd, env = build_env(fn, opts.env, opts.env_mode),
    stdin = opts.stdin, stdout = opts.stdout, stderr = opts.stderr,
    capture_limit = opts.capture_limit and math.tointeger(opts.capture_limit)
      or (opts.capture_limit and einval("%s: capture_limit must be an integer", fn)),
    what = fn, linger = opts.linger,
  }
  for _, k in ipairs { "on_stdout", "on_stderr" } do
    local cb = opts[k]
    if cb then copts[k] = function(line) return cb(hide(line)) end end
  end
  return copts
end

function M.spawn(argv, opts)
  opts = checkopts("proc.spawn", opts)
  local hide = redactor(opts.redact)
  local copts = start("proc.spawn", argv, opts, hide)
  copts.lines = copts.stdout == nil or copts.stdout == "pipe"
  if opts.on_stdout then copts.lines = nil end
  local ok, p = pcall(native.spawn, argv, copts)
  if not ok then reraise(p, hide) end
  return p
end

local function tail_lines(s, n)
  local lines = {}
  for line in s:gmatch("[^\n]+") do
    lines[#lines + 1] = line
    if #lines > n then table.remove(lines, 1) end
  end
  return table.concat(lines, "\n")
end

local function describe(argv, hide)
  return hide(table.concat(argv, " "))
end

function M.run(argv, opts)
  opts = checkopts("proc.run", opts, run_spec)
  local hide = redactor(opts.redact)
  if type(opts.stdin) == "table" and opts.stdin.pipe then
    einval("proc.run: stdin = { pipe = true } needs proc.spawn (nothing could write to it)")
  end
  local copts = start("proc.run", argv, opts, hide)
  if opts.timeout and opts.timeout < 0 then einval("proc.run: timeout must be >= 0") end
  local okset
  if opts.ok then
    okset = {}
    for _, c in ipairs(opts.ok) do okset[c] = true end
  end
  local ok, r = pcall(function()
    local p <close> = native.spawn(argv, copts)
    return p:wait(opts.timeout or math.huge, opts.grace or 5)
  end)
  if not ok then reraise(r, hide) end
  if r.lingered then
    require("upkit.log").warn("proc.run: '%s' exited, but a process it started still held its output after %s s; "
      .. "stopped reading it", describe(argv, hide), tostring(math.min(opts.linger or 5, opts.timeout or math.huge)))
  end
  if okset then
    if r.timed_out then
      upkit.error("TIMEOUT", string.format("proc.run: '%s' timed out after %s s", describe(argv, hide),
        tostring(opts.timeout)), { result = r })
    end
    if not (r.code and okset[r.code]) then
      local why = r.code and ("exited with code " .. r.code)
        or ("was killed by signal " .. (r.signal_name and ("SIG" .. r.signal_name) or tostring(r.signal)))
      local tail = tail_lines(r.stderr, 10)
      upkit.error("EXIT_CODE", hide(string.format("proc.run: '%s' %s%s", table.concat(argv, " "), why,
        tail ~= "" and (": " .. tail) or "")), { exit_code = r.code, signal = r.signal, result = r })
    end
  end
  return r
end

M.redactor = redactor

return M
