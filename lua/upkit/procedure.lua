-- upkit.procedure: the procedure engine.
--
-- A procedure file returns a description:
--   return {
--     name = "backup", summary = "one line",
--     params = { { name = "server_url", type = "string", required = true, describe = "..." }, ... },
--     steps  = { { name = "master-key", describe = "...", check = fn, done = fn, run = fn,
--                  undo = fn, confirm = "question" | fn(ctx) -> phrase }, ... },
--   }
-- The engine validates every parameter first, keeps a journal (JSON lines, fsync'd
-- per record) and a log in a run folder, resumes from the first unfinished step,
-- and exits 0 (success), 1 (a step failed), 2 (bad usage or parameters),
-- 3 (aborted by the operator).
local upkit = require "upkit"
local json = require "upkit.json"
local log = require "upkit.log"
local lfs = require "lfs"

local M = { commands = {} }

local EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ABORT = 0, 1, 2, 3
M.EXIT_OK, M.EXIT_FAIL, M.EXIT_USAGE, M.EXIT_ABORT = EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ABORT

local TYPES = { string = true, number = true, boolean = true, path = true, secret = true, choice = true }
local STEP_KEYS = { name = true, describe = true, run = true, check = true, done = true, undo = true,
                    confirm = true }

---------------------------------------------------------------------------
-- Small helpers
---------------------------------------------------------------------------

local function shell_quote(s)
  s = tostring(s)
  if s:match("^[%w%./_=:,@%+%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

local function fmt_seconds(s)
  if s < 60 then return string.format("%.1fs", s) end
  return string.format("%dm%02ds", math.floor(s / 60), math.floor(s % 60))
end

local function errmsg(err)
  if type(err) == "table" and (err.message ~= nil or err.code ~= nil) then
    if err.code == nil then return tostring(err.message) end
    return string.format("%s [%s]", tostring(err.message or "error"), tostring(err.code))
  end
  return tostring(err)
end
M.errmsg = errmsg

local function mkdirs(path)
  local acc = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    if lfs.attributes(acc, "mode") == nil then
      local ok, err = lfs.mkdir(acc)
      if not ok and lfs.attributes(acc, "mode") ~= "directory" then
        upkit.error("EIO", string.format("cannot create folder '%s': %s", acc, tostring(err)))
      end
    end
  end
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local d = f:read("a")
  f:close()
  return d
end

---------------------------------------------------------------------------
-- Describing and validating a procedure
---------------------------------------------------------------------------

-- Problems with the description itself (a programming error in the file).
function M.validate_description(desc)
  local problems = {}
  local function bad(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
  if type(desc.name) ~= "string" or desc.name == "" then bad("the procedure has no name") end
  if type(desc.steps) ~= "table" or #desc.steps == 0 then bad("the procedure has no steps") end
  local seen = {}
  for i, s in ipairs(desc.steps or {}) do
    local label = string.format("step %d", i)
    if type(s) ~= "table" then bad("%s is not a table", label) goto next end
    if type(s.name) ~= "string" or s.name == "" then bad("%s has no name", label)
    elseif seen[s.name] then bad("step name '%s' is used twice", s.name)
    else seen[s.name] = true; label = "step '" .. s.name .. "'" end
    if type(s.run) ~= "function" then bad("%s has no run function", label) end
    for _, f in ipairs { "check", "done", "undo" } do
      if s[f] ~= nil and type(s[f]) ~= "function" then bad("%s: %s must be a function", label, f) end
    end
    for k in pairs(s) do
      if not STEP_KEYS[k] then bad("%s: unknown field '%s'", label, tostring(k)) end
    end
    ::next::
  end
  local pseen = {}
  for i, p in ipairs(desc.params or {}) do
    if type(p) ~= "table" or type(p.name) ~= "string" then bad("parameter %d has no name", i)
    else
      if pseen[p.name] then bad("parameter '%s' is declared twice", p.name) end
      pseen[p.name] = true
      local t = p.type or "string"
      if not TYPES[t] then bad("parameter '%s' has unknown type '%s'", p.name, tostring(t)) end
      if t == "choice" and type(p.choices) ~= "table" then bad("parameter '%s' is a choice without choices", p.name) end
    end
  end
  return problems
end

local function env_name(p)
  return p.env or ("UPKIT_" .. p.name:upper():gsub("[^%w]", "_"))
end
M.env_name = env_name

local TRUE = { ["true"] = true, yes = true, ["1"] = true, on = true }
local FALSE = { ["false"] = true, no = true, ["0"] = true, off = true }

-- Convert a raw value to the parameter's type; returns value or nil, problem.
local function convert(p, raw)
  local t = p.type or "string"
  if t == "number" then
    local n = tonumber(raw)
    if n == nil then return nil, string.format("parameter '%s' must be a number, got '%s'", p.name, tostring(raw)) end
    return n
  elseif t == "boolean" then
    if type(raw) == "boolean" then return raw end
    local s = tostring(raw):lower()
    if TRUE[s] then return true elseif FALSE[s] then return false end
    return nil, string.format("parameter '%s' must be true or false, got '%s'", p.name, tostring(raw))
  elseif t == "choice" then
    for _, c in ipairs(p.choices) do if tostring(c) == tostring(raw) then return c end end
    return nil, string.format("parameter '%s' must be one of %s, got '%s'", p.name,
                              table.concat(p.choices, ", "), tostring(raw))
  else
    if type(raw) ~= "string" and type(raw) ~= "number" then
      return nil, string.format("parameter '%s' must be a string, got a %s", p.name, type(raw))
    end
    raw = tostring(raw)
    if raw == "" and p.required then return nil, string.format("parameter '%s' must not be empty", p.name) end
    return raw
  end
end

-- Load a config file: a Lua file returning a table (or setting globals), or JSON.
function M.load_config(path)
  local text, err = read_file(path)
  if not text then return nil, string.format("cannot read config file '%s': %s", path, err) end
  if path:match("%.json$") then
    local ok, v = pcall(json.decode, text)
    if not ok then return nil, string.format("config file '%s': %s", path, errmsg(v)) end
    return v
  end
  local env = setmetatable({}, { __index = _G })
  local chunk, lerr = load(text, "@" .. path, "t", env)
  if not chunk then return nil, string.format("config file %s", lerr) end
  local ok, ret = pcall(chunk)
  if not ok then return nil, string.format("config file '%s': %s", path, errmsg(ret)) end
  if type(ret) == "table" then return ret end
  local t = {}
  for k, v in pairs(env) do t[k] = v end
  return t
end

--[[
Resolve parameters. sources = { config = table?, sets = { name = string }, journal = table?,
getenv = function }. Returns params, problems, origins, warnings.
Precedence: --set, environment, config file, journal (on resume), default.
Secrets come only from the environment or from a file named by NAME_file.
]]
function M.resolve_params(desc, sources)
  local params, problems, origins, warnings = {}, {}, {}, {}
  local getenv = sources.getenv or os.getenv
  local config, sets, journal = sources.config or {}, sources.sets or {}, sources.journal or {}
  local known = {}
  for _, p in ipairs(desc.params or {}) do known[p.name] = p; known[p.name .. "_file"] = p end
  for k in pairs(sets) do
    if not known[k] then problems[#problems + 1] = string.format("--set %s: no such parameter", k) end
  end
  for k in pairs(config) do
    if type(k) == "string" and not known[k] then
      warnings[#warnings + 1] = string.format("config key '%s' is not a parameter of %s (ignored)", k, desc.name)
    end
  end
  local deferred = {}
  for _, p in ipairs(desc.params or {}) do
    local raw, origin
    local ev = getenv(env_name(p))
    if p.type == "secret" then
      if sets[p.name] ~= nil or config[p.name] ~= nil then
        problems[#problems + 1] = string.format(
          "secret '%s' must come from the environment (%s) or a file (%s_file), not the command line or config",
          p.name, env_name(p), p.name)
      end
      local file = sets[p.name .. "_file"] or config[p.name .. "_file"]
      if ev and ev ~= "" then raw, origin = ev, "environment " .. env_name(p)
      elseif file then
        local d, err = read_file(file)
        if not d then
          problems[#problems + 1] = string.format("secret '%s': cannot read '%s': %s", p.name, file, err)
        else raw, origin = d:gsub("[\r\n]+$", ""), "file " .. file end
      end
      if raw then log.secret(raw) end
    else
      if sets[p.name] ~= nil then raw, origin = sets[p.name], "--set"
      elseif ev ~= nil and ev ~= "" then raw, origin = ev, "environment " .. env_name(p)
      elseif config[p.name] ~= nil then raw, origin = config[p.name], "config"
      elseif journal[p.name] ~= nil then raw, origin = journal[p.name], "journal"
      end
    end
    if raw == nil then
      if type(p.default) == "function" then deferred[#deferred + 1] = p
      elseif p.default ~= nil then params[p.name], origins[p.name] = p.default, "default"
      elseif p.required then
        local how = p.type == "secret"
          and string.format("set %s or give %s_file", env_name(p), p.name)
          or string.format("set it in the config file, with --set %s=..., or in %s", p.name, env_name(p))
        problems[#problems + 1] = string.format("missing parameter '%s' (%s)", p.name, how)
      end
    else
      local v, problem = convert(p, raw)
      if problem then problems[#problems + 1] = problem
      else params[p.name], origins[p.name] = v, origin end
    end
  end
  for _, p in ipairs(deferred) do
    local ok, v = pcall(p.default, params)
    if not ok then problems[#problems + 1] = string.format("parameter '%s': default failed: %s", p.name, errmsg(v))
    else params[p.name], origins[p.name] = v, "default" end
  end
  for _, p in ipairs(desc.params or {}) do
    if p.validate and params[p.name] ~= nil then
      local ok, good, why = pcall(p.validate, params[p.name], params)
      if not ok then problems[#problems + 1] = string.format("parameter '%s': %s", p.name, errmsg(good))
      elseif not good then problems[#problems + 1] = string.format("parameter '%s': %s", p.name, why or "invalid value") end
    end
  end
  return params, problems, origins, warnings
end

-- Parameters safe to store and show: secrets left out.
local function public_params(desc, params)
  local out = {}
  for _, p in ipairs(desc.params or {}) do
    if p.type ~= "secret" and params[p.name] ~= nil then out[p.name] = params[p.name] end
  end
  return out
end

---------------------------------------------------------------------------
-- The journal
---------------------------------------------------------------------------

local Journal = {}
Journal.__index = Journal

function M.open_journal(path)
  local f, err = io.open(path, "a")
  if not f then upkit.error("EIO", string.format("cannot open journal '%s': %s", path, err)) end
  return setmetatable({ path = path, f = f }, Journal)
end

function Journal:write(rec)
  rec.time = rec.time or log.iso_now()
  local line = log.redact(json.encode(rec))
  self.f:write(line, "\n")
  upkit.fsync(self.f)
end

function Journal:close()
  if self.f then self.f:close() self.f = nil end
end

-- Read a journal: list of records; a torn last line (a killed run) is ignored.
function M.read_journal(path)
  local text = read_file(path)
  if not text then return nil, string.format("no journal at '%s'", path) end
  local recs = {}
  for line in text:gmatch("[^\n]+") do
    local ok, rec = pcall(json.decode, line)
    if ok and type(rec) == "table" then recs[#recs + 1] = rec end
  end
  return recs
end

-- What a journal says about a run: start record, finished steps, stored state.
function M.journal_summary(recs)
  local s = { start = nil, finished = {}, state = {}, status = "unknown", failed = nil }
  for _, r in ipairs(recs) do
    if r.event == "run-start" and not s.start then s.start = r
    elseif r.event == "step-done" then
      s.finished[r.step] = "done"
      for k, v in pairs(r.state or {}) do s.state[k] = v end
    elseif r.event == "step-skipped" and r.reason ~= "--skip" and r.reason ~= "--only" and r.reason ~= "--from" then
      s.finished[r.step] = "skipped"
    elseif r.event == "step-undone" then s.finished[r.step] = nil
    elseif r.event == "step-failed" then s.failed = r
    elseif r.event == "run-finished" then s.status = r.result
    end
  end
  return s
end

---------------------------------------------------------------------------
-- Output: console (text or JSON lines), log file
---------------------------------------------------------------------------

local function console_sink(format)
  if format == "json" then
    return function(rec)
      io.stdout:write(json.encode(rec), "\n")
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
  local f = io.open(path, "a")
  if not f then upkit.error("EIO", "cannot open log file '" .. path .. "'") end
  local sink = function(rec)
    f:write(rec.time, " ", rec.level:upper(), rec.step and (" [" .. rec.step .. "]") or "", " ", rec.msg, "\n")
    f:flush()
  end
  return sink, f
end

-- A run folder's journal, with the log file and the console as log sinks.
-- Returns the journal and the function that closes all three.
local function open_run_output(run_dir, format)
  local journal = M.open_journal(run_dir .. "/journal.jsonl")
  local fsink, logf = file_sink(run_dir .. "/log.txt")
  local csink = console_sink(format)
  log.add_sink(fsink)
  log.add_sink(csink)
  return journal, function()
    log.remove_sink(fsink)
    log.remove_sink(csink)
    logf:close()
    journal:close()
  end
end

---------------------------------------------------------------------------
-- Command-line options of a procedure run
---------------------------------------------------------------------------

local RUN_USAGE = [[
usage: upkit run NAME|FILE [OPTIONS]
       upkit plan NAME|FILE [OPTIONS]

options:
  --config FILE       parameter values (a Lua file returning a table, or JSON)
  --set NAME=VALUE    set one parameter (repeatable); secrets: --set NAME_file=PATH
  --resume [RUN]      continue a failed or killed run (default: the latest run)
  --undo [RUN]        run the undo of each finished step of a run, newest first
  --runs DIR          where run folders go (default: upkit-runs)
  --only STEP         run only these steps (repeatable, or comma-separated)
  --from STEP         start at this step
  --skip STEP         skip these steps (repeatable, or comma-separated)
  --yes               answer yes to confirmations of destructive steps
  --check             run only the read-only checks (a preflight); change nothing
  --plan              show the plan (same as 'upkit plan'); change nothing
  --log-format FMT    text (default) or json (one JSON object per line)
  --debug             open a REPL where a step fails (needs a terminal)
  --step              ask before each step (needs a terminal)
  --help              this help and the procedure's parameters

exit codes: 0 success, 1 a step failed, 2 bad usage or parameters, 3 aborted]]

local function split_list(v, into)
  for item in v:gmatch("[^,]+") do into[#into + 1] = item end
end

-- Parse procedure options; returns opts or nil, problem.
function M.parse_args(args)
  local o = { sets = {}, only = {}, skip = {}, log_format = "text" }
  local i = 1
  local function value(flag)
    local v = args[i + 1]
    if v == nil then return nil, string.format("%s needs a value", flag) end
    i = i + 1
    return v
  end
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    if flag and flag ~= "--set" then a = flag; table.insert(args, i + 1, inline) end
    local v, problem
    if a == "--help" or a == "-h" then o.help = true
    elseif a == "--config" then v, problem = value(a); o.config = v
    elseif a == "--set" then
      v, problem = value(a)
      if v then
        local k, val = v:match("^([%w_%-%.]+)=(.*)$")
        if not k then return nil, string.format("--set wants NAME=VALUE, got '%s'", v) end
        o.sets[k] = val
      end
    elseif a:match("^%-%-set=") then
      local k, val = a:match("^%-%-set=([%w_%-%.]+)=(.*)$")
      if not k then return nil, string.format("--set wants NAME=VALUE, got '%s'", a) end
      o.sets[k] = val
    elseif a == "--resume" or a == "--undo" then
      local key = a:sub(3)
      o[key] = true
      if args[i + 1] and not args[i + 1]:match("^%-%-") then o[key] = args[i + 1]; i = i + 1 end
    elseif a == "--runs" then v, problem = value(a); o.runs = v
    elseif a == "--only" then v, problem = value(a); if v then split_list(v, o.only) end
    elseif a == "--skip" then v, problem = value(a); if v then split_list(v, o.skip) end
    elseif a == "--from" then v, problem = value(a); o.from = v
    elseif a == "--yes" or a == "-y" then o.yes = true
    elseif a == "--check" then o.check = true
    elseif a == "--plan" then o.plan = true
    elseif a == "--debug" then o.debug = true
    elseif a == "--step" then o.step = true
    elseif a == "--log-format" then
      v, problem = value(a)
      if v and v ~= "text" and v ~= "json" then return nil, "--log-format must be text or json" end
      o.log_format = v or o.log_format
    else
      return nil, string.format("unknown option '%s'", a)
    end
    if problem then return nil, problem end
    i = i + 1
  end
  return o
end

local function procedure_help(desc, path)
  local lines = { string.format("%s: %s", desc.name, desc.summary or ""), "",
                  "file: " .. path, "", "parameters:" }
  for _, p in ipairs(desc.params or {}) do
    local t = p.type or "string"
    if t == "choice" then t = table.concat(p.choices, "|") end
    local dflt = ""
    if p.required then dflt = " (required)"
    elseif type(p.default) == "function" then dflt = " (default: derived)"
    elseif p.default ~= nil then dflt = " (default: " .. tostring(p.default) .. ")" end
    lines[#lines + 1] = string.format("  %-22s %-8s %s%s", p.name, t, p.describe or "", dflt)
    lines[#lines + 1] = string.format("  %-22s          env %s%s", "", env_name(p),
                                      p.type == "secret" and (", or --set " .. p.name .. "_file=PATH") or "")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "steps:"
  for i, s in ipairs(desc.steps) do
    local d = type(s.describe) == "string" and s.describe or ""
    lines[#lines + 1] = string.format("  %2d. %-24s %s%s", i, s.name, d, s.confirm and "  [asks to confirm]" or "")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = RUN_USAGE
  return table.concat(lines, "\n")
end

---------------------------------------------------------------------------
-- Runs
---------------------------------------------------------------------------

local function new_run_dir(runs, name)
  mkdirs(runs)
  local stamp = os.date("%Y%m%d-%H%M%S")
  local base = string.format("%s/%s-%s", runs, name, stamp)
  local dir, n = base, 1
  while lfs.attributes(dir, "mode") do n = n + 1; dir = base .. "-" .. n end
  local ok, err = lfs.mkdir(dir)
  if not ok then upkit.error("EIO", string.format("cannot create run folder '%s': %s", dir, tostring(err))) end
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

local function describe_step(step, ctx)
  if type(step.describe) == "function" then
    local ok, d = pcall(step.describe, ctx)
    return ok and tostring(d) or ("(describe failed: " .. errmsg(d) .. ")")
  end
  return step.describe or ""
end

local function make_ctx(desc, params, state, run_dir, opts)
  local ctx = { params = params, state = state, run_dir = run_dir, procedure = desc.name, opts = opts }
  ctx.log = function(fmt, ...) return log.info(fmt, ...) end
  ctx.info = ctx.log
  ctx.warn = function(fmt, ...) return log.warn(fmt, ...) end
  ctx.debug = function(fmt, ...) return log.debug(fmt, ...) end
  ctx.secret = function(v) return log.secret(v) end
  ctx.isatty = upkit.isatty(1)
  return ctx
end
M.make_ctx = make_ctx

-- Which steps the options select: set of names that run.
local function selected_steps(desc, opts)
  local sel, problems = {}, {}
  local names = {}
  for _, s in ipairs(desc.steps) do names[s.name] = true end
  for _, list in ipairs { opts.only, opts.skip, opts.from and { opts.from } or {} } do
    for _, n in ipairs(list) do
      if not names[n] then problems[#problems + 1] = string.format("no step named '%s'", n) end
    end
  end
  local started = opts.from == nil
  local only = {}
  for _, n in ipairs(opts.only) do only[n] = true end
  local skip = {}
  for _, n in ipairs(opts.skip) do skip[n] = true end
  for _, s in ipairs(desc.steps) do
    if s.name == opts.from then started = true end
    local why
    if not started then why = "--from"
    elseif next(only) and not only[s.name] then why = "--only"
    elseif skip[s.name] then why = "--skip" end
    sel[s.name] = why or true
  end
  return sel, problems
end

local function ask(question)
  io.stdout:write(question)
  io.stdout:flush()
  return io.stdin:read("l")
end

-- Ask for a destructive step's confirmation. Returns true to go on.
local function confirm_step(step, ctx, opts)
  if not step.confirm then return true end
  if opts.yes then log.info("confirmed by --yes") return true end
  local phrase, question
  if type(step.confirm) == "function" then
    phrase = tostring(step.confirm(ctx))
    question = string.format("Step '%s' is destructive. Type '%s' to continue: ", step.name, phrase)
  else
    phrase = "yes"
    question = string.format("%s Type 'yes' to continue: ", tostring(step.confirm))
  end
  local answer = ask(question)
  return answer ~= nil and answer:gsub("^%s+", ""):gsub("%s+$", "") == phrase
end

-- Run a step function under xpcall with the error handler (and debugger).
local function call_step(fn, ctx, step, opts)
  local handler = function(e)
    if type(e) == "table" and not upkit.is_error(e) then
      e = upkit.new_error(tostring(e.code or "LUA_ERROR"), tostring(e.message or errmsg(e)),
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
  return xpcall(fn, handler, ctx)
end

-- The summary table printed at the end of a run.
local function print_summary(desc, results, run_dir, result, format)
  if format == "json" then
    io.stdout:write(json.encode({ event = "summary", procedure = desc.name, run = run_dir, result = result,
                                  steps = results }), "\n")
    return
  end
  io.stdout:write(string.format("\nSummary of %s (run folder %s):\n", desc.name, run_dir))
  local w = 4
  for _, r in ipairs(results) do w = math.max(w, #r.step) end
  for _, r in ipairs(results) do
    io.stdout:write(string.format("  %-" .. w .. "s  %-8s %8s  %s\n", r.step, r.result,
                                  r.seconds and fmt_seconds(r.seconds) or "", r.note or ""))
  end
  io.stdout:write("Result: ", result, "\n")
  io.stdout:flush()
end

local function run_checks(desc, ctx, sel, quiet)
  local failures = {}
  for _, s in ipairs(desc.steps) do
    if s.check and sel[s.name] == true then
      log.context.step = s.name
      local ok, err = xpcall(s.check, function(e) return e end, ctx)
      log.context.step = nil
      local good = ok and err ~= false
      if not quiet then
        io.stdout:write(string.format("  check %-24s %s\n", s.name, good and "ok" or ("FAILED: " ..
          (ok and "check returned false" or log.redact(errmsg(err))))))
      end
      if not good then failures[#failures + 1] = { step = s.name, error = ok and "check returned false" or err } end
    end
  end
  return failures
end

--[[
main(desc, path, args [, mode]) -> exit code. mode = "plan" for 'upkit plan'.
]]
function M.main(desc, path, args, mode)
  local opts, problem = M.parse_args(args)
  if not opts then
    io.stderr:write("upkit: ", problem, "\nTry 'upkit run ", path, " --help'.\n")
    return EXIT_USAGE
  end
  local dproblems = M.validate_description(desc)
  if #dproblems > 0 then
    io.stderr:write("upkit: procedure file '", path, "' is not valid:\n")
    for _, p in ipairs(dproblems) do io.stderr:write("  - ", p, "\n") end
    return EXIT_USAGE
  end
  if opts.help then print(procedure_help(desc, path)) return EXIT_OK end
  if mode == "plan" then opts.plan = true end

  local interactive = upkit.isatty(0)
  if (opts.debug or opts.step) and not interactive then
    io.stderr:write("upkit: ", opts.debug and "--debug" or "--step",
                    " needs a terminal on standard input; none here, so the run did not start\n")
    return EXIT_USAGE
  end

  -- Resume (or undo): find the run and what it had done.
  local runs = opts.runs or "upkit-runs"
  local resume_dir, summary
  if opts.resume and opts.undo then
    io.stderr:write("upkit: --resume and --undo do not go together\n")
    return EXIT_USAGE
  end
  local which = opts.resume or opts.undo
  if which then
    local flag = opts.resume and "--resume" or "--undo"
    resume_dir = which == true and M.latest_run(runs, desc.name) or which
    if not resume_dir then
      io.stderr:write("upkit: ", flag, ": no earlier run of ", desc.name, " under ", runs, "\n")
      return EXIT_USAGE
    end
    local recs, err = M.read_journal(resume_dir .. "/journal.jsonl")
    if not recs then io.stderr:write("upkit: ", flag, ": ", err, "\n") return EXIT_USAGE end
    summary = M.journal_summary(recs)
    summary.records = recs
    if not summary.start or summary.start.procedure ~= desc.name then
      io.stderr:write("upkit: ", flag, ": '", resume_dir, "' is not a run of ", desc.name, "\n")
      return EXIT_USAGE
    end
    -- finished steps must stay where they were
    for i, name in ipairs(summary.start.steps or {}) do
      if summary.finished[name] then
        local now = desc.steps[i]
        if not now or now.name ~= name then
          io.stderr:write(string.format(
            "upkit: --resume refused: the procedure file changed: finished step %d was '%s', it is now %s.\n" ..
            "Restore the procedure file as it was, or start a new run.\n",
            i, name, now and ("'" .. now.name .. "'") or "gone"))
          return EXIT_USAGE
        end
      end
    end
    if summary.status == "success" and opts.resume then
      io.stdout:write("Run ", resume_dir, " already finished successfully; nothing to resume.\n")
      return EXIT_OK
    end
  end

  -- Parameters: all problems at once.
  local config = {}
  if opts.config then
    local c, err = M.load_config(opts.config)
    if not c then io.stderr:write("upkit: ", err, "\n") return EXIT_USAGE end
    config = c
  end
  local params, problems, origins, warnings = M.resolve_params(desc, {
    config = config, sets = opts.sets, journal = summary and summary.start.params })
  local sel, sproblems = selected_steps(desc, opts)
  for _, p in ipairs(sproblems) do problems[#problems + 1] = p end
  if #problems > 0 then
    io.stderr:write("upkit: cannot run ", desc.name, ": bad parameters or options (nothing was changed):\n")
    for _, p in ipairs(problems) do io.stderr:write("  - ", log.redact(p), "\n") end
    return EXIT_USAGE
  end
  for _, w in ipairs(warnings) do io.stderr:write("upkit: warning: ", w, "\n") end

  local state = summary and summary.state or {}
  if opts.undo then return M.undo_run(desc, path, opts, resume_dir, summary, params, interactive) end

  -- Plan: show, change nothing.
  if opts.plan then
    local ctx = make_ctx(desc, params, state, resume_dir, opts)
    io.stdout:write(string.format("Plan for %s: %s\n\nParameters:\n", desc.name, desc.summary or ""))
    for _, p in ipairs(desc.params or {}) do
      local v = params[p.name]
      local shown = p.type == "secret" and (v and "(set)" or "(not set)") or (v == nil and "(not set)" or tostring(v))
      io.stdout:write(string.format("  %-22s = %s  [%s]\n", p.name, shown, origins[p.name] or "unset"))
    end
    io.stdout:write("\nSteps:\n")
    for i, s in ipairs(desc.steps) do
      local note = ""
      if summary and summary.finished[s.name] then note = "  (finished in the run being resumed)"
      elseif sel[s.name] ~= true then note = "  (not selected: " .. sel[s.name] .. ")"
      elseif s.done then
        local ok, isdone = pcall(s.done, ctx)
        if ok and isdone then note = "  (would be skipped: already done)"
        elseif not ok then note = "  (cannot tell if done: " .. log.redact(errmsg(isdone)) .. ")" end
      end
      io.stdout:write(string.format("  %2d. %-24s %s%s%s\n", i, s.name, log.redact(describe_step(s, ctx)),
                                    s.confirm and "  [asks to confirm]" or "", note))
    end
    io.stdout:flush()
    return EXIT_OK
  end

  -- Destructive steps in a run that cannot ask.
  if not opts.yes and not interactive and not opts.check then
    for _, s in ipairs(desc.steps) do
      if s.confirm and sel[s.name] == true and not (summary and summary.finished[s.name]) then
        io.stderr:write(string.format("upkit: step '%s' is destructive and asks for confirmation, but standard " ..
          "input is not a terminal: run again with --yes to confirm it (nothing was changed)\n", s.name))
        return EXIT_USAGE
      end
    end
  end

  -- Preflight: --check runs every check and stops.
  if opts.check then
    local ctx = make_ctx(desc, params, state, nil, opts)
    io.stdout:write(string.format("Preflight checks of %s:\n", desc.name))
    local failures = run_checks(desc, ctx, sel, false)
    io.stdout:write(#failures == 0 and "All checks passed.\n" or string.format("%d check(s) failed.\n", #failures))
    return #failures == 0 and EXIT_OK or EXIT_FAIL
  end

  -- The run folder, journal and log.
  local run_dir = resume_dir or new_run_dir(runs, desc.name)
  local journal, cleanup = open_run_output(run_dir, opts.log_format)

  local ctx = make_ctx(desc, params, state, run_dir, opts)
  if opts.debug or opts.step then
    local ok, dbg = pcall(require, "upkit.debugger")
    if not ok then
      cleanup()
      io.stderr:write("upkit: ", opts.debug and "--debug" or "--step", ": ", errmsg(dbg), "\n")
      return EXIT_USAGE
    end
    opts.debugger = dbg
    dbg.attach(ctx, journal)
  end

  local step_names = {}
  for i, s in ipairs(desc.steps) do step_names[i] = s.name end
  if summary then
    journal:write { event = "resume", procedure = desc.name, params = public_params(desc, params) }
  else
    local digest = require("upkit.hash").file("sha256", path)
    journal:write { event = "run-start", procedure = desc.name, file = path, file_sha256 = digest,
                    steps = step_names, params = public_params(desc, params), pid = upkit.pid() }
  end
  if opts.log_format == "text" then
    io.stdout:write(string.format("%s %s: %s\nrun folder: %s\n", summary and "Resuming" or "Running",
                                  desc.name, desc.summary or "", run_dir))
  end

  local results = {}
  local function resume_hint()
    return string.format("upkit run %s --resume %s%s", shell_quote(path), shell_quote(run_dir),
                         opts.config and (" --config " .. shell_quote(opts.config)) or "")
  end

  local function finish(result, code)
    journal:write { event = "run-finished", result = result }
    local seen = {}
    for _, r in ipairs(results) do seen[r.step] = true end
    for _, st in ipairs(desc.steps) do
      if not seen[st.name] then results[#results + 1] = { step = st.name, result = "not run" } end
    end
    print_summary(desc, results, run_dir, result, opts.log_format)
    cleanup()
    return code
  end

  -- Checks of every step that will run, before the first change.
  local pending_sel = {}
  for _, s in ipairs(desc.steps) do
    pending_sel[s.name] = (summary and summary.finished[s.name]) and "finished" or sel[s.name]
  end
  local failures = run_checks(desc, ctx, pending_sel, true)
  if #failures > 0 then
    for _, f in ipairs(failures) do
      local msg = f.error == "check returned false" and f.error or errmsg(f.error)
      log.error("check of step '%s' failed: %s", f.step, msg)
      results[#results + 1] = { step = f.step, result = "check failed", note = log.redact(msg) }
      journal:write { event = "check-failed", step = f.step,
                      error = upkit.is_error(f.error) and { code = f.error.code, message = f.error.message }
                              or { message = tostring(f.error) } }
    end
    io.stderr:write("upkit: preflight checks failed; nothing was changed.\n")
    return finish("failed", EXIT_FAIL)
  end

  local ask_each = opts.step
  for i, s in ipairs(desc.steps) do
    local label = string.format("[%d/%d] %s", i, #desc.steps, s.name)
    ctx.step = s.name
    log.context.step = s.name
    if summary and summary.finished[s.name] then
      results[#results + 1] = { step = s.name, result = "finished", note = "in an earlier run" }
      goto continue
    end
    if sel[s.name] ~= true then
      journal:write { event = "step-skipped", step = s.name, reason = sel[s.name] }
      results[#results + 1] = { step = s.name, result = "skipped", note = sel[s.name] }
      goto continue
    end
    if ask_each then
      local choice = opts.debugger and opts.debugger.ask_step(s, ctx, describe_step(s, ctx))
      if choice == "skip" then
        journal:write { event = "step-skipped", step = s.name, reason = "operator" }
        results[#results + 1] = { step = s.name, result = "skipped", note = "by the operator" }
        goto continue
      elseif choice == "continue" then ask_each = false
      elseif choice == "quit" then
        journal:write { event = "aborted", step = s.name, by = "operator" }
        log.context.step = nil
        return finish("aborted", EXIT_ABORT)
      end
    end
    if s.done then
      local ok, isdone = pcall(s.done, ctx)
      if ok and isdone then
        journal:write { event = "step-skipped", step = s.name, reason = "done" }
        results[#results + 1] = { step = s.name, result = "skipped", note = "already done" }
        if opts.log_format == "text" then io.stdout:write(label, ": already done, skipped\n") end
        goto continue
      end
    end
    if opts.log_format == "text" then
      io.stdout:write(label, ": ", log.redact(describe_step(s, ctx)), "\n")
      io.stdout:flush()
    end
    if not confirm_step(s, ctx, opts) then
      journal:write { event = "aborted", step = s.name, by = "operator", reason = "not confirmed" }
      log.error("step '%s' was not confirmed: stopped before it", s.name)
      results[#results + 1] = { step = s.name, result = "aborted", note = "not confirmed" }
      log.context.step = nil
      return finish("aborted", EXIT_ABORT)
    end
    do
      journal:write { event = "step-start", step = s.name }
      log.debug("step '%s' started", s.name)
      local t0 = upkit.now()
      local ok, ret
      while true do
        ok, ret = call_step(s.run, ctx, s, opts)
        if ok or not (upkit.is_error(ret) and ret.decision == "retry") then break end
        journal:write { event = "step-retry", step = s.name, by = "operator" }
        log.info("retrying step '%s'", s.name)
      end
      local secs = upkit.now() - t0
      if ok then
        if type(ret) == "table" then
          for k, v in pairs(ret) do state[k] = v end
        end
        local stored = {}
        for k, v in pairs(type(ret) == "table" and ret or {}) do stored[k] = v end
        journal:write { event = "step-done", step = s.name, seconds = secs, state = stored }
        log.debug("step '%s' finished in %s", s.name, fmt_seconds(secs))
        results[#results + 1] = { step = s.name, result = "ok", seconds = secs }
        if opts.log_format == "text" then
          io.stdout:write(string.format("%s: ok (%s)\n", label, fmt_seconds(secs)))
        end
      else
        local err = ret
        local decision = upkit.is_error(err) and err.decision
        if decision == "skip" then
          journal:write { event = "step-skipped", step = s.name, reason = "operator", error = errmsg(err) }
          results[#results + 1] = { step = s.name, result = "skipped", seconds = secs, note = "by the operator" }
          goto continue
        end
        local code = upkit.is_error(err) and err.code or "LUA_ERROR"
        journal:write { event = "step-failed", step = s.name, seconds = secs,
                        error = { code = code, message = upkit.is_error(err) and err.message or tostring(err) } }
        if code == "INTERRUPTED" or decision == "abort" then
          log.error("step '%s' %s", s.name, code == "INTERRUPTED" and "was interrupted" or "aborted by the operator")
          results[#results + 1] = { step = s.name, result = "aborted", seconds = secs }
          io.stderr:write(string.format("upkit: stopped at step '%s'. To go on: %s\n", s.name, resume_hint()))
          log.context.step = nil
          return finish("aborted", EXIT_ABORT)
        end
        log.error("step '%s' failed: %s", s.name, errmsg(err))
        if os.getenv("UPKIT_TRACEBACK") and upkit.is_error(err) and err.traceback then
          log.error("%s", err.traceback)
        end
        results[#results + 1] = { step = s.name, result = "FAILED", seconds = secs, note = log.redact(errmsg(err)) }
        io.stderr:write(string.format("upkit: step '%s' of %s failed: %s\nTo resume from this step after fixing the cause: %s\n",
                                      s.name, desc.name, log.redact(errmsg(err)), resume_hint()))
        log.context.step = nil
        return finish("failed", EXIT_FAIL)
      end
    end
    ::continue::
    log.context.step = nil
  end
  return finish("success", EXIT_OK)
end

--[[
Undo a run: the undo function of each finished step, newest first. Steps
without one are left as they are (and said so). Each undo is journalled
(step-undone), so an interrupted undo can be run again.
]]
function M.undo_run(desc, path, opts, run_dir, summary, params, interactive)
  local order = {}
  for _, r in ipairs(summary.records) do
    if r.event == "step-done" and summary.finished[r.step] then order[#order + 1] = r.step end
  end
  local by_name = {}
  for _, s in ipairs(desc.steps) do by_name[s.name] = s end
  local undoable = 0
  for _, name in ipairs(order) do if by_name[name] and by_name[name].undo then undoable = undoable + 1 end end
  if undoable == 0 then
    io.stdout:write("Run ", run_dir, " has no finished step to undo",
                    #order > 0 and (" (without an undo: " .. table.concat(order, ", ") .. ")") or "", ".\n")
    return EXIT_OK
  end
  if not opts.yes then
    if not interactive then
      io.stderr:write("upkit: --undo changes what the run did: run again with --yes to confirm (nothing was changed)\n")
      return EXIT_USAGE
    end
    local answer = ask(string.format("Undo %d step(s) of %s (%s)? Type 'undo' to continue: ", #order, run_dir,
                                     table.concat(order, ", ")))
    if answer ~= "undo" then io.stderr:write("upkit: not confirmed; nothing was changed\n") return EXIT_ABORT end
  end
  local journal, cleanup = open_run_output(run_dir, opts.log_format)
  local ctx = make_ctx(desc, params, summary.state, run_dir, opts)
  journal:write { event = "undo-start", procedure = desc.name }
  if opts.log_format == "text" then
    io.stdout:write(string.format("Undoing %s\nrun folder: %s\n", desc.name, run_dir))
  end
  local results, code, result = {}, EXIT_OK, "undone"
  for i = #order, 1, -1 do
    local name = order[i]
    local s = by_name[name]
    ctx.step, log.context.step = name, name
    if not (s and s.undo) then
      log.info("step '%s' has no undo; left as it is", name)
      results[#results + 1] = { step = name, result = "kept", note = "no undo" }
    else
      if opts.log_format == "text" then io.stdout:write("undo ", name, ": ", describe_step(s, ctx), "\n") end
      local t0 = upkit.now()
      local ok, err = call_step(s.undo, ctx, s, opts)
      local secs = upkit.now() - t0
      if ok then
        journal:write { event = "step-undone", step = name, seconds = secs }
        results[#results + 1] = { step = name, result = "undone", seconds = secs }
      else
        journal:write { event = "undo-failed", step = name, error = { code = err.code, message = err.message } }
        results[#results + 1] = { step = name, result = "FAILED", seconds = secs, note = log.redact(errmsg(err)) }
        io.stderr:write(string.format("upkit: undo of step '%s' failed: %s\nRun the undo again when the cause is " ..
          "fixed: upkit run %s --undo %s\n", name, log.redact(errmsg(err)), shell_quote(path), shell_quote(run_dir)))
        code, result = EXIT_FAIL, "undo failed"
        break
      end
    end
  end
  log.context.step = nil
  journal:write { event = "undo-finished", result = result }
  print_summary(desc, results, run_dir, result, opts.log_format)
  cleanup()
  return code
end

---------------------------------------------------------------------------
-- Commands: plan, new
---------------------------------------------------------------------------

local function load_procedure(name)
  local cli = require "upkit.cli"
  local path, tried = cli.find_script(name)
  if not path then
    return nil, string.format("no procedure '%s' (tried %s)", name, table.concat(tried, ", "))
  end
  local chunk, lerr = loadfile(path)
  if not chunk then return nil, lerr end
  local ok, desc = pcall(chunk)
  if not ok then return nil, errmsg(desc) end
  if type(desc) ~= "table" or type(desc.steps) ~= "table" then
    return nil, string.format("'%s' is a script, not a procedure (it returns no steps)", path)
  end
  return desc, path
end
M.load_procedure = load_procedure

function M.commands.plan(args)
  local name = args[1]
  if not name or name == "--help" or name == "-h" then
    print(require("upkit.cli").help.plan .. "\n\n" .. RUN_USAGE)
    return name and EXIT_OK or EXIT_USAGE
  end
  local desc, path = load_procedure(name)
  if not desc then io.stderr:write("upkit: plan: ", path, "\n") return EXIT_USAGE end
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  return M.main(desc, path, rest, "plan")
end

local STARTER = [=[
-- %s: a procedure of your own. Run it with:
--   upkit plan ./%s.lua --set greeting=hello     (shows the steps, changes nothing)
--   upkit run ./%s.lua --set greeting=hello      (runs it; a run folder keeps the journal and log)
--   upkit run ./%s.lua --resume                  (continues the last failed run)
-- Every step has run(ctx); it may also have check (read-only precondition, run
-- before anything changes), done (already done? then it is skipped), undo, confirm.
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
    return name and EXIT_OK or EXIT_USAGE
  end
  if not name:match("^[%w_%-]+$") then
    io.stderr:write("upkit: new: a procedure name uses letters, digits, '-' and '_' only: '", name, "'\n")
    return EXIT_USAGE
  end
  local dir = "."
  local i = 2
  while args[i] do
    if args[i] == "--dir" and args[i + 1] then dir = args[i + 1]; i = i + 2
    else io.stderr:write("upkit: new: unknown option '", args[i], "'\n") return EXIT_USAGE end
  end
  local path = dir .. "/" .. name .. ".lua"
  if lfs.attributes(path) then
    io.stderr:write("upkit: new: '", path, "' exists already; not overwriting it\n")
    return EXIT_FAIL
  end
  local f, err = io.open(path, "w")
  if not f then io.stderr:write("upkit: new: ", err, "\n") return EXIT_FAIL end
  f:write(string.format(STARTER, name, name, name, name, name))
  f:close()
  io.stdout:write("wrote ", path, "\n")
  return EXIT_OK
end

return M
