-- upkit.procedure: the procedure engine (its parts are in upkit/procedure/).
--
-- A procedure file returns a description:
--   return {
--     name = "backup", summary = "one line",
--     params = { { name = "server_url", type = "string", required = true, describe = "..." }, ... },
--     steps  = { { name = "master-key", describe = "...", run = fn, ... }, ... },
--     state_summary = fn(ctx) -> line or { lines },   -- said after a failure
--   }
-- Step fields (all but name and run optional):
--   run(ctx) -> state table [, failure]   state is journalled, merged into ctx.state;
--                                           a failure (text or error) fails the step
--   describe      text, or fn(ctx) -> text
--   check(ctx)    read-only precondition; false or an error fails it
--   needs         { programs, files, folders, urls, free = { { path, bytes } } } or fn(ctx) -> that
--   done(ctx)     true when the effect is already there: the step is skipped
--   before(ctx)   the prior state, journalled in step-started before run; ctx.before
--                 in run and undo (a resumed step keeps the first value recorded)
--   undo(ctx)     reverses run (--undo)
--   confirm       "question" or fn(ctx) -> phrase to type: asked once before the first change
--   changes       true: listed in that confirmation as a step that changes something
--   needs_state   { "key", ... } state keys it reads; --from refuses to skip their producer
--   provides      { "key", ... } state keys it records (names the producer in that refusal)
--   always        runs in its place, and after a failure too
--   on_failure    runs only after a failure (skipped on success)
-- Parts: common (exit codes, helpers), params, journal, context (ctx),
-- options (command line, help, plan/new), report (sinks, plan, summary),
-- checks (needs, checks, confirmation), run (main, the run loop), undo.
local C = require "upkit.procedure.common"
local P = require "upkit.procedure.params"
local J = require "upkit.procedure.journal"
local O = require "upkit.procedure.options"
local run = require "upkit.procedure.run"

local M = {
  commands = O.commands,
  EXIT_OK = C.EXIT_OK, EXIT_FAIL = C.EXIT_FAIL, EXIT_USAGE = C.EXIT_USAGE, EXIT_ABORT = C.EXIT_ABORT,
  EXIT_INTERRUPTED = C.EXIT_INTERRUPTED,
  shell_quote = C.shell_quote, errmsg = C.errmsg,
  validate_description = P.validate_description, env_name = P.env_name, load_config = P.load_config,
  resolve_params = P.resolve,
  read_journal = J.read, journal_summary = J.summary,
  parse_args = O.parse_args, load_procedure = O.load_procedure,
  latest_run = run.latest_run,
  main = run.main,
}

return M
