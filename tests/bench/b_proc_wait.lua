-- upkit.proc's waiting: how soon proc.spawn's reader sees a line the child wrote (the child
-- prints upkit.now(), a clock every process shares: the monotonic clock on Linux,
-- QueryPerformanceCounter on Windows), and the CPU time upkit itself spends while it waits
-- BENCH_WAIT seconds (default 5) for a child that sleeps, with stdout and stderr as pipes.
--
-- The Windows build under Wine: BENCH_WINE_EXE=build/windows/upkit.exe (and WINEPREFIX) runs
-- this file in upkit.exe, and this process reads the CPU time of upkit.exe (a Linux process
-- under Wine) and of Wine's server (which does the work of every wait and pipe call) from
-- /proc around the wait. Inside Wine /proc/self is the server, so the Windows side only
-- prints markers.
package.path = "tests/bench/?.lua;" .. package.path
local B = require "benchlib"
local upkit = require "upkit"
local proc = require "upkit.proc"
local fs = require "upkit.fs"

local windows = package.config:sub(1, 1) == "\\"
local inner = os.getenv("BENCH_INNER") == "1"
local nlines = tonumber(os.getenv("BENCH_LINES") or "100")
local wait_s = tonumber(os.getenv("BENCH_WAIT") or "5")

local function say(fmt, ...)
  io.stdout:write(string.format(fmt, ...), "\n")
  io.stdout:flush()
end

-- a script that prints upkit.now() every 20 ms, nlines times
local function write_liner(path)
  fs.write(path, string.format([[
local upkit = require "upkit"
for _ = 1, %d do
  upkit.sleep(0.02)
  io.stdout:write(string.format("%%.9f\n", upkit.now()))
  io.stdout:flush()
end]], nlines))
end

-- user + system CPU seconds of a Linux process, or nil
local function cpu(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local fields = {}
  for x in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100  -- utime, stime in clock ticks (USER_HZ 100)
end

-- The measurements, in this process (Linux, or upkit.exe under Wine with BENCH_INNER).
local function measure()
  local self = windows and proc.which("upkit") or os.getenv("UPKIT_BIN") or "build/upkit"
  local dir = windows and (os.getenv("TEMP") or "."):gsub("\\", "/") or B.workdir()
  local child = dir .. "/upkit-bench-child-" .. upkit.pid() .. ".lua"
  write_liner(child)
  local lat = {}
  do
    local p <close> = proc.spawn({ self, "run", child })
    for line in p:lines(30) do lat[#lat + 1] = (upkit.now() - tonumber(line)) * 1000 end
    p:wait(30)
  end
  table.sort(lat)
  local function pct(q) return lat[math.max(1, math.ceil(#lat * q))] end
  say("proc.spawn line latency (%s, %d lines): median %.3f ms, p90 %.3f ms, max %.3f ms",
    windows and "Windows" or "Linux", #lat, pct(0.5), pct(0.9), lat[#lat])

  fs.write(child, string.format("require('upkit').sleep(%g)", wait_s))
  if inner then say("wait-start") end
  local c0, t0 = not windows and cpu("self"), upkit.now()
  local r = proc.run({ self, "run", child }, { timeout = wait_s + 30 })
  local c1, t1 = not windows and cpu("self"), upkit.now()
  if inner then say("wait-end %.3f", t1 - t0) end
  assert(r.code == 0, "the sleeping child failed")
  if c0 then
    say("proc.run waiting %.2f s on a sleeping child: upkit CPU %.0f ms (%.2f%% of one core)",
      t1 - t0, (c1 - c0) * 1000, (c1 - c0) / (t1 - t0) * 100)
  end
  os.remove(child)
  return pct(0.5), self, dir
end

-- Wine's server for WINEPREFIX: its folder is server-<device>-<inode of the prefix> (hex).
local function wineserver()
  local lfs = require "lfs"
  local a = lfs.attributes(os.getenv("WINEPREFIX") or (os.getenv("HOME") .. "/.wine"))
  if not a then return nil end
  local key = string.format("/server-%x-%x", a.dev, a.ino)
  for pid in lfs.dir("/proc") do
    if pid:match("^%d+$") then
      local f = io.open("/proc/" .. pid .. "/comm")
      local comm = f and f:read("l")
      if f then f:close() end
      local cwd = comm and comm:match("^wineserver") and lfs.symlinkattributes("/proc/" .. pid .. "/cwd", "target")
      if cwd and cwd:sub(-#key) == key then return pid end
    end
  end
end

local function under_wine(exe)
  local wine = os.getenv("WINE") or proc.which("wine64") or "/usr/lib/wine/wine64"
  local folder = exe:match("^(.*)/[^/]*$") or "."
  local winpath = "Z:" .. B.sh("cd " .. B.q(folder) .. " && pwd"):gsub("\n$", ""):gsub("/", "\\")
  local p <close> = proc.spawn({ wine, exe, "run", "tests/bench/b_proc_wait.lua" },
    { env = { BENCH_INNER = "1", WINEPATH = winpath, WINEDEBUG = "-all" } })
  local srv, c0, s0, t0
  for line in p:lines(wait_s + 120) do
    if line == "wait-start" then
      srv = srv or wineserver()
      c0, s0, t0 = cpu(p:pid()), srv and cpu(srv), upkit.now()
    elseif line:match("^wait%-end") then
      local c1, s1, t1 = cpu(p:pid()), srv and cpu(srv), upkit.now()
      say("proc.run waiting %.2f s on a sleeping child (Windows under Wine): upkit.exe CPU %.0f ms, "
        .. "Wine's server %s", t1 - t0, (c1 - c0) * 1000,
        s0 and string.format("%.0f ms", (s1 - s0) * 1000) or "not found")
    else
      say("%s", line)
    end
  end
  p:wait(30)
end

if inner or windows then
  measure()
else
  local med, self, dir = measure()
  -- the same latency beside io.popen's blocking reader
  local child = dir .. "/upkit-bench-child2.lua"
  write_liner(child)
  local plat = {}
  local pp = io.popen(string.format("%s run %s", B.q(self), B.q(child)), "r")
  for line in pp:lines() do plat[#plat + 1] = (upkit.now() - tonumber(line)) * 1000 end
  pp:close()
  os.remove(child)
  table.sort(plat)
  B.report { name = "proc.spawn line latency (median)", unit = "1/ms", upkit = 1 / med,
             tool = "io.popen blocking read", other = 1 / plat[math.max(1, math.ceil(#plat * 0.5))] }
  local exe = os.getenv("BENCH_WINE_EXE")
  if exe then under_wine(exe) end
end
