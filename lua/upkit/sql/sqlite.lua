-- upkit.sql.sqlite: SQLite backup (VACUUM INTO a temporary file, hash,
-- atomic rename) and restore (digest and PRAGMA integrity_check on a copy
-- beside the target, then an atomic replace of the target file).
-- A backup file is a plain SQLite database; its SHA-256 is kept beside it in
-- "<file>.sha256" (sha256sum format).
local native = require "upkit._sql"
local hash = require "upkit.hash"
local upkit = require "upkit"

local M = {}

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end
local function basename(p) return p:match("([^/]*)$") end

local function tmp_beside(path, tag)
  return string.format("%s/.%s.%s-%d-%d", dirname(path), basename(path), tag,
    math.floor(upkit.now() * 1000) % 1000000000, math.random(1 << 30))
end

local function size_of(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

local function write_sidecar(file, sha)
  local side = file .. ".sha256"
  local tmp = tmp_beside(side, "tmp")
  local f, err = io.open(tmp, "wb")
  if not f then upkit.error("EIO", "sql.backup: '" .. side .. "': " .. tostring(err)) end
  local ok, werr = f:write(sha, "  ", basename(file), "\n")
  local closed, cerr = f:close()
  if not ok or not closed then
    os.remove(tmp)
    upkit.error("EIO", "sql.backup: '" .. side .. "': " .. tostring(werr or cerr))
  end
  local synced, serr = pcall(native.fsync, tmp)
  if not synced then
    os.remove(tmp)
    error(serr, 0)
  end
  native.rename(tmp, side)
end

local function read_sidecar(file)
  local f = io.open(file .. ".sha256", "rb")
  if not f then return nil end
  local line = f:read("l") or ""
  f:close()
  return line:match("^(%x+)")
end

-- VACUUM INTO a temporary file beside opts.to, fsync, hash, rename.
function M.backup(db, opts)
  local tmp = tmp_beside(opts.to, "partial")
  local ok, err = pcall(function()
    db:exec("VACUUM INTO ?", tmp)
    native.fsync(tmp)
    local sha = hash.file("sha256", tmp)
    write_sidecar(opts.to, sha)
    return sha
  end)
  if not ok then
    os.remove(tmp)
    if upkit.is_error(err) and err.native == 13 then  -- SQLITE_FULL
      upkit.error("ENOSPC", "sql.backup: '" .. opts.to .. "': no space left on the file system (SQLite: database or disk is full)")
    end
    error(err, 0)
  end
  local sha = err
  local bytes = size_of(tmp)
  native.rename(tmp, opts.to)
  return { file = opts.to, bytes = bytes, sha256 = sha, database = db:info().database }
end

local function check_header(file)
  local f = io.open(file, "rb")
  local head = f and f:read(16)
  if f then f:close() end
  if head ~= "SQLite format 3\0" then
    upkit.error("BAD_FORMAT", "sql.restore: '" .. file .. "': not a SQLite database")
  end
end

-- Check a SQLite file: its digest against the .sha256 file (or want).
function M.verify(file, opts)
  check_header(file)
  local sha = hash.file("sha256", file)
  local want = (opts and opts.sha256) or read_sidecar(file)
  if want and want:lower() ~= sha then
    upkit.error("CHECKSUM_MISMATCH", string.format("sql.verify: '%s': SHA-256 %s, expected %s", file, sha, want))
  end
  return { file = file, bytes = size_of(file), sha256 = sha, verified = want ~= nil }
end

-- Copy src to dst durably (upkit.fs: temporary file, fsync, rename), read
-- back and hashed: bytes, SHA-256. Raises ENOSPC and the like, leaving no dst.
local function copy_hashed(src, dst)
  local r = require("upkit.fs").copy(src, dst, { verify = "sha256" })
  return r.bytes, r.sha256
end

local function user_table_count(sql, cs)
  local db <close> = sql.connect(cs)
  return db:first("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").n
end

-- Restore a SQLite backup file onto a SQLite database file.
--   target: a connection string (its Database= file is replaced), or a
--   connection (then opts.database names the target file, relative to the
--   connection's own file; it may not be that file).
function M.restore(target, opts)
  local sql = require "upkit.sql"
  local cs, path
  if type(target) == "string" then
    cs = target
    path = sql.conn_value(cs, "Database")
    if opts.database then
      path = opts.database
      cs = sql.with_value(cs, "Database", path)
    end
  else
    if sql.engine(target) ~= "sqlite" then
      upkit.error("BAD_FORMAT", "sql.restore: '" .. opts.from .. "' is a SQLite database; the target is " .. target:info().dbms)
    end
    local own = target:info().database
    path = opts.database
    if type(path) ~= "string" or path == "" then
      upkit.error("EINVAL", "sql.restore: option 'database' (the target SQLite file) is required with a connection; " ..
        "to replace the connected file, close it and pass its connection string")
    end
    if path:sub(1, 1) ~= "/" then path = dirname(own) .. "/" .. path end
    if path == own then
      upkit.error("EBUSY", "sql.restore: '" .. path .. "' is the connected database; close it and pass its connection string")
    end
    cs = sql.with_value(target:connection_string(), "Database", path)
  end
  if type(path) ~= "string" or path == "" then
    upkit.error("EINVAL", "sql.restore: the target connection string has no Database= file")
  end
  check_header(opts.from)
  local want = opts.sha256 or read_sidecar(opts.from)
  local tmp = tmp_beside(path, "restore")
  local ok, res = pcall(function()
    local bytes, sha = copy_hashed(opts.from, tmp)
    if want and want:lower() ~= sha then
      upkit.error("CHECKSUM_MISMATCH", string.format("sql.restore: '%s': SHA-256 %s, expected %s", opts.from, sha, want))
    end
    local okc, verdict = pcall(function()
      local db <close> = sql.connect(sql.with_value(cs, "Database", tmp))
      local rows = db:query("PRAGMA integrity_check")
      local first = rows[1] and select(2, next(rows[1]))
      return first
    end)
    if not okc or verdict ~= "ok" then
      upkit.error("BAD_FORMAT", string.format("sql.restore: '%s': integrity check failed: %s", opts.from,
        tostring(okc and verdict or verdict)))
    end
    if size_of(path) and size_of(path) > 0 and not opts.replace and user_table_count(sql, cs) > 0 then
      upkit.error("NOT_EMPTY", "sql.restore: '" .. path .. "' has tables; pass replace = true to overwrite")
    end
    return { bytes = bytes, sha256 = sha }
  end)
  if not ok then
    os.remove(tmp)
    error(res, 0)
  end
  for _, ext in ipairs { "-journal", "-wal", "-shm" } do os.remove(path .. ext) end
  native.rename(tmp, path)
  return { file = opts.from, bytes = res.bytes, sha256 = res.sha256, database = path, conn = cs,
           verified = want ~= nil }
end

return M
