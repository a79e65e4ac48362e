-- upkit.pretty: a readable rendering of Lua values, for the REPL, the
-- debugger and `upkit plan`.
--
--   pretty.format(value [, opts]) -> string
--   pretty.print(...)              -- each value formatted, tab-separated, one line feed
--
-- opts (all optional):
--   depth  = 5     tables nested deeper are shown as {...}
--   items  = 100   entries shown per table; the rest is counted: ... (n more)
--   string = 300   bytes shown per string; the rest is counted: ... (n bytes)
--   width  = 80    a table that fits in this many columns stays on one line
--   indent = "  "  one level of indentation
--   redact = nil   function(string) -> string applied to every string before
--                  it is quoted (log.redact: a secret holding a quote, a
--                  backslash or a tab is hidden before escapes could hide it)
--
-- Tables: the array part first, in order, then the other keys sorted
-- (numbers, then strings, then the rest by type and text). A table met again
-- inside itself is shown as <cycle N>, and the table it refers to is
-- labelled <N>. json.null is shown as null; strings are quoted with escapes;
-- other values (functions, handles) as tostring gives them. A file mode (an
-- integer from 0 to 07777 under the key `mode`, as fs.stat gives it) is
-- shown in octal with a leading zero: mode = 0644, not 420.
local M = {}

local DEFAULTS = { depth = 5, items = 100, string = 300, width = 80, indent = "  ", redact = false }
local OPTION_TYPES = { redact = "function" }

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do keywords[w] = true end

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not keywords[s]
end
M.is_identifier = is_identifier

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
                  ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f", ["\v"] = "\\v" }

-- Quote a string as a Lua literal; valid UTF-8 stays readable, other bytes
-- above 127 become \xHH.
local function quote(s)
  local body = s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\%d", c:byte())
  end)
  if not utf8.len(body) then
    body = body:gsub("[\128-\255]", function(c) return string.format("\\x%02X", c:byte()) end)
  end
  return '"' .. body .. '"'
end

-- Cut a string to at most max bytes, on a UTF-8 character boundary.
local function cut(s, max)
  local n = max
  while n > 0 and (s:byte(n + 1) or 0) >= 0x80 and (s:byte(n + 1) or 0) < 0xC0 do n = n - 1 end
  if n == 0 then n = max end
  return s:sub(1, n)
end

local function format_string(s, opts)
  if opts.redact then s = opts.redact(s) end
  if #s <= opts.string then return quote(s) end
  local head = cut(s, opts.string)
  return string.format("%s... (%d bytes)", quote(head), #s)
end

-- A file mode: an integer from 0 to 07777 under the key "mode".
local function is_mode(k, v)
  return k == "mode" and math.type(v) == "integer" and v >= 0 and v <= 4095
end

local type_rank = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    local ra, rb = type_rank[ta] or 4, type_rank[tb] or 4
    if ra ~= rb then return ra < rb end
    return ta < tb
  end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function json_null()
  local ok, json = pcall(require, "upkit.json")
  return ok and type(json) == "table" and json.null or nil
end

function M.format(value, opts)
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  if opts then
    for k, v in pairs(opts) do
      if DEFAULTS[k] == nil then
        require("upkit").error("EINVAL", string.format("pretty.format: unknown option '%s'", tostring(k)))
      end
      local want = OPTION_TYPES[k] or type(DEFAULTS[k])
      if type(v) ~= want then
        require("upkit").error("EINVAL", string.format("pretty.format: option '%s' must be a %s, not a %s",
                                                       k, want, type(v)))
      end
      o[k] = v
    end
  end
  local null = json_null()
  local path = {}     -- tables being rendered: table -> its label slot
  local labels = {}   -- table -> label number, for tables a cycle points to
  local nlabels = 0

  local render

  local function render_key(k)
    if is_identifier(k) then return k end
    return "[" .. render(k, math.huge, "") .. "]"
  end

  -- Render a value; level is the nesting (1 = top), ind the indentation of its line.
  function render(v, level, ind)
    local t = type(v)
    if t == "string" then return format_string(v, o) end
    if t == "number" then
      if math.type(v) == "integer" then return tostring(v) end
      if v ~= v then return "nan" end
      return tostring(v)
    end
    if null ~= nil and rawequal(v, null) then return "null" end
    if t ~= "table" then return tostring(v) end
    if path[v] then
      if not labels[v] then nlabels = nlabels + 1; labels[v] = nlabels end
      return "\0C" .. labels[v] .. "\0"
    end
    if next(v) == nil then return "{}" end
    if level > o.depth then return "{...}" end
    path[v] = true
    local n = 0
    while rawget(v, n + 1) ~= nil do n = n + 1 end
    local keys = {}
    for k in next, v do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, key_less)
    local parts, shown, total = {}, 0, n + #keys
    local inner = ind .. o.indent
    for i = 1, n do
      if shown >= o.items then break end
      parts[#parts + 1] = render(rawget(v, i), level + 1, inner)
      shown = shown + 1
    end
    for _, k in ipairs(keys) do
      if shown >= o.items then break end
      local val = rawget(v, k)
      parts[#parts + 1] = render_key(k) .. " = " .. (is_mode(k, val) and string.format("0%03o", val)
                                                      or render(val, level + 1, inner))
      shown = shown + 1
    end
    if shown < total then parts[#parts + 1] = string.format("... (%d more)", total - shown) end
    path[v] = nil
    local label = labels[v] and ("\0L" .. labels[v] .. "\0") or ""
    local one = label .. "{ " .. table.concat(parts, ", ") .. " }"
    if #ind + (utf8.len(one) or #one) <= o.width and not one:find("\n", 1, true) then return one end
    local lines = { label .. "{" }
    for _, p in ipairs(parts) do lines[#lines + 1] = inner .. p .. "," end
    lines[#lines + 1] = ind .. "}"
    return table.concat(lines, "\n")
  end

  local out = render(value, 1, "")
  if nlabels == 0 then return out end
  -- Number the labels in reading order; quoted strings never hold a \0.
  local number, n = {}, 0
  for id in out:gmatch("%zL(%d+)%z") do n = n + 1; number[id] = n end
  out = out:gsub("%zL(%d+)%z", function(id) return "<" .. number[id] .. ">" end)
  return (out:gsub("%zC(%d+)%z", function(id) return "<cycle " .. number[id] .. ">" end))
end

function M.print(...)
  local n = select("#", ...)
  local out = {}
  for i = 1, n do out[i] = M.format((select(i, ...))) end
  io.stdout:write(table.concat(out, "\t"), "\n")
end

return M
