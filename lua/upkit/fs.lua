-- upkit.fs: verified file copies, safe folder mirroring and file helpers.
--
--   fs.copy(src, dst [, { overwrite, verify = "sha256", progress }])
--       --> { bytes, seconds, sha256 = hex }   atomic: temp file, fsync, rename, fsync folder
--   fs.mirror(src, dst [, { delete, exclude, compare, manifest, verify, continue_on_error, progress }])
--       (verify = true: each copied file is read back and compared, CHECKSUM_MISMATCH if it differs)
--       --> { files, copied, skipped, deleted, bytes, seconds, failures, special }
--       (special: FIFOs, sockets and devices found and not copied; also a warning)
--   fs.verify(dir, manifest) --> { ok, missing, extra, different }
--   fs.write(path, data [, { mode = "0600" }]) ; fs.read(path) ; fs.exists(path)
--   fs.stat(path) ; fs.mkdirs(path [, { mode }]) ; fs.remove(path [, { recursive }])
--   fs.free(path) ; fs.tempdir([prefix])
--   fs.temp_path(path [, { resumable }]) ; fs.commit(tmp, path [, { overwrite = true }])
--   fs.discard(tmp) ; fs.rename(old, new) ; fs.sync(path)
--   fs.scan(dir) --> entries, failures ; fs.tree_size(path) --> bytes
--
-- Temporary files: every module writes through one scheme. A temporary
-- for <folder>/<name> lives in the private folder <folder>/.upkit-tmp/
-- (0700), named <name>.<pid>-<8 hex digits>; fs.commit renames it into
-- place, removes the private folder when it is empty and fsyncs the folder.
-- Only names inside a .upkit-tmp folder whose process no longer runs are
-- ever removed as stale, so a user's file is never taken for a temporary.
-- fs.mirror does not copy a source folder named .upkit-tmp: it lists it in
-- result.temporaries (and warns); a source entry at the manifest's own path
-- is not copied either, and is named in result.shadowed (and a warning).
-- A resumable temporary (a download's
-- <name>.part) keeps its name across runs and is never removed as stale.
--
-- A file that changes while it is copied (its size, modification or change
-- time differ before and after, or it shrinks) is copied again once
-- (result.changed / mirror result.changed lists it); when it changes again
-- the copy raises SOURCE_CHANGED naming it, and nothing is written.
-- fs.mirror refuses a destination inside the source and a source inside
-- the destination (links resolved) with EINVAL before it changes anything.
--
-- Errors are raised as upkit error objects whose code is the errno name
-- (ENOENT, EEXIST, ENOSPC...; field errno), CHECKSUM_MISMATCH,
-- SOURCE_CHANGED, or EINVAL for bad arguments, an overlapping mirror, and
-- fs.remove asked to remove /, the home folder or an ancestor of the
-- current folder.
--
-- Progress: with `progress = function(p)` the function is called with
-- { files, files_total, bytes, bytes_total, rate (bytes/s), eta (s) };
-- otherwise, unless `progress = false`, progress is drawn on standard
-- error when it is a terminal.
local upkit = require "upkit"
local native = require "upkit._fs"
local hash = require "upkit.hash"

local util = require "upkit.util"

local M = {}

local einval, checkopts, checkpath = util.einval, util.check_opts, util.check_path

local function parse_mode(fn, mode)
  if mode == nil then return nil end
  if type(mode) == "number" and math.type(mode) == "integer" then return mode end
  if type(mode) == "string" and mode:match("^0?[0-7][0-7][0-7]$") then return tonumber(mode, 8) end
  einval("%s: mode must be an octal string such as \"0600\", got %s", fn, tostring(mode))
end

-- Progress reporter: returns report(files, bytes, final) or nil.
local function reporter(opt, label, files_total, bytes_total)
  local t0 = upkit.now()
  local function state(files, bytes)
    local dt = upkit.now() - t0
    local rate = dt > 0 and bytes / dt or 0
    local eta = rate > 0 and math.max(0, (bytes_total - bytes) / rate) or nil
    return { files = files, files_total = files_total, bytes = bytes, bytes_total = bytes_total,
             rate = rate, eta = eta, seconds = dt }
  end
  if type(opt) == "function" then
    return function(files, bytes) opt(state(files, bytes)) end
  end
  local line = opt ~= false and require("upkit.progress").line()
  if not line then return nil end
  return function(files, bytes, final)
    local s = state(files, bytes)
    line.draw(final, "%s: %d/%d files, %.1f/%.1f MB, %.1f MB/s, %s left",
      label, files, files_total, bytes / 1e6, bytes_total / 1e6, s.rate / 1e6,
      s.eta and string.format("%ds", math.floor(s.eta + 0.5)) or "?")
  end
end

--------------------------------------------------------------------------
-- fs.copy

local copy_spec = { overwrite = "boolean", verify = "string", progress = "function boolean" }

function M.copy(src, dst, opts)
  checkpath("fs.copy", "source", src)
  checkpath("fs.copy", "destination", dst)
  opts = checkopts("fs.copy", opts, copy_spec)
  local st = native.stat(src, true)
  local report = st and reporter(opts.progress, "fs.copy", 1, st.size)
  local r = native.copy(src, dst, {
    overwrite = opts.overwrite, verify = opts.verify,
    progress = report and function(bytes) report(0, bytes) end,
  })
  if report then report(1, r.bytes, true) end
  return r
end

--------------------------------------------------------------------------
-- Glob patterns for exclude: * and ? stay within one path segment, **
-- crosses segments, [...] is a character class.

local function glob_to_pattern(glob)
  local out, i = { "^" }, 1
  while i <= #glob do
    local c = glob:sub(i, i)
    if c == "*" then
      if glob:sub(i + 1, i + 1) == "*" then
        out[#out + 1] = ".*"
        i = i + 1
      else
        out[#out + 1] = "[^/]*"
      end
    elseif c == "?" then
      out[#out + 1] = "[^/]"
    elseif c == "[" then
      local j = glob:find("]", i + 1, true)
      if not j then einval("fs.mirror: exclude pattern '%s' has an unclosed '['", glob) end
      local class = glob:sub(i + 1, j - 1):gsub("^!", "^"):gsub("%%", "%%%%")
      out[#out + 1] = "[" .. class .. "]"
      i = j
    else
      out[#out + 1] = c:gsub("%W", "%%%0")
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

local function excluder(list)
  if list == nil then return function() return false end end
  local pats = {}
  for i, g in ipairs(list) do
    if type(g) ~= "string" then einval("fs.mirror: exclude[%d] must be a string", i) end
    pats[#pats + 1] = glob_to_pattern((g:gsub("/+$", "")))
  end
  return function(rel)
    local base = rel:match("[^/]*$")
    for _, p in ipairs(pats) do
      if rel:find(p) or base:find(p) then return true end
    end
    return false
  end
end

--------------------------------------------------------------------------
-- Manifests in the format of sha256sum: "<hex>  <name>", and for a name
-- holding a backslash, newline or carriage return: "\<hex>  <escaped>".

local function manifest_line(digest, rel)
  if rel:find("[\\\n\r]") then
    local esc = rel:gsub("[\\\n\r]", { ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r" })
    return "\\" .. digest .. "  " .. esc .. "\n"
  end
  return digest .. "  " .. rel .. "\n"
end

local function parse_manifest(fn, text)
  local list = {}
  local n = 0
  for line in text:gmatch("([^\n]*)\n?") do
    n = n + 1
    if line ~= "" then
      local esc, digest, name = line:match("^(\\?)(%x+) [ *](.+)$")
      if not digest then
        upkit.error("BAD_FORMAT", string.format("%s: manifest line %d is not in sha256sum format", fn, n), { line = n })
      end
      if esc == "\\" then
        name = name:gsub("\\(.)", { ["\\"] = "\\", n = "\n", r = "\r" })
      end
      list[#list + 1] = { path = name, digest = digest:lower() }
    end
  end
  return list
end

local join, dirname = util.join, util.dirname

-- The manifest's path relative to root when it lies inside root, else nil.
local function inside(root, file)
  local ok, rdir = pcall(native.realpath, dirname(file))
  local ok2, rroot = pcall(native.realpath, root)
  if not (ok and ok2) then return nil end
  local base = file:match("[^/]*$")
  if rdir == rroot then return base end
  if rdir:sub(1, #rroot + 1) == rroot .. "/" then return rdir:sub(#rroot + 2) .. "/" .. base end
  return nil
end

--------------------------------------------------------------------------
-- fs.mirror

-- The real path of p, or of its nearest existing ancestor with the rest appended.
local function resolve(p)
  local rest = {}
  while true do
    local ok, real = pcall(native.realpath, p)
    if ok then
      for i = #rest, 1, -1 do real = join(real, rest[i]) end
      return real
    end
    local parent = dirname(p)
    if parent == p then return p end
    rest[#rest + 1] = p:match("[^/]*$")
    p = parent
  end
end

local function within(inner, outer)
  return inner == outer or inner:sub(1, #outer + 1) == outer .. "/" or outer == "/"
end

-- EINVAL when one of src and dst is inside the other (after resolving links).
local function refuse_overlap(fn, src, dst)
  local rs, rd = resolve(src), resolve(dst)
  if within(rd, rs) then
    upkit.error("EINVAL", string.format("%s: the destination '%s' is inside the source '%s'%s", fn, dst, src,
      rd == rs and " (they are the same folder)" or ""), { path = src, destination = dst })
  elseif within(rs, rd) then
    upkit.error("EINVAL", string.format("%s: the source '%s' is inside the destination '%s'", fn, src, dst),
      { path = src, destination = dst })
  end
end

local mirror_spec = {
  delete = "boolean", exclude = "table", compare = "string", manifest = "string", verify = "boolean",
  continue_on_error = "boolean", progress = "function boolean",
  batch_files = "number", batch_bytes = "number",
}

function M.mirror(src, dst, opts)
  checkpath("fs.mirror", "source", src)
  checkpath("fs.mirror", "destination", dst)
  opts = checkopts("fs.mirror", opts, mirror_spec)
  local compare = opts.compare or "size-mtime"
  if compare ~= "size-mtime" and compare ~= "hash" then
    einval("fs.mirror: compare must be \"size-mtime\" or \"hash\", got '%s'", compare)
  end
  local excluded = excluder(opts.exclude)
  local function excluded_path(rel)
    if not opts.exclude then return false end
    repeat
      if excluded(rel) then return true end
      rel = rel:match("^(.*)/[^/]*$")
    until not rel
    return false
  end
  local keep_going = opts.continue_on_error
  local batch_files = opts.batch_files or 2000
  local batch_bytes = opts.batch_bytes or (256 << 20)
  local t0 = upkit.now()

  native.check_dir(src, "fs.mirror")  -- a missing source raises before the destination is made
  refuse_overlap("fs.mirror", src, dst)
  native.mkdirs(dst)
  local sents, sfails, dents, dfails = native.scan_pair(src, dst, "fs.mirror")
  local failures = {}
  local function failed(path, err)
    if not keep_going then error(err, 0) end
    failures[#failures + 1] = { path = path, code = err.code, message = err.message }
  end
  for _, f in ipairs(sfails) do failed(f.path, upkit.new_error(f.code, f.message)) end
  for _, f in ipairs(dfails) do failed(f.path, upkit.new_error(f.code, f.message)) end

  local manifest_rel = opts.manifest and inside(dst, opts.manifest)
  local dmap = {}
  for _, e in ipairs(dents) do dmap[e.path] = e end

  -- what to do, in tree order: folders first, then the files inside them
  local plan, wanted, temporaries, shadowed = {}, {}, {}, nil
  local files_total, bytes_total = 0, 0
  local skip_prefix
  for _, e in ipairs(sents) do
    local rel = e.path
    if skip_prefix and rel:sub(1, #skip_prefix) == skip_prefix then
      goto continue
    end
    skip_prefix = nil
    if e.type == "dir" and rel:match("[^/]*$") == ".upkit-tmp" then
      temporaries[#temporaries + 1] = rel  -- upkit's private folder name: listed, not copied
      skip_prefix = rel .. "/"
      goto continue
    end
    if rel == manifest_rel then
      shadowed = rel  -- the manifest is written there: listed, not copied
      if e.type == "dir" then skip_prefix = rel .. "/" end
      goto continue
    end
    if excluded(rel) then
      if e.type == "dir" then skip_prefix = rel .. "/" end
      goto continue
    end
    wanted[rel] = true
    if e.type == "file" then
      files_total = files_total + 1
    end
    plan[#plan + 1] = e
    ::continue::
  end

  local need_hash = opts.manifest ~= nil  -- a digest of every file, copied or not
  local hash_copies = need_hash or opts.verify == true
  local old_digests = {}
  if need_hash and compare ~= "hash" and native.stat(opts.manifest, true) then
    local ok, text = pcall(native.read, opts.manifest)
    local ok2, list = false, nil
    if ok then ok2, list = pcall(parse_manifest, "fs.mirror", text) end
    if ok2 then
      for _, m in ipairs(list) do old_digests[m.path] = m.digest end
    end
  end

  local result = { files = files_total, copied = 0, skipped = 0, deleted = 0, bytes = 0,
                   failures = failures, changed = {}, temporaries = temporaries, shadowed = shadowed }
  local digests = {}
  local touched = {}  -- folders whose entries changed (their times are set last)
  local function touch(rel) touched[rel:match("^(.*)/[^/]*$") or ""] = true end

  local batch, bbytes = {}, 0
  -- for plan[i]: what the destination has there, and whether a file is the same
  local have, same_file = {}, {}
  for i, e in ipairs(plan) do
    local d = dmap[e.path]
    have[i] = d or false
    if e.type == "file" then
      local same = d and d.type == "file" and d.size == e.size
      if same and compare == "hash" then
        local ok, a = pcall(hash.file, "sha256", join(src, e.path))
        local ok2, b = pcall(hash.file, "sha256", join(dst, e.path))
        same = ok and ok2 and a == b
        if same then digests[e.path] = a end
      elseif same then
        same = d.mtime == e.mtime
      end
      if not same then bytes_total = bytes_total + e.size end
      same_file[i] = same
    end
  end

  local report = reporter(opts.progress, "fs.mirror", files_total, bytes_total)
  local done_files, done_bytes = 0, 0

  local function flush()
    if #batch == 0 then return end
    local base_bytes = done_bytes
    local results = native.copy_batch(batch, {
      verify = hash_copies and "sha256" or nil, readback = opts.verify == true, what = "fs.mirror",
      progress = report and function(b) report(done_files, base_bytes + b) end,
    })
    for i, r in ipairs(results) do
      local item = batch[i]
      if r.code then
        failed(item.rel, r)
      else
        if item.src then
          result.copied = result.copied + 1
          result.bytes = result.bytes + r.bytes
          done_files = done_files + 1
          done_bytes = done_bytes + r.bytes
          digests[item.rel] = r.sha256
          if r.changed then result.changed[#result.changed + 1] = item.rel end
        end
        touch(item.rel)
      end
    end
    batch, bbytes = {}, 0
    if report then report(done_files, done_bytes) end
  end

  -- Remove whatever stands where a different kind of entry must go.
  local function clear(rel, d)
    local ok, err = pcall(native.remove, join(dst, rel), true)
    if not ok then failed(rel, err) return false end
    dmap[rel] = nil
    touch(rel)
    return true
  end

  local dirs, special = {}, {}
  for i, e in ipairs(plan) do
    local d, rel = have[i] or nil, e.path
    if e.type == "dir" then
      dirs[#dirs + 1] = e
      if d and d.type ~= "dir" and not clear(rel, d) then goto next end
      if not (d and d.type == "dir") then
        local ok, err = pcall(native.mkdir, join(dst, rel), 448 | e.mode)
        if not ok then failed(rel, err) else touched[rel] = true touch(rel) end
      elseif d.mode ~= e.mode or d.mtime ~= e.mtime then
        touched[rel] = true
      end
    elseif e.type == "file" then
      if same_file[i] then
        result.skipped = result.skipped + 1
        done_files = done_files + 1
        if d.mode ~= e.mode then
          local ok, err = pcall(native.setmeta, join(dst, rel), e.mode, e.mtime)
          if not ok then failed(rel, err) end
        end
        if need_hash and not digests[rel] then
          digests[rel] = old_digests[rel]
          if not digests[rel] then
            local ok, h = pcall(hash.file, "sha256", join(dst, rel))
            if ok then digests[rel] = h else failed(rel, h) end
          end
        end
      elseif not (d and d.type == "dir") or clear(rel, d) then
        batch[#batch + 1] = { src = join(src, rel), dst = join(dst, rel), rel = rel }
        bbytes = bbytes + e.size
        if #batch >= batch_files or bbytes >= batch_bytes then flush() end
      end
    elseif e.type ~= "link" then
      special[#special + 1] = rel  -- a FIFO, socket or device: not copied
    elseif e.type == "link" then
      if d and d.type == "link" and d.target == e.target then
        -- the same link is there
      elseif not (d and d.type == "dir") or clear(rel, d) then
        if e.target then
          batch[#batch + 1] = { link = e.target, mtime = e.mtime, dst = join(dst, rel), rel = rel }
        end
      end
    end
    ::next::
  end
  flush()

  if opts.delete then
    -- children come before their folder in reverse tree order; a folder
    -- that still holds excluded entries stays
    for i = #dents, 1, -1 do
      local rel = dents[i].path
      if not wanted[rel] and dmap[rel] and rel ~= manifest_rel and not excluded_path(rel) then
        local ok, err = pcall(native.remove, join(dst, rel))
        if ok then
          result.deleted = result.deleted + 1
          touch(rel)
        elseif err.code ~= "ENOTEMPTY" and err.code ~= "EEXIST" then
          failed(rel, err)
        end
      end
    end
  end

  -- folder modes and times last: adding entries changed them
  for i = #dirs, 1, -1 do
    local e = dirs[i]
    if touched[e.path] then
      local ok, err = pcall(native.setmeta, join(dst, e.path), e.mode, e.mtime)
      if not ok then failed(e.path, err) end
    end
  end

  if opts.manifest then
    local lines = {}
    for _, e in ipairs(plan) do
      if e.type == "file" and digests[e.path] then lines[#lines + 1] = e.path end
    end
    table.sort(lines)
    for i, rel in ipairs(lines) do lines[i] = manifest_line(digests[rel], rel) end
    native.write(opts.manifest, table.concat(lines), 420)
  end
  result.special = special
  if shadowed then
    require("upkit.log").warn("fs.mirror: %s: '%s' not copied: the manifest is written at that path", src, shadowed)
  end
  if #temporaries > 0 then
    require("upkit.log").warn("fs.mirror: %s: %d folder(s) named .upkit-tmp (upkit's temporary files) not copied: %s",
      src, #temporaries, table.concat(temporaries, ", ", 1, math.min(#temporaries, 5)))
  end
  if #special > 0 then
    require("upkit.log").warn("fs.mirror: %s: %d FIFO(s), socket(s) or device(s) not copied: %s%s", src, #special,
      table.concat(special, ", ", 1, math.min(#special, 5)), #special > 5 and ", ..." or "")
  end
  result.seconds = upkit.now() - t0
  if report then report(done_files, done_bytes, true) end
  return result
end

--------------------------------------------------------------------------
-- fs.verify

function M.verify(dir, manifest)
  checkpath("fs.verify", "folder", dir)
  checkpath("fs.verify", "manifest", manifest)
  local list = parse_manifest("fs.verify", native.read(manifest))
  local entries = native.scan(dir, false, "fs.verify")
  local listed = {}
  local r = { missing = {}, extra = {}, different = {} }
  for _, m in ipairs(list) do
    listed[m.path] = true
    local p = join(dir, m.path)
    local st = native.stat(p, true)
    if not st or st.type ~= "file" then
      r.missing[#r.missing + 1] = m.path
    else
      local ok, h = pcall(hash.file, m.digest:len() == 64 and "sha256" or
        (m.digest:len() == 128 and "sha512" or (m.digest:len() == 40 and "sha1" or "md5")), p)
      if not ok or h ~= m.digest then r.different[#r.different + 1] = m.path end
    end
  end
  local self_rel = inside(dir, manifest)
  for _, e in ipairs(entries) do
    if e.type == "file" and not listed[e.path] and e.path ~= self_rel then
      r.extra[#r.extra + 1] = e.path
    end
  end
  r.ok = #r.missing == 0 and #r.extra == 0 and #r.different == 0
  return r
end

--------------------------------------------------------------------------
-- Helpers

function M.write(path, data, opts)
  checkpath("fs.write", "path", path)
  if type(data) ~= "string" then einval("fs.write: data must be a string, got %s", type(data)) end
  opts = checkopts("fs.write", opts, { mode = "string number" })
  return native.write(path, data, parse_mode("fs.write", opts.mode))
end

-- fs.read, fs.free, fs.sync and fs.discard check their one path, then call the native function.
local function path_call(name, what)
  return function(path)
    checkpath("fs." .. name, what, path)
    return native[name](path)
  end
end

M.read = path_call("read", "path")

-- fs.exists(path) -> true when something (a link counts) is there
function M.exists(path)
  checkpath("fs.exists", "path", path)
  return native.stat(path) ~= nil
end

-- fs.stat(path [, { follow = true }]) -> { type, size, mtime, mtime_ns, mode } or nil
function M.stat(path, opts)
  checkpath("fs.stat", "path", path)
  opts = checkopts("fs.stat", opts, { follow = "boolean" })
  return native.stat(path, opts.follow)
end

function M.mkdirs(path, opts)
  checkpath("fs.mkdirs", "path", path)
  opts = checkopts("fs.mkdirs", opts, { mode = "string number" })
  return native.mkdirs(path, parse_mode("fs.mkdirs", opts.mode))
end

-- fs.remove(path [, { recursive = true }]) -> true, or false when nothing was there.
-- Refuses (code REFUSED) /, the home folder and the current folder or its ancestors.
function M.remove(path, opts)
  checkpath("fs.remove", "path", path)
  opts = checkopts("fs.remove", opts, { recursive = "boolean" })
  local st = native.stat(path)
  if not st then return false end
  if st.type == "dir" then
    local real = native.realpath(path)
    local home = os.getenv("HOME") or os.getenv("USERPROFILE")
    local okh, rhome = pcall(native.realpath, home or "")
    local cwd = native.cwd()
    local why
    if real == "/" or real:match("^%a:/$") then
      why = "it is the root folder"
    elseif home and okh and real == rhome then
      why = "it is the home folder"
    elseif cwd == real or cwd:sub(1, #real + 1) == real .. "/" then
      why = "it holds the current folder"
    end
    if why then
      upkit.error("EINVAL", string.format("fs.remove: '%s': refusing to remove it: %s", path, why), { path = path })
    end
  end
  return native.remove(path, opts.recursive)
end

M.free = path_call("free", "path")

-- fs.tempdir([prefix]) -> a fresh private folder under TMPDIR (the caller removes it)
function M.tempdir(prefix)
  if prefix ~= nil and type(prefix) ~= "string" then einval("fs.tempdir: prefix must be a string") end
  return native.tempdir(prefix)
end

-- fs.temp_path(path [, { resumable = false, create = true }]) -> a temporary path for path
-- (see the top of this file). Write it, then fs.commit(tmp, path), or fs.discard(tmp).
-- create = false only chooses the name (for a writer that must create the file itself).
function M.temp_path(path, opts)
  checkpath("fs.temp_path", "path", path)
  opts = checkopts("fs.temp_path", opts, { resumable = "boolean", create = "boolean" })
  return native.temp_path(path, opts.resumable, opts.create == false)
end

-- fs.sync(path): fsync a file or a folder (its data and metadata are on disk when it returns).
M.sync = path_call("sync", "path")

-- fs.scan(dir) -> entries, failures: every entry under dir, depth first, names
-- sorted, links not followed: { path (relative), type ("file", "dir", "link",
-- "other"), size, mtime (ns), mode, target }; unreadable folders are failures
-- { path, code, message }. A missing dir raises.
function M.scan(dir)
  checkpath("fs.scan", "folder", dir)
  return native.scan(dir, false, "fs.scan")
end

-- fs.tree_size(path) -> bytes in the files under path (a file: its size; nothing there: 0)
function M.tree_size(path)
  checkpath("fs.tree_size", "path", path)
  local st = native.stat(path)
  if not st then return 0 end
  if st.type ~= "dir" then return st.size end
  local total = 0
  for _, e in ipairs(native.scan(path, false, "fs.tree_size")) do
    if e.type == "file" then total = total + e.size end
  end
  return total
end

-- fs.commit(tmp, path [, { overwrite = true }]): rename into place, durable.
function M.commit(tmp, path, opts)
  checkpath("fs.commit", "temporary", tmp)
  checkpath("fs.commit", "path", path)
  opts = checkopts("fs.commit", opts, { overwrite = "boolean" })
  return native.commit(tmp, path, opts.overwrite ~= false)
end

-- fs.discard(tmp): remove a temporary that will not be committed.
M.discard = path_call("discard", "temporary")

-- fs.rename(old, new): rename, then fsync both folders (a failed fsync raises).
function M.rename(old, new)
  checkpath("fs.rename", "source", old)
  checkpath("fs.rename", "destination", new)
  return native.rename(old, new)
end

return M
