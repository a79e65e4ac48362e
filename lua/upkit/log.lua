-- upkit.log: the one logger every module and procedure writes to.
--
--   local log = require "upkit.log"
--   log.info("copied %d files", n) ; log.warn(...) ; log.error(...) ; log.debug(...)
--   log.secret(value)      -- never print or store this value: shown as ***
--   log.redact(text)       -- text with every registered secret replaced
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

function M.redact(text)
  text = tostring(text)
  for _, s in ipairs(secrets) do
    if text:find(s, 1, true) then text = plain_gsub(text, s, "***") end
  end
  return text
end

function M.add_sink(fn) sinks[#sinks + 1] = fn return fn end

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
