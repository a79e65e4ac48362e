-- upkit.repl: the interactive Lua of `upkit repl`, reusable by the debugger.
--
--   repl.main() -> exit code                    `upkit repl`
--   repl.loop(opts) -> result, failure          the read-eval-print loop
--   repl.complete(word, env [, extra, line, commands]) -> sorted candidates
--   repl.globals(env) -> env                    the upkit modules as globals
--
-- Behaviour follows Lua 5.4's lua.c: a line is tried as `return <line>`
-- first, then as a statement; while the chunk is incomplete (the error ends
-- in "<eof>") more lines are read with the prompt ">> ". Values are shown
-- with upkit.pretty. Ctrl-C cancels the line being typed or interrupts the
-- running chunk; Ctrl-D on an empty line ends the loop.
local upkit = require "upkit"
local pretty = require "upkit.pretty"

local M = {}

local CHUNKNAME = "=stdin"
local EOFMARK = "<eof>"

M.keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do M.keywords[#M.keywords + 1] = w end

local is_identifier = pretty.is_identifier

-- Index a value, honouring metamethods, without letting an error escape.
local function index(v, k)
  local ok, r = pcall(function() return v[k] end)
  if ok then return r end
  return nil
end

-- Identifier keys of a value: its own keys when it is a table, then those
-- of the tables its metatables' __index point to (methods of handles and
-- strings). With methods_only, only keys whose value is a function.
local function field_names(v, methods_only, names)
  local seen = {}
  local function add(t)
    for k, val in next, t do
      if is_identifier(k) and (not methods_only or type(val) == "function") then names[k] = true end
    end
  end
  if type(v) == "table" then add(v); seen[v] = true end
  local mt = getmetatable(v)
  for _ = 1, 10 do
    if type(mt) ~= "table" then break end
    local idx = rawget(mt, "__index")
    if type(idx) ~= "table" or seen[idx] then break end
    seen[idx] = true
    add(idx)
    mt = getmetatable(idx)
  end
  return names
end

-- repl.complete(word, env [, extra, line, commands]) -> sorted candidates
-- that replace word: globals of env, keywords and command names for a bare
-- name; fields for a.b.c; methods for h:m. extra(line, word) may add more.
function M.complete(word, env, extra, line, commands)
  local names = {}
  local base, sep, prefix = word:match("^(.*)([.:])([%w_]*)$")
  if base then
    local value
    local first = true
    for part in (base .. "."):gmatch("(.-)%.") do
      if not is_identifier(part) then return {} end
      if first then value = index(env, part); first = false
      else value = index(value, part) end
      if value == nil then break end
    end
    if value ~= nil then field_names(value, sep == ":", names) end
  else
    prefix = word
    field_names(env, false, names)
    for _, k in ipairs(M.keywords) do names[k] = true end
    for k in pairs(commands or {}) do names[k] = true end
  end
  local out, seen = {}, {}
  for k in pairs(names) do
    if k:sub(1, #prefix) == prefix then
      local c = base and (base .. sep .. k) or k
      out[#out + 1] = c
      seen[c] = true
    end
  end
  if extra then
    local ok, more = pcall(extra, line or word, word)
    if ok and type(more) == "table" then
      for _, c in ipairs(more) do
        if type(c) == "string" and not seen[c] and c:sub(1, #word) == word then
          out[#out + 1] = c
          seen[c] = true
        end
      end
    end
  end
  table.sort(out)
  return out
end

-- repl.globals(env): put the upkit modules into env (default _G) as fs,
-- proc, sql, http, hash, json, lfs and upkit. A module that is not part of
-- this build is left out; one that fails to load is reported.
function M.globals(env)
  env = env or _G
  for _, name in ipairs({ "fs", "proc", "sql", "http", "hash", "json" }) do
    local modname = "upkit." .. name
    local ok, mod = pcall(require, modname)
    if ok then
      env[name] = mod
    elseif not tostring(mod):find("module '" .. modname .. "' not found", 1, true) then
      io.stderr:write("upkit: repl: ", modname, " not loaded: ", tostring(mod):match("^[^\n]*"), "\n")
    end
  end
  env.lfs = require "lfs"
  env.upkit = upkit
  return env
end

-- The name of a function found in a loaded module ("string.format", or
-- "f" for a global), as lauxlib's traceback names functions.
local function global_name(fn)
  for k, v in next, _G do
    if rawequal(v, fn) and type(k) == "string" then return k end
  end
  local names = {}
  for modname in pairs(package.loaded) do
    if type(modname) == "string" then names[#names + 1] = modname end
  end
  table.sort(names)
  for _, modname in ipairs(names) do
    local mod = package.loaded[modname]
    if type(mod) == "table" then
      for k, v in next, mod do
        if rawequal(v, fn) and type(k) == "string" then return modname .. "." .. k end
      end
    end
  end
  return nil
end

-- The number of the caller's stack levels from its level `from` down, by
-- binary search: a deep stack after an overflow is not walked level by level.
local function levels(from)
  local lo, hi = from + 1, from + 2  -- here, the caller's level n is n + 1
  while debug.getinfo(hi, "l") do lo, hi = hi, hi * 2 end
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if debug.getinfo(mid, "l") then lo = mid else hi = mid end
  end
  return lo - from
end

-- One line of a traceback for the caller's level.
local function frame_line(level)
  local info = debug.getinfo(level + 1, "Slntf")
  local gname = global_name(info.func)
  local where = info.short_src .. ":" .. (info.currentline > 0 and (info.currentline .. ":") or "")
  local what
  if gname then what = "function '" .. gname .. "'"
  elseif info.namewhat ~= "" then what = info.namewhat .. " '" .. info.name .. "'"
  elseif info.what == "main" then what = "main chunk"
  elseif info.what == "C" then what = "?"
  else what = "function <" .. info.short_src .. ":" .. info.linedefined .. ">" end
  local line = "\t" .. where .. " in " .. what
  if info.istailcall then line = line .. "\n\t(...tail calls...)" end
  return line
end

-- The traceback of a chunk's frames, from the frame that raised to the
-- chunk's main function, leaving out the REPL's own frames, and the middle
-- of a deep stack as lauxlib does. base is the stack depth of the caller of
-- xpcall.
local function chunk_traceback(msg, base)
  -- level 1 is this function, 2 the message handler, 3 the raising frame
  local last = levels(1) - base - 1
  local lines = { msg, "stack traceback:" }
  local skip_from, skip_to = math.huge, 0
  if last - 3 + 1 > 21 then skip_from, skip_to = 3 + 10, last - 11 end
  for level = 3, last do
    if level == skip_from then
      lines[#lines + 1] = string.format("\t...\t(skipping %d levels)", skip_to - skip_from + 1)
    elseif level < skip_from or level > skip_to then
      lines[#lines + 1] = frame_line(level)
    end
  end
  return table.concat(lines, "\n")
end

-- Run f under xpcall; a string error gets the chunk's traceback, an error
-- object a traceback field. Returns the packed results of xpcall.
local function protected_call(f)
  local base = levels(1)
  return table.pack(xpcall(f, function(e)
    if upkit.is_error(e) then
      if rawget(e, "traceback") == nil then
        local tb = chunk_traceback("", base)
        rawset(e, "traceback", tb)
      end
      return e
    end
    if type(e) == "table" then return e end
    if type(e) ~= "string" then
      local mt = getmetatable(e)
      e = (mt and mt.__tostring) and tostring(e) or pretty.format(e)
    end
    local tb = chunk_traceback(e, base)
    return tb
  end))
end

-- Print an error: "error: message [code]" for an error object, else the
-- message and its traceback.
local function report(err)
  io.stdout:flush()
  if upkit.is_error(err) then
    io.stderr:write("error: ", tostring(err.message), " [", tostring(err.code), "]\n")
    if os.getenv("UPKIT_TRACEBACK") and err.traceback then
      io.stderr:write(tostring(err.traceback), "\n")
    end
  elseif type(err) == "table" then
    local mt = getmetatable(err)
    local text = (type(mt) == "table" and mt.__tostring) and tostring(err) or pretty.format(err)
    io.stderr:write("error: ", text, "\n")
  else
    io.stderr:write("error: ", tostring(err), "\n")
  end
  io.stderr:flush()
end
M.report = report

-- Compile a chunk as lua.c does: `return <text>` first, then as a statement.
-- Returns the function and the source compiled, or nil and the message.
local function compile(text, env)
  local src = "return " .. text
  local f = load(src, CHUNKNAME, "t", env)
  if f then return f, src end
  f, src = load(text, CHUNKNAME, "t", env)
  if f then return f, text end
  return nil, src
end

local function incomplete(msg)
  return msg:sub(-#EOFMARK) == EOFMARK
end

-- mkdir -p
local function make_dirs(dir)
  local lfs = require "lfs"
  local path = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    path = path .. "/" .. part
    if lfs.attributes(path, "mode") == nil then
      local ok, err = lfs.mkdir(path)
      if not ok and lfs.attributes(path, "mode") ~= "directory" then return nil, path .. ": " .. err end
    end
  end
  return true
end

-- The history file (created folder included), or nil and why not.
function M.history_file()
  local editor = require "upkit._repl"
  local dir = editor.user_dir()
  if not dir then return nil, "neither XDG_DATA_HOME nor HOME is set" end
  local ok, err = make_dirs(dir)
  if not ok then return nil, err end
  return dir .. "/history"
end

--[[
repl.loop(opts) -> result, failure

opts (all optional):
  prompt      string, or function() -> string; default "> "
  prompt2     continuation prompt; default ">> "
  env         table in which chunks run and globals are completed; default _G
  eval        function(source) -> true, values... | false, err: runs a compiled
              chunk's source ("return <expr>" or the statements) instead of the
              chunk compiled in env
  commands    { name = function(args) }: a line whose first word is a command
              name (and not followed by "=") runs it with the rest of the line;
              a non-nil return value ends the loop with that value
  complete    function(line, word) -> { candidates }, added to the built-in ones
  history     load and save the history file; default true
  interactive read the terminal with line editing; default upkit.isatty(0).
              Otherwise lines come from standard input without prompts, and the
              first failing chunk ends the loop.

Returns the value a command ended the loop with (nil at end of input), and the
error of the chunk that ended a non-interactive loop.
]]
function M.loop(opts)
  opts = opts or {}
  local env = opts.env or _G
  local commands = opts.commands or {}
  local interactive = opts.interactive
  if interactive == nil then interactive = upkit.isatty(0) end
  local editor = interactive and require "upkit._repl" or nil
  local history_file, history_warned

  local function prompt(continuation)
    if continuation then return opts.prompt2 or ">> " end
    local p = opts.prompt or "> "
    if type(p) == "function" then p = tostring(p()) end
    return p
  end

  local function completer(line, word)
    return M.complete(word, env, opts.complete, line, commands)
  end

  -- A nested loop (a debugger opened from a chunk) sets its own completer:
  -- set this loop's before each line.
  local function read_line(continuation)
    if not interactive then return io.stdin:read("l") end
    io.stdout:flush()
    editor.set_completer(completer)
    return editor.readline(prompt(continuation))
  end

  local function remember(text)
    if not interactive or not text:find("%S") then return end
    editor.add_history(text)
    if history_file then
      local ok, err = pcall(editor.write_history, history_file)
      if not ok and not history_warned then
        history_warned = true
        io.stderr:write("upkit: history not saved: ", tostring(upkit.is_error(err) and err.message or err), "\n")
      end
    end
  end

  if interactive and opts.history ~= false then
    local why
    history_file, why = M.history_file()
    if history_file then
      editor.read_history(history_file)
    else
      io.stderr:write("upkit: history not kept: ", tostring(why), "\n")
    end
  end

  -- One prompt: read a chunk and run it. Returns "eof", "done" (with the
  -- command's result), "failed" (with the error) or nil to go on.
  local function step()
    local line = read_line(false)
    if line == nil then return "eof" end
    if line == false then return nil end
    local name, args = line:match("^%s*([%a_][%w_]*)%s*$"), ""
    if not name then name, args = line:match("^%s*([%a_][%w_]*)%s+([^=].-)%s*$") end
    if name and commands[name] then
      remember(line)
      local res = protected_call(function() return commands[name](args) end)
      if not res[1] then return "failed", res[2] end
      if res[2] ~= nil then return "done", res[2] end
      return nil
    end
    local text = line
    local f, src = compile(text, env)
    while not f and incomplete(src) do
      local more = read_line(true)
      if more == false then return nil end
      if more == nil then break end
      text = text .. "\n" .. more
      f, src = compile(text, env)
    end
    remember(text)
    if not f then return "failed", src end
    local res
    if opts.eval then
      res = table.pack(opts.eval(src))
    else
      res = protected_call(f)
    end
    if not res[1] then return "failed", res[2] end
    if res.n > 1 then pretty.print(table.unpack(res, 2, res.n)) end
    io.stdout:flush()
    return nil
  end

  local failure, result
  while true do
    local ok, status, value = pcall(step)
    if not ok then status, value = "failed", status end
    if status == "failed" then
      if interactive and upkit.is_error(value) and value.code == "INTERRUPTED" then
        io.stdout:write("\n")
      end
      report(value)
    end
    if status == "eof" then
      if interactive then io.stdout:write("\n") io.stdout:flush() end
      break
    elseif status == "done" then
      result = value
      break
    elseif status == "failed" and not interactive then
      failure = value
      break
    end
  end
  if editor then editor.set_completer(nil) end
  return result, failure
end

-- `upkit repl`: exit code 0, or for piped input 1 when a chunk failed
-- (130 when it was interrupted).
function M.main()
  M.globals(_G)
  local _, failure = M.loop({})
  io.stdout:flush()
  if failure == nil then return 0 end
  if upkit.is_error(failure) and failure.code == "INTERRUPTED" then return 130 end
  return 1
end

return M
