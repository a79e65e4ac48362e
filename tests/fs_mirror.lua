-- upkit.fs.mirror and fs.verify: re-runnable, safe tree copies and manifests.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local fs = require "upkit.fs"

local root = T.tmpdir()
local n = 0
local function fresh(name)
  n = n + 1
  local d = string.format("%s/%d-%s", root, n, name)
  T.sh("mkdir -p " .. T.q(d))
  return d
end

local function tree(d)
  T.sh("cd " .. T.q(d) .. " && mkdir -p logs/2024 packages empty && " ..
       "for i in $(seq 1 40); do echo log $i > logs/2024/task-$i.log; done && " ..
       "head -c 3000000 /dev/urandom > packages/pkg-1.0.nupkg && echo top > readme.txt && " ..
       "chmod 0640 readme.txt && touch -d '2020-01-01 00:00:00' readme.txt")
end

local function listing(d)
  return T.sh("cd " .. T.q(d) .. " && find . -printf '%p %y %s %m %l\\n' | LC_ALL=C sort")
end

local function checksums_ok(d, manifest)
  local out, st = T.sh("cd " .. T.q(d) .. " && sha256sum --quiet -c " .. T.q(manifest) .. " 2>&1")
  return st == 0, out
end

T.test("fs.mirror copies a tree, keeps modes and times, and a second run skips everything", function()
  local src, dst = fresh("src"), fresh("dst") .. "/new"
  tree(src)
  local r = fs.mirror(src, dst)
  T.eq(r.files, 42)
  T.eq(r.copied, 42)
  T.eq(r.skipped, 0)
  T.eq(#r.failures, 0)
  T.eq(listing(dst), listing(src))
  T.eq(T.sh("stat -c '%y %a' " .. T.q(dst .. "/readme.txt")), T.sh("stat -c '%y %a' " .. T.q(src .. "/readme.txt")))
  local r2 = fs.mirror(src, dst)
  T.eq(r2.copied, 0)
  T.eq(r2.skipped, 42)
  T.eq(r2.bytes, 0)
end)

T.test("changed files are copied again; delete removes what src no longer has", function()
  local src, dst = fresh("src"), fresh("dst")
  tree(src)
  fs.mirror(src, dst)
  T.write_file(src .. "/readme.txt", "changed")
  T.sh("rm " .. T.q(src .. "/logs/2024/task-1.log") .. " && rm -r " .. T.q(src .. "/empty"))
  local r = fs.mirror(src, dst)
  T.eq(r.copied, 1)
  T.eq(r.deleted, 0)
  T.eq(T.read_file(dst .. "/logs/2024/task-1.log"), "log 1\n")
  r = fs.mirror(src, dst, { delete = true })
  T.eq(r.deleted, 2)
  T.eq(fs.exists(dst .. "/logs/2024/task-1.log"), false)
  T.eq(listing(dst), listing(src))
end)

T.test("compare = hash finds a change that keeps size and modification time", function()
  local src, dst = fresh("src"), fresh("dst")
  T.write_file(src .. "/f", "aaaa")
  fs.mirror(src, dst)
  T.sh("touch -r " .. T.q(src .. "/f") .. " " .. T.q(dst .. "/f") .. " && printf bbbb > " .. T.q(dst .. "/f") ..
       " && touch -r " .. T.q(src .. "/f") .. " " .. T.q(dst .. "/f"))
  T.eq(fs.mirror(src, dst).copied, 0)
  T.eq(fs.mirror(src, dst, { compare = "hash" }).copied, 1)
  T.eq(T.read_file(dst .. "/f"), "aaaa")
end)

T.test("exclude patterns match relative paths and base names; excluded files are not deleted", function()
  local src, dst = fresh("src"), fresh("dst")
  tree(src)
  T.sh("mkdir -p " .. T.q(dst .. "/cache") .. " && echo keep > " .. T.q(dst .. "/cache/x"))
  local r = fs.mirror(src, dst, { exclude = { "*.nupkg", "logs/2024/task-1?.log", "cache" }, delete = true })
  T.eq(fs.exists(dst .. "/packages/pkg-1.0.nupkg"), false)
  T.eq(fs.exists(dst .. "/logs/2024/task-12.log"), false)
  T.eq(fs.exists(dst .. "/logs/2024/task-2.log"), true)
  T.eq(T.read_file(dst .. "/cache/x"), "keep\n")
  T.eq(r.files, 42 - 1 - 10)
end)

T.test("symbolic links are copied as links and never followed out of the tree", function()
  local src, dst, outside = fresh("src"), fresh("dst"), fresh("outside")
  T.write_file(outside .. "/secret", "outside data")
  T.sh("ln -s " .. T.q(outside) .. " " .. T.q(src .. "/out-dir") .. " && ln -s " ..
       T.q(outside .. "/secret") .. " " .. T.q(src .. "/out-file") .. " && ln -s dangling " .. T.q(src .. "/broken"))
  -- a link already in dst where src has a folder must not be written through
  T.sh("mkdir " .. T.q(src .. "/sub") .. " && echo in > " .. T.q(src .. "/sub/f") ..
       " && ln -s " .. T.q(outside) .. " " .. T.q(dst .. "/sub"))
  local r = fs.mirror(src, dst, { delete = true })
  T.eq(#r.failures, 0)
  T.eq(T.sh("readlink " .. T.q(dst .. "/out-dir")), outside .. "\n")
  T.eq(T.sh("readlink " .. T.q(dst .. "/out-file")), outside .. "/secret\n")
  T.eq(T.sh("readlink " .. T.q(dst .. "/broken")), "dangling\n")
  T.eq(fs.stat(dst .. "/sub").type, "dir")
  T.eq(T.sh("ls -A " .. T.q(outside)), "secret\n")
end)

T.test("verify = true reads every copied file back: a file changed on its way fails alone, its old copy kept", function()
  local src, dst = fresh("src"), fresh("dst")
  T.sh("cd " .. T.q(src) .. " && head -c 320M /dev/zero > big.bin && echo small > small.txt")
  T.sh("cd " .. T.q(dst) .. " && echo old > big.bin")
  local progress, corrupted = require("fsfault").corrupt_temp(dst, "^big%.bin%.")
  local r = fs.mirror(src, dst, { verify = true, continue_on_error = true, progress = progress })
  T.ok(corrupted(), "the temporary file was found")
  T.eq(#r.failures, 1)
  T.eq(r.failures[1].path, "big.bin")
  T.eq(r.failures[1].code, "CHECKSUM_MISMATCH")
  T.eq(T.read_file(dst .. "/big.bin"), "old\n")
  T.eq(T.read_file(dst .. "/small.txt"), "small\n")
  T.eq(T.sh("ls -A " .. T.q(dst) .. " | grep -c upkit-tmp || true"), "0\n")
  local again = fs.mirror(src, dst, { verify = true })
  T.eq(again.copied, 1)
  T.eq(T.sh("cmp " .. T.q(src .. "/big.bin") .. " " .. T.q(dst .. "/big.bin") .. " && echo same"), "same\n")
end)

T.test("FIFOs and sockets are not copied: listed in special, and a warning says so", function()
  local src, dst = fresh("src"), fresh("dst")
  T.sh("cd " .. T.q(src) .. " && mkdir sub && echo x > sub/file && mkfifo sub/pipe && " ..
       "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind(\"sock\")'")
  local log = require "upkit.log"
  local warnings = {}
  local function sink(rec) if rec.level == "warn" then warnings[#warnings + 1] = rec.msg end end
  log.add_sink(sink)
  local ok, r = pcall(fs.mirror, src, dst, { manifest = dst .. "/SUMS" })
  log.remove_sink(sink)
  if not ok then error(r, 0) end
  T.eq(r.copied, 1)
  table.sort(r.special)
  T.eq(r.special, { "sock", "sub/pipe" })
  T.eq(#r.failures, 0)
  T.eq(T.sh("cd " .. T.q(dst) .. " && find . | LC_ALL=C sort"), ".\n./SUMS\n./sub\n./sub/file\n")
  T.eq(#warnings, 1)
  T.match(warnings[1], "2 FIFO%(s%), socket%(s%) or device%(s%) not copied")
end)

T.test("names with spaces, newlines and UTF-8 mirror and pass sha256sum -c", function()
  local src, dst = fresh("src"), fresh("dst")
  for _, name in ipairs { "with space.log", "new\nline.log", "日本語 ü.txt", "back\\slash", "cr\rname" } do
    T.write_file(src .. "/" .. name, "data of " .. name)
  end
  local manifest = dst .. "/SHA256SUMS"
  local r = fs.mirror(src, dst, { manifest = manifest, delete = true })
  T.eq(r.copied, 5)
  local ok, out = checksums_ok(dst, manifest)
  T.ok(ok, out)
  local v = fs.verify(dst, manifest)
  T.eq(v.ok, true)
  -- a second run keeps the manifest (it is not deleted as extra)
  r = fs.mirror(src, dst, { manifest = manifest, delete = true })
  T.eq(r.deleted, 0)
  T.ok((checksums_ok(dst, manifest)))
end)

T.test("fs.verify reports missing, extra and different files", function()
  local src, dst = fresh("src"), fresh("dst")
  tree(src)
  local manifest = fresh("m") .. "/SHA256SUMS"
  fs.mirror(src, dst, { manifest = manifest })
  T.eq(fs.verify(dst, manifest).ok, true)
  T.sh("cd " .. T.q(dst) .. " && rm logs/2024/task-3.log && echo x > extra.txt && echo y >> readme.txt")
  local v = fs.verify(dst, manifest)
  T.eq(v.ok, false)
  T.eq(v.missing, { "logs/2024/task-3.log" })
  T.eq(v.extra, { "extra.txt" })
  T.eq(v.different, { "readme.txt" })
  T.raises("ENOENT", fs.verify, dst, manifest .. ".missing")
  T.write_file(manifest .. ".bad", "not a manifest\n")
  local e = T.raises("BAD_FORMAT", fs.verify, dst, manifest .. ".bad")
  T.eq(e.line, 1)
end)

T.test("an entry whose kind changed (file <-> folder) is replaced", function()
  local src, dst = fresh("src"), fresh("dst")
  T.sh("mkdir " .. T.q(src .. "/a") .. " && echo f > " .. T.q(src .. "/a/x") .. " && echo b > " .. T.q(src .. "/b"))
  fs.mirror(src, dst)
  T.sh("rm -r " .. T.q(src .. "/a") .. " " .. T.q(src .. "/b") .. " && echo now-a-file > " .. T.q(src .. "/a") ..
       " && mkdir " .. T.q(src .. "/b") .. " && echo in-b > " .. T.q(src .. "/b/y"))
  fs.mirror(src, dst)
  T.eq(T.read_file(dst .. "/a"), "now-a-file\n")
  T.eq(T.read_file(dst .. "/b/y"), "in-b\n")
end)

T.test("an unreadable file fails alone with continue_on_error, and stops the mirror without it", function()
  local src, dst = fresh("src"), fresh("dst")
  tree(src)
  T.sh("chmod 0000 " .. T.q(src .. "/readme.txt") .. " && chmod 0777 " .. T.q(dst) .. " " .. T.q(root) ..
       " && chmod -R a+rX " .. T.q(src))
  T.sh("chmod 0000 " .. T.q(src .. "/readme.txt"))
  local script = fresh("script") .. "/m.lua"
  T.write_file(script, string.format([[
local fs = require "upkit.fs"
local json = require "upkit.json"
local r = fs.mirror(%q, %q, { continue_on_error = true })
print(r.copied, #r.failures, r.failures[1].path, r.failures[1].code)
local ok, err = pcall(fs.mirror, %q, %q .. "/again")
print(ok, err.code)
]], src, dst, src, dst))
  T.sh("chmod a+rx " .. T.q(script:match("^(.*)/")) .. " && chmod a+r " .. T.q(script))
  -- root reads anything: an unprivileged user runs the mirror then
  local runner = T.is_root() and ("runuser -u nobody -- " .. T.unprivileged_upkit()) or T.q(T.upkit_bin())
  local out, st = T.sh("cd / && " .. runner .. " run " .. T.q(script) .. " 2>&1")
  T.eq(st, 0, out)
  T.eq(out, "41\t1\treadme.txt\tEACCES\nfalse\tEACCES\n")
end)

T.test("failure modes: missing source, bad options", function()
  local dst = fresh("dst")
  T.raises("ENOENT", fs.mirror, root .. "/missing", dst)
  T.raises("EINVAL", fs.mirror, root, dst, { compare = "crc" })
  T.raises("EINVAL", fs.mirror, root, dst, { exclude = "*.log" })
  T.raises("EINVAL", fs.mirror, root, dst, { bogus = true })
  T.raises("EINVAL", fs.mirror, root, dst, { exclude = { "[abc" } })
end)

T.test("progress function sees files and bytes with totals", function()
  local src, dst = fresh("src"), fresh("dst")
  tree(src)
  local last
  fs.mirror(src, dst, { progress = function(p) last = p end, batch_files = 5 })
  T.eq(last.files, 42)
  T.eq(last.files_total, 42)
  T.eq(last.bytes, last.bytes_total)
end)

T.test("a mirror killed with SIGKILL midway and run again gives a tree sha256sum -c accepts", function()
  local src, dst = fresh("src"), fresh("dst")
  T.sh("cd " .. T.q(src) .. " && mkdir -p a b && for i in $(seq 1 300); do echo file $i > a/f$i; done && " ..
       "head -c 200M /dev/zero | tr '\\0' 'z' > b/big1 && head -c 200M /dev/zero | tr '\\0' 'y' > b/big2")
  local manifest = dst .. "/SHA256SUMS"
  local script = fresh("script") .. "/m.lua"
  T.write_file(script, string.format(
    "require('upkit.fs').mirror(%q, %q, { manifest = %q, batch_files = 50 })\n", src, dst, manifest))
  local pid = T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(script) .. " >/dev/null 2>&1 & echo $!"):match("%d+")
  for _ = 1, 400 do
    if T.sh("ls -A " .. T.q(dst .. "/b") .. " 2>/dev/null | grep -c upkit-tmp"):match("[1-9]") then break end
    T.sh("sleep 0.01")
  end
  T.sh("kill -9 " .. pid .. "; sleep 0.2")
  T.eq(fs.exists(manifest), false, "the killed run had not finished")
  -- no final path holds a partial file
  for _, name in ipairs { "big1", "big2" } do
    local st = fs.stat(dst .. "/b/" .. name)
    if st then T.eq(st.size, 200 << 20) end
  end
  local r = fs.mirror(src, dst, { manifest = manifest })
  T.eq(r.files, 302)
  T.ok((checksums_ok(dst, manifest)))
  T.eq(T.sh("find " .. T.q(dst) .. " -name '*upkit-tmp*' | wc -l"), "0\n")
end)

T.done()
