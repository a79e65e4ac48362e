-- upkit.upgrade.folders: the instance's folders (Artifacts, Packages, TaskLogs,
-- EventExports) in a backup, and back.
--
--   F.backup(folders, root)        --> { [name] = mirror result }, manifests root/<name>.SHA256SUMS
--   F.restore(root, folders)       --> { [name] = mirror result }, the safe way of the rollback guide
--   F.tree_size(path)              --> bytes in a file or a folder tree
--   F.read_manifest(dir)           --> the backup's backup.json
--   F.private_dir(dir)             a backup folder: created 0700, warns when others can read it
--   F.private(path)                files 0600 and folders 0700 (never looser than they are)
--   F.relative(dir, path)          path as backup.json records it (relative to dir when inside)
--   F.resolve(dir, path)           a path from backup.json, found in dir (old absolute ones too)
--   F.database_file(dir, m)        --> file, remote: the database backup a manifest names
local upkit = require "upkit"
local fs = require "upkit.fs"
local json = require "upkit.json"
local log = require "upkit.log"

local F = {}

--[[
F.backup(folders, root) -> { [name] = mirror result }: each folder is
mirrored into root/<name> with its manifest root/<name>.SHA256SUMS (sha256sum -c
format, relative paths), every copied file read back and compared. Re-running
it finishes an interrupted backup. A folder that does not exist is reported
and has no entry in the result.
]]
function F.backup(folders, root)
  local results = {}
  fs.mkdirs(root, { mode = "0700" })
  for name, path in pairs(folders) do
    if fs.exists(path) then
      results[name] = fs.mirror(path, root .. "/" .. name, { delete = true, manifest = root .. "/" .. name .. ".SHA256SUMS",
                                                             verify = true })
      F.private(root .. "/" .. name)
      F.private(root .. "/" .. name .. ".SHA256SUMS")
      log.info("folder %s: %d files, %d copied, %d skipped (already there), %d bytes", name, results[name].files,
               results[name].copied, results[name].skipped, results[name].bytes)
    else
      log.warn("folder %s (%s) does not exist; nothing to back up", name, path)
    end
  end
  return results
end

local ERRNO = { [1] = "EPERM", [2] = "ENOENT", [13] = "EACCES", [16] = "EBUSY", [17] = "EEXIST", [18] = "EXDEV",
                [28] = "ENOSPC", [30] = "EROFS", [39] = "ENOTEMPTY", [66] = "ENOTEMPTY" }

local function rename(from, to)
  local ok, err, n = os.rename(from, to)
  if not ok then
    upkit.error(ERRNO[n] or "EIO", string.format("cannot move '%s' to '%s': %s", from, to, tostring(err)),
                { errno = n, path = from })
  end
end

--[[
F.restore(root, folders) -> { [name] = mirror result }: the safe way of
the rollback guide. Each current folder is set aside, the backup copied in and
verified against its manifest; the set-aside copies are removed only when every
folder verified. Re-running it after an interruption finishes the job.
]]
function F.restore(root, folders)
  local aside, results = {}, {}
  for name, path in pairs(folders) do
    local src, manifest = root .. "/" .. name, root .. "/" .. name .. ".SHA256SUMS"
    if fs.exists(src) then
      local side = path .. ".upkit-aside"
      if fs.exists(side) then
        -- a resumed restore: the set-aside copy is the original
        if fs.exists(path) then fs.remove(path, { recursive = true }) end
      elseif fs.exists(path) then
        rename(path, side)
      end
      aside[name] = side
      fs.mkdirs(path)
      results[name] = fs.mirror(src, path, { delete = true })
      local v = fs.verify(path, manifest)
      if not v.ok then
        upkit.error("CHECKSUM_MISMATCH", string.format(
          "restored folder %s does not match the backup manifest (%d missing, %d different); the original is kept at %s",
          path, #v.missing, #v.different, side), { path = path })
      end
    end
  end
  for _, side in pairs(aside) do
    if fs.exists(side) then fs.remove(side, { recursive = true }) end
  end
  return results
end

-- Bytes in a file or a folder tree (links not followed): fs.tree_size.
F.tree_size = fs.tree_size

--[[
F.private_dir(dir): the folder of a backup. A new one is created 0700 (its
parents as mkdirs makes them); an existing one that others may read (group or
other read bits) is kept and warned about: the backup holds the master key,
the licence and every user's data.
]]
function F.private_dir(dir)
  local st = fs.stat(dir, { follow = true })
  if not st then
    fs.mkdirs(dir, { mode = "0700" })
  elseif st.type == "dir" and (st.mode or 0) & 0x24 ~= 0 then
    log.warn("the backup folder %s is readable by other users (mode %04o): the backup holds the master key " ..
             "and the database; chmod 700 it", dir, (st.mode or 0) & 0xfff)
  end
  return dir
end

-- F.private(path): a file 0600 (or tighter, as it is), a folder 0700, and
-- everything in a folder likewise. Links are left alone.
function F.private(path)
  local native = require "upkit._fs"
  local function tighten(p, mode, t, mtime)
    if t == "link" then return end
    local want = mode & (t == "dir" and 0x1c0 or 0x180)  -- 0700 / 0600
    if want ~= mode & 0xfff then native.setmeta(p, want, mtime) end
  end
  local st = fs.stat(path)
  if not st then return end
  if st.type == "dir" then
    for _, e in ipairs((native.scan(path))) do
      if e.type then tighten(path .. "/" .. e.path, e.mode, e.type, e.mtime) end
    end
  end
  tighten(path, st.mode, st.type, st.mtime_ns)
end

local function inside(dir, path)
  local d = dir:gsub("/+$", "")
  return path:sub(1, #d + 1) == d .. "/" and path:sub(#d + 2) or nil
end

-- F.relative(dir, path) -> path relative to dir when it is inside dir, else path.
function F.relative(dir, path)
  return inside(dir, path) or path
end

--[[
F.resolve(dir, path) -> the file path backup.json names, in the backup folder
dir. A relative path is relative to dir. An absolute one (manifests before
upkit wrote relative paths) is used when it is inside dir; otherwise the
backup was copied or moved, and the file of the same name in dir is used,
with a warning: never the original folder, which may by now hold another
backup.
]]
function F.resolve(dir, path)
  if path:sub(1, 1) ~= "/" and not path:match("^%a:[\\/]") then return dir .. "/" .. path end
  if inside(dir, path) then return path end
  local name = path:match("([^/\\]+)$") or path
  log.warn("backup.json names %s, outside the backup folder %s: using %s/%s (the backup was copied or moved)",
           path, dir, dir, name)
  return dir .. "/" .. name
end

--[[
F.database_file(dir, m) -> file, remote. The database backup backup.json m
describes: a file in the backup folder, or (location = "server") a file on
the database server's own disk, named as the server sees it (remote = true).
]]
function F.database_file(dir, m)
  local b = m.database or {}
  if type(b.file) ~= "string" or b.file == "" then
    upkit.error("BAD_FORMAT", string.format("backup %s: backup.json names no database file", dir))
  end
  if b.location == "server" then return b.file, true end
  return F.resolve(dir, b.file), false
end

-- Read a backup's backup.json.
function F.read_manifest(dir)
  local file = dir .. "/backup.json"
  if not fs.exists(file) then
    upkit.error("ENOENT", string.format("'%s' is not an upkit backup: it has no backup.json", dir), { path = file })
  end
  local ok, m = pcall(json.decode, fs.read(file))
  if not ok or type(m) ~= "table" or m.format ~= "upkit-octopus-backup/1" then
    upkit.error("BAD_FORMAT", string.format("'%s' is not an upkit backup manifest", file), { path = file })
  end
  return m
end

return F
