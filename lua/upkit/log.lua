-- upkit.log: the one logger every module and procedure writes to.
--
--   local log = require "upkit.log"
--   log.info("copied %d files", n) ; log.warn(...) ; log.error(...) ; log.debug(...)
--   log.secret(value)      -- never print or store this value: shown as ***
--   log.redact(text)       -- text with every registered secret replaced, and the
--                          -- values of Password=/PWD= in connection strings
--   log.connection_secrets(text) -- register the passwords inside a connection string
--   log.add_sink(fn)       -- fn(record) where record = { time, level, msg, step? }
--   log.remove_sink(fn)
--
-- With no sink added, warnings and errors go to standard error. The procedure
-- engine adds the run's log file, the console and the JSON output as sinks.
local M = {}

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }
M.LEVELS = LEVELS

local secrets = {}
local sinks = {}
M.context = {}  -- fields added to every record (the engine sets step)

function M.secret(value)
  if type(value) == "string" and #value >= 3 then
    for _, s in ipairs(secrets) do if s == value then return value end end
    secrets[#secrets + 1] = value
    table.sort(secrets, function(a, b) return #a > #b end)
  end
  return value
end

-- log.replace_plain(text, find, repl): every occurrence of the plain string find replaced.
local function plain_gsub(text, find, repl)
  local out, i = {}, 1
  while true do
    local a, b = text:find(find, i, true)
    if not a then break end
    out[#out + 1] = text:sub(i, a - 1)
    out[#out + 1] = repl
    i = b + 1
  end
  out[#out + 1] = text:sub(i)
  return table.concat(out)
end

M.replace_plain = plain_gsub

-- Case-insensitive Lua patterns of the password keys of ODBC and ADO.NET
-- connection strings, each at the start of a word.
local function nocase(word)
  return (word:gsub("%a", function(c) return "[" .. c:upper() .. c:lower() .. "]" end))
end
local PASSWORD_KEYS = { nocase("password"), nocase("pwd") }

-- Each password value in text: calls fn(first, last) with its byte range.
local function each_password(text, fn)
  for _, key in ipairs(PASSWORD_KEYS) do
    local init = 1
    while true do
      local _, e = text:find("%f[%w]" .. key .. "%s*=%s*", init)
      if not e then break end
      local first, last = e + 1, nil
      if text:sub(first, first) == "{" then
        local i = first + 1
        while i <= #text do
          if text:sub(i, i) == "}" then
            if text:sub(i + 1, i + 1) == "}" then i = i + 2 else break end
          else i = i + 1 end
        end
        last = math.min(i, #text)
      else
        last = (text:find(";", first, true) or #text + 1) - 1
      end
      if last >= first then fn(first, last) end
      init = last + 1
    end
  end
end

-- log.connection_secrets(text): the passwords inside a connection string
-- become secrets (never printed or stored, wherever they appear).
function M.connection_secrets(text)
  if type(text) ~= "string" then return end
  each_password(text, function(first, last)
    local v = text:sub(first, last)
    M.secret(v)
    local inner = v:match("^{(.*)}$")
    if inner then M.secret((inner:gsub("}}", "}"))) end
  end)
end

function M.redact(text)
  text = tostring(text)
  for _, s in ipairs(secrets) do
    if text:find(s, 1, true) then text = plain_gsub(text, s, "***") end
  end
  local ranges = {}
  each_password(text, function(first, last)
    if text:sub(first, last) ~= "***" then ranges[#ranges + 1] = { first, last } end
  end)
  table.sort(ranges, function(a, b) return a[1] > b[1] end)
  for _, r in ipairs(ranges) do text = text:sub(1, r[1] - 1) .. "***" .. text:sub(r[2] + 1) end
  return text
end

function M.add_sink(fn) sinks[#sinks + 1] = fn return fn end

-- log.sink_count() -> how many sinks are registered
function M.sink_count() return #sinks end

function M.remove_sink(fn)
  for i = #sinks, 1, -1 do if sinks[i] == fn then table.remove(sinks, i) end end
end

local function iso_now()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end
M.iso_now = iso_now

local function emit(level, fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  msg = M.redact(msg)
  local rec = { time = iso_now(), level = level, msg = msg }
  for k, v in pairs(M.context) do rec[k] = v end
  if #sinks == 0 then
    if LEVELS[level] >= LEVELS.warn then io.stderr:write("upkit: ", level, ": ", msg, "\n") end
  else
    for _, s in ipairs(sinks) do s(rec) end
  end
  return msg
end
M.emit = emit

function M.debug(fmt, ...) return emit("debug", fmt, ...) end
function M.info(fmt, ...) return emit("info", fmt, ...) end
function M.warn(fmt, ...) return emit("warn", fmt, ...) end
function M.error(fmt, ...) return emit("error", fmt, ...) end

return M
