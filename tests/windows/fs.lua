-- upkit.fs on Windows (run by make test-windows with upkit.exe under Wine):
-- UTF-8 names, long paths, atomic copies and mirrors, read-only files, errors.
local T = require "upkit.test"
local fs = require "upkit.fs"
local hash = require "upkit.hash"

local dir = T.tmpdir()

T.test("fs.write then fs.read keep the bytes, CR LF and NUL included", function()
  local data = "line one\r\nline two\n\0binary\255"
  fs.write(dir .. "/bytes.bin", data)
  T.eq(fs.read(dir .. "/bytes.bin"), data)
end)

T.test("a file name in UTF-8 (ä, €, 日本) is written, listed and read back", function()
  local name = "r\xc3\xa9sum\xc3\xa9 \xe2\x82\xac \xe6\x97\xa5\xe6\x9c\xac.txt"
  fs.write(dir .. "/" .. name, "utf8")
  T.eq(fs.read(dir .. "/" .. name), "utf8")
  local seen = false
  for _, e in ipairs(fs.scan(dir)) do
    if (e.name or e.path or ""):find(name, 1, true) then seen = true end
  end
  T.ok(seen, "fs.scan lists the UTF-8 name")
end)

T.test("Lua's io.open takes a UTF-8 name too (the manifest's UTF-8 code page)", function()
  local p = dir .. "/io-\xc3\xa4\xe2\x82\xac.txt"
  local f = assert(io.open(p, "wb"))
  f:write("via io.open")
  f:close()
  T.eq(fs.read(p), "via io.open")
end)

T.test("a path longer than 260 characters is created, copied and verified", function()
  local deep = dir
  for i = 1, 9 do deep = deep .. "/" .. string.rep(string.char(96 + i), 30) end
  fs.mkdirs(deep)
  local p = deep .. "/payload.bin"
  T.ok(#p > 300, "the path has " .. #p .. " characters")
  fs.write(p, string.rep("x", 100000))
  local r = fs.copy(p, deep .. "/copy.bin", { verify = "sha256" })
  T.eq(r.bytes, 100000)
  T.eq(r.sha256, hash.file("sha256", p))
  T.eq(fs.read(deep .. "/copy.bin"), string.rep("x", 100000))
end)

T.test("fs.copy is atomic: no temporary is left, an existing file needs overwrite", function()
  fs.write(dir .. "/src.txt", "new")
  fs.write(dir .. "/dst.txt", "old")
  T.raises("EEXIST", fs.copy, dir .. "/src.txt", dir .. "/dst.txt")
  T.eq(fs.read(dir .. "/dst.txt"), "old")
  fs.copy(dir .. "/src.txt", dir .. "/dst.txt", { overwrite = true })
  T.eq(fs.read(dir .. "/dst.txt"), "new")
  T.eq(fs.exists(dir .. "/.upkit-tmp"), false)
end)

T.test("a missing source is ENOENT naming it", function()
  local e = T.raises("ENOENT", fs.copy, dir .. "/missing.txt", dir .. "/x.txt")
  T.contains(e.message, "missing.txt")
end)

T.test("fs.mirror copies a tree, skips what is equal and deletes what is gone", function()
  local src, dst = dir .. "/m-src", dir .. "/m-dst"
  fs.mkdirs(src .. "/sub")
  fs.write(src .. "/a.txt", "a")
  fs.write(src .. "/sub/b.txt", "b")
  local r = fs.mirror(src, dst, { delete = true })
  T.eq(r.copied, 2)
  T.eq(fs.read(dst .. "/sub/b.txt"), "b")
  r = fs.mirror(src, dst, { delete = true })
  T.eq(r.copied, 0)
  fs.remove(src .. "/a.txt")
  r = fs.mirror(src, dst, { delete = true })
  T.eq(r.deleted, 1)
  T.eq(fs.exists(dst .. "/a.txt"), false)
end)

T.test("fs.mirror with a manifest writes SHA256SUMS that fs.verify accepts", function()
  local src, dst = dir .. "/v-src", dir .. "/v-dst"
  fs.mkdirs(src)
  fs.write(src .. "/one.txt", "1")
  fs.write(src .. "/two.txt", "22")
  fs.mirror(src, dst, { manifest = dst .. "/SHA256SUMS" })
  local v = fs.verify(dst, dst .. "/SHA256SUMS")
  T.eq(v.ok, true)
  fs.write(dst .. "/two.txt", "changed")
  v = fs.verify(dst, dst .. "/SHA256SUMS")
  T.eq(v.ok, false)
end)

T.test("fs.stat gives size, type and a read-only file's mode", function()
  fs.write(dir .. "/ro.txt", "ro", { mode = "0444" })
  local st = fs.stat(dir .. "/ro.txt")
  T.eq(st.size, 2)
  T.eq(st.type, "file")
  T.eq(st.mode & 0200, 0)
  T.eq(fs.stat(dir).type, "dir")
end)

T.test("fs.copy and fs.mirror keep the hidden and system attributes (attrib +h, +s)", function()
  local proc = require "upkit.proc"
  local src, dst = dir .. "/attr-src", dir .. "/attr-dst"
  fs.mkdirs(src)
  fs.write(src .. "/h.txt", "hidden")
  fs.write(src .. "/plain.txt", "plain")
  local win = (src .. "/h.txt"):gsub("/", "\\")
  -- one attribute per call: Wine's attrib applies only the last of several
  proc.run({ "attrib", "+h", win }, { ok = { 0 } })
  proc.run({ "attrib", "+s", win }, { ok = { 0 } })
  T.eq(fs.stat(src .. "/h.txt").hidden, true)
  T.eq(fs.stat(src .. "/h.txt").system, true)
  fs.copy(src .. "/h.txt", dir .. "/h-copy.txt")
  T.eq(fs.stat(dir .. "/h-copy.txt").hidden, true)
  T.eq(fs.stat(dir .. "/h-copy.txt").system, true)
  fs.mirror(src, dst)
  T.eq(fs.stat(dst .. "/h.txt").hidden, true)
  T.eq(fs.stat(dst .. "/plain.txt").hidden, nil)
  T.eq(fs.read(dst .. "/h.txt"), "hidden")
end)

T.test("fs.free gives the free bytes of the folder's volume", function()
  local free = fs.free(dir)
  T.ok(math.type(free) == "integer" and free > 0, "free bytes: " .. tostring(free))
end)

T.test("fs.remove refuses a drive's root and the user's profile folder", function()
  -- not recursive: were the refusal missing, the call would fail with ENOTEMPTY instead
  T.contains(T.raises("EINVAL", fs.remove, "C:/").message, "root folder")
  T.contains(T.raises("EINVAL", fs.remove, os.getenv("USERPROFILE")).message, "home folder")
end)

T.test("fs.remove removes a tree recursively", function()
  fs.mkdirs(dir .. "/rm/a/b")
  fs.write(dir .. "/rm/a/b/c.txt", "c")
  fs.remove(dir .. "/rm", { recursive = true })
  T.eq(fs.exists(dir .. "/rm"), false)
end)

T.done()
