-- upkit.proc on Windows (make test-windows, upkit.exe under Wine): exit codes,
-- output, stdin, timeouts that end the whole tree (job object), batch files
-- with their arguments passed as text, and a refused unsafe batch argument.
local T = require "upkit.test"
local proc = require "upkit.proc"
local fs = require "upkit.fs"

local dir = T.tmpdir()

T.test("cmd.exe runs; its exit code and output come back", function()
  local r = proc.run({ "cmd.exe", "/c", "echo hello& exit 7" }, { ok = { 7 } })
  T.eq(r.code, 7)
  T.match(r.stdout, "^hello")
end)

T.test("an exit code not in ok raises EXIT_CODE with exit_code", function()
  local e = T.raises("EXIT_CODE", proc.run, { "cmd.exe", "/c", "exit 3" }, { ok = { 0 } })
  T.eq(e.exit_code, 3)
end)

T.test("a program that does not exist raises ENOENT naming it", function()
  local e = T.raises("ENOENT", proc.run, { "no-such-program-upkit" })
  T.contains(e.message, "no-such-program-upkit")
end)

T.test("stdin is given to the program, stdout and stderr are kept apart", function()
  local r = proc.run({ "cmd.exe", "/c", "more & echo err 1>&2" }, { stdin = "axb\r\nyyy\r\n" })
  T.eq(r.stdout:gsub("\r", ""), "axb\nyyy\n")
  T.match(r.stderr, "err")
end)

-- upkit.exe itself: make test-windows puts its folder in PATH (WINEPATH), so
-- "upkit" is also a test of the PATH lookup with Windows extensions
local self = "upkit"

T.test("a timeout ends the program and its children (the job): timed_out, TERM", function()
  local upkit = require "upkit"
  local beat = dir .. "/beat.txt"
  -- the grandchild counts in a file every 50 ms for 30 s
  fs.write(dir .. "/beat.lua", string.format([[
    for i = 1, 600 do
      local f = io.open(%q, "w"); f:write(i); f:close()
      require("upkit").sleep(0.05)
    end]], beat))
  fs.write(dir .. "/tree.cmd", "@echo off\r\n" .. self .. ' run "' .. dir .. '/beat.lua"\r\n')
  local t0 = upkit.now()
  local r = proc.run({ dir .. "/tree.cmd" }, { timeout = 1.5 })
  T.ok(upkit.now() - t0 < 10, "returned within 10 s")
  T.eq(r.timed_out, true)
  T.eq(r.signal_name, "TERM")
  local n1 = fs.read(beat)
  upkit.sleep(0.6)
  T.eq(fs.read(beat), n1, "the grandchild stopped counting")
end)

T.test("a batch file receives arguments with spaces and &|<>^ as text", function()
  local bat = dir .. "/args.cmd"
  fs.write(bat, "@echo off\r\necho [%1] [%2]\r\n")
  local r = proc.run({ bat, "two words", "a&b|c<d>e^f" })
  T.eq(r.stdout:gsub("[\r\n]", ""), '["two words"] ["a&b|c<d>e^f"]')
end)

T.test("a batch argument cmd.exe cannot take safely (%, a quote) is refused with EINVAL", function()
  local bat = dir .. "/args.cmd"
  fs.write(bat, "@echo off\r\necho [%1]\r\n")
  T.raises("EINVAL", proc.run, { bat, "%PATH%" })
  T.raises("EINVAL", proc.run, { bat, 'a"&calc' })
end)

T.test("arguments reach a program unchanged (quotes, backslashes, empty)", function()
  local args = { "plain", "two words", 'quote"in', "trail\\", "", "C:\\dir with space\\" }
  local argv = { self, "run", dir .. "/echo.lua" }
  fs.write(dir .. "/echo.lua", "for i = 1, #arg do io.write('[', arg[i], ']\\n') end")
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = proc.run(argv)
  local want = {}
  for _, a in ipairs(args) do want[#want + 1] = "[" .. a .. "]\n" end
  T.eq(r.stdout:gsub("\r", ""), table.concat(want))
end)

T.test("4 MB through a program's stdin and stdout come back unchanged", function()
  fs.write(dir .. "/cat.lua", 'io.stdout:write(io.stdin:read("a"))')
  local data = {}
  for i = 1, 65536 do data[i] = string.format("%05d line\0\255\r\n", i % 100000):sub(1, 64) end
  data = table.concat(data):rep(4)
  local r = proc.run({ self, "run", dir .. "/cat.lua" }, { stdin = data })
  T.eq(#r.stdout, #data)
  T.ok(r.stdout == data, "the bytes are the same")
end)

T.test("stdin from a file, stdout to null, stdout lines one by one", function()
  fs.write(dir .. "/in.txt", "from a file\r\n")
  T.eq(proc.run({ "cmd.exe", "/c", "more" }, { stdin = { file = dir .. "/in.txt" } }).stdout, "from a file\r\n")
  local r = proc.run({ "cmd.exe", "/c", "echo out & echo err 1>&2" }, { stdout = "null" })
  T.eq(r.stdout, "")
  T.match(r.stderr, "^err")
  local p <close> = proc.spawn({ "cmd.exe", "/c", "echo a& echo b& echo c" })
  local lines = {}
  for l in p:lines() do lines[#lines + 1] = l end
  T.eq(lines, { "a", "b", "c" })
  T.eq(p:wait().code, 0)
end)

T.test("a missing cwd raises ENOENT naming the folder", function()
  local e = T.raises("ENOENT", proc.run, { "cmd.exe", "/c", "dir" }, { cwd = dir .. "/missing" })
  T.contains(e.message, "missing")
end)

T.test("proc.which finds cmd and upkit through PATH with Windows extensions", function()
  T.match(proc.which("cmd"):lower(), "/cmd%.exe$")
  T.match(proc.which(self):lower(), "/upkit%.exe$")
  T.eq(proc.which("no-such-program-upkit"), nil)
end)

T.test("cwd and env reach the program", function()
  local r = proc.run({ "cmd.exe", "/c", "cd & echo %UPKIT_T%" }, { cwd = dir, env = { UPKIT_T = "value 1" } })
  T.contains(r.stdout:lower(), "upkit-test")
  T.contains(r.stdout, "value 1")
end)

T.test("stdin = { pipe = true }: write, lines back, close_stdin ends the program", function()
  fs.write(dir .. "/echo_lines.lua", [[
for line in io.stdin:lines() do io.stdout:write("got ", line, "\n"); io.stdout:flush() end
io.stdout:write("end\n")]])
  local p <close> = proc.spawn({ self, "run", dir .. "/echo_lines.lua" }, { stdin = { pipe = true } })
  T.eq(p:write("one\n"), true)
  T.eq(p:read_line(10), "got one")
  T.eq(p:write("two\n"), true)
  T.eq(p:read_line(10), "got two")
  T.eq(p:read_line(0.2), false, "nothing more until stdin ends")
  p:close_stdin()
  T.eq(p:read_line(10), "end")
  T.eq(p:read_line(10), nil)
  T.eq(p:wait(10).code, 0)
  T.raises("CLOSED", p.write, p, "late")
end)

T.test("process:write of 4 MB to a program echoing it does not deadlock; EPIPE after the end", function()
  fs.write(dir .. "/cat.lua", 'io.stdout:write(io.stdin:read("a"))')
  local n = 0
  local p <close> = proc.spawn({ self, "run", dir .. "/cat.lua" },
                               { stdin = { pipe = true }, on_stdout = function(l) n = n + #l + 1 end })
  local big = string.rep(string.rep("x", 63) .. "\n", 65536)
  T.eq(p:write(big, 60), true)
  p:close_stdin()
  T.eq(p:wait(60).code, 0)
  T.eq(n, #big)
  local q <close> = proc.spawn({ "cmd.exe", "/c", "exit 0" }, { stdin = { pipe = true } })
  T.eq(q:wait(10).code, 0)
  T.raises("EPIPE", function() for _ = 1, 100 do q:write(string.rep("y", 65536)) end end)
end)

T.test("lines() while the program first fills its stderr pipe (1 MiB): no deadlock, stderr kept", function()
  fs.write(dir .. "/err_first.lua", 'io.stderr:write(string.rep("e", 1 << 20)); io.stderr:flush(); print("out")')
  local p <close> = proc.spawn({ self, "run", dir .. "/err_first.lua" })
  T.eq(p:read_line(30), "out")
  local r = p:wait(30)
  T.eq(r.code, 0)
  T.eq(#r.stderr, 1 << 20)
end)

T.test("wait(0) on a program that has ended returns its result; a running one gives nil at once", function()
  local p <close> = proc.spawn({ "cmd.exe", "/c", "echo done& exit 5" }, { on_stdout = function() end })
  local t0 = require("upkit").now()
  local r
  repeat
    r = p:wait(0)
    if not r then require("upkit").sleep(0.05) end
  until r or require("upkit").now() - t0 > 20
  T.eq(r and r.code, 5)
  T.match(r.stdout, "^done")
  local q <close> = proc.spawn({ self, "run", dir .. "/cat.lua" }, { stdin = { pipe = true } })
  local t1 = require("upkit").now()
  T.eq(q:wait(0), nil)
  T.ok(require("upkit").now() - t1 < 1, "returned at once")
  q:close_stdin()
  T.eq(q:wait(20).code, 0)
end)

T.test("a background grandchild holding stdout: proc.run stops after linger; close does not wait for it", function()
  local upkit = require "upkit"
  fs.write(dir .. "/gc_sleep.lua", 'io.stdout:write("late\\n"); require("upkit").sleep(30)')
  local cmdline = "start /b " .. self .. " run " .. dir .. "/gc_sleep.lua & echo parent"
  local r = proc.run({ "cmd.exe", "/c", cmdline }, { linger = 0.5 })
  T.eq(r.code, 0)
  T.eq(r.lingered, true)
  T.match(r.stdout, "^parent")
  local p = proc.spawn({ "cmd.exe", "/c", cmdline })
  T.eq(p:read_line(10), "parent")
  local t0 = upkit.now()
  while p:running() and upkit.now() - t0 < 10 do upkit.sleep(0.05) end
  T.eq(p:running(), false, "cmd.exe ended; its grandchild still holds the pipe")
  p:close()
  T.ok(upkit.now() - t0 < 15, "close cancelled the read instead of waiting for the grandchild (30 s)")
end)

T.done()
