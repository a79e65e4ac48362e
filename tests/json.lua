-- upkit.json: round trips, null, array/object marks, exact integers, and errors.
local T = require "upkit.test"
local json = require "upkit.json"

T.test("decode gives Lua values for every JSON type", function()
  local v = json.decode('{"a":1,"b":[true,false,null],"c":"x\\u00e9","d":1.5,"e":{}}')
  T.eq(v.a, 1)
  T.eq(math.type(v.a), "integer")
  T.eq(v.b[1], true)
  T.eq(v.b[2], false)
  T.eq(v.b[3], json.null)
  T.eq(#v.b, 3)
  T.eq(v.c, "xé")
  T.eq(v.d, 1.5)
  T.eq(json.kind(v.e), "object")
  T.eq(json.kind(v.b), "array")
end)

T.test("encode sorts keys so output is stable", function()
  T.eq(json.encode({ b = 1, a = 2, c = { z = 1, y = 2 } }), '{"a":2,"b":1,"c":{"y":2,"z":1}}')
end)

T.test("encode pretty prints with indentation", function()
  local s = json.encode({ a = { 1, 2 } }, { pretty = true })
  T.match(s, "\n")
  T.eq(json.decode(s).a[2], 2)
end)

T.test("json.null survives a round trip", function()
  local s = json.encode({ x = json.null, list = { 1, json.null, 3 } })
  T.eq(s, '{"list":[1,null,3],"x":null}')
  local back = json.decode(s)
  T.eq(back.x, json.null)
  T.eq(back.list[2], json.null)
end)

T.test("empty tables: object by default, array when marked, marks survive decode", function()
  T.eq(json.encode({}), "{}")
  T.eq(json.encode(json.array()), "[]")
  T.eq(json.encode(json.object({})), "{}")
  T.eq(json.encode({ items = json.array({}) }), '{"items":[]}')
  T.eq(json.encode(json.decode('{"Items":[],"Links":{}}')), '{"Items":[],"Links":{}}')
end)

T.test("integers up to 2^53 are exact both ways", function()
  for _, n in ipairs { 0, -1, 2147483648, 4294967296, 9007199254740992, -9007199254740992 } do
    local s = json.encode(n)
    T.eq(s, tostring(n))
    local back = json.decode(s)
    T.eq(back, n)
    T.eq(math.type(back), "integer")
  end
end)

T.test("64-bit integers beyond 2^53 encode exactly", function()
  T.eq(json.encode(9223372036854775807), "9223372036854775807")
  T.eq(json.encode({ 9007199254740993 }), "[9007199254740993]")
end)

T.test("floats round-trip", function()
  for _, x in ipairs { 0.1, 1e300, -2.5e-10, 3.141592653589793 } do
    T.eq(json.decode(json.encode(x)), x)
  end
end)

T.test("non-BMP text round-trips, escapes decode to UTF-8", function()
  local s = "emoji \u{1F600} and \u{10FFFF}"
  T.eq(json.decode(json.encode(s)), s)
  T.eq(json.decode('"\\ud83d\\ude00"'), "\u{1F600}")
end)

T.test("decode errors give BAD_JSON with the byte offset", function()
  local e = T.raises("BAD_JSON", json.decode, '{"a":1,}')
  T.eq(e.offset, 7)
  T.contains(e.message, "trailing comma at offset 7")
  e = T.raises("BAD_JSON", json.decode, '{"a": tru}')
  T.eq(e.offset, 6)
  T.contains(e.message, "offset 6")
  T.raises("BAD_JSON", json.decode, "")
  T.raises("BAD_JSON", json.decode, "[1,2")
  e = T.raises("BAD_JSON", json.decode, "[1] x")
  T.contains(e.message, "after the value")
  T.eq(e.offset, 4)
end)

T.test("invalid UTF-8 is rejected both ways", function()
  local e = T.raises("BAD_JSON", json.decode, '"ab\xff"')
  T.contains(e.message, "UTF-8")
  T.eq(e.offset, 3)
  T.raises("BAD_JSON", json.decode, '"\xc0\xaf"')          -- overlong
  T.raises("BAD_JSON", json.decode, '"\xed\xa0\x80"')      -- surrogate
  e = T.raises("EINVAL", json.encode, { name = "bad\xfe" })
  T.contains(e.message, "$.name")
end)

T.test("a wrong argument is an EINVAL error object, not a string", function()
  local e = T.raises("EINVAL", json.decode, nil)
  T.contains(e.message, "json.decode")
  T.raises("EINVAL", json.decode, "1", { strict = false })
  T.raises("EINVAL", json.array, 5)
  T.raises("EINVAL", json.kind, "x")
end)

T.test("non-finite numbers are refused by encode", function()
  local e = T.raises("EINVAL", json.encode, { x = 1 / 0 })
  T.contains(e.message, "non-finite")
  T.raises("EINVAL", json.encode, 0 / 0)
  T.raises("EINVAL", json.encode, -math.huge)
end)

T.test("deep nesting is bounded instead of crashing", function()
  local deep = string.rep("[", 100000) .. string.rep("]", 100000)
  T.raises("BAD_JSON", json.decode, deep)
  local t = {}
  local cur = t
  for _ = 1, 5000 do cur[1] = {} cur = cur[1] end
  local e = T.raises("EINVAL", json.encode, t)
  T.contains(e.message, "nesting")
  local ok = json.decode(string.rep("[", 500) .. string.rep("]", 500))
  T.eq(type(ok), "table")
end)

T.test("cycles are refused naming the path", function()
  local a = { name = "a" }
  a.self = a
  local e = T.raises("EINVAL", json.encode, a)
  T.contains(e.message, "cycle at $.self")
end)

T.test("tables that are not JSON shaped are refused", function()
  T.raises("EINVAL", json.encode, { 1, 2, x = 3 })
  T.raises("EINVAL", json.encode, { [1] = 1, [3] = 3 })
  T.raises("EINVAL", json.encode, { [1.5] = 1 })
  T.raises("EINVAL", json.encode, { f = print })
  T.raises("EINVAL", json.encode, {}, { pretty = true, colour = 1 })
  T.raises("EINVAL", json.encode, {}, { pretty = "yes" })
end)

T.test("a large document round-trips", function()
  local items = {}
  for i = 1, 20000 do items[i] = { Id = "Machines-" .. i, IsDisabled = (i % 2 == 0), N = i } end
  local back = json.decode(json.encode({ Items = items }))
  T.eq(#back.Items, 20000)
  T.eq(back.Items[20000].Id, "Machines-20000")
end)

T.done()
