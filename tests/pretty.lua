-- upkit.pretty: the rendering the REPL, the debugger and `upkit plan` show.
local T = require "upkit.test"
local pretty = require "upkit.pretty"
local json = require "upkit.json"
local hash = require "upkit.hash"

local f = pretty.format

T.test("scalars are shown as Lua literals", function()
  T.eq(f(nil), "nil")
  T.eq(f(true), "true")
  T.eq(f(42), "42")
  T.eq(f(1.5), "1.5")
  T.eq(f(2^63), "9.2233720368548e+18")
  T.eq(f(math.huge), "inf")
  T.eq(f(0 / 0), "nan")
  T.eq(f(math.mininteger), "-9223372036854775808")
end)

T.test("strings are quoted with escapes", function()
  T.eq(f("hi"), '"hi"')
  T.eq(f('a "q" \\ b'), [["a \"q\" \\ b"]])
  T.eq(f("line\nnext\ttab\r\0"), [["line\nnext\ttab\r\0"]])
  T.eq(f("\1\127"), [["\1\127"]])
  T.eq(f("héllo"), '"héllo"', "valid UTF-8 stays readable")
  T.eq(f("\255\254a"), [["\xFF\xFEa"]], "invalid UTF-8 bytes are escaped")
end)

T.test("json.null is shown as null", function()
  T.eq(f(json.null), "null")
  T.eq(f({ a = json.null, json.null }), "{ null, a = null }")
  T.eq(f(json.decode('{"x":null}')), "{ x = null }")
end)

T.test("empty tables", function()
  T.eq(f({}), "{}")
  T.eq(f({ {}, a = {} }), "{ {}, a = {} }")
end)

T.test("array part first in order, then the other keys sorted", function()
  local t = { "a", "b", "c", zeta = 1, alpha = 2, [10] = "ten", [-1] = "neg", [2.5] = "x",
              ["with space"] = 3, ["end"] = 4, [true] = "t", Beta = 5 }
  T.eq(f(t, { width = 1000 }),
       '{ "a", "b", "c", [-1] = "neg", [2.5] = "x", [10] = "ten", Beta = 5, alpha = 2, ' ..
       '["end"] = 4, ["with space"] = 3, zeta = 1, [true] = "t" }')
end)

T.test("the same table prints the same whatever the insertion order", function()
  local a, b = {}, {}
  for i = 1, 50 do a["k" .. i] = i end
  for i = 50, 1, -1 do b["k" .. i] = i end
  T.eq(f(a), f(b))
end)

T.test("a table wider than the width is laid out one entry per line", function()
  local t = { name = "server", nested = { list = { 1, 2, 3 },
              deep = { x = string.rep("x", 40), y = string.rep("y", 40) } } }
  T.eq(f(t), table.concat({
    "{",
    '  name = "server",',
    "  nested = {",
    "    deep = {",
    '      x = "' .. string.rep("x", 40) .. '",',
    '      y = "' .. string.rep("y", 40) .. '",',
    "    },",
    "    list = { 1, 2, 3 },",
    "  },",
    "}" }, "\n"))
  T.eq(f({ a = 1, b = 2 }, { width = 5, indent = "\t" }), "{\n\ta = 1,\n\tb = 2,\n}")
end)

T.test("nesting beyond the depth limit is shown as {...}", function()
  local t = { a = { b = { c = { d = { e = { f = { g = 1 } } } } } } }
  T.eq(f(t), "{ a = { b = { c = { d = { e = {...} } } } } }")
  T.eq(f(t, { depth = 2 }), "{ a = { b = {...} } }")
  T.eq(f({ a = {} }, { depth = 1 }), "{ a = {} }", "an empty table is shown at any depth")
end)

T.test("long arrays and tables are cut with a count of the rest", function()
  local big = {}
  for i = 1, 150 do big[i] = i end
  T.eq(f(big, { items = 5 }), "{ 1, 2, 3, 4, 5, ... (145 more) }")
  local s = f(big)
  T.contains(s, "100,\n  ... (50 more),")
  T.ok(not s:find("101", 1, true), "entries past the limit are not shown")
  local keys = {}
  for i = 1, 10 do keys["k" .. string.format("%02d", i)] = i end
  T.eq(f(keys, { items = 3 }), "{ k01 = 1, k02 = 2, k03 = 3, ... (7 more) }")
end)

T.test("long strings are cut with their length", function()
  local s = string.rep("a", 1000)
  T.eq(f(s, { string = 10 }), '"aaaaaaaaaa"... (1000 bytes)')
  T.eq(f(s), '"' .. string.rep("a", 300) .. '"... (1000 bytes)', "the default limit is 300 bytes")
  T.eq(f(string.rep("é", 10), { string = 5 }), '"éé"... (20 bytes)', "never inside a UTF-8 character")
  T.eq(f({ s = s }, { string = 4 }), '{ s = "aaaa"... (1000 bytes) }')
end)

T.test("a cycle is shown as a reference to the labelled table", function()
  local t = { name = "root" }
  t.self = t
  T.eq(f(t), '<1>{ name = "root", self = <cycle 1> }')
  local a, b = { name = "a" }, { name = "b" }
  a.child, b.parent = b, a
  b.me = b
  T.eq(f(a), '<1>{ child = <2>{ me = <cycle 2>, name = "b", parent = <cycle 1> }, name = "a" }')
end)

T.test("a table shared twice without a cycle is shown twice", function()
  local shared = { 1 }
  T.eq(f({ x = shared, y = shared }), "{ x = { 1 }, y = { 1 } }")
end)

T.test("cycles through keys do not loop", function()
  local t = {}
  t[t] = true
  T.match(f(t), "^<1>{ %[<cycle 1>%] = true }$")
end)

T.test("handles and functions are shown with tostring", function()
  local h = hash.new("sha256")
  T.eq(f(h), tostring(h))
  T.eq(f({ h = h }), "{ h = " .. tostring(h) .. " }")
  h:close()
  T.eq(f(print), tostring(print))
  local co = coroutine.create(print)
  T.eq(f(co), tostring(co))
end)

T.test("pretty.print writes the values tab-separated on one line", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/p.lua", [[
    local pretty = require "upkit.pretty"
    pretty.print(1, "two", { 3 }, nil)
    pretty.print()
  ]])
  local out, status = T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(dir .. "/p.lua"))
  T.eq(status, 0)
  T.eq(out, '1\t"two"\t{ 3 }\tnil\n\n')
end)

T.test("a file mode under the key mode is shown in octal: 0644, not 420", function()
  local fs = require "upkit.fs"
  local dir = T.tmpdir()
  fs.write(dir .. "/f", "x", { mode = "0640" })
  T.match(f(fs.stat(dir .. "/f")), "mode = 0640,")
  T.eq(f({ mode = 420 }), "{ mode = 0644 }")
  T.eq(f({ mode = 2541 }), "{ mode = 04755 }", "setuid bit kept")
  T.eq(f({ mode = 0 }), "{ mode = 0000 }")
  T.eq(f({ mode = 5000 }), "{ mode = 5000 }", "above 07777: not a mode, shown as a number")
  T.eq(f({ mode = "fast" }), '{ mode = "fast" }')
  T.eq(f({ size = 420 }), "{ size = 420 }", "other keys are numbers")
  T.eq(f(420), "420", "a bare number is a number")
end)

T.test("redact hides a secret holding a quote, a backslash or a tab before it is escaped", function()
  local log = require "upkit.log"
  local secret = 'pa"ss\\wo\trd'
  log.secret(secret)
  local out = f({ token = secret, url = "https://u:" .. secret .. "@h/" }, { redact = log.redact })
  T.eq(out, '{ token = "***", url = "https://u:***@h/" }')
  T.eq(log.redact(f(secret)), f(secret), "redacting after escaping misses it: why redact is an option")
  T.match(T.raises("EINVAL", f, {}, { redact = true }).message, "'redact' must be a function")
end)

T.test("an unknown or mistyped option is an EINVAL error naming it", function()
  T.match(T.raises("EINVAL", f, {}, { unknown = true }).message, "unknown option 'unknown'")
  T.match(T.raises("EINVAL", f, {}, { depth = "3" }).message, "'depth' must be a number")
end)

T.done()
