-- upkit.proc: run and spawn programs without a shell; timeouts, capture, errors.
local T = require "upkit.test"
local proc = require "upkit.proc"
local upkit = require "upkit"

local dir = T.tmpdir()

local function alive(pid)
  local _, st = T.sh("kill -0 " .. pid .. " 2>/dev/null")
  if st ~= 0 then return false end
  local stat = T.read_file("/proc/" .. pid .. "/stat") or ""
  return not stat:match("^%d+ %b() Z")
end

T.test("proc.run returns code, stdout, stderr and seconds", function()
  local r = proc.run({ "sh", "-c", "echo out; echo err >&2; exit 3" })
  T.eq(r.code, 3)
  T.eq(r.stdout, "out\n")
  T.eq(r.stderr, "err\n")
  T.eq(r.timed_out, false)
  T.eq(r.signal, nil)
  T.ok(r.seconds >= 0 and r.seconds < 5)
end)

T.test("proc.run passes arguments verbatim, without a shell", function()
  local r = proc.run({ "printf", "%s|", "a b", "$HOME", "'q'", "*" })
  T.eq(r.stdout, "a b|$HOME|'q'|*|")
end)

T.test("a program that cannot start raises ENOENT or EACCES naming it and the folder", function()
  local err = T.raises("ENOENT", proc.run, { "upkit-no-such-program" })
  T.contains(err.message, "upkit-no-such-program")
  T.contains(err.message, (T.sh("pwd"):gsub("\n", "")))
  local f = dir .. "/noexec"
  T.write_file(f, "#!/bin/sh\n")
  T.raises("EACCES", proc.run, { f }, { cwd = dir })
  local e2 = T.raises("ENOENT", proc.run, { "true" }, { cwd = dir .. "/missing" })
  T.contains(e2.message, dir .. "/missing")
end)

T.test("cwd, env added, replaced and removed", function()
  T.eq(proc.run({ "pwd" }, { cwd = dir }).stdout, dir .. "\n")
  T.eq(proc.run({ "sh", "-c", "echo $UPK_A-$HOME" }, { env = { UPK_A = "x" } }).stdout,
       "x-" .. os.getenv("HOME") .. "\n")
  T.eq(proc.run({ "/usr/bin/env" }, { env = { ONLY = "1" }, env_mode = "replace" }).stdout, "ONLY=1\n")
  T.eq(proc.run({ "sh", "-c", "echo ${HOME:-unset}" }, { env = { HOME = false } }).stdout, "unset\n")
  T.raises("EINVAL", proc.run, { "true" }, { env_mode = "instead" })
  T.raises("EINVAL", proc.run, { "true" }, { env = { ["A=B"] = "x" } })
end)

T.test("stdin from a string and from a file; none by default", function()
  T.eq(proc.run({ "cat" }, { stdin = "hello\nworld" }).stdout, "hello\nworld")
  local big = string.rep("0123456789", 300000)
  T.eq(#proc.run({ "cat" }, { stdin = big }).stdout, #big)
  local f = dir .. "/in.txt"
  T.write_file(f, "from file")
  T.eq(proc.run({ "cat" }, { stdin = { file = f } }).stdout, "from file")
  T.eq(proc.run({ "cat" }).stdout, "")
  T.raises("ENOENT", proc.run, { "cat" }, { stdin = { file = dir .. "/missing" } })
end)

T.test("ok = { 0, 3010 } accepts those codes and raises EXIT_CODE with the stderr tail", function()
  T.eq(proc.run({ "sh", "-c", "exit 3010 % 256" }, { ok = { 0, 3010 % 256 } }).code, 3010 % 256)
  local err = T.raises("EXIT_CODE", proc.run, { "sh", "-c", "echo first >&2; echo last words >&2; exit 7" },
                       { ok = { 0 } })
  T.eq(err.exit_code, 7)
  T.contains(err.message, "exited with code 7")
  T.contains(err.message, "last words")
  T.eq(err.result.code, 7)
end)

T.test("redact hides secrets in error messages and in callback lines", function()
  local err = T.raises("EXIT_CODE", proc.run, { "sh", "-c", "echo key=S3cr3t >&2; exit 1", "S3cr3t" },
                       { ok = { 0 }, redact = { "S3cr3t" } })
  T.eq(err.message:find("S3cr3t", 1, true), nil)
  T.contains(err.message, "***")
  local seen = {}
  proc.run({ "echo", "token S3cr3t" }, { redact = { "S3cr3t" }, on_stdout = function(l) seen[#seen + 1] = l end })
  T.eq(seen, { "token ***" })
  local e2 = T.raises("ENOENT", proc.run, { "/nonexistent/S3cr3t" }, { redact = { "S3cr3t" } })
  T.eq(e2.message:find("S3cr3t", 1, true), nil)
end)

T.test("timeout kills a process that ignores SIGTERM, and its children", function()
  local pidfile = dir .. "/child.pid"
  local r = proc.run({ "sh", "-c", "trap '' TERM; sleep 60 & echo $! > " .. pidfile .. "; wait; sleep 60" },
                     { timeout = 0.5, grace = 0.5 })
  T.eq(r.timed_out, true)
  T.eq(r.signal, 9)
  T.ok(r.seconds < 5, "took " .. r.seconds)
  local child = T.read_file(pidfile):match("%d+")
  T.sh("sleep 0.1")
  T.eq(alive(child), false, "the child is gone")
  T.raises("TIMEOUT", proc.run, { "sleep", "10" }, { timeout = 0.2, grace = 0.2, ok = { 0 } })
end)

T.test("a program writing 100 MB to stdout neither hangs nor exhausts memory", function()
  local r = proc.run({ "head", "-c", "100000000", "/dev/zero" }, { capture_limit = 1 << 20, timeout = 60 })
  T.eq(r.code, 0)
  T.eq(#r.stdout, 1 << 20)
  T.eq(r.stdout_truncated, true)
  local r2 = proc.run({ "sh", "-c", "head -c 100000000 /dev/zero; printf END" }, { capture_limit = 16, timeout = 60 })
  T.eq(r2.stdout:sub(-3), "END", "the tail is kept")
  local status = T.read_file("/proc/self/status")
  local hwm = tonumber(status:match("VmHWM:%s*(%d+)"))
  T.ok(hwm < 200 * 1024, "peak memory " .. hwm .. " kB")
end)

T.test("on_stdout and on_stderr receive lines as they arrive", function()
  local out, err = {}, {}
  local r = proc.run({ "sh", "-c", "echo a; echo b >&2; printf 'c\\nno newline'" },
    { on_stdout = function(l) out[#out + 1] = l end, on_stderr = function(l) err[#err + 1] = l end })
  T.eq(out, { "a", "c", "no newline" })
  T.eq(err, { "b" })
  T.eq(r.stdout, "a\nc\nno newline")
end)

T.test("an error in a line callback ends the program and is raised after it is reaped", function()
  local pidfile = dir .. "/cb.pid"
  local err = T.raises(nil, proc.run, { "sh", "-c", "echo $$ > " .. pidfile .. "; echo boom; sleep 30" },
    { on_stdout = function(l) if l == "boom" then error("callback failed") end end })
  T.contains(tostring(err), "callback failed")
  T.eq(alive(T.read_file(pidfile):match("%d+")), false)
end)

T.test("bad arguments raise EINVAL", function()
  T.raises("EINVAL", proc.run, {})
  T.raises("EINVAL", proc.run, "ls")
  T.raises("EINVAL", proc.run, { "true" }, { bogus = 1 })
  T.raises("EINVAL", proc.run, { "true" }, { timeout = "10" })
  T.raises("EINVAL", proc.run, { "true", {} })
  T.raises("EINVAL", proc.spawn, { "true" }, { stdout = "file" })
  T.raises("EINVAL", proc.run, { "true" }, { linger = -1 })
  T.raises("EINVAL", proc.run, { "true" }, { linger = "5" })
  local p <close> = proc.spawn { "true" }
  local e = T.raises("EINVAL", p.wait, p, "soon")
  T.contains(e.message, "process:wait")
end)

T.test("proc.spawn: wait with a timeout returns nil, kill ends it, close is idempotent", function()
  local p = proc.spawn({ "sleep", "30" })
  T.ok(p:pid() > 0)
  T.eq(p:running(), true)
  T.eq(p:wait(0.1), nil)
  T.eq(p:kill("TERM"), true)
  local r = p:wait(5)
  T.eq(r.signal, 15)
  T.eq(p:running(), false)
  T.eq(p:kill(), false)
  p:close()
  p:close()
  T.raises("CLOSED", p.wait, p)
end)

T.test("proc.spawn: lines() iterates stdout lines of a program running beside the script", function()
  local p <close> = proc.spawn({ "sh", "-c", "echo ready; sleep 0.2; echo one; echo two" })
  local got = {}
  for line in p:lines(10) do got[#got + 1] = line end
  T.eq(got, { "ready", "one", "two" })
  T.eq(p:wait(5).code, 0)
  local q <close> = proc.spawn({ "sleep", "5" })
  T.raises("TIMEOUT", function() for _ in q:lines(0.1) do end end)
end)

T.test("wait(0) on a program that has ended returns its result with all its output", function()
  -- less than a pipe holds, so the program ends while nothing reads its pipes
  local p <close> = proc.spawn({ "sh", "-c", "echo out; echo err >&2; head -c 60000 /dev/zero; exit 4" },
                               { on_stdout = function() end })
  local pid = p:pid()
  for _ = 1, 250 do
    local stat = T.read_file("/proc/" .. pid .. "/stat") or ""
    if stat:match("^%d+ %b() Z") then break end
    upkit.sleep(0.02)
  end
  local r = p:wait(0)
  T.eq(r and r.code, 4)
  T.eq(#r.stdout, 4 + 60000)
  T.eq(r.stderr, "err\n")
  local q <close> = proc.spawn({ "sleep", "5" })
  T.eq(q:wait(0), nil, "a running program: nil at once")
end)

T.test("lines() while the program first fills its stderr pipe (1 MiB): no deadlock, stderr kept", function()
  local p <close> = proc.spawn({ "sh", "-c", "head -c 1048576 /dev/zero >&2; echo out" })
  T.eq(p:read_line(30), "out")
  local r = p:wait(30)
  T.eq(r.code, 0)
  T.eq(#r.stderr, 1 << 20)
end)

T.test("stdin = { pipe = true }: write and close_stdin while the program runs", function()
  local p <close> = proc.spawn({ "cat" }, { stdin = { pipe = true } })
  T.eq(p:write("one\n"), true)
  T.eq(p:read_line(5), "one")
  T.eq(p:write("two\nthree\n"), true)
  T.eq(p:read_line(5), "two")
  T.eq(p:read_line(5), "three")
  T.eq(p:read_line(0.1), false, "nothing more until stdin ends")
  p:close_stdin()
  p:close_stdin()
  T.eq(p:read_line(5), nil)
  T.eq(p:wait(5).code, 0)
  T.raises("CLOSED", p.write, p, "late")
end)

T.test("process:write of 8 MB to a program echoing it does not deadlock", function()
  local n = 0
  local p <close> = proc.spawn({ "cat" }, { stdin = { pipe = true }, on_stdout = function(l) n = n + #l + 1 end })
  local big = string.rep(string.rep("x", 63) .. "\n", 131072)
  T.eq(p:write(big, 60), true)
  p:close_stdin()
  T.eq(p:wait(30).code, 0)
  T.eq(n, #big)
end)

T.test("process:write: a timeout gives false and the bytes taken; EPIPE once the program has gone", function()
  local p <close> = proc.spawn({ "sleep", "30" }, { stdin = { pipe = true }, stdout = "null" })
  local ok, n = p:write(string.rep("z", 4 << 20), 0.3)
  T.eq(ok, false)
  T.ok(n > 0 and n < 4 << 20, "took " .. tostring(n))
  p:kill("KILL")
  T.eq(p:wait(5).signal, 9)
  T.raises("EPIPE", p.write, p, "after the end")
  local q <close> = proc.spawn({ "true" }, { stdin = { pipe = true } })
  T.eq(q:wait(5).code, 0)
  T.raises("EPIPE", function() for _ = 1, 100 do q:write(string.rep("y", 65536)) end end)
  local s <close> = proc.spawn({ "cat" }, { stdin = "text" })
  T.raises("EINVAL", s.write, s, "x")
  T.raises("EINVAL", proc.run, { "cat" }, { stdin = { pipe = true } })
  T.raises("EINVAL", proc.spawn, { "cat" }, { stdin = { pipe = true, file = "/dev/null" } })
  T.raises("EINVAL", proc.spawn, { "cat" }, { stdin = {} })
end)

T.test("closing a running process handle kills its group and reaps it", function()
  local p = proc.spawn({ "sh", "-c", "sleep 30 & sleep 30" }, { stdout = "null" })
  local pid = p:pid()
  p:close()
  T.eq(alive(pid), false)
  do
    local q <close> = proc.spawn({ "sleep", "30" })
    pid = q:pid()
  end
  T.eq(alive(pid), false)
end)

T.test("Ctrl-C while waiting ends the program group and raises INTERRUPTED", function()
  local script = dir .. "/int.lua"
  local pidfile = dir .. "/int.pid"
  T.write_file(script, string.format([[
local proc = require "upkit.proc"
local ok, err = pcall(proc.run, { "sh", "-c", "echo $$ > %s; sleep 30" })
print(err.code)
]], pidfile))
  local out = dir .. "/int.out"
  local upid = T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(script) .. " > " .. T.q(out) .. " 2>&1 & echo $!"):match("%d+")
  for _ = 1, 100 do
    if (T.read_file(pidfile) or ""):match("%d+") then break end
    upkit.sleep(0.05)
  end
  local child = T.read_file(pidfile):match("%d+")
  T.sh("kill -INT " .. upid)
  for _ = 1, 100 do
    if not alive(upid) then break end
    upkit.sleep(0.05)
  end
  T.eq(alive(upid), false, "upkit ended")
  T.eq(alive(child), false, "the child is gone")
  T.eq(T.read_file(out), "INTERRUPTED\n")
end)

T.test("proc.run of /bin/true many times leaves no handle or descriptor behind", function()
  local lfs = require "lfs"
  local function nfd() local c = 0 for _ in lfs.dir("/proc/self/fd") do c = c + 1 end return c end
  local before = nfd()
  for _ = 1, 200 do T.eq(proc.run({ "/bin/true" }).code, 0) end
  T.eq(nfd(), before)
end)

T.test("a background grandchild keeps its output and is not killed by SIGPIPE when the child exits", function()
  local r = proc.run({ "sh", "-c", "(sleep 0.5; echo late; echo late-err >&2; echo alive > \"$1\") & echo early",
                       "sh", dir .. "/grandchild-alive" })
  T.eq(r.code, 0)
  T.eq(r.stdout, "early\nlate\n")
  T.eq(r.stderr, "late-err\n")
  T.eq(r.lingered, false)
  T.eq(T.read_file(dir .. "/grandchild-alive"), "alive\n")
end)

T.test("a grandchild that keeps writing holds proc.run only for linger seconds, and says so", function()
  local log = require "upkit.log"
  local warned = {}
  local sink = log.add_sink(function(rec) warned[#warned + 1] = rec.msg end)
  local forever = "(i=0; while [ $i -lt 1500 ]; do echo x; i=$((i+1)); sleep 0.01; done) & echo started"
  local t0 = upkit.now()
  local r = proc.run({ "sh", "-c", forever }, { linger = 0.5 })
  log.remove_sink(sink)
  T.ok(upkit.now() - t0 < 3, "returned after the linger time")
  T.eq(r.code, 0)
  T.eq(r.lingered, true)
  T.contains(r.stdout, "started\n")
  T.contains(r.stdout, "x\nx\n")
  T.eq(#warned, 1)
  T.contains(warned[1], "still held its output")
  -- without linger, the timeout bounds it too, and it is not a timeout of the program
  t0 = upkit.now()
  r = proc.run({ "sh", "-c", forever }, { timeout = 1, ok = { 0 } })
  T.ok(upkit.now() - t0 < 4, "returned by the timeout")
  T.eq(r.timed_out, false)
  T.eq(r.lingered, true)
end)

T.done()
