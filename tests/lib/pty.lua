-- pty: drive a program in a real terminal, through tmux.
--
--   local pty = require "pty"
--   pty.run(command, function(term)            -- command: a shell string
--     term:wait_for("> ")                      -- screen text, polled, bounded
--     term:send("1+1", "Enter")                -- text is typed literally; key names
--     term:wait_for("2")                       --   are Enter, Tab, C-c, C-d, Up, ...
--     term:keys("C-d")
--     T.eq(term:wait_exit(), 0)                -- the command's exit status
--   end)
--
-- Each run has its own tmux server (its socket in the run's own temporary
-- folder, so that no two test files share tmux's folder of sockets), with no
-- configuration file, killed when the function returns or fails. The pane
-- stays on screen after the command exits.
local T = require "upkit.test"
local upkit = require "upkit"

local M = {}

M.timeout = 20        -- seconds to wait for text or for the exit (a loaded CI machine is slow)
local POLL = 0.05

local counter = 0
local pid

local function own_pid()
  if not pid then pid = (T.sh("echo $PPID")):match("%d+") end
  return pid
end

local Term = {}
Term.__index = Term

function Term:tmux(args)
  return T.sh("tmux -S " .. T.q(self.socket) .. " " .. args .. " 2>&1")
end

-- term:send(text, key...): type text literally, then press the named keys.
function Term:send(text, ...)
  if text and text ~= "" then self:tmux("send-keys -t upkit -l " .. T.q(text)) end
  if select("#", ...) > 0 then self:keys(...) end
end

-- term:keys(key...): press named keys (Enter, Tab, C-c, C-d, Up...).
function Term:keys(...)
  local names = {}
  for i = 1, select("#", ...) do names[i] = T.q((select(i, ...))) end
  self:tmux("send-keys -t upkit " .. table.concat(names, " "))
end

-- term:screen() -> the scrollback and visible screen, trailing blanks
-- removed, after a line feed: every line, the first too, follows a "\n".
function Term:screen()
  local out = self:tmux("capture-pane -p -J -S - -t upkit")
  return "\n" .. out:gsub("%s+$", "")
end

local function wait(self, what, plain, after)
  local deadline = upkit.now() + M.timeout
  local screen
  repeat
    screen = self:screen()
    if screen:find(what, (after or 0) + 1, plain) then return screen end
    upkit.sleep(POLL)
  until upkit.now() >= deadline
  T.fail(string.format("timed out waiting for %q on the screen:\n%s", what, screen))
end

-- term:wait_for(text [, after]) -> screen: wait until the screen holds text
-- (plain, found past the first `after` bytes of the screen); fails showing
-- the screen after M.timeout seconds. Lines carry no trailing blanks.
function Term:wait_for(text, after) return wait(self, text, true, after) end

-- term:wait_match(pattern [, after]) -> screen: the same with a Lua pattern.
function Term:wait_match(pattern, after) return wait(self, pattern, false, after) end

-- term:wait_prompt([after]): wait for a line that is only the prompt ">".
function Term:wait_prompt(after) return wait(self, "\n>$", false, after) end

-- term:count(text) -> how many times text appears on the screen.
function Term:count(text)
  local screen, n, pos = self:screen(), 0, 1
  while true do
    local s, e = screen:find(text, pos, true)
    if not s then return n end
    n, pos = n + 1, e + 1
  end
end

-- term:wait_exit() -> the command's exit status.
function Term:wait_exit()
  local deadline = upkit.now() + M.timeout
  repeat
    local s = T.read_file(self.status_file)
    if s and s:match("%d+") then return tonumber(s:match("%d+")) end
    upkit.sleep(POLL)
  until upkit.now() >= deadline
  T.fail("timed out waiting for the command to exit; screen:\n" .. self:screen())
end

-- pty.run(command, fn [, opts]): run command (a shell string) in a fresh tmux
-- server with a 100x30 terminal, call fn(term), and always stop the server.
-- opts.env: table of environment variables for the command.
function M.run(command, fn, opts)
  opts = opts or {}
  counter = counter + 1
  local dir = T.tmpdir()
  local term = setmetatable({
    socket = string.format("%s/tmux-%s-%d", dir, own_pid(), counter),
    status_file = dir .. "/status",
  }, Term)
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. T.q(v) end
  table.sort(env)
  local script = string.format("%s %s; echo $? > %s", #env > 0 and ("env " .. table.concat(env, " ")) or "",
                               command, T.q(term.status_file))
  local out, status = term:tmux("-f /dev/null start-server \\; set-option -g remain-on-exit on \\; " ..
                                "new-session -d -s upkit -x 100 -y 30 " .. T.q(script))
  if status ~= 0 then T.fail("tmux new-session failed: " .. out) end
  local ok, err = pcall(fn, term)
  term:tmux("kill-server")
  if not ok then error(err, 0) end
end

return M
