-- upkit.cli: the command line. main(argv) returns the process exit code:
-- 0 success, 1 a script error, 2 bad usage, 3 aborted by the operator,
-- 130 interrupted.
local upkit = require "upkit"

local M = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

local usage = [[
usage: upkit COMMAND [ARGS...]

commands:
  run FILE|NAME [ARGS...]   run a Lua script or a bundled procedure
  plan NAME [OPTIONS]       show a procedure's steps and parameters; change nothing
  new NAME                  write a starter procedure to edit
  list                      list bundled and user scripts with their summary
  repl                      interactive Lua with every upkit module loaded
  version                   upkit's version and the versions of its libraries
  help [COMMAND]            help on a command

Every command takes --help. Exit codes: 0 success, 1 failure, 2 bad usage,
3 aborted by the operator, 130 interrupted.]]

local help = {}
local commands = {}
M.commands, M.help = commands, help

local function usage_error(fmt, ...)
  io.stderr:write("upkit: ", string.format(fmt, ...), "\n",
                  "Try 'upkit help' for more information.\n")
  return EXIT_USAGE
end
M.usage_error = usage_error

-- Is a value the --help flag?
local function is_help(a) return a == "--help" or a == "-h" end

-- Library roots as folders holding scripts/, in search order.
local function script_dirs()
  local dirs = {}
  for _, root in ipairs(upkit.roots()) do dirs[#dirs + 1] = root .. "/scripts" end
  return dirs
end
M.script_dirs = script_dirs

local function readable(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

-- Find a script by file path or by bundled name. Returns path or nil, tried.
function M.find_script(name)
  if name:find("/", 1, true) or name:match("%.lua$") then
    if readable(name) then return name end
    return nil, { name }
  end
  local tried = {}
  for _, dir in ipairs(script_dirs()) do
    local p = dir .. "/" .. name .. ".lua"
    if readable(p) then return p end
    tried[#tried + 1] = p
  end
  return nil, tried
end

-- Report an error raised by a script; returns the exit code.
function M.report(err)
  if upkit.is_error(err) then
    if err.code == "INTERRUPTED" then
      io.stderr:write("upkit: interrupted\n")
      return 130
    end
    io.stderr:write("upkit: ", tostring(err.message), " [", tostring(err.code), "]\n")
    if os.getenv("UPKIT_TRACEBACK") and err.traceback then
      io.stderr:write(err.traceback, "\n")
    end
  else
    io.stderr:write("upkit: ", tostring(err), "\n")
  end
  return EXIT_FAIL
end

-- Message handler for xpcall: keeps error objects, adds tracebacks.
function M.traceback(e)
  if type(e) == "table" then
    if rawget(e, "traceback") == nil then e.traceback = debug.traceback("", 2) end
    return e
  end
  return debug.traceback(tostring(e), 2)
end

help.run = [[
usage: upkit run FILE|NAME [ARGS...]

Runs a Lua script: FILE is a path, NAME a script found in the library roots'
scripts/ folders (see 'upkit list'). ARGS are given to the script in the
global 'arg' table (arg[0] is the script) and as '...', as with lua.
A script that returns a procedure description is run by the procedure
engine: see 'upkit run NAME --help' for its parameters and options.]]

function commands.run(args)
  local name = args[1]
  if not name then return usage_error("run: missing FILE or NAME") end
  if is_help(name) then print(help.run) return EXIT_OK end
  local path, tried = M.find_script(name)
  if not path then
    io.stderr:write("upkit: run: no script '", name, "' (tried ",
                    table.concat(tried, ", "), ")\n")
    return EXIT_USAGE
  end
  local chunk, lerr = loadfile(path)
  if not chunk then
    io.stderr:write("upkit: ", lerr, "\n")
    return EXIT_FAIL
  end
  local script_args = { [0] = path }
  for i = 2, #args do script_args[i - 1] = args[i] end
  _G.arg = script_args
  local res = table.pack(xpcall(chunk, M.traceback, table.unpack(script_args, 1, #script_args)))
  if not res[1] then return M.report(res[2]) end
  local ret = res[2]
  if type(ret) == "table" and type(ret.steps) == "table" then
    return require("upkit.procedure").main(ret, path, script_args)
  end
  if math.type(ret) == "integer" then return ret end
  return EXIT_OK
end

help.list = [[
usage: upkit list

Lists the scripts found in the library roots' scripts/ folders (UPKIT_PATH,
your user folder, the installed share folder, the source tree), each with
its one-line summary. A name found in an earlier root hides later ones.]]

-- The summary of a script: a procedure's summary, or its first comment
-- line without a leading "NAME:" naming the script (`upkit list` shows the
-- name already).
function M.summary(path, name)
  local f = io.open(path, "r")
  if not f then return "" end
  local text = f:read("a")
  f:close()
  local s = text:match('summary%s*=%s*"([^"\n]*)"')
  if s then return s end
  s = text:match("^%-%-%s*([^\n]*)") or ""
  local label, rest = s:match("^([^:]*):%s+(.*)$")
  if name and (label == name or label == name .. ".lua") then s = rest end
  return s
end

function commands.list(args)
  if is_help(args[1]) then print(help.list) return EXIT_OK end
  if args[1] then return usage_error("list: unexpected argument '%s'", args[1]) end
  local lfs = require "lfs"
  local seen, rows = {}, {}
  for _, dir in ipairs(script_dirs()) do
    if lfs.attributes(dir, "mode") == "directory" then
      local names = {}
      for f in lfs.dir(dir) do
        local n = f:match("^(.+)%.lua$")
        if n and not seen[n] then names[#names + 1] = n end
      end
      table.sort(names)
      for _, n in ipairs(names) do
        seen[n] = true
        rows[#rows + 1] = { n, M.summary(dir .. "/" .. n .. ".lua", n), dir }
      end
    end
  end
  local w = 0
  for _, r in ipairs(rows) do w = math.max(w, #r[1]) end
  for _, r in ipairs(rows) do
    io.write(string.format("%-" .. w .. "s  %s\n", r[1], r[2]))
  end
  return EXIT_OK
end

help.version = [[
usage: upkit version

Prints upkit's version and the versions of Lua, libcurl, OpenSSL and
unixODBC it runs with.]]

function commands.version(args)
  if is_help(args[1]) then print(help.version) return EXIT_OK end
  if args[1] then return usage_error("version: unexpected argument '%s'", args[1]) end
  local v = upkit.versions()
  print("upkit " .. v.upkit)
  print("  " .. v.lua)
  print("  libcurl " .. v.libcurl)
  print("  " .. v.openssl)
  print("  unixODBC " .. v.unixodbc)
  return EXIT_OK
end

help.repl = [[
usage: upkit repl

Interactive Lua 5.4 with line editing, history ($XDG_STATE_HOME/upkit/history,
else ~/.local/state/upkit/history), completion (Tab) and pretty-printed results.
Every upkit module is loaded as a global: fs, proc, sql, http, hash, json,
octopus, version, log, pretty, test, lfs, upkit. A 'local' typed at the prompt
lives for the session. Ctrl-C cancels the line or the running chunk; Ctrl-D
exits. When standard input is not a terminal, the input is run without prompts.]]

function commands.repl(args)
  if is_help(args[1]) then print(help.repl) return EXIT_OK end
  if args[1] then return usage_error("repl: unexpected argument '%s'", args[1]) end
  return require("upkit.repl").main()
end

help.help = [[
usage: upkit help [COMMAND]

Shows the list of commands, or the help of one command.]]

function commands.help(args)
  local c = args[1]
  if not c then print(usage) return EXIT_OK end
  if is_help(c) then print(help.help) return EXIT_OK end
  if not help[c] then return usage_error("help: unknown command '%s'", c) end
  print(help[c])
  return EXIT_OK
end

-- Commands the procedure engine provides (plan, new) register lazily.
local function lazy(modname, cmd)
  commands[cmd] = function(args)
    local ok, mod = pcall(require, modname)
    if not ok then error(mod, 0) end
    return mod.commands[cmd](args)
  end
end
lazy("upkit.procedure", "plan")
lazy("upkit.procedure", "new")
help.plan = "usage: upkit plan NAME|FILE [--config FILE] [--set NAME=VALUE]...\n\n" ..
  "Lists a procedure's steps with their descriptions and resolved parameters,\n" ..
  "and which steps would be skipped as already done. Changes nothing."
help.new = "usage: upkit new NAME [--dir DIR]\n\n" ..
  "Writes a commented starter procedure NAME.lua (into DIR, default the current\n" ..
  "folder) for you to edit and run with 'upkit run ./NAME.lua'."

function M.main(argv)
  local cmd = argv[1]
  if cmd == nil then
    io.stderr:write(usage, "\n")
    return EXIT_USAGE
  end
  if is_help(cmd) then print(usage) return EXIT_OK end
  if cmd == "--version" then return commands.version({}) end
  local fn = commands[cmd]
  if not fn then
    if cmd:sub(1, 1) == "-" then return usage_error("unknown option '%s'", cmd) end
    return usage_error("unknown command '%s'", cmd)
  end
  local args = {}
  for i = 2, #argv do args[#args + 1] = argv[i] end
  local ok, res = xpcall(fn, M.traceback, args)
  if not ok then return M.report(res) end
  io.stdout:flush()
  return res or EXIT_OK
end

return M
