-- SQL backup and restore: upkit's logical backup of a 1,000,000-row
-- PostgreSQL table against pg_dump, its restore against psql loading that
-- dump, SQLite backup against `sqlite3 DB .dump`, and the peak memory of
-- the backup at two sizes (it should stay flat as rows grow).
package.path = "tests/bench/?.lua;tests/lib/?.lua;" .. package.path
local B = require "benchlib"
local pgmod = require "pg"
local drivers = require "odbc.drivers"

local dir = B.workdir() .. "/sql"
B.sh("rm -rf " .. B.q(dir) .. " && mkdir -p " .. B.q(dir) .. " && chmod 777 " .. B.q(dir))
local pg = pgmod.start()
local ok, err = pcall(function()
  local ROWS = 1000000
  local function make_table(db, name, n)
    pg.psql(string.format([[CREATE TABLE %s (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL,
      amount NUMERIC(12,2), created TIMESTAMP, flag BOOLEAN, qty INTEGER);
      INSERT INTO %s SELECT g, 'customer ' || g, (g %% 100000) / 100.0,
        timestamp '2020-01-01' + g * interval '1 second', g %% 2 = 0, g %% 1000
      FROM generate_series(1, %d) g;]], name, name, n), db)
  end
  pg.createdb("small")
  pg.createdb("big")
  make_table("small", "orders", ROWS // 4)
  make_table("big", "orders", ROWS)

  -- One upkit child run: wall seconds and peak RSS (KiB) from /usr/bin/time -v.
  local function upkit_run(code)
    local script = dir .. "/run.lua"
    local f = assert(io.open(script, "w"))
    f:write(code)
    f:close()
    local out = B.sh(string.format("/usr/bin/time -v %s run %s 2>&1", B.q(B.bin()), B.q(script)))
    local rss = tonumber(out:match("Maximum resident set size %(kbytes%): (%d+)"))
    local wall = out:match("Elapsed %(wall clock%) time %(h:mm:ss or m:ss%): ([%d:%.]+)")
    local secs = 0
    for part in wall:gmatch("[%d%.]+") do secs = secs * 60 + tonumber(part) end
    return secs, rss
  end

  local function backup_code(db, file)
    return string.format("local sql = require 'upkit.sql'\nlocal db = sql.connect(%q)\nsql.backup(db, { to = %q })\n",
      pg.conn_for(db), file)
  end

  local bak = dir .. "/orders.lbak"
  local t_small, rss_small = upkit_run(backup_code("small", dir .. "/small.lbak"))
  local t_backup, rss_big = math.huge, 0
  for _ = 1, 2 do
    os.remove(bak)
    local t, rss = upkit_run(backup_code("big", bak))
    if t < t_backup then t_backup, rss_big = t, rss end
  end
  local dump = dir .. "/orders.sql"
  local t_pgdump = B.sh_time(pg.env() .. " pg_dump -d big -t orders -f " .. B.q(dump), 2)
  B.report { name = "sql.backup PostgreSQL logical, 1M rows", unit = "rows/s", upkit = ROWS / t_backup,
             tool = "pg_dump -t orders", other = ROWS / t_pgdump, aim = 0.5 }

  local n = 0
  local function fresh()
    n = n + 1
    local name = "r" .. n
    pg.createdb(name)
    return name
  end
  local t_restore = math.huge
  for _ = 1, 2 do
    local name = fresh()
    local t = upkit_run(string.format("local sql = require 'upkit.sql'\nsql.restore(%q, { from = %q })\n",
      pg.conn_for(name), bak))
    t_restore = math.min(t_restore, t)
  end
  local t_psql = math.huge
  for _ = 1, 2 do
    local name = fresh()
    t_psql = math.min(t_psql, B.sh_time(pg.env() .. " psql -X -q -d " .. name .. " -f " .. B.q(dump) .. " >/dev/null", 1))
  end
  B.report { name = "sql.restore PostgreSQL logical, 1M rows", unit = "rows/s", upkit = ROWS / t_restore,
             tool = "psql -f pg_dump output", other = ROWS / t_psql, aim = 0.3 }

  io.stdout:write(string.format("%-44s %10.1f MiB at 250k rows, %.1f MiB at 1M rows (aim: under 64 MiB, flat: %s)\n",
    "sql.backup PostgreSQL peak RSS", rss_small / 1024, rss_big / 1024,
    (rss_big < 64 * 1024 and rss_big < rss_small * 1.25) and "met" or "NOT MET"))

  -- A text column (unbounded: psqlODBC declares it 255 wide) of about 300 bytes a value
  local TEXT_ROWS = 200000
  pg.createdb("notes")
  pg.psql(string.format([[CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);
    INSERT INTO notes SELECT g, repeat('note ' || g || ' ', 30) FROM generate_series(1, %d) g;]], TEXT_ROWS), "notes")
  local t_text = math.huge
  for _ = 1, 2 do
    os.remove(dir .. "/notes.lbak")
    t_text = math.min(t_text, (upkit_run(backup_code("notes", dir .. "/notes.lbak"))))
  end
  local t_textdump = B.sh_time(pg.env() .. " pg_dump -d notes -t notes -f " .. B.q(dir .. "/notes.sql"), 2)
  B.report { name = "sql.backup PostgreSQL, 200k rows of ~300 B text", unit = "rows/s", upkit = TEXT_ROWS / t_text,
             tool = "pg_dump -t notes", other = TEXT_ROWS / t_textdump, aim = 0.5 }

  -- SQLite: VACUUM INTO backup against sqlite3 .dump
  local lite = dir .. "/orders.db"
  B.sh(string.format([[sqlite3 %s "CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC,
    created TIMESTAMP, flag BOOLEAN, qty INTEGER);
    WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %d)
    INSERT INTO orders SELECT i, 'customer ' || i, (i %% 100000) / 100.0, datetime('2020-01-01', '+' || i || ' seconds'),
      i %% 2 = 0, i %% 1000 FROM g;"]], B.q(lite), ROWS))
  local t_lite = math.huge
  for _ = 1, 3 do
    local t = upkit_run(string.format("local sql = require 'upkit.sql'\nlocal db = sql.connect(%q)\nsql.backup(db, { to = %q })\n",
      drivers.sqlite_conn(lite), dir .. "/orders.db.bak"))
    t_lite = math.min(t_lite, t)
  end
  local t_dump = B.sh_time("sqlite3 " .. B.q(lite) .. " .dump > " .. B.q(dir .. "/orders.db.sql"), 3)
  B.report { name = "sql.backup SQLite (VACUUM INTO), 1M rows", unit = "rows/s", upkit = ROWS / t_lite,
             tool = "sqlite3 DB .dump", other = ROWS / t_dump, aim = 1.0 }
end)
pg.stop()
B.sh("rm -rf " .. B.q(dir))
if not ok then error(err, 0) end
