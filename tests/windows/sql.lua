-- upkit.sql on Windows (make test-windows): ODBC through Wine's odbc32, which hands
-- the connection to the host's SQLite ODBC driver; the database path is a Unix path
-- (UPKIT_TEST_UNIX_TMP, a folder tests/windows/run.sh makes), since the driver runs
-- on the Unix side. Backups are not run here: SQLite would write the Unix side of a
-- path upkit reads on the Windows side, which only Wine splits.
local T = require "upkit.test"
local sql = require "upkit.sql"

local tmp = os.getenv("UPKIT_TEST_UNIX_TMP")
if not tmp then
  T.skip("upkit.sql under Wine", "UPKIT_TEST_UNIX_TMP is not set (make test-windows sets it)")
  T.done()
  return
end
local cs = "Driver=SQLite3;Database=" .. tmp .. "/windows.db"

T.test("connect, create, insert with parameters and read rows back", function()
  local db = sql.connect(cs)
  db:exec("DROP TABLE IF EXISTS Machine")
  db:exec("CREATE TABLE Machine (Id INTEGER PRIMARY KEY, Name TEXT, Big INTEGER, IsDisabled INTEGER)")
  for i = 1, 50 do
    db:exec("INSERT INTO Machine (Name, Big, IsDisabled) VALUES (?, ?, ?)", "m\xc3\xa4-" .. i, (1 << 40) + i, 0)
  end
  local n = 0
  for row in db:rows("SELECT Id, Name, Big FROM Machine ORDER BY Id") do
    n = n + 1
    T.eq(row.Name, "m\xc3\xa4-" .. n)
    T.eq(row.Big, (1 << 40) + n)
  end
  T.eq(n, 50)
  db:close()
end)

T.test("a transaction that fails is rolled back", function()
  local db = sql.connect(cs)
  T.raises("SQL_ERROR", db.transaction, db, function()
    db:exec("UPDATE Machine SET IsDisabled = 1")
    db:exec("SELECT * FROM NoSuchTable")
  end)
  T.eq(db:first("SELECT COUNT(*) AS n FROM Machine WHERE IsDisabled = 1").n, 0)
  db:close()
end)

T.test("NULL comes back as sql.null; info names SQLite", function()
  local db = sql.connect(cs)
  T.eq(db:first("SELECT NULL AS x").x, sql.null)
  T.match(db:info().dbms:lower(), "sqlite")
  db:close()
end)

T.test("a bad statement raises SQL_ERROR with the SQLSTATE", function()
  local db = sql.connect(cs)
  local e = T.raises("SQL_ERROR", db.exec, db, "SELEC 1")
  T.ok(e.sqlstate, "sqlstate")
  db:close()
end)

T.test("an unknown driver raises an error object with the driver manager's SQLSTATE", function()
  -- Windows' driver manager says IM002; Wine's odbc32 says 01000
  local ok, e = pcall(sql.connect, "Driver=NoSuchDriverUpkit;Database=x")
  T.eq(ok, false)
  T.ok(e.code == "CONNECT_FAILED" or e.code == "SQL_ERROR", "code " .. tostring(e.code))
  T.match(e.sqlstate, "^%w%w%w%w%w$")
end)

T.done()
