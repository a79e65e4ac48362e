-- README's "Upgrading Octopus Deploy" walkthrough, verbatim, against `make sandbox`.
--
-- Starts make sandbox's command in the background, waits for the config it writes,
-- then runs exactly the `upkit ...` lines of the section's ```sh blocks (read from
-- README.md, so the test fails when the README drifts) in the sandbox's folder, in a
-- terminal (tmux) that answers each procedure's one confirmation with the phrase it
-- asks for; each must exit 0. Then stops the sandbox by pid and checks that nothing it
-- or a procedure started is still running.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local proc = require "upkit.proc"
local upkit = require "upkit"
local http = require "upkit.http"
local pty = require "pty"

-- The commands of the walkthrough: every line starting with "upkit " in a ```sh
-- block of the section "## Upgrading Octopus Deploy".
local function readme_commands()
  local text = assert(T.read_file("README.md"))
  local section = text:match("\n## Upgrading Octopus Deploy\n(.-)\n## ")
  assert(section, "README.md has no section 'Upgrading Octopus Deploy'")
  local cmds = {}
  for block in section:gmatch("```sh\n(.-)```") do
    for line in block:gmatch("[^\n]+") do
      if line:match("^upkit ") then cmds[#cmds + 1] = line end
    end
  end
  return cmds
end

local function running(pattern)
  return tonumber((T.sh("pgrep -f " .. T.q(pattern) .. " | wc -l")):match("%d+"))
end

local function version_at(url, key)
  local c <close> = http.client { base = url, headers = { ["X-Octopus-ApiKey"] = key }, timeout = 10 }
  return c:get("/api", { expect = { 200 } }):json().Version
end

-- Run a shell command line in a terminal from folder dir; answer "Type 'X' to
-- continue" with X; PATH is path. -> exit status, screen, the phrases answered.
local function in_terminal(dir, line, path)
  local code, screen, answered = nil, "", {}
  pty.run("cd " .. T.q(dir) .. " && export PATH=" .. T.q(path) .. " && eval " .. T.q(line), function(term)
    local deadline = upkit.now() + 75
    while upkit.now() < deadline do
      local s = T.read_file(term.status_file)
      screen = term:screen()
      if s and s:match("%d+") then code = tonumber(s:match("%d+")) return end
      local phrase = screen:match("Type '([^']+)' to continue:%s*$")
      if phrase and not answered[#answered] then
        answered[#answered + 1] = phrase
        term:send(phrase, "Enter")
      end
      upkit.sleep(0.1)
    end
    T.fail("timed out: " .. line .. "\n" .. screen)
  end)
  return code, screen, answered
end

T.test("README's 'Upgrading Octopus Deploy' commands run verbatim against make sandbox, which then stops everything", function()
  local cmds = readme_commands()
  local names = {}
  for i, c in ipairs(cmds) do names[i] = c:match("^upkit run (%S+)") end
  T.eq(table.concat(names, " "), "preflight backup clone-instance in-place-upgrade rollback",
       "the walkthrough's procedures, in order")

  local dir = T.tmpdir()
  local sb = dir .. "/sandbox"
  local bin = T.upkit_bin()
  if bin:sub(1, 1) ~= "/" then bin = os.getenv("PWD") .. "/" .. bin end
  T.sh("mkdir -p " .. T.q(dir .. "/bin") .. " && ln -s " .. T.q(bin) .. " " .. T.q(dir .. "/bin/upkit"))
  local path = dir .. "/bin:" .. os.getenv("PATH")

  -- make sandbox's command, in the background
  local sandbox = proc.spawn({ "sh", "-c", "exec python3 tests/sim/octosim.py sandbox --dir " .. T.q(sb) ..
                               " >" .. T.q(dir .. "/sandbox.log") .. " 2>&1" }, { stdout = "null", stderr = "null" })
  local pid = sandbox:pid()

  local ok, err = pcall(function()
    local deadline = upkit.now() + 60
    repeat upkit.sleep(0.2)
    until (T.read_file(dir .. "/sandbox.log") or ""):find("Press Ctrl-C", 1, true) or upkit.now() > deadline
      or not sandbox:running()
    local log = T.read_file(dir .. "/sandbox.log") or ""
    T.contains(log, "Press Ctrl-C", "the sandbox is ready:\n" .. log)
    local site = dofile(sb .. "/site.lua")
    T.contains(log, "return {", "the config is printed")
    T.eq(T.sh("stat -c %a " .. T.q(sb .. "/octopus.key")), "600\n", "the API key's file is private")
    local key = T.read_file(site.api_key_file):gsub("%s+$", "")
    for _, line in ipairs(cmds) do
      local t0 = upkit.now()
      local code, screen, answered = in_terminal(sb, line, path)
      T.eq(code, 0, line .. "\n" .. screen:sub(-3000))
      T.contains(screen, "Result: success", line)
      io.stdout:write(string.format("# %s: %.1fs%s\n", line:match("^%S+ %S+ %S+"), upkit.now() - t0,
                                    #answered > 0 and (", confirmed with '" .. answered[1] .. "'") or ""))
      if line:match("^upkit run rollback") then
        T.ok(#answered == 1, "rollback asked once before its first change")
      end
    end
    T.eq(version_at(site.server_url, key), "3.17.14", "rolled back: the main server runs 3.17.14 again")
    T.ok(version_at(site.clone_url, key):match("^2025%.4%."), "the clone runs the newest version")
    T.ok(running("[o]ctosim.*serve.*" .. sb .. "/new-server") == 1, "the clone's service runs before the stop")
  end)

  -- stop the sandbox by pid, as Ctrl-C / SIGTERM would
  T.sh("kill -TERM " .. pid)
  local r = sandbox:wait(40)
  if not ok then error(err, 0) end
  T.ok(r ~= nil, "the sandbox stopped within 40 s")
  T.eq(r.code, 0, "the sandbox's exit status")
  T.contains(T.read_file(dir .. "/sandbox.log"), "sandbox stopped (3 processes)",
             "main service, clone service and download site stopped")
  -- a stopped 2019+ node marks itself offline a moment later (a child of the server): give it 10 s
  local left
  for _ = 1, 40 do
    left = running("[o]ctosim.*" .. sb)
    if left == 0 then break end
    upkit.sleep(0.25)
  end
  T.eq(left, 0, "nothing the sandbox or a procedure started is still running")
end)

T.done()
