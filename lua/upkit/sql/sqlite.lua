-- upkit.sql.sqlite: SQLite backup (VACUUM INTO a temporary file, hash,
-- atomic rename) and restore (digest and PRAGMA integrity_check on a copy
-- beside the target, then an atomic replace of the target file).
-- A backup file is a plain SQLite database; its SHA-256 is kept beside it in
-- "<file>.sha256" (sha256sum format).
local bf = require "upkit._backupfile"
local fs = require "upkit.fs"
local hash = require "upkit.hash"
local upkit = require "upkit"

local M = {}

local util = require "upkit.util"

-- The digest in file's sidecar "<file>.sha256" (sha256sum's "<hex>  <name>"
-- line). A sidecar that is missing (ENOENT), unreadable (its errno) or not
-- such a line (BAD_FORMAT) raises, naming it: a SQLite backup is never
-- taken without its digest.
local function read_sidecar(fn, file)
  local side = file .. ".sha256"
  local ok, text = pcall(fs.read, side)
  if not ok then
    local e = upkit.is_error(text) and text or { code = "EIO", message = tostring(text) }
    upkit.error(e.code, string.format("%s: '%s': its digest file '%s' cannot be read (%s); pass { sha256 = hex } " ..
      "to give the digest", fn, file, side, tostring(e.message)), { path = side })
  end
  local hex = text:match("^(%x+)[ \t]+%*?[^\n]*\n?$")
  if not hex or #hex ~= 64 then
    upkit.error("BAD_FORMAT", string.format("%s: '%s': its digest file '%s' is not a sha256sum line", fn, file, side),
      { path = side })
  end
  return hex:lower()
end

-- The digest a SQLite backup must have: the caller's, else its sidecar's.
local function wanted(fn, file, opts)
  return opts.sha256 and opts.sha256:lower() or read_sidecar(fn, file)
end

-- VACUUM INTO a temporary file beside opts.to (mode 0600), hash it, write
-- the sidecar (fs.write: 0600, fsync, rename), then fsync the backup and
-- rename it into place.
function M.backup(db, opts)
  local w <close> = bf.pending(opts.to)
  local ok, err = pcall(function()
    db:exec("VACUUM INTO ?", w:path())
    local sha = hash.file("sha256", w:path())
    fs.write(opts.to .. ".sha256", sha .. "  " .. util.basename(opts.to) .. "\n", { mode = "0600" })
    return sha
  end)
  if not ok then
    if upkit.is_error(err) and err.native == 13 then  -- SQLITE_FULL
      upkit.error("ENOSPC", "sql.backup: '" .. opts.to .. "': no space left on the file system (SQLite: database or disk is full)")
    end
    error(err, 0)
  end
  local bytes = w:finish()
  return { file = opts.to, bytes = bytes, sha256 = err, database = db:info().database }
end

local function check_header(file, fn)
  local r <close> = bf.reader(file, fn)
  if r:magic(16) ~= "SQLite format 3\0" then
    upkit.error("BAD_FORMAT", fn .. ": '" .. file .. "': not a SQLite database")
  end
end

-- Check a SQLite file: its digest against opts.sha256, else its .sha256 file.
function M.verify(file, opts)
  check_header(file, "sql.verify")
  local want = wanted("sql.verify", file, opts)
  local sha = hash.file("sha256", file)
  if want ~= sha then
    upkit.error("CHECKSUM_MISMATCH", string.format("sql.verify: '%s': SHA-256 %s, expected %s", file, sha, want))
  end
  return { file = file, bytes = fs.stat(file, { follow = true }).size, sha256 = sha, verified = true }
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
    if path:sub(1, 1) ~= "/" then path = util.dirname(own) .. "/" .. path end
    if path == own then
      upkit.error("BUSY", "sql.restore: '" .. path .. "' is the connected database; close it and pass its connection string")
    end
    cs = sql.with_value(target:connection_string(), "Database", path)
  end
  if type(path) ~= "string" or path == "" then
    upkit.error("EINVAL", "sql.restore: the target connection string has no Database= file")
  end
  check_header(opts.from, "sql.restore")
  local want = wanted("sql.restore", opts.from, opts)
  -- the copy goes to a temporary file beside the target (fs.copy: fsync,
  -- read back), is checked there, and only then replaces the target. The
  -- temporary is only named here, not held open: Windows cannot rename a
  -- file over one that is open.
  local tmp = fs.temp_path(path, { create = false })
  local ok, res = pcall(function()
    local r = fs.copy(opts.from, tmp, { verify = "sha256", overwrite = true, progress = false })
    local bytes, sha = r.bytes, r.sha256
    if want ~= sha then
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
    local st = fs.stat(path, { follow = true })
    if st and st.size > 0 and not opts.replace and user_table_count(sql, cs) > 0 then
      upkit.error("NOT_EMPTY", "sql.restore: '" .. path .. "' has tables; pass replace = true to overwrite")
    end
    return { bytes = bytes, sha256 = sha }
  end)
  if not ok then
    pcall(fs.discard, tmp)
    error(res, 0)
  end
  for _, ext in ipairs { "-journal", "-wal", "-shm" } do os.remove(path .. ext) end
  fs.commit(tmp, path)
  return { file = opts.from, bytes = res.bytes, sha256 = res.sha256, database = path, conn = cs, verified = true }
end

return M
