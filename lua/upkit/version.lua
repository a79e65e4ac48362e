-- upkit.version: numeric comparison of dotted version numbers.
--
--   local version = require "upkit.version"
--   version.parse("2021.1.8018-beta2") --> { 2021, 1, 8018, pre = "beta2", text = "2021.1.8018-beta2" }
--   version.compare("3.17.14", "2019.1.0") --> -1   (-1, 0 or 1)
--   version.lt(a, b), version.le(a, b), version.eq(a, b), version.ge(a, b), version.gt(a, b)
--   version.sort(list [, descending]) --> list, sorted in place
--   version.max(list) --> the highest
--
-- Components compare as numbers (2019.1.10 > 2019.1.9), missing ones count
-- as 0 (2019.1 == 2019.1.0), and a pre-release sorts before its release
-- (2021.1.0-beta1 < 2021.1.0). A leading "v" is accepted.
local upkit = require "upkit"

local M = {}

function M.parse(v)
  if type(v) == "table" and v.text then return v end
  if type(v) == "number" then v = tostring(v) end
  if type(v) ~= "string" then
    upkit.error("EINVAL", string.format("version.parse: expected a version string, got %s", type(v)))
  end
  local s = v:match("^%s*[vV]?(.-)%s*$")
  local nums, pre = s:match("^([%d%.]+)[-+]?(.*)$")
  if not nums or nums:find("%.%.") or nums:find("^%.") or nums:find("%.$") then
    upkit.error("EINVAL", string.format("version.parse: '%s' is not a version number", v))
  end
  local t = { text = v }
  for n in nums:gmatch("%d+") do t[#t + 1] = tonumber(n) end
  if pre ~= "" then t.pre = pre end
  return t
end

local function cmp_pre(a, b)
  if a == b then return 0 end
  if not a then return 1 end   -- a release sorts after its pre-releases
  if not b then return -1 end
  local na, nb = tonumber(a:match("%d+$")), tonumber(b:match("%d+$"))
  local sa, sb = a:gsub("%d+$", ""), b:gsub("%d+$", "")
  if sa == sb and na and nb then return na < nb and -1 or (na > nb and 1 or 0) end
  return a < b and -1 or 1
end

function M.compare(a, b)
  local pa, pb = M.parse(a), M.parse(b)
  for i = 1, math.max(#pa, #pb) do
    local x, y = pa[i] or 0, pb[i] or 0
    if x ~= y then return x < y and -1 or 1 end
  end
  return cmp_pre(pa.pre, pb.pre)
end

function M.lt(a, b) return M.compare(a, b) < 0 end
function M.le(a, b) return M.compare(a, b) <= 0 end
function M.eq(a, b) return M.compare(a, b) == 0 end
function M.ge(a, b) return M.compare(a, b) >= 0 end
function M.gt(a, b) return M.compare(a, b) > 0 end

function M.sort(list, descending)
  table.sort(list, function(a, b)
    if descending then return M.compare(a, b) > 0 end
    return M.compare(a, b) < 0
  end)
  return list
end

function M.max(list)
  local best
  for _, v in ipairs(list) do
    if best == nil or M.compare(v, best) > 0 then best = v end
  end
  return best
end

return M
