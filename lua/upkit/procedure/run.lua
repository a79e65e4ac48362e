-- upkit.procedure.run: a procedure run from the command line: find the run
-- to resume, resolve parameters, select steps, show the plan, run checks,
-- confirm once, run the steps (and the always / on_failure steps), summarise.
--
-- main and call_step live in this one file on purpose: the debugger tells the
-- engine's frames from a step's by this file's name (main's source).
local upkit = require "upkit"
local log = require "upkit.log"
local lfs = require "lfs"
local C = require "upkit.procedure.common"
local P = require "upkit.procedure.params"
local J = require "upkit.procedure.journal"
local O = require "upkit.procedure.options"
local R = require "upkit.procedure.report"
local K = require "upkit.procedure.checks"
local context = require "upkit.procedure.context"

local M = {}

---------------------------------------------------------------------------
-- Run folders
---------------------------------------------------------------------------

local function new_run_dir(runs, name)
  R.mkdirs(runs)
  local base = string.format("%s/%s-%s", runs, name, os.date("%Y%m%d-%H%M%S"))
  local dir, n = base, 1
  while lfs.attributes(dir, "mode") or not R.mkdirs(dir) do n = n + 1; dir = base .. "-" .. n end
  return dir
end

-- The latest run folder of a procedure under runs, or nil.
function M.latest_run(runs, name)
  if lfs.attributes(runs, "mode") ~= "directory" then return nil end
  local best
  for f in lfs.dir(runs) do
    if f:sub(1, #name + 1) == name .. "-" and f:sub(#name + 2):match("^%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d") then
      local p = runs .. "/" .. f
      local mod = lfs.attributes(p .. "/journal.jsonl", "modification")
      if mod and (not best or mod > best.mod or (mod == best.mod and f > best.name)) then
        best = { path = p, mod = mod, name = f }
      end
    end
  end
  return best and best.path
end

-- The run --resume or --undo names, and what its journal says; or nil, problem.
local function find_run(desc, opts)
  local flag = opts.resume and "--resume" or "--undo"
  local runs = opts.runs or "upkit-runs"
  local which = opts.resume or opts.undo
  local dir = which
  if which == true then dir = M.latest_run(runs, desc.name) end
  if not dir then return nil, string.format("%s: no earlier run of %s under %s", flag, desc.name, runs) end
  if lfs.attributes(dir .. "/journal.jsonl", "mode") ~= "file" then
    return nil, string.format("%s: no earlier run in '%s' (it has no journal)", flag, dir)
  end
  local ok, recs = pcall(J.read, dir .. "/journal.jsonl")
  if not ok then return nil, flag .. ": " .. C.errmsg(recs) end
  local summary = J.summary(recs)
  if not summary.start or summary.start.procedure ~= desc.name then
    return nil, string.format("%s: '%s' is not a run of %s", flag, dir, desc.name)
  end
  for i, name in ipairs(summary.start.steps or {}) do
    if summary.finished[name] then
      local now = desc.steps[i]
      if not now or now.name ~= name then
        return nil, string.format("%s refused: the procedure file changed: finished step %d was '%s', it is " ..
          "now %s.\nRestore the procedure file as it was, or start a new run.", flag, i, name,
          now and ("'" .. now.name .. "'") or "gone")
      end
    end
  end
  return dir, summary
end

---------------------------------------------------------------------------
-- Selecting steps
---------------------------------------------------------------------------

--[[
Which steps run: sel[name] = true (runs), "finished" (done in the run being
resumed), or the option that leaves it out. On resume, --from and --only
rerun finished steps. A step's needs_state keys must be in the recorded
state or come from a step that runs before it.
]]
local function select_steps(desc, opts, summary)
  local sel, problems, names = {}, {}, {}
  for _, s in ipairs(desc.steps) do names[s.name] = true end
  for _, list in ipairs { opts.only, opts.skip, opts.from and { opts.from } or {} } do
    for _, n in ipairs(list) do
      if not names[n] then problems[#problems + 1] = string.format("no step named '%s'", n) end
    end
  end
  local started, only, skip = opts.from == nil, {}, {}
  for _, n in ipairs(opts.only) do only[n] = true end
  for _, n in ipairs(opts.skip) do skip[n] = true end
  local rerun = opts.from ~= nil or next(only) ~= nil
  for _, s in ipairs(desc.steps) do
    if s.name == opts.from then started = true end
    local why
    if not started then why = "--from"
    elseif next(only) and not only[s.name] then why = "--only"
    elseif skip[s.name] then why = "--skip" end
    local finished = summary and summary.finished[s.name] and not (s.always or s.on_failure)
    if why then sel[s.name] = finished and "finished" or why
    elseif finished and not rerun then sel[s.name] = "finished"
    else sel[s.name] = true end
  end
  local state = summary and summary.state or {}
  for i, s in ipairs(desc.steps) do
    if sel[s.name] == true then
      for _, key in ipairs(s.needs_state or {}) do
        if state[key] == nil then
          local could, from = false, nil
          for j = 1, i - 1 do
            local e = desc.steps[j]
            local gives = e.provides == nil
            for _, k in ipairs(e.provides or {}) do if k == key then gives = true end end
            if gives and sel[e.name] == true then could = true end
            if gives and e.provides and not from then from = e.name end
          end
          if not could then
            problems[#problems + 1] = string.format("step '%s' needs '%s', which %s records and this run does " ..
              "not run: start from %s, or --resume a run that did it", s.name, key,
              from and ("step '" .. from .. "'") or "an earlier step", from and ("'" .. from .. "'") or "it")
          end
        end
      end
    end
  end
  return sel, problems
end

---------------------------------------------------------------------------
-- Calling step functions
---------------------------------------------------------------------------

-- Run a step function under xpcall with the error handler (and debugger).
-- Returns ok, results... (a table of the function's results) or false, err.
local function call_step(fn, ctx, step, opts)
  local handler = function(e)
    if type(e) == "table" and not upkit.is_error(e) then
      e = upkit.new_error(tostring(e.code or "LUA_ERROR"), tostring(e.message or C.errmsg(e)),
                          { traceback = debug.traceback("", 2) })
    elseif type(e) == "table" then
      if rawget(e, "traceback") == nil then rawset(e, "traceback", debug.traceback("", 2)) end
    else
      e = upkit.new_error("LUA_ERROR", tostring(e), { traceback = debug.traceback("", 2) })
    end
    if opts.debugger and e.code ~= "INTERRUPTED" then
      local decision = opts.debugger.on_error(e, ctx, step, 2)
      if decision then rawset(e, "decision", decision) end
    end
    return e
  end
  local res = table.pack(xpcall(fn, handler, ctx))
  if not res[1] then return false, res[2] end
  return true, res[2], res[3]
end
M.call_step = call_step

---------------------------------------------------------------------------
-- Running
---------------------------------------------------------------------------

-- The command that resumes this run: the non-secret --config/--set arguments again.
local function resume_hint(path, run_dir, opts)
  local parts = { "upkit run", C.shell_quote(path), "--resume", C.shell_quote(run_dir) }
  if opts.config then parts[#parts + 1] = "--config " .. C.shell_quote(opts.config) end
  local held = {}
  for _, k in ipairs(opts.set_order) do
    local v = opts.sets[k]
    if log.redact(v) ~= v then held[#held + 1] = k
    else parts[#parts + 1] = "--set " .. C.shell_quote(k .. "=" .. v) end
  end
  local hint = table.concat(parts, " ")
  if #held > 0 then hint = hint .. "  (and --set " .. table.concat(held, ", --set ") .. " as before: they hold a password)" end
  return hint
end

local Run = {}
Run.__index = Run

function Run:result(step, result, secs, note)
  self.results[#self.results + 1] = { step = step, result = result, seconds = secs, note = note }
end

function Run:say(fmt, ...)
  if self.opts.log_format == "text" then
    io.stdout:write(log.redact(string.format(fmt, ...)), "\n")
    io.stdout:flush()
  end
end

-- The state summary and the ways out, after a failure.
function Run:recovery()
  local state = {}
  if self.desc.state_summary then
    local ok, s = pcall(self.desc.state_summary, self.ctx)
    if not ok then state[1] = "(the procedure's state summary failed: " .. C.errmsg(s) .. ")"
    elseif type(s) == "table" then for _, l in ipairs(s) do state[#state + 1] = tostring(l) end
    elseif s ~= nil then state[1] = tostring(s) end
  end
  local nxt = { "resume after fixing the cause: " .. resume_hint(self.path, self.run_dir, self.opts) }
  local undoable = {}
  for _, s in ipairs(self.desc.steps) do
    if self.done[s.name] and s.undo then undoable[#undoable + 1] = s.name end
  end
  if #undoable > 0 then
    nxt[#nxt + 1] = string.format("or undo what this run did (%s): upkit run %s --undo %s", table.concat(undoable, ", "),
                                  C.shell_quote(self.path), C.shell_quote(self.run_dir))
  end
  return { state = state, next = nxt }
end

function Run:finish(result, code, extra)
  self.journal:write { event = "run-finished", result = result }
  local seen = {}
  for _, r in ipairs(self.results) do seen[r.step] = true end
  for _, st in ipairs(self.desc.steps) do
    if not seen[st.name] then self:result(st.name, "not run") end
  end
  R.summary(self.desc, self.results, self.run_dir, result, self.opts.log_format, extra)
  return code
end

-- One step: done?, before, run (with the debugger's retry). Returns
-- "ok" | "skipped" | "failed" | "aborted" | "interrupted", err.
function Run:step(i, s)
  local ctx, journal = self.ctx, self.journal
  local label = string.format("[%d/%d] %s", i, #self.desc.steps, s.name)
  if s.done then
    local ok, isdone = pcall(s.done, ctx)
    if ok and isdone then
      journal:write { event = "step-skipped", step = s.name, reason = "done" }
      self:result(s.name, "skipped", nil, "already done")
      self:say("%s: already done, skipped", label)
      return "skipped"
    end
  end
  self:say("%s: %s", label, O.describe_step(s, ctx))
  local t0 = upkit.now()
  local ok, ret, failure
  ctx.before = self.summary and self.summary.before[s.name]
  if s.before and ctx.before == nil then
    ok, ret = call_step(s.before, ctx, s, self.opts)
    if not ok then return self:failed(s, ret, upkit.now() - t0) end
    ctx.before = ret
  end
  journal:write { event = "step-started", step = s.name, before = ctx.before }
  log.debug("step '%s' started", s.name)
  while true do
    ok, ret, failure = call_step(s.run, ctx, s, self.opts)
    if ok or not (upkit.is_error(ret) and ret.decision == "retry") then break end
    journal:write { event = "step-retry", step = s.name, by = "operator" }
    log.info("retrying step '%s'", s.name)
  end
  local secs = upkit.now() - t0
  if ok and failure ~= nil and failure ~= false then
    ok, ret = false, upkit.is_error(failure) and failure
      or upkit.new_error("TEST_FAILED", string.format("step '%s' recorded a failure: %s", s.name, C.errmsg(failure)))
  end
  if not ok then return self:failed(s, ret, secs) end
  local stored = {}
  if type(ret) == "table" then for k, v in pairs(ret) do stored[k] = v end end
  local eok, eerr = pcall(J.storable, stored, "the result of step '" .. s.name .. "'")
  if not eok then return self:failed(s, eerr, secs) end
  for k, v in pairs(stored) do ctx.state[k] = v end
  journal:write { event = "step-done", step = s.name, seconds = secs, state = stored }
  self.done[s.name] = true
  log.debug("step '%s' finished in %s", s.name, C.fmt_seconds(secs))
  self:result(s.name, "ok", secs)
  self:say("%s: ok (%s)", label, C.fmt_seconds(secs))
  return "ok"
end

function Run:failed(s, err, secs)
  local decision = upkit.is_error(err) and err.decision
  if decision == "skip" then
    self.journal:write { event = "step-skipped", step = s.name, reason = "operator", error = C.errmsg(err) }
    self:result(s.name, "skipped", secs, "by the operator")
    return "skipped"
  end
  local code = C.errcode(err)
  self.journal:write { event = "step-failed", step = s.name, seconds = secs,
                       error = { code = code, message = upkit.is_error(err) and err.message or tostring(err) } }
  if code == "INTERRUPTED" or decision == "abort" then
    log.error("step '%s' %s", s.name, code == "INTERRUPTED" and "was interrupted" or "aborted by the operator")
    self:result(s.name, code == "INTERRUPTED" and "interrupted" or "aborted", secs)
    io.stderr:write(string.format("upkit: stopped at step '%s'. To go on: %s\n", s.name,
                                  resume_hint(self.path, self.run_dir, self.opts)))
    return code == "INTERRUPTED" and "interrupted" or "aborted", err
  end
  log.error("step '%s' failed: %s", s.name, C.errmsg(err))
  if os.getenv("UPKIT_TRACEBACK") and upkit.is_error(err) and err.traceback then log.error("%s", err.traceback) end
  self:result(s.name, "FAILED", secs, C.errmsg(err))
  io.stderr:write(log.redact(string.format("upkit: step '%s' of %s failed: %s\nTo resume from this step after " ..
    "fixing the cause: %s\n", s.name, self.desc.name, C.errmsg(err), resume_hint(self.path, self.run_dir, self.opts))))
  return "failed", err
end

-- The steps that run after a failure: on_failure and always steps after the failed one.
function Run:rescue(from)
  for i = from + 1, #self.desc.steps do
    local s = self.desc.steps[i]
    if (s.on_failure or s.always) and self.sel[s.name] == true then
      self.ctx.step, log.context.step = s.name, s.name
      local outcome = self:step(i, s)
      if outcome == "interrupted" then return outcome end
    end
  end
  self.ctx.step, log.context.step = nil, nil
end

-- The steps in order; returns the exit code.
function Run:steps()
  local ask_each = self.opts.step
  for i, s in ipairs(self.desc.steps) do
    local ctx = self.ctx
    ctx.step, log.context.step = s.name, s.name
    local sel = self.sel[s.name]
    local outcome, err
    if sel == "finished" then
      self:result(s.name, "finished", nil, "in an earlier run")
      goto continue
    elseif sel ~= true then
      self.journal:write { event = "step-skipped", step = s.name, reason = sel }
      self:result(s.name, "skipped", nil, sel)
      goto continue
    elseif s.on_failure then
      self:result(s.name, "skipped", nil, "runs only when a step fails")
      goto continue
    end
    if ask_each then
      local choice = self.opts.debugger and self.opts.debugger.ask_step(s, ctx, O.describe_step(s, ctx))
      if choice == "skip" then
        self.journal:write { event = "step-skipped", step = s.name, reason = "operator" }
        self:result(s.name, "skipped", nil, "by the operator")
        goto continue
      elseif choice == "continue" then ask_each = false
      elseif choice == "quit" then
        self.journal:write { event = "aborted", step = s.name, by = "operator" }
        return self:finish("aborted", C.EXIT_ABORT)
      end
    end
    outcome, err = self:step(i, s)
    if outcome == "interrupted" then return self:finish("interrupted", C.EXIT_INTERRUPTED) end
    if outcome == "aborted" or outcome == "failed" then
      if self:rescue(i) == "interrupted" then return self:finish("interrupted", C.EXIT_INTERRUPTED) end
      return self:finish(outcome, outcome == "aborted" and C.EXIT_ABORT or C.EXIT_FAIL, self:recovery())
    end
    ::continue::
    ctx.step, log.context.step = nil, nil
  end
  return self:finish("success", C.EXIT_OK)
end

-- Open the run folder and run: checks, the confirmation, the steps.
local function run(desc, path, opts, found, params, changed, sel)
  local run_dir = found and found.dir or new_run_dir(opts.runs or "upkit-runs", desc.name)
  local summary = found and found.summary
  local journal <close> = J.open(run_dir)
  R.attach(journal, run_dir, opts.log_format)
  local ctx <close> = context.new(desc, params, summary and summary.state or {}, run_dir, opts)
  if opts.debug or opts.step then
    local ok, dbg = pcall(require, "upkit.debugger")
    if not ok then
      io.stderr:write("upkit: ", opts.debug and "--debug" or "--step", ": ", C.errmsg(dbg), "\n")
      return C.EXIT_USAGE
    end
    opts.debugger = dbg
    dbg.attach(ctx, journal, desc)
  end
  local self = setmetatable({ desc = desc, path = path, opts = opts, run_dir = run_dir, journal = journal,
                              ctx = ctx, sel = sel, summary = summary, results = {}, done = {} }, Run)
  for name in pairs(summary and summary.finished or {}) do self.done[name] = true end
  local rerun = {}
  for _, s in ipairs(desc.steps) do
    if sel[s.name] == true and summary and summary.finished[s.name] then rerun[#rerun + 1] = s.name end
  end
  if summary then
    journal:write { event = "resume", procedure = desc.name, params = P.public(desc, params),
                    changed = next(changed) and changed or nil, rerun = #rerun > 0 and rerun or nil,
                    pid = upkit.pid() }
  else
    local names = {}
    for i, s in ipairs(desc.steps) do names[i] = s.name end
    journal:write { event = "run-start", procedure = desc.name, file = path,
                    file_sha256 = require("upkit.hash").file("sha256", path), steps = names,
                    params = P.public(desc, params), pid = upkit.pid() }
  end
  self:say("%s %s: %s\nrun folder: %s", summary and "Resuming" or "Running", desc.name, desc.summary or "", run_dir)
  if summary and #summary.undone > 0 then
    self:say("note: --undo undid step(s) %s of this run; they run again if selected", C.list_text(summary.undone))
  end
  for name, c in pairs(changed) do
    log.warn("parameter '%s' changed on resume (--allow-change): '%s' -> '%s'", name, tostring(c.from), tostring(c.to))
  end
  for _, name in ipairs(rerun) do log.info("step '%s' finished earlier and runs again (--from/--only)", name) end

  local failures = K.run(desc, ctx, sel, false)
  if #failures > 0 then
    for _, f in ipairs(failures) do
      log.error("check of step '%s' failed: %s", f.step, f.message)
      self:result(f.step, "check failed", nil, f.message)
      journal:write { event = "check-failed", step = f.step,
                      error = { code = f.error and C.errcode(f.error) or "PREFLIGHT_FAILED", message = f.message } }
    end
    io.stderr:write("upkit: preflight checks failed; nothing was changed.\n")
    return self:finish("failed", C.EXIT_FAIL)
  end
  if not opts.step and not K.confirm(desc, ctx, sel, opts) then
    journal:write { event = "aborted", by = "operator", reason = "not confirmed" }
    io.stderr:write("upkit: not confirmed; nothing was changed\n")
    return self:finish("aborted", C.EXIT_ABORT)
  end
  return self:steps()
end

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------

local function usage_problems(desc, problems)
  io.stderr:write("upkit: cannot run ", desc.name, ": bad parameters or options (nothing was changed):\n")
  for _, p in ipairs(problems) do io.stderr:write("  - ", log.redact(p), "\n") end
  return C.EXIT_USAGE
end

-- Parameters of this run: resolved, and on resume kept as the run started.
local function parameters(desc, path, opts, summary)
  local config = {}
  if opts.config then
    local c, err = P.load_config(opts.config)
    if not c then return nil, { err } end
    config = c
  end
  local params, problems, origins = P.resolve(desc, { config = config, sets = opts.sets, path = path,
                                                      plan = opts.plan, journal = summary and summary.params })
  local changed = {}
  if summary and summary.params then
    local allow = {}
    for _, n in ipairs(opts.allow_change) do allow[n] = true end
    local ch, kp = P.keep_started(desc, params, origins, summary.params, allow)
    changed = ch
    for _, p in ipairs(kp) do problems[#problems + 1] = p end
  elseif #opts.allow_change > 0 then
    problems[#problems + 1] = "--allow-change goes with --resume or --undo"
  end
  return params, problems, origins, changed
end

-- fn(...) -> exit code; a locked run folder (BUSY) and a failed journal
-- write are reported as such (after the journal's cleanup ran).
local function guarded(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return err end
  if upkit.is_error(err) and err.code == "BUSY" then
    io.stderr:write("upkit: ", err.message, "\n")
    return C.EXIT_USAGE
  end
  if upkit.is_error(err) and rawget(err, "journal") then
    io.stderr:write("upkit: ", log.redact(err.message), " [", err.code, "]\nThe run stopped there: the journal may " ..
                    "not record the last step; check its effect before resuming.\n")
    return C.EXIT_FAIL
  end
  error(err, 0)
end

--[[
main(desc, path, args [, mode]) -> exit code. mode = "plan" for 'upkit plan'.
]]
function M.main(desc, path, args, mode)
  local opts, problem = O.parse_args(args)
  if not opts then
    io.stderr:write("upkit: ", problem, "\nTry 'upkit run ", path, " --help'.\n")
    return C.EXIT_USAGE
  end
  local dproblems = P.validate_description(desc)
  if #dproblems > 0 then
    io.stderr:write("upkit: procedure file '", path, "' is not valid:\n")
    for _, p in ipairs(dproblems) do io.stderr:write("  - ", p, "\n") end
    return C.EXIT_USAGE
  end
  if opts.help then print(O.procedure_help(desc, path)) return C.EXIT_OK end
  if mode == "plan" then opts.plan = true end
  local interactive = upkit.isatty(0)
  if (opts.debug or opts.step) and not interactive then
    io.stderr:write("upkit: ", opts.debug and "--debug" or "--step",
                    " needs a terminal on standard input; none here, so the run did not start\n")
    return C.EXIT_USAGE
  end
  if opts.resume and opts.undo then io.stderr:write("upkit: --resume and --undo do not go together\n") return C.EXIT_USAGE end

  local found
  if opts.resume or opts.undo then
    local dir, summary = find_run(desc, opts)
    if not dir then io.stderr:write("upkit: ", summary, "\n") return C.EXIT_USAGE end
    found = { dir = dir, summary = summary }
    if summary.status == "success" and opts.resume and not opts.from and #opts.only == 0 then
      io.stdout:write("Run ", dir, " already finished successfully; nothing to resume.\n")
      return C.EXIT_OK
    end
  end
  local summary = found and found.summary
  local params, problems, origins, changed = parameters(desc, path, opts, summary)
  local sel, sproblems = select_steps(desc, opts, summary)
  for _, p in ipairs(sproblems) do problems[#problems + 1] = p end
  if #problems > 0 then return usage_problems(desc, problems) end

  if opts.undo then
    return guarded(require("upkit.procedure.undo").run, desc, path, opts, found.dir, summary, params, interactive)
  end
  if opts.plan then
    local ctx <close> = context.new(desc, params, summary and summary.state or {}, found and found.dir, opts)
    return R.plan(desc, ctx, params, origins, sel, summary)
  end
  if opts.check then
    local ctx <close> = context.new(desc, params, summary and summary.state or {}, nil, opts)
    io.stdout:write(string.format("Checks of %s (a dry run: nothing is changed):\n", desc.name))
    local failures = K.run(desc, ctx, sel, true)
    io.stdout:write(#failures == 0 and "All checks passed.\n" or string.format("%d check(s) failed.\n", #failures))
    return #failures == 0 and C.EXIT_OK or C.EXIT_FAIL
  end
  if not opts.yes and not interactive then
    for _, s in ipairs(desc.steps) do
      if s.confirm and sel[s.name] == true and not s.on_failure then
        io.stderr:write(string.format("upkit: step '%s' is destructive and asks for confirmation, but standard " ..
          "input is not a terminal: run again with --yes to confirm it (nothing was changed)\n", s.name))
        return C.EXIT_USAGE
      end
    end
  end
  return guarded(run, desc, path, opts, found, params, changed, sel)
end

return M
