-- upkit.sql under stress: diagnostics of any length, statements closed on
-- the error path, two statements of one connection at once (one fetching
-- ahead), psqlODBC's log files, and the error vocabulary of the SQL layer.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local upkit = require "upkit"
local drivers = require "odbc.drivers"
local pg = require("pg").start()

local dir = T.tmpdir()

local function open_handles(kind)
  local n = 0
  for _, h in ipairs(upkit.open_handles()) do if h == kind then n = n + 1 end end
  return n
end

for _, len in ipairs { 3000, 100000 } do
  T.test(string.format("a diagnostic of %d characters raises a capped message and keeps the whole text", len), function()
    local db <close> = sql.connect(pg.conn)
    local value = string.rep("x", len)
    local e = T.raises("SQL_ERROR", db.exec, db, "SELECT CAST(? AS integer)", value)
    T.eq(e.sqlstate, "22P02")
    T.ok(#e.message < 1600, "message capped: " .. #e.message .. " bytes")
    T.contains(e.message, "db:exec")
    T.contains(e.message, "diagnostics")
    local whole = table.concat((function()
      local t = {}
      for i, d in ipairs(e.diagnostics) do t[i] = d.message end
      return t
    end)(), "\n")
    T.ok(#whole > #e.message, "the diagnostics hold more than the message")
    T.eq(db:first("SELECT 1 AS x").x, 1, "the connection still works")
  end)
end

T.test("a long value the server refuses inside a restore block raises SQL_ERROR, no crash", function()
  local bf = require "upkit._backupfile"
  local logical = require "upkit.sql.logical"
  local json = require "upkit.json"
  local file = dir .. "/long.lbak"
  do
    local w <close> = bf.writer(file, logical.MAGIC)
    w:record("H", json.encode { format = "upkit-logical-backup", version = 2, tables = { "t" } })
    w:record("T", json.encode { name = "t", columns = { { name = "n", type = "integer", nullable = true } },
      primary_key = json.array {}, unique = json.array {} })
    w:record("R", string.pack("<I4", 2) .. "(1)\n(" .. string.rep("y", 50000) .. ")")
    w:record("E", json.encode { rows = 2 })
    w:finish()
  end
  T.eq(sql.verify(file).rows, 2)
  local target = pg.createdb("longrefused")
  local e = T.raises("SQL_ERROR", sql.restore, target, { from = file })
  T.ok(#e.message < 1600, "message capped")
  local t <close> = sql.connect(target)
  T.eq(#logical.user_tables(t, "postgresql"), 0, "nothing left")
end)

T.test("db:exec, db:open and db:prepare that fail close their statement at once", function()
  local db <close> = sql.connect(pg.conn)
  local before = open_handles("upkit.sql.Statement")
  collectgarbage("stop")
  T.raises("SQL_ERROR", db.exec, db, "SELEC 1")
  T.raises("SQL_ERROR", db.open, db, "SELECT * FROM no_such_table")
  local lite <close> = sql.connect(drivers.sqlite_conn(dir .. "/prep.db"))  -- SQLite prepares at once
  T.raises("SQL_ERROR", lite.prepare, lite, "SELECT * FROM no_such_table")
  T.raises("EINVAL", db.exec, db, "SELECT ?", {})
  T.raises("EINVAL", db.catalog, db, "nope")
  local after = open_handles("upkit.sql.Statement")
  collectgarbage("restart")
  T.eq(after, before, "no statement left for the garbage collector")
end)

T.test("two statements of one connection at once: one fetching ahead, the other running queries", function()
  local db <close> = sql.connect(pg.conn)
  db:exec("CREATE TABLE ahead AS SELECT g AS id, md5(CAST(g AS text)) AS h FROM generate_series(1, 60000) g")
  db:begin()  -- psqlODBC keeps several cursors of one connection open inside a transaction
  local st <close> = db:open("SELECT id, h FROM ahead ORDER BY id")
  local rows, sum, queries = 0, 0, 0
  while true do
    local block, n = st:dump(1000, 1 << 20, true)  -- the next block is fetched by a thread meanwhile
    if not block then break end
    rows = rows + n
    local p = 5
    for _ = 1, n do
      local id
      id, p = string.unpack("<i8", block, p + 1)
      sum = sum + id
      local _, np = string.unpack("<s4", block, p + 1)
      p = np
    end
    -- meanwhile the same connection serves other statements: each waits for the thread
    local k = rows // 1000
    T.eq(db:first("SELECT h FROM ahead WHERE id = ?", k).h, db:first("SELECT md5(CAST(? AS text)) AS h", k).h)
    T.eq(db:exec("UPDATE ahead SET h = h WHERE id = ?", k), 1)
    queries = queries + 3
  end
  db:rollback()
  T.eq(rows, 60000)
  T.eq(sum, 60000 * 60001 // 2)
  T.eq(queries, 180)
  db:exec("DROP TABLE ahead")
end)

T.test("a statement fetching ahead answers BUSY to its own fetch; a closed handle CLOSED", function()
  local db <close> = sql.connect(pg.conn)
  db:begin()
  local st = db:open("SELECT g AS id FROM generate_series(1, 5000) g")
  T.ok(st:dump(100, 1 << 20, true))
  T.raises("BUSY", st.fetch, st)
  st:close()
  T.raises("CLOSED", st.fetch, st)
  db:rollback()
  T.raises("EINVAL", db.begin, nil)
  T.raises("EINVAL", st.fetch, 42)
end)

T.test("db:cancel stops a text block running in its thread: INTERRUPTED, and the connection goes on", function()
  local db <close> = sql.connect(pg.conn)
  local st <close> = db:statement()
  local t0 = upkit.now()
  st:start_block("SELECT CAST(1 AS bigint) AS n, CAST(pg_sleep(20) AS text) AS t")
  upkit.sleep(0.3)
  T.eq(db:cancel(), true)
  local e = T.raises("INTERRUPTED", st.finish_block, st)
  T.eq(e.sqlstate, "57014", "PostgreSQL's query_canceled")
  T.ok(upkit.now() - t0 < 5, "stopped early")
  T.eq(db:first("SELECT 2 AS x").x, 2)
  T.eq(T.raises("TIMEOUT", db.exec, db, "SET statement_timeout = 100; SELECT pg_sleep(2)").sqlstate, "57014",
    "a server-side statement timeout is TIMEOUT")
end)

T.test("psqlODBC's log files are off: a run leaves no psqlodbc_*.log of its own", function()
  local script = dir .. "/logs.lua"
  T.write_file(script, string.format([[
local sql = require "upkit.sql"
print(require("upkit").pid())
local db = sql.connect(%q)
db:first("SELECT 1 AS x")
db:close()
]], pg.conn))
  local marker = dir .. "/before-run"
  T.write_file(marker, "")
  upkit.sleep(0.05)
  local out = T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(script))
  local pid = out:match("(%d+)")
  T.ok(pid, "the child ran: " .. out)
  -- files of this pid written since the run began (an older file may carry a reused pid)
  local tmp = {}
  for _, d in ipairs { "/tmp", os.getenv("TMPDIR") } do
    local found = T.sh("find " .. T.q(d) .. " -maxdepth 1 -newer " .. T.q(marker) ..
      " \\( -name 'psqlodbc_*' -o -name 'mylog_*' \\) 2>/dev/null")
    for path in found:gmatch("[^\n]+") do
      if path:match("%D" .. pid .. "%.log$") then tmp[#tmp + 1] = path end
    end
  end
  T.eq(tmp, {}, "no log file of process " .. pid .. ": " .. (tmp[1] and T.read_file(tmp[1]) or ""))
  T.eq(sql.conn_value(pg.conn, "CommLog"), nil, "the test's connection string does not set it")
end)

T.test("a connection string that sets CommLog keeps its own value", function()
  local cs = sql.with_value(pg.conn, "CommLog", "0")
  local db <close> = sql.connect(cs)
  T.eq(sql.conn_value(db:connection_string(), "CommLog"), "0")
  T.eq(sql.conn_value(db:connection_string(), "Debug"), "0")
end)

T.test("SQLite errors: SQL_ERROR with the driver's state; CLOSED after close", function()
  local db = sql.connect(drivers.sqlite_conn(dir .. "/e.db"))
  local e = T.raises("SQL_ERROR", db.exec, db, "SELECT * FROM nowhere")
  T.eq(e.sqlstate, "HY000")
  T.eq(type(e.diagnostics[1].message), "string")
  db:close()
  T.raises("CLOSED", db.info, db)
end)

pg.stop()
T.done()
