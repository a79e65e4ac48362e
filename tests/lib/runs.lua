-- runs: run procedures with the binary under test in a scratch folder and
-- read the journals of their run folders.
--
--   local R = require "runs"
--   local upkit, reset, trace, run_dir_of = R.folder(dir [, { "maint" }])
--   local recs = R.records(run_dir_of(out))   -- decoded journal.jsonl records
--   R.find(recs, "step-done", "two")          -- records of an event (and step)
--   R.events(recs) -> "run-started step-started:one ..."
--   local pid = R.start(dir, "run p.lua", "two-start")  -- in the background, until traced
--   T.write_file(dir .. "/p.lua", R.MARK .. [[ return { ... } ]])
local T = require "upkit.test"
local json = require "upkit.json"

local R = {}

-- Procedure source: mark(ctx, name) appends name to the file ctx.params.trace.
R.MARK = [[
local function mark(ctx, name)
  local f = assert(io.open(ctx.params.trace, "a")) f:write(name, "\n") f:close()
end
]]

-- Helpers bound to dir:
--   upkit(args, env) -> stdout, stderr, exit code of `upkit ARGS` run in dir
--   reset()          removes dir/upkit-runs, dir/trace and dir/<each of extra>
--   trace()          the text of dir/trace ("" when there is none)
--   run_dir_of(out)  the run folder named by "run folder: NAME" in out
function R.folder(dir, extra)
  local function upkit(args, env) return T.run_upkit(dir, args, { env = env }) end
  local function reset()
    local names = { "upkit-runs", "trace", table.unpack(extra or {}) }
    for i, n in ipairs(names) do names[i] = T.q(dir .. "/" .. n) end
    os.execute("rm -rf " .. table.concat(names, " "))
  end
  local function trace() return T.read_file(dir .. "/trace") or "" end
  local function run_dir_of(out) return dir .. "/" .. T.ok(out:match("run folder: (%S+)"), "a run folder") end
  return upkit, reset, trace, run_dir_of
end

-- R.start(dir, args, mark) -> pid: `upkit ARGS` started in dir in the
-- background; returns once dir/trace holds mark (or after 10 s).
function R.start(dir, args, mark)
  local pid = T.sh(string.format("cd %s && (%s %s >/dev/null 2>&1 & echo $!)", T.q(dir), T.q(T.upkit_bin()), args))
  for _ = 1, 200 do
    if (T.read_file(dir .. "/trace") or ""):find(mark, 1, true) then break end
    os.execute("sleep 0.05")
  end
  return pid:match("%d+")
end

-- The text of a run folder's journal.
function R.journal_text(run) return T.read_file(run .. "/journal.jsonl") end

-- Journal text -> its records, one a line.
function R.parse(text)
  local recs = {}
  for line in text:gmatch("[^\n]+") do recs[#recs + 1] = json.decode(line) end
  return recs
end

-- The records of a run folder's journal.
function R.records(run) return R.parse(R.journal_text(run)) end

-- The records of `event`; `where` is a step name or a table of field = value.
function R.find(recs, event, where)
  if type(where) ~= "table" then where = { step = where } end
  local out = {}
  for _, r in ipairs(recs) do
    local fits = r.event == event
    for k, v in pairs(where) do fits = fits and r[k] == v end
    if fits then out[#out + 1] = r end
  end
  return out
end

-- "event event:step ..." of the records, in order.
function R.events(recs)
  local out = {}
  for _, r in ipairs(recs) do out[#out + 1] = r.event .. (r.step and (":" .. r.step) or "") end
  return table.concat(out, " ")
end

return R
