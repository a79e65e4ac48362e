-- upkit.http: HTTP and REST over libcurl, with connections kept alive.
--
--   local http = require "upkit.http"
--   local c <close> = http.client{ base = url, headers = { ["X-Octopus-ApiKey"] = key },
--                                  timeout = 30, retries = 3 }
--   local r = c:get("/api")          --> { status, headers, body, url, seconds, json = fn }
--   r.status ; r.headers["Content-Type"] (any case) ; r:json()
--   c:put(path, { json = t, expect = { 200 } })
--   c:request{ method =, url = | path =, headers =, body = | json =, query =, expect = }
--   c:download(url, file, { sha256 =, resume = true, progress = fn(done, total) })
--   c:all(requests, { concurrency = 8 })   --> results in order (see below), failures
--
-- An HTTP status is an answer: c:get returns a 404 like a 200. With
-- `expect = { 200, 201 }` (or one number) any other status raises HTTP_STATUS
-- with fields status and body (its start). A transfer that fails raises an
-- error object with a code of docs/errors.md: CONNECT_FAILED (refused,
-- unreachable, a name that does not resolve), TIMEOUT, TLS_FAILED,
-- NETWORK_ERROR (the connection broke, nothing received, too many
-- redirects), AUTH_FAILED, EINVAL (a malformed URL), INTERRUPTED; libcurl's
-- own name and text are in the fields curl_code ("CURLE_COULDNT_CONNECT")
-- and curl_error.
--
-- Retries: connection failures, timeouts, dropped replies and the statuses
-- 429, 502, 503 and 504 are retried with exponential backoff and jitter,
-- for GET, HEAD, PUT, DELETE and OPTIONS; POST and PATCH only with
-- retry_post = true. Retry-After (seconds or an HTTP date) is honoured, capped at
-- retry_after_max. Each retry is logged as a warning.
--
-- Secrets: the values of the headers Authorization, X-Octopus-ApiKey,
-- Cookie, Proxy-Authorization (and any named in secret_headers), apikey=
-- query values, URL passwords and values registered with upkit.log's
-- log.secret are replaced by *** in every error,
-- log line and trace. UPKIT_HTTP_TRACE=1 (or trace = true) prints each
-- request and response to standard error.
--
-- c:all results: results[i] is the response of requests[i], or
-- { error = err } when that request failed (a transfer error after its
-- retries, or HTTP_STATUS when it had `expect`). One failure never raises;
-- the second return value counts the failures.
local native = require "upkit._http"
local json = require "upkit.json"
local upkit = require "upkit"
local log = require "upkit.log"
local util = require "upkit.util"

local M = {}
local Client = native.Client

local DEFAULT_SECRET_HEADERS = { "authorization", "x-octopus-apikey", "cookie", "proxy-authorization" }
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }
local RETRY_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }
local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }
local RETRY_CURL_CODES = {
  CURLE_COULDNT_CONNECT = true, CURLE_OPERATION_TIMEDOUT = true, CURLE_GOT_NOTHING = true,
  CURLE_SEND_ERROR = true, CURLE_RECV_ERROR = true, CURLE_PARTIAL_FILE = true,
  CURLE_HTTP2 = true, CURLE_HTTP2_STREAM = true, CURLE_COULDNT_RESOLVE_HOST = true,
}

local CLIENT_OPTS = {
  base = "string", headers = "table", timeout = "number", connect_timeout = "number",
  retries = "number", backoff = "number", max_backoff = "number", retry_after_max = "number",
  retry_post = "boolean", verify = "boolean", cafile = "string", proxy = "string",
  secret_headers = "table", log = "function", follow = "boolean", max_redirects = "number",
  trace = "boolean",
}
local REQUEST_OPTS = {
  method = "string", url = "string", path = "string", headers = "table", body = "string",
  json = "table", query = "table", expect = "table|number", timeout = "number",
  retries = "number", retry_post = "boolean", follow = "boolean",
}
local DOWNLOAD_OPTS = {
  sha256 = "string", resume = "boolean", progress = "function", timeout = "number",
  retries = "number", headers = "table", query = "table",
}
local ALL_OPTS = { concurrency = "number", retries = "number" }

local check_opts = util.check_opts

-- Redaction ---------------------------------------------------------------

local plain_replace = log.replace_plain

-- The text with apikey= query values, URL passwords and the given secret values replaced.
local function redact(text, secrets)
  text = tostring(text)
  text = text:gsub("([?&][aA][pP][iI][kK][eE][yY]=)([^&#%s\"']+)", function(k, v)
    return k .. "***" .. (v:find(":$") and ":" or "")  -- keep the colon that ends "GET url:"
  end)
  text = text:gsub("(%a[%w+.-]*://[^/@%s:]*:)[^/@%s]*@", "%1***@")
  for _, s in ipairs(secrets or {}) do
    if text:find(s, 1, true) then text = plain_replace(text, s, "***") end
  end
  return log.redact(text)
end
M.redact = redact

-- Configuration -----------------------------------------------------------

local function cfg_of(c)
  if not c:is_open() then upkit.error("CLOSED", "http: the http client is closed") end
  return c:_config()
end

local function header_pairs(t, fn)
  local list = {}
  for k, v in pairs(t or {}) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      upkit.error("EINVAL", string.format("%s: headers must map names to strings", fn))
    end
    list[#list + 1] = { k, tostring(v) }
  end
  table.sort(list, function(a, b) return a[1]:lower() < b[1]:lower() end)
  return list
end

-- http.client(opts) -> client (upkit.http.Client): see the top of this file.
function M.client(opts)
  opts = check_opts("http.client", opts, CLIENT_OPTS)
  local cfg = {
    base = opts.base and opts.base:gsub("/+$", "") or nil,
    headers = header_pairs(opts.headers, "http.client"),
    timeout = opts.timeout or 30,
    connect_timeout = opts.connect_timeout or 10,
    retries = opts.retries or 3,
    backoff = opts.backoff or 0.5,
    max_backoff = opts.max_backoff or 30,
    retry_after_max = opts.retry_after_max or 60,
    retry_post = opts.retry_post or false,
    verify = opts.verify ~= false,
    cafile = opts.cafile,
    proxy = opts.proxy,
    log = opts.log,
    follow = opts.follow ~= false,
    max_redirects = opts.max_redirects or 10,
    trace = opts.trace,
    secret_names = {},
    secrets = {},
  }
  for _, n in ipairs(DEFAULT_SECRET_HEADERS) do cfg.secret_names[n] = true end
  for _, n in ipairs(opts.secret_headers or {}) do cfg.secret_names[tostring(n):lower()] = true end
  for _, h in ipairs(cfg.headers) do
    if cfg.secret_names[h[1]:lower()] and #h[2] >= 3 then
      cfg.secrets[#cfg.secrets + 1] = h[2]
      log.secret(h[2])
    end
  end
  return native.client(cfg)
end

local function emit(cfg, level, msg)
  if cfg.log then return cfg.log(level, msg) end
  log[level]("%s", msg)
end

local function tracing(cfg)
  return cfg.trace or os.getenv("UPKIT_HTTP_TRACE") == "1"
end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
end
M.urlencode = urlencode

local function build_url(cfg, target, query, fn)
  if type(target) ~= "string" or target == "" then
    upkit.error("EINVAL", fn .. ": no url or path given")
  end
  local url = target
  if not target:find("^%a[%w+.-]*://") then
    if not cfg.base then
      upkit.error("EINVAL", string.format("%s: '%s' is a path and the client has no base url", fn, target))
    end
    url = cfg.base .. (target:sub(1, 1) == "/" and "" or "/") .. target
  end
  if query and next(query) then
    local keys = {}
    for k in pairs(query) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do
      local v = query[k]
      if type(v) == "table" then
        for _, x in ipairs(v) do parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(x) end
      else
        parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(v)
      end
    end
    url = url .. (url:find("?", 1, true) and "&" or "?") .. table.concat(parts, "&")
  end
  return url
end

-- Responses ---------------------------------------------------------------

local HeadersMT = {
  __index = function(t, k)
    if type(k) == "string" then return rawget(t, k:lower()) end
  end,
}

local function response_json(r)
  local ok, v = pcall(json.decode, r.body)
  if ok then return v end
  upkit.error("BAD_JSON", string.format("http: %s: the response (status %d) is not JSON: %s",
    r.label or r.url, r.status, tostring(v.message or v)), { status = r.status })
end

local function body_start(body, secrets)
  local s = body:sub(1, 300):gsub("%s+", " ")
  return redact(s, secrets)
end

local function expect_list(expect)
  if type(expect) == "number" then return { expect } end
  return expect
end

local function status_error(st, r)
  local want = {}
  for _, s in ipairs(st.expect) do want[#want + 1] = tostring(s) end
  local start = body_start(r.body, st.secrets)
  return upkit.new_error("HTTP_STATUS", string.format("http: %s: status %d (expected %s)%s",
    st.label, r.status, table.concat(want, ", "), start ~= "" and (": " .. start) or ""),
    { status = r.status, body = start, url = redact(st.nreq.url, st.secrets) })
end

local function finish_response(st, r)
  setmetatable(r.headers, HeadersMT)
  r.json = response_json
  r.label = st.label
  if st.expect then
    for _, s in ipairs(st.expect) do
      if s == r.status then return "done", r end
    end
    return "error", status_error(st, r)
  end
  return "done", r
end

-- Requests ----------------------------------------------------------------

local function same_origin(a, b)
  local function origin(u) return (u:match("^(%a[%w+.-]*://[^/?#]*)") or ""):lower() end
  return origin(a) == origin(b)
end

local function label_of(st)
  st.label = st.nreq.method .. " " .. redact(st.nreq.url, st.secrets)
  st.nreq.label = st.label
end

-- The state of one logical request (its attempts and redirects) from c:request's table.
local function prepare(c, cfg, req, fn)
  req = check_opts(fn, req, REQUEST_OPTS)
  local method = (req.method or "GET"):upper()
  local url = build_url(cfg, req.url or req.path, req.query, fn)
  local hdrs, index = {}, {}
  local function add(name, value)
    local k = name:lower()
    if index[k] then hdrs[index[k]] = { name, value }
    else hdrs[#hdrs + 1] = { name, value }; index[k] = #hdrs end
  end
  for _, h in ipairs(cfg.headers) do add(h[1], h[2]) end
  for _, h in ipairs(header_pairs(req.headers, fn)) do add(h[1], h[2]) end
  local body = req.body
  if req.json ~= nil then
    if body then upkit.error("EINVAL", fn .. ": give body or json, not both") end
    body = json.encode(req.json)
    if not index["content-type"] then add("Content-Type", "application/json") end
  end
  if not index["accept"] then add("Accept", "application/json, */*") end
  local secrets = cfg.secrets
  local extra = {}
  for _, h in ipairs(hdrs) do
    if cfg.secret_names[h[1]:lower()] and #h[2] >= 3 then extra[#extra + 1] = h[2] end
  end
  if #extra > #cfg.secrets then
    secrets = extra
    for _, s in ipairs(extra) do log.secret(s) end
  end
  local lines = {}
  for i, h in ipairs(hdrs) do lines[i] = h[1] .. ": " .. h[2] end
  local st = {
    c = c, cfg = cfg, method = method, attempt = 1, redirects = 0,
    retries = req.retries or cfg.retries,
    retry_post = req.retry_post == nil and cfg.retry_post or req.retry_post,
    follow = req.follow == nil and cfg.follow or req.follow,
    expect = req.expect and expect_list(req.expect),
    secrets = secrets, hdrs = hdrs,
    nreq = {
      method = method, url = url, headers = lines, body = body,
      timeout = req.timeout or cfg.timeout, connect_timeout = cfg.connect_timeout,
      verify = cfg.verify, cafile = cfg.cafile, proxy = cfg.proxy,
    },
  }
  label_of(st)
  return st
end

local function trace_request(st)
  if not tracing(st.cfg) then return end
  local out = { "> " .. st.label }
  for _, h in ipairs(st.hdrs) do
    local secret = st.cfg.secret_names[h[1]:lower()]
    out[#out + 1] = "> " .. h[1] .. ": " .. (secret and "***" or redact(h[2], st.secrets))
  end
  local b = st.nreq.body
  if b and #b > 0 then out[#out + 1] = "> " .. redact(b:sub(1, 1000), st.secrets) end
  io.stderr:write(table.concat(out, "\n"), "\n")
end

local function trace_result(st, ok, r)
  if not tracing(st.cfg) then return end
  local out
  if not ok then
    out = { "< " .. redact(tostring(r), st.secrets) }
  else
    out = { string.format("< %d (%.3f s)", r.status, r.seconds or 0) }
    local names = {}
    for k in pairs(r.headers) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
      local secret = st.cfg.secret_names[k] or k == "set-cookie"
      out[#out + 1] = "< " .. k .. ": " .. (secret and "***" or redact(r.headers[k], st.secrets))
    end
    if r.body and #r.body > 0 then out[#out + 1] = "< " .. redact(r.body:sub(1, 1000), st.secrets) end
  end
  io.stderr:write(table.concat(out, "\n"), "\n")
end

local function can_retry(st)
  return st.attempt <= st.retries and (IDEMPOTENT[st.method] or st.retry_post)
end

local function backoff(st)
  local cfg = st.cfg
  local d = math.min(cfg.max_backoff, cfg.backoff * 2 ^ (st.attempt - 1))
  return d * (0.5 + 0.5 * math.random())
end

-- The delay a Retry-After header asks for: seconds, or an HTTP date (taken
-- against the response's own Date, so that clock skew does not count).
local function retry_after(st, r)
  local v = r.headers["retry-after"]
  if not v then return nil end
  local n = tonumber(v:match("^%s*(%d+)%s*$"))
  if not n then
    local at = native.getdate(v)
    if not at then return nil end
    local now = r.headers["date"] and native.getdate(r.headers["date"]) or os.time()
    n = math.max(0, at - now)
  end
  return math.min(n, st.cfg.retry_after_max)
end

-- Follow a redirect: 303 (and 301/302 after POST) become GET without a body;
-- secret headers are dropped when the redirect leaves the origin.
local function redirect(st, r)
  local to = r.redirect_url
  local n = st.nreq
  if r.status == 303 or ((r.status == 301 or r.status == 302) and n.method == "POST") then
    st.method, n.method, n.body = "GET", "GET", nil
  end
  if not same_origin(n.url, to) then
    local lines = {}
    for _, h in ipairs(st.hdrs) do
      if not st.cfg.secret_names[h[1]:lower()] then lines[#lines + 1] = h[1] .. ": " .. h[2] end
    end
    n.headers = lines
  end
  n.url = to
  st.redirects = st.redirects + 1
  label_of(st)
end

-- What to do after one attempt: "done", r | "error", err | "again", delay.
local function decide(st, ok, r)
  if ok then
    trace_result(st, true, r)
    if st.follow and REDIRECT[r.status] and r.redirect_url then
      if st.redirects >= st.cfg.max_redirects then
        return "error", upkit.new_error("NETWORK_ERROR",
          string.format("http: %s: more than %d redirects", st.label, st.cfg.max_redirects),
          { url = redact(st.nreq.url, st.secrets) })
      end
      redirect(st, r)
      return "again", 0
    end
    if RETRY_STATUS[r.status] and can_retry(st) then
      local d = retry_after(st, r) or backoff(st)
      emit(st.cfg, "warn", string.format("http: %s answered %d; retry %d of %d in %.2f s",
        st.label, r.status, st.attempt, st.retries, d))
      st.attempt = st.attempt + 1
      return "again", d
    end
    return finish_response(st, r)
  end
  if not upkit.is_error(r) then error(r, 0) end
  r.message = redact(r.message, st.secrets)
  trace_result(st, false, r)
  if r.curl_code and RETRY_CURL_CODES[r.curl_code] and can_retry(st) then
    local d = backoff(st)
    emit(st.cfg, "warn", string.format("%s [%s %s]; retry %d of %d in %.2f s",
      r.message, r.code, r.curl_code, st.attempt, st.retries, d))
    st.attempt = st.attempt + 1
    return "again", d
  end
  r.attempts = st.attempt
  return "error", r
end

local function warn_unverified(cfg, what)
  if not cfg.verify then
    emit(cfg, "warn", string.format("http: %s: TLS certificate verification is off (verify = false)", what))
  end
end

-- c:request{ method, url | path, headers, body | json, query, expect, timeout, retries,
--            retry_post, follow } -> response
function Client:request(req)
  local cfg = cfg_of(self)
  local st = prepare(self, cfg, req, "http.request")
  warn_unverified(cfg, st.label)
  while true do
    trace_request(st)
    local ok, r = pcall(self._perform, self, st.nreq)
    local action, v = decide(st, ok, r)
    if action == "done" then return v end
    if action == "error" then error(v, 0) end
    if v > 0 then upkit.sleep(v) end
  end
end

local function verb(method)
  return function(self, path, opts)
    local req = {}
    for k, v in pairs(opts or {}) do req[k] = v end
    req.method = method
    if path ~= nil then req.url = path end
    return self:request(req)
  end
end

-- c:get(path, opts), c:post, c:put, c:delete, c:head, c:patch -> response
Client.get = verb("GET")
Client.post = verb("POST")
Client.put = verb("PUT")
Client.delete = verb("DELETE")
Client.head = verb("HEAD")
Client.patch = verb("PATCH")

-- c:all(requests, { concurrency = 8, retries = }) -> results, failures
function Client:all(requests, opts)
  local cfg = cfg_of(self)
  opts = check_opts("http.all", opts, ALL_OPTS)
  if type(requests) ~= "table" then upkit.error("EINVAL", "http.all: requests must be an array") end
  local results, states, failures = {}, {}, 0
  for i, req in ipairs(requests) do
    if opts.retries and type(req) == "table" and req.retries == nil then
      local copy = {}
      for k, v in pairs(req) do copy[k] = v end
      copy.retries = opts.retries
      req = copy
    end
    states[i] = prepare(self, cfg, req, "http.all")
  end
  if #states > 0 then warn_unverified(cfg, string.format("%d requests", #states)) end
  local pending = {}
  for i = 1, #states do pending[i] = i end
  while #pending > 0 do
    local batch = {}
    for j, i in ipairs(pending) do
      trace_request(states[i])
      batch[j] = states[i].nreq
    end
    local out = self:_all(batch, opts.concurrency or 8)
    local again, wait = {}, 0
    for j, i in ipairs(pending) do
      local r = out[j]
      local action, v = decide(states[i], not upkit.is_error(r), r)
      if action == "done" then
        results[i] = v
      elseif action == "error" then
        results[i] = { error = v }
        failures = failures + 1
      else
        again[#again + 1] = i
        wait = math.max(wait, v)
      end
    end
    pending = again
    if #pending > 0 and wait > 0 then upkit.sleep(wait) end
  end
  return results, failures
end

-- Downloads ---------------------------------------------------------------

local function file_size(path)
  return util.file_size(path) or 0
end

local function sha256_file(path)
  return require("upkit.hash").file("sha256", path)
end

-- c:download(url, file, { sha256, resume = true, progress, timeout, retries, headers, query })
--   -> { file, bytes, sha256, seconds, url, status, resumes }
-- Streams to the resumable temporary of file (fs.temp_path: <folder>/.upkit-tmp/<name>.part),
-- resumes a broken transfer
-- with a Range request (also across runs when resume is on), checks the
-- digest, then renames into place. timeout here is the longest stall.
function Client:download(url, file, opts)
  local cfg = cfg_of(self)
  opts = check_opts("http.download", opts, DOWNLOAD_OPTS)
  if type(file) ~= "string" or file == "" then upkit.error("EINVAL", "http.download: no file given") end
  local st = prepare(self, cfg, { method = "GET", url = url, headers = opts.headers, query = opts.query,
                                  retries = opts.retries }, "http.download")
  st.expect = { 200, 206 }
  st.nreq.timeout = nil
  st.nreq.stall = opts.timeout or cfg.timeout
  st.nreq.encoding = false
  local fs = require "upkit.fs"
  st.nreq.file = fs.temp_path(file, { resumable = true })
  st.nreq.progress = opts.progress
  local resume = opts.resume ~= false
  warn_unverified(cfg, st.label)
  local t0, resumes = upkit.now(), 0
  if not resume then fs.discard(st.nreq.file) end
  local final
  while true do
    st.nreq.file = fs.temp_path(file, { resumable = true })  -- (re)makes the private folder
    st.nreq.offset = resume and file_size(st.nreq.file) or 0
    trace_request(st)
    local ok, r = pcall(self._download, self, st.nreq)
    if ok and r.status == 416 and st.nreq.offset > 0 then
      -- the part file is already whole, or longer than the file now is
      local total = tonumber((r.headers["content-range"] or ""):match("/(%d+)"))
      if total == st.nreq.offset then
        r.status = 206
      else
        fs.discard(st.nreq.file)
        st.nreq.file = fs.temp_path(file, { resumable = true })
        st.nreq.offset = 0
        ok, r = pcall(self._download, self, st.nreq)
      end
    end
    local partial = not ok and upkit.is_error(r) and (r.bytes or 0) > 0
    if partial and resume then st.attempt = 1 end  -- progress was made: the retry budget starts again
    local action, v = decide(st, ok, r)
    if action == "done" then final = v break end
    if action == "error" then
      if v.code == "HTTP_STATUS" then fs.discard(st.nreq.file) end
      error(v, 0)
    end
    if partial and resume then resumes = resumes + 1 end
    if v > 0 then upkit.sleep(v) end
  end
  local size = file_size(st.nreq.file)
  if opts.progress then opts.progress(size, size) end
  local digest = sha256_file(st.nreq.file)
  if opts.sha256 and digest ~= opts.sha256:lower() then
    fs.discard(st.nreq.file)
    upkit.error("CHECKSUM_MISMATCH", string.format(
      "http.download: %s: sha256 %s, expected %s; the download was removed",
      st.label, digest, opts.sha256:lower()), { expected = opts.sha256:lower(), actual = digest })
  end
  fs.commit(st.nreq.file, file)
  return { file = file, bytes = size, sha256 = digest, seconds = upkit.now() - t0,
           url = redact(final.url or st.nreq.url, st.secrets), status = final.status, resumes = resumes }
end

M.Client = Client
return M
