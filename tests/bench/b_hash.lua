-- Hashing a 1 GiB file: upkit's hash.file against openssl dgst and sha256sum;
-- and start-up of `upkit run empty.lua` against `lua5.4 empty.lua`.
package.path = "tests/bench/?.lua;" .. package.path
local B = require "benchlib"
local hash = require "upkit.hash"

local dir = B.workdir()
local file = dir .. "/hash-1g.bin"
local size = 1 << 30
local f = io.open(file, "rb")
if not f or f:seek("end") ~= size then
  B.sh(string.format("head -c %d /dev/urandom > %s", size, B.q(file)))
end
if f then f:close() end
B.sh("cat " .. B.q(file) .. " > /dev/null")  -- warm the page cache

local mb = size / 1e6
local t_upkit = B.time(function() hash.file("sha256", file) end, 3)
local t_openssl = B.sh_time("openssl dgst -sha256 " .. B.q(file), 3)
local t_sum = B.sh_time("sha256sum " .. B.q(file), 2)
B.report { name = "hash.file sha256, 1 GiB", unit = "MB/s", upkit = mb / t_upkit,
           tool = "openssl dgst -sha256", other = mb / t_openssl, aim = 0.95 }
B.report { name = "hash.file sha256, 1 GiB", unit = "MB/s", upkit = mb / t_upkit,
           tool = "sha256sum", other = mb / t_sum }

local empty = dir .. "/empty.lua"
io.open(empty, "w"):close()
local n = 100
local t_start = B.sh_time(string.format("for i in $(seq %d); do %s run %s; done", n, B.q(B.bin()), B.q(empty)), 3)
local t_lua = B.sh_time(string.format("for i in $(seq %d); do lua5.4 %s; done", n, B.q(empty)), 3)
B.report { name = "start-up, upkit run empty.lua", unit = "runs/s", upkit = n / t_start,
           tool = "lua5.4 empty.lua", other = n / t_lua }
