-- The journal of a run, in process: lossless encoding of any bytes, redaction
-- before encoding, the strict reader (and a bounded-time fuzz of it), the
-- cleanup of a failed write, and the handles a run caches in ctx.
local T = require "upkit.test"
local upkit = require "upkit"
local json = require "upkit.json"
local log = require "upkit.log"
local J = require "upkit.procedure.journal"
local context = require "upkit.procedure.context"

local dir = T.tmpdir()

T.test("strings that are not UTF-8 are stored escaped and read back byte for byte", function()
  local values = { "pipe\255", "a\\x41\\\\b\192\128", "\237\160\128 surrogate", "ok é ✓", "\0nul\0", "" }
  for _, v in ipairs(values) do
    local line = J.encode { event = "step-done", step = "s", state = { v = v, list = { v, 1 }, [v] = true } }
    local rec = J.parse(line .. "\n", "mem")[1]
    T.eq(rec.state.v, v)
    T.eq(rec.state.list[1], v)
    T.eq(rec.state[v], true)
  end
  T.contains(J.encode { msg = "pipe\255" }, [["$bytes":"pipe\\xFF"]])
end)

T.test("values a journal cannot keep are refused with EINVAL naming where", function()
  local e = T.raises("EINVAL", J.encode, { event = "x", state = { f = print } })
  T.contains(e.message, "record.state.f holds a function")
  T.raises("EINVAL", J.encode, { event = "x", state = { n = 0 / 0 } })
end)

T.test("secrets are redacted before encoding, quotes and tabs included", function()
  local secret = 'se"c\\ret\t42'
  log.secret(secret)
  local line = J.encode { event = "run-start", procedure = "p", params = { token = "x" .. secret .. "y",
                          db = 'Driver=X;UID=sa;PWD={p"w}};q};Database=d', other = "Password=plain" } }
  T.eq(line:find("se", 1, true) and line:find("42", 1, true), nil, line)
  T.eq(line:find('p"w', 1, true) or line:find('p\\"w', 1, true), nil, line)
  local rec = json.decode(line)
  T.eq(rec.params.token, "x***y")
  T.eq(rec.params.db, "Driver=X;UID=sa;PWD=***;Database=d")
  T.eq(rec.params.other, "Password=***")
end)

local function good_lines()
  return {
    J.encode { event = "run-start", procedure = "p", steps = { "a", "b" }, params = { x = 1 } },
    J.encode { event = "step-started", step = "a", before = { on = false } },
    J.encode { event = "step-done", step = "a", state = { k = "v" }, seconds = 0.1 },
    J.encode { event = "run-finished", result = "success" },
  }
end

T.test("a torn last line is left out; any other damage is refused with its line number", function()
  local lines = good_lines()
  local text = table.concat(lines, "\n") .. "\n"
  local recs, keep = J.parse(text .. '{"event":"step-do', "j")
  T.eq(#recs, 4)
  T.eq(keep, #text)
  recs = J.parse(table.concat(lines, "\n"), "j")
  T.eq(#recs, 4, "a last record without its newline is whole")
  local damaged = lines[1] .. "\n" .. lines[2] .. "\n{garbage\n" .. lines[3] .. "\n"
  local e = T.raises("BAD_FORMAT", J.parse, damaged, "j")
  T.eq(e.line, 3)
  T.contains(e.message, "line 3")
  e = T.raises("BAD_FORMAT", J.parse, lines[1] .. '\n{"event":"step-done","step":7}\n', "j")
  T.eq(e.line, 2)
  T.contains(e.message, "field 'step'")
  T.raises("BAD_FORMAT", J.parse, '[1,2]\n', "j")
  T.raises("BAD_FORMAT", J.parse, '{"event":"step-done","step":"a","state":[1]}\n', "j")
end)

T.test("the summary keeps the first recorded prior state of a step until it is undone", function()
  local recs = J.parse(table.concat({
    J.encode { event = "run-start", procedure = "p", steps = { "a" }, params = { x = 1 } },
    J.encode { event = "step-started", step = "a", before = "off" },
    J.encode { event = "step-started", step = "a", before = "on" },
    J.encode { event = "step-done", step = "a", state = {} },
    J.encode { event = "resume", procedure = "p", changed = { x = { from = 1, to = 2 } } },
  }, "\n") .. "\n", "j")
  local s = J.summary(recs)
  T.eq(s.before.a, "off")
  T.eq(s.params.x, 2)
  T.eq(s.finished.a, "done")
end)

-- Random damage: every outcome is records or BAD_FORMAT, never another error.
T.test("fuzz: randomly damaged journals give records or BAD_FORMAT, nothing else (3 s)", function()
  math.randomseed(tonumber(os.getenv("UPKIT_FUZZ_SEED") or "") or os.time())
  local base = table.concat(good_lines(), "\n") .. "\n"
  local junk = { "{", "}", "[", "]", '"', ":", ",", "\n", "\\", "\255", "null", "1e999", "-", "0", "true",
                 '"event"', '"step"', '"state"', "\0", "{}", "[]", '"$bytes"' }
  local n, deadline, outcomes = 0, upkit.now() + 3, { records = 0, BAD_FORMAT = 0 }
  while upkit.now() < deadline do
    local t = base
    for _ = 1, math.random(1, 4) do
      local pos = math.random(1, #t)
      local r = math.random(1, 3)
      if r == 1 then t = t:sub(1, pos - 1) .. junk[math.random(#junk)] .. t:sub(pos)
      elseif r == 2 then t = t:sub(1, pos - 1) .. t:sub(pos + math.random(1, 8))
      else t = t:sub(1, pos - 1) .. string.char(math.random(0, 255)) .. t:sub(pos + 1) end
    end
    local ok, res = pcall(J.parse, t, "fuzz")
    if ok then
      J.summary(res)
      outcomes.records = outcomes.records + 1
    else
      T.ok(upkit.is_error(res) and res.code == "BAD_FORMAT", "only BAD_FORMAT: " .. tostring(res))
      outcomes.BAD_FORMAT = outcomes.BAD_FORMAT + 1
    end
    n = n + 1
  end
  T.ok(n > 1000, "at least 1,000 journals in 3 s")
  T.ok(outcomes.records > 0 and outcomes.BAD_FORMAT > 0)
  T.diag(string.format("%d damaged journals: %d read, %d refused", n, outcomes.records, outcomes.BAD_FORMAT))
end)

T.test("a failed journal write runs the cleanup and unregisters the log sinks", function()
  local run = dir .. "/run1"
  os.execute("mkdir -p " .. T.q(run))
  local before = log.sink_count()
  local closed = false
  local ok, err = pcall(function()
    local j <close> = J.open(run)
    require("upkit.procedure.report").attach(j, run, "text")
    j:on_close(function() closed = true end)
    T.eq(log.sink_count(), before + 2)
    j:write { event = "run-start", procedure = "p" }
    j.f:close()   -- the file under the journal goes away
    j:write { event = "step-done", step = "a", state = {} }
  end)
  T.eq(ok, false)
  T.ok(rawget(err, "journal"), "the error says it is the journal's")
  T.contains(err.message, "could not be written")
  T.eq(log.sink_count(), before)
  T.ok(closed)
  -- the lock was released: the folder opens again
  local j <close> = J.open(run)
  T.eq(#J.read(run .. "/journal.jsonl"), 1)
end)

T.test("a journal opens with its torn tail removed, so the next record starts a line", function()
  local run = dir .. "/run2"
  os.execute("mkdir -p " .. T.q(run))
  local lines = good_lines()
  T.write_file(run .. "/journal.jsonl", lines[1] .. "\n" .. lines[2] .. "\n" .. '{"event":"step-do')
  do
    local j <close> = J.open(run)
    j:write { event = "step-done", step = "a", state = {} }
  end
  local recs = J.read(run .. "/journal.jsonl")
  T.eq(#recs, 3)
  T.eq(recs[3].event, "step-done")
end)

-- A handle-like value that counts its closes.
local function handle(name, log_of)
  return { close = function() log_of[#log_of + 1] = name end }
end

T.test("ctx handles: replacing one closes the old, the run's end closes the rest newest first", function()
  local closed = {}
  do
    local ctx <close> = context.new({ name = "p" }, {}, {}, nil, {})
    ctx._api = handle("api1", closed)
    T.eq(closed, {})
    ctx._api = handle("api2", closed)
    T.eq(closed, { "api1" }, "the old handle is closed when replaced")
    local db = ctx:cache("db", function() return handle("db", closed) end)
    T.eq(ctx:cache("db", function() error("opened twice") end), db)
    T.eq(ctx._db, db)
    ctx._list = { 1, 2 }          -- a plain value: dropped, nothing to close
    ctx:set_handle("api", ctx._api)
    T.eq(closed, { "api1" }, "setting the same handle again does not close it")
  end
  T.eq(closed, { "api1", "db", "api2" })
end)

T.done()
