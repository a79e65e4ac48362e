-- upkit.breakpoint() and upkit run --step in a real terminal (tmux).
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"

local _, has_tmux = T.sh("command -v tmux >/dev/null 2>&1")
if has_tmux ~= 0 then
  T.skip("breakpoints and --step in a terminal", "tmux is not installed")
  T.done()
end

local D = require "debugrun"

-- Step "greet" stops at a breakpoint, then writes its local greeting to
-- greeting.txt; step "after" writes after.txt.
local BREAKPOINT = [[
local upkit = require "upkit"
local function greet(ctx)
  local greeting = "hello " .. ctx.params.who
  upkit.breakpoint()
  local f = assert(io.open("greeting.txt", "w"))
  f:write(greeting, "\n")
  f:close()
end
return {
  name = "greet",
  params = { { name = "who", type = "string", default = "world" } },
  steps = {
    { name = "greet", describe = "write a greeting", run = greet },
    { name = "after", describe = "write after.txt", run = function()
        local f = assert(io.open("after.txt", "w"))
        f:close()
      end },
  },
}
]]

T.test("a breakpoint opens the REPL at its line; changes hold after continue", function()
  local dir = D.procedure(BREAKPOINT)
  D.session(dir, "--debug", function(term)
    local screen = term:wait_match("debug>$")
    T.contains(screen, "Breakpoint at ./p.lua:4 in step 'greet'")
    T.match(D.enter(term, "greeting"), '"hello world"')
    T.contains(D.enter(term, "where"), "-> #1 ./p.lua:4 in")
    D.enter(term, "greeting = 'changed at the breakpoint'")
    term:send("continue", "Enter")
    T.eq(term:wait_exit(), 0)
  end)
  T.eq(T.read_file(dir .. "/greeting.txt"), "changed at the breakpoint\n")
  T.contains(D.run_file(dir, "log.txt"), "DEBUG [greet] debug> greeting = 'changed at the breakpoint'\n",
             "a line typed at a breakpoint is in the log")
  local recs = D.journal(dir)
  local rec = D.events(recs, "debug", { action = "continue" })[1]
  T.eq(rec.step, "greet")
  T.eq(rec.at, "./p.lua:4")
  T.eq(D.events(recs, "run-finished")[1].result, "success")
end)

T.test("Ctrl-D at a breakpoint goes on with the script", function()
  local dir = D.procedure(BREAKPOINT)
  D.session(dir, "--debug", function(term)
    term:wait_match("debug>$")
    term:keys("C-d")
    T.eq(term:wait_exit(), 0)
  end)
  T.eq(T.read_file(dir .. "/greeting.txt"), "hello world\n")
end)

T.test("abort at a breakpoint stops the run (exit 3), resumable", function()
  local dir = D.procedure(BREAKPOINT)
  D.session(dir, "--debug", function(term)
    term:wait_match("debug>$")
    term:send("abort", "Enter")
    T.eq(term:wait_exit(), 3)
  end)
  T.eq(T.read_file(dir .. "/greeting.txt"), nil)
  local recs = D.journal(dir)
  T.eq(#D.events(recs, "debug", { action = "abort", step = "greet" }), 1)
  T.eq(D.events(recs, "step-failed", { step = "greet" })[1].error.code, "ABORTED")
  T.eq(D.events(recs, "run-finished")[1].result, "aborted")
  local out, status = T.sh(string.format("cd %s && %s run ./p.lua --resume </dev/null 2>&1",
                                         T.q(dir), T.q(T.upkit_bin())))
  T.eq(status, 0, out)
  T.eq(T.read_file(dir .. "/greeting.txt"), "hello world\n")
end)

T.test("without --debug a breakpoint does nothing, in a terminal or not", function()
  local dir = D.procedure(BREAKPOINT)
  local out, status = T.sh(string.format("cd %s && %s run ./p.lua </dev/null 2>&1", T.q(dir), T.q(T.upkit_bin())))
  T.eq(status, 0, out)
  T.eq(T.read_file(dir .. "/greeting.txt"), "hello world\n")
  dir = D.procedure(BREAKPOINT)
  D.session(dir, "", function(term)
    T.eq(term:wait_exit(), 0)
    T.ok(not term:screen():find("Breakpoint", 1, true), term:screen())
  end)
  T.eq(T.read_file(dir .. "/greeting.txt"), "hello world\n")
end)

-- Five steps, each appending its name to steps.txt.
local FIVE = [[
local function mark(name)
  return function()
    local f = assert(io.open("steps.txt", "a"))
    f:write(name, "\n")
    f:close()
  end
end
local steps = {}
for i, name in ipairs { "one", "two", "three", "four", "five" } do
  steps[i] = { name = name, describe = "append " .. name .. " to steps.txt", run = mark(name) }
end
return { name = "five", params = { { name = "label", type = "string", default = "L" } }, steps = steps }
]]

local QUESTION = "%[q%]uit%?"

T.test("--step: yes, no, repl then yes, continue runs the rest without asking", function()
  local dir = D.procedure(FIVE)
  D.session(dir, "--step", function(term)
    local screen = term:wait_match(QUESTION .. "$")
    T.contains(screen, "Next step 'one': append one to steps.txt")
    T.contains(screen, "[y]es / [n]o (skip) / [c]ontinue without asking / [r]epl / [q]uit?")
    T.contains(D.enter(term, "y", QUESTION), "Next step 'two'")
    T.contains(D.enter(term, "maybe", QUESTION), "Answer y, n, c, r or q.")
    T.contains(D.enter(term, "n", QUESTION), "Next step 'three'")
    D.enter(term, "r")
    T.match(D.enter(term, "ctx.params.label"), '"L"')
    T.match(D.enter(term, "ctx.step"), '"three"')
    term:send("ctx.para", "Tab")
    term:wait_match("debug> ctx%.params$")
    term:keys("C-c")
    D.enter(term, "ctx.params.label = 'M'")
    T.contains(D.enter(term, "back", QUESTION), "[q]uit?")
    T.contains(D.enter(term, "y", QUESTION), "Next step 'four'")
    term:send("c", "Enter")
    T.eq(term:wait_exit(), 0)
  end)
  T.eq(T.read_file(dir .. "/steps.txt"), "one\nthree\nfour\nfive\n")
  local recs = D.journal(dir)
  local answers = {}
  for _, r in ipairs(D.events(recs, "debug", { by = "--step" })) do answers[#answers + 1] = r.step .. "=" .. r.action end
  T.eq(table.concat(answers, " "), "one=yes two=skip three=yes four=continue")
  local change = D.events(recs, "debug-change", { step = "three", at = "--step" })
  T.eq(#change, 1, "the change made in --step's REPL is journalled")
  T.eq(change[1].params, { label = "M" })
  T.eq(D.events(recs, "step-skipped", { step = "two" })[1].reason, "operator")
  T.eq(D.events(recs, "run-finished")[1].result, "success")
end)

T.test("--step: quit stops before the step (exit 3)", function()
  local dir = D.procedure(FIVE)
  D.session(dir, "--step", function(term)
    D.enter(term, "y", QUESTION)
    term:send("q", "Enter")
    T.eq(term:wait_exit(), 3)
  end)
  T.eq(T.read_file(dir .. "/steps.txt"), "one\n")
  local recs = D.journal(dir)
  T.eq(#D.events(recs, "debug", { action = "quit", step = "two" }), 1)
  T.eq(D.events(recs, "run-finished")[1].result, "aborted")
end)

T.test("--step: Ctrl-D at the question quits (exit 3)", function()
  local dir = D.procedure(FIVE)
  D.session(dir, "--step", function(term)
    term:wait_match(QUESTION .. "$")
    term:keys("C-d")
    T.eq(term:wait_exit(), 3)
  end)
  T.eq(T.read_file(dir .. "/steps.txt"), nil)
end)

T.test("--step without --debug: a failing step fails (exit 1), no REPL", function()
  local dir = D.procedure([[
return { name = "bad", steps = { { name = "boom", run = function() error("boom") end } } }
]])
  D.session(dir, "--step", function(term)
    term:wait_match(QUESTION .. "$")
    term:send("y", "Enter")
    T.eq(term:wait_exit(), 1)
    T.ok(not term:screen():find("debug>", 1, true), term:screen())
  end)
end)

T.done()
