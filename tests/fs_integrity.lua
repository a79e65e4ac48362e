-- upkit.fs integrity: temporaries that cannot be mistaken for user files,
-- torn copies, overlapping mirrors, and the temporary-file API.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local fs = require "upkit.fs"
local hash = require "upkit.hash"
local log = require "upkit.log"

local dir = T.tmpdir()
local n = 0
local function fresh(name)
  n = n + 1
  local p = string.format("%s/%d-%s", dir, n, name)
  fs.mkdirs(p)
  return p
end
local function ls(d) return (T.sh("ls -A " .. T.q(d))) end
local OLD_STYLE = ".x.upkit-tmp-999999999-0badf00d"  -- what upkit's temporaries were once named

T.test("a user's file named like an old temporary is mirrored, listed in the manifest and verified", function()
  local src, dst = fresh("src"), fresh("dst")
  T.write_file(src .. "/" .. OLD_STYLE, "mine")
  T.write_file(src .. "/a.txt", "a")
  local r = fs.mirror(src, dst, { manifest = dst .. "/SHA256SUMS" })
  T.eq(r.copied, 2)
  T.eq(T.read_file(dst .. "/" .. OLD_STYLE), "mine")
  T.contains(T.read_file(dst .. "/SHA256SUMS"), OLD_STYLE)
  T.ok(fs.verify(dst, dst .. "/SHA256SUMS").ok)
  -- and fs.verify of a folder holding it does not pass it over
  os.remove(dst .. "/" .. OLD_STYLE)
  local v = fs.verify(dst, dst .. "/SHA256SUMS")
  T.eq(v.ok, false)
  T.eq(v.missing[1], OLD_STYLE)
end)

T.test("fs.write and fs.copy never delete a user's file that looks like a temporary", function()
  local d = fresh("write")
  T.write_file(d .. "/" .. OLD_STYLE, "mine")
  fs.write(d .. "/cfg.json", "{}")
  fs.copy(d .. "/cfg.json", d .. "/copy.json")
  T.eq(T.read_file(d .. "/" .. OLD_STYLE), "mine")
  T.eq(ls(d), OLD_STYLE .. "\ncfg.json\ncopy.json\n")
end)

T.test("only stale names inside the private folder are removed; a live process's temporary stays", function()
  local d = fresh("private")
  fs.mkdirs(d .. "/.upkit-tmp")
  T.write_file(d .. "/.upkit-tmp/a.999999999-0badf00d", "stale")
  local live = string.format("b.%d-0badf00d", require("upkit").pid())
  T.write_file(d .. "/.upkit-tmp/" .. live, "mine, running")
  T.write_file(d .. "/.upkit-tmp/c.part", "a resumable download")
  fs.write(d .. "/f", "x")
  T.eq(ls(d .. "/.upkit-tmp"), live .. "\nc.part\n")
  os.remove(d .. "/.upkit-tmp/" .. live)
  os.remove(d .. "/.upkit-tmp/c.part")
  fs.write(d .. "/f", "y")
  T.eq(ls(d), "f\n")  -- the empty private folder goes too
end)

T.test("a source folder named .upkit-tmp is not copied, and is listed and warned about", function()
  local src, dst = fresh("src"), fresh("dst")
  fs.mkdirs(src .. "/sub/.upkit-tmp")
  T.write_file(src .. "/sub/.upkit-tmp/keep.txt", "k")
  T.write_file(src .. "/sub/b.txt", "b")
  local warned = {}
  local sink = log.add_sink(function(rec) warned[#warned + 1] = rec.level .. ": " .. rec.msg end)
  local r = fs.mirror(src, dst, { manifest = dst .. "/SHA256SUMS" })
  log.remove_sink(sink)
  T.eq(r.temporaries, { "sub/.upkit-tmp" })
  T.eq(#warned, 1)
  T.contains(warned[1], "sub/.upkit-tmp")
  T.eq(r.copied, 1)
  T.eq(ls(dst .. "/sub"), "b.txt\n")
end)

T.test("a source file at the manifest's path is not copied, and is named", function()
  local src, dst = fresh("src"), fresh("dst")
  T.write_file(src .. "/SHA256SUMS", "the user's own file")
  T.write_file(src .. "/a", "a")
  local r = fs.mirror(src, dst, { manifest = dst .. "/SHA256SUMS" })
  T.eq(r.shadowed, "SHA256SUMS")
  T.eq(r.copied, 1)
  T.contains(T.read_file(dst .. "/SHA256SUMS"), "  a\n")
end)

T.test("fs.temp_path, fs.commit and fs.discard: one scheme for every module", function()
  local d = fresh("api")
  local tmp = fs.temp_path(d .. "/db.bak")
  T.match(tmp, "/%.upkit%-tmp/db%.bak%.%d+%-%x+$")
  T.eq(fs.stat(tmp).mode, tonumber("600", 8))
  T.eq(fs.stat(d .. "/.upkit-tmp").mode, tonumber("700", 8))
  T.write_file(tmp, "data")
  fs.commit(tmp, d .. "/db.bak")
  T.eq(T.read_file(d .. "/db.bak"), "data")
  T.eq(ls(d), "db.bak\n")
  local t2 = fs.temp_path(d .. "/db.bak")
  T.write_file(t2, "other")
  T.raises("EEXIST", fs.commit, t2, d .. "/db.bak", { overwrite = false })
  fs.discard(t2)
  fs.discard(t2)  -- twice is fine
  T.eq(ls(d), "db.bak\n")
  local part = fs.temp_path(d .. "/big.msi", { resumable = true })
  T.eq(part, d .. "/.upkit-tmp/big.msi.part")
  T.eq(fs.temp_path(d .. "/big.msi", { resumable = true }), part)
  local named = fs.temp_path(d .. "/vacuum.db", { create = false })
  T.match(named, "/%.upkit%-tmp/vacuum%.db%.%d+%-%x+$")
  T.eq(fs.exists(named), false)
  T.raises("EINVAL", fs.temp_path, d .. "/x", { bogus = true })
  T.raises("ENOENT", fs.temp_path, d .. "/missing/x")
end)

T.test("fs.scan lists a tree and fs.tree_size adds its files", function()
  local d = fresh("scan")
  fs.mkdirs(d .. "/a/b")
  T.write_file(d .. "/a/b/f", "12345")
  T.write_file(d .. "/g", "123")
  local entries = fs.scan(d)
  local paths = {}
  for i, e in ipairs(entries) do paths[i] = e.path .. ":" .. e.type end
  T.eq(paths, { "a:dir", "a/b:dir", "a/b/f:file", "g:file" })
  T.eq(fs.tree_size(d), 8)
  T.eq(fs.tree_size(d .. "/g"), 3)
  T.eq(fs.tree_size(d .. "/none"), 0)
  T.raises("ENOENT", fs.scan, d .. "/none")
  fs.sync(d .. "/g")
  fs.sync(d)
  T.raises("ENOENT", fs.sync, d .. "/none")
end)

T.test("fs.rename renames and makes both folders durable", function()
  local a, b = fresh("ra"), fresh("rb")
  T.write_file(a .. "/f", "x")
  fs.rename(a .. "/f", b .. "/g")
  T.eq(T.read_file(b .. "/g"), "x")
  local e = T.raises("ENOENT", fs.rename, a .. "/f", b .. "/h")
  T.contains(e.message, "rename")
  T.eq(e.errno, 2)
end)

-- a sparse source long enough for the progress function to run while it is read
local function big_sparse(d)
  local p = d .. "/big.bin"
  T.sh("truncate -s 400M " .. T.q(p))
  return p
end

T.test("a file that changes during fs.copy is copied again, and reported as changed", function()
  local d = fresh("torn1")
  local src = big_sparse(d)
  local touched = false
  local r = fs.copy(src, d .. "/copy.bin", { verify = "sha256", progress = function()
    if not touched then
      touched = true
      local f = assert(io.open(src, "ab")) f:write("more") f:close()
    end
  end })
  T.ok(touched, "the progress function ran during the copy")
  T.eq(r.changed, true)
  T.eq(r.bytes, 400 * 1024 * 1024 + 4)
  T.eq(hash.file("sha256", d .. "/copy.bin"), hash.file("sha256", src))
end)

T.test("a file that keeps changing raises SOURCE_CHANGED naming it, and nothing is written", function()
  local d = fresh("torn2")
  local src = big_sparse(d)
  local e = T.raises("SOURCE_CHANGED", fs.copy, src, d .. "/copy.bin", { verify = "sha256", progress = function()
    local f = assert(io.open(src, "ab")) f:write("x") f:close()
  end })
  T.contains(e.message, src)
  T.eq(e.path, src)
  T.eq(ls(d), "big.bin\n")
end)

T.test("a mirror lists a file that changed while copied", function()
  local src, dst = fresh("src"), fresh("dst")
  big_sparse(src)
  local touched = false
  local r = fs.mirror(src, dst, { verify = true, progress = function()
    if not touched then
      touched = true
      local f = assert(io.open(src .. "/big.bin", "ab")) f:write("more") f:close()
    end
  end })
  T.eq(r.changed, { "big.bin" })
  T.eq(hash.file("sha256", dst .. "/big.bin"), hash.file("sha256", src .. "/big.bin"))
end)

T.test("a mirror into its own source is refused before anything is made", function()
  local src = fresh("overlap")
  T.write_file(src .. "/a", "a")
  local e = T.raises("EINVAL", fs.mirror, src, src .. "/backup")
  T.contains(e.message, src .. "/backup")
  T.contains(e.message, "inside the source")
  T.eq(ls(src), "a\n")
  T.raises("EINVAL", fs.mirror, src, src)
end)

T.test("a mirror of a folder inside its destination is refused, even through a link, and deletes nothing", function()
  local dst = fresh("outer")
  fs.mkdirs(dst .. "/inner")
  T.write_file(dst .. "/inner/keep", "k")
  local e = T.raises("EINVAL", fs.mirror, dst .. "/inner", dst, { delete = true })
  T.contains(e.message, "inside the destination")
  T.eq(T.read_file(dst .. "/inner/keep"), "k")
  local link = dir .. "/link-to-outer"
  T.sh("ln -s " .. T.q(dst) .. " " .. T.q(link))
  T.raises("EINVAL", fs.mirror, dst, link .. "/inner/deeper")
  T.raises("EINVAL", fs.mirror, link .. "/inner", dst, { delete = true })
  T.eq(T.read_file(dst .. "/inner/keep"), "k")
  T.eq(fs.exists(dst .. "/inner/deeper"), false)
end)

T.done()
