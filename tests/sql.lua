-- upkit.sql queries on two real engines: SQLite (libsqliteodbc) and
-- PostgreSQL (a server started here, psqlODBC).
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local sql = require "upkit.sql"
local json = require "upkit.json"
local drivers = require "odbc.drivers"
local pg = require("pg").start()

local dir = T.tmpdir()
local engines = {
  { name = "SQLite", conn = drivers.sqlite_conn(dir .. "/q.db"),
    ddl = "CREATE TABLE types (id INTEGER PRIMARY KEY, i BIGINT, f DOUBLE, b BOOLEAN, t TEXT, v VARCHAR(20), " ..
          "bin BLOB, d DATE, ts TIMESTAMP, n NUMERIC(20,4))" },
  { name = "PostgreSQL", conn = pg.conn,
    ddl = "CREATE TABLE types (id INTEGER PRIMARY KEY, i BIGINT, f DOUBLE PRECISION, b BOOLEAN, t TEXT, " ..
          "v VARCHAR(20), bin BYTEA, d DATE, ts TIMESTAMP, n NUMERIC(20,4))" },
}

local nonbmp = "h€llo 😀 𝄞 中文"
local mb = string.rep("\0\1\2\255binary", 1 << 17):sub(1, 1 << 20)

T.test("sql.null is json.null", function()
  T.eq(sql.null, json.null)
  T.eq(type(sql.null), "userdata")
end)

for _, e in ipairs(engines) do
  local function connect() return sql.connect(e.conn) end

  T.test(e.name .. ": info names the DBMS and driver", function()
    local db <close> = connect()
    local info = db:info()
    T.match(info.dbms, e.name)
    T.ok(info.dbms_version and info.driver and info.driver_version, "versions")
  end)

  T.test(e.name .. ": every type round-trips exactly, NULL in every column", function()
    local db <close> = connect()
    db:exec("DROP TABLE IF EXISTS types")
    db:exec(e.ddl)
    T.eq(db:exec("INSERT INTO types VALUES (?,?,?,?,?,?,?,?,?,?)", 1, math.maxinteger, 0.1, true, nonbmp,
      "x😀y", sql.binary(mb), "2024-02-29", "2024-02-29T23:59:58.25", "-12345678.9012"), 1)
    T.eq(db:exec("INSERT INTO types VALUES (?,?,?,?,?,?,?,?,?,?)", 2, math.mininteger, -1e300, false, "",
      "", sql.binary(""), "1999-01-01", "1999-01-01T00:00:00", "0.0001"), 1)
    T.eq(db:exec("INSERT INTO types (id) VALUES (3)"), 1)
    local rows = db:query("SELECT * FROM types ORDER BY id")
    T.eq(#rows, 3)
    local r = rows[1]
    T.eq(r.i, math.maxinteger)
    T.eq(math.type(r.i), "integer")
    T.eq(r.f, 0.1)
    T.eq(r.b, true)
    T.eq(r.t, nonbmp)
    T.eq(r.v, "x😀y")
    T.eq(#r.bin, #mb)
    T.ok(r.bin == mb, "1 MB binary value intact")
    T.eq(r.d, "2024-02-29")
    T.eq(r.ts, "2024-02-29T23:59:58.25")
    if e.name == "PostgreSQL" then T.eq(r.n, "-12345678.9012") end
    T.eq(rows[2].i, math.mininteger)
    T.eq(rows[2].b, false)
    T.eq(rows[2].t, "")
    for _, c in ipairs(rows.columns) do
      if c.name ~= "id" then T.eq(rows[3][c.name], sql.null, "NULL in " .. c.name) end
    end
    T.eq(rows.columns[1].name, "id")
    T.eq(rows.columns[2].type, "integer")
    T.eq(rows.columns[7].type, "binary")
    db:exec("DROP TABLE types")
  end)

  T.test(e.name .. ": non-BMP text as a parameter and back through SQL functions", function()
    local db <close> = connect()
    T.eq(db:first("SELECT ? AS s", nonbmp).s, nonbmp)
    T.eq(db:first("SELECT '" .. nonbmp .. "' AS s").s, nonbmp, "non-BMP in the SQL text")
    T.eq(db:first("SELECT length(?) AS n", "😀a").n, e.name == "PostgreSQL" and 2 or 2)
  end)

  T.test(e.name .. ": an empty table gives no rows but its columns", function()
    local db <close> = connect()
    db:exec("CREATE TABLE empty_t (a INTEGER, b TEXT)")
    local rows = db:query("SELECT a, b FROM empty_t")
    T.eq(#rows, 0)
    T.eq(rows.columns[2].name, "b")
    T.eq(db:first("SELECT a FROM empty_t"), nil)
    db:exec("DROP TABLE empty_t")
  end)

  T.test(e.name .. ": columns of the same name keep every value (name_2, name_3, ...)", function()
    local db <close> = connect()
    local rows = db:query("SELECT 1 AS id, 2 AS id, 3 AS id_2, 4 AS id, 'x' AS name")
    T.eq(rows[1], { id = 1, id_3 = 2, id_2 = 3, id_4 = 4, name = "x" })
    local names, labels = {}, {}
    for i, c in ipairs(rows.columns) do names[i], labels[i] = c.name, c.label end
    T.eq(names, { "id", "id_3", "id_2", "id_4", "name" })
    T.eq(labels, { "id", "id", "id_2", "id", "name" })
  end)

  T.test(e.name .. ": a table with 200 columns", function()
    local db <close> = connect()
    local cols, marks, vals = {}, {}, {}
    for i = 1, 200 do cols[i] = "c" .. i .. " INTEGER"; marks[i] = "?"; vals[i] = i * 1000003 end
    db:exec("CREATE TABLE wide (" .. table.concat(cols, ", ") .. ")")
    db:exec("INSERT INTO wide VALUES (" .. table.concat(marks, ",") .. ")", table.unpack(vals))
    vals[100] = nil
    db:exec("INSERT INTO wide VALUES (" .. table.concat(marks, ",") .. ")", table.unpack(vals, 1, 200))
    local rows = db:query("SELECT * FROM wide")
    T.eq(#rows.columns, 200)
    T.eq(rows[1].c200, 200 * 1000003)
    T.eq(rows[2].c100, sql.null)
    T.eq(rows[2].c101, 101 * 1000003)
    db:exec("DROP TABLE wide")
  end)

  T.test(e.name .. ": rows streams many rows in blocks; break closes the cursor", function()
    local db <close> = connect()
    db:exec("CREATE TABLE many (id INTEGER, name VARCHAR(30))")
    local st <close> = db:prepare("INSERT INTO many VALUES (?, ?)")
    db:transaction(function()
      for i = 1, 5000 do st:execute(i, "name " .. i) end
    end)
    local n, sum = 0, 0
    for row in db:rows("SELECT id, name FROM many ORDER BY id") do
      n = n + 1
      sum = sum + row.id
      T.eq(row.name, "name " .. row.id)
    end
    T.eq(n, 5000)
    T.eq(sum, 5000 * 5001 // 2)
    for row in db:rows("SELECT id FROM many ORDER BY id") do
      if row.id == 10 then break end
    end
    T.eq(db:first("SELECT COUNT(*) AS n FROM many").n, 5000)
    db:exec("DROP TABLE many")
  end)

  T.test(e.name .. ": an error inside the rows loop closes the cursor", function()
    local db <close> = connect()
    T.raises("BOOM", function()
      for _ in db:rows("SELECT 1 AS x UNION ALL SELECT 2") do require("upkit").error("BOOM", "stop") end
    end)
    T.eq(db:first("SELECT 3 AS x").x, 3)
  end)

  T.test(e.name .. ": a prepared statement runs many times and queries", function()
    local db <close> = connect()
    local st <close> = db:prepare("SELECT ? + 1 AS n")
    T.eq(st:query(1)[1].n, 2)
    T.eq(st:query(41)[1].n, 42)
    local seen
    for row in st:rows(9) do seen = row.n end
    T.eq(seen, 10)
  end)

  T.test(e.name .. ": transaction rolls back when fn raises, commits otherwise", function()
    local db <close> = connect()
    db:exec("CREATE TABLE tx (a INTEGER)")
    T.raises("BOOM", function()
      db:transaction(function(d)
        d:exec("INSERT INTO tx VALUES (1)")
        require("upkit").error("BOOM", "no")
      end)
    end)
    T.eq(db:first("SELECT COUNT(*) AS n FROM tx").n, 0)
    T.eq(db:transaction(function(d) d:exec("INSERT INTO tx VALUES (2)") return "done" end), "done")
    T.eq(db:first("SELECT COUNT(*) AS n FROM tx").n, 1)
    db:begin()
    db:exec("INSERT INTO tx VALUES (3)")
    db:rollback()
    T.eq(db:first("SELECT COUNT(*) AS n FROM tx").n, 1)
    T.raises("BUSY", function() db:begin(); db:begin() end)
    db:rollback()
    T.raises("EINVAL", db.commit, db)
    db:exec("DROP TABLE tx")
  end)

  T.test(e.name .. ": syntax error raises with its SQLSTATE and every record", function()
    local db <close> = connect()
    local err = T.raises("SQL_ERROR", db.exec, db, "SELEC 1")
    T.eq(err.sqlstate, e.name == "PostgreSQL" and "42601" or "HY000")
    T.ok(#err.diagnostics >= 1, "diagnostics")
    T.eq(err.diagnostics[1].sqlstate, err.sqlstate)
    T.eq(type(err.native), "number")
    T.contains(err.message, "db:exec")
  end)

  T.test(e.name .. ": constraint violation raises 23xxx", function()
    local db <close> = connect()
    db:exec("CREATE TABLE uq (a INTEGER PRIMARY KEY)")
    db:exec("INSERT INTO uq VALUES (1)")
    -- psqlODBC passes the server's SQLSTATE; the SQLite driver reports HY000
    local err = T.raises("SQL_ERROR", db.exec, db, "INSERT INTO uq VALUES (1)")
    T.eq(err.sqlstate, e.name == "PostgreSQL" and "23505" or "HY000")
    T.match(err.message, e.name == "PostgreSQL" and "duplicate key" or "UNIQUE constraint failed")
    db:exec("DROP TABLE uq")
  end)

  T.test(e.name .. ": bad parameters and closed handles raise", function()
    local db = connect()
    T.raises("EINVAL", db.exec, db, "SELECT ?", {})
    T.raises("EINVAL", db.exec, db, "SELECT ?", function() end)
    local st = db:prepare("SELECT 1 AS x")
    db:close()
    db:close()
    T.raises("CLOSED", db.exec, db, "SELECT 1")
    T.raises("CLOSED", st.execute, st)
    st:close()
    st:close()
    T.match(tostring(db), "closed")
  end)
end

T.test("PostgreSQL: DECIMAL and NUMERIC are strings, or numbers when the connection asks", function()
  local s <close> = sql.connect(pg.conn)
  s:exec("CREATE TABLE dec_t (a NUMERIC(12,2), b NUMERIC(10,0), c DECIMAL(10,3), d NUMERIC(5,1), " ..
         "e NUMERIC, f NUMERIC)")
  s:exec("INSERT INTO dec_t VALUES (1234.50, 12, -0.125, NULL, 'NaN', 123456789012345678901234567890.5)")
  local q = "SELECT a, b, c, d, e, f FROM dec_t"
  T.eq(s:first(q), { a = "1234.50", b = "12", c = "-0.125", d = sql.null, e = "NaN",
                     f = "123456789012345678901234567890.5" })
  local db <close> = sql.connect(pg.conn, { decimals = "number" })
  local r = db:first(q)
  T.eq({ r.a, r.b, r.c, r.d, r.f }, { 1234.5, 12, -0.125, sql.null, 1.2345678901234568e29 })
  T.eq({ math.type(r.a), math.type(r.b) }, { "float", "integer" })
  T.ok(r.e ~= r.e, "NaN")
  T.raises("EINVAL", sql.connect, pg.conn, { decimals = "float" })
  s:exec("DROP TABLE dec_t")
end)

T.test("PostgreSQL: psqlODBC gets block fetch and real booleans unless the connection string says otherwise", function()
  local plain = "Driver=" .. drivers.postgres() .. ";Server=127.0.0.1;Port=" .. pg.port .. ";Database=upkit;Uid=" ..
                pg.user .. ";Pwd=" .. pg.password
  local db <close> = sql.connect(plain)
  local cs = db:connection_string()
  T.eq({ sql.conn_value(cs, "UseDeclareFetch"), sql.conn_value(cs, "Fetch"), sql.conn_value(cs, "BoolsAsChar") },
       { "1", "10000", "0" })
  T.eq(db:first("SELECT true AS yes").yes, true)
  local own <close> = sql.connect(plain .. ";BoolsAsChar=1;Fetch=500")
  T.eq(sql.conn_value(own:connection_string(), "BoolsAsChar"), "1", "the string's own setting stays")
  T.eq(sql.conn_value(own:connection_string(), "Fetch"), "500")
  T.ne(own:first("SELECT true AS yes").yes, true, "booleans as text, as asked")
  -- through a DSN (a private odbc.ini): the driver is known once connected
  local ini = dir .. "/odbc.ini"
  T.write_file(ini, "[pgdsn]\nDriver = " .. drivers.postgres() .. "\nServername = 127.0.0.1\nPort = " .. pg.port ..
    "\nDatabase = upkit\n")
  local script = dir .. "/dsn.lua"
  T.write_file(script, string.format([[
local sql = require "upkit.sql"
local db = sql.connect(%q)
print(sql.conn_value(db:connection_string(), "UseDeclareFetch"), db:first("SELECT true AS yes").yes)
]], "DSN=pgdsn;Uid=" .. pg.user .. ";Pwd=" .. pg.password))
  local out, st = T.sh("ODBCINI=" .. T.q(ini) .. " " .. T.q(T.upkit_bin()) .. " run " .. T.q(script) .. " 2>&1")
  T.eq(st, 0, out)
  T.eq(out, "1\ttrue\n")
end)

T.test("PostgreSQL: a server nobody listens for raises 08001 naming it, within the login timeout", function()
  local cs = "Driver=" .. drivers.postgres() .. ";Server=127.0.0.1;Port=1;Database=upkit;Uid=upkit;Pwd=never-shown-42"
  local upkit = require "upkit"
  local t0 = upkit.now()
  local err = T.raises("CONNECT_FAILED", sql.connect, cs, { timeout = 3 })
  T.eq(err.sqlstate, "08001")
  T.ok(upkit.now() - t0 < 5, "gave up in time")
  T.contains(err.message, "Port=1")
  T.ok(not err.message:find("never-shown-42", 1, true), "no password in the message")
end)

T.test("PostgreSQL: wrong password raises 08001 without the password in the message", function()
  local cs = pg.conn:gsub("Pwd=[^;]*", "Pwd=not-the-password")
  local err = T.raises("AUTH_FAILED", sql.connect, cs)
  T.eq(err.sqlstate, "08001", "psqlODBC reports a refused password as 08001")
  T.contains(err.message, "password authentication failed")
  T.ok(not err.message:find("not-the-password", 1, true), "password hidden")
  T.contains(err.message, "sql.connect")
end)

T.test("passwords never appear in tostring(db), info or errors", function()
  local db <close> = sql.connect(pg.conn)
  T.ok(not tostring(db):find(pg.password, 1, true))
  T.ok(not db:info().connection:find(pg.password, 1, true))
  local err = T.raises("SQL_ERROR", db.exec, db, "SELEC")
  T.ok(not tostring(err):find(pg.password, 1, true))
  T.eq(sql.redact("Driver=x;PWD={a;b}}c};Uid=u;Password=p"), "Driver=x;Uid=u")
end)

T.test("unknown driver raises the driver manager's SQLSTATE", function()
  T.eq(T.raises("SQL_ERROR", sql.connect, "Driver={No Such Driver};Database=x;PWD=hidden").sqlstate, "01000",
    "a warning-class state is kept in sqlstate, never raised as the code")
  local err = T.raises("SQL_ERROR", sql.connect, "Driver=" .. dir .. "/missing.so;PWD=hidden")
  T.ok(not err.message:find("hidden", 1, true))
end)

T.test("connect rejects unknown options and bad arguments", function()
  T.raises("EINVAL", sql.connect, pg.conn, { nope = 1 })
  T.raises("EINVAL", sql.connect, 42)
  T.raises("EINVAL", sql.binary, 1)
end)

T.test("PostgreSQL: a batch consumes every result and sends notices to on_message", function()
  local msgs = {}
  local db <close> = sql.connect(pg.conn, { on_message = function(m, state) msgs[#msgs + 1] = { m, state } end })
  db:exec("CREATE TABLE b (a INTEGER)")
  T.eq(db:exec("INSERT INTO b VALUES (1); INSERT INTO b VALUES (2), (3)"), 3)
  db:exec("DO $$ BEGIN RAISE NOTICE 'ten percent processed'; END $$")
  T.ok(#msgs >= 1, "a notice arrived")
  T.contains(msgs[#msgs][1], "ten percent processed")
  db:exec("DROP TABLE b")
end)

T.test("PostgreSQL: statement timeout raises and the connection goes on", function()
  local db <close> = sql.connect(pg.conn, { query_timeout = 1 })
  local t0 = require("upkit").now()
  local err = T.raises("TIMEOUT", db.exec, db, "SELECT pg_sleep(5)")
  T.ok(err.sqlstate == "HYT00" or err.sqlstate == "57014", "the driver's SQLSTATE " .. tostring(err.sqlstate))
  T.ok(require("upkit").now() - t0 < 4, "stopped early")
  T.eq(db:first("SELECT 1 AS x").x, 1)
end)

T.test("cancel with no statement running returns false", function()
  local db <close> = sql.connect(pg.conn)
  T.eq(db:cancel(), false)
end)

pg.stop()
T.done()
