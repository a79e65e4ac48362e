-- Resuming and undoing runs through the command line: a resumed run keeps
-- its parameters, --from/--only inside a run, needs_state, checks again on
-- resume, a step that records a failure, the prior state recorded before a
-- change (step-started), --undo --plan, and what a resume after an undo says.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local R = require "runs"

local dir = T.tmpdir()

local upkit, reset, trace, run_dir_of = R.folder(dir, { "maint" })
local records, find = R.records, R.find

-- maintenance: a file "maint" holding on/off; its step records what it was before.
T.write_file(dir .. "/svc.lua", R.MARK .. [[
local upkit = require "upkit"
local function maint() local f = io.open("maint") if not f then return "off" end local s = f:read("l") f:close() return s end
local function set_maint(v) local f = assert(io.open("maint", "w")) f:write(v, "\n") f:close() end
return {
  name = "svc", summary = "maintenance, compute, use",
  params = { { name = "trace", type = "path", default = "trace" },
             { name = "fail_at", type = "string", default = "" },
             { name = "sleep_at", type = "string", default = "" },
             { name = "record_failure", type = "boolean", default = false },
             { name = "need_file", type = "string", default = "" },
             { name = "db", type = "string", default = "none" } },
  steps = {
    { name = "maintenance-on", describe = "turn maintenance mode on",
      before = function(ctx) return { was = maint() } end,
      run = function(ctx)
        set_maint("on")
        mark(ctx, "maintenance-on")
        if ctx.params.sleep_at == "maintenance-on" then
          local t = upkit.now() + 30
          while upkit.now() < t do upkit.sleep(0.05) end
        end
      end,
      undo = function(ctx) mark(ctx, "undo-maintenance-" .. ctx.before.was) set_maint(ctx.before.was) end },
    { name = "compute", describe = "compute b", provides = { "b" },
      run = function(ctx)
        mark(ctx, "compute")
        if ctx.params.record_failure then return { b = 0 }, "the feed was unreachable" end
        return { b = 42 } end },
    { name = "use", describe = "use b", needs_state = { "b" },
      check = function(ctx)
        if ctx.params.need_file ~= "" and not io.open(ctx.params.need_file) then
          error({ code = "ENOENT", message = "no " .. ctx.params.need_file })
        end
      end,
      run = function(ctx)
        if ctx.params.fail_at == "use" then error({ code = "BOOM", message = "use failed" }) end
        mark(ctx, "use-" .. tostring(ctx.state.b)) end },
  },
}
]])

T.test("a value given on resume that differs is refused showing both; --allow-change records it", function()
  reset()
  T.write_file(dir .. "/site.lua", 'return { fail_at = "use" }')
  local out, err, code = upkit("run svc.lua --config site.lua --set db=mine")
  T.eq(code, 1)
  -- the hint repeats --config and the --set arguments
  local hint = T.ok(err:match("(upkit run svc.lua %-%-resume %S+[^\n]*)"), "a resume hint")
  T.contains(hint, "--config site.lua")
  T.contains(hint, "--set db=mine")
  T.write_file(dir .. "/site.lua", 'return { fail_at = "" }')
  _, err, code = upkit("run svc.lua --resume --config site.lua --set db=mine")
  T.eq(code, 2)
  T.contains(err, "parameter 'fail_at' was 'use' when the run started; now '' (from config)")
  T.contains(err, "--allow-change fail_at")
  T.eq(trace(), "maintenance-on\ncompute\n", "nothing ran")
  -- without the --set, db keeps the value the run started with
  out, err, code = upkit("run svc.lua --resume --config site.lua --allow-change fail_at")
  T.eq(code, 0, out .. err)
  local run = run_dir_of(out)
  local resume = find(records(run), "resume")[1]
  T.eq(resume.changed, { fail_at = { from = "use", to = "" } })
  T.eq(resume.params.db, "mine")
end)

T.test("--allow-change names a parameter and goes with --resume or --undo", function()
  reset()
  local _, err, code = upkit("run svc.lua --allow-change fail_at")
  T.eq(code, 2)
  T.contains(err, "--allow-change goes with --resume or --undo")
  _, _, code = upkit("run svc.lua --set fail_at=use")
  T.eq(code, 1)
  _, err, code = upkit("run svc.lua --resume --allow-change nope")
  T.eq(code, 2)
  T.contains(err, "--allow-change nope: no such parameter")
end)

T.test("the resume hint leaves out a --set that holds a password, and says so", function()
  reset()
  local _, err, code = upkit("run svc.lua --set fail_at=use --set 'db=Server=x;PWD=hunter22'")
  T.eq(code, 1)
  T.eq(err:find("hunter22", 1, true), nil, err)
  T.contains(err, "(and --set db as before: they hold a password)")
end)

T.test("the step's prior state is journalled before its change, and a resumed step keeps it", function()
  reset()
  local pid = R.start(dir, "run svc.lua --set sleep_at=maintenance-on", "maintenance-on")
  os.execute("kill -9 " .. pid)
  os.execute("sleep 0.2")
  T.eq(T.read_file(dir .. "/maint"), "on\n", "killed after the change")
  local out, err, code = upkit("run svc.lua --resume --set sleep_at= --allow-change sleep_at")
  T.eq(code, 0, out .. err)
  local run = run_dir_of(out)
  local started = find(records(run), "step-started", "maintenance-on")
  T.eq(#started, 2)
  T.eq(started[1].before, { was = "off" })
  T.eq(started[2].before, { was = "off" }, "the resumed step did not take 'on' (its own change) as the prior state")
  out, err, code = upkit("run svc.lua --undo --yes")
  T.eq(code, 0, out .. err)
  T.eq(T.read_file(dir .. "/maint"), "off\n", "undo restored what it was before this run")
  T.contains(trace(), "undo-maintenance-off")
end)

T.test("--from on a new run that needs state from a skipped step is refused before anything runs", function()
  reset()
  local _, err, code = upkit("run svc.lua --from use")
  T.eq(code, 2)
  T.contains(err, "step 'use' needs 'b', which step 'compute' records and this run does not run")
  T.eq(trace(), "")
  T.eq(io.open(dir .. "/upkit-runs"), nil, "no run folder")
  local out
  out, err, code = upkit("run svc.lua --from compute")
  T.eq(code, 0, out .. err)
  T.eq(trace(), "compute\nuse-42\n")
end)

T.test("inside a run, --from and --only rerun those steps with the state earlier steps recorded", function()
  reset()
  local out, _, code = upkit("run svc.lua")
  T.eq(code, 0)
  local run = run_dir_of(out):sub(#dir + 2)
  out, _, code = upkit("run svc.lua --resume " .. T.q(run) .. " --only use")
  T.eq(code, 0, out)
  T.eq(trace(), "maintenance-on\ncompute\nuse-42\nuse-42\n")
  T.contains(out, "maintenance-on  finished")
  out, _, code = upkit("run svc.lua --resume " .. T.q(run) .. " --from compute")
  T.eq(code, 0, out)
  T.eq(trace(), "maintenance-on\ncompute\nuse-42\nuse-42\ncompute\nuse-42\n")
  T.eq(find(records(dir .. "/" .. run), "resume")[2].rerun, { "compute", "use" })
end)

T.test("checks run again on resume: a check that fails now stops the resume before any change", function()
  reset()
  T.write_file(dir .. "/needed", "")
  local out, _, code = upkit("run svc.lua --set fail_at=use --set need_file=needed")
  T.eq(code, 1, out)
  os.remove(dir .. "/needed")
  local err
  out, err, code = upkit("run svc.lua --resume --set fail_at= --allow-change fail_at")
  T.eq(code, 1)
  T.contains(err, "preflight checks failed; nothing was changed")
  T.contains(out, "no needed [ENOENT]")
  T.eq(trace(), "maintenance-on\ncompute\n")
end)

T.test("a step that records a failure fails, and runs again on resume", function()
  reset()
  local out, err, code = upkit("run svc.lua --set record_failure=true")
  T.eq(code, 1)
  T.contains(err, "step 'compute' recorded a failure: the feed was unreachable [TEST_FAILED]")
  local run = run_dir_of(out)
  T.eq(#find(records(run), "step-done", "compute"), 0)
  out, err, code = upkit("run svc.lua --resume --set record_failure=false --allow-change record_failure")
  T.eq(code, 0, out .. err)
  T.eq(trace(), "maintenance-on\ncompute\ncompute\nuse-42\n")
end)

T.test("--undo --plan previews; --resume after an undo says what was undone", function()
  reset()
  local out, _, code = upkit("run svc.lua --set fail_at=use")
  T.eq(code, 1)
  out, _, code = upkit("run svc.lua --undo --plan")
  T.eq(code, 0, out)
  T.contains(out, "undo maintenance-on")
  T.contains(out, "Kept as they are (no undo): compute")
  T.eq(T.read_file(dir .. "/maint"), "on\n", "the preview changed nothing")
  out, _, code = upkit("run svc.lua --undo --yes")
  T.eq(code, 0, out)
  T.eq(T.read_file(dir .. "/maint"), "off\n")
  out, _, code = upkit("run svc.lua --resume --set fail_at= --allow-change fail_at")
  T.eq(code, 0, out)
  T.contains(out, "--undo undid step(s) maintenance-on of this run")
end)

T.done()
