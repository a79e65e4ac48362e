-- upkit run --debug in a real terminal (tmux): the REPL in the failing
-- frame, fixing a parameter and a local, retry, skip, abort then --resume,
-- up/down, locals with secrets redacted, Tab completion of a local's name.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"

local _, has_tmux = T.sh("command -v tmux >/dev/null 2>&1")
if has_tmux ~= 0 then
  T.skip("the debugger in a terminal", "tmux is not installed")
  T.done()
end

local D = require "debugrun"

-- Step "find" fails unless the backup file <name>.bak exists in the run's
-- folder; open_backup's local backup_file and upvalue attempts can be read
-- and changed. Step "finish" writes finished.txt.
local PROCEDURE = [[
local upkit = require "upkit"
local attempts = 0
local function open_backup(folder, name)
  local backup_file = folder .. "/" .. name .. ".bak"
  attempts = attempts + 1
  local f = io.open(backup_file, "r")
  if not f then upkit.error("ENOENT", "no backup file " .. backup_file) end
  f:close()
  return backup_file
end
return {
  name = "restore",
  params = { { name = "backup", type = "string", required = true },
             { name = "token", type = "secret" } },
  steps = {
    { name = "find", describe = "find the backup", run = function(ctx)
        local folder = "."
        local found = open_backup(folder, ctx.params.backup)
        return { found = found, attempts = attempts }
      end },
    { name = "finish", describe = "write finished.txt", run = function(ctx)
        local f = assert(io.open("finished.txt", "w"))
        f:write("finished\n")
        f:close()
      end },
  },
}
]]

local function failing_run(args, fn, env)
  local dir = D.procedure(PROCEDURE)
  T.write_file(dir .. "/good.bak", "backup\n")
  D.session(dir, "--debug --set backup=wrong " .. (args or ""), function(term)
    term:wait_match("debug>$")
    fn(term, dir)
  end, env)
  return dir
end

T.test("--debug and --step refuse to start without a terminal (exit 2)", function()
  local dir = D.procedure(PROCEDURE)
  for _, flag in ipairs { "--debug", "--step" } do
    local out, status = T.sh(string.format("cd %s && %s run ./p.lua --set backup=good %s </dev/null 2>&1",
                                           T.q(dir), T.q(T.upkit_bin()), flag))
    T.eq(status, 2, flag)
    T.contains(out, flag .. " needs a terminal on standard input")
  end
end)

T.test("the REPL opens in the failing frame with the error and the step", function()
  failing_run(nil, function(term)
    local screen = term:screen()
    T.contains(screen, "Step 'find' failed: no backup file ./wrong.bak [ENOENT]")
    T.match(screen, "at %./p%.lua:7 in [%w ]*'open_backup'")
    T.match(D.enter(term, "backup_file"), '"%./wrong%.bak"')
    T.match(D.enter(term, "name"), '"wrong"')
    T.match(D.enter(term, "attempts"), "\n1\n")
    T.match(D.enter(term, "ctx.params.backup"), '"wrong"')
    T.match(D.enter(term, "type(string)"), '"table"')
    T.match(D.enter(term, "nosuchname.x"), "attempt to index a nil value")
    local where = D.enter(term, "where")
    T.match(where, "%-> #1 %./p%.lua:7 in")
    T.match(where, "\n   #2 %./p%.lua:18 in")
    term:send("abort", "Enter")
    term:wait_exit()
  end)
end)

T.test("fixing ctx.params and a local in the REPL, then retry, finishes the run", function()
  local dir = failing_run(nil, function(term)
    D.enter(term, "backup_file = './elsewhere.bak'")
    T.match(D.enter(term, "backup_file"), '"%./elsewhere%.bak"')
    D.enter(term, "attempts = 10")
    D.enter(term, "ctx.params.backup = 'good'")
    term:send("retry", "Enter")
    T.eq(term:wait_exit(), 0)
    local screen = term:screen()
    T.contains(screen, "retrying step 'find'")
    T.contains(screen, "Result: success")
  end)
  T.eq(T.read_file(dir .. "/finished.txt"), "finished\n")
  local recs = D.journal(dir)
  local debug = D.events(recs, "debug", { action = "retry" })
  T.eq(#debug, 1)
  T.eq(debug[1].step, "find")
  T.eq(debug[1].error.code, "ENOENT")
  T.match(debug[1].time, "^%d%d%d%d%-%d%d%-%d%dT")
  T.eq(#D.events(recs, "step-retry", { step = "find" }), 1)
  local done = D.events(recs, "step-done", { step = "find" })[1]
  T.eq(done.state.found, "./good.bak")
  T.eq(done.state.attempts, 11, "the upvalue set in the REPL survives the retry")
  T.eq(D.events(recs, "run-finished")[1].result, "success")
end)

T.test("skip records the step as skipped by the operator and the run goes on", function()
  local dir = failing_run(nil, function(term)
    term:send("skip", "Enter")
    T.eq(term:wait_exit(), 0)
  end)
  local recs = D.journal(dir)
  T.eq(#D.events(recs, "debug", { action = "skip", step = "find" }), 1)
  local skipped = D.events(recs, "step-skipped", { step = "find" })
  T.eq(#skipped, 1)
  T.eq(skipped[1].reason, "operator")
  T.eq(#D.events(recs, "step-done", { step = "finish" }), 1)
  T.eq(D.events(recs, "run-finished")[1].result, "success")
end)

T.test("abort stops with exit 3, and --resume finishes the run", function()
  local dir = failing_run(nil, function(term)
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
    T.contains(term:screen(), "--resume")
  end)
  local recs = D.journal(dir)
  T.eq(#D.events(recs, "debug", { action = "abort", step = "find" }), 1)
  T.eq(#D.events(recs, "step-failed", { step = "find" }), 1)
  T.eq(D.events(recs, "run-finished")[1].result, "aborted")
  local out, status = T.sh(string.format("cd %s && %s run ./p.lua --resume --set backup=good --allow-change backup </dev/null 2>&1",
                                         T.q(dir), T.q(T.upkit_bin())))
  T.eq(status, 0, out)
  T.contains(out, "Resuming restore")
  recs = D.journal(dir)
  T.eq(#D.events(recs, "step-done", { step = "find" }), 1)
  T.eq(D.events(recs, "run-finished")[2].result, "success")
end)

T.test("up and down move between frames and locals follow the frame", function()
  failing_run(nil, function(term)
    local inner = D.enter(term, "locals")
    T.contains(inner, "locals of #1 ./p.lua:7")
    T.contains(inner, "backup_file = \"./wrong.bak\"")
    T.contains(inner, "attempts = 1")
    T.ok(not inner:find("found =", 1, true), "no local of the outer frame")
    T.match(D.enter(term, "up"), "#2 %./p%.lua:18 in")
    local outer = D.enter(term, "locals")
    T.contains(outer, "locals of #2 ./p.lua:18")
    T.contains(outer, "folder = \".\"")
    T.ok(not outer:find("backup_file", 1, true), "no local of the inner frame")
    T.match(D.enter(term, "folder"), '"%."')
    T.match(D.enter(term, "backup_file"), "\nnil\n")
    T.contains(D.enter(term, "up"), "already at the outermost frame")
    T.contains(D.enter(term, "where"), "-> #2 ./p.lua:18")
    T.match(D.enter(term, "down"), "#1 %./p%.lua:7 in")
    T.match(D.enter(term, "backup_file"), '"%./wrong%.bak"')
    T.contains(D.enter(term, "down"), "already at the innermost frame")
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end)
end)

T.test("locals and ctx do not show a secret parameter's value", function()
  failing_run(nil, function(term)
    D.enter(term, "up")
    local shown = D.enter(term, "locals") .. D.enter(term, "ctx.params") .. D.enter(term, "ctx.params.token")
    T.ok(not shown:find("s3cr3t-token", 1, true), shown)
    T.contains(shown, "token = \"***\"")
    T.contains(shown, "\"***\"")
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end, { UPKIT_TOKEN = "s3cr3t-token" })
end)

T.test("Tab completes a local's name, an upvalue's and fields of ctx", function()
  failing_run(nil, function(term)
    term:send("backu", "Tab")
    term:wait_match("debug> backup_file$")
    term:send(" .. '!'", "Enter")
    term:wait_for('"./wrong.bak!"')
    term:wait_match("debug>$")
    term:send("attem", "Tab")
    term:wait_match("debug> attempts$")
    term:keys("C-c")
    term:send("ctx.para", "Tab")
    term:wait_match("debug> ctx%.params$")
    term:send(".back", "Tab")
    term:wait_match("debug> ctx%.params%.backup$")
    term:keys("C-c")
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end)
end)

T.test("help lists the commands", function()
  failing_run(nil, function(term)
    local help = D.enter(term, "help")
    for _, command in ipairs { "retry", "skip", "abort", "where", "up / down", "locals", "Ctrl-D" } do
      T.contains(help, "\n  " .. command .. " ")
    end
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end)
end)

T.test("after a runaway recursion the REPL opens; where leaves out the middle of the stack", function()
  local dir = D.procedure([[
local function deep(n) local depth = n; return 1 + deep(n + 1) end
return { name = "deep", steps = { { name = "recurse", run = function(ctx) local r = deep(1); return r end } } }
]])
  D.session(dir, "--debug", function(term)
    T.contains(term:wait_match("debug>$"), "Step 'recurse' failed: ./p.lua:1: stack overflow [LUA_ERROR]")
    local where = D.enter(term, "where")
    T.match(where, "\n%-> #1 %./p%.lua:1 in upvalue 'deep'\n")
    T.match(where, "\n   %.%.%. %(%d+ levels not shown%)\n")
    T.match(where, "\n   #%d+ %./p%.lua:2 in function <%./p%.lua:2>\ndebug>$")
    local depth = tonumber(D.enter(term, "depth"):match("\n(%d+)\n"))
    T.ok(depth > 1000, "the innermost call is deep")
    D.enter(term, "up")
    T.eq(tonumber(D.enter(term, "depth"):match("\n(%d+)\n")), depth - 1)
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end)
end)

T.test("Ctrl-D leaves the REPL and the step fails as without --debug (exit 1)", function()
  local dir = failing_run(nil, function(term)
    term:keys("C-d")
    T.eq(term:wait_exit(), 1)
  end)
  T.eq(D.events(D.journal(dir), "run-finished")[1].result, "failed")
end)

T.done()
