-- A bounded fuzz of the backup reader: thousands of randomly damaged logical
-- backups (damaged bytes, and records damaged then given valid checksums)
-- go to sql.verify and sql.restore. Each damaged file is refused with an
-- error object of the vocabulary, or (a damage that keeps the structure)
-- verified and restored; a refused restore leaves its target unchanged.
-- Runs under the sanitizers in `make check`. UPKIT_FUZZ_SEED replays a run.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local json = require "upkit.json"
local upkit = require "upkit"
local bf = require "upkit._backupfile"
local logical = require "upkit.sql.logical"
local drivers = require "odbc.drivers"
local pg = require("pg").start()

local dir = T.tmpdir()
local seed = tonumber(os.getenv("UPKIT_FUZZ_SEED") or "") or os.time()
math.randomseed(seed)
T.diag("seed " .. seed)
local BUDGET = os.getenv("UPKIT_SANITIZED") and 20 or 10  -- seconds per test at most

-- Every code docs/errors.md lists.
local CODES = {}
for code in (T.read_file("docs/errors.md") or ""):gmatch("`([A-Z][A-Z0-9_]+)`") do CODES[code] = true end

local function coded(e, allowed)
  if not upkit.is_error(e) then return false, "not an error object: " .. tostring(e) end
  if not CODES[e.code] or e.code == "LUA_ERROR" then return false, "code " .. tostring(e.code) .. " is not in docs/errors.md" end
  if allowed and not allowed[e.code] then return false, "unexpected code " .. e.code .. ": " .. tostring(e.message) end
  return true
end

-- Seed files: a SQLite source (value blocks) and a PostgreSQL one (text blocks).
local function seed_files()
  local lite = drivers.sqlite_conn(dir .. "/seed.db")
  local db <close> = sql.connect(lite)
  db:exec("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC(8,2), f DOUBLE, raw BLOB, ok BOOLEAN)")
  db:exec("CREATE UNIQUE INDEX things_name ON things (name)")
  db:exec("CREATE TABLE notes (k INTEGER PRIMARY KEY, body TEXT)")
  db:transaction(function()
    local st <close> = db:prepare("INSERT INTO things VALUES (?,?,?,?,?,?)")
    for i = 1, 40 do st:execute(i, "n" .. i .. " 'q' \"d\" ,()", i * 1.25, i / 3, sql.binary(string.char(i, 0, 255)), i % 2 == 0) end
    st:execute(41, "nulls", nil, nil, nil, nil)
    db:exec("INSERT INTO notes VALUES (1, 'é😀'), (2, NULL)")
  end)
  local a = sql.backup(db, { to = dir .. "/seed-values.lbak", method = "logical" }).file
  local p <close> = sql.connect(pg.createdb("fuzzsrc"))
  p:exec("CREATE TABLE rows_t (id BIGINT PRIMARY KEY, t TEXT, b BYTEA, at TIMESTAMP, n NUMERIC(6,2))")
  p:exec("INSERT INTO rows_t SELECT g, 'r' || g || ' \"(,)\\', decode('00ff', 'hex'), '2020-01-01'::timestamp + g * interval '1 hour', g / 7.0 " ..
         "FROM generate_series(1, 60) g")
  local b = sql.backup(p, { to = dir .. "/seed-text.lbak" }).file
  return { a, b }
end

-- The records of a backup file: { {kind, payload}, ... } (the trailer left out).
local function records(file)
  local r <close> = bf.reader(file)
  r:magic(#logical.MAGIC)
  local out = {}
  while true do
    local k, p = r:next()
    if not k or k == "Z" then break end
    out[#out + 1] = { k, p }
  end
  return out
end

local function write_records(file, recs)
  local w <close> = bf.writer(file, logical.MAGIC)
  for _, r in ipairs(recs) do w:record(r[1], r[2]) end
  w:finish()
end

local function rand_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

-- Damage the bytes of s: flip, overwrite, cut, insert or append.
local function damage(s)
  local how = math.random(5)
  local at = math.random(math.max(#s, 1))
  if how == 1 then return s:sub(1, at - 1) .. string.char(s:byte(at) ~ (1 << math.random(0, 7))) .. s:sub(at + 1) end
  if how == 2 then return s:sub(1, at - 1) .. rand_bytes(math.random(1, 16)) .. s:sub(at + 17) end
  if how == 3 then return s:sub(1, at - 1) end
  if how == 4 then return s:sub(1, at) .. rand_bytes(math.random(1, 8)) .. s:sub(at + 1) end
  return s .. rand_bytes(math.random(1, 40))
end

local RANDOM_VALUES = { 0, -1, 1.5, 2 ^ 40, "", "x", "integer", true, false, json.null, {}, { 1, 2 }, { a = 1 } }

-- Set one random field, at any depth, of a decoded JSON value.
local function mutate_json(v)
  if type(v) ~= "table" then return RANDOM_VALUES[math.random(#RANDOM_VALUES)] end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  if #keys == 0 or math.random(4) == 1 then
    v[#keys == 0 and "extra" or keys[math.random(#keys)]] = RANDOM_VALUES[math.random(#RANDOM_VALUES)]
  else
    local k = keys[math.random(#keys)]
    v[k] = mutate_json(v[k])
  end
  return v
end

-- A copy of recs with one record damaged (bytes, or its JSON), removed, repeated or moved.
local function damage_records(recs)
  local out = {}
  for i, r in ipairs(recs) do out[i] = { r[1], r[2] } end
  local i = math.random(#out)
  local how = math.random(6)
  if how <= 2 then
    local ok, v = pcall(json.decode, out[i][2])
    local okj, text = false, nil
    if ok and type(v) == "table" then okj, text = pcall(json.encode, mutate_json(v)) end
    out[i][2] = okj and text or damage(out[i][2])
  elseif how <= 4 then
    out[i][2] = damage(out[i][2])
  elseif how == 5 then
    table.remove(out, i)
  else
    table.insert(out, math.random(#out + 1), { out[i][1], out[i][2] })
  end
  return out
end

local seeds = seed_files()

-- A SQLite database that a refused restore must leave as it is.
local sentinel_cs = drivers.sqlite_conn(dir .. "/sentinel.db")
do
  local s <close> = sql.connect(sentinel_cs)
  s:exec("CREATE TABLE sentinel (v TEXT)")
  s:exec("INSERT INTO sentinel VALUES ('untouched')")
end
local function sentinel_ok()
  local s <close> = sql.connect(sentinel_cs)
  local tables = s:first("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table'").n
  return tables == 1 and s:first("SELECT v FROM sentinel").v == "untouched"
end

T.test("damaged bytes: every file is refused by sql.verify and sql.restore, the target unchanged", function()
  local t0, n, bad = upkit.now(), 0, nil
  local goods = {}
  for i, f in ipairs(seeds) do goods[i] = T.read_file(f) end
  local file = dir .. "/raw.lbak"
  while n < 3000 and upkit.now() - t0 < BUDGET and not bad do
    n = n + 1
    local good = goods[math.random(#goods)]
    local d = damage(good)
    if d ~= good then
      T.write_file(file, d)
      local ok, e = pcall(sql.verify, file)
      local fine, why = coded(e, { BAD_FORMAT = true, CHECKSUM_MISMATCH = true })
      if ok then bad = "case " .. n .. ": a damaged file verified"
      elseif not fine then bad = "case " .. n .. ": " .. why end
      if not bad and n % 10 == 0 then
        local ok2, e2 = pcall(sql.restore, sentinel_cs, { from = file, replace = true })
        local fine2, why2 = coded(e2, { BAD_FORMAT = true, CHECKSUM_MISMATCH = true })
        if ok2 then bad = "case " .. n .. ": a damaged file restored"
        elseif not fine2 then bad = "case " .. n .. ": restore: " .. why2 end
      end
    end
  end
  T.eq(bad, nil)
  T.ok(n >= 200, n .. " damaged files")
  T.diag(string.format("%d damaged files in %.1f s", n, upkit.now() - t0))
  T.ok(sentinel_ok(), "the target is unchanged")
end)

T.test("damaged records with valid checksums: refused with a code, or verified and restored", function()
  local t0, n, bad, refused, restored = upkit.now(), 0, nil, 0, 0
  local recs = {}
  for i, f in ipairs(seeds) do recs[i] = records(f) end
  local file = dir .. "/shape.lbak"
  while n < 1500 and upkit.now() - t0 < BUDGET and not bad do
    n = n + 1
    write_records(file, damage_records(recs[math.random(#recs)]))
    local ok, e = pcall(sql.verify, file)
    if not ok then
      local fine, why = coded(e, { BAD_FORMAT = true })
      if not fine then bad = "case " .. n .. ": verify: " .. why end
      refused = refused + 1
      if not bad and n % 5 == 0 then
        local ok2, e2 = pcall(sql.restore, sentinel_cs, { from = file, replace = true })
        if ok2 or not coded(e2, { BAD_FORMAT = true }) then
          bad = "case " .. n .. ": restore of a refused file: " .. tostring(ok2 or e2)
        end
      end
    elseif n % 3 == 0 then
      -- verified: a restore into a fresh database works, or fails with a code and leaves no table
      local target = drivers.sqlite_conn(dir .. "/fresh" .. n .. ".db")
      local ok2, e2 = pcall(sql.restore, target, { from = file })
      if ok2 then restored = restored + 1
      else
        local fine, why = coded(e2)
        if not fine then bad = "case " .. n .. ": restore: " .. why end
        local t <close> = sql.connect(target)
        if #logical.user_tables(t, "sqlite") ~= 0 then bad = "case " .. n .. ": a failed restore left tables" end
      end
      os.remove(dir .. "/fresh" .. n .. ".db")
    end
  end
  T.eq(bad, nil)
  T.ok(n >= 100, n .. " files")
  T.ok(refused > 0, "some refused")
  T.diag(string.format("%d files in %.1f s: %d refused, %d restored", n, upkit.now() - t0, refused, restored))
  T.ok(sentinel_ok(), "the target is unchanged")
end)

pg.stop()
T.done()
