-- upkit.json against RFC 8259, case by case. Written for upkit, in the
-- categories public JSON test suites use: y_ must be accepted (with the
-- value given), n_ must be refused with BAD_JSON, i_ is where the RFC lets
-- an implementation choose; upkit's choice is asserted and documented in
-- host/json.c. Every accepted document must encode back and decode to the
-- same value.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"

local null = json.null

-- Deep equality that tells integers from floats and keeps every byte.
local same = require("exact").same

local y = {
  -- structure
  { "empty object", "{}", {} },
  { "empty array", "[]", {} },
  { "array of every literal", "[true,false,null]", { true, false, null } },
  { "nested", '{"a":[{"b":{}}]}', { a = { { b = {} } } } },
  { "white space of all four kinds", ' \t\r\n[ \t\r\n1 \t\r\n, 2 ]\n', { 1, 2 } },
  { "a scalar at top level", "3", 3 },
  { "a string at top level", '"x"', "x" },
  { "null at top level", "null", null },
  { "duplicate keys: the last wins (i_ in suites; chosen)", '{"a":1,"a":2}', { a = 2 } },
  { "empty key", '{"":1}', { [""] = 1 } },
  -- numbers
  { "zero", "0", 0 },
  { "negative zero", "-0", 0 },
  { "integer", "123", 123 },
  { "negative integer", "-123", -123 },
  { "fraction", "1.5", 1.5 },
  { "exponent", "1e3", 1000 },
  { "exponent with sign", "1E-2", 0.01 },
  { "exponent with plus", "2e+2", 200 },
  { "fraction and exponent", "-1.25e1", -12.5 },
  { "zero fraction", "0.0", 0 },
  { "largest 64-bit integer", "9223372036854775807", math.maxinteger },
  { "smallest 64-bit integer", "-9223372036854775808", math.mininteger },
  { "an integer past 64 bits becomes a float", "18446744073709551616", 18446744073709551616.0 },
  { "a tiny number underflows to zero", "1e-400", 0 },
  { "large float", "1.7976931348623157e308", 1.7976931348623157e308 },
  -- strings
  { "every simple escape", '"\\"\\\\\\/\\b\\f\\n\\r\\t"', "\"\\/\b\f\n\r\t" },
  { "unicode escape", '"\\u00e9"', "é" },
  { "upper-case hex", '"\\u00E9"', "é" },
  { "escaped NUL kept", '"a\\u0000b"', "a\0b" },
  { "NUL in a key kept apart from the key without it", '{"k\\u0000x":1,"k":2}', { ["k\0x"] = 1, k = 2 } },
  { "surrogate pair", '"\\ud834\\udd1e"', "\u{1D11E}" },
  { "raw UTF-8 of every length", '"aé€\u{1F600}"', "aé€\u{1F600}" },
  { "DEL is not a control character", '"\127"', "\127" },
  { "U+FFFF", '"\\uffff"', "\u{FFFF}" },
  { "escaped U+2028", '"\\u2028"', "\u{2028}" },
  { "long string", '"' .. string.rep("x", 100000) .. '"', string.rep("x", 100000) },
}

local n = {
  -- structure
  { "empty text", "" },
  { "only white space", "  " },
  { "trailing comma in an array", "[1,]" },
  { "trailing comma in an object", '{"a":1,}' },
  { "leading comma", "[,1]" },
  { "double comma", "[1,,2]" },
  { "missing comma", "[1 2]" },
  { "unclosed array", "[1" },
  { "unclosed object", '{"a":1' },
  { "extra closing bracket", "[1]]" },
  { "two values", "1 2" },
  { "trailing garbage", "{} x" },
  { "colon in an array", "[1:2]" },
  { "missing colon", '{"a" 1}' },
  { "missing value", '{"a":}' },
  { "unquoted key", "{a:1}" },
  { "single-quoted string", "['a']" },
  { "number as key", "{1:1}" },
  { "comment", "[1] // c" },
  { "block comment", "/* c */ 1" },
  { "byte order mark", "\xEF\xBB\xBF[]" },
  { "form feed as white space", "[\f1]" },
  { "vertical tab as white space", "[\v1]" },
  { "NUL as white space", "[\0 1]" },
  { "NUL after the value", "1\0" },
  { "non-breaking space as white space", "[\xC2\xA01]" },
  -- literals
  { "capitalised true", "True" },
  { "truncated literal", "tru" },
  { "literal with extra letters", "nulll" },
  { "NaN", "NaN" },
  { "Infinity", "Infinity" },
  { "negative Infinity", "-Infinity" },
  { "undefined", "undefined" },
  -- numbers
  { "leading zero", "01" },
  { "negative leading zero", "-01" },
  { "dot without fraction", "1." },
  { "dot without integer", ".5" },
  { "negative dot without integer", "-.5" },
  { "plus sign", "+1" },
  { "lone minus", "-" },
  { "exponent without digits", "1e" },
  { "exponent sign without digits", "1e+" },
  { "hex number", "0x10" },
  { "number out of range", "1e400" },
  { "negative number out of range", "-1e400" },
  { "number followed by a letter", "1a" },
  { "comma as decimal point", "[1,5e]" },
  -- strings
  { "unterminated string", '"abc' },
  { "raw newline in a string", '"a\nb"' },
  { "raw tab in a string", '"a\tb"' },
  { "raw NUL in a string", '"a\0b"' },
  { "invalid escape", '"\\x41"' },
  { "escaped apostrophe", "\"\\'\"" },
  { "invalid unicode escape", '"ab\\uZZZZcd"' },
  { "short unicode escape", '"\\u12"' },
  { "lone high surrogate", '"\\ud800"' },
  { "lone low surrogate", '"\\udc00"' },
  { "high surrogate then a letter", '"\\ud800x"' },
  { "two high surrogates", '"\\ud800\\ud800"' },
  { "invalid UTF-8 byte", '"\xFF"' },
  { "overlong encoding", '"\xC0\xAF"' },
  { "encoded surrogate", '"\xED\xA0\x80"' },
  { "code point past U+10FFFF", '"\xF4\x90\x80\x80"' },
  { "truncated UTF-8", '"\xE2\x82"' },
  { "lone continuation byte", '"\x80"' },
  { "backslash at the end", '"\\' },
  -- depth
  { "nesting past 1000", string.rep("[", 1001) .. string.rep("]", 1001) },
}

for _, c in ipairs(y) do
  T.test("y_ " .. c[1], function()
    local v = json.decode(c[2])
    T.ok(same(v, c[3]), "decoded value differs")
    T.ok(same(json.decode(json.encode(v)), v), "does not encode back to the same value")
  end)
end

for _, c in ipairs(n) do
  T.test("n_ " .. c[1], function()
    local e = T.raises("BAD_JSON", json.decode, c[2])
    T.eq(math.type(e.offset), "integer")
    T.ok(e.offset >= 0 and e.offset <= #c[2], "offset within the text")
    T.contains(e.message, "offset " .. e.offset)
  end)
end

T.test("i_ nesting of 1000 levels is accepted, and the encoder has the same limit", function()
  local v = json.decode(string.rep("[", 1000) .. string.rep("]", 1000))
  T.eq(type(v), "table")
  T.eq(json.encode(v), string.rep("[", 1000) .. string.rep("]", 1000))
  T.raises("EINVAL", json.encode, { v })
end)

T.test("offsets name the offending byte", function()
  T.eq(T.raises("BAD_JSON", json.decode, '["ab\\uZZZZcd"]').offset, 4)
  T.eq(T.raises("BAD_JSON", json.decode, "[1,\n 01]").offset, 5)
  T.eq(T.raises("BAD_JSON", json.decode, '{"a":"x\ny"}').offset, 7)
  T.eq(T.raises("BAD_JSON", json.decode, "\xEF\xBB\xBF{}").offset, 0)
  T.contains(T.raises("BAD_JSON", json.decode, "\xEF\xBB\xBF{}").message, "byte order mark")
end)

T.test("strings with NULs encode and decode exactly", function()
  local v = { ["a\0b"] = "x\0y\0", list = { "\0" } }
  local text = json.encode(v)
  T.eq(text, '{"a\\u0000b":"x\\u0000y\\u0000","list":["\\u0000"]}')
  T.ok(same(json.decode(text), v))
end)

T.test("a decoded thumbprint with a NUL is written back whole", function()
  local r = json.decode('{"Id":"Machines-1","Thumbprint":"AB\\u0000CD"}')
  T.eq(#r.Thumbprint, 5)
  T.contains(json.encode(r), '"Thumbprint":"AB\\u0000CD"')
end)

T.test("escape_bytes encodes any bytes losslessly and decodes them back", function()
  local s = "pipe\xff and \xc3 and caf\xc3\xa9 and \xed\xa0\x80 and \0"
  T.raises("EINVAL", json.encode, s)
  local text = json.encode({ msg = s, ["k\xfe"] = 1 }, { escape_bytes = true })
  T.contains(text, "pipe\\udcff")
  T.contains(text, "caf\xc3\xa9")  -- valid UTF-8 stays as it is
  -- the text is valid UTF-8 and valid JSON for any reader
  T.eq(utf8.len(text) ~= nil, true)
  local back = json.decode(text, { escape_bytes = true })
  T.eq(back.msg, s)
  T.eq(back["k\xfe"], 1)
  -- without the option the lone surrogates are refused, not guessed
  T.raises("BAD_JSON", json.decode, text)
  -- a real lone surrogate outside DC80..DCFF stays an error with the option
  T.raises("BAD_JSON", json.decode, '"\\udc41"', { escape_bytes = true })
  T.raises("BAD_JSON", json.decode, '"\\ud800"', { escape_bytes = true })
end)

T.test("control characters are escaped on encode", function()
  T.eq(json.encode("\1\31\n\t\"\\"), '"\\u0001\\u001f\\n\\t\\"\\\\"')
end)

T.done()
