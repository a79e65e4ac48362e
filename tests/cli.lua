-- The command line: commands, --help everywhere, exit codes, arg, errors, Ctrl-C.
local T = require "upkit.test"

local dir = T.tmpdir()
local bin = T.upkit_bin()

local function upkit(args) return T.run_upkit(dir, args) end

T.test("upkit version names upkit, Lua 5.4, libcurl, OpenSSL and unixODBC", function()
  local out, _, code = upkit("version")
  T.eq(code, 0)
  T.match(out, "^upkit %d+%.%d+%.%d+")
  T.contains(out, "Lua 5.4")
  T.match(out, "libcurl %d")
  T.contains(out, "OpenSSL 3")
  T.match(out, "unixODBC %d")
  T.eq((upkit("--version")), out)
end)

T.test("every command has --help, and help COMMAND says the same", function()
  for _, c in ipairs { "run", "plan", "new", "list", "repl", "version", "help" } do
    local out, _, code = upkit(c .. " --help")
    T.eq(code, 0, c)
    T.match(out, "^usage: upkit " .. c, c)
    local out2, _, code2 = upkit("help " .. c)
    T.eq(code2, 0)
    T.contains(out2, "usage: upkit " .. c)
  end
  local out, _, code = upkit("--help")
  T.eq(code, 0)
  T.contains(out, "commands:")
end)

T.test("no command, an unknown command or option is a usage error (exit 2)", function()
  local _, err, code = upkit("")
  T.eq(code, 2)
  T.contains(err, "usage: upkit COMMAND")
  _, err, code = upkit("frobnicate")
  T.eq(code, 2)
  T.contains(err, "unknown command 'frobnicate'")
  _, err, code = upkit("--frobnicate")
  T.eq(code, 2)
  T.contains(err, "unknown option '--frobnicate'")
  _, err, code = upkit("help nothing")
  T.eq(code, 2)
  _, err, code = upkit("version extra")
  T.eq(code, 2)
end)

T.test("run gives the script arg and ... like lua, and its integer result is the exit code", function()
  T.write_file(dir .. "/args.lua", 'print(arg[0], arg[1], arg[2], select("#", ...), ...) return 7')
  local out, _, code = upkit("run args.lua one 'two words'")
  T.eq(code, 7)
  T.eq(out, "args.lua\tone\ttwo words\t2\tone\ttwo words\n")
end)

T.test("run of a missing script is a usage error naming where it looked", function()
  local _, err, code = upkit("run no-such-script")
  T.eq(code, 2)
  T.contains(err, "no script 'no-such-script'")
  T.contains(err, "scripts/no-such-script.lua")
  _, err, code = upkit("run ./missing.lua")
  T.eq(code, 2)
end)

T.test("a script error exits 1 with the message; an error object shows its code", function()
  T.write_file(dir .. "/boom.lua", 'error("it broke")')
  local _, err, code = upkit("run boom.lua")
  T.eq(code, 1)
  T.contains(err, "boom.lua:1: it broke")
  T.contains(err, "stack traceback")
  T.write_file(dir .. "/obj.lua", 'require("upkit.hash").file("sha256", "/no/such/file")')
  _, err, code = upkit("run obj.lua")
  T.eq(code, 1)
  T.eq(err, "upkit: hash.file: '/no/such/file': No such file or directory [ENOENT]\n")
  T.write_file(dir .. "/syntax.lua", 'x = = 1')
  _, err, code = upkit("run syntax.lua")
  T.eq(code, 1)
  T.contains(err, "syntax.lua:1:")
end)

T.test("modules are reached with require, never as globals outside the REPL", function()
  T.write_file(dir .. "/globals.lua", [[
    assert(fs == nil and sql == nil and http == nil and hash == nil and json == nil)
    for _, m in ipairs { "upkit", "upkit.fs", "upkit.proc", "upkit.sql", "upkit.http", "upkit.hash",
                         "upkit.json", "upkit.octopus", "upkit.procedure", "upkit.log", "lfs" } do
      assert(type(require(m)) == "table", m)
    end
    assert(require("upkit.sql").null == require("upkit.json").null)
    print("ok")]])
  local out, err, code = upkit("run globals.lua")
  T.eq(code, 0, err)
  T.eq(out, "ok\n")
end)

T.test("UPKIT_PATH comes first when finding scripts and modules", function()
  os.execute("mkdir -p " .. T.q(dir .. "/mine/scripts") .. " " .. T.q(dir .. "/mine/lua/upkit"))
  T.write_file(dir .. "/mine/scripts/hello.lua", '-- says hello from my folder\nprint(require("upkit.mine").hi)')
  T.write_file(dir .. "/mine/lua/upkit/mine.lua", 'return { hi = "hello" }')
  local out, _, code = T.sh(string.format("cd %s && UPKIT_PATH=%s %s run hello", T.q(dir), T.q(dir .. "/mine"), T.q(bin)))
  T.eq(out, "hello\n")
  out = T.sh(string.format("UPKIT_PATH=%s %s list", T.q(dir .. "/mine"), T.q(bin)))
  T.match(out, "hello%s+says hello from my folder")
  T.match(out, "clone%-instance%s+Clone an Octopus Server")
end)

T.test("Ctrl-C (SIGINT) interrupts a running script: exit 130, 'interrupted'", function()
  T.write_file(dir .. "/spin.lua", 'io.stdout:write("spinning\\n") io.stdout:flush() while true do end')
  local pidfile = dir .. "/spin.pid"
  T.sh(string.format("cd %s && (%s run spin.lua >spin.out 2>spin.err; echo $? >spin.code) </dev/null >/dev/null 2>&1 & echo $! > %s",
                     T.q(dir), T.q(bin), T.q(pidfile)))
  for _ = 1, 100 do
    if (T.read_file(dir .. "/spin.out") or ""):find("spinning") then break end
    os.execute("sleep 0.05")
  end
  local pid = T.sh("pgrep -P " .. T.read_file(pidfile):match("%d+") .. " -x upkit"):match("%d+")
    or T.sh("pgrep -P " .. T.read_file(pidfile):match("%d+")):match("%d+")
  T.ok(pid, "found the upkit process")
  os.execute("kill -INT " .. pid)
  for _ = 1, 100 do
    if T.read_file(dir .. "/spin.code") then break end
    os.execute("sleep 0.05")
  end
  T.eq(T.read_file(dir .. "/spin.code"), "130\n")
  T.eq(T.read_file(dir .. "/spin.err"), "upkit: interrupted\n")
end)

T.test("list shows the bundled procedures with their summaries", function()
  local out, _, code = upkit("list")
  T.eq(code, 0)
  for _, name in ipairs { "backup", "clone-instance", "in-place-upgrade", "preflight", "rollback", "demo" } do
    T.match(out, "\n?" .. name:gsub("%-", "%%-") .. "%s+%S")
  end
  T.match(out, "\ndemo +clone a simulated Octopus")
  T.ok(not out:find("demo: ", 1, true), "the name is not repeated in the summary")
end)

T.test("list: a first comment line naming the script does not repeat the name", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/tool.lua", "-- tool: does a thing\nreturn 0\n")
  T.write_file(dir .. "/other.lua", "-- note: keeps this label\nreturn 0\n")
  T.write_file(dir .. "/proc.lua", 'return { name = "proc", summary = "from the description", steps = {} }\n')
  local cli = require "upkit.cli"
  T.eq(cli.summary(dir .. "/tool.lua", "tool"), "does a thing")
  T.eq(cli.summary(dir .. "/other.lua", "other"), "note: keeps this label")
  T.eq(cli.summary(dir .. "/proc.lua", "proc"), "from the description")
  T.eq(cli.summary(dir .. "/missing.lua", "missing"), "")
end)

T.done()
