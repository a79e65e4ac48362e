-- The procedure engine on Windows (make test-windows): a procedure run by
-- upkit.exe through proc.run, its journal and run folder, a failed step with
-- exit code 1, --resume from that step, and plan.
local T = require "upkit.test"
local proc = require "upkit.proc"
local fs = require "upkit.fs"
local json = require "upkit.json"

local dir = T.tmpdir()
local trace = dir .. "/trace.txt"

fs.write(dir .. "/steps.lua", [[
local function mark(ctx, name)
  local f = assert(io.open(ctx.params.trace, "ab")) f:write(name, "\n") f:close()
end
return {
  name = "steps", summary = "three steps that leave a trace",
  params = {
    { name = "trace", type = "path", required = true },
    { name = "fail_at", type = "string", default = "" },
  },
  steps = {
    { name = "one", run = function(ctx) mark(ctx, "one") return { a = 41 } end },
    { name = "two", run = function(ctx)
        if ctx.params.fail_at == "two" then error({ code = "BOOM", message = "two exploded" }) end
        mark(ctx, "two") return { b = ctx.state.a + 1 } end },
    { name = "three", run = function(ctx) assert(ctx.state.b == 42) mark(ctx, "three") end },
  },
}
]])

local function upkit(args)
  local argv = { "upkit" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, { cwd = dir, ok = { 0, 1, 2, 3 } })
end

local function journal_of(out)
  local run = out:match("run folder: (%S+)")
  T.ok(run, "the output names the run folder")
  local recs = {}
  for line in fs.read(dir .. "/" .. run .. "/journal.jsonl"):gmatch("[^\n]+") do recs[#recs + 1] = json.decode(line) end
  return recs
end

T.test("a procedure runs every step in order and exits 0", function()
  local r = upkit { "run", "steps.lua", "--set", "trace=" .. trace }
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.eq(fs.read(trace), "one\ntwo\nthree\n")
  local recs = journal_of(r.stdout .. r.stderr)
  T.eq(recs[#recs].event, "run-finished")
end)

T.test("a failed step exits 1; --resume starts again at that step with the stored state", function()
  fs.remove(trace)
  local r = upkit { "run", "steps.lua", "--set", "trace=" .. trace, "--set", "fail_at=two" }
  T.eq(r.code, 1)
  T.contains(r.stdout .. r.stderr, "two exploded")
  T.eq(fs.read(trace), "one\n")
  r = upkit { "run", "steps.lua", "--resume", "--set", "fail_at=", "--allow-change", "fail_at" }
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.eq(fs.read(trace), "one\ntwo\nthree\n")
end)

T.test("bad parameters exit 2 and nothing runs", function()
  fs.remove(trace)
  local r = upkit { "run", "steps.lua" }
  T.eq(r.code, 2)
  T.contains(r.stdout .. r.stderr, "trace")
  T.eq(fs.exists(trace), false)
end)

T.test("plan lists the steps and changes nothing", function()
  local r = upkit { "plan", "steps.lua", "--set", "trace=" .. trace }
  T.eq(r.code, 0, r.stdout .. r.stderr)
  T.contains(r.stdout, "one")
  T.contains(r.stdout, "three")
  T.eq(fs.exists(trace), false)
end)

T.done()
