-- pg: a throw-away PostgreSQL server for tests and benchmarks.
--
--   package.path = "tests/lib/?.lua;" .. package.path
--   local pg = require("pg").start()      -- initdb, start, create database "upkit"
--   pg.conn                 -- ODBC connection string (psqlODBC by path) to that database
--   pg.port, pg.dir, pg.pid, pg.user, pg.password, pg.bin
--   pg.createdb(name)       -- create a database, return its ODBC connection string
--   pg.conn_for(name, extra) -- connection string for database name (+ ";extra")
--   pg.psql(sql [, db])     -- run SQL through psql, return its output (raises on failure)
--   pg.env()                -- "PGHOST=... PGPORT=... PGUSER=... PGPASSWORD=..." for shell commands
--   pg.stop()               -- stop the server (by pid) and wait for it; idempotent
--
-- The server listens on 127.0.0.1 on a free port and on a socket in its own
-- folder; when run as root it runs as the unprivileged user postgres (or
-- nobody). It is stopped when the table is collected or the state closes.
-- The user "upkit" (a superuser) logs in with a password over TCP.
-- The connection string sets UseDeclareFetch=1;Fetch=10000 (block fetch in
-- constant memory) and BoolsAsChar=0 (booleans as SQL_BIT).
local drivers = require "odbc.drivers"

local M = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1", "r")
  local out = p:read("a")
  local ok, _, status = p:close()
  return out, ok, status
end

local function must(cmd)
  local out, ok = sh(cmd)
  if not ok then error("pg: command failed: " .. cmd .. "\n" .. out, 2) end
  return out
end

local function bindir()
  local out = sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1")
  local d = out:match("^(%S+)")
  if not d then error("pg: no PostgreSQL server binaries; install the Debian package postgresql (make deps)") end
  return d
end

local function is_root()
  return (sh("id -u")):match("^0") ~= nil
end

local function service_user()
  local _, ok = sh("id -u postgres")
  return ok and "postgres" or "nobody"
end

function M.start(opts)
  opts = opts or {}
  local self = { user = "upkit", password = "upkit-secret", bin = bindir() }
  local base = os.getenv("TMPDIR") or "/tmp"
  self.dir = (must("mktemp -d " .. q(base .. "/upkit-pg.XXXXXX"))):match("^(%S+)")
  local data = self.dir .. "/data"
  local as = ""
  if is_root() then
    local u = service_user()
    must("chown " .. u .. " " .. q(self.dir))
    as = "runuser -u " .. u .. " -- "
  end
  self.as = as
  local pwfile = self.dir .. "/pw"
  must("umask 077; printf %s " .. q(self.password) .. " > " .. q(pwfile))
  if as ~= "" then must("chown " .. as:match("-u (%S+)") .. " " .. q(pwfile)) end
  must(as .. q(self.bin .. "/initdb") .. " -D " .. q(data) .. " -U " .. self.user ..
       " --pwfile=" .. q(pwfile) .. " --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 -N")
  os.remove(pwfile)
  local started = false
  for _ = 1, 20 do
    self.port = math.random(20000, 60000)
    local _, ok = sh(as .. q(self.bin .. "/pg_ctl") .. " start -w -t 60 -D " .. q(data) ..
      " -l " .. q(self.dir .. "/log") .. " -o " ..
      q("-p " .. self.port .. " -k " .. self.dir .. " -c listen_addresses=127.0.0.1 -c fsync=off" ..
        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=40" ..
        (opts.settings and (" " .. opts.settings) or "")))
    if ok then started = true break end
    local log = sh("cat " .. q(self.dir .. "/log"))
    if not log:find("already in use", 1, true) and not log:find("could not bind", 1, true) then
      error("pg: server did not start:\n" .. log)
    end
  end
  if not started then error("pg: no free port found") end
  local pidline = must("head -1 " .. q(data .. "/postmaster.pid"))
  self.pid = tonumber(pidline:match("%d+"))

  function self.env()
    return "PGHOST=127.0.0.1 PGPORT=" .. self.port .. " PGUSER=" .. self.user ..
      " PGPASSWORD=" .. q(self.password)
  end

  function self.psql(sqltext, db)
    return must(self.env() .. " psql -X -q -v ON_ERROR_STOP=1 -d " .. q(db or "upkit") ..
                " -At -c " .. q(sqltext))
  end

  function self.conn_for(name, extra)
    return "Driver=" .. drivers.postgres() .. ";Server=127.0.0.1;Port=" .. self.port ..
      ";Database=" .. name .. ";Uid=" .. self.user .. ";Pwd=" .. self.password ..
      ";UseDeclareFetch=1;Fetch=10000;BoolsAsChar=0" .. (extra and (";" .. extra) or "")
  end

  function self.createdb(name)
    self.psql('CREATE DATABASE "' .. name:gsub('"', '""') .. '"', "postgres")
    return self.conn_for(name)
  end

  function self.stop()
    if not self.pid then return end
    local pid = self.pid
    self.pid = nil
    os.execute("kill -INT " .. pid .. " 2>/dev/null")
    for _ = 1, 300 do
      local _, alive = sh("kill -0 " .. pid)
      if not alive then break end
      os.execute("sleep 0.1")
    end
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    os.execute("rm -rf " .. q(self.dir))
  end

  self.createdb("upkit")
  self.conn = self.conn_for("upkit")
  return setmetatable(self, { __gc = function(t) t.stop() end })
end

return M
