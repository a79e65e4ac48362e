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

T.test("lines typed go to the run's log; changes to ctx.params and ctx.state are logged and journalled", function()
  local dir = failing_run(nil, function(term)
    D.enter(term, "ctx.params.backup = 'good'")
    D.enter(term, "ctx.state.note = 'fixed by hand'")
    D.enter(term, "ctx.params.token = 'n3w-t0ken'")
    T.match(D.enter(term, "ctx.params.token"), '\n"%*%*%*"\n')
    D.enter(term, "1 + 1")
    D.enter(term, "local kept = ctx.params.backup .. '!'")
    T.match(D.enter(term, "kept"), '\n"good!"\n', "a local typed at the prompt lives on")
    term:send("retry", "Enter")
    T.eq(term:wait_exit(), 0)
    T.contains(term:screen(), 'changed in the debugger: params.backup = "good" (was "wrong")')
  end, { UPKIT_TOKEN = "s3cr3t-token" })
  local recs = D.journal(dir)
  local changes = D.events(recs, "debug-change", { step = "find" })
  T.eq(#changes, 3)
  T.eq(changes[1].changed, { "params.backup" })
  T.eq(changes[1].params, { backup = "good" })
  T.eq(changes[2].changed, { "state.note" })
  T.eq(changes[2].state, { note = "fixed by hand" })
  T.eq(changes[3].changed, { "params.token" })
  T.eq(changes[3].params, { token = "***" })
  local log = D.run_file(dir, "log.txt")
  for _, line in ipairs { "debug> ctx.params.backup = 'good'", "debug> ctx.state.note = 'fixed by hand'",
                          "debug> ctx.params.token = '***'", "debug> 1 + 1", "debug> retry" } do
    T.contains(log, "DEBUG [find] " .. line .. "\n")
  end
  T.contains(log, 'INFO [find] changed in the debugger: state.note = "fixed by hand" (was nil)')
  local history = T.read_file(dir .. "/.local/state/upkit/history")
  for _, text in ipairs { log, D.run_file(dir, "journal.jsonl"), history } do
    T.ok(not text:find("n3w-t0ken", 1, true), "the new secret is redacted")
    T.ok(not text:find("s3cr3t-token", 1, true), "the old secret is redacted")
  end
  T.contains(history, [["ctx.params.token = '***'"]])
end)

T.test("a second debug prompt in the same run appends only its own lines to the one history", function()
  local dir = failing_run(nil, function(term)
    D.enter(term, "first_prompt = 1")
    local before = #term:screen()
    term:send("retry", "Enter")
    term:wait_for("Step 'find' failed", before)
    term:wait_match("debug>$")
    D.enter(term, "second_prompt = 2")
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end)
  T.eq(T.read_file(dir .. "/.local/state/upkit/history"),
       '"first_prompt = 1"\n"retry"\n"second_prompt = 2"\n"abort"\n')
  T.eq(T.sh("stat -c %a " .. T.q(dir .. "/.local/state/upkit") .. " " .. T.q(dir .. "/.local/state/upkit/history")),
       "700\n600\n")
end)

T.test("a secret holding a quote, a backslash and a tab never prints in clear", function()
  local secret = 'q"b\\s\tt-1'
  local pretty = require "upkit.pretty"
  local json = require "upkit.json"
  local dir = failing_run(nil, function(term)
    D.enter(term, "up")
    local shown = D.enter(term, "locals") .. D.enter(term, "ctx.params") .. D.enter(term, "ctx.params.token")
                  .. D.enter(term, "{ ctx.params.token }") .. D.enter(term, "ctx.params.token .. '!'")
    T.ok(not shown:find(secret, 1, true), shown)
    T.ok(not shown:find(pretty.format(secret):sub(2, -2), 1, true), "not escaped either: " .. shown)
    T.contains(shown, 'token = "***"')
    T.contains(shown, '"***!"')
    D.enter(term, "ctx.state.copy = { ctx.params.token }")
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end, { UPKIT_TOKEN = secret })
  local journal = D.run_file(dir, "journal.jsonl")
  T.eq(D.events(D.journal(dir), "debug-change")[1].state, { copy = { "***" } })
  T.ok(not journal:find(json.encode(secret):sub(2, -2), 1, true), "not in the journal, JSON-escaped or not")
  T.ok(not journal:find(secret, 1, true))
end)

T.test("debugger.changes names what changed; a parameter declared secret is redacted", function()
  local dbg = require "upkit.debugger"
  local before = { params = { a = 1, s = "old", t = { 1, 2 } }, state = { x = true } }
  local after = { params = { a = 2, s = "new-secret-value", t = { 1, 2 } }, state = { y = "v" } }
  local changes = dbg.changes(before, after, function(name) return name == "s" end)
  local names = {}
  for _, c in ipairs(changes) do names[#names + 1] = c.name end
  T.eq(names, { "params.a", "params.s", "state.x", "state.y" })
  T.eq(changes[1].value, 2)
  T.eq(changes[1].was, 1)
  T.eq(changes[2].value, "***")
  T.eq(require("upkit.log").redact("x new-secret-value"), "x ***", "the new value is a secret from now on")
  T.eq(changes[3].value, nil)
  T.eq(#dbg.changes(before, before), 0, "nothing changed")
end)

T.test("Ctrl-D leaves the REPL and the step fails as without --debug (exit 1)", function()
  local dir = failing_run(nil, function(term)
    term:keys("C-d")
    T.eq(term:wait_exit(), 1)
  end)
  T.eq(D.events(D.journal(dir), "run-finished")[1].result, "failed")
end)

T.done()
