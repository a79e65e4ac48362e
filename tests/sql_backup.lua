-- sql.backup / sql.restore / sql.verify: SQLite file backups, the logical
-- format on PostgreSQL, SQLite -> PostgreSQL and back, and every way a
-- backup file can be damaged.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local drivers = require "odbc.drivers"
local pg = require("pg").start()

local dir = T.tmpdir()
local nonbmp = "naïve 😀 𝄞"
local blob = string.rep("\0\255\1\254", 1 << 18)  -- 1 MiB

-- An ordered dump of a table: its rows, without the columns field.
local function dump(db, tbl, key)
  local rows = db:query("SELECT * FROM " .. tbl .. " ORDER BY " .. (key or "id"))
  rows.columns = nil
  return rows
end

local function fill(db, engine)
  local text = engine == "pg" and "TEXT" or "TEXT"
  local bin = engine == "pg" and "BYTEA" or "BLOB"
  local dbl = engine == "pg" and "DOUBLE PRECISION" or "DOUBLE"
  db:exec("CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, note " .. text ..
          ", price NUMERIC(12,2), ratio " .. dbl .. ", ok BOOLEAN, born DATE, seen TIMESTAMP, data " .. bin .. ")")
  db:exec("CREATE UNIQUE INDEX items_name ON items (name)")
  db:exec("CREATE TABLE empty_one (k INTEGER PRIMARY KEY, v TEXT)")
  db:transaction(function()
    local st <close> = db:prepare("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)")
    st:execute(math.maxinteger, "max", nonbmp, "1234.50", 0.1, true, "2020-02-29", "2020-02-29T12:34:56.5", sql.binary(blob))
    st:execute(1, "nulls", nil, nil, nil, nil, nil, nil, nil)
    st:execute(0, "specials", 'q"uo\\te (a,b) {c,"d"} \'x\' NULL\n\tend', "-0.01", -1e300, false, "1999-12-31",
      "1999-12-31T23:59:59.999999", sql.binary('\\"\0\''))
    st:execute(-1, "", "", "0", 0.0, false, nil, nil, sql.binary(""))
    for i = 2, 300 do
      st:execute(i, "item " .. i, ("note %d '; DROP"):format(i), string.format("%d.%02d", i, i % 100), i / 7,
        i % 2 == 0, "2021-01-01", "2021-01-01T00:00:00", sql.binary(string.char(i % 256, 0, 39)))
    end
  end)
end

local function sqlite_conn(name) return drivers.sqlite_conn(dir .. "/" .. name) end

local function flip_byte(file, at)
  local d = T.read_file(file)
  at = at or (#d // 2)
  T.write_file(file, d:sub(1, at - 1) .. string.char(d:byte(at) ~ 0x10) .. d:sub(at + 1))
end

-- SQLite ----------------------------------------------------------------

T.test("SQLite: backup then restore into a new file gives identical rows", function()
  local db <close> = sql.connect(sqlite_conn("src.db"))
  fill(db, "sqlite")
  local progress = 0
  local r = sql.backup(db, { to = dir .. "/src.bak", progress = function() progress = progress + 1 end })
  T.eq(r.method, "sqlite")
  T.eq(r.file, dir .. "/src.bak")
  T.eq(r.sha256, require("upkit.hash").file("sha256", dir .. "/src.bak"))
  T.ok(r.bytes > #blob, "size")
  T.ok(r.seconds >= 0)
  T.eq(sql.verify(r.file).sha256, r.sha256)
  local rr = sql.restore(db, { from = r.file, database = "copy.db" })
  T.eq(rr.database, dir .. "/copy.db")
  T.eq(rr.sha256, r.sha256)
  local copy <close> = sql.connect(rr.conn)
  T.eq(dump(copy, "items"), dump(db, "items"))
  T.eq(#dump(copy, "empty_one", "k"), 0)
end)

T.test("SQLite: restore over a database with tables raises NOT_EMPTY unless replace", function()
  local db <close> = sql.connect(sqlite_conn("src.db"))
  local target = sqlite_conn("busy.db")
  do
    local t <close> = sql.connect(target)
    t:exec("CREATE TABLE keep (a INTEGER)")
    t:exec("INSERT INTO keep VALUES (7)")
  end
  T.raises("NOT_EMPTY", sql.restore, target, { from = dir .. "/src.bak" })
  do
    local t <close> = sql.connect(target)
    T.eq(t:first("SELECT a FROM keep").a, 7)
  end
  sql.restore(target, { from = dir .. "/src.bak", replace = true })
  local t <close> = sql.connect(target)
  T.eq(dump(t, "items"), dump(db, "items"))
  T.raises("BUSY", sql.restore, db, { from = dir .. "/src.bak", database = dir .. "/src.db" })
  T.raises("EINVAL", sql.restore, db, { from = dir .. "/src.bak" })
end)

T.test("SQLite: a truncated, bit-flipped or empty backup is refused and nothing changes", function()
  local target = sqlite_conn("victim.db")
  do
    local t <close> = sql.connect(target)
    t:exec("CREATE TABLE keep (a INTEGER)")
  end
  local good = T.read_file(dir .. "/src.bak")
  local cases = {
    { "truncated", good:sub(1, #good // 2), "CHECKSUM_MISMATCH" },
    { "bit-flipped", nil, "CHECKSUM_MISMATCH" },
    { "empty", "", "BAD_FORMAT" },
  }
  for _, c in ipairs(cases) do
    local f = dir .. "/bad-" .. c[1] .. ".bak"
    if c[2] then T.write_file(f, c[2]) else T.write_file(f, good); flip_byte(f) end
    if c[1] ~= "empty" then os.execute("cp " .. T.q(dir .. "/src.bak.sha256") .. " " .. T.q(f .. ".sha256")) end
    T.raises(c[3], sql.restore, target, { from = f, replace = true })
    local t <close> = sql.connect(target)
    T.eq(#t:query("SELECT * FROM keep"), 0, c[1] .. ": target unchanged")
    T.eq(t:first("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'items'").n, 0)
  end
  -- with its digest given, a damaged database fails the integrity check
  local f = dir .. "/nosum.bak"
  T.write_file(f, good:sub(1, 4096))
  T.raises("BAD_FORMAT", sql.restore, target, { from = f, replace = true,
    sha256 = require("upkit.hash").file("sha256", f) })
  T.raises("CHECKSUM_MISMATCH", sql.verify, dir .. "/bad-bit-flipped.bak")
  T.raises("ENOENT", sql.restore, target, { from = dir .. "/missing.bak" })
  local leftovers = T.sh("ls -a " .. T.q(dir) .. " | grep -c upkit-tmp || true")
  T.eq(tonumber(leftovers), 0, "no temporary files left")
end)

T.test("backup and restore reject unknown options and a missing file argument", function()
  local db <close> = sql.connect(sqlite_conn("src.db"))
  local e = T.raises("ENOENT", sql.backup, db, { to = dir .. "/no-such-folder/x.bak" })
  T.contains(e.message, "no-such-folder")
  T.raises("EISDIR", sql.backup, db, { to = dir })
  e = T.raises("ENOENT", sql.backup, db, { to = dir .. "/no-such-folder/x.lbak", method = "logical" })
  T.contains(e.message, "no-such-folder")
  T.raises("EINVAL", sql.backup, nil, { to = dir .. "/x.bak" })
  T.raises("EINVAL", sql.backup, {}, { to = dir .. "/x.bak" })
  T.raises("EINVAL", sql.restore, 42, { from = dir .. "/src.bak" })
  T.raises("EINVAL", sql.verify, nil)
  T.match(T.raises("ENOENT", sql.verify, dir .. "/nope.bak").message, "^sql%.verify: ")
  local r = sql.backup(sqlite_conn("src.db"), { to = dir .. "/by-string.bak" })
  T.eq(r.method, "sqlite", "a connection string is connected and closed")
  T.eq(sql.verify(r.file).sha256, r.sha256)
  T.raises("EINVAL", sql.backup, db, { to = dir .. "/x.bak", nope = true })
  T.raises("EINVAL", sql.backup, db, {})
  T.raises("EINVAL", sql.backup, db, { to = dir .. "/x.bak", method = "mssql" })
  T.raises("EINVAL", sql.restore, db, { database = "x" })
end)

-- PostgreSQL logical ------------------------------------------------------

local src_conn = pg.createdb("src")

T.test("PostgreSQL: logical backup then restore into a new database gives identical rows and keys", function()
  local db <close> = sql.connect(src_conn)
  fill(db, "pg")
  local r = sql.backup(db, { to = dir .. "/pg.bak" })
  T.eq(r.method, "logical")
  T.eq(r.rows, 303)
  T.eq(r.sha256, require("upkit.hash").file("sha256", r.file))
  local bytes = T.read_file(r.file)
  -- version 2: the rows of a PostgreSQL table as record text, ISO dates, bytea in hex
  T.ok(bytes:find('"version":2', 1, true), "version 2")
  for _, text in ipairs { ',2020-02-29,"2020-02-29 12:34:56.5",', ',1999-12-31,"1999-12-31 23:59:59.999999",',
                          '"\\\\x5c220027"', "(" .. math.maxinteger .. ",max," } do
    T.ok(bytes:find(text, 1, true), text .. " in the file")
  end
  local v = sql.verify(r.file)
  T.eq(v.rows, 303)
  T.eq(v.sha256, r.sha256)
  local rr = sql.restore(db, { from = r.file, database = "pgcopy" })
  T.eq(rr.database, "pgcopy")
  T.eq(rr.rows, 303)
  local copy <close> = sql.connect(pg.conn_for("pgcopy"))
  T.eq(dump(copy, "items"), dump(db, "items"))
  T.eq(#dump(copy, "empty_one", "k"), 0)
  T.eq(T.raises("SQL_ERROR", copy.exec, copy, "INSERT INTO items (id, name) VALUES (1, 'dup id')").sqlstate, "23505")
  T.eq(T.raises("SQL_ERROR", copy.exec, copy, "INSERT INTO items (id, name) VALUES (99999, 'max')").sqlstate, "23505")
  T.eq(copy:first("SELECT is_nullable FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'name'").is_nullable, "NO")
end)

T.test("PostgreSQL: a backup inside the caller's transaction sees its rows and leaves it open", function()
  local db <close> = sql.connect(src_conn)
  db:begin()
  db:exec("INSERT INTO items (id, name, seen) VALUES (424242, 'uncommitted', '2021-06-01T08:00:00')")
  local r = sql.backup(db, { to = dir .. "/intx.bak" })
  T.ok(db:in_transaction(), "still open")
  db:rollback()
  T.eq(r.rows, 304)
  T.ok(T.read_file(r.file):find("s" .. string.pack("<s4", "2021-06-01T08:00:00"), 1, true), "timestamp with T")
  T.eq(db:first("SELECT COUNT(*) AS n FROM items WHERE id = 424242").n, 0)
end)

T.test("PostgreSQL: restore into a database with tables raises NOT_EMPTY unless replace", function()
  local db <close> = sql.connect(src_conn)
  T.raises("NOT_EMPTY", sql.restore, db, { from = dir .. "/pg.bak", database = "pgcopy" })
  local copy <close> = sql.connect(pg.conn_for("pgcopy"))
  copy:exec("DELETE FROM items WHERE id < 10")
  sql.restore(copy, { from = dir .. "/pg.bak", replace = true })
  T.eq(dump(copy, "items"), dump(db, "items"))
end)

T.test("PostgreSQL: a truncated, bit-flipped or empty logical backup is refused and nothing changes", function()
  local good = T.read_file(dir .. "/pg.bak")
  local target = pg.createdb("untouched")
  local cases = {
    { "truncated", good:sub(1, #good - 100), "BAD_FORMAT" },
    { "cut in the header", good:sub(1, 10), "BAD_FORMAT" },
    { "bit-flipped", "flip", "CHECKSUM_MISMATCH" },
    { "flipped trailer", "flip-end", "CHECKSUM_MISMATCH" },
    { "empty", "", "BAD_FORMAT" },
    { "extra bytes", good .. "x", "BAD_FORMAT" },
  }
  for _, c in ipairs(cases) do
    local f = dir .. "/pgbad.bak"
    if c[2] == "flip" then T.write_file(f, good); flip_byte(f)
    elseif c[2] == "flip-end" then T.write_file(f, good); flip_byte(f, #good - 5)
    else T.write_file(f, c[2]) end
    T.raises(c[3], sql.restore, target, { from = f })
    T.raises(c[3], sql.verify, f)
    local t <close> = sql.connect(target)
    T.eq(#require("upkit.sql.logical").user_tables(t, "postgresql"), 0, c[1] .. ": nothing created")
  end
end)

T.test("PostgreSQL: a table read in two halves through two connections comes back whole", function()
  local db <close> = sql.connect(src_conn)
  db:exec("CREATE TABLE halves AS SELECT g AS id, md5(CAST(g AS text)) AS h, " ..
          "CAST(now() AS timestamp) - g * interval '1.5 second' AS at FROM generate_series(1, 150000) g")
  T.ok(db:first("SELECT pg_relation_size('halves') / 8192 AS p").p > 1024, "large enough to split")
  local r = sql.backup(db, { to = dir .. "/halves.bak" })
  local target = pg.createdb("halves")
  local rr = sql.restore(target, { from = r.file })
  T.eq(rr.rows, r.rows)
  local t <close> = sql.connect(target)
  local sum = "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d, SUM(id) AS s, " ..
              "md5(string_agg(h || CAST(at AS text), ',' ORDER BY id)) AS m FROM halves"
  local got, want = t:first(sum), db:first(sum)
  T.eq(got.n, 150000)
  T.eq(got, want)
  db:exec("DROP TABLE halves")
end)

T.test("a backup killed with SIGKILL midway leaves no file at the final path", function()
  do
    local db <close> = sql.connect(src_conn)
    db:exec("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 400000) g")
  end
  local final = dir .. "/killed.bak"
  local script = dir .. "/kill.lua"
  T.write_file(script, string.format([[
local sql = require "upkit.sql"
local db = sql.connect(%q)
sql.backup(db, { to = %q })
]], src_conn, final))
  local pid = tonumber((T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(script) .. " >/dev/null 2>&1 & echo $!")))
  local saw_partial = false
  for _ = 1, 200 do
    if T.sh("ls -a " .. T.q(dir .. "/.upkit-tmp") .. " 2>/dev/null | grep -c '^killed.bak[.]' || true"):match("^[1-9]") then
      saw_partial = true
      break
    end
    os.execute("sleep 0.02")
  end
  os.execute("kill -KILL " .. pid)
  os.execute("sleep 0.2")
  T.ok(saw_partial, "the backup was under way")
  T.eq(T.read_file(final), nil, "no file at the final path")
  do
    local db <close> = sql.connect(src_conn)
    db:exec("DROP TABLE big")
  end
end)

T.test("a backup or restore onto a full file system raises ENOSPC and leaves no file behind", function()
  local mnt = dir .. "/full"
  T.sh("mkdir -p " .. T.q(mnt))
  local _, st = T.sh("mount -t tmpfs -o size=1m tmpfs " .. T.q(mnt) .. " 2>&1")
  if st ~= 0 then return T.fail("cannot mount a tmpfs (needs root)") end
  local function ls() return (T.sh("ls -A " .. T.q(mnt))) end
  local ok, err = pcall(function()
    local db <close> = sql.connect(src_conn)
    db:exec("CREATE TABLE bulky AS SELECT g AS id, md5(CAST(g AS text)) AS h FROM generate_series(1, 60000) g")
    local e = T.raises("ENOSPC", sql.backup, db, { to = mnt .. "/pg.lbak" })
    T.match(e.message, "pg%.lbak")
    T.eq(ls(), "", "PostgreSQL logical: nothing left")
    db:exec("DROP TABLE bulky")
    local lite <close> = sql.connect(sqlite_conn("bulky.db"))
    lite:exec("CREATE TABLE bulky (id INTEGER PRIMARY KEY, h TEXT)")
    lite:transaction(function()
      local ins <close> = lite:prepare("INSERT INTO bulky VALUES (?, ?)")
      for i = 1, 40000 do ins:execute(i, string.rep(string.format("%08d", i), 8)) end
    end)
    local le = T.raises("ENOSPC", sql.backup, lite, { to = mnt .. "/lite.bak" })
    T.match(le.message, "lite%.bak")
    T.eq(ls(), "", "SQLite VACUUM INTO: nothing left")
    local r = sql.backup(lite, { to = dir .. "/bulky.bak" })
    T.raises("ENOSPC", sql.restore, sqlite_conn("full/copy.db"), { from = r.file })
    T.eq(ls(), "", "SQLite restore: nothing left")
  end)
  T.sh("umount " .. T.q(mnt))
  if not ok then error(err, 0) end
end)

-- Across engines ------------------------------------------------------------

T.test("SQLite -> PostgreSQL and back through the logical format keeps the rows", function()
  local s <close> = sql.connect(sqlite_conn("src.db"))
  local r = sql.backup(s, { to = dir .. "/lite.lbak", method = "logical" })
  T.eq(r.method, "logical")
  local pgc = pg.createdb("fromlite")
  sql.restore(pgc, { from = r.file })
  local p <close> = sql.connect(pgc)
  local want = dump(s, "items")
  local got = dump(p, "items")
  T.eq(#got, #want)
  for i = 1, #want do
    for k, v in pairs(want[i]) do
      if k == "price" and v ~= sql.null then
        T.eq(tonumber(got[i][k]), v, k)  -- SQLite's NUMERIC comes back as a float
      else
        T.eq(got[i][k], v, k .. " of row " .. i)
      end
    end
  end
  local back = sql.backup(p, { to = dir .. "/back.lbak" })
  local l <close> = sql.connect(sqlite_conn("back.db"))
  sql.restore(l, { from = back.file })
  local again = dump(l, "items")
  T.eq(#again, #want)
  T.eq(again[1].data, want[1].data)
  T.eq(again[#again].note, nonbmp)
  for i = 1, #want do
    T.eq(again[i].seen, want[i].seen, "timestamp of row " .. i)
    T.eq(again[i].born, want[i].born, "date of row " .. i)
  end
end)

T.test("a restore whose rows the server refuses raises the server's SQLSTATE and leaves no table", function()
  local bf = require "upkit._backupfile"
  local logical = require "upkit.sql.logical"
  local json = require "upkit.json"
  -- A well-formed file whose block 'bad' holds text in an integer column.
  local function craft(file, blocks, bad)
    local w <close> = bf.writer(file, logical.MAGIC)
    w:record("H", json.encode { format = "upkit-logical-backup", version = logical.VERSION, tables = { "refused" } })
    w:record("T", json.encode { name = "refused", columns = { { name = "n", type = "integer", nullable = true } },
                                primary_key = json.array {}, unique = json.array {} })
    local rows = 0
    for k = 1, blocks do
      local parts = { string.pack("<I4", 1000) }
      for i = 1, 1000 do
        parts[#parts + 1] = (k == bad and i == 500) and ("s" .. string.pack("<s4", "not a number"))
                            or ("i" .. string.pack("<i8", i))
      end
      w:record("D", table.concat(parts))
      rows = rows + 1000
    end
    w:record("E", json.encode { rows = rows })
    w:finish()
  end
  for _, bad in ipairs { 2, 3 } do
    local file = dir .. "/refused-" .. bad .. ".lbak"
    craft(file, 3, bad)
    T.eq(sql.verify(file).rows, 3000)
    local target = pg.createdb("refused" .. bad)
    T.eq(T.raises("SQL_ERROR", sql.restore, target, { from = file }).sqlstate, "22P02")
    local t <close> = sql.connect(target)
    T.eq(#logical.user_tables(t, "postgresql"), 0, "block " .. bad .. " refused: nothing left")
    T.eq(t:exec("CREATE TABLE after_failure (a INTEGER)"), 0, "the connection still works")
  end
end)

T.test("text of every length (10 B to 200 KB, non-ASCII, NULL) backs up and restores identically", function()
  local values = { string.rep("a", 10), string.rep("b", 300), string.rep("c", 5000), string.rep("d", 200000),
                   string.rep("é😀x", 2000), string.rep("ü", 150), sql.null, "" }
  local function check(src, dst, file)
    src:exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, tail TEXT)")
    src:transaction(function()
      local st <close> = src:prepare("INSERT INTO notes VALUES (?,?,?)")
      for round = 0, 2 do
        for i, v in ipairs(values) do
          st:execute(round * 100 + i, v, values[#values + 1 - i])
        end
      end
    end)
    local want = dump(src, "notes")
    T.eq(#want, 3 * #values)
    for i, v in ipairs(values) do
      T.eq(want[i].body, v, "read back value " .. i)
      T.eq(want[i].tail, values[#values + 1 - i], "read back tail " .. i)
    end
    local r = sql.backup(src, { to = file, method = "logical" })
    T.eq(r.rows, 3 * #values)
    sql.restore(dst, { from = r.file })
    local d <close> = sql.connect(dst)
    T.eq(dump(d, "notes"), want)
  end
  local p <close> = sql.connect(pg.createdb("longsrc"))
  check(p, pg.createdb("longdst"), dir .. "/long_pg.lbak")
  local l <close> = sql.connect(sqlite_conn("long.db"))
  check(l, sqlite_conn("long_copy.db"), dir .. "/long_lite.lbak")
end)

pg.stop()
T.done()
