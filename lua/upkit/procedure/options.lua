-- upkit.procedure.options: the command line of a procedure run (parse_args,
-- --help), and the commands `upkit plan` and `upkit new`.
local lfs = require "lfs"
local C = require "upkit.procedure.common"
local P = require "upkit.procedure.params"

local M = { commands = {} }

M.RUN_USAGE = [[
usage: upkit run NAME|FILE [OPTIONS]
       upkit plan NAME|FILE [OPTIONS]

options:
  --config FILE       parameter values (a Lua file returning a table, or JSON)
  --set NAME=VALUE    set one parameter (repeatable); secrets: --set NAME_file=PATH
  --resume [RUN]      continue a failed or killed run (default: the latest run)
                      with the parameters it started with
  --allow-change LIST on --resume, parameters (comma-separated) that may differ
                      from the run's start (recorded in the journal)
  --undo [RUN]        run the undo of each finished step of a run, newest first
                      (with --plan: show what would be undone)
  --runs DIR          where run folders go (default: upkit-runs)
  --only STEP         run only these steps (repeatable, or comma-separated);
                      with --resume, reruns them with the run's recorded state
  --from STEP         start at this step (with --resume: rerun from it)
  --skip STEP         skip these steps (repeatable, or comma-separated)
  --yes               answer yes to the confirmation before the first change
  --check             a dry run: every step's checks and needs, one line each;
                      change nothing
  --plan              show the plan (same as 'upkit plan'); change nothing
  --log-format FMT    text (default) or json (one JSON object per line)
  --debug             open a REPL where a step fails (needs a terminal)
  --step              ask before each step (needs a terminal)
  --help              this help and the procedure's parameters

exit codes: 0 success, 1 a step failed, 2 bad usage or parameters (nothing ran),
3 aborted by the operator, 130 interrupted (Ctrl-C)]]

local function split_list(v, into)
  for item in v:gmatch("[^,]+") do into[#into + 1] = item end
end

local VALUED = { ["--config"] = "config", ["--runs"] = "runs", ["--from"] = "from", ["--log-format"] = "log_format" }
local LISTS = { ["--only"] = "only", ["--skip"] = "skip", ["--allow-change"] = "allow_change" }
local FLAGS = { ["--help"] = "help", ["-h"] = "help", ["--yes"] = "yes", ["-y"] = "yes", ["--check"] = "check",
                ["--plan"] = "plan", ["--debug"] = "debug", ["--step"] = "step" }

--[[
parse_args(args) -> opts, or nil, problem. args is not changed. opts.argv
keeps the --config and --set arguments as given (for the resume hint).
]]
function M.parse_args(args)
  local a = {}
  for i = 1, #args do
    local flag, inline = tostring(args[i]):match("^(%-%-[%w%-]+)=(.*)$")
    if flag then a[#a + 1] = flag; a[#a + 1] = inline else a[#a + 1] = tostring(args[i]) end
  end
  local o = { sets = {}, set_order = {}, only = {}, skip = {}, allow_change = {}, log_format = "text" }
  local i = 1
  while i <= #a do
    local arg, nxt = a[i], a[i + 1]
    if FLAGS[arg] then o[FLAGS[arg]] = true
    elseif VALUED[arg] or LISTS[arg] or arg == "--set" then
      if nxt == nil then return nil, string.format("%s needs a value", arg) end
      i = i + 1
      if arg == "--set" then
        local k, val = nxt:match("^([%w_%-%.]+)=(.*)$")
        if not k then return nil, string.format("--set wants NAME=VALUE, got '%s'", nxt) end
        if o.sets[k] == nil then o.set_order[#o.set_order + 1] = k end
        o.sets[k] = val
      elseif LISTS[arg] then split_list(nxt, o[LISTS[arg]])
      else o[VALUED[arg]] = nxt end
    elseif arg == "--resume" or arg == "--undo" then
      local key = arg:sub(3)
      o[key] = true
      if nxt and not nxt:match("^%-") then o[key] = nxt; i = i + 1 end
    else
      return nil, string.format("unknown option '%s'", arg)
    end
    i = i + 1
  end
  if o.log_format ~= "text" and o.log_format ~= "json" then return nil, "--log-format must be text or json" end
  return o
end

-- A step's description: its text, or what its describe function gives.
function M.describe_step(step, ctx)
  if type(step.describe) == "function" then
    local ok, d = pcall(step.describe, ctx)
    return ok and tostring(d) or ("(describe failed: " .. C.errmsg(d) .. ")")
  end
  return step.describe or ""
end

-- The width of the step-name column: the longest name.
function M.name_width(steps, min)
  local w = min or 4
  for _, s in ipairs(steps) do w = math.max(w, #s.name) end
  return w
end

-- Marks after a step's description in --help and the plan.
function M.step_marks(s)
  local marks = {}
  if s.confirm then marks[#marks + 1] = "asks to confirm" elseif s.changes then marks[#marks + 1] = "changes" end
  if s.undo then marks[#marks + 1] = "undo" end
  if s.always then marks[#marks + 1] = "always runs" end
  if s.on_failure then marks[#marks + 1] = "runs on failure" end
  return #marks > 0 and ("  [" .. table.concat(marks, ", ") .. "]") or ""
end

function M.procedure_help(desc, path)
  local lines = { string.format("%s: %s", desc.name, desc.summary or ""), "",
                  "file: " .. path, "", "parameters:" }
  local pw = 22
  for _, p in ipairs(desc.params or {}) do pw = math.max(pw, #p.name) end
  for _, p in ipairs(desc.params or {}) do
    local t = p.type or "string"
    if t == "choice" then t = table.concat(p.choices, "|") end
    local dflt = ""
    if p.required then dflt = " (required)"
    elseif type(p.default) == "function" then dflt = " (default: derived)"
    elseif p.default ~= nil then dflt = " (default: " .. tostring(p.default) .. ")" end
    lines[#lines + 1] = string.format("  %-" .. pw .. "s %-8s %s%s", p.name, t, p.describe or "", dflt)
    lines[#lines + 1] = string.format("  %-" .. pw .. "s          env %s%s", "", P.env_name(p),
                                      p.type == "secret" and (", or --set " .. p.name .. "_file=PATH") or "")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "steps:"
  local w = M.name_width(desc.steps, 12)
  -- a describe function sees the defaults (no run state yet)
  local defaults = {}
  for _, p in ipairs(desc.params or {}) do
    if type(p.default) ~= "function" then defaults[p.name] = p.default end
  end
  local ctx = { params = defaults, state = {}, procedure = desc.name }
  for i, s in ipairs(desc.steps) do
    local d = type(s.describe) == "string" and s.describe
    if type(s.describe) == "function" then
      local ok, got = pcall(s.describe, ctx)
      d = ok and type(got) == "string" and got ~= "" and got or "(described when it runs)"
    end
    d = d or "(no description)"
    lines[#lines + 1] = string.format("  %2d. %-" .. w .. "s  %s%s", i, s.name, d, M.step_marks(s))
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = M.RUN_USAGE
  return table.concat(lines, "\n")
end

---------------------------------------------------------------------------
-- Commands: plan, new
---------------------------------------------------------------------------

function M.load_procedure(name)
  local cli = require "upkit.cli"
  local path, tried = cli.find_script(name)
  if not path then
    return nil, string.format("no procedure '%s' (tried %s)", name, table.concat(tried, ", "))
  end
  local chunk, lerr = loadfile(path)
  if not chunk then return nil, lerr end
  local ok, desc = pcall(chunk)
  if not ok then return nil, C.errmsg(desc) end
  if type(desc) ~= "table" or type(desc.steps) ~= "table" then
    return nil, string.format("'%s' is a script, not a procedure (it returns no steps)", path)
  end
  return desc, path
end

function M.commands.plan(args)
  local name = args[1]
  if not name or name == "--help" or name == "-h" then
    print(require("upkit.cli").help.plan .. "\n\n" .. M.RUN_USAGE)
    return name and C.EXIT_OK or C.EXIT_USAGE
  end
  local desc, path = M.load_procedure(name)
  if not desc then io.stderr:write("upkit: plan: ", path, "\n") return C.EXIT_USAGE end
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  return require("upkit.procedure").main(desc, path, rest, "plan")
end

M.STARTER = [=[
-- %s: a procedure of your own. Run it with:
--   upkit plan ./%s.lua --set greeting=hello     (shows the steps, changes nothing)
--   upkit run ./%s.lua --set greeting=hello      (runs it; a run folder keeps the journal and log)
--   upkit run ./%s.lua --resume                  (continues the last failed run)
-- Every step has run(ctx); it may also have check (read-only precondition, run
-- before anything changes), needs (programs, files, urls, free space), done
-- (already done? then it is skipped), before (the state before the change,
-- journalled first), undo, confirm (asked once before the first change),
-- always / on_failure (cleanup steps). README's "Writing a procedure" has them all.
-- ctx.params holds parameters, ctx.state the values earlier steps returned,
-- ctx.log(...) writes to the console and the run's log, ctx.run_dir is the run folder.
local fs = require "upkit.fs"

return {
  name = "%s",
  summary = "Describe in one line what this procedure does",
  params = {
    { name = "greeting", type = "string", required = true, describe = "what to write" },
    { name = "out_dir", type = "path", default = "out", describe = "where to write it" },
    -- { name = "api_key", type = "secret", describe = "read from UPKIT_API_KEY or --set api_key_file=PATH" },
    -- { name = "mode", type = "choice", choices = { "fast", "safe" }, default = "safe" },
  },
  steps = {
    {
      name = "prepare",
      describe = "create the output folder",
      check = function(ctx) return ctx.params.greeting ~= "" end,
      done = function(ctx) return fs.exists(ctx.params.out_dir) end,
      run = function(ctx) fs.mkdirs(ctx.params.out_dir) end,
    },
    {
      name = "write",
      describe = "write the greeting",
      run = function(ctx)
        local file = ctx.params.out_dir .. "/greeting.txt"
        fs.write(file, ctx.params.greeting .. "\n")
        ctx.log("wrote %%s", file)
        return { file = file }   -- stored in the journal; later steps read ctx.state.file
      end,
      undo = function(ctx) fs.remove(ctx.state.file) end,
    },
  },
}
]=]

function M.commands.new(args)
  local name = args[1]
  if not name or name == "--help" or name == "-h" then
    print(require("upkit.cli").help.new)
    return name and C.EXIT_OK or C.EXIT_USAGE
  end
  if not name:match("^[%w_%-]+$") then
    io.stderr:write("upkit: new: a procedure name uses letters, digits, '-' and '_' only: '", name, "'\n")
    return C.EXIT_USAGE
  end
  local dir = "."
  local i = 2
  while args[i] do
    if args[i] == "--dir" and args[i + 1] then dir = args[i + 1]; i = i + 2
    else io.stderr:write("upkit: new: unknown option '", args[i], "'\n") return C.EXIT_USAGE end
  end
  local path = dir .. "/" .. name .. ".lua"
  if lfs.attributes(path) then
    io.stderr:write("upkit: new: '", path, "' exists already; not overwriting it\n")
    return C.EXIT_FAIL
  end
  local ok, err = pcall(require("upkit.fs").write, path, string.format(M.STARTER, name, name, name, name, name),
                        { mode = "0644" })
  if not ok then io.stderr:write("upkit: new: ", C.errmsg(err), "\n") return C.EXIT_FAIL end
  io.stdout:write("wrote ", path, "\n")
  return C.EXIT_OK
end

return M
