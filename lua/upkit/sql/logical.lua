-- upkit.sql.logical: the portable logical backup of any ODBC source
-- (PostgreSQL first) and its restore into any engine. The file format is
-- documented in docs/backup-format.md.
local native = require "upkit._sql"
local bf = require "upkit._backupfile"
local json = require "upkit.json"
local upkit = require "upkit"

local M = {}

M.MAGIC = "UPKIT-LOGICAL-BACKUP\n"
M.VERSION = 2          -- this upkit writes version 2 and reads 1 and 2
local BLOCK_ROWS, BLOCK_BYTES = 10000, 4 << 20
local TEXT_BLOCK_BYTES = 2 << 20  -- table bytes (heap and TOAST) per text block
local INSERT_ROWS = 1000  -- rows per VALUES statement; PostgreSQL takes a whole block

local function lower_keys(row)
  local t = {}
  for k, v in pairs(row) do t[k:lower()] = v end
  return t
end

local function catalog(db, kind, schema, tbl)
  local out = {}
  local st <close> = db:catalog(kind, schema, tbl)
  for row in st.fetch, st do out[#out + 1] = lower_keys(row) end
  return out
end

local function str(v) if v == native.null then return nil end return v end

-- Escape a name for a catalog search pattern.
local function pattern(db, name)
  local esc = db:info().search_escape
  if not name or not esc or esc == "" then return name end
  return (name:gsub("[%%_]", function(c) return esc .. c end))
end

-- The generic type of a catalog column (see docs/backup-format.md).
local function generic_type(c, engine)
  local t, size = c.data_type, str(c.column_size) or 0
  if c.typmod == -1 then size = 0 end  -- psqlODBC: no declared length or precision
  if t == -6 or t == 5 then return "smallint" end
  if t == 4 then return engine == "sqlite" and "bigint" or "integer" end
  if t == -5 then return "bigint" end
  if t == 2 or t == 3 then return "decimal" end
  if t == 7 then return "real" end
  if t == 6 or t == 8 then return "double" end
  if t == -7 or t == 16 then return "boolean" end
  if t == -2 or t == -3 or t == -4 then return "binary" end
  if t == 91 or t == 9 then return "date" end
  if t == 92 or t == 10 then return "time" end
  if t == 93 or t == 11 then
    local name = (str(c.type_name) or ""):lower()
    if name == "timestamptz" or name == "timestamp with time zone" then return "timestamptz" end
    return "timestamp"
  end
  if t == -11 then return "uuid" end
  if engine == "sqlite" then return "text" end
  if (t == 1 or t == -8) and size > 0 and size <= 8000 then return "char" end
  if (t == 12 or t == -9) and size > 0 and size <= 8000 then return "varchar" end
  return "text"
end

-- The tables of db: { { schema =, name = }, ... } (user tables only).
local function user_tables(db, engine)
  local out = {}
  for _, t in ipairs(catalog(db, "tables")) do
    local name, schema = t.table_name, str(t.table_schem)
    local skip = engine == "sqlite" and name:match("^sqlite_")
    if engine == "postgresql" and schema and (schema == "pg_catalog" or schema == "information_schema") then skip = true end
    if not skip and (str(t.table_type) or "TABLE") == "TABLE" then
      out[#out + 1] = { schema = schema, name = name }
    end
  end
  table.sort(out, function(a, b) return (a.schema or "") .. "." .. a.name < (b.schema or "") .. "." .. b.name end)
  return out
end
M.user_tables = user_tables

-- The schema of one table from the ODBC catalog.
local function table_schema(db, engine, t)
  local cols = {}
  for _, c in ipairs(catalog(db, "columns", pattern(db, t.schema), pattern(db, t.name))) do
    if c.table_name == t.name then
      cols[#cols + 1] = {
        name = c.column_name, type = generic_type(c, engine), source_type = str(c.type_name),
        size = c.typmod ~= -1 and str(c.column_size) or nil, digits = c.typmod ~= -1 and str(c.decimal_digits) or nil,
        nullable = c.nullable ~= 0, position = str(c.ordinal_position) or #cols + 1,
      }
    end
  end
  table.sort(cols, function(a, b) return a.position < b.position end)
  for _, c in ipairs(cols) do c.position = nil end
  local pk = {}
  for _, k in ipairs(catalog(db, "primary_keys", t.schema, t.name)) do
    pk[#pk + 1] = { k.column_name, k.key_seq }
  end
  table.sort(pk, function(a, b) return a[2] < b[2] end)
  for i, k in ipairs(pk) do pk[i] = k[1] end
  local idx, order = {}, {}
  for _, s in ipairs(catalog(db, "statistics", t.schema, t.name)) do
    if s.type ~= 0 and s.non_unique == 0 and str(s.index_name) and str(s.column_name) then
      local i = idx[s.index_name]
      if not i then
        i = { name = s.index_name, columns = {} }
        idx[s.index_name] = i
        order[#order + 1] = i
      end
      i.columns[#i.columns + 1] = { s.column_name, s.ordinal_position }
    end
  end
  local unique = {}
  local pkey = table.concat(pk, "\0")
  for _, i in ipairs(order) do
    table.sort(i.columns, function(a, b) return a[2] < b[2] end)
    for k, c in ipairs(i.columns) do i.columns[k] = c[1] end
    if table.concat(i.columns, "\0") ~= pkey then unique[#unique + 1] = i end
  end
  table.sort(unique, function(a, b) return a.name < b.name end)
  return { schema = t.schema, name = t.name, columns = cols, primary_key = pk, unique = unique }
end

-- Identifier quoting of each dialect.
local function quoter(dialect)
  if dialect == "mssql" then
    return function(s) return "[" .. s:gsub("%]", "]]") .. "]" end
  end
  return function(s) return '"' .. s:gsub('"', '""') .. '"' end
end
M.quoter = quoter

local function qualified(q, t)
  return (t.schema and t.schema ~= "") and (q(t.schema) .. "." .. q(t.name)) or q(t.name)
end

local TYPES = {
  postgresql = { smallint = "SMALLINT", integer = "INTEGER", bigint = "BIGINT", real = "REAL",
    double = "DOUBLE PRECISION", boolean = "BOOLEAN", text = "TEXT", binary = "BYTEA", date = "DATE",
    time = "TIME", timestamp = "TIMESTAMP", timestamptz = "TIMESTAMPTZ", uuid = "UUID", decimal = "NUMERIC",
    char = "CHAR", varchar = "VARCHAR" },
  sqlite = { smallint = "SMALLINT", integer = "INTEGER", bigint = "BIGINT", real = "REAL",
    double = "DOUBLE", boolean = "BOOLEAN", text = "TEXT", binary = "BLOB", date = "DATE",
    time = "TIME", timestamp = "TIMESTAMP", timestamptz = "TIMESTAMP", uuid = "TEXT", decimal = "NUMERIC",
    char = "CHAR", varchar = "VARCHAR" },
}
TYPES.generic = TYPES.postgresql

-- The column type in a dialect's DDL.
function M.column_type(c, dialect)
  local names = TYPES[dialect] or TYPES.generic
  local base = names[c.type] or names.text
  if c.type == "decimal" and c.size and c.size > 0 and c.size <= 1000 then
    return string.format("%s(%d,%d)", base, c.size, c.digits or 0)
  end
  if (c.type == "char" or c.type == "varchar") and c.size then
    return string.format("%s(%d)", base, c.size)
  end
  return base
end

-- CREATE TABLE statement; the primary key is inline only for SQLite (which
-- cannot add one later), otherwise keys come after the data.
-- The quoted name a restore gives table t in dialect: on PostgreSQL a table
-- of a schema other than public keeps its schema, so that tables of the
-- same name in two schemas stay apart.
function M.target_name(t, dialect)
  local q = quoter(dialect)
  if dialect == "postgresql" and t.schema and t.schema ~= "" and t.schema ~= "public" then
    return q(t.schema) .. "." .. q(t.name)
  end
  return q(t.name)
end

function M.create_statement(t, dialect)
  local q = quoter(dialect)
  local parts = {}
  for _, c in ipairs(t.columns) do
    parts[#parts + 1] = q(c.name) .. " " .. M.column_type(c, dialect) .. (c.nullable and "" or " NOT NULL")
  end
  if dialect == "sqlite" and #t.primary_key > 0 then
    local k = {}
    for i, c in ipairs(t.primary_key) do k[i] = q(c) end
    parts[#parts + 1] = "PRIMARY KEY (" .. table.concat(k, ", ") .. ")"
  end
  return "CREATE TABLE " .. M.target_name(t, dialect) .. " (" .. table.concat(parts, ", ") .. ")"
end

-- Statements that add the keys and unique indexes after the data.
function M.key_statements(t, dialect)
  local q = quoter(dialect)
  local out = {}
  local function cols(list)
    local k = {}
    for i, c in ipairs(list) do k[i] = q(c) end
    return table.concat(k, ", ")
  end
  if dialect ~= "sqlite" and #t.primary_key > 0 then
    out[#out + 1] = "ALTER TABLE " .. M.target_name(t, dialect) .. " ADD PRIMARY KEY (" .. cols(t.primary_key) .. ")"
  end
  for _, i in ipairs(t.unique) do
    out[#out + 1] = "CREATE UNIQUE INDEX " .. q(i.name) .. " ON " .. M.target_name(t, dialect) .. " (" .. cols(i.columns) .. ")"
  end
  return out
end

local function progress(opts, info)
  if opts.progress then opts.progress(info) end
end

-- The expression that reads column c (quoted name qc) for the backup.
-- psqlODBC parses dates and timestamps with sscanf into structs that upkit
-- formats again; PostgreSQL's own ISO text is the same value at a fraction
-- of the cost (st:dump puts the 'T' in timestamps). pg_iso: the backup's
-- own PostgreSQL transaction, which set DateStyle ISO.
local function select_expr(pg_iso, qc, c)
  if pg_iso and (c.source_type == "date" or c.type == "timestamp" or c.type == "timestamptz") then
    return "CAST(CAST(" .. qc .. " AS text) AS varchar(40)) AS " .. qc
  end
  return qc
end

-- PostgreSQL: start db's REPEATABLE READ, READ ONLY transaction, and open up
-- to n - 1 more connections that read from the same snapshot
-- (pg_export_snapshot), so that several server processes and fetch threads
-- share the work. Returns those connections (none when the server does not
-- allow it). Both SETs must be the first statement of their transaction,
-- before psqlODBC wraps statements in savepoints.
local TX = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
-- How values are spelled in text blocks: ISO dates, bytea in hex, floats
-- exact (any value above 0 means shortest-exact from PostgreSQL 12 on).
local TEXT_FORMS = "SET LOCAL DateStyle = ISO; SET LOCAL bytea_output = hex; SET LOCAL extra_float_digits = 3"
local function pg_begin(db, n)
  db:begin()
  local ok = pcall(db.exec, db, TX .. "; SELECT set_config('upkit.snapshot', pg_export_snapshot(), true)")
  if not ok then
    db:rollback()
    db:begin()
    db:exec(TX)
  end
  db:exec(TEXT_FORMS)
  local helpers = {}
  if not ok then return helpers end
  local snap = db:first("SELECT current_setting('upkit.snapshot') AS s").s
  for _ = 2, n do
    local ok2, h = pcall(require("upkit.sql").connect, db:connection_string())
    if not ok2 then break end
    local ok3 = pcall(function()
      h:begin()
      h:exec(TX .. "; SET TRANSACTION SNAPSHOT '" .. snap:gsub("'", "''") .. "'")
      h:exec(TEXT_FORMS)
    end)
    if not ok3 then h:close() break end
    helpers[#helpers + 1] = h
  end
  return helpers
end

-- A PostgreSQL table's pages (main fork) and bytes on disk (with TOAST).
local function pg_size(db, name)
  local r = db:first("SELECT pg_relation_size(CAST(? AS regclass)) / CAST(current_setting('block_size') AS bigint) AS pages, " ..
    "pg_table_size(CAST(? AS regclass)) AS bytes", name, name)
  return tonumber(r.pages) or 0, tonumber(r.bytes) or 0
end

-- The pages of a PostgreSQL table (0 when unknown).
local function pg_pages(db, name)
  local ok, pages = pcall(pg_size, db, name)
  return ok and pages or 0
end

local SPLIT_PAGES = 1024  -- tables larger than this (8 MiB) are read in parts
local PARTS = 2           -- through this many connections at once

-- Whether the server reads a range of ctid without scanning the whole table
-- (TID range scans, PostgreSQL 14) and sends text as UTF-8: then tables go
-- into text blocks.
local function pg_text_blocks(db)
  local ok, r = pcall(db.first, db, "SELECT CAST(current_setting('server_version_num') AS integer) AS v, " ..
    "current_setting('client_encoding') AS e")
  return ok and r and r.v >= 140000 and r.e == "UTF8"
end

-- The page ranges of a table, about TEXT_BLOCK_BYTES of it each: { {lo, hi}, ... },
-- the last one open (hi nil), so that rows on pages added since are read too.
local function pg_ranges(db, name)
  local pages, bytes = pg_size(db, name)
  local step = math.max(1, pages * TEXT_BLOCK_BYTES // math.max(bytes, 1))
  local out = {}
  for lo = 0, math.max(pages - 1, 0), step do out[#out + 1] = { lo, lo + step } end
  out[#out][2] = nil
  return out
end

-- The value of column c inside a text block's ROW(...): money, whose text
-- carries a currency sign and separators, as numeric.
local function row_expr(qc, c)
  if c.source_type == "money" then return "CAST(" .. qc .. " AS numeric)" end
  return qc
end

-- Read value blocks ("D" records) from the open statements streams until
-- each ends; rows counts on from rows. Returns the rows.
local function value_blocks(w, streams, stamps, t, opts, rows)
  local ok, err = pcall(function()
    while #streams > 0 do
      for i = #streams, 1, -1 do
        local block, n = streams[i]:dump(BLOCK_ROWS, BLOCK_BYTES, true, stamps)
        if block then
          w:record("D", block)
          rows = rows + n
          progress(opts, { phase = "backup", table = t.name, rows = rows })
        else
          streams[i]:close()
          table.remove(streams, i)
        end
      end
    end
  end)
  for _, st in ipairs(streams) do st:close() end
  if not ok then error(err, 0) end
  return rows
end

-- The condition on ctid that selects pages lo to hi - 1 (hi nil: to the end).
local function page_range(lo, hi)
  local where = "ctid >= CAST('(" .. lo .. ",0)' AS tid)"
  if hi then where = where .. " AND ctid < CAST('(" .. hi .. ",0)' AS tid)" end
  return where
end

-- The query of one text block: table (quoted, after ONLY), the ROW(...)
-- fields, pages lo to hi - 1.
function M.text_block_query(name, fields, lo, hi)
  return "SELECT count(*) AS n, string_agg(CAST(ROW(" .. fields .. ") AS text), chr(10)) AS t FROM " ..
    name .. " WHERE " .. page_range(lo, hi)
end

-- Read table t (schema s) into text blocks ("R" records) through the
-- connections conns at once, each on its own page ranges. A range the
-- server cannot give as one value (a text over 1 GB, say) is read again
-- row by row into value blocks: select is the query of the table's columns
-- for that. Returns the rows.
local function text_blocks(w, conns, q, s, t, opts, select, stamps)
  local name = qualified(q, t)
  local fields = {}
  for i, c in ipairs(s.columns) do fields[i] = row_expr(q(c.name), c) end
  fields = table.concat(fields, ", ")
  local ranges = pg_ranges(conns[1], name)
  local sts, rows, nxt, current = {}, 0, 1, {}
  local function start(k)
    local r = ranges[nxt]
    nxt = nxt + 1
    current[k] = r
    sts[k]:start_block(M.text_block_query("ONLY " .. name, fields, r[1], r[2]))
  end
  local ok, err = pcall(function()
    for k = 1, math.min(#conns, #ranges) do
      sts[k] = conns[k]:statement()
      start(k)
    end
    local running = #sts
    while running > 0 do
      for k = 1, #sts do
        local st = sts[k]
        if st then
          local ok2, n = pcall(st.finish_block, st, w)
          -- only the server's refusal of the query itself: not a write error, an
          -- interruption, a timeout or a lost connection
          local refused = not ok2 and upkit.is_error(n) and n.diagnostics and n.code == "SQL_ERROR"
          if not ok2 and not refused then error(n, 0) end
          if not ok2 then
            local r = current[k]
            local rerun = pcall(function()
              n = value_blocks(w, { conns[k]:open(select .. " WHERE " .. page_range(r[1], r[2])) }, stamps, t, opts, rows) - rows
            end)
            if not rerun then error(n, 0) end
          end
          if nxt <= #ranges then
            start(k)
          else
            st:close()
            sts[k] = false
            running = running - 1
          end
          if n > 0 then
            rows = rows + n
            progress(opts, { phase = "backup", table = t.name, rows = rows })
          end
        end
      end
    end
  end)
  for _, st in pairs(sts) do if st then st:close() end end
  if not ok then error(err, 0) end
  return rows
end

-- Backup of every user table of db into opts.to.
function M.backup(db, opts)
  local engine = require("upkit.sql").engine(db)
  local info = db:info()
  local tables = user_tables(db, engine)
  local w <close> = bf.writer(opts.to, M.MAGIC)
  local own_tx = not db:in_transaction()
  local helpers, text = {}, false
  if own_tx then
    if engine == "postgresql" then helpers = pg_begin(db, PARTS) else db:begin() end
    text = engine == "postgresql" and pg_text_blocks(db)
  end
  local ok, err = pcall(function()
    local names = {}
    for i, t in ipairs(tables) do names[i] = t.name end
    w:record("H", json.encode {
      format = "upkit-logical-backup", version = M.VERSION,
      created = os.date("!%Y-%m-%dT%H:%M:%SZ"),
      source = { dbms = info.dbms, dbms_version = info.dbms_version, database = info.database },
      tables = json.array(names),
    })
    local q = quoter(engine == "mssql" and "mssql" or "generic")
    local total = 0
    for _, t in ipairs(tables) do
      local s = table_schema(db, engine, t)
      w:record("T", json.encode {
        name = s.name, schema = s.schema, columns = json.array(s.columns),
        primary_key = json.array(s.primary_key), unique = json.array(s.unique),
      })
      local cols, stamps = {}, {}
      local pg_iso = own_tx and engine == "postgresql"
      for i, c in ipairs(s.columns) do
        cols[i] = select_expr(pg_iso, q(c.name), c)
        stamps[i] = (pg_iso and (c.type == "timestamp" or c.type == "timestamptz")) and "T" or "."
      end
      stamps = table.concat(stamps)
      local rows = 0
      -- PostgreSQL: a table's own rows only, not those of its partitions or
      -- inheriting tables, which are backed up as tables of their own
      local select = "SELECT " .. table.concat(cols, ", ") .. " FROM " ..
        (engine == "postgresql" and "ONLY " or "") .. qualified(q, t)
      if text and #cols > 0 then
        local conns = { db }
        for k, h in ipairs(helpers) do conns[k + 1] = h end
        rows = text_blocks(w, conns, q, s, t, opts, select, stamps)
      elseif #cols > 0 then
        -- Split by physical position: every row is in exactly one part.
        local pages = #helpers > 0 and pg_pages(db, qualified(q, t)) or 0
        local streams = {}
        if pages > SPLIT_PAGES then
          local parts = #helpers + 1
          for k = 0, parts - 1 do
            local hi = k < parts - 1 and pages * (k + 1) // parts or nil
            streams[k + 1] = (k == 0 and db or helpers[k]):open(select .. " WHERE " .. page_range(pages * k // parts, hi))
          end
        else
          streams[1] = db:open(select)
        end
        rows = value_blocks(w, streams, stamps, t, opts, 0)
      end
      w:record("E", json.encode { rows = rows })
      total = total + rows
    end
    return total
  end)
  for _, h in ipairs(helpers) do h:close() end
  if own_tx then pcall(db.rollback, db) end
  if not ok then error(err, 0) end
  local bytes, sha = w:finish()
  return { file = opts.to, bytes = bytes, sha256 = sha, tables = #tables, rows = err }
end

-- The shape of a table record (T): BAD_FORMAT through bad unless it is one.
local function check_table(bad, t)
  local function strings(list, what)
    if list == nil then return end
    if type(list) ~= "table" then bad(what .. " is not a list") end
    for k, v in pairs(list) do
      if math.type(k) ~= "integer" or k < 1 or k > #list or type(v) ~= "string" then bad(what .. " is not a list of names") end
    end
  end
  if type(t.name) ~= "string" or t.name == "" then bad("a table without a name") end
  if t.schema ~= nil and t.schema ~= json.null and type(t.schema) ~= "string" then bad("table " .. t.name .. ": a schema that is not a name") end
  if t.schema == json.null then t.schema = nil end
  if type(t.columns) ~= "table" then bad("table " .. t.name .. " without columns") end
  for k, c in pairs(t.columns) do
    if math.type(k) ~= "integer" or k < 1 or k > #t.columns or type(c) ~= "table" or type(c.name) ~= "string" or
       type(c.type) ~= "string" or (c.nullable ~= nil and type(c.nullable) ~= "boolean") or
       (c.size ~= nil and math.type(c.size) ~= "integer") or (c.digits ~= nil and math.type(c.digits) ~= "integer") or
       (c.source_type ~= nil and type(c.source_type) ~= "string") then
      bad("table " .. t.name .. ": column " .. tostring(k) .. " is not a column description")
    end
  end
  strings(t.primary_key, "table " .. t.name .. ": the primary key")
  if t.primary_key == nil then t.primary_key = {} end
  if t.unique == nil then t.unique = {} end
  if type(t.unique) ~= "table" then bad("table " .. t.name .. ": unique indexes that are not a list") end
  for k, i in pairs(t.unique) do
    if math.type(k) ~= "integer" or k < 1 or k > #t.unique or type(i) ~= "table" or type(i.name) ~= "string" then
      bad("table " .. t.name .. ": a unique index without a name")
    end
    strings(i.columns, "table " .. t.name .. ": the columns of index " .. i.name)
    if i.columns == nil then bad("table " .. t.name .. ": index " .. i.name .. " without columns") end
  end
end

-- Read a logical backup file through; each record is given to fn(type, payload).
-- Raises BAD_FORMAT or CHECKSUM_MISMATCH (what names the operation: sql.verify
-- or sql.restore), also for a record of the wrong shape (a column that is not
-- a description, a block that does not hold its rows of values). Returns bytes, sha256.
local function read_all(file, what, fn)
  local r <close> = bf.reader(file, what)
  local magic = r:magic(#M.MAGIC)
  if magic ~= M.MAGIC then
    upkit.error("BAD_FORMAT", what .. ": '" .. file .. "': not an upkit logical backup", { path = file })
  end
  local state, tbl, version = "start", nil, 1
  local function bad(why) upkit.error("BAD_FORMAT", what .. ": '" .. file .. "': " .. why, { path = file }) end
  local function decode(p)
    local ok, v = pcall(json.decode, p)
    if not ok or type(v) ~= "table" then bad("a header is not valid JSON") end
    return v
  end
  while true do
    local kind, payload = r:next()
    if not kind then break end
    if kind == "H" then
      if state ~= "start" then bad("a second header") end
      local h = decode(payload)
      if h.format ~= "upkit-logical-backup" then bad("unknown format") end
      if h.version ~= 1 and h.version ~= 2 then
        bad("version " .. tostring(h.version) .. " (this upkit reads versions 1 and 2)")
      end
      if h.source ~= nil and type(h.source) ~= "table" then bad("a header whose source is not an object") end
      version = h.version
      state = "tables"
      fn("H", h)
    elseif kind == "T" then
      if state ~= "tables" then bad("a table out of place") end
      tbl = decode(payload)
      check_table(bad, tbl)
      tbl.rows_seen = 0
      state = "data"
      fn("T", tbl)
    elseif kind == "D" or kind == "R" then
      if state ~= "data" then bad("data outside a table") end
      if kind == "R" and version < 2 then bad("a text block in a version 1 file") end
      local ok, err = pcall(native.check_block, payload, #tbl.columns, kind == "R")
      if not ok then bad("table " .. tbl.name .. ": " .. tostring(upkit.is_error(err) and err.message or err)) end
      tbl.rows_seen = tbl.rows_seen + string.unpack("<I4", payload)
      fn(kind, payload, tbl)
    elseif kind == "E" then
      if state ~= "data" then bad("a table end out of place") end
      local e = decode(payload)
      if math.type(e.rows) ~= "integer" or e.rows ~= tbl.rows_seen then
        bad(string.format("table %s has %d rows, its end says %s", tbl.name, tbl.rows_seen, tostring(e.rows)))
      end
      state = "tables"
      fn("E", e, tbl)
    elseif kind == "Z" then
      if state ~= "tables" then bad("the trailer comes before the end of a table") end
      state = "end"
    end
  end
  if state ~= "end" then bad("no trailer") end
  return r:bytes(), r:sha256()
end

-- Verify the whole file (and its digest against opts.sha256 when given);
-- returns { file, bytes, sha256, tables = { {name, rows} }, rows, source, verified = true }.
function M.verify(file, opts, what)
  what = what or "sql.verify"
  local tables, rows, header = {}, 0, nil
  local bytes, sha = read_all(file, what, function(kind, v, t)
    if kind == "H" then header = v
    elseif kind == "E" then
      tables[#tables + 1] = { name = t.name, rows = v.rows }
      rows = rows + v.rows
    end
  end)
  if opts and opts.sha256 and opts.sha256:lower() ~= sha then
    upkit.error("CHECKSUM_MISMATCH", string.format("%s: '%s': SHA-256 %s, expected %s", what, file, sha, opts.sha256),
      { path = file })
  end
  return { file = file, bytes = bytes, sha256 = sha, tables = tables, rows = rows, source = header.source, verified = true }
end

-- How the fields of a table's text blocks read as values (_sql.record_values).
local VALUE_TYPES = { smallint = "i", integer = "i", bigint = "i", real = "f", double = "f",
  boolean = "b", binary = "x", timestamp = "T", timestamptz = "T" }
local function value_types(t)
  if not t.value_types then
    local out = {}
    for i, c in ipairs(t.columns) do out[i] = VALUE_TYPES[c.type] or "s" end
    t.value_types = table.concat(out)
  end
  return t.value_types
end

-- PostgreSQL: the connection to restore into: db, or a new one to
-- opts.database (created when missing). Returns it, whether it is ours to
-- close, and the quoted name of the database created here (nil when none).
local function pg_database(db, opts)
  local name = opts.database
  if not name or name == db:info().database then return db, false end
  local quoted = '"' .. name:gsub('"', '""') .. '"'
  local exists = db:first("SELECT 1 AS x FROM pg_database WHERE datname = ?", name)
  if not exists then db:exec("CREATE DATABASE " .. quoted) end
  local created = not exists and quoted or nil
  local sql = require "upkit.sql"
  local ok, target = pcall(sql.connect, sql.with_value(db:connection_string(), "Database", name))
  if not ok then
    if created then pcall(db.exec, db, "DROP DATABASE " .. created) end
    error(target, 0)
  end
  return target, true, created
end

-- Restore a logical backup into db (PostgreSQL: into opts.database, created
-- when missing). Checks the whole file first; NOT_EMPTY unless replace.
function M.restore(db, opts)
  local summary = M.verify(opts.from, opts, "sql.restore")
  local engine = require("upkit.sql").engine(db)
  if engine == "mssql" then upkit.error("UNSUPPORTED", "sql.restore: restore a logical backup into SQL Server is not supported") end
  local target, own, created = db, false, nil
  if engine == "postgresql" then target, own, created = pg_database(db, opts) end
  local ok, res = pcall(function()
    local existing = user_tables(target, engine)
    local present = {}
    for _, t in ipairs(existing) do present[M.target_name(t, engine)] = true end
    if #existing > 0 and not opts.replace then
      upkit.error("NOT_EMPTY", string.format("sql.restore: %s: the database has %d table(s); pass replace = true to overwrite",
        target:info().connection, #existing))
    end
    local q = quoter(engine)
    local counts = {}
    target:begin()
    local ok2, err = pcall(function()
      local tables = {}
      read_all(opts.from, "sql.restore", function(kind, v, t)
        if kind == "T" then
          v.qname = M.target_name(v, engine)
          if present[v.qname] then target:exec("DROP TABLE " .. v.qname) end
          if v.qname ~= q(v.name) then target:exec("CREATE SCHEMA IF NOT EXISTS " .. q(v.schema)) end
          target:exec(M.create_statement(v, engine))
          if engine == "postgresql" then
            -- rows of the table's own type, columns in the order just created
            v.prefix, v.rowtype = "INSERT INTO " .. v.qname, v.qname
          else
            local cols = {}
            for i, c in ipairs(v.columns) do cols[i] = q(c.name) end
            v.prefix = "INSERT INTO " .. v.qname .. " (" .. table.concat(cols, ", ") .. ")"
          end
          tables[#tables + 1] = v
        elseif kind == "R" and engine == "postgresql" then
          t.loaded = (t.loaded or 0) + target:load(v, { insert = t.prefix, columns = #t.columns,
            row_type = t.rowtype, record_text = true })
          progress(opts, { phase = "restore", table = t.name, rows = t.loaded })
        elseif kind == "D" or kind == "R" then
          if kind == "R" then v = native.record_values(v, value_types(t)) end
          t.loaded = (t.loaded or 0) + target:load(v, { insert = t.prefix, columns = #t.columns,
            per_statement = t.rowtype and BLOCK_ROWS or INSERT_ROWS, row_type = t.rowtype })
          progress(opts, { phase = "restore", table = t.name, rows = t.loaded })
        end
      end)
      for _, t in ipairs(tables) do
        for _, s in ipairs(M.key_statements(t, engine)) do target:exec(s) end
        local n = target:first("SELECT COUNT(*) AS n FROM " .. t.qname).n
        if n ~= t.rows_seen then
          upkit.error("CHECKSUM_MISMATCH", string.format("sql.restore: table %s has %d rows after restore, the backup %d",
            t.name, n, t.rows_seen))
        end
        counts[#counts + 1] = { name = t.name, schema = t.schema, rows = n }
      end
    end)
    if not ok2 then
      pcall(target.rollback, target)
      error(err, 0)
    end
    target:commit()
    return counts
  end)
  local dbname = target:info().database
  if own then target:close() end
  if not ok then
    -- a database this restore created goes again, so that a failed restore leaves nothing behind
    if created then pcall(db.exec, db, "DROP DATABASE " .. created) end
    error(res, 0)
  end
  return { file = opts.from, bytes = summary.bytes, sha256 = summary.sha256, tables = res,
           rows = summary.rows, database = dbname }
end

return M
