-- upkit.test: a small TAP test runner for upkit's own tests and for users'.
--
--   local T = require "upkit.test"
--   T.test("name of the behaviour", function() T.eq(got, want) end)
--   T.raises("ENOENT", function() ... end)     --> the error object
--   T.done()                                   -- plan line, exit status
--
-- Each test runs under xpcall; a failure prints 'not ok' with the message
-- and traceback as TAP diagnostics. After each test the garbage is
-- collected and a native handle opened by the test and still open fails it.
local core = require "upkit._core"

local T = {}
local count, failed = 0, 0
local current_name

local function diag(s)
  for line in (tostring(s) .. "\n"):gmatch("(.-)\n") do
    io.stdout:write("# ", line, "\n")
  end
end
T.diag = diag

local function repr(v)
  if type(v) == "string" then
    if #v > 200 then return string.format("%q...(%d bytes)", v:sub(1, 200), #v) end
    return string.format("%q", v)
  end
  if type(v) == "table" then
    local ok, json = pcall(require, "upkit.json")
    if ok and not getmetatable(v) then
      local ok2, s = pcall(json.encode, v)
      if ok2 then return #s > 1000 and (s:sub(1, 1000) .. string.format("...(%d bytes)", #s)) or s end
    end
  end
  return tostring(v)
end
T.repr = repr

local Failure = {}
local function fail(msg, level)
  error(setmetatable({ message = msg }, Failure), (level or 1) + 1)
end
T.fail = function(msg) fail(msg, 2) end

local function deep_eq(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not deep_eq(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
T.deep_eq = deep_eq

-- The path to the first difference between two tables, and the two values there.
local function first_diff(a, b, path)
  if type(a) ~= "table" or type(b) ~= "table" then
    if deep_eq(a, b) then return nil end
    return path, a, b
  end
  local keys = {}
  for k in pairs(a) do keys[#keys + 1] = k end
  for k in pairs(b) do if a[k] == nil then keys[#keys + 1] = k end end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  for _, k in ipairs(keys) do
    local p, x, y = first_diff(a[k], b[k], path .. "[" .. repr(k) .. "]")
    if p then return p, x, y end
  end
  return nil
end

function T.eq(got, want, what)
  if not deep_eq(got, want) then
    local where = ""
    if type(got) == "table" and type(want) == "table" then
      local p, x, y = first_diff(got, want, "")
      if p then where = string.format(" (first difference at %s: got %s, want %s)", p, repr(x), repr(y)) end
    end
    fail(string.format("%sgot %s, want %s%s", what and (what .. ": ") or "",
                       type(got) == "table" and "a table" or repr(got),
                       type(want) == "table" and "another" or repr(want), where), 2)
  end
  return got
end

function T.ne(got, unwanted, what)
  if deep_eq(got, unwanted) then
    fail(string.format("%sgot %s, wanted anything else", what and (what .. ": ") or "", repr(got)), 2)
  end
  return got
end

function T.ok(v, what)
  if not v then fail((what or "expected a true value") .. ", got " .. repr(v), 2) end
  return v
end

function T.match(s, pattern, what)
  if type(s) ~= "string" or not s:find(pattern) then
    fail(string.format("%s%s does not match %q", what and (what .. ": ") or "", repr(s), pattern), 2)
  end
  return s
end

function T.contains(s, plain, what)
  if type(s) ~= "string" or not s:find(plain, 1, true) then
    fail(string.format("%s%s does not contain %q", what and (what .. ": ") or "", repr(s), plain), 2)
  end
  return s
end

function T.near(got, want, tol, what)
  if type(got) ~= "number" or math.abs(got - want) > tol then
    fail(string.format("%sgot %s, want %s +- %s", what and (what .. ": ") or "", repr(got), want, tol), 2)
  end
end

-- T.raises(code, fn, ...) -> the error object; code may be nil to accept any.
function T.raises(code, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then fail("expected an error" .. (code and (" " .. code) or "") .. ", but the call succeeded", 2) end
  if getmetatable(err) == Failure then error(err, 0) end
  if code then
    if not core.is_error(err) then
      fail(string.format("expected error object with code %s, got %s", code, repr(err)), 2)
    end
    if err.code ~= code then
      fail(string.format("expected code %s, got %s: %s", code, tostring(err.code), tostring(err.message)), 2)
    end
  end
  return err
end

local function handle_set()
  collectgarbage("collect")
  collectgarbage("collect")
  local set = {}
  for _, name in ipairs(core.open_handles()) do set[name] = (set[name] or 0) + 1 end
  return set
end

local function handle_leaks(before)
  local after = handle_set()
  local leaks = {}
  for name, n in pairs(after) do
    local was = before[name] or 0
    if n > was then leaks[#leaks + 1] = string.format("%s x%d", name, n - was) end
  end
  table.sort(leaks)
  return leaks
end

local function handler(e)
  if getmetatable(e) == Failure then
    return { message = e.message, traceback = debug.traceback("", 3) }
  end
  local msg = core.is_error(e) and (tostring(e.message) .. " [" .. tostring(e.code) .. "]") or tostring(e)
  return { message = msg, traceback = debug.traceback("", 2) }
end

-- T.test(name, fn): run one test now and print its TAP line.
function T.test(name, fn)
  current_name = name
  local before = handle_set()
  local ok, err = xpcall(fn, handler)
  local leaks = handle_leaks(before)
  count = count + 1
  if ok and #leaks == 0 then
    io.stdout:write("ok ", count, " - ", name, "\n")
  else
    failed = failed + 1
    io.stdout:write("not ok ", count, " - ", name, "\n")
    if not ok then
      diag(err.message)
      if os.getenv("UPKIT_TEST_TRACE") then diag(err.traceback) end
    end
    if #leaks > 0 then diag("handles left open: " .. table.concat(leaks, ", ")) end
  end
  io.stdout:flush()
  current_name = nil
end

-- T.skip(name, reason): a test that cannot run here, said so in TAP.
function T.skip(name, reason)
  count = count + 1
  io.stdout:write("ok ", count, " - ", name, " # SKIP ", reason, "\n")
end

-- T.done(): print the plan; exit non-zero when a test failed or a handle is open.
function T.done()
  local leaks = handle_leaks({})
  if #leaks > 0 then
    count = count + 1
    failed = failed + 1
    io.stdout:write("not ok ", count, " - no handle left open at the end\n")
    diag("handles left open: " .. table.concat(leaks, ", "))
  end
  io.stdout:write("1..", count, "\n")
  io.stdout:flush()
  os.exit(failed == 0 and 0 or 1, true)
end

-- Helpers for tests that need scratch space and other programs.

-- T.tmpdir() -> a fresh folder (0700, under TMPDIR), removed when the test file exits.
local tmpdirs = {}
function T.tmpdir()
  local dir = require("upkit.fs").tempdir("upkit-test")
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

setmetatable(tmpdirs, { __gc = function(t)
  local fs = require "upkit.fs"
  for _, d in ipairs(t) do pcall(fs.remove, d, { recursive = true }) end
end })

-- T.is_root() -> true when the tests run as root (read from /proc, no shell)
function T.is_root()
  local f = io.open("/proc/self/status", "r")
  if not f then return false end
  local s = f:read("a")
  f:close()
  return s:match("\nUid:%s+0%s") ~= nil
end

-- T.test_root(name, fn): a test that needs root; skipped (TAP # SKIP) otherwise.
function T.test_root(name, fn)
  if T.is_root() then return T.test(name, fn) end
  T.skip(name, "needs root")
end

-- T.sh(cmd) -> stdout, exit status (number)
function T.sh(cmd)
  local p = io.popen(cmd, "r")
  local out = p:read("a")
  local _, _, status = p:close()
  return out, status
end

-- T.upkit_bin(): the binary under test (UPKIT_BIN, set by make test).
function T.upkit_bin()
  return os.getenv("UPKIT_BIN") or "build/upkit"
end

-- T.run_upkit(dir, args [, { env = "VAR=value ...", stdin = path }]) -> stdout, stderr, exit code:
-- the binary under test run in dir with args (shell words, already quoted),
-- standard input from stdin (default /dev/null).
function T.run_upkit(dir, args, o)
  o = o or {}
  local out, err = dir .. "/.out", dir .. "/.err"
  local code = tonumber((T.sh(string.format("cd %s && %s %s %s <%s >%s 2>%s; echo $?", T.q(dir), o.env or "",
    T.q(T.upkit_bin()), args, o.stdin or "/dev/null", T.q(out), T.q(err)))))
  return T.read_file(out) or "", T.read_file(err) or "", code
end

-- T.unprivileged_upkit() -> a shell command (already quoted) that runs a copy
-- of the binary under test, with the Lua library beside it, which an
-- unprivileged user (nobody) can run wherever the checkout lives (a private
-- home folder included): runuser -u nobody -- <it> run script.lua
local unprivileged
function T.unprivileged_upkit()
  if unprivileged then return unprivileged end
  local lib
  for _, root in ipairs(core.roots()) do
    if io.open(root .. "/lua/upkit/cli.lua") then lib = root .. "/lua" break end
  end
  if not lib then core.error("ENOENT", "T.unprivileged_upkit: no lua/ library root found") end
  local dir = T.tmpdir()
  local _, st = T.sh(string.format("mkdir -p %s/build && cp %s %s/build/upkit && cp -R %s %s/lua && chmod -R a+rX %s",
                                   T.q(dir), T.q(T.upkit_bin()), T.q(dir), T.q(lib), T.q(dir), T.q(dir)))
  if st ~= 0 then core.error("EXIT_CODE", "T.unprivileged_upkit: copying upkit for an unprivileged user failed") end
  -- a sanitizer build reads its suppressions file: give it a copy nobody can read
  local env = {}
  for _, var in ipairs { "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS" } do
    local v = os.getenv(var)
    if v then
      v = v:gsub("%f[%w_]suppressions=([^:]+)", function(path)
        local copy = dir .. "/" .. var:lower() .. ".supp"
        T.sh(string.format("cp %s %s && chmod a+r %s", T.q(path), T.q(copy), T.q(copy)))
        return "suppressions=" .. copy
      end)
      env[#env + 1] = var .. "=" .. T.q(v)
    end
  end
  unprivileged = (#env > 0 and ("env " .. table.concat(env, " ") .. " ") or "") .. T.q(dir .. "/build/upkit")
  return unprivileged
end

-- T.q(s): quote for /bin/sh
function T.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- T.write_file(path, data), T.read_file(path)
function T.write_file(path, data)
  local f = require("upkit.util").open("T.write_file", path, "wb")
  f:write(data)
  f:close()
end

function T.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local d = f:read("a")
  f:close()
  return d
end

return T
