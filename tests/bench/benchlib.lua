-- benchlib: shared helpers for tests/bench/b_*.lua.
--   B.time(fn [, reps]) -> best wall seconds of reps runs of fn
--   B.sh_time(cmd [, reps]) -> best wall seconds of reps runs of a shell command
--   B.sh(cmd) -> stdout (raises when the command fails)
--   B.report{ name=, unit=, upkit=, tool=, other=, aim= }
--     upkit/other are rates (higher is better) in 'unit'; ratio = upkit / other;
--     aim is the ratio the issue asks for (optional).
--   B.workdir() -> a scratch folder for this run (BENCH_DIR or build/bench)
local upkit = require "upkit"

local B = {}
local rows = {}
B.rows = rows

function B.time(fn, reps)
  local best = math.huge
  for _ = 1, reps or 3 do
    local t0 = upkit.now()
    fn()
    best = math.min(best, upkit.now() - t0)
  end
  return best
end

function B.sh(cmd)
  local p = io.popen(cmd, "r")
  local out = p:read("a")
  local ok, _, status = p:close()
  if not ok then error(string.format("bench: command failed (%s): %s", tostring(status), cmd)) end
  return out
end

function B.sh_time(cmd, reps)
  return B.time(function() B.sh(cmd) end, reps)
end

function B.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function B.workdir()
  local d = os.getenv("BENCH_DIR") or "build/bench"
  os.execute("mkdir -p " .. B.q(d))
  return d
end

function B.bin() return os.getenv("UPKIT_BIN") or "build/upkit" end

function B.report(r)
  r.ratio = r.upkit / r.other
  rows[#rows + 1] = r
  io.stdout:write(string.format("%-44s %10.1f %-6s | %-28s %10.1f | ratio %5.2fx%s\n",
    r.name, r.upkit, r.unit, r.tool, r.other, r.ratio,
    r.aim and string.format("  (aim %.2fx: %s)", r.aim, r.ratio >= r.aim and "met" or "NOT MET") or ""))
  io.stdout:flush()
end

return B
