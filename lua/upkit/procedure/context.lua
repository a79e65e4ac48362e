-- upkit.procedure.context: the ctx every step function receives.
--
--   ctx.params, ctx.state, ctx.run_dir, ctx.procedure, ctx.step, ctx.opts
--   ctx.before                  what the step's before(ctx) recorded (in run, undo)
--   ctx.log/info/warn/debug(fmt, ...), ctx.secret(value), ctx.isatty
--   ctx:cache(key, open)        the handle cached under key, opened by open(ctx) once
--   ctx:set_handle(key, value)  replace a cached handle (the old one is closed first)
--   ctx:close_handles()         close every cached handle (the engine does, when the run ends)
--
-- Handles are the fields whose name starts with "_" (ctx._api, ctx._db): an
-- assignment ctx._api = x goes through set_handle, so a handle is never
-- replaced without closing the old one, and every one still cached when the
-- run ends is closed, newest first. A value is closed when it has a close
-- method (connections, clients, processes); other values are only dropped.
local upkit = require "upkit"
local log = require "upkit.log"

local M = {}

local Ctx = {}
local handles = setmetatable({}, { __mode = "k" })   -- ctx -> { values = {}, order = {} }

local function closable(v)
  local t = type(v)
  if t ~= "table" and t ~= "userdata" then return nil end
  local ok, close = pcall(function() return v.close end)
  return ok and type(close) == "function" and close or nil
end

local function close_value(key, v)
  local close = closable(v)
  if not close then return end
  local ok, err = pcall(close, v)
  if not ok then log.warn("closing %s: %s", key, require("upkit.procedure.common").errmsg(err)) end
end

local function hkey(key)
  key = tostring(key)
  return key:sub(1, 1) == "_" and key or "_" .. key
end

function Ctx:set_handle(key, value)
  local h = handles[self]
  key = hkey(key)
  local old = h.values[key]
  if old ~= nil and old ~= value then close_value(key, old) end
  if old == nil and value ~= nil then h.order[#h.order + 1] = key end
  h.values[key] = value
  return value
end

function Ctx:cache(key, open)
  local v = handles[self].values[hkey(key)]
  if v == nil then v = self:set_handle(key, open(self)) end
  return v
end

function Ctx:close_handles()
  local h = handles[self]
  for i = #h.order, 1, -1 do
    local key = h.order[i]
    local v = h.values[key]
    h.values[key] = nil
    if v ~= nil then close_value(key, v) end
  end
  h.order = {}
end

local MT = {
  __index = function(self, k)
    if Ctx[k] then return Ctx[k] end
    if type(k) == "string" and k:sub(1, 1) == "_" then return handles[self].values[k] end
    return nil
  end,
  __newindex = function(self, k, v)
    if type(k) == "string" and k:sub(1, 1) == "_" then self:set_handle(k, v) else rawset(self, k, v) end
  end,
  __close = function(self) self:close_handles() end,
}

-- context.new(desc, params, state, run_dir, opts) -> ctx
function M.new(desc, params, state, run_dir, opts)
  local ctx = { params = params, state = state, run_dir = run_dir, procedure = desc.name, opts = opts }
  handles[ctx] = { values = {}, order = {} }
  ctx.log = function(fmt, ...) return log.info(fmt, ...) end
  ctx.info = ctx.log
  ctx.warn = function(fmt, ...) return log.warn(fmt, ...) end
  ctx.debug = function(fmt, ...) return log.debug(fmt, ...) end
  ctx.secret = function(v) return log.secret(v) end
  ctx.isatty = upkit.isatty(1)
  return setmetatable(ctx, MT)
end

return M
