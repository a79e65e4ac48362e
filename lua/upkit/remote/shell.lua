-- upkit.remote.shell: what upkit.remote sends to a node's shell, per shell.
--
-- OpenSSH hands a remote command to the account's default shell as one
-- string. This module quotes argv arrays for the three shells a node may
-- have, recognizes which one answered a probe, and builds the commands
-- upkit.remote needs (a command under a watchdog, a file's SHA-256).
--
--   quote_posix(s)       'single quoted'; any byte but NUL
--   quote_cmd(s)         for a program started by cmd.exe: CommandLineToArgvW
--                        quoting, then every cmd.exe metacharacter escaped with ^;
--                        refuses %, ! (expansion that no quoting stops), CR, LF, NUL
--   quote_powershell(s)  a PowerShell verbatim string ('...', quotes doubled,
--                        the typographic single quotes included); refuses NUL
--   command_line(shell, argv) -> the whole command line for that shell
--   classify(probe_output) -> "posix" | "cmd" | "powershell" | nil
--   sha256_command(shell, path) -> command line; parse_sha256(shell, output) -> hex or nil
--   sha256_argv(shell, path) -> argv printing the digest (parse_sha256(sha256_kind(shell), out))
--   sequence(shell, argvs, tag) -> one argv running several in turn; parse_sequence(out, tag)
local upkit = require "upkit"

local M = {}

-- The probe: each shell expands a different one of its words.
-- POSIX sh: "upk1 %COMSPEC%" (and $PSHOME empty); cmd.exe: "upk1 C:\...\cmd.exe $PSHOME";
-- PowerShell: one word per line, %COMSPEC% kept.
M.PROBE = "echo upk1 %COMSPEC% $PSHOME"

local function refuse(fn, s, why)
  upkit.error("EINVAL", string.format("remote.%s: cannot quote %q safely: %s", fn, s, why))
end

local function checkstr(fn, s)
  if type(s) ~= "string" then
    upkit.error("EINVAL", string.format("remote.%s: argument must be a string, got %s", fn, type(s)))
  end
  if s:find("\0", 1, true) then refuse(fn, s, "it holds a NUL byte") end
end

function M.quote_posix(s)
  checkstr("quote_posix", s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- CommandLineToArgvW's rules: quotes around an argument with blanks or
-- quotes; backslashes are literal unless they precede a quote, so a run of
-- n backslashes before a quote (or before the closing quote) becomes 2n.
local function argv_quote(s)
  if s ~= "" and not s:find('[ \t\n\v"]') then return s end
  local out, i = { '"' }, 1
  while true do
    local a, b = s:find("\\*", i)
    local n = b - a + 1
    local c = s:sub(b + 1, b + 1)
    if c == "" then
      out[#out + 1] = string.rep("\\", 2 * n)
      break
    elseif c == '"' then
      out[#out + 1] = string.rep("\\", 2 * n + 1) .. '"'
    else
      out[#out + 1] = string.rep("\\", n) .. c
    end
    i = b + 2
  end
  out[#out + 1] = '"'
  return table.concat(out)
end
M.argv_quote = argv_quote

function M.quote_cmd(s)
  checkstr("quote_cmd", s)
  if s:find("[\r\n]") then refuse("quote_cmd", s, "cmd.exe ends a command at a line break") end
  if s:find("%", 1, true) then
    refuse("quote_cmd", s, "cmd.exe expands %VARIABLE% on a command line and no escape stops it")
  end
  if s:find("!", 1, true) then
    refuse("quote_cmd", s, "cmd.exe expands !VARIABLE! when delayed expansion is on")
  end
  -- every quote is escaped too, so cmd.exe never enters its quoted state and
  -- removes each ^ once, leaving exactly argv_quote's text for the program
  return (argv_quote(s):gsub('[()<>&|^"]', "^%0"))
end

-- U+2018..U+201B count as single quotes in PowerShell: doubled like '.
function M.quote_powershell(s)
  checkstr("quote_powershell", s)
  local q = s:gsub("'", "''"):gsub("\226\128[\152-\155]", "%0%0")
  return "'" .. q .. "'"
end

-- Windows PowerShell 5.1 rebuilds a native program's command line itself and
-- drops empty arguments, and passes embedded double quotes and a trailing
-- backslash in a quoted argument wrongly: such arguments are refused.
local function ps_native_arg(s)
  if s == "" then refuse("command_line", s, "PowerShell drops an empty argument to a program") end
  if s:find('"', 1, true) then
    refuse("command_line", s, "Windows PowerShell passes double quotes to a program wrongly")
  end
  if s:find("[ \t]") and s:find("\\$") then
    refuse("command_line", s, "Windows PowerShell passes a trailing backslash in a quoted argument wrongly")
  end
  return M.quote_powershell(s)
end

function M.command_line(shell, argv)
  local out = {}
  if shell == "posix" then
    for i, a in ipairs(argv) do out[i] = M.quote_posix(a) end
    return table.concat(out, " ")
  elseif shell == "cmd" then
    for i, a in ipairs(argv) do out[i] = M.quote_cmd(a) end
    return table.concat(out, " ")
  elseif shell == "powershell" then
    out[1] = "& " .. M.quote_powershell(argv[1])
    for i = 2, #argv do out[i] = ps_native_arg(argv[i]) end
    return table.concat(out, " ") .. "; exit $LASTEXITCODE"
  end
  upkit.error("EINVAL", string.format("remote: unknown shell '%s' (posix, cmd or powershell)", tostring(shell)))
end

function M.classify(out)
  if type(out) ~= "string" then return nil end
  out = out:gsub("\r", "")
  if out:match("^upk1 .-%$PSHOME%s*$") and not out:find("%COMSPEC%", 1, true) then return "cmd" end
  if out:match("^upk1\n%%COMSPEC%%\n") then return "powershell" end
  if out:match("^upk1 %%COMSPEC%%%s*$") then return "posix" end
  return nil
end

-- The POSIX wrapper of r:run. The session's standard input stays open while
-- the coordinator's ssh client runs; a watchdog reads it, and when it ends
-- (the client was killed, the connection dropped) ends the session's
-- process group: TERM, then KILL after grace seconds. sshd starts every
-- session in a process group of its own (setsid), so that group is exactly
-- the command and what it started.
--   spec: { grace, cwd, stdin (remote path), env = { NAME = value|false }, env_mode }
function M.posix_wrapper(argv, spec)
  local q = M.quote_posix
  local lines = {
    "exec 3<&0",
    string.format("(trap '' TERM; cat >/dev/null; kill -TERM 0; sleep %d; kill -KILL 0) <&3 >/dev/null 2>&1 &",
      math.max(0, math.ceil(spec.grace or 5))),
    "w=$!",
    "exec 3<&-",
  }
  local names = {}
  for k in pairs(spec.env or {}) do names[#names + 1] = k end
  table.sort(names)
  local prefix = {}
  if spec.env_mode == "replace" then
    prefix = { "env", "-i" }
    for _, k in ipairs(names) do
      if spec.env[k] ~= false then prefix[#prefix + 1] = k .. "=" .. tostring(spec.env[k]) end
    end
  else
    for _, k in ipairs(names) do
      local v = spec.env[k]
      lines[#lines + 1] = v == false and ("unset " .. k) or ("export " .. q(k .. "=" .. tostring(v)))
    end
  end
  if spec.cwd then
    lines[#lines + 1] = "cd -- " .. q(spec.cwd) ..
      " || { printf '%s\\n' upkit-remote-no-cwd >&2; kill -KILL $w; exit 127; }"
  end
  local words = {}
  for i, a in ipairs(prefix) do words[i] = q(a) end
  for _, a in ipairs(argv) do words[#words + 1] = q(a) end
  lines[#lines + 1] = table.concat(words, " ") .. " <" .. (spec.stdin and q(spec.stdin) or "/dev/null")
  lines[#lines + 1] = "s=$?; kill -KILL $w 2>/dev/null; exit $s"
  return "exec /bin/sh -c " .. q(table.concat(lines, "\n")) .. " upkit-remote"
end
M.NO_CWD = "upkit-remote-no-cwd\n"

function M.sha256_command(shell, path)
  if shell == "posix" then
    return "exec /bin/sh -c " .. M.quote_posix(
      'if command -v sha256sum >/dev/null 2>&1; then sha256sum -- "$1"; else shasum -a 256 -- "$1"; fi') ..
      " upkit-sha256 " .. M.quote_posix(path)
  elseif shell == "cmd" then
    return "certutil -hashfile " .. M.quote_cmd(path) .. " SHA256"
  elseif shell == "powershell" then
    return "(Get-FileHash -Algorithm SHA256 -LiteralPath " .. M.quote_powershell(path) .. ").Hash"
  end
  upkit.error("EINVAL", string.format("remote: unknown shell '%s'", tostring(shell)))
end

-- sha256sum/shasum: "hex  name"; certutil: a header line, then the hex (older
-- versions put a space between bytes); Get-FileHash: the hex in capitals.
function M.parse_sha256(shell, out)
  if type(out) ~= "string" then return nil end
  local hex
  if shell == "cmd" then
    for line in out:gmatch("[^\r\n]+") do
      local h = line:gsub("%s", "")
      if #h == 64 and h:match("^%x+$") then hex = h break end
    end
  elseif shell == "powershell" then
    hex = out:match("^%s*(%x+)%s*$")
  else
    hex = out:match("^\\?(%x+) ")
  end
  if hex and #hex == 64 then return hex:lower() end
  return nil
end

-- A program printing a file's SHA-256: sha256sum (or shasum) on POSIX, certutil on
-- Windows (cmd.exe and PowerShell alike); its output reads with parse_sha256(sha256_kind(shell), out).
function M.sha256_argv(shell, path)
  if shell == "posix" then
    return { "/bin/sh", "-c", 'if command -v sha256sum >/dev/null 2>&1; then sha256sum -- "$1"; else shasum -a 256 -- "$1"; fi',
             "upkit-sha256", path }
  end
  return { "certutil", "-hashfile", path, "SHA256" }
end
function M.sha256_kind(shell) return shell == "posix" and "posix" or "cmd" end

-- UTF-8 text as UTF-16LE (what PowerShell's -EncodedCommand takes).
local function utf16le(s)
  local out = {}
  for _, c in utf8.codes(s) do
    if c >= 0x10000 then
      c = c - 0x10000
      local hi, lo = 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF)
      out[#out + 1] = string.char(hi & 0xFF, hi >> 8, lo & 0xFF, lo >> 8)
    else
      out[#out + 1] = string.char(c & 0xFF, c >> 8)
    end
  end
  return table.concat(out)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local q = {}
    for k = 1, 4 do
      local v = (n >> (6 * (4 - k))) & 63
      q[k] = B64:sub(v + 1, v + 1)
    end
    if not b then q[3] = "=" end
    if not c then q[4] = "=" end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end

--[[
sequence(shell, argvs, tag) -> one argv that runs each argv in turn on a node
of that shell (one ssh session for several commands) and prints, after each
one's output, a line "TAG CODE" with its exit code; each reads nothing from
standard input. On POSIX it is /bin/sh -c; on cmd.exe and PowerShell, a
Windows PowerShell script given with -EncodedCommand (base64 of UTF-16LE: no
character of it for cmd.exe or PowerShell to read), where a program that
cannot be started reports code 9009 as cmd.exe does. tag: letters, digits, '-'.
parse_sequence(out, tag) -> { { code =, stdout = }, ... }: one entry per
command that finished (fewer than argvs when the sequence was cut short).
]]
function M.sequence(shell, argvs, tag)
  if not tostring(tag):match("^[%w%-]+$") then refuse("sequence", tostring(tag), "a tag is letters, digits and '-'") end
  local lines = {}
  if shell == "posix" then
    for _, argv in ipairs(argvs) do
      lines[#lines + 1] = M.command_line("posix", argv) .. " </dev/null; printf '\\n%s %d\\n' " .. tag .. " $?"
    end
    return { "/bin/sh", "-c", table.concat(lines, "\n"), "upkit-sequence" }
  elseif shell ~= "cmd" and shell ~= "powershell" then
    upkit.error("EINVAL", string.format("remote: unknown shell '%s'", tostring(shell)))
  end
  for _, argv in ipairs(argvs) do
    local words = { "&", M.quote_powershell(argv[1]) }
    for i = 2, #argv do words[#words + 1] = ps_native_arg(argv[i]) end
    lines[#lines + 1] = "try { $global:LASTEXITCODE = 0; " .. table.concat(words, " ") ..
      "; $c = $LASTEXITCODE } catch { [Console]::Error.WriteLine($_); $c = 9009 }"
    lines[#lines + 1] = "Write-Output (\"`n" .. tag .. " \" + $c)"
  end
  return { "powershell", "-NoProfile", "-NonInteractive", "-EncodedCommand",
           M.base64(utf16le(table.concat(lines, "\r\n"))) }
end

function M.parse_sequence(out, tag)
  local res, pos, pat = {}, 1, "\n" .. tag:gsub("%-", "%%-") .. " (%-?%d+)\r?\n"
  while true do
    local a, b, code = out:find(pat, pos)
    if not a then return res end
    res[#res + 1] = { code = math.tointeger(tonumber(code)), stdout = out:sub(pos, a - 1) }
    pos = b + 1
  end
end

-- Does a hashing command's output say the file is not there? sha256sum,
-- certutil (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND) and Get-FileHash.
function M.is_missing(out)
  return out:find("No such file", 1, true) ~= nil or out:find("_NOT_FOUND", 1, true) ~= nil
    or out:find("Cannot find path", 1, true) ~= nil
end

-- Is path absolute on that shell's system?
function M.is_absolute(shell, path)
  if shell == "posix" then return path:sub(1, 1) == "/" end
  return path:match("^%a:[\\/]") ~= nil or path:match("^[\\/][\\/]") ~= nil
end

return M
