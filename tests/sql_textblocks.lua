-- The logical backup format, version 2: PostgreSQL tables as text blocks
-- (rows as record text, read by page range through two connections), their
-- restore into PostgreSQL and SQLite, files of version 1, and damaged blocks.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local native = require "upkit._sql"
local bf = require "upkit._backupfile"
local logical = require "upkit.sql.logical"
local json = require "upkit.json"
local drivers = require "odbc.drivers"
local pg = require("pg").start()

local dir = T.tmpdir()
local function lite(name) return drivers.sqlite_conn(dir .. "/" .. name) end

-- The kinds of record in a backup file, counted: { H = 1, T = 2, R = 5, ... }.
local function kinds(file)
  local r <close> = bf.reader(file)
  r:magic(#logical.MAGIC)
  local n = {}
  while true do
    local k = r:next()
    if not k then break end
    n[k] = (n[k] or 0) + 1
  end
  return n
end

-- A backup file written record by record: header version, then for each
-- table { name =, columns =, blocks = { {kind, payload, rows}, ... } }.
local function craft(file, version, tables)
  local w <close> = bf.writer(file, logical.MAGIC)
  local names = {}
  for i, t in ipairs(tables) do names[i] = t.name end
  w:record("H", json.encode { format = "upkit-logical-backup", version = version, tables = names })
  for _, t in ipairs(tables) do
    w:record("T", json.encode { name = t.name, columns = t.columns, primary_key = json.array {}, unique = json.array {} })
    local rows = 0
    for _, b in ipairs(t.blocks) do
      w:record(b[1], string.pack("<I4", b[3]) .. b[2])
      rows = rows + b[3]
    end
    w:record("E", json.encode { rows = rows })
  end
  w:finish()
  return file
end

local src = pg.createdb("kinds")

T.test("every kind of PostgreSQL value goes through text blocks into PostgreSQL unchanged", function()
  local db <close> = sql.connect(src)
  db:exec([[CREATE TABLE kinds (id INTEGER PRIMARY KEY, i2 SMALLINT, i8 BIGINT, r REAL, d DOUBLE PRECISION,
    n NUMERIC, m MONEY, b BOOLEAN, dt DATE, ts TIMESTAMP, tz TIMESTAMPTZ, tm TIME, iv INTERVAL, u UUID,
    j JSON, a TEXT[], by BYTEA, t TEXT, c CHAR(5), v VARCHAR(3))]])
  db:exec([[INSERT INTO kinds VALUES
    (1, -32768, -9223372036854775808, 0.1, 0.1, 123456789012345678901234567890.123456789, 1234.5, true,
     '2020-02-29', '2020-02-29 12:34:56.5', '2020-02-29 12:34:56.5+02', '23:59:59.999999', '1 year 2 days 03:04:05',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": "v \"q\" \\ (x,y)\n"}', '{"a b","c,d",NULL,"\\"}',
     '\x00ff5c22272c28290a', 'q"uo\te (a,b) {c,"d"} ''x'' NULL
	end', 'ab', 'xyz'),
    (2, 32767, 9223372036854775807, 'NaN', 'Infinity', 'NaN', -0.01, false,
     'infinity', '-infinity', 'infinity', '00:00:00', '-1 mons', NULL,
     'null', '{}', '', '', '     ', ''),
    (3, 0, 0, '-Infinity', 5e-324, 0, 0, NULL, '0044-03-15 BC', '0001-01-01 00:00:00 BC', NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL),
    (4, NULL, NULL, 3.4028235e38, -1.7976931348623157e308, -0.5, NULL, NULL, '9999-12-31', '294276-12-31 23:59:59',
     NULL, NULL, NULL, NULL, NULL, NULL, '\x', 'é😀𝄞 ()," \', NULL, NULL)]])
  db:exec("CREATE UNIQUE INDEX kinds_u ON kinds (u)")
  local r = sql.backup(db, { to = dir .. "/kinds.lbak" })
  T.eq(r.rows, 4)
  local k = kinds(r.file)
  T.eq(k.R, 1, "one text block")
  T.eq(k.D, nil, "no value blocks")
  local target = pg.createdb("kinds_copy")
  T.eq(sql.restore(target, { from = r.file }).rows, 4)
  local t <close> = sql.connect(target)
  -- every column's text; money is numeric now
  local cols = "i2, i8, r, d, n, b, dt, ts, tm, u, by, t, c, v"
  local function texts(conn, extra)
    local parts = {}
    for c in cols:gmatch("%w+") do parts[#parts + 1] = "CAST(" .. c .. " AS text) AS " .. c end
    return conn:query("SELECT id, " .. table.concat(parts, ", ") .. extra .. " FROM kinds ORDER BY id")
  end
  local want = texts(db, ", CAST(CAST(CAST(m AS numeric) AS double precision) AS text) AS m, CAST(tz AS text) AS tz, " ..
    "CAST(iv AS text) AS iv, CAST(j AS text) AS j, CAST(a AS text) AS a")
  local got = texts(t, ", CAST(CAST(m AS double precision) AS text) AS m, CAST(tz AS text) AS tz, iv, j, a")
  want.columns, got.columns = nil, nil
  T.eq(got, want)
  local function type_of(col)
    return t:first("SELECT data_type FROM information_schema.columns WHERE table_name = 'kinds' AND column_name = ?", col).data_type
  end
  T.eq(type_of("u"), "uuid")
  T.eq(type_of("tz"), "timestamp with time zone")
  T.eq(t:first("SELECT CAST(tz AS text) AS tz FROM kinds WHERE id = 1").tz,
       db:first("SELECT CAST(tz AS text) AS tz FROM kinds WHERE id = 1").tz, "the same instant")
  T.eq(T.raises("SQL_ERROR", t.exec, t, "INSERT INTO kinds (id) VALUES (1)").sqlstate, "23505")
end)

T.test("text blocks restore into SQLite with exact integers, floats, bytes and ISO timestamps", function()
  local target = lite("kinds.db")
  sql.restore(target, { from = dir .. "/kinds.lbak" })
  local t <close> = sql.connect(target)
  local rows = t:query("SELECT * FROM kinds ORDER BY id")
  T.eq(#rows, 4)
  T.eq(rows[1].i8, math.mininteger)
  T.eq(rows[2].i8, math.maxinteger)
  T.eq(rows[1].i2, -32768)
  T.eq(rows[1].d, 0.1)
  T.eq(rows[3].d, 5e-324)
  -- (the SQLite driver reads the largest double back as -inf: compared inside SQLite)
  T.eq(t:first("SELECT CASE WHEN d = -1.7976931348623157e308 THEN 'same' ELSE 'not' END AS same FROM kinds WHERE id = 4").same, "same")
  T.eq(rows[2].d, math.huge)
  T.eq(rows[3].r, -math.huge)
  T.eq(rows[2].r, sql.null, "NaN has no SQLite value: NULL")
  T.eq(rows[1].b, true)
  T.eq(rows[2].b, false)
  T.eq(rows[3].b, sql.null)
  T.eq(rows[1].by, "\0\255\\\"',()\n")
  T.eq(rows[4].by, "")
  T.eq(rows[3].by, sql.null)
  -- (as text: the SQLite driver reads what is no calendar date in a DATE or TIMESTAMP column as NULL)
  local stamps = t:query("SELECT CAST(ts AS TEXT) AS ts, CAST(dt AS TEXT) AS dt FROM kinds ORDER BY id")
  T.eq(stamps[1].ts, "2020-02-29T12:34:56.5")
  T.eq(stamps[2].ts, "-infinity")
  T.eq(stamps[1].dt, "2020-02-29")
  T.eq(stamps[3].dt, "0044-03-15 BC")
  T.eq(stamps[4].ts, "294276-12-31 23:59:59", "a year past 9999 as PostgreSQL spells it")
  T.match(t:first("SELECT CAST(tz AS TEXT) AS tz FROM kinds WHERE id = 1").tz, "^2020%-02%-29T%d%d:34:56%.5[+-]%d%d",
    "a timestamp with time zone keeps its offset")
  local source <close> = sql.connect(src)
  local texts = source:query("SELECT t FROM kinds ORDER BY id")
  T.match(texts[1].t, "^q\"uo\\te %(a,b%) {c,\"d\"} 'x' NULL\n\tend$")
  T.eq(rows[1].t, texts[1].t)
  T.eq(rows[4].t, texts[4].t)
  T.eq(rows[4].t, "é😀𝄞 (),\" \\")
  T.eq(rows[2].t, "")
  T.eq(rows[3].t, sql.null)
  T.eq(rows[2].c, "     ")
  T.eq(rows[1].a, '{"a b","c,d",NULL,"\\\\"}')
  T.eq(rows[1].j, '{"k": "v \\"q\\" \\\\ (x,y)\\n"}')
end)

T.test("a large table is read in page ranges through two connections from one snapshot", function()
  local db <close> = sql.connect(src)
  db:exec("CREATE TABLE ranges AS SELECT g AS id, md5(CAST(g AS text)) AS h FROM generate_series(1, 120000) g")
  local sum = "SELECT COUNT(*) AS n, SUM(id) AS s, md5(string_agg(h, ',' ORDER BY id)) AS m FROM ranges"
  local before = db:first(sum)
  -- Each block's progress call changes the table through a third connection
  -- and commits: the backup must not see any of it.
  local other <close> = sql.connect(src)
  local calls = 0
  local r = sql.backup(db, { to = dir .. "/ranges.lbak", progress = function(p)
    if p.table == "ranges" then
      calls = calls + 1
      other:exec("DELETE FROM ranges WHERE id % 1000 = ?", calls)
      other:exec("INSERT INTO ranges VALUES (?, 'added')", 1000000 + calls)
      other:exec("UPDATE ranges SET h = 'changed' WHERE id = ?", 60000 + calls)
    end
  end })
  T.ok(calls >= 3, "several blocks (" .. calls .. ")")
  T.ok(kinds(r.file).R >= 3, "several text blocks")
  local target = pg.createdb("ranges_copy")
  sql.restore(target, { from = r.file })
  local t <close> = sql.connect(target)
  T.eq(t:first(sum), before)
  T.ne(db:first(sum), before, "the source did change meanwhile")
  db:exec("DROP TABLE ranges")
end)

T.test("a page range the server cannot send as one value is read again row by row", function()
  local db <close> = sql.connect(src)
  db:exec("CREATE TABLE refusing AS SELECT g AS id, md5(CAST(g AS text)) AS h, CAST('2020-01-01' AS timestamp) AS at " ..
          "FROM generate_series(1, 60000) g")
  local sum = "SELECT COUNT(*) AS n, SUM(id) AS s, md5(string_agg(h || CAST(at AS text), ',' ORDER BY id)) AS m FROM refusing"
  local want = db:first(sum)
  local query = logical.text_block_query
  local failed = 0
  logical.text_block_query = function(name, fields, lo, hi)
    if name:match('"refusing"$') and lo == 0 then
      failed = failed + 1
      return query(name, fields, lo, hi) .. " AND 1 / " .. lo .. " > 0"  -- division by zero
    end
    return query(name, fields, lo, hi)
  end
  local ok, r = pcall(sql.backup, db, { to = dir .. "/refusing.lbak" })
  logical.text_block_query = query
  T.ok(ok, tostring(r))
  T.eq(failed, 1)
  local k = kinds(r.file)
  T.ok(k.D >= 1 and k.R >= 1, "value blocks for the first range, text blocks for the others")
  local target = pg.createdb("refusing_copy")
  sql.restore(target, { from = r.file })
  local t <close> = sql.connect(target)
  T.eq(t:first(sum), want)
  local l = lite("refusing.db")
  sql.restore(l, { from = r.file })
  local lc <close> = sql.connect(l)
  T.eq(lc:first("SELECT COUNT(*) AS n, SUM(id) AS s, MIN(at) AS a, MAX(at) AS b FROM refusing"),
       { n = 60000, s = 60000 * 60001 // 2, a = "2020-01-01T00:00:00", b = "2020-01-01T00:00:00" })
  db:exec("DROP TABLE refusing")
end)

T.test("a restore killed with SIGKILL midway leaves the target database without tables", function()
  local db <close> = sql.connect(src)
  db:exec("CREATE TABLE bulk AS SELECT g AS id, md5(CAST(g AS text)) AS h FROM generate_series(1, 400000) g")
  local r = sql.backup(db, { to = dir .. "/bulk.lbak" })
  db:exec("DROP TABLE bulk")
  local target = pg.createdb("killed_restore")
  local script = dir .. "/restore.lua"
  T.write_file(script, string.format("local sql = require 'upkit.sql'\nsql.restore(%q, { from = %q })\n", target, r.file))
  local pid = tonumber((T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(script) .. " >/dev/null 2>&1 & echo $!")))
  local t <close> = sql.connect(target)
  local loading = false
  for _ = 1, 500 do
    if t:first("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'killed_restore' AND query LIKE 'INSERT INTO%'").n > 0 then
      loading = true
      break
    end
    os.execute("sleep 0.02")
  end
  os.execute("kill -KILL " .. pid)
  T.ok(loading, "the restore was loading rows")
  -- the server ends the dead client's session and rolls its transaction back
  for _ = 1, 250 do
    if t:first("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'killed_restore' AND pid <> pg_backend_pid()").n == 0 then break end
    os.execute("sleep 0.02")
  end
  T.eq(#logical.user_tables(t, "postgresql"), 0)
end)

T.test("a partitioned or inherited table's rows are backed up once, with the table that holds them", function()
  local conn = pg.createdb("parts")
  local db <close> = sql.connect(conn)
  db:exec("CREATE TABLE m (id INTEGER, k INTEGER) PARTITION BY RANGE (k)")
  db:exec("CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (10)")
  db:exec("CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (10) TO (20)")
  db:exec("INSERT INTO m SELECT g, g % 20 FROM generate_series(1, 100) g")
  db:exec("CREATE TABLE base (id INTEGER)")
  db:exec("CREATE TABLE child (extra TEXT) INHERITS (base)")
  db:exec("INSERT INTO base VALUES (1), (2)")
  db:exec("INSERT INTO child VALUES (3, 'x')")
  local want = { base = 2, child = 1, m = 0, m1 = 50, m2 = 50 }
  for _, in_tx in ipairs { false, true } do  -- text blocks, and value blocks inside the caller's transaction
    if in_tx then db:begin() end
    local r = sql.backup(db, { to = dir .. "/parts.lbak" })
    if in_tx then db:rollback() end
    T.eq(r.rows, 103, in_tx and "value blocks" or "text blocks")
    local target = pg.createdb("parts_copy" .. (in_tx and "_tx" or ""))
    local got = {}
    for _, t in ipairs(sql.restore(target, { from = r.file }).tables) do got[t.name] = t.rows end
    T.eq(got, want)
    os.remove(r.file)
  end
end)

T.test("tables of the same name in two schemas restore into PostgreSQL apart, each in its schema", function()
  local conn = pg.createdb("schemas")
  local db <close> = sql.connect(conn)
  db:exec("CREATE SCHEMA sales")
  db:exec('CREATE SCHEMA "odd ""name"""')
  db:exec("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
  db:exec("CREATE TABLE sales.items (id INTEGER PRIMARY KEY, amount NUMERIC(8,2))")
  db:exec('CREATE TABLE "odd ""name""".items (k TEXT)')
  db:exec("INSERT INTO items VALUES (1, 'public')")
  db:exec("INSERT INTO sales.items VALUES (1, 9.5), (2, 10)")
  db:exec([[INSERT INTO "odd ""name""".items VALUES ('a'), ('b'), ('c')]])
  local r = sql.backup(db, { to = dir .. "/schemas.lbak" })
  T.eq(r.rows, 6)
  local target = pg.createdb("schemas_copy")
  sql.restore(target, { from = r.file })
  local t <close> = sql.connect(target)
  T.eq(t:first("SELECT v FROM public.items WHERE id = 1").v, "public")
  T.eq(t:first("SELECT sum(amount) AS s FROM sales.items").s, "19.50")
  T.eq(t:first('SELECT count(*) AS n FROM "odd ""name""".items').n, 3)
  T.eq(T.raises("SQL_ERROR", t.exec, t, "INSERT INTO sales.items VALUES (2, 0)").sqlstate, "23505")
  -- again over itself with replace: the same three tables, not six
  sql.restore(target, { from = r.file, replace = true })
  T.eq(t:first("SELECT count(*) AS n FROM sales.items").n, 2)
  T.eq(#logical.user_tables(t, "postgresql"), 3)
end)

T.test("record text reads as values: NULL and empty, quotes, escapes, and text where a type does not read", function()
  local function values(text, rows, types)
    return native.record_values(string.pack("<I4", rows) .. text, types)
  end
  local function block(rows, ...)
    return string.pack("<I4", rows) .. table.concat({ ... })
  end
  local s = function(v) return "s" .. string.pack("<s4", v) end
  T.eq(values('(1,,"")', 1, "iss"), block(1, "i" .. string.pack("<i8", 1), "\0", s("")))
  T.eq(values('("a ""b"" \\\\c",x)\n(,"(,)")', 2, "ss"), block(2, s('a "b" \\c'), s("x"), "\0", s("(,)")))
  T.eq(values('(99999999999999999999,1.5e,t,"\\\\xzz")', 1, "ifbx"),
       block(1, s("99999999999999999999"), s("1.5e"), "b\1", "x" .. string.pack("<s4", "\\xzz")))
  T.eq(values('("2020-01-01 10:00:00",-Infinity)', 1, "Tf"),
       block(1, s("2020-01-01T10:00:00"), "f" .. string.pack("<d", -math.huge)))
  for _, bad in ipairs {
    { "(1,2)", 1, "s", "too many fields" }, { "(1)", 1, "ss", "too few fields" },
    { "(1)\n(2)", 1, "i", "more rows than counted" }, { "(1)", 2, "i", "fewer rows than counted" },
    { '("open)', 1, "s", "an open quote" }, { "1,2", 1, "ss", "no parenthesis" }, { "(1)(2)", 2, "i", "no newline" },
  } do
    T.raises("BAD_FORMAT", values, bad[1], bad[2], bad[3])
  end
end)

T.test("a file of version 1 (value blocks) still restores; a text block in it, or version 3, is refused", function()
  local cols = { { name = "id", type = "bigint", nullable = false }, { name = "name", type = "text", nullable = true } }
  local d = "i" .. string.pack("<i8", 7) .. "s" .. string.pack("<s4", "seven") .. "i" .. string.pack("<i8", 8) .. "\0"
  local v1 = craft(dir .. "/v1.lbak", 1, { { name = "old", columns = cols, blocks = { { "D", d, 2 } } } })
  T.eq(sql.verify(v1).rows, 2)
  for _, target in ipairs { pg.createdb("v1"), lite("v1.db") } do
    sql.restore(target, { from = v1 })
    local t <close> = sql.connect(target)
    local rows = t:query("SELECT id, name FROM old ORDER BY id")
    T.eq({ rows[1].id, rows[1].name, rows[2].id, rows[2].name }, { 7, "seven", 8, sql.null })
  end
  local bad = craft(dir .. "/v1r.lbak", 1, { { name = "old", columns = cols, blocks = { { "R", "(7,seven)", 1 } } } })
  T.raises("BAD_FORMAT", sql.verify, bad)
  local v3 = craft(dir .. "/v3.lbak", 3, { { name = "old", columns = cols, blocks = { { "D", d, 2 } } } })
  T.raises("BAD_FORMAT", sql.verify, v3)
end)

T.test("a damaged text block behind good checksums is refused by both engines and leaves no table", function()
  local cols = { { name = "id", type = "integer", nullable = true }, { name = "name", type = "text", nullable = true } }
  for _, case in ipairs {
    { "(1,a)\n(2,b", 2, "no closing parenthesis" },
    { "(1,a)\n(2,b)", 3, "a wrong row count" },
    { '(1,"a)', 1, "an open quote" },
    { "x(1,a)", 1, "not a record" },
  } do
    local file = craft(dir .. "/badr.lbak", 2, { { name = "good", columns = cols, blocks = { { "R", "(5,five)", 1 } } },
      { name = "damaged", columns = cols, blocks = { { "R", "(4,four)", 1 }, { "R", case[1], case[2] } } } })
    T.raises("BAD_FORMAT", sql.verify, file)  -- the checksums hold; the block's structure does not
    for _, target in ipairs { pg.createdb("badr" .. math.random(1 << 30)), lite("badr" .. math.random(1 << 30) .. ".db") } do
      T.raises("BAD_FORMAT", sql.restore, target, { from = file })
      local t <close> = sql.connect(target)
      T.eq(#logical.user_tables(t, sql.engine(t)), 0, case[3] .. ": nothing created in " .. sql.engine(t))
    end
  end
end)

T.test("statements: two blocks on one connection run one after the other; a block finished unstarted is refused", function()
  local db <close> = sql.connect(src)
  local a <close> = db:statement()
  local b <close> = db:statement()
  T.raises("EINVAL", a.finish_block, a)
  a:start_block("SELECT CAST(3 AS bigint) AS n, 'x' AS t")
  b:start_block("SELECT CAST(1 AS bigint) AS n, 'y' AS t")  -- waits for a's thread first
  T.raises("BUSY", a.fetch, a)
  T.eq({ b:finish_block() }, { string.pack("<I4", 1) .. "y", 1 })
  local blk, n = a:finish_block()
  T.eq({ blk, n }, { string.pack("<I4", 3) .. "x", 3 })
  b:start_block("SELECT CAST(0 AS bigint) AS n, NULL AS t")
  T.eq(b:finish_block(), nil, "no rows: nil")
  a:start_block("SELECT nope FROM nowhere")
  T.eq(T.raises("SQL_ERROR", a.finish_block, a).sqlstate, "42P01")
  T.eq(db:first("SELECT 1 AS one").one, 1, "the connection still works")
end)

pg.stop()
T.done()
