-- upkit.util: the small helpers every Lua module shares, written once.
--
--   util.einval(fmt, ...)                 raise EINVAL with a formatted message
--   util.check_opts(fn, opts, spec)       -> opts ({} for nil); spec maps each
--       known key to the Lua types it may have ("string", "string number",
--       "function boolean"...); an unknown key or a wrong type raises EINVAL
--       naming fn and the key
--   util.check_path(fn, what, p)          EINVAL unless p is a non-empty string
--   util.dirname(p), util.basename(p), util.join(a, b)
--   util.file_size(path)                  -> bytes, or nil when nothing is there
--                                            (other failures raise with their errno code)
--   util.read_file(path), util.write_file(path, data [, { mode }])
--                                         fs.read / fs.write (atomic, durable)
--   util.mkdirs(path [, { mode }])        fs.mkdirs
--   util.open(fn, path, mode)             io.open that raises the real cause
--                                         (ENOENT, EACCES, EISDIR...; field errno)
--   util.temp_path(path) / util.commit / util.discard   fs.temp_path, fs.commit, fs.discard
--
-- Modules above the primitives (procedures, the Octopus client, sql's Lua
-- side) call these instead of keeping their own copies.
local upkit = require "upkit"

local M = {}

function M.einval(fmt, ...)
  upkit.error("EINVAL", string.format(fmt, ...))
end

function M.check_opts(fn, opts, spec)
  if opts == nil then return {} end
  if type(opts) ~= "table" then M.einval("%s: options must be a table, got %s", fn, type(opts)) end
  for k, v in pairs(opts) do
    local want = spec[k]
    if not want then M.einval("%s: unknown option '%s'", fn, tostring(k)) end
    local ok = false
    for t in want:gmatch("[%a|]+") do
      for one in t:gmatch("[^|]+") do
        if one == type(v) then ok = true end
      end
    end
    if not ok then
      M.einval("%s: option '%s' must be %s, got %s", fn, k, want:gsub("[ |]", " or "), type(v))
    end
  end
  return opts
end

function M.check_path(fn, what, p)
  if type(p) ~= "string" or p == "" then
    M.einval("%s: %s must be a non-empty string, got %s", fn, what, p == "" and "''" or type(p))
  end
end

function M.dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

function M.basename(p)
  return (p:gsub("/+$", ""):match("[^/]*$"))
end

function M.join(a, b)
  if a:sub(-1) == "/" then return a .. b end
  return a .. "/" .. b
end

function M.open(fn, path, mode)
  local f, msg, errno = io.open(path, mode)
  if f then return f end
  upkit.error(errno and upkit.errno_name(errno) or "EIO", string.format("%s: %s", fn, msg),
    { path = path, errno = errno })
end

-- The modules below are loaded on first use: upkit.fs itself uses this file.
local function fs() return require "upkit.fs" end

function M.file_size(path)
  local st = fs().stat(path, { follow = true })
  return st and st.size or nil
end

function M.read_file(path) return fs().read(path) end
function M.write_file(path, data, opts) return fs().write(path, data, opts) end
function M.mkdirs(path, opts) return fs().mkdirs(path, opts) end
function M.temp_path(path) return fs().temp_path(path) end
function M.commit(tmp, path, opts) return fs().commit(tmp, path, opts) end
function M.discard(tmp) return fs().discard(tmp) end

return M
