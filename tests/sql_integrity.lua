-- Backups that must not be trusted: SQLite backups without a usable digest,
-- logical backups whose checksums hold but whose structure does not, a
-- failed PostgreSQL restore into a new database, and file modes.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local hash = require "upkit.hash"
local json = require "upkit.json"
local bf = require "upkit._backupfile"
local logical = require "upkit.sql.logical"
local drivers = require "odbc.drivers"
local pg = require("pg").start()

local dir = T.tmpdir()
local function lite(name) return drivers.sqlite_conn(dir .. "/" .. name) end

local function mode(path) return (T.sh("stat -c %a " .. T.q(path))):match("%d+") end

-- A SQLite database with one table and a value to tamper with.
local src = lite("src.db")
do
  local db <close> = sql.connect(src)
  db:exec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT, balance INTEGER)")
  db:exec("INSERT INTO accounts VALUES (1, 'alice', 100), (2, 'bob', 250)")
end

local function target_rows(cs)
  local db <close> = sql.connect(cs)
  local n = db:first("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table'").n
  return n
end

T.test("SQLite: a backup and its digest file are created 0600, even in a 0755 folder", function()
  os.execute("chmod 0755 " .. T.q(dir))
  local r = sql.backup(src, { to = dir .. "/lite.bak" })
  T.eq(mode(r.file), "600")
  T.eq(mode(r.file .. ".sha256"), "600")
  T.eq(T.read_file(r.file .. ".sha256"), r.sha256 .. "  lite.bak\n")
  local v = sql.verify(r.file)
  T.eq(v.verified, true)
  T.eq(v.sha256, r.sha256)
end)

T.test("a logical backup is created 0600", function()
  local r = sql.backup(src, { to = dir .. "/lite.lbak", method = "logical" })
  T.eq(mode(r.file), "600")
end)

T.test("SQLite: a tampered backup without its digest file is refused, naming the file (ENOENT)", function()
  local bak = dir .. "/tampered.bak"
  sql.backup(src, { to = bak })
  local good_sha = T.read_file(bak .. ".sha256"):match("^%x+")
  -- change one value inside the database: SQLite's own integrity check still passes
  do
    local db <close> = sql.connect(drivers.sqlite_conn(bak))
    db:exec("UPDATE accounts SET balance = 999999 WHERE id = 1")
  end
  os.remove(bak .. ".sha256")
  local target = lite("victim.db")
  local e = T.raises("ENOENT", sql.verify, bak)
  T.contains(e.message, "tampered.bak.sha256")
  e = T.raises("ENOENT", sql.restore, target, { from = bak })
  T.contains(e.message, "tampered.bak.sha256")
  T.eq(target_rows(target), 0, "the target is untouched")
  -- the digest recorded elsewhere (a manifest) still catches the change
  T.raises("CHECKSUM_MISMATCH", sql.verify, bak, { sha256 = good_sha })
  T.raises("CHECKSUM_MISMATCH", sql.restore, target, { from = bak, sha256 = good_sha })
  T.eq(target_rows(target), 0, "the target is untouched")
end)

T.test("SQLite: a malformed or unreadable digest file is refused (BAD_FORMAT, EACCES), never skipped", function()
  local bak = dir .. "/side.bak"
  local r = sql.backup(src, { to = bak })
  local side = bak .. ".sha256"
  local target = lite("side-target.db")
  for _, text in ipairs { " " .. r.sha256 .. "  side.bak\n", "", "not a digest\n", r.sha256:sub(1, 63) .. "  side.bak\n",
                          r.sha256 .. "\n" .. r.sha256 .. "  side.bak\n" } do
    T.write_file(side, text)
    local e = T.raises("BAD_FORMAT", sql.verify, bak)
    T.contains(e.message, "side.bak.sha256")
    T.raises("BAD_FORMAT", sql.restore, target, { from = bak })
    T.eq(target_rows(target), 0)
  end
  -- given the digest, the sidecar is not needed
  T.eq(sql.verify(bak, { sha256 = r.sha256:upper() }).sha256, r.sha256)
  T.eq(sql.restore(target, { from = bak, sha256 = r.sha256 }).verified, true)
  T.eq(target_rows(target), 1)
  T.raises("EINVAL", sql.verify, bak, { sha256 = "abc" })
  T.raises("EINVAL", sql.verify, bak, { sha256 = 42 })
  T.raises("EINVAL", sql.verify, bak, { nope = true })
  T.raises("EINVAL", sql.restore, target, { from = bak, sha256 = "zz" })
  T.write_file(side, r.sha256 .. "  side.bak\n")
  if T.sh("id -u"):match("^0") then return end  -- root reads a 0000 file anyway
  os.execute("chmod 0000 " .. T.q(side))
  T.raises("EACCES", sql.verify, bak)
  os.execute("chmod 0600 " .. T.q(side))
end)

-- Logical files written record by record: header, then tables of
-- { name =, columns =, blocks = { {kind, payload-with-count} }, rows = }.
local function craft(file, tables, header)
  local w <close> = bf.writer(file, logical.MAGIC)
  w:record("H", header or json.encode { format = "upkit-logical-backup", version = 2, tables = {} })
  for _, t in ipairs(tables) do
    w:record("T", t.raw or json.encode { name = t.name, columns = t.columns, primary_key = t.primary_key or json.array {},
      unique = t.unique or json.array {} })
    for _, b in ipairs(t.blocks or {}) do w:record(b[1], b[2]) end
    w:record("E", json.encode { rows = t.rows or 0 })
  end
  w:finish()
  return file
end

local col = { name = "n", type = "integer", nullable = true }
local function int_block(values)
  local parts = { string.pack("<I4", #values) }
  for _, v in ipairs(values) do parts[#parts + 1] = "i" .. string.pack("<i8", v) end
  return table.concat(parts)
end

T.test("logical: well-checksummed files of the wrong structure are refused by verify and restore (BAD_FORMAT)", function()
  local cases = {
    { "a column that is a number", { { name = "t", columns = { 1 } } } },
    { "a column without a type", { { name = "t", columns = { { name = "n" } } } } },
    { "columns that are an object", { { name = "t", columns = { n = col } } } },
    { "a table without a name", { { name = json.null, columns = { col } } } },
    { "a primary key of numbers", { { name = "t", columns = { col }, primary_key = { 1 } } } },
    { "a unique index without columns", { { name = "t", columns = { col }, unique = { { name = "u" } } } } },
    { "a value cut short", { { name = "t", columns = { col }, rows = 2,
        blocks = { { "D", int_block { 1, 2 }:sub(1, -3) } } } } },
    { "a value of an unknown tag", { { name = "t", columns = { col }, rows = 1,
        blocks = { { "D", string.pack("<I4", 1) .. "q" } } } } },
    { "more values than rows", { { name = "t", columns = { col }, rows = 1,
        blocks = { { "D", int_block { 1 } .. "i" .. string.pack("<i8", 2) } } } } },
    { "a text length past the block", { { name = "t", columns = { { name = "s", type = "text" } }, rows = 1,
        blocks = { { "D", string.pack("<I4", 1) .. "s" .. string.pack("<I4", 1000) .. "abc" } } } } },
    { "a text block with too few fields", { { name = "t", columns = { col, { name = "m", type = "integer" } }, rows = 1,
        blocks = { { "R", string.pack("<I4", 1) .. "(1)" } } } } },
    { "an end whose rows is text", { { name = "t", columns = { col }, rows = "1", blocks = { { "D", int_block { 1 } } } } } },
    { "a table record that is JSON text", { { raw = '"t"' } } },
  }
  for i, c in ipairs(cases) do
    local file = craft(dir .. "/shape" .. i .. ".lbak", c[2])
    T.raises("BAD_FORMAT", sql.verify, file)
    local pgt = pg.createdb("shape" .. i)
    for _, target in ipairs { lite("shape" .. i .. ".db"), pgt } do
      T.raises("BAD_FORMAT", sql.restore, target, { from = file })
      local t <close> = sql.connect(target)
      T.eq(#logical.user_tables(t, sql.engine(t)), 0, c[1] .. ": nothing created in " .. sql.engine(t))
    end
  end
  -- the same shapes, well formed, restore
  local ok = craft(dir .. "/shape-ok.lbak", { { name = "t", columns = { col }, rows = 2, blocks = { { "D", int_block { 1, 2 } } } } })
  T.eq(sql.verify(ok).rows, 2)
  T.eq(sql.restore(lite("shape-ok.db"), { from = ok }).rows, 2)
end)

T.test("logical: a digest given to verify or restore must match the file", function()
  local r = sql.backup(src, { to = dir .. "/given.lbak", method = "logical" })
  T.eq(sql.verify(r.file, { sha256 = r.sha256 }).verified, true)
  local wrong = string.rep("0", 64)
  T.raises("CHECKSUM_MISMATCH", sql.verify, r.file, { sha256 = wrong })
  local target = lite("given.db")
  T.raises("CHECKSUM_MISMATCH", sql.restore, target, { from = r.file, sha256 = wrong })
  T.eq(target_rows(target), 0)
end)

T.test("PostgreSQL: a restore with database = that fails leaves no new database", function()
  local file = craft(dir .. "/refused.lbak", { { name = "t", columns = { col }, rows = 2,
    blocks = { { "D", string.pack("<I4", 2) .. "i" .. string.pack("<i8", 1) .. "s" .. string.pack("<s4", "NaN-ish") } } } })
  T.eq(sql.verify(file).rows, 2)
  local db <close> = sql.connect(pg.conn)
  local e = T.raises("SQL_ERROR", sql.restore, db, { from = file, database = "never_left" })
  T.eq(e.sqlstate, "22P02")
  T.eq(db:first("SELECT COUNT(*) AS n FROM pg_database WHERE datname = 'never_left'").n, 0, "the new database is gone")
  -- a database that existed before is kept (only emptied of what the restore made)
  db:exec('CREATE DATABASE "kept_db"')
  T.raises("SQL_ERROR", sql.restore, db, { from = file, database = "kept_db" })
  T.eq(db:first("SELECT COUNT(*) AS n FROM pg_database WHERE datname = 'kept_db'").n, 1, "an existing database stays")
end)

pg.stop()
T.done()
