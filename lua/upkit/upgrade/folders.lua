-- upkit.upgrade.folders: the instance's folders (Artifacts, Packages, TaskLogs,
-- EventExports) in a backup, and back.
--
--   F.backup(folders, root)        --> { [name] = mirror result }, manifests root/<name>.SHA256SUMS
--   F.restore(root, folders)       --> { [name] = mirror result }, the safe way of the rollback guide
--   F.tree_size(path)              --> bytes in a file or a folder tree
--   F.read_manifest(dir)           --> the backup's backup.json
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
  fs.mkdirs(root)
  for name, path in pairs(folders) do
    if fs.exists(path) then
      results[name] = fs.mirror(path, root .. "/" .. name, { delete = true, manifest = root .. "/" .. name .. ".SHA256SUMS",
                                                             verify = true })
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

-- Bytes in a file or a folder tree (links not followed).
function F.tree_size(path)
  local st = fs.stat(path)
  if not st then return 0 end
  if st.type ~= "dir" then return st.size or 0 end
  local total = 0
  for _, e in ipairs((require("upkit._fs").scan(path))) do
    if e.type == "file" then total = total + (e.size or 0) end
  end
  return total
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
