-- upkit.procedure.undo: `--undo`: the undo of each finished step of a run,
-- newest first, each journalled (step-undone) so an interrupted undo can be
-- run again. `--undo --plan` shows what would be undone and changes nothing.
local upkit = require "upkit"
local log = require "upkit.log"
local C = require "upkit.procedure.common"
local J = require "upkit.procedure.journal"
local O = require "upkit.procedure.options"
local R = require "upkit.procedure.report"
local context = require "upkit.procedure.context"

local M = {}

-- The finished steps in the order they finished: those with an undo, those without.
local function undo_order(desc, summary)
  local by_name, seen = {}, {}
  for _, s in ipairs(desc.steps) do by_name[s.name] = s end
  local undo, keep = {}, {}
  for i = #summary.records, 1, -1 do
    local r = summary.records[i]
    if r.event == "step-done" and summary.finished[r.step] and not seen[r.step] then
      seen[r.step] = true
      local s = by_name[r.step]
      if s and s.undo then undo[#undo + 1] = s else keep[#keep + 1] = r.step end
    end
  end
  return undo, keep   -- newest first
end

local function names(steps)
  local out = {}
  for i, s in ipairs(steps) do out[i] = s.name end
  return out
end

function M.run(desc, path, opts, run_dir, summary, params, interactive)
  local undo, keep = undo_order(desc, summary)
  local keep_note = #keep > 0 and (" (kept as they are, no undo: " .. table.concat(keep, ", ") .. ")") or ""
  if #undo == 0 then
    io.stdout:write("Run ", run_dir, " has no finished step to undo", keep_note, ".\n")
    return C.EXIT_OK
  end
  if opts.plan then
    local ctx <close> = context.new(desc, params, summary.state, run_dir, opts)
    io.stdout:write(string.format("Undo plan for run %s of %s (newest first; nothing is changed now):\n",
                                  run_dir, desc.name))
    local w = O.name_width(undo)
    for _, s in ipairs(undo) do
      io.stdout:write(log.redact(string.format("  undo %-" .. w .. "s  %s\n", s.name, O.describe_step(s, ctx))))
    end
    if #keep > 0 then io.stdout:write("Kept as they are (no undo): ", table.concat(keep, ", "), "\n") end
    return C.EXIT_OK
  end
  if not opts.yes then
    if not interactive then
      io.stderr:write("upkit: --undo changes what the run did: run again with --yes to confirm (nothing was changed)\n")
      return C.EXIT_USAGE
    end
    local answer = require("upkit.procedure.checks").ask(string.format(
      "Undo %d step(s) of %s, newest first: %s%s? Type 'undo' to continue: ", #undo, run_dir,
      table.concat(names(undo), ", "), keep_note))
    if answer ~= "undo" then io.stderr:write("upkit: not confirmed; nothing was changed\n") return C.EXIT_ABORT end
  end
  local journal <close> = J.open(run_dir)
  R.attach(journal, run_dir, opts.log_format)
  local ctx <close> = context.new(desc, params, summary.state, run_dir, opts)
  journal:write { event = "undo-start", procedure = desc.name, steps = names(undo) }
  if opts.log_format == "text" then
    io.stdout:write(string.format("Undoing %s\nrun folder: %s\n", desc.name, run_dir))
  end
  local results, code, result = {}, C.EXIT_OK, "undone"
  for _, name in ipairs(keep) do
    log.info("step '%s' has no undo; left as it is", name)
    results[#results + 1] = { step = name, result = "kept", note = "no undo" }
  end
  local call_step = require("upkit.procedure.run").call_step
  for _, s in ipairs(undo) do
    ctx.step, log.context.step = s.name, s.name
    ctx.before = summary.before[s.name]
    if opts.log_format == "text" then io.stdout:write(log.redact("undo " .. s.name .. ": " .. O.describe_step(s, ctx)), "\n") end
    local t0 = upkit.now()
    local ok, err = call_step(s.undo, ctx, s, opts)
    local secs = upkit.now() - t0
    if ok then
      journal:write { event = "step-undone", step = s.name, seconds = secs }
      results[#results + 1] = { step = s.name, result = "undone", seconds = secs }
    else
      journal:write { event = "undo-failed", step = s.name, error = { code = C.errcode(err), message = C.errmsg(err) } }
      results[#results + 1] = { step = s.name, result = "FAILED", seconds = secs, note = C.errmsg(err) }
      io.stderr:write(log.redact(string.format("upkit: undo of step '%s' failed: %s\nRun the undo again when the " ..
        "cause is fixed: upkit run %s --undo %s\n", s.name, C.errmsg(err), C.shell_quote(path), C.shell_quote(run_dir))))
      code, result = C.errcode(err) == "INTERRUPTED" and C.EXIT_INTERRUPTED or C.EXIT_FAIL, "undo failed"
      break
    end
  end
  ctx.step, log.context.step = nil, nil
  journal:write { event = "undo-finished", result = result }
  R.summary(desc, results, run_dir, result, opts.log_format)
  return code
end

return M
