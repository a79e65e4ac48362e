-- Every error code raised in host/, lua/ and scripts/ is one docs/errors.md lists.
-- The sources are read, not run. The forms recognised (keep raising
-- errors in these forms, so that a new code cannot slip in without its row
-- in docs/errors.md):
--   C:   upk_error(L, "CODE", ...), upk_pusherror(L, c ? "A" : "B", ...) (every
--        literal of the first argument), code = "CODE", the errno table
--        {EPERM, "EPERM"} and http's table N(CURLE_X, "CODE")
--   Lua: x.error("CODE", ...), x.new_error("CODE", ...), x.check(cond, "CODE", ...),
--        { code = "CODE" }, e.code or "CODE", and tables named *CODES.
-- A code passed in a variable (a SQLSTATE built at run time) is not seen.
local T = require "upkit.test"
local lfs = require "lfs"

local root = os.getenv("UPKIT_SOURCE_ROOT") or "."

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The vocabulary: the errno names of "Operating system" (less the ones it
-- says are never raised) and the first cell of every table row.
local function documented()
  local doc = read(root .. "/docs/errors.md")
  local codes, never = {}, {}
  for w in doc:gmatch("`(%u[%u%d_]+)` is never raised") do never[w] = true end
  local os_part = doc:match("## Operating system(.-)\n## ") or ""
  for w in os_part:gmatch("`(%u[%u%d_]+)`") do
    if not never[w] then codes[w] = true end
  end
  for line in doc:gmatch("[^\n]+") do
    local w = line:match("^|%s*`(%u[%u%d_]+)`%s*|")
    if w then codes[w] = true end
  end
  return codes
end

local function is_code(s) return s:match("^%u[%u%d_]*$") ~= nil and #s >= 3 end

-- Each scanner: function(text, add) calling add(code, position) for every code it finds.
local function literals_in(arg, pos, add)
  for lit in arg:gmatch('"([^"]*)"') do
    if is_code(lit) then add(lit, pos) end
  end
end

local c_scanners = {
  -- upk_error(L, "CODE", ...), upk_pusherror(L, cond ? "A" : "B", ...): literals of the first argument
  function(text, add)
    for pos, arg in text:gmatch("()upk_%a*error%s*%(%s*[%w_>%-]+%s*,%s*([^,]+),") do literals_in(arg, pos, add) end
  end,
  -- code = "CODE" (a mapping function's out-parameter)
  function(text, add)
    for pos, lit in text:gmatch('()code%s*=%s*"([^"]*)"') do if is_code(lit) then add(lit, pos) end end
  end,
  -- the errno table {EPERM, "EPERM"} and the CURLcode table N(CURLE_X, "CODE")
  function(text, add)
    for pos, lit in text:gmatch('(){E[%u%d]+,%s*"([^"]*)"}') do add(lit, pos) end
    for pos, lit in text:gmatch('()N%(CURLE_[%u%d_]+,%s*"([^"]*)"%)') do add(lit, pos) end
  end,
}

local lua_scanners = {
  -- upkit.error("CODE", ...), upkit.new_error(...), core.error(...), require("upkit").error(...)
  function(text, add)
    for pos, arg in text:gmatch("()%.error%s*%(([^,%)]*)[,%)]") do literals_in(arg, pos, add) end
    for pos, arg in text:gmatch("()%.new_error%s*%(([^,%)]*)[,%)]") do literals_in(arg, pos, add) end
  end,
  -- upkit.check(cond, "CODE", ...)
  function(text, add)
    for pos, arg in text:gmatch("()%.check%s*%([^,]*,([^,]*),") do literals_in(arg, pos, add) end
  end,
  -- { code = "CODE" }, err.code or "CODE"
  function(text, add)
    for pos, lit in text:gmatch('()code%s*=%s*"([^"]*)"') do if is_code(lit) then add(lit, pos) end end
    for pos, lit in text:gmatch('()code%s+or%s+"([^"]*)"') do if is_code(lit) then add(lit, pos) end end
  end,
  -- tables mapping to codes: STATUS_CODES = { [401] = "X" }
  function(text, add)
    for pos, body in text:gmatch("()[%w_]*CODES%s*=%s*(%b{})") do literals_in(body, pos, add) end
  end,
}

local function line_of(text, pos)
  local n = 1
  for _ in text:sub(1, pos):gmatch("\n") do n = n + 1 end
  return n
end

-- Every source file under dir with the extension ext.
local function files(dir, ext, out)
  out = out or {}
  local names = {}
  for name in lfs.dir(dir) do
    if name:sub(1, 1) ~= "." then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local p = dir .. "/" .. name
    local mode = lfs.attributes(p, "mode")
    if mode == "directory" then files(p, ext, out)
    elseif name:sub(-#ext) == ext then out[#out + 1] = p end
  end
  return out
end

local function raised(path)
  local text = read(path)
  local found = {}
  local scanners = path:match("%.[ch]$") and c_scanners or lua_scanners
  for _, scan in ipairs(scanners) do
    scan(text, function(code, pos) found[#found + 1] = { code = code, line = line_of(text, pos) } end)
  end
  return found
end

local codes = documented()

T.test("docs/errors.md lists the vocabulary", function()
  for _, c in ipairs { "EINVAL", "ENOENT", "TIMEOUT", "BAD_JSON", "CLOSED", "SOURCE_CHANGED", "EXIT_CODE" } do
    T.ok(codes[c], c .. " is listed")
  end
  T.eq(codes.ETIMEDOUT, nil, "ETIMEDOUT is never raised")
end)

local sources = {}
for _, d in ipairs { "host", "lua", "scripts" } do
  files(root .. "/" .. d, d == "host" and ".c" or ".lua", sources)
end

T.test("the scanners see the ways errors are raised", function()
  local seen = {}
  local total = 0
  for _, p in ipairs(sources) do
    for _, r in ipairs(raised(p)) do
      seen[r.code .. "@" .. p:match("[^/]+/[^/]+$")] = true
      total = total + 1
    end
  end
  T.ok(total > 200, "found " .. total .. " raise sites")
  for _, k in ipairs { "BAD_JSON@host/json.c", "SOURCE_CHANGED@host/fs.c", "TIMEOUT@host/http.c",
                       "TIMEOUT@upkit/proc.lua", "EXIT_CODE@upkit/proc.lua", "ENOENT@host/util.c",
                       "CLOSED@host/proc.c", "EINVAL@upkit/util.lua" } do
    T.ok(seen[k], k .. " was found")
  end
end)

for _, p in ipairs(sources) do
  local rel = p:sub(#root + 2)
  local found = raised(p)
  if #found > 0 then
    T.test(rel .. " raises only documented codes", function()
      local bad = {}
      for _, r in ipairs(found) do
        if not codes[r.code] then bad[#bad + 1] = string.format("%s:%d: %s", rel, r.line, r.code) end
      end
      T.ok(#bad == 0, "codes not in docs/errors.md:\n  " .. table.concat(bad, "\n  "))
    end)
  end
end

T.done()
