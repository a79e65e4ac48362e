-- upkit.procedure.checks: what a step needs from outside and its check,
-- verified before the first change (and by --check, one line per step), and
-- the one confirmation before the first change.
--
-- A step's needs (a table, or a function(ctx) returning one):
--   programs = { "msiexec", "/usr/bin/tar" }   found on PATH (or at that path)
--   files    = { path, ... }                   exist and can be read
--   folders  = { path, ... }                   exist and are folders
--   urls     = { url, ... }                    answer HEAD (or GET) with a status below 400
--   free     = { { path = p, bytes = n }, ... } at least n bytes free where p is
local upkit = require "upkit"
local log = require "upkit.log"
local fs = require "upkit.fs"
local lfs = require "lfs"
local C = require "upkit.procedure.common"
local O = require "upkit.procedure.options"

local M = {}

local function find_program(name)
  return require("upkit.proc").which(name) ~= nil
end

local function url_problem(c, url)
  local ok, r = pcall(c.request, c, { method = "HEAD", url = url })
  if ok and (r.status == 405 or r.status == 501) then
    ok, r = pcall(c.request, c, { method = "GET", url = url, headers = { Range = "bytes=0-0" } })
  end
  if not ok then return string.format("%s cannot be reached: %s", url, C.errmsg(r)) end
  if r.status >= 400 then return string.format("%s answered HTTP %d", url, r.status) end
end

local function list(v) return type(v) == "table" and v or { v } end

-- The problems with a step's needs (a list, empty when everything is there).
function M.needs_problems(step, ctx)
  local needs = step.needs
  if type(needs) == "function" then needs = needs(ctx) end
  local problems = {}
  if type(needs) ~= "table" then return problems end
  for _, p in ipairs(list(needs.programs or {})) do
    if not find_program(tostring(p)) then problems[#problems + 1] = string.format("program '%s' not found", p) end
  end
  for _, p in ipairs(list(needs.files or {})) do
    local f = io.open(tostring(p), "rb")
    if not f or lfs.attributes(tostring(p), "mode") ~= "file" then
      problems[#problems + 1] = string.format("file '%s' is missing or cannot be read", p)
    end
    if f then f:close() end
  end
  for _, p in ipairs(list(needs.folders or {})) do
    if lfs.attributes(tostring(p), "mode") ~= "directory" then
      problems[#problems + 1] = string.format("folder '%s' is missing", p)
    end
  end
  local urls = list(needs.urls or {})
  if #urls > 0 then
    local c <close> = require("upkit.http").client { timeout = 10, retries = 0 }  -- one client: its connections reused
    for _, u in ipairs(urls) do
      local why = url_problem(c, tostring(u))
      if why then problems[#problems + 1] = why end
    end
  end
  for _, f in ipairs(needs.free or {}) do
    local ok, free = pcall(fs.free, tostring(f.path))
    if not ok then problems[#problems + 1] = string.format("free space of '%s': %s", f.path, C.errmsg(free))
    elseif free < (tonumber(f.bytes) or 0) then
      problems[#problems + 1] = string.format("'%s' has %d MB free; %d MB needed", f.path, free // 1000000,
                                              (tonumber(f.bytes) or 0) // 1000000)
    end
  end
  return problems
end

-- One step's needs and check: nil when good, else the reason.
local function check_step(s, ctx)
  local ok, problems = xpcall(M.needs_problems, function(e) return e end, s, ctx)
  if not ok then
    if upkit.is_error(problems) and problems.code == "INTERRUPTED" then error(problems, 0) end
    return C.errmsg(problems), problems
  end
  if #problems > 0 then return table.concat(problems, "; ") end
  if s.check then
    local cok, res = xpcall(s.check, function(e) return e end, ctx)
    if not cok then
      if upkit.is_error(res) and res.code == "INTERRUPTED" then error(res, 0) end
      return C.errmsg(res), res
    end
    if res == false then return "check returned false" end
  end
  return nil
end

--[[
checks.run(desc, ctx, sel, print) -> failures { { step, message, error } }:
the needs and check of every step that will run (sel[name] == true). With
print, one line per step, those with nothing to check too.
]]
function M.run(desc, ctx, sel, print_lines)
  local failures = {}
  local w = O.name_width(desc.steps, 24)
  for _, s in ipairs(desc.steps) do
    if sel[s.name] == true then
      log.context.step = s.name
      ctx.step = s.name
      local why, err = check_step(s, ctx)
      log.context.step = nil
      if print_lines then
        local line = why and ("FAILED: " .. why) or ((s.check or s.needs) and "ok" or "ok (nothing to check)")
        io.stdout:write(log.redact(string.format("  check %-" .. w .. "s %s\n", s.name, line)))
        io.stdout:flush()
      end
      if why then failures[#failures + 1] = { step = s.name, message = why, error = err } end
    elseif print_lines then
      io.stdout:write(string.format("  check %-" .. w .. "s skipped (%s)\n", s.name, tostring(sel[s.name])))
    end
  end
  ctx.step = nil
  return failures
end

local function ask(question)
  io.stdout:write(question)
  io.stdout:flush()
  return io.stdin:read("l")
end
M.ask = ask

-- The steps that will change something: those that confirm or say changes = true.
function M.changing(desc, sel)
  local out = {}
  for _, s in ipairs(desc.steps) do
    if sel[s.name] == true and not s.on_failure and (s.confirm or s.changes) then out[#out + 1] = s end
  end
  return out
end

--[[
checks.confirm(desc, ctx, sel, opts) -> true to go on. Asked once, before the
first change, when a step that will run has confirm: lists every step that
will change something. The answer is "yes", or the phrase a confirm
function gives (the first such).
]]
function M.confirm(desc, ctx, sel, opts)
  local asking, phrase = false, "yes"
  for _, s in ipairs(desc.steps) do
    if sel[s.name] == true and s.confirm and not s.on_failure then
      asking = true
      if type(s.confirm) == "function" and phrase == "yes" then
        ctx.step = s.name
        phrase = tostring(s.confirm(ctx))
        ctx.step = nil
      end
    end
  end
  if not asking then return true end
  if opts.yes then log.info("the changes were confirmed by --yes") return true end
  io.stdout:write(string.format("\n%s will change:\n", desc.name))
  for _, s in ipairs(M.changing(desc, sel)) do
    local q = type(s.confirm) == "string" and ("  " .. s.confirm) or ""
    io.stdout:write(log.redact(string.format("  - %s: %s%s\n", s.name, O.describe_step(s, ctx), q)))
  end
  local answer = ask(string.format("Nothing has changed yet. Type '%s' to continue: ", phrase))
  return answer ~= nil and answer:gsub("^%s+", ""):gsub("%s+$", "") == phrase
end

return M
