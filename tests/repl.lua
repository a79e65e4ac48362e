-- upkit repl without a terminal (piped input), completion, and repl.loop as
-- the debugger uses it. The terminal itself is tested in tests/repl_pty.lua.
local T = require "upkit.test"
local repl = require "upkit.repl"
local hash = require "upkit.hash"

local dir = T.tmpdir()

-- Run `upkit repl` with input on stdin; returns stdout, stderr, status.
local function piped(input)
  local inp, err = dir .. "/in", dir .. "/err"
  T.write_file(inp, input)
  local out, status = T.sh(string.format("HOME=%s XDG_DATA_HOME= %s repl < %s 2> %s",
    T.q(dir), T.q(T.upkit_bin()), T.q(inp), T.q(err)))
  return out, T.read_file(err), status
end

-- Run a Lua script with input on stdin; returns stdout, stderr, status.
local function script(code, input)
  T.write_file(dir .. "/s.lua", code)
  T.write_file(dir .. "/in", input)
  local out, status = T.sh(string.format("%s run %s < %s 2> %s", T.q(T.upkit_bin()),
    T.q(dir .. "/s.lua"), T.q(dir .. "/in"), T.q(dir .. "/err")))
  return out, T.read_file(dir .. "/err"), status
end

T.test("printf '1+1' | upkit repl prints 2", function()
  local out, err, status = piped("1+1\n")
  T.eq(out, "2\n")
  T.eq(status, 0)
  T.eq(err:gsub("upkit: repl: [^\n]*not loaded[^\n]*\n", ""), "", "nothing on stderr")
end)

T.test("piped input shows no prompt and writes no history", function()
  local out = piped("x = 1\nx\n")
  T.eq(out, "1\n")
  T.eq(T.sh("ls -A " .. T.q(dir) .. " | grep -c local"), "0\n")
end)

T.test("a multi-line function works", function()
  local out, _, status = piped("function twice(x)\n  return x * 2\nend\ntwice(21)\n")
  T.eq(out, "42\n")
  T.eq(status, 0)
end)

T.test("a multi-line expression prints its value", function()
  local out = piped("string.format(\n  '%d-%s',\n  7, 'x')\nlocal t = {\n  a = 1,\n}\n")
  T.eq(out, '"7-x"\n')
end)

T.test("values are pretty-printed, tab-separated, nil included", function()
  local out = piped("{ b = 2, a = { 1, 2 } }, nil, 'str'\n")
  T.eq(out, '{ a = { 1, 2 }, b = 2 }\tnil\t"str"\n')
end)

T.test("statements and calls without values print nothing", function()
  local out = piped("local x = 5\nprint('hi')\ny = nil\n")
  T.eq(out, "hi\n")
end)

T.test("the upkit modules are globals in the REPL", function()
  local out = piped("type(hash.new), json.null, type(lfs.dir), upkit.version == require('upkit').version\n")
  T.eq(out, '"function"\tnull\t"function"\ttrue\n')
end)

T.test("every module the README names is a global: octopus and version too", function()
  local out = piped("type(octopus.connect), version.compare('2019.1.10', '2019.1.9'), type(log.redact), " ..
                    "type(pretty.format), type(test.eq), type(fs.copy), type(proc.run), type(sql.connect), " ..
                    "type(http.client)\n")
  T.eq(out, '"function"\t1\t"function"\t"function"\t"function"\t"function"\t"function"\t"function"\t"function"\n')
end)

T.test("a local declared at the prompt lives for the session", function()
  local out, err, status = piped(table.concat({
    "local x = 1", "x",
    "local a, b <const> = 2, 3", "a + b",
    "local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end", "fact(5)",
    "local y", "y", "y = 7", "y",
    "rawget(_G, 'x'), rawget(_G, 'y'), rawget(_G, 'fact')",
    "local print = 5", "print", "_G.print('the global is untouched')",
    "local s = 'local z = 9 -- local w'", "z",
    "do local inner = 1 end", "inner",
    "function uses_x() return x end", "x = 10", "uses_x()",
    "local x = x + 1", "x",
    "local db = hash.new('sha256')", "db:update('abc')", "#db:hex()", "db:close()",
  }, "\n") .. "\n")
  T.eq(err, "")
  T.eq(status, 0)
  T.eq(out, "1\n5\n120\nnil\n7\nnil\tnil\tnil\n5\nthe global is untouched\nnil\nnil\n10\n11\n" ..
            "upkit.hash.Hasher (SHA256)\n64\n")
end)

T.test("a local <close> at the prompt is closed when its chunk ends, as written", function()
  local out = piped("local h <close> = hash.new('sha256'); kept = h\ntostring(kept):match('closed') ~= nil\nh\n")
  T.eq(out, "true\nnil\n")
end)

T.test("the line editor raises EINVAL error objects for wrong arguments", function()
  local ed = require "upkit._repl"
  T.match(T.raises("EINVAL", ed.add_history, 42).message, "repl.add_history: argument #1 must be a string, not number")
  T.match(T.raises("EINVAL", ed.set_completer, "f").message, "must be a function or nil, not string")
  T.match(T.raises("EINVAL", ed.readline, {}).message, "repl.readline: argument #1 must be a string, not table")
end)

T.test("an error message holding a secret known to the log is redacted", function()
  local _, err = piped("log.secret('hunter2-pass')\nerror('login with hunter2-pass failed')\n")
  T.contains(err, "login with *** failed")
  T.ok(not err:find("hunter2", 1, true), err)
end)

T.test("rewrite_locals: only top-level locals, on the same lines", function()
  local S = "_UPKIT_SESSION."
  T.eq(repl.rewrite_locals("local x = 1"), " " .. S .. "x = 1")
  T.eq(repl.rewrite_locals("local a, b\nreturn a"), " " .. S .. "a, " .. S .. "b = nil;\nreturn a")
  T.eq(repl.rewrite_locals("local function f() local y = 1 return y end"),
       " function " .. S .. "f() local y = 1 return y end")
  T.eq(repl.rewrite_locals("if c then local y = 1 end"), nil)
  T.eq(repl.rewrite_locals("repeat local y = 1 until y"), nil)
  T.eq(repl.rewrite_locals("f = function() local y = 2 end local z = [[local q]]"),
       "f = function() local y = 2 end  " .. S .. "z = [[local q]]")
  T.eq(repl.rewrite_locals("local k <const> = 3"), " " .. S .. "k  = 3")
  T.eq(repl.rewrite_locals("local c <close> = nil"), nil)
  T.eq(repl.rewrite_locals("x = '-- local y'"), nil)
  T.eq(repl.rewrite_locals("local s = 'unclosed"), nil)
end)

T.test("an error object is printed as message [code], and the run stops with 1", function()
  local out, err, status = piped("1\nhash.new('nope')\n2\n")
  T.eq(out, "1\n", "the line after the failure does not run")
  T.match(err, "error: hash%.new: unknown algorithm 'nope'[^\n]* %[EINVAL%]\n")
  T.eq(status, 1)
end)

T.test("a string error is printed with the chunk's traceback only", function()
  local _, err, status = piped("function boom() error('bad thing') end\nboom()\n")
  T.contains(err, "error: stdin:1: bad thing\nstack traceback:\n")
  T.contains(err, "\tstdin:1: in function 'boom'")
  T.ok(not err:find("repl.lua", 1, true), "no frames of the REPL itself: " .. err)
  T.ok(not err:find("xpcall", 1, true), "no xpcall frame: " .. err)
  T.eq(status, 1)
end)

T.test("a deep stack's traceback is cut in the middle, as lua's is", function()
  local _, err, status = piped("function r(n) return 1 + r(n) end\nr(1)\n")
  T.contains(err, "error: stdin:1: stack overflow")
  T.match(err, "\n\t%.%.%.\t%(skipping %d+ levels%)\n")
  local _, frames = err:gsub("\n\t", "")
  T.ok(frames <= 25, "at most 22 frames shown, got " .. frames)
  T.eq(status, 1)
end)

T.test("a syntax error is reported and fails", function()
  local out, err, status = piped("x x\n3\n")
  T.eq(out, "")
  T.contains(err, "error: stdin:1: syntax error near 'x'")
  T.eq(status, 1)
end)

T.test("input ending inside a chunk reports the incomplete chunk", function()
  local _, err, status = piped("function f()\n  return 1\n")
  T.match(err, "error: stdin:%d+: 'end' expected.*near <eof>")
  T.eq(status, 1)
end)

T.test("completion of a bare name: globals, keywords", function()
  local env = { format = 1, forward = 2, other = 3 }
  T.eq(repl.complete("for", env), { "for", "format", "forward" })
  T.eq(repl.complete("fun", env), { "function" })
  T.eq(repl.complete("stri", _G), { "string" })
  T.eq(repl.complete("zzz", env), {})
end)

T.test("completion of fields: string.fo and nested a.b.c", function()
  T.eq(repl.complete("string.fo", _G), { "string.format" })
  local env = { a = { b = { count = 1, cat = 2, ["not id"] = 3 } } }
  T.eq(repl.complete("a.b.c", env), { "a.b.cat", "a.b.count" })
  T.eq(repl.complete("a.b.", env), { "a.b.cat", "a.b.count" })
  T.eq(repl.complete("a.x.c", env), {}, "a missing table completes nothing")
  T.eq(repl.complete("a.b.count.x", env), {}, "a number has no fields")
end)

T.test("completion of handle methods: h:up -> h:update", function()
  local h = hash.new("sha256")
  T.eq(repl.complete("h:up", { h = h }), { "h:update" })
  T.eq(repl.complete("h:", { h = h }), { "h:algorithm", "h:close", "h:digest", "h:hex", "h:update" })
  h:close()
  T.eq(repl.complete("s:upp", { s = "text" }), { "s:upper" }, "string methods")
end)

T.test("completion follows __index tables and a proxy env", function()
  local class = { method = function() end, field = 1 }
  local obj = setmetatable({ own = true }, { __index = class })
  T.eq(repl.complete("o:m", { o = obj }), { "o:method" })
  T.eq(repl.complete("o.", { o = obj }), { "o.field", "o.method", "o.own" })
  local env = setmetatable({}, { __index = function(_, k) if k == "ctx" then return { params = {} } end end })
  T.eq(repl.complete("ctx.pa", env), { "ctx.params" }, "names resolved through __index functions")
  local failing = setmetatable({}, { __index = function() error("no") end })
  T.eq(repl.complete("x.y", failing), {}, "an __index that raises completes nothing")
end)

T.test("completion adds command names and an extra provider", function()
  local extra = function(line, word) return { "backup_file", "ctx", 42, "other" } end
  T.eq(repl.complete("b", {}, extra, "b", { bt = true }), { "backup_file", "break", "bt" })
  T.eq(repl.complete("c", {}, function() error("broken provider") end), {},
       "a failing provider adds nothing")
end)

T.test("repl.loop: env, commands ending the loop with a value", function()
  local out, err, status = script([[
    local repl = require "upkit.repl"
    local env = setmetatable({ answer = 41 }, { __index = _G })
    local seen = {}
    local result, failure = repl.loop({
      interactive = false,
      env = env,
      commands = {
        where = function(args) print("where called with [" .. args .. "]") end,
        retry = function(args) return "retry:" .. args end,
      },
    })
    print("result", result, failure, env.answer, rawget(_G, "answer"))
  ]], "answer = answer + 1\nanswer\nwhere\nwhere 2 frames\nretry now\nanswer\n")
  T.eq(err, "")
  T.eq(status, 0)
  T.eq(out, "42\nwhere called with []\nwhere called with [2 frames]\nresult\tretry:now\tnil\t42\tnil\n")
end)

T.test("repl.loop: a name followed by = is Lua, not a command", function()
  local out = script([[
    local repl = require "upkit.repl"
    local env = setmetatable({}, { __index = _G })
    repl.loop({ interactive = false, env = env, commands = { up = function() print("UP") end } })
    print(env.up)
  ]], "up = 3\nup\n")
  T.eq(out, "UP\n3\n")
end)

T.test("repl.loop: eval runs the compiled source instead", function()
  local out, _, status = script([[
    local repl = require "upkit.repl"
    local seen = {}
    local _, failure = repl.loop({ interactive = false, eval = function(src)
      seen[#seen + 1] = src
      if src:find("fail") then return false, "custom failure" end
      return true, "evaluated"
    end })
    print(table.concat(seen, "|"), failure)
  ]], "1 + 2\nx = 1\nfail()\nnever()\n")
  T.eq(status, 0)
  T.eq(out, '"evaluated"\n"evaluated"\nreturn 1 + 2|x = 1|return fail()\tcustom failure\n')
end)

T.test("repl.loop: the error that ended a non-interactive loop is returned", function()
  local out, err = script([[
    local repl = require "upkit.repl"
    local _, failure = repl.loop({ interactive = false })
    print(failure.code, failure.message)
  ]], "require('upkit').error('ECUSTOM', 'it broke')\n")
  T.eq(out, "ECUSTOM\tit broke\n")
  T.eq(err, "error: it broke [ECUSTOM]\n")
end)

T.done()
