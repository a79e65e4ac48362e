-- upkit.procedure.journal: a run folder's journal (JSON lines, fsync'd per
-- record), its lock, and the reader that turns a journal back into what the
-- run did.
--
--   local j <close> = journal.open(run_dir)   -- locks the run folder (BUSY when
--                                             -- another process holds it), repairs a torn tail
--   j:write{ event = "step-done", step = "x", state = {...} }
--   journal.read(path) -> records           -- BAD_FORMAT naming the line for damage
--   journal.summary(records) -> what the run did
--   journal.storable(value) / journal.restore(value)   -- the byte-escaping of strings
--
-- A string that is not valid UTF-8 is stored losslessly as { ["$bytes"] = text }
-- where text has each byte that is not part of a UTF-8 character as \xNN and
-- each backslash doubled; the reader turns it back into the same bytes.
-- Every string is redacted (registered secrets, passwords inside connection
-- strings) before it is encoded, so a secret holding quotes or tabs is found.
local upkit = require "upkit"
local json = require "upkit.json"
local log = require "upkit.log"
local fs = require "upkit.fs"
local lfs = require "lfs"

local M = {}

local BYTES = "$bytes"

-- The string with the bytes outside UTF-8 characters as \xNN, backslashes doubled.
local function escape_bytes(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = s:byte(i)
    local len = b == 0 and 0 or b < 0x80 and 1 or b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC0 and 2 or 0
    local ch = len > 0 and s:sub(i, i + len - 1)
    if ch and #ch == len and utf8.len(ch) == 1 then
      out[#out + 1] = ch == "\\" and "\\\\" or ch
      i = i + len
    else
      out[#out + 1] = string.format("\\x%02X", b)
      i = i + 1
    end
  end
  return table.concat(out)
end

local function unescape_bytes(s)
  local out, i = {}, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == "\\" and s:sub(i + 1, i + 1) == "\\" then out[#out + 1] = "\\"; i = i + 2
    elseif c == "\\" and s:sub(i + 1, i + 1) == "x" and s:sub(i + 2, i + 3):match("^%x%x$") then
      out[#out + 1] = string.char(tonumber(s:sub(i + 2, i + 3), 16)); i = i + 4
    else out[#out + 1] = c; i = i + 1 end
  end
  return table.concat(out)
end

-- Valid UTF-8 without NUL bytes (kept as \x00 too, whatever the JSON encoder does with them).
local function valid_utf8(s) return utf8.len(s) ~= nil and not s:find("\0", 1, true) end

local function bad_value(where, what)
  upkit.error("EINVAL", string.format("%s holds %s, which a journal cannot keep (only strings, numbers, " ..
                                      "booleans and tables of them)", where, what))
end

-- storable(v [, where]) -> a copy of v that json.encode takes: redacted
-- strings, non-UTF-8 strings escaped, non-finite numbers refused (EINVAL).
local function storable(v, where, depth)
  where, depth = where or "value", depth or 0
  local t = type(v)
  if t == "string" then
    v = log.redact(v)
    if valid_utf8(v) then return v end
    return { [BYTES] = escape_bytes(v) }
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then bad_value(where, "a number that is not finite") end
    return v
  elseif t == "boolean" or v == json.null then return v
  elseif t == "table" then
    if depth > 100 then bad_value(where, "tables nested more than 100 deep") end
    local out, n = {}, #v
    for k, x in pairs(v) do
      local key = k
      if type(k) == "string" then
        key = log.redact(k)
        if not valid_utf8(key) then key = BYTES .. ":" .. escape_bytes(key) end
      elseif math.type(k) ~= "integer" or k < 1 or k > n then
        bad_value(where, "a key of type " .. type(k))
      end
      out[key] = storable(x, where .. "." .. tostring(k), depth + 1)
    end
    return out
  end
  bad_value(where, "a " .. t)
end
M.storable = storable

-- restore(v): the value storable(v) was made from (escaped strings back to bytes).
local function restore(v)
  if type(v) ~= "table" then return v end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n == 1 and type(v[BYTES]) == "string" then return unescape_bytes(v[BYTES]) end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" and k:sub(1, #BYTES + 1) == BYTES .. ":" then k = unescape_bytes(k:sub(#BYTES + 2)) end
    out[k] = restore(x)
  end
  return out
end
M.restore = restore

-- encode(rec): one JSON line (no newline) for a record, redacted and escaped.
function M.encode(rec)
  return json.encode(storable(rec, "record"))
end

---------------------------------------------------------------------------
-- The lock
---------------------------------------------------------------------------

-- A private file (0600) created if missing, without replacing one that is there.
local function create_private(path)
  if fs.exists(path) then return end
  fs.write(path, "", { mode = "0600" })
end

local LOCK_WIDTH = 120

-- lock(run_dir) -> the open lock file, or raises BUSY naming the owner. One
-- handle both locks and writes: closing any other descriptor of the file
-- would drop this process's lock (POSIX record locks).
local function lock(run_dir)
  local path = run_dir .. "/lock"
  create_private(path)
  local f, err = io.open(path, "r+")
  if not f then upkit.error("EACCES", string.format("cannot open the lock of run '%s': %s", run_dir, err)) end
  local ok, lerr = lfs.lock(f, "w")
  if not ok then
    local owner = (f:read("a") or ""):gsub("%s+$", "")
    f:close()
    local pid = owner:match("pid (%d+)")
    upkit.error("BUSY", string.format("run '%s' is in use by another upkit process (%s): wait for it to end",
                                      run_dir, owner ~= "" and owner or tostring(lerr)),
                { path = path, pid = tonumber(pid) })
  end
  -- the owner's pid and start, for the next process's message (a fixed
  -- width overwrites the previous owner's line)
  local line = string.format("pid %d, started %s", upkit.pid(), log.iso_now())
  f:seek("set", 0)
  f:write(line, string.rep(" ", LOCK_WIDTH - #line - 1), "\n")
  f:flush()
  return f
end

---------------------------------------------------------------------------
-- Writing
---------------------------------------------------------------------------

local Journal = {}
Journal.__index = Journal

local CHUNK = 4000   -- below the C library's smallest stream buffer

local function close_journal(self)
  if self.closed then return end
  self.closed = true
  for i = #self.closers, 1, -1 do pcall(self.closers[i]) end
  if self.f then pcall(self.f.close, self.f) self.f = nil end
  if self.lockf then pcall(lfs.unlock, self.lockf) pcall(self.lockf.close, self.lockf) self.lockf = nil end
end
Journal.close = close_journal
Journal.__close = close_journal
Journal.__gc = close_journal

-- journal:on_close(fn): run fn when the journal closes (newest first).
function Journal:on_close(fn) self.closers[#self.closers + 1] = fn end

-- Raise the error object of a failed journal write.
local function write_failed(self, err)
  local code = upkit.is_error(err) and err.code or "EIO"
  upkit.error(code, string.format("the journal '%s' could not be written: %s", self.path,
                                  upkit.is_error(err) and err.message or tostring(err)),
              { path = self.path, journal = true, errno = upkit.is_error(err) and err.errno or nil })
end

function Journal:write(rec)
  if not self.f then upkit.error("CLOSED", "the journal '" .. self.path .. "' is closed") end
  rec.time = rec.time or log.iso_now()
  local ok, line = pcall(M.encode, rec)
  if not ok then write_failed(self, line) end
  line = line .. "\n"
  -- pieces that fit the stream's buffer, each flushed by upkit.fsync, so a
  -- failed write is raised with its cause (ENOSPC, EFBIG...)
  for i = 1, #line, CHUNK do
    local pok, wok, werr = pcall(self.f.write, self.f, line:sub(i, i + CHUNK - 1))
    if not (pok and wok) then write_failed(self, upkit.new_error("EIO", tostring(pok and werr or wok))) end
    local sok, serr = pcall(upkit.fsync, self.f)
    if not sok then write_failed(self, serr) end
  end
end

-- journal.open(run_dir) -> journal: locked, its torn tail repaired, 0600.
function M.open(run_dir)
  local lockf = lock(run_dir)
  local path = run_dir .. "/journal.jsonl"
  local self = setmetatable({ path = path, lockf = lockf, closers = {} }, Journal)
  local ok, err = pcall(function()
    if fs.exists(path) then
      local text = fs.read(path)
      local _, keep = M.parse(text, path)
      if keep < #text then
        log.warn("journal '%s': the last line was torn (a killed run); removed it", path)
        fs.write(path, text:sub(1, keep), { mode = "0600" })
      elseif #text > 0 and text:sub(-1) ~= "\n" then
        fs.write(path, text .. "\n", { mode = "0600" })
      end
    else
      create_private(path)
    end
    local f, oerr = io.open(path, "a")
    if not f then upkit.error("EACCES", string.format("cannot open the journal '%s': %s", path, oerr)) end
    f:setvbuf("full", CHUNK)
    self.f = f
  end)
  if not ok then close_journal(self) error(err, 0) end
  return self
end

M.create_private = create_private

---------------------------------------------------------------------------
-- Reading
---------------------------------------------------------------------------

local function is_array_of(v, t)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if math.type(k) ~= "integer" or type(x) ~= t then return false end
  end
  return true
end

local function is_object(v)
  if type(v) ~= "table" then return false end
  for k in pairs(v) do if type(k) ~= "string" then return false end end
  return true
end

-- Field types of each record: "string", "number", "object", "strings", "any".
local FIELDS = {
  ["*"] = { event = "string", time = "string", step = "string", reason = "string", by = "string" },
  ["run-start"] = { procedure = "string", file = "string", file_sha256 = "string", steps = "strings",
                    params = "object", pid = "number" },
  ["resume"] = { procedure = "string", params = "object", changed = "object", rerun = "strings", pid = "number" },
  ["step-started"] = { before = "any" },
  ["step-done"] = { state = "object", seconds = "number" },
  ["step-failed"] = { error = "object", seconds = "number" },
  ["step-undone"] = { seconds = "number" },
  ["run-finished"] = { result = "string" },
  ["undo-finished"] = { result = "string" },
  ["undo-start"] = { procedure = "string", steps = "strings" },
}
local NEEDS = { ["run-start"] = { "procedure" }, ["step-started"] = { "step" }, ["step-done"] = { "step" },
                ["step-failed"] = { "step" }, ["step-undone"] = { "step" }, ["step-skipped"] = { "step" },
                ["run-finished"] = { "result" } }

local function check_type(v, want)
  if want == "any" then return true end
  if want == "object" then return is_object(v) end
  if want == "strings" then return is_array_of(v, "string") end
  return type(v) == want
end

-- Why a decoded line is not a journal record, or nil.
local function record_problem(rec)
  if not is_object(rec) then return "it is not a JSON object" end
  if type(rec.event) ~= "string" then return "it has no event name" end
  for _, spec in ipairs { FIELDS["*"], FIELDS[rec.event] or {} } do
    for k, want in pairs(spec) do
      if rec[k] ~= nil and not check_type(rec[k], want) then
        return string.format("field '%s' of a %s record is not %s", k, rec.event,
                             want == "strings" and "a list of strings" or ("a " .. want))
      end
    end
  end
  for _, k in ipairs(NEEDS[rec.event] or {}) do
    if rec[k] == nil then return string.format("a %s record without '%s'", rec.event, k) end
  end
  return nil
end

--[[
journal.parse(text, path) -> records, keep: keep is the length of text that
holds whole records. Only the last line may be torn (no final newline and
not a record): it is left out. Any other damage raises BAD_FORMAT with
the line number.
]]
function M.parse(text, path)
  local recs, pos, lineno = {}, 1, 0
  local keep = 0
  while pos <= #text do
    lineno = lineno + 1
    local nl = text:find("\n", pos, true)
    local line = text:sub(pos, (nl or #text + 1) - 1)
    local ok, rec = pcall(json.decode, line)
    local problem = not ok and "it is not JSON" or record_problem(rec)
    if problem then
      if not nl then return recs, keep end
      upkit.error("BAD_FORMAT", string.format("journal '%s' line %d is damaged (%s): the run cannot be resumed " ..
                                              "or undone from it; start a new run", path, lineno, problem),
                  { path = path, line = lineno })
    end
    recs[#recs + 1] = restore(rec)
    pos = (nl or #text) + 1
    keep = nl or #text
  end
  return recs, keep
end

-- journal.read(path) -> records; ENOENT (the real cause) when it cannot be read.
function M.read(path)
  return (M.parse(fs.read(path), path))
end

--[[
journal.summary(records) -> {
  start, params (as started, with allowed changes), finished = { step = "done"|"skipped" },
  state, before = { step = value recorded before its change }, failed, status,
  undone = { steps undone, in order }, records }
]]
function M.summary(recs)
  local s = { finished = {}, state = {}, before = {}, undone = {}, status = "unknown", records = recs }
  for _, r in ipairs(recs) do
    local ev = r.event
    if ev == "run-start" and not s.start then
      s.start = r
      s.params = {}
      for k, v in pairs(r.params or {}) do s.params[k] = v end
    elseif ev == "resume" then
      for k, v in pairs(r.changed or {}) do
        if s.params and type(v) == "table" then s.params[k] = v.to end
      end
    elseif ev == "step-started" then
      if s.before[r.step] == nil and r.before ~= nil then s.before[r.step] = r.before end
    elseif ev == "step-done" then
      s.finished[r.step] = "done"
      for k, v in pairs(r.state or {}) do s.state[k] = v end
    elseif ev == "step-skipped" and (r.reason == "done" or r.reason == "operator") then
      s.finished[r.step] = "skipped"
    elseif ev == "step-undone" then
      s.finished[r.step] = nil
      s.before[r.step] = nil
      s.undone[#s.undone + 1] = r.step
    elseif ev == "step-failed" then s.failed = r
    elseif ev == "run-finished" or ev == "undo-finished" then s.status = r.result
    end
  end
  return s
end

return M
