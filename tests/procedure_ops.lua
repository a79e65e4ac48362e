-- What an operator sees and decides: --check as a dry run of every step's
-- needs and checks, one confirmation before the first change (tmux), Ctrl-C
-- during a step (exit 130), always / on_failure steps and the state summary
-- after a failure, the undo question, config keys no procedure knows, a plan
-- without secrets, and --help with every step described and aligned.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local R = require "runs"

local dir = T.tmpdir()
local bin = T.upkit_bin()

local upkit, reset, trace, run_dir_of = R.folder(dir)
local function events(run) return R.events(R.records(run)) end

T.write_file(dir .. "/ops.lua", R.MARK .. [[
local upkit = require "upkit"
return {
  name = "ops", summary = "needs, confirm, always",
  params = { { name = "trace", type = "path", default = "trace" },
             { name = "program", type = "string", default = "sh" },
             { name = "url", type = "string", default = "" },
             { name = "fail_at", type = "string", default = "" },
             { name = "spin_at", type = "string", default = "" },
             { name = "target_version", type = "string", default = "1.0" },
             { name = "api_key", type = "secret", required = true } },
  state_summary = function(ctx)
    return { "maintenance mode is " .. (ctx.state.maintenance or "off"), "service is running" }
  end,
  steps = {
    { name = "look", describe = "read-only look around",
      needs = function(ctx)
        return { programs = { ctx.params.program }, files = { ctx.params.trace .. ".cfg" },
                 urls = ctx.params.url ~= "" and { ctx.params.url } or nil }
      end,
      run = function(ctx) mark(ctx, "look") end },
    { name = "a-step-with-a-rather-long-name", describe = "turn maintenance mode on", changes = true,
      run = function(ctx)
        mark(ctx, "maintenance-on")
        if ctx.params.spin_at == "on" then mark(ctx, "spinning") while true do upkit.sleep(0.05) end end
        return { maintenance = "on" } end },
    { name = "stop", describe = "stop the service", confirm = "The service stops.",
      run = function(ctx)
        if ctx.params.fail_at == "stop" then error({ code = "BOOM", message = "stop failed" }) end
        mark(ctx, "stop") end },
    { name = "rescue", describe = "maintenance mode off again after a failure", on_failure = true,
      run = function(ctx) mark(ctx, "rescue") end },
    { name = "report", describe = "write the report", always = true,
      run = function(ctx) mark(ctx, "report") end },
  },
}
]])

local KEY = "UPKIT_API_KEY=k-123"

T.test("--check runs every step's needs and checks, one line per step, and changes nothing", function()
  reset()
  os.remove(dir .. "/trace.cfg")
  local out, _, code = upkit("run ops.lua --check --set program=no-such-program-xyz --set url=http://127.0.0.1:9/x", KEY)
  T.eq(code, 1)
  T.contains(out, "program 'no-such-program-xyz' not found")
  T.contains(out, "file 'trace.cfg' is missing")
  T.contains(out, "http://127.0.0.1:9/x cannot be reached")
  T.contains(out, "check stop")
  T.contains(out, "ok (nothing to check)")
  T.contains(out, "1 check(s) failed.")
  T.eq(trace(), "")
  T.eq(io.open(dir .. "/upkit-runs"), nil, "no run folder")
  T.write_file(dir .. "/trace.cfg", "")
  out, _, code = upkit("run ops.lua --check", KEY)
  T.eq(code, 0, out)
  T.contains(out, "All checks passed.")
  -- a normal run checks the needs of every step before the first change
  local err
  out, err, code = upkit("run ops.lua --yes --set program=no-such-program-xyz", KEY)
  T.eq(code, 1)
  T.contains(err, "preflight checks failed; nothing was changed")
  T.eq(trace(), "")
end)

T.test("always and on_failure steps run after a failure; the summary says the state and the ways out", function()
  reset()
  T.write_file(dir .. "/trace.cfg", "")
  local out, err, code = upkit("run ops.lua --yes --set fail_at=stop", KEY)
  T.eq(code, 1, out .. err)
  T.eq(trace(), "look\nmaintenance-on\nrescue\nreport\n")
  T.contains(out, "State of the system now:\n  - maintenance mode is on\n  - service is running")
  T.contains(out, "resume after fixing the cause: upkit run ops.lua --resume")
  reset()
  out, err, code = upkit("run ops.lua --yes", KEY)
  T.eq(code, 0, out .. err)
  T.eq(trace(), "look\nmaintenance-on\nstop\nreport\n", "on success the on_failure step does not run")
  T.contains(out, "runs only when a step fails")
end)

T.test("config keys: one no procedure knows is an error with a suggestion; another procedure's key is accepted", function()
  T.write_file(dir .. "/trace.cfg", "")
  T.write_file(dir .. "/site.lua", 'return { target_versoin = "2.0" }')
  local _, err, code = upkit("plan ops.lua --config site.lua", KEY)
  T.eq(code, 2)
  T.contains(err, "config key 'target_versoin' is not a parameter of ops or of any other procedure (did you mean target_version?)")
  T.write_file(dir .. "/other.lua", 'return { name = "other", params = { { name = "backup_dir" } }, ' ..
                                    'steps = { { name = "x", run = function() end } } }')
  T.write_file(dir .. "/site.lua", 'return { backup_dir = "/b", target_version = "2.0" }')
  local out
  out, err, code = upkit("plan ops.lua --config site.lua", KEY)
  T.eq(code, 0, err)
  T.eq(err, "", "no warning")
  T.contains(out, "target_version         = 2.0  [config]")
end)

T.test("--plan needs no secret; --help describes every step and aligns long names", function()
  local out, err, code = upkit("plan ops.lua")
  T.eq(code, 0, err)
  T.contains(out, "api_key                = (not set)")
  local _, err2, code2 = upkit("run ops.lua --yes")
  T.eq(code2, 2, "a run does need it")
  T.contains(err2, "missing parameter 'api_key'")
  out, _, code = upkit("run ops.lua --help")
  T.eq(code, 0)
  local cols = {}
  for line in out:gmatch("[^\n]+") do
    local lead, name = line:match("^(  %s?%d+%. )(%S+)")
    if name then
      local desc_at = line:find("%S", #lead + #name + 1)
      cols[#cols + 1] = desc_at
    end
  end
  T.eq(#cols, 5)
  for i = 2, #cols do T.eq(cols[i], cols[1], "descriptions start in one column") end
  T.contains(out, "a-step-with-a-rather-long-name  turn maintenance mode on  [changes]")
  T.contains(out, "runs on failure")
end)

local _, has_tmux = T.sh("command -v tmux >/dev/null 2>&1")
if has_tmux ~= 0 then
  T.skip("the confirmation, Ctrl-C and the undo question in a terminal", "tmux is not installed")
  T.done()
end
local pty = require "pty"

T.test("one confirmation before the first change lists what changes; declined: exit 3, nothing changed", function()
  reset()
  T.write_file(dir .. "/trace.cfg", "")
  pty.run(string.format("cd %s && UPKIT_API_KEY=k %s run ops.lua", T.q(dir), T.q(bin)), function(term)
    local screen = term:wait_for("Type 'yes' to continue:")
    T.contains(screen, "- a-step-with-a-rather-long-name: turn maintenance mode on")
    T.contains(screen, "- stop: stop the service  The service stops.")
    T.eq(trace(), "", "nothing ran before the answer (checks only)")
    term:send("no", "Enter")
    T.eq(term:wait_exit(), 3)
    T.contains(term:screen(), "not confirmed; nothing was changed")
  end)
  T.eq(trace(), "")
  reset()
  pty.run(string.format("cd %s && UPKIT_API_KEY=k %s run ops.lua", T.q(dir), T.q(bin)), function(term)
    term:wait_for("Type 'yes' to continue:")
    term:send("yes", "Enter")
    T.eq(term:wait_exit(), 0)
  end)
  T.eq(trace(), "look\nmaintenance-on\nstop\nreport\n", "asked once")
end)

T.test("Ctrl-C during a step exits 130 and says how to go on", function()
  reset()
  T.write_file(dir .. "/trace.cfg", "")
  local run
  pty.run(string.format("cd %s && UPKIT_API_KEY=k %s run ops.lua --yes --set spin_at=on", T.q(dir), T.q(bin)), function(term)
    for _ = 1, 200 do
      if trace():find("spinning", 1, true) then break end
      os.execute("sleep 0.05")
    end
    term:keys("C-c")
    T.eq(term:wait_exit(), 130)
    local screen = term:screen()
    T.contains(screen, "To go on: upkit run ops.lua --resume")
    T.contains(screen, "Result: interrupted")
    run = run_dir_of(screen:gsub("\n", " \n"))
  end)
  T.contains(events(run), "step-failed:a-step-with-a-rather-long-name run-finished")
end)

T.test("the undo question lists only the steps it will undo", function()
  reset()
  T.write_file(dir .. "/u.lua", [[
return { name = "u", steps = {
  { name = "first", run = function() end, undo = function() io.open("undone-first", "w"):close() end },
  { name = "middle", run = function() end },
  { name = "last", run = function() end, undo = function() end } } }
]])
  local _, _, code = upkit("run u.lua")
  T.eq(code, 0)
  pty.run(string.format("cd %s && %s run u.lua --undo", T.q(dir), T.q(bin)), function(term)
    local screen = term:wait_for("Type 'undo' to continue:")
    T.contains(screen, "Undo 2 step(s)")
    T.contains(screen, "newest first: last, first (kept as they are, no undo: middle)")
    term:send("undo", "Enter")
    T.eq(term:wait_exit(), 0)
  end)
  T.ok(io.open(dir .. "/undone-first"), "the undo ran")
end)

T.done()
