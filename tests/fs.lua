-- upkit.fs: atomic verified copies, file helpers, and their failure modes.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local fs = require "upkit.fs"
local hash = require "upkit.hash"

local dir = T.tmpdir()
local n = 0
local function path(name)
  n = n + 1
  return string.format("%s/%d-%s", dir, n, name)
end

local function sha(p) return (T.sh("sha256sum " .. T.q(p)):match("^(%x+)")) end
local function ls(d) return (T.sh("ls -A " .. T.q(d))) end
local function temps(d) return (T.sh("ls -A " .. T.q(d) .. " | grep -c upkit-tmp")):match("%d+") end

local zeros_file
local function zeros()  -- 600 MB of written zeros, for copies long enough to report progress
  if not zeros_file then
    zeros_file = path("zeros")
    T.sh("head -c 600M /dev/zero > " .. T.q(zeros_file))
  end
  return zeros_file
end

local function random_file(name, size)
  local p = path(name)
  T.sh(string.format("head -c %d /dev/urandom > %s", size, T.q(p)))
  return p
end

T.test("fs.copy copies a file and returns bytes and seconds", function()
  local src = random_file("src", 300000)
  local dst = path("dst")
  local r = fs.copy(src, dst)
  T.eq(r.bytes, 300000)
  T.ok(r.seconds >= 0)
  T.eq(sha(dst), sha(src))
end)

T.test("fs.copy of an empty file gives an empty file", function()
  local src = path("empty")
  T.write_file(src, "")
  local dst = path("empty-copy")
  T.eq(fs.copy(src, dst, { verify = "sha256" }).sha256, sha(src))
  T.eq(T.read_file(dst), "")
end)

T.test("fs.copy keeps the mode and the modification time", function()
  local src = random_file("meta", 1000)
  T.sh("chmod 0640 " .. T.q(src) .. " && touch -d '2001-02-03 04:05:06.123456789' " .. T.q(src))
  local dst = path("meta-copy")
  fs.copy(src, dst)
  T.eq(T.sh("stat -c '%a %y' " .. T.q(dst)), T.sh("stat -c '%a %y' " .. T.q(src)))
end)

T.test("fs.copy with verify hashes in the same pass and returns the digest", function()
  local src = random_file("big", 20 * 1024 * 1024 + 7)
  local dst = path("big-copy")
  local r = fs.copy(src, dst, { verify = "sha256" })
  T.eq(r.sha256, sha(src))
  T.eq(sha(dst), sha(src))
  local r2 = fs.copy(src, path("md5-copy"), { verify = "md5" })
  T.eq(r2.md5, (T.sh("md5sum " .. T.q(src)):match("^(%x+)")))
end)

T.test("fs.copy refuses to replace an existing file unless overwrite = true", function()
  local src = random_file("a", 100)
  local dst = path("b")
  T.write_file(dst, "keep me")
  local err = T.raises("EEXIST", fs.copy, src, dst)
  T.contains(err.message, src)
  T.contains(err.message, dst)
  T.eq(T.read_file(dst), "keep me")
  fs.copy(src, dst, { overwrite = true })
  T.eq(sha(dst), sha(src))
end)

T.test("fs.copy failure modes raise with codes", function()
  T.raises("ENOENT", fs.copy, path("missing"), path("x"))
  T.raises("EISDIR", fs.copy, dir, path("x"))
  T.raises("ENOENT", fs.copy, random_file("s", 10), dir .. "/no/such/folder/x")
  T.raises("EINVAL", fs.copy, random_file("s", 10), path("x"), { verify = "crc32" })
  T.raises("EINVAL", fs.copy, random_file("s", 10), path("x"), { bogus = 1 })
  T.raises("EINVAL", fs.copy, random_file("s", 10), path("x"), { overwrite = "yes" })
  T.raises("EINVAL", fs.copy, nil, path("x"))
end)

T.test("fs.copy of a multi-GiB sparse file stays sparse and equal", function()
  local src = path("sparse")
  T.sh("truncate -s 2G " .. T.q(src) .. " && printf middle | dd of=" .. T.q(src) ..
       " bs=1 seek=1073741824 conv=notrunc 2>/dev/null && printf tail >> " .. T.q(src))
  local dst = path("sparse-copy")
  local r = fs.copy(src, dst)
  T.eq(r.bytes, 2 * 1024 * 1024 * 1024 + 4)
  local blocks = tonumber((T.sh("stat -c %b " .. T.q(dst))))
  T.ok(blocks < 1024, "destination allocated " .. blocks .. " blocks")
  local dst2 = path("sparse-verified")
  local digest = fs.copy(src, dst2, { verify = "sha256" }).sha256
  T.ok(tonumber((T.sh("stat -c %b " .. T.q(dst2)))) < 1024 * 64, "verified copy stays sparse")
  T.eq(hash.file("sha256", dst), digest)
end)

T.test("fs.copy with verify raises CHECKSUM_MISMATCH when the written file differs, dst untouched", function()
  local d = path("mismatch")
  T.sh("mkdir " .. T.q(d))
  local src = zeros()
  local dst = d .. "/dst"
  T.write_file(dst, "old")
  local progress, corrupted = require("fsfault").corrupt_temp(d, "%.%d+%-%x+$")
  local err = T.raises("CHECKSUM_MISMATCH", fs.copy, src, dst, { verify = "sha256", overwrite = true,
    progress = progress })
  T.ok(corrupted(), "the temporary file was found")
  T.contains(err.message, "does not match")
  T.eq(T.read_file(dst), "old")
  T.eq(temps(d), "0")
end)

T.test("fs.copy progress function receives files, bytes and totals", function()
  local src = zeros()
  local calls = {}
  fs.copy(src, path("prog-copy"), { verify = "sha256", progress = function(p) calls[#calls + 1] = p end })
  T.ok(#calls >= 1)
  local last = calls[#calls]
  T.eq(last.files, 1)
  T.eq(last.bytes, 600 << 20)
  T.eq(last.bytes_total, 600 << 20)
end)

T.test("fs.copy error in the progress function is raised and leaves no temporary file", function()
  local d = path("progerr")
  T.sh("mkdir " .. T.q(d))
  local err = T.raises(nil, fs.copy, zeros(), d .. "/dst", { verify = "sha256",
    progress = function(p) if p.bytes < p.bytes_total then error("stop here") end end })
  T.contains(tostring(err), "stop here")
  T.eq(ls(d), "")
end)

T.test_root("fs.copy into a full file system raises ENOSPC and leaves nothing behind", function()
  local mnt = path("tmpfs")
  T.sh("mkdir " .. T.q(mnt))
  local out, st = T.sh("mount -t tmpfs -o size=1m tmpfs " .. T.q(mnt) .. " 2>&1")
  T.eq(st, 0, "mount a tmpfs: " .. out)
  local ok, err = pcall(function()
    local src = random_file("toobig", 3 * 1024 * 1024)
    T.raises("ENOSPC", fs.copy, src, mnt .. "/dst")
    T.eq(ls(mnt), "")
    T.raises("ENOSPC", fs.copy, src, mnt .. "/dst", { verify = "sha256" })
    T.eq(ls(mnt), "")
  end)
  T.sh("umount " .. T.q(mnt))
  if not ok then error(err, 0) end
end)

T.test("fs.copy killed with SIGKILL midway, run again, gives the right file and no leftovers", function()
  local d = path("killed")
  T.sh("mkdir " .. T.q(d))
  local src = d .. "/src.bin"
  T.sh("head -c 400M /dev/zero | tr '\\0' 'k' > " .. T.q(src))
  local out = d .. "/out"
  T.sh("mkdir " .. T.q(out))
  local script = d .. "/copy.lua"
  T.write_file(script, string.format(
    "local fs = require 'upkit.fs'\nfs.copy(%q, %q, { verify = 'sha256', overwrite = true })\n",
    src, out .. "/dst.bin"))
  local pid = T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(script) .. " >/dev/null 2>&1 & echo $!"):match("%d+")
  local seen = false
  for _ = 1, 200 do
    if temps(out) ~= "0" then seen = true break end
    T.sh("sleep 0.02")
  end
  T.sh("kill -9 " .. pid .. " 2>/dev/null; sleep 0.2")
  T.ok(seen, "the copy had started")
  T.eq(T.sh("ls -A " .. T.q(out) .. " | grep -c '^dst.bin$'"), "0\n", "no partial file at dst")
  local r = fs.copy(src, out .. "/dst.bin", { verify = "sha256" })
  T.eq(r.sha256, sha(src))
  T.eq(ls(out), "dst.bin\n")
end)

T.test("file names with spaces, newlines and UTF-8 copy fine", function()
  local d = path("names")
  T.sh("mkdir " .. T.q(d))
  for _, name in ipairs { "with space", "new\nline", "éàü日本", "back\\slash" } do
    T.write_file(d .. "/" .. name, name)
    fs.copy(d .. "/" .. name, d .. "/" .. name .. ".copy", { verify = "sha256" })
    T.eq(T.read_file(d .. "/" .. name .. ".copy"), name)
  end
end)

T.test("fs.write is atomic, keeps the mode and replaces", function()
  local p = path("secret")
  T.eq(fs.write(p, "key-1", { mode = "0600" }), 5)
  T.eq(T.sh("stat -c %a " .. T.q(p)), "600\n")
  fs.write(p, "key-2", { mode = "0600" })
  T.eq(fs.read(p), "key-2")
  T.raises("EINVAL", fs.write, p, "x", { mode = "rw" })
  T.raises("EINVAL", fs.write, p, 42)
  T.raises("ENOENT", fs.write, dir .. "/none/x", "x")
  T.eq(temps(dir), "0")
end)

T.test("fs.read reads whole files and raises ENOENT and EISDIR", function()
  local p = random_file("read", 200000)
  T.eq(hash.new("sha256"):update(fs.read(p)):hex(), sha(p))
  T.raises("ENOENT", fs.read, path("missing"))
  T.raises("EISDIR", fs.read, dir)
end)

T.test("fs.exists and fs.stat answer without raising for missing paths", function()
  T.eq(fs.exists(dir), true)
  T.eq(fs.exists(path("missing")), false)
  T.eq(fs.exists(dir .. "/missing/deeper"), false)
  T.eq(fs.stat(path("missing")), nil)
  local p = random_file("st", 123)
  local st = fs.stat(p)
  T.eq(st.type, "file")
  T.eq(st.size, 123)
  local l = path("link")
  T.sh("ln -s /nonexistent " .. T.q(l))
  T.eq(fs.exists(l), true)
  T.eq(fs.stat(l).type, "link")
end)

T.test("fs.mkdirs creates parents and accepts existing folders", function()
  local p = path("a") .. "/b/c"
  T.eq(fs.mkdirs(p, { mode = "0700" }), true)
  T.eq(fs.stat(p).type, "dir")
  T.eq(fs.mkdirs(p), false)
  local f = random_file("file", 1)
  T.raises("ENOTDIR", fs.mkdirs, f .. "/sub")
end)

T.test("fs.remove removes files and trees, not following links", function()
  local d = path("tree")
  local outside = path("outside")
  T.sh("mkdir -p " .. T.q(d .. "/x/y") .. " " .. T.q(outside) .. " && touch " .. T.q(d .. "/x/y/f") ..
       " " .. T.q(outside .. "/keep") .. " && ln -s " .. T.q(outside) .. " " .. T.q(d .. "/x/link"))
  T.raises("ENOTEMPTY", fs.remove, d)
  T.eq(fs.remove(d, { recursive = true }), true)
  T.eq(fs.exists(d), false)
  T.eq(fs.exists(outside .. "/keep"), true)
  T.eq(fs.remove(d), false)
end)

T.test("fs.remove refuses /, the home folder and the current folder's ancestors", function()
  T.raises("EINVAL", fs.remove, "/", { recursive = true })
  T.raises("EINVAL", fs.remove, fs.cwd and "." or ".", { recursive = true })
  T.raises("EINVAL", fs.remove, "..", { recursive = true })
  local home = os.getenv("HOME")
  if home and fs.exists(home) then T.raises("EINVAL", fs.remove, home, { recursive = true }) end
end)

T.test("fs.free reports bytes free and raises ENOENT for a missing path", function()
  local free = fs.free(dir)
  T.ok(math.type(free) == "integer" and free > 0)
  local df = tonumber((T.sh("df -B1 --output=avail " .. T.q(dir) .. " | tail -1"):match("%d+")))
  T.ok(math.abs(free - df) < 64 << 20, "close to df")
  T.raises("ENOENT", fs.free, path("missing"))
end)

T.test("fs.tempdir makes a fresh private folder", function()
  local a, b = fs.tempdir(), fs.tempdir("mine")
  T.ne(a, b)
  T.eq(T.sh("stat -c %a " .. T.q(a)), "700\n")
  T.match(b, "/mine%.[^/]+$")
  fs.remove(a)
  fs.remove(b)
  T.raises("EINVAL", fs.tempdir, "a/b")
end)

T.test("a stale temporary file from a killed copy is removed by the next copy into the folder", function()
  local d = path("stale")
  T.sh("mkdir -p " .. T.q(d .. "/.upkit-tmp"))
  T.write_file(d .. "/.upkit-tmp/x.999999999-0badf00d", "stale")
  fs.copy(random_file("s", 10), d .. "/new")
  T.eq(ls(d), "new\n")
end)

T.done()
