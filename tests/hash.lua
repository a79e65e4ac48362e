-- upkit.hash: digests agree with the coreutils tools; errors carry codes.
local T = require "upkit.test"
local hash = require "upkit.hash"

local dir = T.tmpdir()

local function coreutils(alg, path)
  local out = T.sh(alg .. "sum " .. T.q(path))
  return out:match("^(%x+)")
end

local function make(name, size)
  local p = dir .. "/" .. name
  T.sh(string.format("head -c %d /dev/urandom > %s", size, T.q(p)))
  return p
end

local sizes = { empty = 0, one = 1, ["64k+1"] = 65537, ["1m+3"] = (1 << 20) + 3, ["5m"] = 5 << 20 }
for name, size in pairs(sizes) do
  local p = make(name, size)
  for _, alg in ipairs { "md5", "sha1", "sha256", "sha512" } do
    T.test(string.format("hash.file %s of a %s file equals %ssum", alg, name, alg), function()
      T.eq(hash.file(alg, p), coreutils(alg, p))
    end)
  end
end

T.test("hash.file of a multi-GiB sparse file equals sha256sum", function()
  local p = dir .. "/big"
  T.sh("truncate -s 2G " .. T.q(p) .. " && printf tail >> " .. T.q(p))
  T.eq(hash.file("sha256", p), coreutils("sha256", p))
end)

T.test("hash.new streams updates and equals hash.file", function()
  local p = make("stream", 100000)
  local data = T.read_file(p)
  local h = hash.new("sha256")
  for i = 1, #data, 7777 do h:update(data:sub(i, i + 7776)) end
  T.eq(h:hex(), hash.file("sha256", p))
  T.eq(#h:digest(), 32)
  T.eq(h:algorithm(), "SHA256")
  h:close()
end)

T.test("hasher:hex can be read twice and updated after", function()
  local h <close> = hash.new("md5")
  h:update("a")
  T.eq(h:hex(), h:hex())
  h:update("bc", "d")
  T.eq(h:hex(), "e2fc714c4727ee9395f324cd2e7f331f")
end)

T.test("known vectors: sha1 and sha512 of 'abc'", function()
  local h <close> = hash.new("sha1")
  T.eq(h:update("abc"):hex(), "a9993e364706816aba3e25717850c26c9cd0d89d")
  local h2 <close> = hash.new("sha512")
  T.match(h2:update("abc"):hex(), "^ddaf35a193617aba")
end)

T.test("hash.hmac sha256 matches RFC 4231 test case 2", function()
  T.eq(hash.hmac("sha256", "Jefe", "what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
  T.eq(#hash.hmac("sha256", "k", "d", true), 32)
end)

T.test("close is idempotent and a closed hasher refuses updates", function()
  local h = hash.new("sha256")
  h:close()
  h:close()
  T.raises("CLOSED", function() h:update("x") end)
  T.match(tostring(h), "closed")
end)

T.test("unknown algorithm raises EINVAL naming it", function()
  local e = T.raises("EINVAL", hash.file, "crc32", "/dev/null")
  T.contains(e.message, "crc32")
  T.raises("EINVAL", hash.new, "sha3")
  T.raises("EINVAL", hash.hmac, "nope", "k", "d")
end)

T.test("missing file raises ENOENT naming the path", function()
  local e = T.raises("ENOENT", hash.file, "sha256", dir .. "/missing")
  T.contains(e.message, dir .. "/missing")
  T.eq(tostring(e), e.message)
end)

T.test("a folder raises EISDIR", function()
  T.raises("EISDIR", hash.file, "sha256", dir)
end)

T.test("an unreadable file raises EACCES", function()
  local p = make("secret", 10)
  os.execute("chmod 000 " .. T.q(p))
  if T.is_root() then
    -- root reads anything: ask an unprivileged user to hash it
    os.execute("chmod 755 " .. T.q(dir))
    local probe = dir .. "/probe.lua"
    T.write_file(probe, 'local ok, e = pcall(require("upkit.hash").file, "sha256", arg[1]) print(e.code)')
    local out = T.sh(string.format("cd / && runuser -u nobody -- %s run %s %s 2>&1",
      T.unprivileged_upkit(), T.q(probe), T.q(p)))
    T.eq(out, "EACCES\n")
  else
    T.raises("EACCES", hash.file, "sha256", p)
  end
end)

T.test("wrong argument types are refused with EINVAL error objects naming the function", function()
  local e = T.raises("EINVAL", hash.file, "sha256")
  T.contains(e.message, "hash.file: bad argument #2")
  T.raises("EINVAL", hash.new)
  local h <close> = hash.new("sha256")
  e = T.raises("EINVAL", h.update, h, {})
  T.contains(e.message, "hasher:update")
  T.raises("EINVAL", hash.file, "sha256", "/dev/null")  -- not a regular file
end)

T.done()
