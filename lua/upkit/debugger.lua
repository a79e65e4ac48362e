-- upkit.debugger: the REPL of `upkit run ... --debug` and `--step`.
--
--   debugger.attach(ctx, journal [, desc])         the engine, once per run
--   debugger.on_error(err, ctx, step, level) -> "retry" | "skip" | "abort" | nil
--   debugger.ask_step(step, ctx, describe) -> "yes" | "skip" | "continue" | "quit"
--
-- on_error runs inside the message handler of the failing step, before the
-- stack unwinds: the REPL it opens evaluates Lua in the failing frame, where
-- a name is a local of the frame, else an upvalue of its function, else
-- `ctx`, else a global (then the upkit modules, as in `upkit repl`).
-- Assigning to a local or an upvalue changes it in the frame. Frames are
-- kept by their height above the bottom of the stack, which does not change
-- while the REPL runs deeper in the same stack.
--
-- Every line typed goes to the run's log (level debug: the log file, not the
-- console); a change the line made to ctx.params or ctx.state is logged and
-- journalled (event "debug-change") with the names of what changed, secret
-- parameters' values redacted.
local upkit = require "upkit"
local log = require "upkit.log"
local pretty = require "upkit.pretty"
local repl = require "upkit.repl"

local M = {}

local PROMPT = "debug> "

local session = { ctx = nil, journal = nil, debug = false, secrets = {} }

-- Errors raised by `abort` at a breakpoint: on_error lets them through.
local aborts = setmetatable({}, { __mode = "k" })

local function say(...)
  io.stdout:write(log.redact(table.concat({ ... })), "\n")
  io.stdout:flush()
end

-- A copy of v with every string (keys too) redacted: secrets are hidden
-- before the journal encodes them, where an escaped quote or tab would
-- hide them from log.redact.
local function redacted(v, depth)
  depth = depth or 1
  if type(v) == "string" then return log.redact(v) end
  if type(v) ~= "table" or depth > 20 then return v end
  local c = {}
  for k, x in next, v do c[redacted(k, depth + 1)] = redacted(x, depth + 1) end
  return setmetatable(c, getmetatable(v))
end

local function record(rec)
  if session.journal then session.journal:write(redacted(rec)) end
end

---------------------------------------------------------------------------
-- Frames
---------------------------------------------------------------------------

-- The deepest stack level, counted from the caller of this function.
local function bottom()
  local lo, hi = 1, 2
  while debug.getinfo(hi, "S") do lo, hi = hi, hi * 2 end
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if debug.getinfo(mid, "S") then lo = mid else hi = mid end
  end
  return lo - 1
end

-- The level, counted from the caller of this function, of a frame.
local function level_of(frame)
  return bottom() - frame.height - 1
end

local engine_source

-- Frames kept on a deep stack (a runaway recursion): the innermost ones,
-- and the outermost ones above the engine's. Finding a frame by its level
-- costs as much as the level, so a deep stack is not walked level by level.
local INNER, OUTER, BELOW = 30, 10, 40

-- The Lua frames from the caller's level `from` outwards, up to the
-- procedure engine's own frames: { height, info } each. On a deep stack,
-- frames.gap = { after = index, levels = count } tells which were left out.
local function collect(from)
  if not engine_source then
    engine_source = debug.getinfo(require("upkit.procedure").main, "S").source
  end
  local deepest = bottom()
  local frames = {}
  local function add(level, info)
    if info.what ~= "C" then frames[#frames + 1] = { height = deepest - level, info = info } end
  end
  local level = from + 1
  while level <= deepest do
    local info = debug.getinfo(level, "Slnft")
    if info.source == engine_source then return frames end
    if #frames == INNER then break end
    add(level, info)
    level = level + 1
  end
  if level > deepest then return frames end
  -- From the bottom: past the engine's frames, the outermost of the rest.
  local low, seen = deepest, false
  while low > level and deepest - low < BELOW do
    local engine = debug.getinfo(low, "S").source == engine_source
    if seen and not engine and debug.getinfo(low, "S").what ~= "C" then break end
    seen = seen or engine
    low = low - 1
  end
  if not seen or deepest - low >= BELOW then return frames end
  local outer = {}
  local top = math.max(level, low - OUTER + 1)
  for l = low, top, -1 do outer[#outer + 1] = l end
  frames.gap = { after = #frames, levels = top - level }
  for i = #outer, 1, -1 do add(outer[i], debug.getinfo(outer[i], "Slnft")) end
  return frames
end

-- The locals of a frame, in order: { {name, index}... }, temporaries left out.
local function frame_locals(frame)
  local level = level_of(frame)
  local out = {}
  local i = 1
  while true do
    local name = debug.getlocal(level, i)
    if not name then break end
    if name:sub(1, 1) ~= "(" then out[#out + 1] = { name = name, index = i } end
    i = i + 1
  end
  return out
end

-- The local named `name` of a frame: its index (the innermost one), or nil.
local function find_local(frame, name)
  local found
  for _, l in ipairs(frame_locals(frame)) do
    if l.name == name then found = l.index end
  end
  return found
end

-- The upvalue named `name` of the frame's function: its index, or nil.
local function find_upvalue(frame, name)
  local func = frame.info.func
  local i = 1
  while true do
    local n = debug.getupvalue(func, i)
    if not n then return nil end
    if n == name then return i end
    i = i + 1
  end
end

local function upvalue_names(frame)
  local out = {}
  local i = 1
  while true do
    local n = debug.getupvalue(frame.info.func, i)
    if not n then return out end
    if n ~= "_ENV" and n ~= "" then out[#out + 1] = n end
    i = i + 1
  end
end

-- The globals a frame sees: its function's _ENV, else _G.
local function frame_globals(frame)
  if frame then
    local i = find_upvalue(frame, "_ENV")
    if i then
      local _, env = debug.getupvalue(frame.info.func, i)
      if type(env) == "table" then return env end
    end
  end
  return _G
end

local function frame_label(frame)
  local info = frame.info
  local what
  if info.namewhat ~= "" and info.name then what = info.namewhat .. " '" .. info.name .. "'"
  elseif info.what == "main" then what = "main chunk"
  else what = "function <" .. info.short_src .. ":" .. info.linedefined .. ">" end
  return string.format("%s:%d in %s%s", info.short_src, info.currentline, what,
                       info.istailcall and " (called by a tail call: its caller's frame is gone)" or "")
end

---------------------------------------------------------------------------
-- The REPL
---------------------------------------------------------------------------

local modules

-- The environment of a REPL in `frames` (possibly empty) at frames[cur.index].
local function frame_env(ctx, cur)
  modules = modules or repl.globals({})
  local function lookup(name)
    local frame = cur.frames[cur.index]
    if frame then
      local i = find_local(frame, name)
      if i then return select(2, debug.getlocal(level_of(frame), i)) end
      i = find_upvalue(frame, name)
      if i then return select(2, debug.getupvalue(frame.info.func, i)) end
    end
    if name == "ctx" then return ctx end
    local v = frame_globals(frame)[name]
    if v == nil then v = modules[name] end
    return v
  end
  return setmetatable({}, {
    __index = function(_, name) return lookup(name) end,
    __newindex = function(_, name, value)
      local frame = cur.frames[cur.index]
      if frame then
        local i = find_local(frame, name)
        if i then debug.setlocal(level_of(frame), i, value) return end
        i = find_upvalue(frame, name)
        if i then debug.setupvalue(frame.info.func, i, value) return end
      end
      frame_globals(frame)[name] = value
    end,
  })
end

-- Names to complete a bare word with: locals and upvalues of the frame,
-- ctx, globals and the upkit modules.
local function name_candidates(cur, word)
  local names = { ctx = true }
  local frame = cur.frames[cur.index]
  if frame then
    for _, l in ipairs(frame_locals(frame)) do names[l.name] = true end
    for _, n in ipairs(upvalue_names(frame)) do names[n] = true end
  end
  for k in pairs(frame_globals(frame)) do names[k] = true end
  for k in pairs(modules) do names[k] = true end
  local out = {}
  for k in pairs(names) do
    if type(k) == "string" and pretty.is_identifier(k) and k:sub(1, #word) == word then out[#out + 1] = k end
  end
  return out
end

local function text_of(err)
  if upkit.is_error(err) then return string.format("%s [%s]", tostring(err.message), tostring(err.code)) end
  return tostring(err)
end

-- A value for a `name = value` line: two levels deep, continuation lines
-- indented under the name.
local function show(v)
  return (pretty.format(v, { depth = 2, redact = log.redact }):gsub("\n", "\n  "))
end

-- Run a chunk's source in the REPL's session env; print its values,
-- secrets redacted before they are quoted.
local function evaluate(src, env)
  local f, lerr = load(src, "=stdin", "t", env)
  if not f then return false, lerr end
  local res = table.pack(pcall(f))
  if not res[1] then return false, log.redact(text_of(res[2])) end
  if res.n > 1 then
    local out = {}
    for i = 2, res.n do out[#out + 1] = pretty.format(res[i], { redact = log.redact }) end
    say(table.concat(out, "\t"))
  end
  return true
end

---------------------------------------------------------------------------
-- Recording what the operator typed and changed
---------------------------------------------------------------------------

-- A copy of a value to compare later: tables copied (cycles kept), the
-- rest as they are.
local function snapshot(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in next, v do c[k] = snapshot(x, seen) end
  return c
end

local function same(a, b, seen)
  if type(a) ~= "table" or type(b) ~= "table" then return rawequal(a, b) end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, x in next, a do
    if not same(x, rawget(b, k), seen) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end

-- Is parameter `name` a secret? Its type when the engine gave the
-- description; else a value the log already redacts.
local function is_secret(name, old)
  if session.secrets[name] ~= nil then return session.secrets[name] end
  return type(old) == "string" and log.redact(old) ~= old
end

-- A value as the journal can hold it: strings redacted, tables copied;
-- what JSON cannot hold (functions, handles, cycles) as its pretty text.
local function portable(v)
  local json = require "upkit.json"
  if v == nil then return json.null end
  local c = redacted(v)
  if pcall(json.encode, c) then return c end
  return pretty.format(v, { depth = 3, redact = log.redact })
end

--[[
debugger.changes(before, after [, secret]) -> list of
{ name = "params.x", section = "params", key = "x", value =, was = }:
the top-level keys of ctx.params and ctx.state (before and after are
{ params =, state = }) whose values differ, sorted by name. secret(key,
old) tells which parameters are secret: their value and was are "***".
]]
function M.changes(before, after, secret)
  local out = {}
  for _, section in ipairs { "params", "state" } do
    local a, b = before[section] or {}, after[section] or {}
    local keys = {}
    for k in next, a do keys[k] = true end
    for k in next, b do keys[k] = true end
    for k in pairs(keys) do
      local old, new = rawget(a, k), rawget(b, k)
      if not same(old, new) then
        local c = { name = section .. "." .. tostring(k), section = section, key = k, value = new, was = old }
        if section == "params" and (secret or is_secret)(k, old) then
          if type(new) == "string" then log.secret(new) end
          c.value, c.was = "***", "***"
        end
        out[#out + 1] = c
      end
    end
  end
  table.sort(out, function(x, y) return x.name < y.name end)
  return out
end

-- The state of ctx the next line is compared with.
local function take(ctx)
  return { params = snapshot(ctx and ctx.params or {}), state = snapshot(ctx and ctx.state or {}) }
end

-- After each line typed: log it (debug level: the log file), and log and
-- journal what it changed in ctx.params and ctx.state. `where` names the
-- prompt (the step, or the breakpoint).
local function recorder(ctx, where)
  local last = take(ctx)
  return function(text)
    local now = take(ctx)
    local changes = M.changes(last, now)
    last = now
    log.debug("debug> %s", (text:gsub("\n", "\n>> ")))
    if #changes == 0 then return end
    local rec = { event = "debug-change", step = where.step, at = where.at, changed = {} }
    local lines = {}
    for _, c in ipairs(changes) do
      rec.changed[#rec.changed + 1] = c.name
      rec[c.section] = rec[c.section] or {}
      rec[c.section][tostring(c.key)] = portable(c.value)
      lines[#lines + 1] = string.format("%s = %s (was %s)", c.name,
        pretty.format(c.value, { depth = 2, redact = log.redact }),
        pretty.format(c.was, { depth = 2, redact = log.redact }))
    end
    log.info("changed in the debugger: %s", table.concat(lines, "; "))
    record(rec)
  end
end

local function print_locals(cur)
  local frame = cur.frames[cur.index]
  if not frame then say("(no frame)") return end
  local level = level_of(frame)
  local lines = {}
  for _, l in ipairs(frame_locals(frame)) do
    local _, v = debug.getlocal(level, l.index)
    lines[#lines + 1] = "  " .. l.name .. " = " .. show(v)
  end
  if #lines == 0 then lines[1] = "  (no locals)" end
  table.insert(lines, 1, "locals of #" .. cur.index .. " " .. frame_label(frame) .. ":")
  local ups = upvalue_names(frame)
  if #ups > 0 then
    lines[#lines + 1] = "upvalues:"
    for _, n in ipairs(ups) do
      local _, v = debug.getupvalue(frame.info.func, find_upvalue(frame, n))
      lines[#lines + 1] = "  " .. n .. " = " .. show(v)
    end
  end
  say(table.concat(lines, "\n"))
end

local function print_where(cur)
  local lines = {}
  for i, frame in ipairs(cur.frames) do
    lines[#lines + 1] = string.format("%s #%d %s", i == cur.index and "->" or "  ", i, frame_label(frame))
    if cur.frames.gap and cur.frames.gap.after == i then
      lines[#lines + 1] = string.format("   ... (%d levels not shown)", cur.frames.gap.levels)
    end
  end
  if #lines == 0 then lines[1] = "(no frames)" end
  say(table.concat(lines, "\n"))
end

-- Commands to look at frames: where, up, down, locals.
local function frame_commands(cur)
  local function move(by)
    local to = cur.index + by
    if to < 1 then say("already at the innermost frame") return end
    if to > #cur.frames then say("already at the outermost frame") return end
    cur.index = to
    say("#", tostring(to), " ", frame_label(cur.frames[to]))
  end
  return {
    where = function() print_where(cur) end,
    up = function() move(1) end,
    down = function() move(-1) end,
    locals = function() print_locals(cur) end,
  }
end

-- Open the REPL; returns the value a command ended it with, or nil (Ctrl-D).
-- where = { step =, at = } names the prompt in the log and journal.
local function open_repl(ctx, cur, commands, help, where)
  local env = frame_env(ctx, cur)
  if #cur.frames > 0 then
    for name, fn in pairs(frame_commands(cur)) do commands[name] = fn end
  end
  commands.help = function() say(help) end
  return repl.loop {
    prompt = PROMPT,
    env = env,
    eval = evaluate,
    after = recorder(ctx, where),
    commands = commands,
    complete = function(_, word)
      if word:find("[.:]") then return {} end
      return name_candidates(cur, word)
    end,
  }
end

local FRAME_HELP = [[
  where            the stack, the current frame marked with ->
  up / down        move to the calling / the called frame
  locals           the locals and upvalues of the current frame
  help             this list
Anything else is Lua run in the current frame: a name is a local, an
upvalue, ctx or a global; assigning to a local or upvalue changes it.]]

local ERROR_HELP = [[
  retry            run the step again from its start, with the changes made
  skip             record the step as skipped by the operator and go on
  abort            stop here; the run can be continued with --resume
  Ctrl-D           leave: the step fails as it would without --debug
]] .. FRAME_HELP

local BREAK_HELP = [[
  continue         go on with the script (Ctrl-D does the same)
  abort            stop the run; it can be continued with --resume
]] .. FRAME_HELP

---------------------------------------------------------------------------
-- Entry points
---------------------------------------------------------------------------

-- A breakpoint: the REPL at the caller's `level` (counted from the caller).
local function breakpoint(level)
  local ctx = session.ctx
  local frames = collect(level + 1)
  local cur = { frames = frames, index = 1 }
  local at = frames[1] and (frames[1].info.short_src .. ":" .. frames[1].info.currentline) or "?"
  say("Breakpoint at ", at, ctx and ctx.step and (" in step '" .. ctx.step .. "'") or "",
      ". Type 'help' for the commands; 'continue' goes on.")
  local function decide(action)
    return function()
      record { event = "debug", action = action, step = ctx and ctx.step, at = at }
      return action
    end
  end
  local action = open_repl(ctx, cur, { continue = decide("continue"), abort = decide("abort") }, BREAK_HELP,
                           { step = ctx and ctx.step, at = at })
  if action == nil then decide("continue")() end
  if action == "abort" then
    local e = upkit.new_error("ABORTED", "aborted by the operator at the breakpoint at " .. at)
    aborts[e] = true
    error(e, 0)
  end
end

-- debugger.attach(ctx, journal [, desc]): this run's context and journal,
-- and the procedure's description (which parameters are secrets; without
-- it, a parameter whose value the log redacts is taken as one); with
-- --debug on a terminal, upkit.breakpoint() opens the REPL.
function M.attach(ctx, journal, desc)
  session.ctx, session.journal = ctx, journal
  session.secrets = {}
  for _, p in ipairs(type(desc) == "table" and type(desc.params) == "table" and desc.params or {}) do
    if type(p) == "table" and p.name then session.secrets[p.name] = p.type == "secret" end
  end
  session.debug = ctx.opts and ctx.opts.debug and upkit.isatty(0) or false
  if session.debug then
    upkit._breakpoint_hook = function(level)
      -- upkit.breakpoint's frame is gone when it tail-called this hook
      if debug.getinfo(1, "t").istailcall then level = level - 1 end
      breakpoint(level)
    end
  end
end

-- debugger.on_error(err, ctx, step, level): the REPL in the frame that
-- raised (level counted from the caller); returns the operator's decision.
function M.on_error(err, ctx, step, level)
  if not session.debug then return nil end
  if aborts[err] then return "abort" end
  local frames = collect(level + 1)
  local run_source = debug.getinfo(step.run, "S").source
  local cur = { frames = frames, index = 1 }
  for i, frame in ipairs(frames) do
    if frame.info.source == run_source then cur.index = i break end
  end
  say("\nStep '", step.name, "' failed: ", text_of(err))
  if frames[cur.index] then say("  at ", frame_label(frames[cur.index])) end
  say("Debug REPL in the failing frame: retry, skip or abort to go on; 'help' for more.")
  local function decide(action)
    return function()
      record { event = "debug", action = action, step = step.name,
               error = { code = upkit.is_error(err) and err.code or "LUA_ERROR",
                         message = tostring(upkit.is_error(err) and err.message or err) } }
      return action
    end
  end
  return open_repl(ctx, cur, { retry = decide("retry"), skip = decide("skip"), abort = decide("abort") },
                   ERROR_HELP, { step = step.name })
end

local ANSWERS = {
  y = "yes", yes = "yes", n = "skip", no = "skip", c = "continue", continue = "continue",
  r = "repl", repl = "repl", q = "quit", quit = "quit",
}

-- debugger.ask_step(step, ctx, describe): ask before a step (--step).
function M.ask_step(step, ctx, describe)
  local editor = require "upkit._repl"
  say("\nNext step '", step.name, "': ", describe)
  while true do
    io.stdout:flush()
    local line = editor.readline("[y]es / [n]o (skip) / [c]ontinue without asking / [r]epl / [q]uit? ")
    local answer
    if line == nil then answer = "quit"
    elseif line then answer = ANSWERS[line:lower():match("^%s*(.-)%s*$")] end
    if answer == "repl" then
      say("REPL before step '", step.name, "': ctx is the run's context; Ctrl-D or 'back' returns to the question.")
      open_repl(ctx, { frames = {}, index = 1 }, { back = function() return "back" end },
                "  back             return to the question (Ctrl-D does the same)\n" ..
                "Anything else is Lua: ctx, globals and the upkit modules are at hand.",
                { step = step.name, at = "--step" })
    elseif answer then
      record { event = "debug", action = answer, step = step.name, by = "--step" }
      return answer
    elseif line then
      say("Answer y, n, c, r or q.")
    end
  end
end

return M
