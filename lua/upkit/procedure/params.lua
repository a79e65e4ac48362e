-- upkit.procedure.params: a procedure's description checked, its parameters
-- resolved (--set, environment, config file, journal, default) and compared
-- with the journal's on resume, and config keys checked against every
-- procedure's parameters.
local upkit = require "upkit"
local json = require "upkit.json"
local log = require "upkit.log"
local fs = require "upkit.fs"
local lfs = require "lfs"
local C = require "upkit.procedure.common"

local M = {}

local TYPES = { string = true, number = true, boolean = true, path = true, secret = true, choice = true }
M.STEP_KEYS = { name = true, describe = true, run = true, check = true, done = true, undo = true,
                confirm = true, needs = true, needs_state = true, provides = true, before = true,
                changes = true, always = true, on_failure = true }
local FUNCTIONS = { "check", "done", "undo", "before" }
local LISTS = { "needs_state", "provides" }

-- Problems with the description itself (a programming error in the file).
function M.validate_description(desc)
  local problems = {}
  local function bad(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
  if type(desc.name) ~= "string" or desc.name == "" then bad("the procedure has no name") end
  if type(desc.steps) ~= "table" or #desc.steps == 0 then bad("the procedure has no steps") end
  if desc.state_summary ~= nil and type(desc.state_summary) ~= "function" then
    bad("state_summary must be a function")
  end
  local seen = {}
  for i, s in ipairs(desc.steps or {}) do
    local label = string.format("step %d", i)
    if type(s) ~= "table" then bad("%s is not a table", label) goto next end
    if type(s.name) ~= "string" or s.name == "" then bad("%s has no name", label)
    elseif seen[s.name] then bad("step name '%s' is used twice", s.name)
    else seen[s.name] = true; label = "step '" .. s.name .. "'" end
    if type(s.run) ~= "function" then bad("%s has no run function", label) end
    for _, f in ipairs(FUNCTIONS) do
      if s[f] ~= nil and type(s[f]) ~= "function" then bad("%s: %s must be a function", label, f) end
    end
    for _, f in ipairs(LISTS) do
      if s[f] ~= nil and type(s[f]) ~= "table" then bad("%s: %s must be a list of state keys", label, f) end
    end
    if s.needs ~= nil and type(s.needs) ~= "table" and type(s.needs) ~= "function" then
      bad("%s: needs must be a table or a function", label)
    end
    if s.always and s.on_failure then bad("%s: always and on_failure do not go together", label) end
    for k in pairs(s) do
      if not M.STEP_KEYS[k] then bad("%s: unknown field '%s'", label, tostring(k)) end
    end
    ::next::
  end
  local pseen = {}
  for i, p in ipairs(desc.params or {}) do
    if type(p) ~= "table" or type(p.name) ~= "string" then bad("parameter %d has no name", i)
    else
      if pseen[p.name] then bad("parameter '%s' is declared twice", p.name) end
      pseen[p.name] = true
      local t = p.type or "string"
      if not TYPES[t] then bad("parameter '%s' has unknown type '%s'", p.name, tostring(t)) end
      if t == "choice" and type(p.choices) ~= "table" then bad("parameter '%s' is a choice without choices", p.name) end
    end
  end
  return problems
end

function M.env_name(p)
  return p.env or ("UPKIT_" .. p.name:upper():gsub("[^%w]", "_"))
end

local TRUE = { ["true"] = true, yes = true, ["1"] = true, on = true }
local FALSE = { ["false"] = true, no = true, ["0"] = true, off = true }

-- Convert a raw value to the parameter's type; returns value or nil, problem.
local function convert(p, raw)
  local t = p.type or "string"
  if t == "number" then
    local n = tonumber(raw)
    if n == nil then return nil, string.format("parameter '%s' must be a number, got '%s'", p.name, tostring(raw)) end
    return n
  elseif t == "boolean" then
    if type(raw) == "boolean" then return raw end
    local s = tostring(raw):lower()
    if TRUE[s] then return true elseif FALSE[s] then return false end
    return nil, string.format("parameter '%s' must be true or false, got '%s'", p.name, tostring(raw))
  elseif t == "choice" then
    for _, c in ipairs(p.choices) do if tostring(c) == tostring(raw) then return c end end
    return nil, string.format("parameter '%s' must be one of %s, got '%s'", p.name,
                              table.concat(p.choices, ", "), tostring(raw))
  end
  if p.list and type(raw) == "table" then  -- a list parameter: { "a", "b" } in a config file is "a,b"
    for i, v in ipairs(raw) do
      if type(v) ~= "string" or v:find(",", 1, true) then
        return nil, string.format("parameter '%s': item %d must be a string without a comma", p.name, i)
      end
    end
    raw = table.concat(raw, ",")
  end
  if type(raw) ~= "string" and type(raw) ~= "number" then
    return nil, string.format("parameter '%s' must be a string, got a %s", p.name, type(raw))
  end
  raw = tostring(raw)
  if raw == "" and p.required then return nil, string.format("parameter '%s' must not be empty", p.name) end
  return raw
end

-- Load a config file: a Lua file returning a table (or setting globals), or JSON.
function M.load_config(path)
  local ok, text = pcall(fs.read, path)
  if not ok then return nil, string.format("cannot read config file '%s': %s", path, C.errmsg(text)) end
  if path:match("%.json$") then
    local jok, v = pcall(json.decode, text)
    if not jok then return nil, string.format("config file '%s': %s", path, C.errmsg(v)) end
    if type(v) ~= "table" then return nil, string.format("config file '%s' is not a JSON object", path) end
    return v
  end
  local env = setmetatable({}, { __index = _G })
  local chunk, lerr = load(text, "@" .. path, "t", env)
  if not chunk then return nil, string.format("config file %s", lerr) end
  local cok, ret = pcall(chunk)
  if not cok then return nil, string.format("config file '%s': %s", path, C.errmsg(ret)) end
  if type(ret) == "table" then return ret end
  local t = {}
  for k, v in pairs(env) do t[k] = v end
  return t
end

---------------------------------------------------------------------------
-- Config keys: known to some procedure, or a typo
---------------------------------------------------------------------------

-- Every parameter name some procedure could use: the string literals that
-- look like names in the procedure files of the library roots' scripts/
-- folders, beside the procedure being run, and the Lua library (and its
-- subfolders) that declares shared parameters. Read as text: no file is run.
local function known_names(path)
  local names = {}
  local function scan(dir, depth)
    if lfs.attributes(dir, "mode") ~= "directory" then return end
    for f in lfs.dir(dir) do
      local p = dir .. "/" .. f
      if f:match("%.lua$") then
        local ok, text = pcall(fs.read, p)
        if ok then
          for _, name in text:gmatch("([\"'])([%a_][%w_]*)%1") do names[name] = true end
        end
      elseif depth > 0 and f:sub(1, 1) ~= "." and lfs.attributes(p, "mode") == "directory" then
        scan(p, depth - 1)
      end
    end
  end
  for _, root in ipairs(upkit.roots()) do
    scan(root .. "/scripts", 0)
    scan(root .. "/lua/upkit", 2)
  end
  scan(path:match("^(.*)/[^/]*$") or ".", 0)
  return names
end

-- Config keys no procedure knows: problems "did you mean ...?".
local function unknown_config_keys(desc, config, path)
  local mine, strays = {}, {}
  for _, p in ipairs(desc.params or {}) do mine[p.name] = true; mine[p.name .. "_file"] = true end
  for k in pairs(config) do
    if type(k) ~= "string" or not mine[k] then strays[#strays + 1] = tostring(k) end
  end
  if #strays == 0 then return {} end
  table.sort(strays)
  local known = known_names(path)
  local problems = {}
  for _, k in ipairs(strays) do
    if not known[k] then
      local best, bestd = nil, math.max(2, #k // 4) + 1
      for name in pairs(mine) do
        local d = C.distance(k, name)
        if d < bestd or (d == bestd and best and name < best) then best, bestd = name, d end
      end
      problems[#problems + 1] = string.format("config key '%s' is not a parameter of %s or of any other " ..
        "procedure%s", k, desc.name, best and string.format(" (did you mean %s?)", best) or "")
    end
  end
  return problems
end

---------------------------------------------------------------------------
-- Resolving
---------------------------------------------------------------------------

--[[
Resolve parameters. sources = { config = table?, sets = { name = string },
getenv = function, path = procedure file, plan = true when secrets are not needed,
journal = the parameters a resumed run started with }.
Returns params, problems, origins. Precedence: --set, environment, config
file, journal, default. Secrets come only from the environment or from a file named
by NAME_file. The passwords inside string parameters (connection strings)
become secrets.
]]
function M.resolve(desc, sources)
  local params, problems, origins = {}, {}, {}
  local getenv = sources.getenv or os.getenv
  local config, sets, journal = sources.config or {}, sources.sets or {}, sources.journal or {}
  local known = {}
  for _, p in ipairs(desc.params or {}) do known[p.name] = p; known[p.name .. "_file"] = p end
  local setnames = {}
  for k in pairs(sets) do setnames[#setnames + 1] = k end
  table.sort(setnames)
  for _, k in ipairs(setnames) do
    if not known[k] then problems[#problems + 1] = string.format("--set %s: no such parameter", k) end
  end
  for _, p in ipairs(unknown_config_keys(desc, config, sources.path or ".")) do problems[#problems + 1] = p end
  local deferred = {}
  for _, p in ipairs(desc.params or {}) do
    local raw, origin
    local ev = getenv(M.env_name(p))
    if p.type == "secret" then
      if sets[p.name] ~= nil or config[p.name] ~= nil then
        problems[#problems + 1] = string.format(
          "secret '%s' must come from the environment (%s) or a file (%s_file), not the command line or config",
          p.name, M.env_name(p), p.name)
      end
      local file = sets[p.name .. "_file"] or config[p.name .. "_file"]
      if ev and ev ~= "" then raw, origin = ev, "environment " .. M.env_name(p)
      elseif file then
        local ok, d = pcall(fs.read, tostring(file))
        if ok then raw, origin = d:gsub("[\r\n]+$", ""), "file " .. file
        elseif not sources.plan then  -- a plan needs no secrets: a file it cannot read is no problem
          problems[#problems + 1] = string.format("secret '%s': cannot read '%s': %s", p.name, file, C.errmsg(d))
        end
      end
      if raw then log.secret(raw) end
    else
      if sets[p.name] ~= nil then raw, origin = sets[p.name], "--set"
      elseif ev ~= nil and ev ~= "" then raw, origin = ev, "environment " .. M.env_name(p)
      elseif config[p.name] ~= nil then raw, origin = config[p.name], "config"
      elseif journal[p.name] ~= nil then raw, origin = journal[p.name], "journal"
      end
      if type(raw) == "string" then log.connection_secrets(raw) end
    end
    if raw == nil then
      if type(p.default) == "function" then deferred[#deferred + 1] = p
      elseif p.default ~= nil then params[p.name], origins[p.name] = p.default, "default"
      elseif p.required and not (sources.plan and p.type == "secret") then
        local how = p.type == "secret"
          and string.format("set %s or give %s_file", M.env_name(p), p.name)
          or string.format("set it in the config file, with --set %s=..., or in %s", p.name, M.env_name(p))
        problems[#problems + 1] = string.format("missing parameter '%s' (%s)", p.name, how)
      end
    else
      local v, problem = convert(p, raw)
      if problem then problems[#problems + 1] = problem
      else params[p.name], origins[p.name] = v, origin end
    end
  end
  M.defaults(desc, params, origins, problems, deferred)
  return params, problems, origins
end

-- Derived defaults, then each parameter's validate.
function M.defaults(desc, params, origins, problems, deferred)
  for _, p in ipairs(deferred or {}) do
    if params[p.name] == nil then
      local ok, v = pcall(p.default, params)
      if not ok then problems[#problems + 1] = string.format("parameter '%s': default failed: %s", p.name, C.errmsg(v))
      else params[p.name], origins[p.name] = v, "default" end
    end
  end
  for _, p in ipairs(desc.params or {}) do
    if p.validate and params[p.name] ~= nil and origins[p.name] ~= "journal" then
      local ok, good, why = pcall(p.validate, params[p.name], params)
      if not ok then problems[#problems + 1] = string.format("parameter '%s': %s", p.name, C.errmsg(good))
      elseif not good then problems[#problems + 1] = string.format("parameter '%s': %s", p.name, why or "invalid value") end
    end
  end
end

-- Parameters safe to store and show: secrets left out, passwords redacted.
function M.public(desc, params)
  local out = {}
  for _, p in ipairs(desc.params or {}) do
    if p.type ~= "secret" and params[p.name] ~= nil then
      local v = params[p.name]
      out[p.name] = type(v) == "string" and log.redact(v) or v
    end
  end
  return out
end

--[[
On resume: the run keeps the parameters it started with. A value given now
(--set, environment, config) that differs from the journal's is a problem
unless allow names it. Returns changed = { name = { from, to } } and problems.
A value the journal kept redacted (a password inside it) must be given again.
]]
function M.keep_started(desc, params, origins, started, allow)
  local changed, problems = {}, {}
  for _, p in ipairs(desc.params or {}) do
    local name, was = p.name, started[p.name]
    local given = origins[name] and origins[name] ~= "default" and origins[name] ~= "journal"
    if p.type == "secret" or was == nil then goto next end
    local now = params[name]
    local shown = type(now) == "string" and log.redact(now) or now
    if given and shown ~= was then
      if allow[name] then
        changed[name] = { from = was, to = shown }
      else
        problems[#problems + 1] = string.format(
          "parameter '%s' was '%s' when the run started; now '%s' (from %s). A resumed run keeps its " ..
          "parameters: drop the new value, or allow the change with --allow-change %s",
          name, tostring(was), tostring(shown), origins[name], name)
      end
    elseif not given then
      if type(was) == "string" and was:find("=***", 1, true) then
        problems[#problems + 1] = string.format("parameter '%s' holds a password the journal does not keep: " ..
          "give it again as when the run started (--config or --set)", name)
      else
        local v = convert(p, was)
        if v ~= nil then params[name], origins[name] = v, "journal" end
      end
    end
    ::next::
  end
  for name in pairs(allow) do
    local found = false
    for _, p in ipairs(desc.params or {}) do if p.name == name then found = true end end
    if not found then problems[#problems + 1] = string.format("--allow-change %s: no such parameter", name) end
  end
  return changed, problems
end

return M
