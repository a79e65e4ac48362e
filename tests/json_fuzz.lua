-- A bounded-time fuzz of json.decode: random mutations of valid documents.
-- Whatever the input, decode returns a value or raises BAD_JSON (never a
-- crash, never another error); whatever it returns encodes without error
-- and decodes to the same value. `make check` runs this under ASan/UBSan.
-- UPKIT_FUZZ_SECONDS (default 4) bounds the time; UPKIT_FUZZ_SEED repeats a run.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local upkit = require "upkit"

local seconds = tonumber(os.getenv("UPKIT_FUZZ_SECONDS")) or 4
local seed = tonumber(os.getenv("UPKIT_FUZZ_SEED")) or os.time()
math.randomseed(seed)

local same = require("exact").same

local seeds = {
  '{"Id":"Machines-1","Name":"web01","IsDisabled":false,"Roles":["web","db"],"Thumbprint":"AB\\u0000CD"}',
  '[1,-0,2.5e10,-1.25E-3,9223372036854775807,18446744073709551616,0.1,1e-300]',
  '{"a":{"b":{"c":[[],{},[null,true,false]]}},"":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"}',
  '"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"',
  '{"Items":[{"Id":1},{"Id":2}],"TotalResults":2,"Links":{"Page.Next":null}}',
}

-- bytes that steer mutations toward the grammar's edges
local special = { '"', "\\", "u", "{", "}", "[", "]", ",", ":", "0", "1", "-", "+", ".", "e", "E",
  " ", "\t", "\n", "\0", "\x7f", "\x80", "\xbf", "\xc0", "\xc3", "\xe2", "\xed", "\xef", "\xf0",
  "\xf4", "\xf5", "\xff", "d8", "dc", "n", "t", "f" }

local function mutate(s)
  for _ = 1, math.random(1, 4) do
    local op, i = math.random(1, 5), math.random(1, #s + 1)
    if op == 1 then          -- replace a byte
      s = s:sub(1, i - 1) .. string.char(math.random(0, 255)) .. s:sub(i + 1)
    elseif op == 2 then      -- insert a special token
      s = s:sub(1, i - 1) .. special[math.random(#special)] .. s:sub(i)
    elseif op == 3 then      -- delete a run
      s = s:sub(1, i - 1) .. s:sub(i + math.random(1, 4))
    elseif op == 4 then      -- duplicate a run
      local j = math.min(#s, i + math.random(0, 8))
      s = s:sub(1, j) .. s:sub(i, j) .. s:sub(j + 1)
    else                     -- truncate
      s = s:sub(1, i)
    end
  end
  return s
end

T.test("decode never crashes and what it accepts round-trips (seed " .. seed .. ")", function()
  local deadline = upkit.now() + seconds
  local runs, accepted = 0, 0
  while upkit.now() < deadline do
    for _ = 1, 200 do
      local text = mutate(seeds[math.random(#seeds)])
      runs = runs + 1
      local ok, v = pcall(json.decode, text)
      if ok then
        accepted = accepted + 1
        local ok2, again = pcall(json.encode, v)
        if not ok2 then T.ok(false, string.format("accepted %q but cannot encode it: %s", text, tostring(again))) end
        if not same(json.decode(again), v) then T.ok(false, string.format("%q does not round-trip", text)) end
      elseif not (upkit.is_error(v) and v.code == "BAD_JSON" and math.type(v.offset) == "integer"
                  and v.offset >= 0 and v.offset <= #text) then
        T.ok(false, string.format("%q raised %s", text, tostring(v and v.code or v)))
      end
    end
  end
  T.ok(runs > 1000, "ran " .. runs .. " inputs")
  T.ok(accepted > 0, "some mutations stay valid")
end)

T.test("random byte strings round-trip through escape_bytes", function()
  local deadline = upkit.now() + seconds / 4
  local runs = 0
  while upkit.now() < deadline do
    local b = {}
    for i = 1, math.random(0, 40) do b[i] = string.char(math.random(0, 255)) end
    local s = table.concat(b)
    local text = json.encode({ s }, { escape_bytes = true })
    T.eq(json.decode(text, { escape_bytes = true })[1], s)
    runs = runs + 1
  end
  T.ok(runs > 100, "ran " .. runs .. " strings")
end)

T.done()
