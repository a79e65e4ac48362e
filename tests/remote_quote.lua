-- upkit.remote without a server: quoting for POSIX sh, cmd.exe and PowerShell,
-- the shell probe, digest outputs, targets and options.
local T = require "upkit.test"
local remote = require "upkit.remote"
local shell = require "upkit.remote.shell"
local proc = require "upkit.proc"

local hostile = {
  "plain", "two words", "", " ", "'", "''", '"', 'say "hi"', "it's", "$HOME", "${HOME}", "`id`", "$(id)",
  "a\\b", "trailing\\", "trailing two\\\\", 'back\\"slash', "\\\\server\\share\\dir with space\\",
  "new\nline", "tab\there", "*", "?", "[a]", "~", "#comment", ";", "&", "|", "^", "<", ">", "(x)",
  "-n", "--", "é ü 日本語 ✓", "‘curly’ and ‚low‛", "%%", "100%", "!bang!", "a=b",
}

T.test("quote_posix: hostile arguments reach a program through /bin/sh byte for byte", function()
  local argv = { "printf", "%s\\0" }
  for _, a in ipairs(hostile) do argv[#argv + 1] = a end
  local line = remote.command_line("posix", argv)
  local r = proc.run({ "sh", "-c", line }, { ok = { 0 } })
  local got = {}
  for a in r.stdout:gmatch("(.-)%z") do got[#got + 1] = a end
  T.eq(got, hostile)
  T.eq(remote.quote_posix(""), "''")
  T.eq(remote.quote_posix("it's"), [['it'\''s']])
  T.raises("EINVAL", remote.quote_posix, "nul\0byte")
  T.raises("EINVAL", remote.quote_posix, 42)
end)

-- What a Windows program's C runtime does with its command line (CommandLineToArgvW,
-- for the arguments after the program name): the reference the quoting is checked against.
local function command_line_to_argv(s)
  local args, cur, inq, have, i = {}, {}, false, false, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == "\\" then
      local a, b = s:find("\\+", i)
      local n = b - a + 1
      if s:sub(b + 1, b + 1) == '"' then
        cur[#cur + 1] = string.rep("\\", n // 2)
        if n % 2 == 1 then cur[#cur + 1] = '"'; i = b + 2 else i = b + 1 end
      else
        cur[#cur + 1] = string.rep("\\", n); i = b + 1
      end
      have = true
    elseif c == '"' then
      if inq and s:sub(i + 1, i + 1) == '"' then cur[#cur + 1] = '"'; i = i + 2
      else inq = not inq; i = i + 1 end
      have = true
    elseif (c == " " or c == "\t") and not inq then
      if have then args[#args + 1] = table.concat(cur) end
      cur, have = {}, false
      i = i + 1
    else
      cur[#cur + 1] = c; have = true; i = i + 1
    end
  end
  if have then args[#args + 1] = table.concat(cur) end
  return args
end

-- cmd.exe's escape phase for a line with no unescaped quote: ^x is x; a bare
-- metacharacter would be a redirection, pipe or command separator.
local function cmd_unescape(s)
  local out, i = {}, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == "^" then out[#out + 1] = s:sub(i + 1, i + 1); i = i + 2
    elseif c:find('[&|<>()"]') then error("unescaped cmd.exe metacharacter " .. c .. " in " .. s)
    else out[#out + 1] = c; i = i + 1 end
  end
  return table.concat(out)
end

T.test("quote_cmd: cmd.exe then CommandLineToArgvW give back every quotable argument", function()
  local want, words = {}, {}
  for _, a in ipairs(hostile) do
    if not a:find("[%%!\n]") then
      want[#want + 1] = a
      words[#words + 1] = remote.quote_cmd(a)
    end
  end
  T.ok(#want > 30)
  local line = table.concat(words, " ")
  T.eq(command_line_to_argv(cmd_unescape(line)), want)
  T.eq(remote.quote_cmd("plain"), "plain")
  T.eq(remote.quote_cmd(""), '^"^"')
  T.eq(remote.quote_cmd("two words"), '^"two words^"')
  T.eq(remote.quote_cmd("trailing dir\\"), '^"trailing dir\\\\^"')
  T.eq(remote.quote_cmd('say "hi"'), '^"say \\^"hi\\^"^"')
  T.eq(remote.quote_cmd("a&b|c^d<e>f(g)"), "a^&b^|c^^d^<e^>f^(g^)")
  T.eq(remote.quote_cmd("C:\\Program Files\\x"), '^"C:\\Program Files\\x^"')
  T.eq(remote.quote_cmd("é"), "é")
end)

T.test("quote_cmd refuses % and ! expansion, line breaks and NUL, naming the argument", function()
  for _, bad in ipairs { "100%", "%PATH%", "!x!", "a\nb", "a\rb", "nul\0" } do
    local e = T.raises("EINVAL", remote.quote_cmd, bad)
    T.contains(e.message, "remote.quote_cmd")
  end
  T.contains(T.raises("EINVAL", remote.quote_cmd, "%PATH%").message, "%VARIABLE%")
  T.raises("EINVAL", remote.command_line, "cmd", { "echo", "50%" })
end)

-- PowerShell's verbatim string: '' (and each typographic single quote doubled) is one quote.
local function ps_unquote(s)
  local body = s:match("^'(.*)'$")
  assert(body, "not a verbatim string: " .. s)
  local quotes = { "'", "\226\128\152", "\226\128\153", "\226\128\154", "\226\128\155" }
  local out, i = {}, 1
  while i <= #body do
    local matched
    for _, q in ipairs(quotes) do
      if body:sub(i, i + #q - 1) == q then
        assert(body:sub(i + #q, i + 2 * #q - 1) == q, "a lone quote ends the string early in " .. s)
        out[#out + 1] = q
        i = i + 2 * #q
        matched = true
        break
      end
    end
    if not matched then out[#out + 1] = body:sub(i, i); i = i + 1 end
  end
  return table.concat(out)
end

T.test("quote_powershell: verbatim strings, typographic quotes doubled, everything else literal", function()
  for _, a in ipairs(hostile) do T.eq(ps_unquote(remote.quote_powershell(a)), a, a) end
  T.eq(remote.quote_powershell(""), "''")
  T.eq(remote.quote_powershell("it's $x"), "'it''s $x'")
  T.eq(remote.quote_powershell("‘a’"), "'‘‘a’’'")
  T.raises("EINVAL", remote.quote_powershell, "nul\0")
  T.eq(remote.command_line("powershell", { "C:\\Program Files\\x.exe", "a b", "it's", "100%" }),
    "& 'C:\\Program Files\\x.exe' 'a b' 'it''s' '100%'; exit $LASTEXITCODE")
end)

T.test("command_line for PowerShell refuses what Windows PowerShell passes to programs wrongly", function()
  T.contains(T.raises("EINVAL", remote.command_line, "powershell", { "x.exe", "" }).message, "empty")
  T.raises("EINVAL", remote.command_line, "powershell", { "x.exe", 'say "hi"' })
  T.raises("EINVAL", remote.command_line, "powershell", { "x.exe", "C:\\with space\\" })
  T.eq(remote.command_line("powershell", { "x.exe", "C:\\nospace\\" }), "& 'x.exe' 'C:\\nospace\\'; exit $LASTEXITCODE")
  T.raises("EINVAL", remote.command_line, "fish", { "x" })
end)

T.test("the shell probe's answers from sh, cmd.exe and PowerShell are told apart", function()
  T.eq(shell.classify("upk1 %COMSPEC%\n"), "posix")
  T.eq(shell.classify("upk1 C:\\Windows\\system32\\cmd.exe $PSHOME\r\n"), "cmd")
  T.eq(shell.classify("upk1\r\n%COMSPEC%\r\nC:\\Windows\\System32\\WindowsPowerShell\\v1.0\r\n"), "powershell")
  T.eq(shell.classify("upk1\n%COMSPEC%\nC:\\Program Files\\PowerShell\\7\n"), "powershell")
  T.eq(shell.classify("Welcome to the node!\n"), nil)
  T.eq(shell.classify(""), nil)
  -- and the real /bin/sh gives the POSIX answer
  T.eq(shell.classify(proc.run({ "sh", "-c", shell.PROBE }).stdout), "posix")
end)

T.test("a file's SHA-256 on each shell: the command and its output", function()
  local hex = string.rep("ab", 32)
  T.eq(shell.parse_sha256("posix", hex .. "  /tmp/a b\n"), hex)
  T.eq(shell.parse_sha256("posix", "\\" .. hex .. "  /tmp/new\\nline\n"), hex)
  T.eq(shell.parse_sha256("cmd", "SHA256 hash of C:\\a b.msi:\r\n" .. hex .. "\r\nCertUtil: -hashfile command completed successfully.\r\n"), hex)
  T.eq(shell.parse_sha256("cmd", "SHA256 hash of file a:\r\n" .. hex:gsub("%x%x", "%0 ") .. "\r\nCertUtil: done\r\n"), hex)
  T.eq(shell.parse_sha256("powershell", hex:upper() .. "\r\n"), hex)
  T.eq(shell.parse_sha256("posix", "sha256sum: x: No such file or directory\n"), nil)
  T.eq(shell.parse_sha256("cmd", "CertUtil: -hashfile command FAILED\r\n"), nil)
  T.eq(shell.is_missing("sha256sum: /x: No such file or directory\n"), true)
  T.eq(shell.is_missing("CertUtil: -hashfile command FAILED: 0x80070002 (WIN32: 2 ERROR_FILE_NOT_FOUND)\r\n"), true)
  T.eq(shell.is_missing("Get-FileHash : Cannot find path 'C:\\x' because it does not exist.\r\n"), true)
  T.eq(shell.is_missing("sha256sum: /x: Permission denied\n"), false)
  T.eq(shell.sha256_command("cmd", "C:\\a b.msi"), 'certutil -hashfile ^"C:\\a b.msi^" SHA256')
  T.eq(shell.sha256_command("powershell", "C:\\it's.msi"),
    "(Get-FileHash -Algorithm SHA256 -LiteralPath 'C:\\it''s.msi').Hash")
  -- the POSIX command hashes through the real sh and sha256sum
  local dir = T.tmpdir()
  T.write_file(dir .. "/a 'b'", "abc")
  local out = proc.run({ "sh", "-c", shell.sha256_command("posix", dir .. "/a 'b'") }, { ok = { 0 } }).stdout
  T.eq(shell.parse_sha256("posix", out), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
end)

T.test("sequence: several commands in one session, each one's output and exit code apart", function()
  local dir = T.tmpdir()
  local argvs = {
    { "printf", "%s|", "two words", "it's", "é ü 日本語 ✓", "$HOME" },
    { "sh", "-c", "echo err >&2; exit 7" },
    { "printf", "no newline" },
    { "cat" },  -- reads nothing: standard input is /dev/null
    { dir .. "/no-such-program" },
    shell.sha256_argv("posix", dir .. "/missing file"),
  }
  local r = proc.run(shell.sequence("posix", argvs, "upkit-seq-1"), { ok = { 0 } })
  local res = shell.parse_sequence(r.stdout, "upkit-seq-1")
  T.eq(#res, 6)
  T.eq(res[1], { code = 0, stdout = "two words|it's|é ü 日本語 ✓|$HOME|" })
  T.eq(res[2], { code = 7, stdout = "" })
  T.eq(res[3], { code = 0, stdout = "no newline" })
  T.eq(res[4], { code = 0, stdout = "" })
  T.eq(res[5].code, 127)
  T.ok(res[6].code ~= 0 and shell.is_missing(r.stderr), r.stderr)
  T.eq(r.stderr:match("err\n") ~= nil, true)
  -- cut short: only the commands that finished
  T.eq(#shell.parse_sequence("a\nupkit-seq-1 0\nb", "upkit-seq-1"), 1)
  T.eq(shell.parse_sequence("a\r\n\nupkit-seq-1 3\r\n", "upkit-seq-1"), { { code = 3, stdout = "a\r\n" } })
  T.raises("EINVAL", shell.sequence, "posix", argvs, "bad tag")
  T.raises("EINVAL", shell.sequence, "fish", argvs, "t")
  -- the digest program of each shell
  T.write_file(dir .. "/a b", "abc")
  local out = proc.run(shell.sha256_argv("posix", dir .. "/a b"), { ok = { 0 } }).stdout
  T.eq(shell.parse_sha256(shell.sha256_kind("posix"), out), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  T.eq(shell.sha256_argv("cmd", "C:\\a b.msi"), { "certutil", "-hashfile", "C:\\a b.msi", "SHA256" })
  T.eq(shell.sha256_kind("powershell"), "cmd")
end)

T.test("sequence on Windows: a PowerShell script given encoded (UTF-16LE, base64), nothing for cmd.exe to read", function()
  -- RFC 4648's test vectors, then every byte value against base64(1)
  for plain, b64 in pairs { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
                            foobar = "Zm9vYmFy" } do
    T.eq(shell.base64(plain), b64, plain)
  end
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  local dir = T.tmpdir()
  T.write_file(dir .. "/all", table.concat(bytes))
  T.eq(shell.base64(table.concat(bytes)), (T.sh("base64 -w0 " .. T.q(dir .. "/all"))))
  for _, sh in ipairs { "cmd", "powershell" } do
    local argv = shell.sequence(sh, { { "C:\\Program Files\\x.exe", "it's", "‘q’ 日本", "100%", "!a!" },
                                      { "certutil", "-hashfile", "C:\\a.msi", "SHA256" } }, "upkit-seq-2")
    T.eq({ argv[1], argv[2], argv[3], argv[4] }, { "powershell", "-NoProfile", "-NonInteractive", "-EncodedCommand" })
    T.ok(argv[5]:match("^[%w+/=]+$") ~= nil, "base64 only")
    T.eq(#argv, 5)
    remote.command_line(sh, argv)  -- quotable for that shell as it is
    T.write_file(dir .. "/b64", argv[5])
    local script = T.sh("base64 -d " .. T.q(dir .. "/b64") .. " | iconv -f UTF-16LE -t UTF-8")
    T.contains(script, "& 'C:\\Program Files\\x.exe' 'it''s' '‘‘q’’ 日本' '100%' '!a!'; $c = $LASTEXITCODE")
    T.contains(script, "& 'certutil' '-hashfile' 'C:\\a.msi' 'SHA256'; $c = $LASTEXITCODE")
    T.contains(script, "catch { [Console]::Error.WriteLine($_); $c = 9009 }")
    T.contains(script, 'Write-Output ("`nupkit-seq-2 " + $c)')
  end
  -- what Windows PowerShell passes to a program wrongly is refused, as in command_line
  T.raises("EINVAL", shell.sequence, "powershell", { { "x.exe", "" } }, "t")
  T.raises("EINVAL", shell.sequence, "cmd", { { "x.exe", 'say "hi"' } }, "t")
end)

T.test("a damaged transfer is refused: CHECKSUM_MISMATCH names both digests", function()
  remote.check_digest("remote.put", "a", "11", "b", "11")
  local e = T.raises("CHECKSUM_MISMATCH", remote.check_digest, "remote.put", "a", "11", "b", "22")
  T.contains(e.message, "11")
  T.contains(e.message, "22")
  T.eq(e.path, "b")
end)

T.test("targets are ssh://[user@]host[:port]; anything else is EINVAL", function()
  T.eq({ remote.parse_target("ssh://octo2") }, { nil, "octo2", nil })
  T.eq({ remote.parse_target("ssh://admin@octo2.example.org:2222") }, { "admin", "octo2.example.org", 2222 })
  T.eq({ remote.parse_target("ssh://u@[::1]:22") }, { "u", "::1", 22 })
  T.eq({ remote.parse_target("ssh://CORP\\admin@10.0.0.5") }, { "CORP\\admin", "10.0.0.5", nil })
  for _, bad in ipairs { "octo2", "http://octo2", "ssh://", "ssh://-oProxyCommand=x", "ssh://a b", "ssh://h:0",
                         "ssh://h:99999", "ssh://u@h/path", "ssh://@h" } do
    T.raises("EINVAL", remote.parse_target, bad)
  end
end)

T.test("connect checks its options before connecting: an unknown one is EINVAL naming the key", function()
  T.contains(T.raises("EINVAL", remote.connect, "ssh://127.0.0.1", { knownhosts = "x" }).message, "knownhosts")
  T.raises("EINVAL", remote.connect, "ssh://127.0.0.1", { port = "22" })
  T.raises("EINVAL", remote.connect, "ssh://127.0.0.1", { shell = "fish" })
  T.raises("EINVAL", remote.connect, "ssh://127.0.0.1", "opts")
  -- options may not loosen what upkit.remote sets itself
  T.contains(T.raises("EINVAL", remote.connect, "ssh://127.0.0.1",
    { options = { StrictHostKeyChecking = "no" } }).message, "StrictHostKeyChecking")
  T.contains(T.raises("EINVAL", remote.connect, "ssh://127.0.0.1",
    { options = { userknownhostsfile = "/dev/null" } }).message, "opts.known_hosts")
  T.raises("EINVAL", remote.connect, "ssh://127.0.0.1", { options = { ["Bad Key"] = "x" } })
  local e = T.raises("ENOENT", remote.connect, "ssh://127.0.0.1", { known_hosts = "/nonexistent/known_hosts" })
  T.eq(e.path, "/nonexistent/known_hosts")
end)

T.test("the run folder is read from upkit's text output or its JSON summary", function()
  T.eq(remote.run_folder("Running x: y\nrun folder: upkit-runs/x-20260101-000000\n..."), "upkit-runs/x-20260101-000000")
  T.eq(remote.run_folder('{"event":"step"}\n{"event":"summary","run":"/r/x-1","result":"ok"}\n'), "/r/x-1")
  T.eq(remote.run_folder("nothing here\n"), nil)
end)

T.test("sftp batch words: quotes and backslashes escaped, glob characters quoted; line breaks refused", function()
  T.eq(remote.sftp_quote('a "b"\\*?[c]'), '"a \\"b\\"\\\\*?[c]"')
  T.eq(remote.sftp_quote("-x"), '"./-x"')
  T.raises("EINVAL", remote.sftp_quote, "a\nb")
  T.raises("EINVAL", remote.sftp_quote, "")
end)

T.done()
