-- upkit.remote against real OpenSSH servers on loopback: connecting, host keys,
-- keys, commands, timeouts, transfers and a remote upkit run.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local remote = require "upkit.remote"
local upkit = require "upkit"
local hash = require "upkit.hash"
local fs = require "upkit.fs"
local sshd = require "sshd"

local dir = T.tmpdir()
local node = sshd.start()

local function connect(extra)
  return remote.connect(node.target, node.opts(extra))
end

-- Processes on the node (it is this machine) whose command line holds token
-- (or, with exact, is token).
local function processes_with(token, exact)
  local out = T.sh("ps -eo pid=,args=")
  local found = {}
  for line in out:gmatch("[^\n]+") do
    local args = line:match("^%s*%d+ (.*)$")
    if args and ((exact and args == token) or (not exact and args:find(token, 1, true) and not args:find("ps -eo", 1, true))) then
      found[#found + 1] = line
    end
  end
  return found
end

local function random_file(path, n)
  T.sh(string.format("head -c %d /dev/urandom > %s", n, T.q(path)))
  return hash.file("sha256", path)
end

-- How many processes on the node are exactly token, once there are n (or after 10 s).
local function count_when(token, n)
  local seen
  for _ = 1, 200 do
    seen = processes_with(token, true)
    if #seen == n then break end
    upkit.sleep(0.05)
  end
  return #seen
end

-- The processes on the node that hold token, once there are none (or after 10 s).
local function gone(token)
  local left
  for _ = 1, 200 do
    left = processes_with("sleep " .. token)
    if #left == 0 then break end
    upkit.sleep(0.05)
  end
  return left
end

T.test("connect opens one master connection in a private folder; close ends it and removes the folder", function()
  local r <close> = connect()
  T.eq(r.shell, "posix")
  T.eq(r.target, node.target)
  local st = fs.stat(r.dir)
  T.eq(st.type, "dir")
  T.eq(st.mode & 0x1ff, tonumber("700", 8))
  T.ok(fs.exists(r.control), "the control socket exists")
  local check = T.sh(string.format("ssh -F %s -o ControlPath=%s -O check x 2>&1", T.q(node.ssh_config), T.q(r.control)))
  T.contains(check, "Master running")
  -- commands share the master: the server sees one login
  r:run({ "true" }, { ok = { 0 } })
  r:run({ "true" }, { ok = { 0 } })
  local ctl = r.control
  r:close()
  r:close()
  T.eq(fs.exists(r.dir), false)
  T.ne(T.sh(string.format("ssh -F %s -o ControlPath=%s -O check x 2>&1", T.q(node.ssh_config), T.q(ctl))):find("Master running"), 1)
  T.contains(T.raises("CLOSED", r.run, r, { "true" }).message, node.target)
end)

T.test("the operator's ssh config is read, but cannot weaken host key checking or add a command", function()
  local cfg = dir .. "/operator_ssh_config"
  T.write_file(cfg, "Host *\n  StrictHostKeyChecking no\n  RemoteCommand echo hijacked\n  LocalForward 1 127.0.0.1:1\n"
    .. "  ExitOnForwardFailure yes\n  SetEnv UPK_FROM_CONFIG=yes\n")
  local empty = dir .. "/known_hosts.empty2"
  T.write_file(empty, "")
  T.raises("HOST_KEY", connect, { ssh_config = cfg, known_hosts = empty })
  local c <close> = connect({ ssh_config = cfg, options = { ServerAliveInterval = 5, Compression = "yes" } })
  T.eq(c:run({ "echo", "mine" }).stdout, "mine\n")
end)

T.test("an unknown host key is refused with HOST_KEY naming its fingerprint", function()
  local empty = dir .. "/known_hosts.empty"
  T.write_file(empty, "")
  local e = T.raises("HOST_KEY", connect, { known_hosts = empty })
  T.contains(e.message, node.fingerprint)
  T.contains(e.message, "not in known_hosts")
  T.eq(e.fingerprint, node.fingerprint)
  T.eq(T.read_file(empty), "", "known_hosts is left alone")
end)

T.test("a changed host key is refused with HOST_KEY naming the new fingerprint", function()
  local other = sshd.keygen(dir .. "/other_host_key")
  local pub = T.read_file(other .. ".pub"):match("^(%S+ %S+)")
  local kh = dir .. "/known_hosts.changed"
  T.write_file(kh, string.format("[127.0.0.1]:%d %s\n", node.port, pub))
  local e = T.raises("HOST_KEY", connect, { known_hosts = kh })
  T.contains(e.message, node.fingerprint)
  T.contains(e.message, "differs")
  T.eq(e.fingerprint, node.fingerprint)
end)

T.test("a key the server does not accept is AUTH_FAILED", function()
  local wrong = sshd.keygen(dir .. "/wrong_user_key")
  local e = T.raises("AUTH_FAILED", connect, { identity = wrong })
  T.contains(e.message, node.target)
  T.contains(e.message, "Permission denied")
end)

T.test("a closed port is CONNECT_FAILED at once; a silent server within connect_timeout", function()
  local t0 = upkit.now()
  local port = node.port + (node.port < 60000 and 1 or -1)
  local e = T.raises("CONNECT_FAILED", remote.connect, "ssh://127.0.0.1:" .. port, node.opts())
  T.contains(e.message, "refused")
  T.ok(upkit.now() - t0 < 10)
  -- a listener that accepts and never speaks SSH
  local sink = io.popen("exec python3 -c 'import os,socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",0)); "
    .. "s.listen(5); print(s.getsockname()[1], os.getpid(), flush=True); time.sleep(60)'", "r")
  local silent, sink_pid = sink:read("l"):match("^(%d+) (%d+)$")
  t0 = upkit.now()
  local e2 = T.raises("CONNECT_FAILED", remote.connect, "ssh://127.0.0.1:" .. silent, node.opts({ connect_timeout = 2 }))
  local took = upkit.now() - t0
  T.ok(took >= 1.5 and took < 15, "gave up after " .. took .. " s")
  T.contains(e2.message, "127.0.0.1")
  os.execute("kill " .. sink_pid)
  sink:close()
end)

local r = connect()

T.test("run: exit code exact, stdout and stderr kept apart", function()
  local x = r:run({ "sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2; exit 3" })
  T.eq(x.code, 3)
  T.eq(x.stdout, "out\n")
  T.eq(x.stderr, "err\n")
  T.eq(x.timed_out, false)
  T.ok(x.seconds >= 0 and x.seconds < 10)
  for _, c in ipairs { 0, 1, 42, 200, 254, 255 } do
    T.eq(r:run({ "sh", "-c", "exit " .. c }).code, c)
  end
  -- a command ended by a signal shows as 128 + the signal's number, as a shell reports it
  T.eq(r:run({ "sh", "-c", "kill -TERM $$" }).code, 143)
  -- the largest command line a node takes, and one byte more
  local room = 128 * 1024 - 1 - #remote.command_line("posix", { "sh", "-c", "printf %s \"$1\" | wc -c", "sh", "" })
  local fits = string.rep("x", room - 400)
  T.eq(r:run({ "sh", "-c", "printf %s \"$1\" | wc -c", "sh", fits }, { ok = { 0 } }).stdout:match("%d+"), tostring(#fits))
  T.contains(T.raises("E2BIG", r.run, r, { "echo", string.rep("x", 200000) }).message, "stdin")
  local big = r:run({ "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x" })
  T.eq(#big.stdout, 3000000)
end)

T.test("run: ok raises EXIT_CODE with the code and the stderr tail; unknown options are EINVAL", function()
  T.eq(r:run({ "sh", "-c", "exit 3" }, { ok = { 0, 3 } }).code, 3)
  local e = T.raises("EXIT_CODE", r.run, r, { "sh", "-c", "echo broken >&2; exit 4" }, { ok = { 0 } })
  T.eq(e.exit_code, 4)
  T.contains(e.message, "broken")
  T.contains(e.message, node.target)
  T.contains(T.raises("EINVAL", r.run, r, { "true" }, { timout = 1 }).message, "timout")
  T.raises("EINVAL", r.run, r, {})
  T.raises("EINVAL", r.run, r, { "true" }, { env = { ["A B"] = "x" } })
end)

T.test("run: secrets are redacted from the lines given to callbacks and from errors, as proc.run does", function()
  local secret = "s3cr3t-Pa$$"
  local lines, errs = {}, {}
  local x = r:run({ "sh", "-c", "echo key=$1; echo key=$1 >&2", "sh", secret },
    { redact = { secret }, on_stdout = function(l) lines[#lines + 1] = l end,
      on_stderr = function(l) errs[#errs + 1] = l end })
  T.eq(lines, { "key=***" })
  T.eq(errs, { "key=***" })
  T.eq(x.code, 0)
  local e = T.raises("EXIT_CODE", r.run, r, { "sh", "-c", "echo $1 >&2; exit 1", "sh", secret },
    { ok = { 0 }, redact = { secret } })
  T.eq(e.message:find(secret, 1, true), nil)
  T.contains(e.message, "***")
end)

T.test("run: hostile arguments reach the remote program byte for byte", function()
  local args = { "two words", "", "'", '"', "it's \"both\"", "$HOME", "${PATH}", "`id`", "$(id)", "a\\b",
    "trailing\\", "new\nline", "\ttab", "*", "?", "[x]", "~", "#", ";", "&&", "|", "-n", "--",
    "é ü 日本語 ✓", "%PATH%", "!x!", "^", "<>", "(x)", "a=b" }
  local argv = { "printf", "%s\\0" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local x = r:run(argv, { ok = { 0 } })
  local got = {}
  for a in x.stdout:gmatch("(.-)%z") do got[#got + 1] = a end
  T.eq(got, args)
end)

T.test("run: cwd, env and stdin on the node", function()
  local d = T.tmpdir()
  T.eq(r:run({ "pwd" }, { cwd = d }).stdout, d .. "\n")
  local e = T.raises("ENOENT", r.run, r, { "pwd" }, { cwd = d .. "/missing dir" })
  T.contains(e.message, d .. "/missing dir")
  T.eq(r:run({ "sh", "-c", "echo \"$UPK_A|${UPK_B-unset}\"" }, { env = { UPK_A = "a b'c", UPK_B = false } }).stdout,
    "a b'c|unset\n")
  T.eq(r:run({ "/usr/bin/env" }, { env = { ONLY = "1" }, env_mode = "replace" }).stdout, "ONLY=1\n")
  local data = "line one\nline 'two'\n" .. string.rep("z", 100000)
  T.eq(r:run({ "cat" }, { stdin = data }).stdout, data)
  T.write_file(d .. "/in", "from a file")
  T.eq(r:run({ "cat" }, { stdin = { file = d .. "/in" } }).stdout, "from a file")
  T.eq(r:run({ "cat" }).stdout, "", "no stdin: the command reads end of file")
end)

T.test("run: a timeout ends the remote command and everything it started; nothing stays on the node", function()
  local token = "4242.25"
  local t0 = upkit.now()
  local seen
  local x = r:run({ "sh", "-c", "sleep " .. token .. " & sleep " .. token .. " & echo started; wait; echo never" },
    { timeout = 2, grace = 1, on_stdout = function() seen = count_when("sleep " .. token, 2) end })
  T.eq(x.timed_out, true)
  T.eq(x.code, nil)
  T.eq(seen, 2, "both sleeps ran on the node while the command ran")
  T.ok(upkit.now() - t0 < 6)
  T.eq(gone(token), {}, "processes left on the node")
  local e = T.raises("TIMEOUT", r.run, r, { "sleep", token }, { timeout = 0.5, ok = { 0 } })
  T.contains(e.message, "timed out")
  T.eq(gone(token), {})
  -- a command that ignores TERM is killed after grace
  x = r:run({ "sh", "-c", "trap '' TERM; sleep " .. token }, { timeout = 0.5, grace = 1 })
  T.eq(x.timed_out, true)
  T.eq(gone(token), {})
  -- and the connection still works
  T.eq(r:run({ "echo", "still here" }).stdout, "still here\n")
end)

-- A coordinator (a child upkit) runs a long command on the node and is then
-- interrupted (SIGINT, as Ctrl-C) or killed (SIGKILL): the command must end on the node.
-- With n, n commands side by side under remote.parallel.
local function coordinator(token, n)
  local proc = require "upkit.proc"
  local json = require "upkit.json"
  local script = dir .. "/coordinator.lua"
  T.write_file(script, [[
local remote = require "upkit.remote"
local json = require "upkit.json"
local o = json.decode(os.getenv("UPK_NODE"))
local r = remote.connect(o.target, o.opts)
io.stdout:write("dir ", r.dir, "\n")
local function one()
  return r:run({ "sh", "-c", "echo started; exec sleep " .. o.token }, {
    on_stdout = function(l) io.stdout:write(l, "\n"); io.stdout:flush() end })
end
local ok, e
if o.n then
  local fns = {}
  for i = 1, o.n do fns[i] = one end
  ok, e = pcall(remote.parallel, fns)
else
  ok, e = pcall(one)
end
io.stdout:write("result ", tostring(ok), " ", tostring(type(e) == "table" and e.code), "\n")
r:close()
]])
  local p = proc.spawn({ T.upkit_bin(), "run", script },
    { env = { UPK_NODE = json.encode({ target = node.target, opts = node.opts(), token = token, n = n }) } })
  local rdir = (p:read_line(30) or ""):match("^dir (.+)$")
  T.ok(rdir, "the coordinator connected")
  for _ = 1, n or 1 do T.eq(p:read_line(30), "started") end
  T.eq(count_when("sleep " .. token, n or 1), n or 1)
  return p, rdir
end

-- Ctrl-C on a coordinator running n commands (one without n): each ends on the node, INTERRUPTED.
local function ctrl_c(token, n)
  local p <close>, rdir = coordinator(token, n)
  os.execute("kill -INT " .. p:pid())
  T.eq(p:read_line(30), "result false INTERRUPTED")
  T.eq(gone(token), {})
  p:wait(30)
  T.eq(fs.exists(rdir), false, "the coordinator closed its connection")
end

T.test("Ctrl-C on the coordinator ends the command on the node (INTERRUPTED)", function() ctrl_c("4444.125") end)

T.test("Ctrl-C during remote.parallel ends every task's command on the node and raises INTERRUPTED", function()
  ctrl_c("4646.625", 3)
end)

T.test("a coordinator killed outright leaves no command running on the node", function()
  local token = "4545.375"
  local p <close>, rdir = coordinator(token)
  os.execute("kill -KILL " .. p:pid())
  T.eq(p:wait(30).signal, 9)
  T.eq(gone(token), {})
  fs.remove(rdir, { recursive = true })
end)

T.test("a node that goes away after connecting: the next command is CONNECT_FAILED, not an exit code", function()
  local gone_node = sshd.start()
  local c <close> = remote.connect(gone_node.target, gone_node.opts())
  T.eq(c:run({ "true" }).code, 0)
  gone_node.stop(true)
  local t0 = upkit.now()
  local e = T.raises("CONNECT_FAILED", c.run, c, { "true" })
  T.contains(e.message, gone_node.target)
  T.ok(upkit.now() - t0 < 15)
  T.raises("CONNECT_FAILED", c.put, c, dir .. "/coordinator.lua", "/tmp/x")
  c:close()
  gone_node.stop()
end)

local ok6, v6 = pcall(sshd.start, { ipv6 = true })
if not ok6 then
  T.skip("an IPv6 target: ssh://user@[::1]:port, commands and transfers", "no IPv6 loopback here: " .. tostring(v6))
else T.test("an IPv6 target: ssh://user@[::1]:port, commands and transfers", function()
  local c <close> = remote.connect(string.format("ssh://%s@[::1]:%d", v6.user, v6.port), v6.opts())
  T.eq(c.target, string.format("ssh://%s@[::1]:%d", v6.user, v6.port))
  T.eq(c:run({ "echo", "six" }).stdout, "six\n")
  local src = dir .. "/v6.bin"
  local digest = random_file(src, 5000)
  T.eq(c:put(src, dir .. "/v6-put.bin").sha256, digest)
  T.eq(c:get(dir .. "/v6-put.bin", dir .. "/v6-get.bin").sha256, digest)
  c:close()
  v6.stop()
end) end

T.test("a master connection that went away is opened again by the next command", function()
  local c <close> = connect()
  local function master_running()
    return T.sh(string.format("ssh -F %s -o ControlPath=%s -O check x 2>&1", T.q(node.ssh_config), T.q(c.control)))
      :find("Master running", 1, true) ~= nil
  end
  T.sh(string.format("ssh -F %s -o ControlPath=%s -O exit x 2>&1", T.q(node.ssh_config), T.q(c.control)))
  T.eq(master_running(), false)
  T.eq(c:run({ "echo", "again" }, { ok = { 0 } }).stdout, "again\n")
  T.eq(master_running(), true)
end)

T.test("spawn: commands on the node run side by side; kill ends one there", function()
  local t0 = upkit.now()
  local ps = {}
  for i = 1, 3 do ps[i] = r:spawn({ "sh", "-c", "sleep 1; echo done " .. i .. "; exit " .. i }) end
  for i = 1, 3 do
    local x = ps[i]:wait(20)
    T.eq(x.code, i)
    T.eq(x.stdout, "done " .. i .. "\n")
    ps[i]:close()
  end
  T.ok(upkit.now() - t0 < 2.8, "three 1 s commands took " .. (upkit.now() - t0) .. " s")
  -- each with its own input
  local a <close> = r:spawn({ "sh", "-c", "sleep 0.5; cat" }, { stdin = "input A" })
  local b <close> = r:spawn({ "sh", "-c", "sleep 0.5; cat" }, { stdin = "input B" })
  T.eq(a:wait(20).stdout, "input A")
  T.eq(b:wait(20).stdout, "input B")
  local token = "4343.75"
  local p <close> = r:spawn({ "sleep", token })
  T.eq(p:wait(0.5), nil)
  T.eq(p:running(), true)
  T.eq(count_when("sleep " .. token, 1), 1, "the command runs on the node")
  p:kill()
  local x = p:wait(10)
  T.ok(x.signal or x.code, "a result")
  T.eq(gone(token), {})
  T.raises("EINVAL", r.spawn, r, { "true" }, { timeout = 1 })
end)


T.test("put and get: verified by SHA-256 on both ends, into place, hostile names", function()
  local rdir = T.tmpdir()
  local src = dir .. "/payload.bin"
  local digest = random_file(src, 3 * 1024 * 1024 + 17)
  local name = rdir .. "/dest 'q' \"d\" *[x]? \\ #é.bin"
  local p = r:put(src, name)
  T.eq(p.sha256, digest)
  T.eq(p.bytes, 3 * 1024 * 1024 + 17)
  T.eq(hash.file("sha256", name), digest)
  T.eq(r:sha256(name), digest)
  local back = dir .. "/back é.bin"
  local g = r:get(name, back)
  T.eq(g.sha256, digest)
  T.eq(g.bytes, p.bytes)
  T.eq(hash.file("sha256", back), digest)
  -- replacing an existing file on both sides
  T.write_file(src, "new contents")
  r:put(src, name)
  T.eq(T.read_file(name), "new contents")
  r:get(name, back)
  T.eq(T.read_file(back), "new contents")
  -- no temporary file left beside either
  T.eq(T.sh("ls -A " .. T.q(rdir)), "dest 'q' \"d\" *[x]? \\ #é.bin\n")
  T.eq(T.sh("ls -A " .. T.q(r.dir)), "cm\nin\n")
end)

T.test("put and get of missing files are ENOENT naming them", function()
  local e = T.raises("ENOENT", r.put, r, dir .. "/nope", dir .. "/x")
  T.contains(e.message, dir .. "/nope")
  local e2 = T.raises("ENOENT", r.get, r, dir .. "/not-on-node", dir .. "/x")
  T.contains(e2.message, dir .. "/not-on-node")
  T.eq(fs.exists(dir .. "/x"), false)
  T.raises("ENOENT", r.put, r, dir .. "/payload.bin", dir .. "/no such folder/x")
  T.raises("EINVAL", r.put, r, dir .. "/payload.bin", dir .. "/x", { overwrite = true })
end)

-- A node whose file transfers are damaged: its sftp subsystem flips the first
-- byte of every uploaded temporary file after the transfer, and appends to the
-- file named "victim" before a download starts.
T.test("a damaged transfer is refused with CHECKSUM_MISMATCH and leaves nothing at the destination", function()
  local ddir = T.tmpdir()
  local wrapper = ddir .. "/damaging-sftp-server"
  T.write_file(wrapper, table.concat({
    "#!/bin/sh",
    "d=" .. T.q(ddir),
    '[ -f "$d/victim" ] && printf X >> "$d/victim"',
    "/usr/lib/openssh/sftp-server \"$@\"",
    'for f in "$d"/.*.part; do [ -f "$f" ] && printf Z | dd of="$f" bs=1 count=1 conv=notrunc 2>/dev/null; done',
    "exit 0", "" }, "\n"))
  os.execute("chmod 755 " .. T.q(wrapper))
  local bad = sshd.start({ sftp = wrapper })
  local b <close> = remote.connect(bad.target, bad.opts())
  local src = dir .. "/payload2.bin"
  random_file(src, 200000)
  local e = T.raises("CHECKSUM_MISMATCH", b.put, b, src, ddir .. "/installer.msi")
  T.contains(e.message, "installer.msi")
  T.eq(fs.exists(ddir .. "/installer.msi"), false)
  T.eq(T.sh("ls -A " .. T.q(ddir)), "damaging-sftp-server\n", "the damaged temporary file is removed")
  T.write_file(ddir .. "/victim", "original")
  local e2 = T.raises("CHECKSUM_MISMATCH", b.get, b, ddir .. "/victim", dir .. "/victim.copy")
  T.contains(e2.message, "victim")
  T.eq(fs.exists(dir .. "/victim.copy"), false)
  b:close()
  bad.stop()
end)

-- A folder holding a tiny procedure, and the absolute path of the binary under test.
local function tiny_procedure()
  local work = T.tmpdir()
  T.write_file(work .. "/tiny.lua", [[
return {
  name = "tiny", summary = "a procedure run on a node",
  params = { { name = "fail", type = "boolean", default = false } },
  steps = {
    { name = "hello", run = function(ctx) ctx.log("hello from %s", "the node") return { n = 1 } end },
    { name = "maybe", run = function(ctx)
        if ctx.params.fail then error({ code = "TEST_FAILED", message = "asked to fail" }) end end },
  },
}
]])
  local bin = T.sh("cd " .. T.q(T.upkit_bin():match("^(.*)/") or ".") .. " && pwd"):gsub("\n", "") ..
    "/" .. T.upkit_bin():match("([^/]+)$")
  return work, bin
end

T.test("r:upkit runs upkit on the node and brings back its run's journal and log", function()
  local work, bin = tiny_procedure()
  local into = dir .. "/coordinator-runs"
  local x = r:upkit({ "run", "tiny.lua", "--yes" }, { path = bin, cwd = work, into = into, timeout = 120 })
  T.eq(x.code, 0)
  T.match(x.run_dir, "^" .. work:gsub("%p", "%%%0") .. "/upkit%-runs/tiny%-")
  T.eq(x.into, into .. "/" .. x.run_dir:match("([^/]+)$"))
  local journal = T.read_file(x.journal)
  T.contains(journal, '"run-start"')
  T.contains(journal, '"run-finished"')
  T.eq(T.read_file(x.journal), T.read_file(x.run_dir .. "/journal.jsonl"))
  T.contains(T.read_file(x.log), "hello from the node")
  -- a failed run raises EXIT_CODE, and its journal is brought back all the same
  local e = T.raises("EXIT_CODE", r.upkit, r, { "run", "tiny.lua", "--set", "fail=true", "--log-format", "json" },
    { path = bin, cwd = work, into = into, timeout = 120 })
  T.eq(e.exit_code, 1)
  T.contains(T.read_file(e.result.journal), "asked to fail")
  T.contains(e.message, e.result.into)
  -- upkit missing on the node
  T.eq(r:upkit({ "--version" }, { path = work .. "/no-upkit", ok = { 127 } }).code, 127)
end)

T.test("run_all: commands on several nodes side by side, a bounded number at once, each node's outcome kept", function()
  local n2, n3 = sshd.start(), sshd.start()
  local c2 <close> = remote.connect(n2.target, n2.opts())
  local c3 <close> = remote.connect(n3.target, n3.opts())
  local nodes = { r, c2, c3 }
  local function sleepers()
    local jobs = {}
    for i, c in ipairs(nodes) do jobs[i] = { node = c, argv = { "sh", "-c", "sleep 1; echo node " .. i } } end
    return jobs
  end
  local t0 = upkit.now()
  local all = remote.run_all(sleepers())
  local together = upkit.now() - t0
  for i, e in ipairs(all) do
    T.eq(e.ok, true)
    T.eq(e.target, nodes[i].target)
    T.eq(e.result.stdout, "node " .. i .. "\n")
  end
  T.ok(together < 2.5, "three 1 s commands side by side took " .. together .. " s")
  t0 = upkit.now()
  remote.run_all(sleepers(), { limit = 1 })
  T.ok(upkit.now() - t0 >= 3, "one at a time")
  local token = "4747.625"
  local mixed = remote.run_all({
    { node = r, argv = { "true" } },
    { node = c2, argv = { "sh", "-c", "echo broken >&2; exit 3" }, opts = { ok = { 0 } } },
    { node = c3, argv = { "sleep", token }, opts = { timeout = 0.5, grace = 1 } },
  })
  T.eq(mixed[1].ok, true)
  T.eq({ mixed[2].ok, mixed[2].error.code, mixed[2].error.exit_code }, { false, "EXIT_CODE", 3 })
  T.contains(mixed[2].error.message, n2.target)
  T.eq(mixed[2].result.stderr, "broken\n")
  T.eq({ mixed[3].ok, mixed[3].error.code, mixed[3].result.timed_out }, { false, "TIMEOUT", true })
  T.eq(gone(token), {})
  T.raises("EINVAL", remote.run_all, { { argv = { "true" } } })
  T.raises("EINVAL", remote.run_all, {}, { limt = 1 })
  c2:close(); c3:close()
  n2.stop(); n3.stop()
end)

T.test("run_each: several commands in one session, each one's output and exit code; a timeout cuts it short", function()
  local r2 <close> = connect()
  local res = r2:run_each({ { "printf", "%s|", "two words", "it's", "é ✓" }, { "sh", "-c", "echo e >&2; exit 5" },
                            { "sh", "-c", "echo last" } })
  T.eq({ res[1], res[2], res[3] }, { { code = 0, stdout = "two words|it's|é ✓|" }, { code = 5, stdout = "" },
                                     { code = 0, stdout = "last\n" } })
  T.eq(res.result.stderr, "e\n")
  local token = "6262.125"
  local cut = r2:run_each({ { "true" }, { "sleep", token }, { "echo", "never" } }, { timeout = 0.5, grace = 1 })
  T.eq(#cut, 1)
  T.eq(cut.result.timed_out, true)
  T.eq(gone(token), {})
  T.raises("EINVAL", r2.run_each, r2, {})
  T.raises("EINVAL", r2.run_each, r2, { { "true" } }, { ok = { 0 } })
  local l = remote.connect("local")
  local lres = l:run_each({ { "sh", "-c", "echo a; exit 2" }, { "cat" } })
  T.eq({ lres[1], lres[2] }, { { code = 2, stdout = "a\n" }, { code = 0, stdout = "" } })
end)

T.test("parallel: connections, transfers and commands of several nodes side by side; a failure is kept per task", function()
  -- each node's sftp server starts 1 s late: r:put (upload, then rename) takes 2 s or more on one node
  local pdir = T.tmpdir()
  local slow = pdir .. "/slow-sftp-server"
  T.write_file(slow, "#!/bin/sh\nsleep 1\nexec /usr/lib/openssh/sftp-server \"$@\"\n")
  os.execute("chmod 755 " .. T.q(slow))
  local servers, conns, fns = {}, {}, {}
  for i = 1, 3 do servers[i] = sshd.start({ sftp = slow }) end
  local connected = remote.parallel({
    function() return remote.connect(servers[1].target, servers[1].opts()) end,
    function() return remote.connect(servers[2].target, servers[2].opts()) end,
    function() return remote.connect(servers[3].target, servers[3].opts()) end,
  })
  for i = 1, 3 do
    T.eq(connected[i].ok, true, tostring(connected[i].error))
    conns[i] = connected[i].value
  end
  local src = pdir .. "/installer.msi"
  local digest = random_file(src, 300000)
  for i, c in ipairs(conns) do
    fns[i] = function()
      local put = c:put(src, pdir .. "/node" .. i .. ".msi")
      return { put.sha256, c:run({ "sh", "-c", "echo node " .. i }, { ok = { 0 } }).stdout }
    end
  end
  local t0 = upkit.now()
  local res = remote.parallel(fns)
  local together = upkit.now() - t0
  for i = 1, 3 do
    T.eq(res[i].ok, true, tostring(res[i].error))
    T.eq(res[i].value, { digest, "node " .. i .. "\n" })
    T.eq(hash.file("sha256", pdir .. "/node" .. i .. ".msi"), digest)
  end
  T.ok(res[1].seconds >= 2, "one node's put took " .. res[1].seconds .. " s")
  T.ok(together < res[1].seconds + 1.5, string.format("three nodes took %.2f s, one %.2f s", together, res[1].seconds))
  -- limit 1: one after the other
  t0 = upkit.now()
  remote.parallel({ function() conns[1]:run({ "sleep", "1" }) end, function() conns[2]:run({ "sleep", "1" }) end },
                  { limit = 1 })
  T.ok(upkit.now() - t0 >= 2, "limit 1 runs one at a time")
  -- a task that fails keeps its error; a task's timeout ends its command on the node; the others finish
  local token = "5151.375"
  local mixed = remote.parallel({
    function() return conns[1]:run({ "sh", "-c", "exit 4" }, { ok = { 0 } }) end,
    function() return conns[2]:run({ "sleep", token }, { timeout = 0.5, grace = 1 }) end,
    function() error("plain failure", 0) end,
    function() return remote.connect("local"):run({ "sh", "-c", "sleep 0.3; echo here" }).stdout end,
  })
  T.eq({ mixed[1].ok, mixed[1].error.code, mixed[1].error.exit_code }, { false, "EXIT_CODE", 4 })
  T.eq({ mixed[2].ok, mixed[2].value.timed_out }, { true, true })
  T.eq(gone(token), {})
  T.eq({ mixed[3].ok, mixed[3].error }, { false, "plain failure" })
  T.eq({ mixed[4].ok, mixed[4].value }, { true, "here\n" })
  T.raises("EINVAL", remote.parallel, { "not a function" })
  T.raises("EINVAL", remote.parallel, {}, { limt = 2 })
  for i = 1, 3 do conns[i]:close(); servers[i].stop() end
end)

T.test("remote.connect(\"local\"): this machine as a node, with the same methods", function()
  local l <close> = remote.connect("local")
  T.eq(l.shell, "posix")
  T.eq(l.target, "local")
  local x = l:run({ "sh", "-c", "echo out; echo err >&2; exit 3" })
  T.eq({ x.code, x.stdout, x.stderr }, { 3, "out\n", "err\n" })
  T.eq(T.raises("EXIT_CODE", l.run, l, { "false" }, { ok = { 0 } }).exit_code, 1)
  T.raises("EINVAL", l.run, l, { "true" }, { timout = 1 })
  local p <close> = l:spawn({ "sh", "-c", "echo spawned" })
  T.eq(p:wait(20).stdout, "spawned\n")
  local src = dir .. "/local-src.bin"
  local digest = random_file(src, 100000)
  T.eq(l:put(src, dir .. "/local-put.bin").sha256, digest)
  T.eq(l:get(dir .. "/local-put.bin", dir .. "/local-get.bin").sha256, digest)
  T.eq(l:sha256(dir .. "/local-get.bin"), digest)
  local work, bin = tiny_procedure()
  local u = l:upkit({ "run", "tiny.lua" }, { path = bin, cwd = work, into = dir .. "/local-runs", timeout = 120 })
  T.contains(T.read_file(u.journal), '"run-finished"')
  l:close()
  T.raises("CLOSED", l.run, l, { "true" })
end)

r:close()
node.stop()
T.done()
