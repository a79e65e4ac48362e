-- upkit.fs against cp, sha256sum and rsync, measured side by side in one run:
--   one 1 GiB file: fs.copy vs cp; fs.copy{verify="sha256"} vs cp + sha256sum of both;
--   a tree of 20,000 small logs plus two 100 MB packages: fs.mirror vs cp -a and
--   rsync -a, then a second mirror of the unchanged tree vs a second rsync -a.
-- fs.copy and fs.mirror make their results durable (fsync); cp and rsync do not,
-- so the cp + sync rows show the price of that durability on its own.
package.path = "tests/bench/?.lua;" .. package.path
local B = require "benchlib"
local fs = require "upkit.fs"

local dir = B.workdir() .. "/fs"
B.sh("mkdir -p " .. B.q(dir))
local big = dir .. "/copy-1g.bin"
local size = 1 << 30
if not fs.stat(big) or fs.stat(big).size ~= size then
  B.sh(string.format("head -c %d /dev/urandom > %s", size, B.q(big)))
end
local function warm(p) B.sh("cat " .. B.q(p) .. " > /dev/null") end
local function rm(p) B.sh("rm -rf " .. B.q(p)) end
local mb = size / 1e6

-- each side gets a fresh destination and the same warm source
local function timed(prep, fn, reps)
  local best = math.huge
  for _ = 1, reps or 2 do
    prep()
    B.sh("sync")
    local t = B.time(fn, 1)
    best = math.min(best, t)
  end
  return best
end

local dst = dir .. "/copy-dst.bin"
warm(big)
local t_copy = timed(function() rm(dst) end, function() fs.copy(big, dst) end)
local t_cp = timed(function() rm(dst) end, function() B.sh("cp " .. B.q(big) .. " " .. B.q(dst)) end)
local t_cpsync = timed(function() rm(dst) end, function()
  B.sh("cp " .. B.q(big) .. " " .. B.q(dst) .. " && sync -f " .. B.q(dst)) end)
B.report { name = "fs.copy, 1 GiB (durable)", unit = "MB/s", upkit = mb / t_copy,
           tool = "cp", other = mb / t_cp, aim = 0.9 }
B.report { name = "fs.copy, 1 GiB (durable)", unit = "MB/s", upkit = mb / t_copy,
           tool = "cp + sync -f", other = mb / t_cpsync }

local t_vcopy = timed(function() rm(dst) end, function() fs.copy(big, dst, { verify = "sha256" }) end)
local t_cpsum = timed(function() rm(dst) end, function()
  B.sh("cp " .. B.q(big) .. " " .. B.q(dst) .. " && sha256sum " .. B.q(big) .. " " .. B.q(dst)) end)
B.report { name = "fs.copy verify=sha256, 1 GiB", unit = "MB/s", upkit = mb / t_vcopy,
           tool = "cp + sha256sum of both", other = mb / t_cpsum, aim = 2 }
rm(dst)

-- the tree: 20,000 small logs in 200 folders plus two 100 MB packages
local tree = dir .. "/tree"
local nfiles = 20000
if not fs.exists(tree .. "/Packages/pkg-2.nupkg") then
  rm(tree)
  local line = string.rep("2024-05-01 12:00:00 INFO Deployment step finished in 12 ms ", 4) .. "\n"
  for d = 1, 200 do
    local sub = string.format("%s/TaskLogs/%03d", tree, d)
    fs.mkdirs(sub)
    for i = 1, nfiles / 200 do
      local f = assert(io.open(string.format("%s/servertasks-%d.log", sub, i), "wb"))
      f:write(string.format("task %d/%d\n", d, i), line:rep(16))
      f:close()
    end
  end
  fs.mkdirs(tree .. "/Packages")
  for i = 1, 2 do
    B.sh(string.format("head -c 100000000 /dev/urandom > %s/Packages/pkg-%d.nupkg", B.q(tree), i))
  end
end
B.sh("cat " .. B.q(tree) .. "/Packages/* > /dev/null && find " .. B.q(tree) .. " -type f -exec cat {} + > /dev/null")
local files = nfiles + 2
local out = dir .. "/tree-dst"
local t_mirror = timed(function() rm(out) end, function() fs.mirror(tree, out) end, 1)
local t_cpa = timed(function() rm(out) end, function() B.sh("cp -a " .. B.q(tree) .. " " .. B.q(out)) end, 1)
local t_rsync = timed(function() rm(out) end, function()
  B.sh("rsync -a " .. B.q(tree .. "/") .. " " .. B.q(out .. "/")) end, 1)
B.report { name = "fs.mirror, 20,000 logs + 2x100 MB", unit = "files/s", upkit = files / t_mirror,
           tool = "cp -a", other = files / t_cpa, aim = 1 }
B.report { name = "fs.mirror, 20,000 logs + 2x100 MB", unit = "files/s", upkit = files / t_mirror,
           tool = "rsync -a", other = files / t_rsync, aim = 1.5 }
-- second runs over an unchanged tree
rm(out)
fs.mirror(tree, out)
local t_mirror2 = B.time(function() fs.mirror(tree, out) end, 2)
rm(out)
B.sh("rsync -a " .. B.q(tree .. "/") .. " " .. B.q(out .. "/"))
local t_rsync2 = B.sh_time("rsync -a " .. B.q(tree .. "/") .. " " .. B.q(out .. "/"), 2)
B.report { name = "fs.mirror again, unchanged tree", unit = "files/s", upkit = files / t_mirror2,
           tool = "rsync -a again", other = files / t_rsync2, aim = 1 }
rm(out)
