-- Servers for the http and octopus tests, started in the background and
-- stopped by pid. A watchdog shell stops the server when the test process
-- is gone, so a crashed test leaves nothing running.
--   local S = require "httpd"   (package.path gets tests/lib/?.lua)
--   local srv = S.start(T, "python3 tests/lib/httpd.py")  --> { url, pid, out, stop }
local upkit = require "upkit"

local S = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
S.q = q

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local d = f:read("a")
  f:close()
  return d
end

local Server = {}
Server.__index = Server

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = (read(self.dir .. "/pid") or ""):match("%d+")
  if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  os.execute("kill " .. self.pid .. " 2>/dev/null")
end

Server.__gc = Server.stop

-- S.start(T, cmd [, timeout]) -> server; the first line the command prints is its url.
function S.start(T, cmd, timeout)
  local dir = T.tmpdir()
  local script = string.format(
    "%s > %s 2> %s & p=$!; echo $p > %s; w=$PPID; " ..
    "trap 'kill $p 2>/dev/null; exit 0' TERM; " ..
    "while kill -0 $w 2>/dev/null && kill -0 $p 2>/dev/null; do sleep 0.3; done; kill $p 2>/dev/null",
    cmd, q(dir .. "/out"), q(dir .. "/err"), q(dir .. "/pid"))
  local p = io.popen("(" .. script .. ") >/dev/null 2>&1 & echo $!")
  local pid = p:read("l")
  p:close()
  local srv = setmetatable({ pid = pid, dir = dir }, Server)
  local deadline = upkit.now() + (timeout or 15)
  while upkit.now() < deadline do
    local out = read(dir .. "/out") or ""
    local line = out:match("^([^\n]*)\n")
    if line then
      srv.url = line
      srv.out = out
      return srv
    end
    upkit.sleep(0.05)
  end
  srv:stop()
  error("server did not start: " .. cmd .. "\n" .. (read(dir .. "/err") or ""))
end

-- S.httpd(T [, args]) -> the protocol-corner server of tests/lib/httpd.py
function S.httpd(T, args)
  return S.start(T, "exec python3 tests/lib/httpd.py " .. (args or ""))
end

-- S.octosim(T, version [, create_args]) -> info, server: a simulated Octopus
-- instance (octosim create's JSON) served with its download site.
function S.octosim(T, version, args)
  local json = require "upkit.json"
  local dir = T.tmpdir()
  local p = io.popen(string.format("python3 tests/sim/octosim.py create --home %s --version %s %s",
    q(dir), q(version), args or ""))
  local out = p:read("a")
  local ok = p:close()
  if not ok then error("octosim create failed: " .. out) end
  local info = json.decode(out)
  local srv = S.start(T, string.format("exec python3 tests/sim/octosim.py serve --home %s --port 0 --downloads %s",
    q(info.home), q(info.downloads)))
  return info, srv
end

-- S.sqlite(db, sql): run statements on the simulator's database
function S.sqlite(db, sql)
  local p = io.popen("sqlite3 " .. q(db) .. " 2>&1", "w")
  p:write(sql)
  local ok = p:close()
  if not ok then error("sqlite3 failed: " .. sql) end
end

-- S.stderr(srv) -> what the server wrote on stderr so far
function S.stderr(srv) return read(srv.dir .. "/err") or "" end

return S
