-- make bench: run every tests/bench/b_*.lua (BENCH_ONLY=pattern selects) and
-- print each primitive's rate beside the tool an operator would otherwise use.
package.path = "tests/bench/?.lua;" .. package.path
local lfs = require "lfs"
local B = require "benchlib"

local files = {}
for f in lfs.dir("tests/bench") do
  if f:match("^b_.*%.lua$") and (not os.getenv("BENCH_ONLY") or f:find(os.getenv("BENCH_ONLY"))) then
    files[#files + 1] = f
  end
end
table.sort(files)
print(string.format("%-44s %17s | %-28s %10s | %s", "upkit", "rate", "compared with", "rate", "upkit/tool"))
for _, f in ipairs(files) do
  local ok, err = pcall(dofile, "tests/bench/" .. f)
  if not ok then io.stderr:write("bench ", f, " failed: ", tostring(err), "\n") end
end
local unmet = 0
for _, r in ipairs(B.rows) do if r.aim and r.ratio < r.aim then unmet = unmet + 1 end end
print(string.format("%d measurements, %d below their aim", #B.rows, unmet))
