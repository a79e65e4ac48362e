-- Ctrl-C during a long SQL statement: the first SIGINT cancels the statement
-- (SQLCancel) and raises INTERRUPTED; a second one before the first is taken
-- ends the process with exit 130. A child upkit runs SELECT pg_sleep(30) on
-- the test PostgreSQL and gets SIGINT by its pid.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local upkit = require "upkit"
local pg = require("pg").start()

local dir = T.tmpdir()

-- Start `upkit run script` in the background; returns its pid and the file
-- its exit status goes to (written when it ends).
local function spawn(name, body)
  local script, ready = dir .. "/" .. name .. ".lua", dir .. "/" .. name .. ".ready"
  T.write_file(script, string.format([[
local sql = require "upkit.sql"
local upkit = require "upkit"
local db = sql.connect(%q)
local f = io.open(%q, "w") f:close()
%s
]], pg.conn, ready, body))
  local rc, pidfile = dir .. "/" .. name .. ".rc", dir .. "/" .. name .. ".pid"
  local out = dir .. "/" .. name .. ".out"
  os.execute(string.format("sh -c '%s run %s >%s 2>&1 & echo $! >%s; wait $!; echo $? >%s' &",
    T.upkit_bin(), script, out, pidfile, rc))
  local pid
  for _ = 1, 500 do
    pid = tonumber(T.read_file(pidfile) or "")
    if pid and T.read_file(ready) then break end
    upkit.sleep(0.02)
  end
  T.ok(pid and T.read_file(ready), name .. ": the child connected")
  upkit.sleep(0.3)  -- the statement is running on the server now
  return pid, rc, out
end

-- Wait (at most 10 s) for the child's exit status; returns it and the seconds waited.
local function wait_exit(rc)
  local t0 = upkit.now()
  while upkit.now() - t0 < 10 do
    local s = T.read_file(rc)
    if s and s:match("%d") then return tonumber(s:match("%d+")), upkit.now() - t0 end
    upkit.sleep(0.01)
  end
  return nil, upkit.now() - t0
end

T.test("Ctrl-C cancels a long PostgreSQL statement within a second, as INTERRUPTED", function()
  local pid, rc, out = spawn("once", [[
local t0 = upkit.now()
local ok, e = pcall(db.exec, db, "SELECT pg_sleep(30)")
print("result", ok, e and e.code, e and e.sqlstate, string.format("%.2f", upkit.now() - t0))
print("after", db:first("SELECT 7 AS x").x)
db:close()
]])
  local t0 = upkit.now()
  os.execute("kill -INT " .. pid)
  local status = wait_exit(rc)
  local took = upkit.now() - t0
  local text = T.read_file(out) or ""
  T.eq(status, 0, "the script went on and ended normally: " .. text)
  T.ok(took < 1.5, string.format("the child ended %.2f s after Ctrl-C", took))
  local code, secs = text:match("result%s+false%s+(%S+)%s+%S+%s+([%d.]+)")
  T.eq(code, "INTERRUPTED", text)
  T.ok(tonumber(secs) and tonumber(secs) - 0.3 < 1, "the statement stopped within a second of Ctrl-C: " .. tostring(secs) .. " s, 0.3 s of it before")
  T.diag(string.format("Ctrl-C to INTERRUPTED: %.2f s; to the child's exit: %.2f s", (tonumber(secs) or 0) - 0.3, took))
  T.match(text, "after%s+7", "the connection still works after the cancel")
end)

T.test("a second Ctrl-C before the first is taken ends the process with exit 130", function()
  local pid, rc, out = spawn("twice", [[
db:exec("SELECT pg_sleep(30)")
print("not reached")
]])
  os.execute("kill -INT " .. pid .. "; kill -INT " .. pid)
  local status, took = wait_exit(rc)
  T.eq(status, 130, T.read_file(out))
  T.ok(took < 1.5, string.format("ended in %.2f s", took))
  T.ok(not (T.read_file(out) or ""):find("not reached", 1, true), "the script did not go on")
end)

pg.stop()
T.done()
