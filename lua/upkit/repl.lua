-- upkit.repl: the interactive Lua of `upkit repl`, reusable by the debugger.
--
--   repl.main() -> exit code                    `upkit repl`
--   repl.loop(opts) -> result, failure          the read-eval-print loop
--   repl.complete(word, env [, extra, line, commands]) -> sorted candidates
--   repl.globals(env) -> env                    the upkit modules as globals
--   repl.session(base) -> env                   where a session's chunks run
--   repl.rewrite_locals(text) -> text | nil     top-level locals made session variables
--   repl.state_dir() -> path | nil, why         $XDG_STATE_HOME/upkit or ~/.local/state/upkit
--   repl.history_file() -> path | nil, why      the history file there, its folder made
--
-- Behaviour follows Lua 5.4's lua.c: a line is tried as `return <line>`
-- first, then as a statement; while the chunk is incomplete (the error ends
-- in "<eof>") more lines are read with the prompt ">> ". Values are shown
-- with upkit.pretty. Ctrl-C cancels the line being typed or interrupts the
-- running chunk; Ctrl-D on an empty line ends the loop. Unlike lua.c, a
-- `local` declared at the top level of a chunk lives for the whole session
-- (see repl.session).
local upkit = require "upkit"
local log = require "upkit.log"
local pretty = require "upkit.pretty"

local M = {}

local CHUNKNAME = "=stdin"
local EOFMARK = "<eof>"

M.keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do M.keywords[#M.keywords + 1] = w end
M.keyword_set = {}
for _, w in ipairs(M.keywords) do M.keyword_set[w] = true end

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
-- Names starting with "_" (private by convention) only when private is set.
local function field_names(v, methods_only, names, private)
  local seen = {}
  local function add(t)
    for k, val in next, t do
      if is_identifier(k) and (not methods_only or type(val) == "function")
         and (private or k:sub(1, 1) ~= "_") then
        names[k] = true
      end
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

---------------------------------------------------------------------------
-- Session variables: `local x = 1` at the prompt, then `x` on a later line
---------------------------------------------------------------------------

-- The name under which a chunk reaches its session's variables; the
-- rewritten chunk assigns `_UPKIT_SESSION.x = 1` for `local x = 1`.
local SESSION = "_UPKIT_SESSION"

-- session env -> { declared = set of names, values, base }
local sessions = setmetatable({}, { __mode = "k" })

--[[
repl.session(base) -> env: the table a session's chunks run in. A name
declared by a top-level `local` of a chunk (rewritten by rewrite_locals)
is a session variable: it shadows base's name of the same name from then
on, and assigning to it changes the variable. Every other name is read
from and assigned to base (default _G), so `x = 1` stays a global.
]]
function M.session(base)
  base = base or _G
  local s = { declared = {}, values = {}, base = base }
  local declare = setmetatable({}, {
    __index = function(_, k) return s.values[k] end,
    __newindex = function(_, k, v) s.declared[k] = true; s.values[k] = v end,
  })
  local env = setmetatable({}, {
    __index = function(_, k)
      if s.declared[k] then return s.values[k] end
      if k == SESSION then return declare end
      return base[k]
    end,
    __newindex = function(_, k, v)
      if s.declared[k] then s.values[k] = v else base[k] = v end
    end,
  })
  sessions[env] = s
  return env
end

-- The tokens of a chunk that matter to find its top-level locals: names
-- and keywords, and single-character symbols, with their positions.
-- Strings, comments and numbers are skipped. Returns nil when a string or
-- comment is not closed (the chunk is incomplete; load says so).
local function tokens(text)
  local out, i, n = {}, 1, #text
  local function long_bracket(at)
    local eqs = text:match("^%[(=*)%[", at)
    if not eqs then return nil end
    local _, e = text:find("]" .. eqs .. "]", at + #eqs + 2, true)
    return e or false
  end
  while i <= n do
    local c = text:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif text:sub(i, i + 1) == "--" then
      local e = long_bracket(i + 2)
      if e == false then return nil end
      i = (e or text:find("\n", i, true) or n) + 1
    elseif c == "[" and long_bracket(i) ~= nil then
      local e = long_bracket(i)
      if not e then return nil end
      i = e + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while true do
        local ch = text:sub(j, j)
        if ch == "" or ch == "\n" then return nil end
        if ch == "\\" then j = j + 2
        elseif ch == c then break
        else j = j + 1 end
      end
      i = j + 1
    elseif text:match("^%.?%d", i) then
      local j = i
      while j <= n do
        local ch = text:sub(j, j)
        if ch:match("[%w_.]") or (ch:match("[+-]") and text:sub(j - 1, j - 1):match("[eEpP]")) then
          j = j + 1
        else
          break
        end
      end
      i = j
    elseif c:match("[%a_]") then
      local e = select(2, text:find("^[%a_][%w_]*", i))
      out[#out + 1] = { word = text:sub(i, e), s = i, e = e }
      i = e + 1
    else
      out[#out + 1] = { sym = c, s = i, e = i }
      i = i + 1
    end
  end
  return out
end

local OPENS = { ["function"] = true, ["do"] = true, ["if"] = true, ["repeat"] = true }
local CLOSES = { ["end"] = true, ["until"] = true }

--[[
repl.rewrite_locals(text) -> text, or nil when the chunk declares no
top-level local. `local a, b <const> = 1, 2` becomes
`_UPKIT_SESSION.a, _UPKIT_SESSION.b = 1, 2` (attributes dropped),
`local x` becomes `_UPKIT_SESSION.x = nil;`, and `local function f`
becomes `function _UPKIT_SESSION.f`, all on the same lines, so error
messages keep their line numbers. A `local ... <close>` stays a local:
it is closed when its chunk ends, as written. Locals inside blocks and
functions are left alone.
]]
function M.rewrite_locals(text)
  local toks = tokens(text)
  if not toks then return nil end
  local edits, depth = {}, 0
  local function name_at(k) return toks[k] and toks[k].word and not M.keyword_set[toks[k].word] end
  local k = 1
  while k <= #toks do
    local t = toks[k]
    if t.word and OPENS[t.word] then depth = depth + 1
    elseif t.word and CLOSES[t.word] then depth = depth - 1
    elseif t.word == "local" and depth == 0 then
      local nxt = toks[k + 1]
      if nxt and nxt.word == "function" and name_at(k + 2) then
        edits[#edits + 1] = { t.s, t.e, "" }
        edits[#edits + 1] = { toks[k + 2].s, toks[k + 2].e, SESSION .. "." .. toks[k + 2].word }
      else
        local mine, j, closes = {}, k + 1, false
        while name_at(j) do
          mine[#mine + 1] = { toks[j].s, toks[j].e, SESSION .. "." .. toks[j].word }
          local last = toks[j].e
          j = j + 1
          if toks[j] and toks[j].sym == "<" and toks[j + 1] and toks[j + 1].word
             and toks[j + 2] and toks[j + 2].sym == ">" then
            if toks[j + 1].word == "close" then closes = true end
            mine[#mine + 1] = { toks[j].s, toks[j + 2].e, "" }
            last = toks[j + 2].e
            j = j + 3
          end
          mine.last = last
          if not (toks[j] and toks[j].sym == ",") then break end
          j = j + 1
        end
        if #mine > 0 and not closes then
          edits[#edits + 1] = { t.s, t.e, "" }
          for _, e in ipairs(mine) do edits[#edits + 1] = e end
          if not (toks[j] and toks[j].sym == "=" and not (toks[j + 1] and toks[j + 1].sym == "=" and toks[j + 1].s == toks[j].e + 1)) then
            edits[#edits + 1] = { mine.last + 1, mine.last, " = nil;" }
          end
        end
        k = j - 1
      end
    end
    k = k + 1
  end
  if #edits == 0 then return nil end
  local out, pos = {}, 1
  for _, e in ipairs(edits) do
    out[#out + 1] = text:sub(pos, e[1] - 1)
    out[#out + 1] = e[3]
    pos = e[2] + 1
  end
  out[#out + 1] = text:sub(pos)
  return table.concat(out)
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
    if value ~= nil then field_names(value, sep == ":", names, prefix:sub(1, 1) == "_") end
  else
    prefix = word
    local session = sessions[env]
    if session then
      for k in pairs(session.declared) do names[k] = true end
      env = session.base
    end
    field_names(env, false, names, true)
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

-- The modules the REPL loads as globals: name -> module (upkit.NAME).
M.MODULES = { "fs", "proc", "sql", "http", "hash", "json", "octopus", "version", "log", "pretty", "test" }

-- repl.globals(env): put the upkit modules into env (default _G) as fs,
-- proc, sql, http, hash, json, octopus, version, log, pretty, test, lfs and
-- upkit. A module that is not part of this build is left out; one that
-- fails to load is reported.
function M.globals(env)
  env = env or _G
  for _, name in ipairs(M.MODULES) do
    local modname = "upkit." .. name
    local ok, mod = pcall(require, modname)
    if ok then
      env[name] = mod
    elseif not tostring(mod):find("module '" .. modname .. "' not found", 1, true) then
      io.stderr:write("upkit: repl: ", modname, " not loaded: ",
                      tostring(upkit.is_error(mod) and mod.message or mod):match("^[^\n]*"), "\n")
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
-- message and its traceback; secrets known to the log redacted.
local function report(err)
  io.stdout:flush()
  local text
  if upkit.is_error(err) then
    text = tostring(err.message) .. " [" .. tostring(err.code) .. "]"
    if os.getenv("UPKIT_TRACEBACK") and err.traceback then text = text .. "\n" .. tostring(err.traceback) end
  elseif type(err) == "table" then
    local mt = getmetatable(err)
    text = (type(mt) == "table" and mt.__tostring) and tostring(err) or pretty.format(err, { redact = log.redact })
  else
    text = tostring(err)
  end
  io.stderr:write("error: ", log.redact(text), "\n")
  io.stderr:flush()
end
M.report = report

-- Compile a chunk as lua.c does: `return <text>` first, then as a statement.
-- Returns the function and the source compiled, or nil and the message.
local function compile(text, env)
  local src = "return " .. text
  local f = load(src, CHUNKNAME, "t", env)
  if f then return f, src end
  local rewritten = M.rewrite_locals(text)
  if rewritten then
    f = load(rewritten, CHUNKNAME, "t", env)
    if f then return f, rewritten end
  end
  f, src = load(text, CHUNKNAME, "t", env)
  if f then return f, text end
  return nil, src
end

-- repl.print(...): the values formatted, secrets redacted before they are
-- quoted, tab-separated, on one line.
function M.print(...)
  local out = {}
  for i = 1, select("#", ...) do out[i] = pretty.format((select(i, ...)), { redact = log.redact }) end
  io.stdout:write(table.concat(out, "\t"), "\n")
end

local function incomplete(msg)
  return msg:sub(-#EOFMARK) == EOFMARK
end

---------------------------------------------------------------------------
-- History: one file for the REPL and the debugger, loaded once per process
---------------------------------------------------------------------------

local HISTORY_MAX = 1000
local history = { loaded = false, file = nil, last = nil }

-- The state folder: $XDG_STATE_HOME/upkit, else ~/.local/state/upkit; on Windows
-- (LOCALAPPDATA set, no HOME) %LOCALAPPDATA%/upkit/state.
function M.state_dir()
  local base = os.getenv("XDG_STATE_HOME")
  if not base or base:sub(1, 1) ~= "/" then
    local home, local_app = os.getenv("HOME"), os.getenv("LOCALAPPDATA")
    if (not home or home == "") and local_app and local_app ~= "" then
      return (local_app:gsub("\\", "/")) .. "/upkit/state"
    end
    if not home or home == "" then return nil, "neither XDG_STATE_HOME nor HOME is set" end
    base = home .. "/.local/state"
  end
  return base .. "/upkit"
end

-- repl.history_file() -> the history file, its folder created (0700), or
-- nil and why not.
function M.history_file()
  local dir, why = M.state_dir()
  if not dir then return nil, why end
  local ok, err = pcall(require("upkit.fs").mkdirs, dir, { mode = "0700" })
  if not ok then return nil, tostring(upkit.is_error(err) and err.message or err) end
  return dir .. "/history"
end

-- The history file holds one entry per line, as a JSON string (so an entry
-- of several lines is one line). Entries are appended one at a time, so two
-- sessions at once lose nothing; the file is cut to the last HISTORY_MAX
-- entries when it has grown past twice that.
local function load_history(editor)
  if history.loaded then return end
  history.loaded = true
  local file, why = M.history_file()
  if not file then
    io.stderr:write("upkit: history not kept: ", tostring(why), "\n")
    return
  end
  history.file = file
  local json = require "upkit.json"
  local f = io.open(file, "r")
  if not f then return end
  local entries = {}
  for line in f:lines() do
    local ok, entry = pcall(json.decode, line)
    if ok and type(entry) == "string" then entries[#entries + 1] = entry end
  end
  f:close()
  for i = math.max(1, #entries - HISTORY_MAX + 1), #entries do editor.add_history(entries[i]) end
  history.last = entries[#entries]
  if #entries > 2 * HISTORY_MAX then
    local keep = {}
    for i = #entries - HISTORY_MAX + 1, #entries do keep[#keep + 1] = json.encode(entries[i]) end
    pcall(require("upkit.fs").write, file, table.concat(keep, "\n") .. "\n", { mode = "0600" })
  end
end

-- An entry equal to the one before it is not written again (nor kept
-- twice in memory: the editor's history is unique).
local function append_history(entry)
  if not history.file or entry == history.last then return end
  history.last = entry
  local fs = require "upkit.fs"
  local ok, err = true, nil
  if not fs.exists(history.file) then ok, err = pcall(fs.write, history.file, "", { mode = "0600" }) end
  local f
  if ok then f, err = io.open(history.file, "a") end
  if f then
    f:write(require("upkit.json").encode(entry), "\n")
    f:close()
    return
  end
  io.stderr:write("upkit: history not saved: ", tostring(upkit.is_error(err) and err.message or err), "\n")
  history.file = nil
end

--[[
repl.loop(opts) -> result, failure

opts (all optional):
  prompt      string, or function() -> string; default "> "
  prompt2     continuation prompt; default ">> "
  env         table in which chunks run and globals are completed; default _G.
              The loop runs chunks in a session over it (repl.session), so
              top-level locals live until the loop ends.
  eval        function(source, session_env) -> true, values... | false, err:
              runs a compiled chunk's source ("return <expr>" or the
              statements, top-level locals rewritten) instead of the chunk
              compiled in the session
  commands    { name = function(args) }: a line whose first word is a command
              name (and not followed by "=") runs it with the rest of the line;
              a non-nil return value ends the loop with that value
  complete    function(line, word) -> { candidates }, added to the built-in ones
  after       function(text, ok): called after each command or chunk was run
              (ok false when it failed), before the next prompt
  history     load the history file (once per process) and append each entry
              to it; default true
  interactive read the terminal with line editing; default upkit.isatty(0).
              Otherwise lines come from standard input without prompts, and the
              first failing chunk ends the loop.

Returns the value a command ended the loop with (nil at end of input), and the
error of the chunk that ended a non-interactive loop.
]]
function M.loop(opts)
  opts = opts or {}
  local env = M.session(opts.env or _G)
  local commands = opts.commands or {}
  local interactive = opts.interactive
  if interactive == nil then interactive = upkit.isatty(0) end
  local editor = interactive and require "upkit._repl" or nil
  local keep_history = interactive and opts.history ~= false

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

  -- After a command or chunk ran: opts.after, then the history entry
  -- (secrets known by then redacted: after may have learnt new ones).
  local function finished(text, ok)
    if opts.after then opts.after(text, ok) end
    if keep_history and text:find("%S") then
      local entry = log.redact(text)
      editor.add_history(entry)
      append_history(entry)
    end
  end

  if keep_history then load_history(editor) end

  -- One prompt: read a chunk and run it. Returns "eof", "done" (with the
  -- command's result), "failed" (with the error) or nil to go on.
  local function step()
    local line = read_line(false)
    if line == nil then return "eof" end
    if line == false then return nil end
    local name, args = line:match("^%s*([%a_][%w_]*)%s*$"), ""
    if not name then name, args = line:match("^%s*([%a_][%w_]*)%s+([^=].-)%s*$") end
    if name and commands[name] then
      local res = protected_call(function() return commands[name](args) end)
      finished(line, res[1])
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
    if not f then
      finished(text, false)
      return "failed", src
    end
    local res
    if opts.eval then
      res = table.pack(opts.eval(src, env))
    else
      res = protected_call(f)
    end
    finished(text, res[1])
    if not res[1] then return "failed", res[2] end
    if res.n > 1 then M.print(table.unpack(res, 2, res.n)) end
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
