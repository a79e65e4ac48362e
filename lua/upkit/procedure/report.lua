-- upkit.procedure.report: what a run prints and logs: the console and log
-- file sinks, the plan, and the summary at the end.
local log = require "upkit.log"
local fs = require "upkit.fs"
local C = require "upkit.procedure.common"
local O = require "upkit.procedure.options"
local J = require "upkit.procedure.journal"

local M = {}

local function console_sink(format)
  if format == "json" then
    return function(rec)
      local ok, line = pcall(J.encode, rec)
      if not ok then line = J.encode { level = "error", msg = "a log record could not be encoded: " .. C.errmsg(line) } end
      io.stdout:write(line, "\n")
      io.stdout:flush()
    end
  end
  return function(rec)
    if rec.level == "debug" then return end
    local prefix = rec.level == "warn" and "warning: " or rec.level == "error" and "error: " or ""
    local out = (rec.level == "warn" or rec.level == "error") and io.stderr or io.stdout
    for line in (rec.msg .. "\n"):gmatch("(.-)\n") do
      out:write("      ", prefix, line, "\n")
    end
    out:flush()
  end
end

local function file_sink(path)
  J.create_private(path)
  local f, err = io.open(path, "a")
  if not f then require("upkit").error("EACCES", string.format("cannot open the log file '%s': %s", path, err)) end
  return function(rec)
    f:write(rec.time, " ", rec.level:upper(), rec.step and (" [" .. rec.step .. "]") or "", " ", rec.msg, "\n")
    f:flush()
  end, f
end

-- report.attach(journal, run_dir, format): the log file (0600) and the
-- console become log sinks until the journal closes.
function M.attach(journal, run_dir, format)
  local fsink, logf = file_sink(run_dir .. "/log.txt")
  local csink = console_sink(format)
  log.add_sink(fsink)
  log.add_sink(csink)
  journal:on_close(function()
    log.remove_sink(fsink)
    log.remove_sink(csink)
    logf:close()
    log.context.step = nil
  end)
end

-- The summary table printed at the end of a run (or undo).
function M.summary(desc, results, run_dir, result, format, extra)
  if format == "json" then
    io.stdout:write(J.encode({ event = "summary", procedure = desc.name, run = run_dir, result = result,
                               steps = results, system_state = extra and extra.state,
                               next = extra and extra.next }), "\n")
    io.stdout:flush()
    return
  end
  io.stdout:write(string.format("\nSummary of %s (run folder %s):\n", desc.name, run_dir))
  local w = 4
  for _, r in ipairs(results) do w = math.max(w, #r.step) end
  for _, r in ipairs(results) do
    io.stdout:write(string.format("  %-" .. w .. "s  %-8s %8s  %s\n", r.step, r.result,
                                  r.seconds and C.fmt_seconds(r.seconds) or "", log.redact(r.note or "")))
  end
  io.stdout:write("Result: ", result, "\n")
  if extra and extra.state and #extra.state > 0 then
    io.stdout:write("State of the system now:\n")
    for _, l in ipairs(extra.state) do io.stdout:write("  - ", log.redact(l), "\n") end
  end
  if extra and extra.next and #extra.next > 0 then
    io.stdout:write("To get out of it:\n")
    for _, l in ipairs(extra.next) do io.stdout:write("  ", log.redact(l), "\n") end
  end
  io.stdout:flush()
end

-- The plan: parameters with their origins, steps with what would happen.
function M.plan(desc, ctx, params, origins, sel, summary)
  io.stdout:write(string.format("Plan for %s: %s\n\nParameters:\n", desc.name, desc.summary or ""))
  for _, p in ipairs(desc.params or {}) do
    local v = params[p.name]
    local shown = p.type == "secret" and (v and "(set)" or "(not set)") or (v == nil and "(not set)" or tostring(v))
    io.stdout:write(string.format("  %-22s = %s  [%s]\n", p.name, log.redact(shown), origins[p.name] or "unset"))
  end
  io.stdout:write("\nSteps:\n")
  local w = O.name_width(desc.steps, 24)
  for i, s in ipairs(desc.steps) do
    local note = ""
    if sel[s.name] == "finished" then note = "  (finished in the run being resumed)"
    elseif sel[s.name] ~= true then note = "  (not selected: " .. sel[s.name] .. ")"
    elseif s.on_failure then note = "  (only when a step fails)"
    elseif s.done then
      local ok, isdone = pcall(s.done, ctx)
      if ok and isdone then note = "  (would be skipped: already done)"
      elseif not ok then note = "  (cannot tell if done: " .. C.errmsg(isdone) .. ")" end
    end
    io.stdout:write(log.redact(string.format("  %2d. %-" .. w .. "s %s%s%s\n", i, s.name, O.describe_step(s, ctx),
                                             O.step_marks(s), note)))
  end
  io.stdout:flush()
  return C.EXIT_OK
end

-- report.mkdirs(path): a private folder (0700) and its parents; the real cause when it fails.
function M.mkdirs(path)
  return fs.mkdirs(path, { mode = "0700" })
end

return M
