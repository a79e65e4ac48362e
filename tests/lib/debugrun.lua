-- debugrun: run a procedure under `upkit run ... --debug | --step` in a
-- terminal (tmux, through pty) for the debugger's tests.
--
--   local D = require "debugrun"
--   local dir = D.procedure(source)              -- a temp folder holding p.lua
--   D.session(dir, "--debug --set x=1", function(term) ... end)
--   local out = D.enter(term, "locals")          -- type a line, wait for the
--                                                -- next "debug>" prompt, return
--                                                -- the text printed since
--   D.journal(dir) -> records of the run's journal; D.events(recs, event)
--   D.run_file(dir, "log.txt") -> a file of the run folder
local T = require "upkit.test"
local lfs = require "lfs"
local pty = require "pty"
local R = require "runs"

local M = {}

-- A temp folder with the procedure `source` as p.lua.
function M.procedure(source)
  local dir = T.tmpdir()
  T.write_file(dir .. "/p.lua", source)
  return dir
end

-- Run `upkit run ./p.lua ARGS` in dir, in a terminal with HOME=dir.
function M.session(dir, args, fn, env)
  env = env or {}
  env.HOME = dir
  env.XDG_STATE_HOME = env.XDG_STATE_HOME or ""
  local command = string.format("cd %s && exec %s run ./p.lua %s", T.q(dir), T.q(T.upkit_bin()), args)
  pty.run("sh -c " .. T.q(command), fn, { env = env })
end

-- Type a line and wait for the prompt (a last line matching `prompt`,
-- default "debug>") to come back; the text shown since.
function M.enter(term, line, prompt)
  local before = #term:screen()
  term:send(line, "Enter")
  local screen = term:wait_match((prompt or "debug>") .. "$", before)
  return screen:sub(before + 1)
end

-- The text of a file (journal.jsonl, log.txt) of the only run under dir/upkit-runs.
function M.run_file(dir, file)
  local runs = dir .. "/upkit-runs"
  for name in lfs.dir(runs) do
    if name:sub(1, 1) ~= "." then return T.read_file(runs .. "/" .. name .. "/" .. file) end
  end
  T.fail("no run folder under " .. runs)
end

-- The records of the only run's journal under dir/upkit-runs.
function M.journal(dir) return R.parse(M.run_file(dir, "journal.jsonl")) end

-- The records of `event` (with field = value for each pair of `where`).
M.events = R.find

return M
