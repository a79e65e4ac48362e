-- upkit.procedure.common: exit codes and small helpers the engine's files share.
local M = {}

M.EXIT_OK, M.EXIT_FAIL, M.EXIT_USAGE, M.EXIT_ABORT, M.EXIT_INTERRUPTED = 0, 1, 2, 3, 130

-- shell_quote(s): s as one /bin/sh word.
function M.shell_quote(s)
  s = tostring(s)
  if s:match("^[%w%./_=:,@%+%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.fmt_seconds(s)
  if s < 60 then return string.format("%.1fs", s) end
  return string.format("%dm%02ds", math.floor(s / 60), math.floor(s % 60))
end

-- errmsg(err): "message [CODE]" for an error object, tostring otherwise.
function M.errmsg(err)
  if type(err) == "table" and (err.message ~= nil or err.code ~= nil) then
    if err.code == nil then return tostring(err.message) end
    return string.format("%s [%s]", tostring(err.message or "error"), tostring(err.code))
  end
  return tostring(err)
end

-- errcode(err): the error's code, LUA_ERROR for anything that is not an error object.
function M.errcode(err)
  return require("upkit").is_error(err) and err.code or "LUA_ERROR"
end

-- list_text(names): "a, b and c"
function M.list_text(names)
  if #names <= 1 then return names[1] or "" end
  return table.concat(names, ", ", 1, #names - 1) .. " and " .. names[#names]
end

-- The edit distance between two short strings (for "did you mean").
function M.distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

return M
