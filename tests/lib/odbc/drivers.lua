-- odbc.drivers: the ODBC drivers the tests use, found at run time from the
-- Debian packages that ship them, so no ODBC configuration file (the
-- machine's /etc/odbcinst.ini included) is read or written.
--   local drivers = require "odbc.drivers"
--   drivers.sqlite()   -> path of libsqlite3odbc.so (package libsqliteodbc)
--   drivers.postgres() -> path of psqlodbcw.so (package odbc-postgresql, Unicode)
--   drivers.sqlite_conn(dbfile) -> "Driver=<path>;Database=<dbfile>"
local M = {}
local cache = {}

local function from_package(pkg, file)
  if cache[file] then return cache[file] end
  local p = io.popen("dpkg -L " .. pkg .. " 2>/dev/null")
  local found
  for line in p:lines() do
    if line:sub(-#file - 1) == "/" .. file then found = line end
  end
  p:close()
  if not found then
    error(string.format("odbc.drivers: %s not found; install the Debian package %s (make deps)", file, pkg))
  end
  cache[file] = found
  return found
end

function M.sqlite() return from_package("libsqliteodbc", "libsqlite3odbc.so") end
function M.postgres() return from_package("odbc-postgresql", "psqlodbcw.so") end

function M.sqlite_conn(dbfile)
  return "Driver=" .. M.sqlite() .. ";Database=" .. dbfile
end

return M
