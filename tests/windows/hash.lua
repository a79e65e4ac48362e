-- upkit.hash on Windows (make test-windows): the digests come from CNG (BCrypt).
local T = require "upkit.test"
local hash = require "upkit.hash"
local fs = require "upkit.fs"

local KNOWN = {
  md5 = "900150983cd24fb0d6963f7d28e17f72",
  sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d",
  sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  sha512 = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a" ..
           "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
}

for alg, want in pairs(KNOWN) do
  T.test("hash.new " .. alg .. " of 'abc' in two updates is the known digest", function()
    local h = hash.new(alg)
    h:update("a")
    h:update("bc")
    T.eq(h:hex(), want)
    h:close()
  end)
end

T.test("hash.file of a 3 MB file equals the digest of its bytes", function()
  local p = T.tmpdir() .. "/big.bin"
  local data = string.rep("0123456789abcdef", 3 * 65536)
  fs.write(p, data)
  local h = hash.new("sha256")
  h:update(data)
  T.eq(hash.file("sha256", p), h:hex())
  h:close()
end)

T.test("hash.hmac sha256 is RFC 4231's case 2", function()
  T.eq(hash.hmac("sha256", "Jefe", "what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
end)

T.test("an unknown algorithm raises EINVAL; a missing file ENOENT", function()
  T.raises("EINVAL", hash.new, "sha3-256")
  T.raises("ENOENT", hash.file, "sha256", T.tmpdir() .. "/missing")
end)

T.done()
