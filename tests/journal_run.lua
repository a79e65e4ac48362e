-- Run folders through the command line: private modes, the lock, damaged and
-- torn journals, bytes that are not UTF-8, a failed journal write, secrets
-- inside connection strings, and hand-edited journals (a generator).
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local json = require "upkit.json"
local R = require "runs"

local dir = T.tmpdir()
local bin = T.upkit_bin()

local upkit, reset, trace, run_dir_of = R.folder(dir)
local journal_text, records = R.journal_text, R.records
local function no_traceback(text)
  T.eq(text:find("stack traceback", 1, true), nil, text)
  T.eq(text:find("%.lua:%d+:"), nil, text)
end

T.write_file(dir .. "/p.lua", R.MARK .. [[
local upkit = require "upkit"
return {
  name = "p", summary = "three steps",
  params = { { name = "trace", type = "path", default = "trace" },
             { name = "fail_at", type = "string", default = "" },
             { name = "sleep_at", type = "string", default = "" },
             { name = "big", type = "boolean", default = false },
             { name = "db", type = "string", default = "Driver=SQLite3;Database=x.db" } },
  steps = {
    { name = "one", run = function(ctx)
        mark(ctx, "one")
        ctx.warn("FIFO 'pipe\255' skipped")
        return { raw = "bytes\255\254", nested = { "\0x" } } end },
    { name = "two", run = function(ctx)
        if ctx.params.sleep_at == "two" then
          mark(ctx, "two-start")
          local t = upkit.now() + 30
          while upkit.now() < t do upkit.sleep(0.05) end
        end
        if ctx.params.fail_at == "two" then error({ code = "BOOM", message = "two exploded" }) end
        mark(ctx, "two")
        ctx.log("connected with %s", ctx.params.db)
        return { copy = ctx.state.raw, big = ctx.params.big and string.rep("x", 4000) or nil } end },
    { name = "three", run = function(ctx)
        local same = ctx.state.copy == "bytes\255\254" and type(ctx.state.nested) == "table"
                     and ctx.state.nested[1] == "\0x"
        mark(ctx, same and "three" or "three-other-bytes") end },
  },
}
]])

T.test("run folders are 0700, journal, log and lock 0600", function()
  reset()
  local out, _, code = upkit("run p.lua")
  T.eq(code, 0, out)
  local run = run_dir_of(out)
  T.eq(T.sh("stat -c %a " .. T.q(run)), "700\n")
  T.eq(T.sh("stat -c %a " .. T.q(dir .. "/upkit-runs")), "700\n")
  for _, f in ipairs { "journal.jsonl", "log.txt", "lock" } do
    T.eq(T.sh("stat -c %a " .. T.q(run .. "/" .. f)), "600\n", f)
  end
end)

T.test("bytes that are not UTF-8 in a step's result and in a log message are kept, escaped", function()
  reset()
  local out, err, code = upkit("run p.lua")
  T.eq(code, 0, out .. err)
  T.eq(trace(), "one\ntwo\nthree\n", "step three read the bytes back from the state")
  local run = run_dir_of(out)
  local done = records(run)[3]
  T.eq(done.event, "step-done")
  T.eq(done.state.raw, { ["$bytes"] = "bytes\\xFF\\xFE" })
  out, err, code = upkit("run p.lua --log-format json")
  T.eq(code, 0, out .. err)
  local warned
  for line in out:gmatch("[^\n]+") do
    local rec = json.decode(line)
    if rec.level == "warn" then warned = rec.msg end
  end
  T.eq(warned, { ["$bytes"] = "FIFO 'pipe\\xFF' skipped" })
end)

T.test("a resumed run reads the escaped bytes back into ctx.state", function()
  reset()
  local out, _, code = upkit("run p.lua --set fail_at=two")
  T.eq(code, 1)
  out, _, code = upkit("run p.lua --resume --set fail_at= --allow-change fail_at")
  T.eq(code, 0, out)
  T.eq(trace(), "one\ntwo\nthree\n", "three found the bytes step one returned in the first process")
end)

T.test("a second process on a running run refuses with BUSY naming the owner's pid", function()
  reset()
  local pid = R.start(dir, "run p.lua --set sleep_at=two", "two-start")
  T.contains(trace(), "two-start")
  local _, err, code = upkit("run p.lua --resume --set sleep_at= --allow-change sleep_at")
  os.execute("kill -9 " .. pid)
  T.eq(code, 2, err)
  T.contains(err, "is in use by another upkit process (pid " .. pid)
  no_traceback(err)
  T.eq(trace(), "one\ntwo-start\n", "the second process ran nothing")
  os.execute("sleep 0.3")
  -- the owner is gone (killed): its lock went with it
  local out
  out, err, code = upkit("run p.lua --resume --set sleep_at= --allow-change sleep_at")
  T.eq(code, 0, out .. err)
  T.eq(trace(), "one\ntwo-start\ntwo\nthree\n")
  local finished = 0
  for _, r in ipairs(records(run_dir_of(out))) do if r.event == "run-finished" then finished = finished + 1 end end
  T.eq(finished, 1)
end)

T.test("a damaged middle line is refused with its line number; nothing runs", function()
  reset()
  local out, _, code = upkit("run p.lua --set fail_at=two")
  T.eq(code, 1)
  local run = run_dir_of(out)
  local lines = {}
  for line in journal_text(run):gmatch("[^\n]+") do lines[#lines + 1] = line end
  lines[3] = "#" .. lines[3]:sub(2)
  T.write_file(run .. "/journal.jsonl", table.concat(lines, "\n") .. "\n")
  local err
  out, err, code = upkit("run p.lua --resume --set fail_at= --allow-change fail_at")
  T.eq(code, 2)
  T.contains(err, "line 3 is damaged")
  T.contains(err, "[BAD_FORMAT]")
  no_traceback(err)
  T.eq(trace(), "one\n")
end)

T.test("a torn last line is removed before the next record is appended", function()
  reset()
  local out, _, code = upkit("run p.lua --set fail_at=two")
  T.eq(code, 1)
  local run = run_dir_of(out)
  local f = io.open(run .. "/journal.jsonl", "ab")
  f:write('{"event":"step-started","st')
  f:close()
  out, _, code = upkit("run p.lua --resume --set fail_at= --allow-change fail_at")
  T.eq(code, 0, out)
  local recs = records(run)   -- every line decodes: nothing glued
  T.eq(recs[#recs].event, "run-finished")
  T.eq(journal_text(run):find('"st{', 1, true), nil)
  T.eq(trace(), "one\ntwo\nthree\n")
end)

T.test("a failed journal write is reported as such, with its cause, and no traceback", function()
  reset()
  -- a 4,000-byte state record is over a 1 KiB file size limit: EFBIG
  local out, status = T.sh(string.format("cd %s && sh -c \"trap '' XFSZ; ulimit -f 2; exec %s run p.lua --set big=true\" 2>&1",
                                         T.q(dir), T.q(bin)))
  T.eq(status, 1, out)
  T.contains(out, "could not be written")
  T.contains(out, "EFBIG")
  T.contains(out, "The run stopped there")
  no_traceback(out)
end)

T.test("--resume and --undo with an empty or missing --runs folder: no earlier run, exit 2", function()
  os.execute("mkdir -p " .. T.q(dir .. "/empty"))
  for _, args in ipairs { "--resume --runs empty", "--undo --yes --runs empty", "--resume --runs missing",
                          "--resume empty", "--undo nowhere --yes" } do
    local _, err, code = upkit("run p.lua " .. args)
    T.eq(code, 2, args)
    T.contains(err, "no earlier run", args)
    no_traceback(err)
  end
end)

T.test("passwords inside a connection string never reach the journal, the log, the plan or the output", function()
  reset()
  T.write_file(dir .. "/site.lua", "return { db = [[Driver=PostgreSQL;Server=h;UID=u;PWD={s3\"cr\\e}}t\tx};Database=d]] }")
  local out, err, code = upkit("run p.lua --config site.lua")
  T.eq(code, 0, out .. err)
  local run = run_dir_of(out)
  local plan = upkit("plan p.lua --config site.lua")
  for what, text in pairs { journal = journal_text(run), log = T.read_file(run .. "/log.txt"), out = out .. err,
                            plan = plan } do
    T.eq(text:find("s3", 1, true), nil, what .. ": " .. text)
    T.contains(text, "PWD=***", what)
  end
  -- resuming needs the password again: the journal does not keep it
  out, _, code = upkit("run p.lua --set fail_at=two --config site.lua")
  T.eq(code, 1)
  _, err, code = upkit("run p.lua --resume --set fail_at= --allow-change fail_at")
  T.eq(code, 2)
  T.contains(err, "parameter 'db' holds a password the journal does not keep")
  out, err, code = upkit("run p.lua --resume --config site.lua --set fail_at= --allow-change fail_at")
  T.eq(code, 0, out .. err)
end)

T.test("a run folder that cannot be made names the real cause", function()
  T.write_file(dir .. "/afile", "")
  local _, err, code = upkit("run p.lua --runs afile/runs")
  T.eq(code, 1)
  T.contains(err, "'afile': Not a directory [ENOTDIR]")
  no_traceback(err)
end)

-- Hand-edited journals: every field of every record given a value of another
-- type, one at a time. None may end in a traceback or run a finished step again.
T.test("generator: 150 journals with a field of the wrong type: a clean refusal or a correct resume", function()
  reset()
  local out, _, code = upkit("run p.lua --set fail_at=two")
  T.eq(code, 1)
  local run = run_dir_of(out)
  local original = journal_text(run)
  local lines = {}
  for line in original:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local wrong = { 7, "text", true, json.null, { 1, 2 }, { k = "v" }, -1.5, "" }
  math.randomseed(tonumber(os.getenv("UPKIT_FUZZ_SEED") or "") or os.time())
  local refused, resumed = 0, 0
  for n = 1, 150 do
    local recs = {}
    for i, l in ipairs(lines) do recs[i] = json.decode(l) end
    local li = math.random(#recs)
    local keys = {}
    for k in pairs(recs[li]) do keys[#keys + 1] = k end
    table.sort(keys)
    local k = keys[math.random(#keys)]
    local v = wrong[math.random(#wrong)]
    if type(v) == type(recs[li][k]) and v ~= json.null then v = { wrong = v } end
    recs[li][k] = v
    local text = {}
    for i, r in ipairs(recs) do text[i] = json.encode(r) end
    T.write_file(run .. "/journal.jsonl", table.concat(text, "\n") .. "\n")
    T.write_file(dir .. "/trace", "")
    local rout, rerr, rcode = upkit("run p.lua --resume " .. T.q(run:sub(#dir + 2)) ..
                                    " --set fail_at= --allow-change fail_at")
    no_traceback(rout .. rerr)
    T.ok(rcode == 0 or rcode == 2, string.format("#%d line %d field %s: exit %s %s", n, li, k, rcode, rerr))
    if rcode == 2 then
      refused = refused + 1
      T.eq(trace(), "", "a refusal runs nothing")
    else
      resumed = resumed + 1
      local t = trace()
      local ones = select(2, t:gsub("one\n", ""))
      -- step one is finished unless its step-done record lost its step name or event
      local lost = li == 3 and (k == "step" or k == "event")
      if not lost then T.eq(ones, 0, string.format("#%d line %d field %s: step one ran again", n, li, k)) end
    end
  end
  T.ok(refused > 0)
  T.diag(string.format("150 journals: %d refused, %d resumed", refused, resumed))
end)

T.done()
