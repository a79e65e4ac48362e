-- upkit.proc's waiting: how soon proc.spawn's reader sees a line the child wrote (the child
-- prints upkit.now(), a clock every process shares: the monotonic clock on Linux,
-- QueryPerformanceCounter on Windows), and the CPU time upkit itself spends while it waits 5 s
-- for a child that sleeps (read from /proc/self/stat: on Linux and under Wine, where the
-- process is a Linux one). Runs under Wine too:
--   WINEPATH=<folder of upkit.exe> wine upkit.exe run tests/bench/b_proc_wait.lua
-- BENCH_WAIT (seconds, default 5) and BENCH_LINES (default 100) change the sizes.
package.path = "tests/bench/?.lua;" .. package.path
local B = require "benchlib"
local upkit = require "upkit"
local proc = require "upkit.proc"
local fs = require "upkit.fs"

local windows = package.config:sub(1, 1) == "\\"
local self = windows and proc.which("upkit") or os.getenv("UPKIT_BIN") or "build/upkit"
local dir = windows and (os.getenv("TEMP") or "."):gsub("\\", "/") or B.workdir()
local nlines = tonumber(os.getenv("BENCH_LINES") or "100")
local wait_s = tonumber(os.getenv("BENCH_WAIT") or "5")

-- user + system CPU seconds of process pid (default this one), or nil where /proc is not
-- readable; BENCH_WINESERVER names Wine's server (its share of the waiting counts too)
local function cpu(pid)
  pid = pid or "self"
  local f = io.open("/proc/" .. pid .. "/stat") or io.open("Z:/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local fields = {}
  for x in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100  -- utime, stime in clock ticks (USER_HZ 100)
end

local child = dir .. "/upkit-bench-child-" .. upkit.pid() .. ".lua"
fs.write(child, string.format([[
local upkit = require "upkit"
for _ = 1, %d do
  upkit.sleep(0.02)
  io.stdout:write(string.format("%%.9f\n", upkit.now()))
  io.stdout:flush()
end]], nlines))

-- 1. latency from the child's write to the reader
local lat = {}
do
  local p <close> = proc.spawn({ self, "run", child })
  for line in p:lines(30) do lat[#lat + 1] = (upkit.now() - tonumber(line)) * 1000 end
  p:wait(30)
end
table.sort(lat)
local function pct(q) return lat[math.max(1, math.ceil(#lat * q))] end
print(string.format("proc.spawn line latency (%s, %d lines): median %.3f ms, p90 %.3f ms, max %.3f ms",
  windows and "Windows" or "Linux", #lat, pct(0.5), pct(0.9), lat[#lat]))

-- 2. CPU time while waiting on a child that sleeps (with stdout and stderr as pipes)
fs.write(child, string.format("require('upkit').sleep(%g)", wait_s))
local srv = os.getenv("BENCH_WINESERVER")
local s0, c0, t0 = srv and cpu(srv), cpu(), upkit.now()
local r = proc.run({ self, "run", child }, { timeout = wait_s + 30 })
local c1, t1, s1 = cpu(), upkit.now(), srv and cpu(srv)
assert(r.code == 0, "the sleeping child failed")
if c0 then
  print(string.format("proc.run waiting %.2f s on a sleeping child: upkit CPU %.0f ms (%.2f%% of one core)",
    t1 - t0, (c1 - c0) * 1000, (c1 - c0) / (t1 - t0) * 100))
  if s0 and s1 then print(string.format("  and Wine's server meanwhile: CPU %.0f ms", (s1 - s0) * 1000)) end
else
  print("proc.run waiting: /proc/self/stat is not readable here; no CPU figure")
end
os.remove(child)

-- the same latency as a rate beside io.popen's blocking reader (Linux: through sh)
if not windows then
  local plat = {}
  fs.write(dir .. "/upkit-bench-child2.lua", string.format([[
local upkit = require "upkit"
for _ = 1, %d do
  upkit.sleep(0.02)
  io.stdout:write(string.format("%%.9f\n", upkit.now()))
  io.stdout:flush()
end]], nlines))
  local pp = io.popen(string.format("%s run %s", B.q(self), B.q(dir .. "/upkit-bench-child2.lua")), "r")
  for line in pp:lines() do plat[#plat + 1] = (upkit.now() - tonumber(line)) * 1000 end
  pp:close()
  os.remove(dir .. "/upkit-bench-child2.lua")
  table.sort(plat)
  B.report { name = "proc.spawn line latency (median)", unit = "1/ms", upkit = 1 / pct(0.5),
             tool = "io.popen blocking read", other = 1 / plat[math.max(1, math.ceil(#plat * 0.5))] }
end
