-- The procedure engine: parameters, journal, resume, checks, plan, confirmations.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local R = require "runs"

local dir = T.tmpdir()

-- upkit(args, env) runs upkit in dir; returns stdout, stderr, exit code.
local upkit, reset, trace, run_dir_of = R.folder(dir)
local journal, events = R.records, R.events

-- A procedure that appends each step's name to a trace file, so reruns show.
T.write_file(dir .. "/counter.lua", R.MARK .. [[
return {
  name = "counter", summary = "counts its steps",
  params = {
    { name = "trace", type = "path", required = true, describe = "trace file" },
    { name = "fail_at", type = "string", default = "" },
    { name = "sleep_at", type = "string", default = "" },
    { name = "token", type = "secret" },
    { name = "n", type = "number", default = 2 },
    { name = "mode", type = "choice", choices = { "a", "b" }, default = "a" },
    { name = "flag", type = "boolean", default = false },
  },
  steps = {
    { name = "one", describe = "first step", run = function(ctx)
        mark(ctx, "one") ctx.log("token is %s", ctx.params.token or "unset") return { a = 41 } end },
    { name = "two", describe = function(ctx) return "second, n=" .. ctx.params.n end, run = function(ctx)
        if ctx.params.sleep_at == "two" then mark(ctx, "two-start") os.execute("sleep 30") end
        if ctx.params.fail_at == "two" then error({ code = "BOOM", message = "two exploded" }) end
        mark(ctx, "two") return { b = ctx.state.a + 1 } end },
    { name = "three", run = function(ctx)
        assert(ctx.state.b == 42, "state from earlier steps") mark(ctx, "three") end },
  },
}
]])


T.test("a procedure runs every step in order and exits 0", function()
  reset()
  local out, _, code = upkit("run counter.lua --set trace=trace")
  T.eq(code, 0)
  T.eq(trace(), "one\ntwo\nthree\n")
  T.contains(out, "[2/3] two: second, n=2")
  T.contains(out, "Result: success")
  local recs = journal(run_dir_of(out))
  T.eq(events(recs), "run-start step-started:one step-done:one step-started:two step-done:two " ..
                     "step-started:three step-done:three run-finished")
  T.eq(recs[3].state, { a = 41 })
  T.eq(recs[1].params.trace, "trace")
end)

T.test("bad parameters are all reported at once, exit 2, nothing runs", function()
  reset()
  local _, err, code = upkit("run counter.lua --set n=many --set mode=c --set nope=1 --set flag=maybe")
  T.eq(code, 2)
  T.contains(err, "missing parameter 'trace'")
  T.contains(err, "parameter 'n' must be a number, got 'many'")
  T.contains(err, "parameter 'mode' must be one of a, b")
  T.contains(err, "--set nope: no such parameter")
  T.contains(err, "parameter 'flag' must be true or false")
  T.eq(trace(), "")
  T.eq(io.open(dir .. "/upkit-runs"), nil, "no run folder")
end)

T.test("parameters come from a config file and the environment, --set wins", function()
  reset()
  T.write_file(dir .. "/site.lua", 'return { trace = "trace", n = 5, mode = "b" }')
  local out, _, code = upkit("plan counter.lua --config site.lua --set n=7", "UPKIT_MODE=a")
  T.eq(code, 0)
  T.contains(out, "n                      = 7  [--set]")
  T.contains(out, "mode                   = a  [environment UPKIT_MODE]")
  T.contains(out, "trace                  = trace  [config]")
  T.write_file(dir .. "/site.json", '{"trace": "trace", "flag": true}')
  out, _, code = upkit("plan counter.lua --config site.json")
  T.eq(code, 0)
  T.contains(out, "flag                   = true  [config]")
end)

T.test("a broken config file is a usage error naming the file", function()
  T.write_file(dir .. "/broken.lua", "return {")
  local _, err, code = upkit("run counter.lua --config broken.lua")
  T.eq(code, 2)
  T.contains(err, "broken.lua")
  _, err, code = upkit("run counter.lua --config missing.lua")
  T.eq(code, 2)
  T.contains(err, "missing.lua")
end)

T.test("secrets come from the environment or a file and never reach output, journal or log", function()
  reset()
  local out, _, code = upkit("run counter.lua --set trace=trace", "UPKIT_TOKEN=hunter2-secret")
  T.eq(code, 0)
  T.contains(out, "token is ***")
  T.eq(out:find("hunter2", 1, true), nil)
  local run = run_dir_of(out)
  T.eq(T.read_file(run .. "/journal.jsonl"):find("hunter2", 1, true), nil)
  T.eq(T.read_file(run .. "/log.txt"):find("hunter2", 1, true), nil)
  T.contains(T.read_file(run .. "/log.txt"), "token is ***")
  T.write_file(dir .. "/token.txt", "from-a-file-42\n")
  out, _, code = upkit("run counter.lua --set trace=trace --set token_file=token.txt")
  T.eq(code, 0)
  T.contains(out, "token is ***")
  T.eq(out:find("from-a-file", 1, true), nil)
end)

T.test("a secret given on the command line is refused", function()
  local _, err, code = upkit("run counter.lua --set trace=trace --set token=visible")
  T.eq(code, 2)
  T.contains(err, "secret 'token' must come from the environment (UPKIT_TOKEN) or a file")
end)

T.test("a failed step exits 1, names the step and the resume command; --resume finishes the run", function()
  reset()
  local out, err, code = upkit("run counter.lua --set trace=trace --set fail_at=two")
  T.eq(code, 1)
  T.contains(err, "step 'two' of counter failed: two exploded [BOOM]")
  local resume = T.ok(err:match("upkit run counter.lua %-%-resume %S+"), "resume command")
  T.contains(out, "Result: failed")
  T.eq(trace(), "one\n")
  local run = run_dir_of(out)
  T.contains(events(journal(run)), "step-failed:two run-finished")
  -- the journal stored fail_at=two: a resumed run keeps it unless told
  local _, err2
  _, err2, code = upkit(resume:gsub("^upkit ", "") .. " --set fail_at=")
  T.eq(code, 2)
  T.contains(err2, "parameter 'fail_at' was 'two' when the run started; now '' (from --set)")
  T.eq(trace(), "one\n", "nothing ran")
  out, _, code = upkit(resume:gsub("^upkit ", "") .. " --set fail_at= --allow-change fail_at")
  T.eq(code, 0)
  T.eq(trace(), "one\ntwo\nthree\n", "step one is not run twice")
  T.contains(out, "one    finished")
  out, _, code = upkit("run counter.lua --resume")
  T.eq(code, 0)
  T.contains(out, "already finished successfully")
end)

T.test("a run killed with SIGKILL resumes at the step it was in", function()
  reset()
  local pid = R.start(dir, "run counter.lua --set trace=trace --set sleep_at=two", "two-start")
  T.contains(trace(), "two-start")
  os.execute("kill -9 " .. pid)
  os.execute("sleep 0.2")
  local out, _, code = upkit("run counter.lua --resume --set sleep_at= --allow-change sleep_at")
  T.eq(code, 0)
  T.eq(trace(), "one\ntwo-start\ntwo\nthree\n")
  T.contains(out, "Resuming counter")
end)

T.test("--resume refuses when finished steps moved in the procedure file", function()
  reset()
  local out, _, code = upkit("run counter.lua --set trace=trace --set fail_at=two")
  T.eq(code, 1)
  local run = run_dir_of(out)
  local text = T.read_file(dir .. "/counter.lua")
  T.write_file(dir .. "/counter2.lua", (text:gsub('name = "one"', 'name = "zero", run = function() end },\n    { name = "one"')))
  local _, err
  _, err, code = upkit("run counter2.lua --resume " .. T.q(run:sub(#dir + 2)) .. " --set fail_at= --allow-change fail_at")
  T.eq(code, 2)
  T.contains(err, "finished step 1 was 'one', it is now 'zero'")
end)

T.write_file(dir .. "/guarded.lua", R.MARK .. [[
return {
  name = "guarded", summary = "checks, done and confirm",
  params = { { name = "trace", type = "path", default = "trace" },
             { name = "ok", type = "boolean", default = true } },
  steps = {
    { name = "prepare", check = function(ctx) mark(ctx, "check-prepare") return true end,
      done = function(ctx) return io.open(ctx.params.trace .. ".prepared") ~= nil end,
      run = function(ctx) io.open(ctx.params.trace .. ".prepared", "w"):close() mark(ctx, "prepare") end },
    { name = "destroy", confirm = "This deletes things.",
      check = function(ctx) if not ctx.params.ok then error({ code = "NOPE", message = "server unreachable" }) end end,
      run = function(ctx) mark(ctx, "destroy") end },
  },
}
]])

T.test("a failing check stops the run before any step changes anything", function()
  reset()
  os.remove(dir .. "/trace.prepared")
  local out, err, code = upkit("run guarded.lua --yes --set ok=false")
  T.eq(code, 1)
  T.contains(err, "preflight checks failed; nothing was changed")
  T.contains(out, "destroy")
  T.eq(trace(), "check-prepare\n")
  T.eq(events(journal(run_dir_of(out))):find("step%-start"), nil)
end)

T.test("--check runs only the checks and reports every failure", function()
  reset()
  local out, _, code = upkit("run guarded.lua --check --set ok=false")
  T.eq(code, 1)
  T.contains(out, "check prepare")
  T.contains(out, "FAILED: server unreachable [NOPE]")
  out, _, code = upkit("run guarded.lua --check")
  T.eq(code, 0)
  T.contains(out, "All checks passed.")
  T.eq(io.open(dir .. "/trace.prepared"), nil, "nothing ran")
end)

T.test("a destructive step without a terminal needs --yes", function()
  reset()
  local _, err, code = upkit("run guarded.lua")
  T.eq(code, 2)
  T.contains(err, "step 'destroy' is destructive and asks for confirmation")
  T.contains(err, "--yes")
  T.eq(trace(), "")
  local out
  out, _, code = upkit("run guarded.lua --yes")
  T.eq(code, 0)
  T.eq(trace(), "check-prepare\nprepare\ndestroy\n")
end)

T.test("a step whose effect is already there is skipped and says so", function()
  reset()
  T.write_file(dir .. "/trace.prepared", "")
  local out, _, code = upkit("run guarded.lua --yes")
  T.eq(code, 0)
  T.contains(out, "[1/2] prepare: already done, skipped")
  T.eq(trace(), "check-prepare\ndestroy\n")
  os.remove(dir .. "/trace.prepared")
end)

T.test("plan lists steps, resolved parameters and done steps, and changes nothing", function()
  reset()
  T.write_file(dir .. "/trace.prepared", "")
  local out, _, code = upkit("plan guarded.lua")
  T.eq(code, 0)
  T.contains(out, "prepare")
  T.contains(out, "(would be skipped: already done)")
  T.contains(out, "[asks to confirm]")
  T.contains(out, "ok                     = true  [default]")
  T.eq(trace(), "")
  T.eq(io.open(dir .. "/upkit-runs"), nil)
  os.remove(dir .. "/trace.prepared")
end)

T.test("--only, --skip and --from select steps", function()
  reset()
  local _, _, code = upkit("run counter.lua --set trace=trace --only one")
  T.eq(code, 0)
  T.eq(trace(), "one\n")
  reset()
  _, _, code = upkit("run counter.lua --set trace=trace --skip three")
  T.eq(code, 0)
  T.eq(trace(), "one\ntwo\n")
  local _, err
  _, err, code = upkit("run counter.lua --set trace=trace --from four")
  T.eq(code, 2)
  T.contains(err, "no step named 'four'")
end)

T.test("--log-format json prints one JSON object per line", function()
  reset()
  local out, _, code = upkit("run counter.lua --set trace=trace --log-format json")
  T.eq(code, 0)
  local n = 0
  for line in out:gmatch("[^\n]+") do
    local rec = json.decode(line)
    n = n + 1
    if rec.event == "summary" then T.eq(rec.result, "success") T.eq(#rec.steps, 3) end
  end
  T.ok(n >= 2)
end)

T.test("--debug and --step refuse to start without a terminal", function()
  local _, err, code = upkit("run counter.lua --set trace=trace --debug")
  T.eq(code, 2)
  T.contains(err, "--debug needs a terminal")
  _, err, code = upkit("run counter.lua --set trace=trace --step")
  T.eq(code, 2)
end)

T.test("unknown options and invalid procedure files are usage errors", function()
  local _, err, code = upkit("run counter.lua --frobnicate")
  T.eq(code, 2)
  T.contains(err, "unknown option '--frobnicate'")
  T.write_file(dir .. "/bad.lua", 'return { name = "bad", steps = { { name = "x" }, { name = "x", run = 1 } } }')
  _, err, code = upkit("run bad.lua")
  T.eq(code, 2)
  T.contains(err, "step 'x' has no run function")
  T.contains(err, "step name 'x' is used twice")
end)

T.test("parse_args leaves its caller's table as it was", function()
  local args = { "--config=site.lua", "--set", "a=1", "--only=one,two", "--resume" }
  local copy = { table.unpack(args) }
  local opts = require("upkit.procedure").parse_args(args)
  T.eq(args, copy)
  T.eq(opts.config, "site.lua")
  T.eq(opts.only, { "one", "two" })
  T.eq(opts.sets, { a = "1" })
  T.eq(opts.resume, true)
end)

T.test("--help shows the procedure's parameters and steps", function()
  local out, _, code = upkit("run counter.lua --help")
  T.eq(code, 0)
  T.contains(out, "counter: counts its steps")
  T.contains(out, "UPKIT_TOKEN")
  T.contains(out, "--resume [RUN]")
  T.contains(out, "2. two           second, n=2", "a describe function sees the defaults")
  T.contains(out, "3. three         (no description)")
end)

T.write_file(dir .. "/undoable.lua", R.MARK .. [[
return {
  name = "undoable", summary = "steps with undo",
  params = { { name = "trace", type = "path", default = "trace" }, { name = "fail_undo", type = "boolean", default = false } },
  steps = {
    { name = "a", run = function(ctx) mark(ctx, "a") return { made = "A" } end,
      undo = function(ctx) mark(ctx, "undo-a-" .. ctx.state.made) end },
    { name = "b", run = function(ctx) mark(ctx, "b") end },
    { name = "c", run = function(ctx) mark(ctx, "c") end,
      undo = function(ctx) if ctx.params.fail_undo then error({ code = "STUCK", message = "cannot undo c" }) end
                           mark(ctx, "undo-c") end },
  },
}
]])

T.test("--undo runs the undo of each finished step, newest first, and is journalled", function()
  reset()
  local _, _, code = upkit("run undoable.lua")
  T.eq(code, 0)
  local _, err
  _, err, code = upkit("run undoable.lua --undo")
  T.eq(code, 2, "without a terminal, --undo needs --yes")
  T.contains(err, "--yes")
  T.eq(trace(), "a\nb\nc\n")
  local out
  out, _, code = upkit("run undoable.lua --undo --yes --set fail_undo=true --allow-change fail_undo")
  T.eq(code, 1)
  T.eq(trace(), "a\nb\nc\n", "a failed undo stops there")
  out, _, code = upkit("run undoable.lua --undo --yes")
  T.eq(code, 0)
  T.eq(trace(), "a\nb\nc\nundo-c\nundo-a-A\n", "newest first, with the stored state")
  T.contains(out, "kept")
  local recs = journal(run_dir_of(out))
  T.contains(events(recs), "step-undone:c")
  T.contains(events(recs), "undo-failed:c")
  out, _, code = upkit("run undoable.lua --undo --yes")
  T.eq(code, 0)
  T.contains(out, "no finished step to undo")
end)

T.write_file(dir .. "/handles.lua", [[
local function handle(name)
  return { close = function() local f = assert(io.open("closed", "a")) f:write(name, "\n") f:close() end }
end
return {
  name = "handles", params = { { name = "fail", type = "boolean", default = false } },
  steps = {
    { name = "open", run = function(ctx)
        ctx._api = handle("api-1")
        ctx._api = handle("api-2")            -- replaces: api-1 is closed now
        ctx:cache("db", function() return handle("db") end) end },
    { name = "use", run = function(ctx)
        assert(ctx:cache("db", function() error("opened again") end))
        if ctx.params.fail then error({ code = "BOOM", message = "failed" }) end end },
  },
}
]])

T.test("handles cached in ctx: a replaced one is closed at once, the rest when the run ends, failed or not", function()
  for _, fail in ipairs { "false", "true" } do
    os.remove(dir .. "/closed")
    local _, _, code = upkit("run handles.lua --set fail=" .. fail)
    T.eq(code, fail == "true" and 1 or 0)
    T.eq(T.read_file(dir .. "/closed"), "api-1\ndb\napi-2\n")
  end
end)

T.test("upkit new writes a starter procedure that plans and runs", function()
  local out, _, code = upkit("new mine")
  T.eq(code, 0)
  T.contains(out, "mine.lua")
  out, _, code = upkit("plan ./mine.lua --set greeting=hi")
  T.eq(code, 0)
  T.contains(out, "prepare")
  out, _, code = upkit("run ./mine.lua --set greeting=hi")
  T.eq(code, 0)
  T.eq(T.read_file(dir .. "/out/greeting.txt"), "hi\n")
  local _, err
  _, err, code = upkit("new mine")
  T.eq(code, 1)
  T.contains(err, "exists already")
end)

T.done()
