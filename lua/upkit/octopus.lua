-- upkit.octopus: the Octopus Deploy REST API on top of upkit.http.
--
--   local octopus = require "upkit.octopus"
--   local s <close> = octopus.connect{ url = "https://octopus.example.com", api_key = key }
--   s:version()            --> "2023.4.8166"      s:has_spaces() --> true
--   s:maintenance()        --> boolean
--   s:set_maintenance(on)  --> { changed = boolean, on = boolean }
--   s:wait_until_idle{ timeout = 600, interval = 2 } --> { seconds, tasks = 0 }
--   s:status(), s:health(), s:license_status()      --> the API's documents
--   s:server_folders()     --> { artifacts, packages, task_logs, event_exports, raw }
--   s:spaces()             --> array of space documents ({} before 2019.1)
--   for item in s:each("machines", { space =, take = }) do ... end
--   s:list(collection, opts) --> array
--   s:set_disabled(kind, disabled, { space =, concurrency = })
--        kind: machines | workers | projecttriggers | subscriptions
--        --> { changed, unchanged, total, failed = { { id, name, space, error }, ... } }
--   s:nodes()              --> array of node documents (Id, Name, IsInMaintenanceMode, ...)
--   s:drain(node, on)      --> { changed, node }
--   s:wait_task(id, { timeout =, interval = }) --> the finished task (Success)
--   s:export_projects{ projects =, password =, space =, wait = true, timeout = }
--   s:import_projects{ task_id =, password =, source_space =, space =, wait = true, timeout = }
--   s:import_upload{ file =, password =, space =, wait = true, timeout = }
--        --> { task_id, task }            (Octopus 2021.1 and later)
--   s:save_export(task_id, file [, space]) --> { file, bytes }: the package an export task left
--   s:active_tasks()       --> the tasks page of Executing, Cancelling and Queued tasks (every space)
--   s:versions()           --> versions on the download feed, ascending
--   s:installer_url(v)     --> download URL of Octopus.<v>-x64.msi
--   s:get(path, opts), s:put(path, body), s:post(path, body) --> decoded JSON
--   s:close()
--   octopus.versions{ feed_url = } and octopus.installer_url(v [, base]) work without a server.
--   octopus.expand(template, vars) --> a link with its URI template (RFC 6570) expanded
--   octopus.answers(url, { timeout =, verify = }) --> the version /api reports, or nil when nothing answers
--
-- Links in Octopus's documents are URI templates ("/api/projects{?skip,take}"):
-- every link is expanded before use, never used as a plain path.
--
-- Failures raise error objects: AUTH_FAILED (401), PERMISSION_DENIED (403),
-- NOT_FOUND (404), HTTP_STATUS (other statuses; field status, errors),
-- TIMEOUT, TASK_FAILED (field task), UNSUPPORTED (a feature the server's
-- version lacks), and the transport codes of upkit.http.
local http = require "upkit.http"
local version = require "upkit.version"
local upkit = require "upkit"
local log = require "upkit.log"

local M = {}
M.DOWNLOAD_BASE = "https://download.octopusdeploy.com/octopus"
M.FEED_URL = "https://octopus.com/download/upgrade/v3"

local Server = {}
Server.__index = Server

local STATUS_CODES = { [401] = "AUTH_FAILED", [403] = "PERMISSION_DENIED", [404] = "NOT_FOUND" }

M.SPACES_SINCE = "2019.1.0"       -- spaces, mixed-scope tasks
M.HEALTH_SINCE = "2019.4.0"       -- /api/serverstatus/health (OctopusClients #412, April 2019)
M.EXPORT_SINCE = "2021.1.0"       -- project export and import

local pct = http.urlencode

--[[
octopus.expand(template, vars) -> string: RFC 6570 expressions {var},
{/var}, {?a,b} and {&a,b} with the values in vars (absent ones are left out,
so a link with no vars is the template stripped of its expressions).
]]
function M.expand(template, vars)
  if type(template) ~= "string" then upkit.error("EINVAL", "octopus.expand: expected a link template") end
  vars = vars or {}
  return (template:gsub("{([/?&]?)([^}]*)}", function(op, names)
    local out = {}
    for name in names:gmatch("[^,]+") do
      name = name:gsub("%*$", ""):gsub(":%d+$", "")
      local v = vars[name]
      if v ~= nil then
        if op == "?" or op == "&" then out[#out + 1] = name .. "=" .. pct(v)
        else out[#out + 1] = pct(v) end
      end
    end
    if #out == 0 then return "" end
    if op == "?" then return "?" .. table.concat(out, "&") end
    if op == "&" then return "&" .. table.concat(out, "&") end
    if op == "/" then return "/" .. table.concat(out, "/") end
    return table.concat(out, ",")
  end))
end
local KINDS = { machines = true, workers = true, projecttriggers = true, subscriptions = true }

local function check_opts(fn, opts, keys)
  if opts == nil then return {} end
  if type(opts) ~= "table" then upkit.error("EINVAL", fn .. ": options must be a table") end
  for k in pairs(opts) do
    if not keys[k] then upkit.error("EINVAL", string.format("%s: unknown option '%s'", fn, tostring(k))) end
  end
  return opts
end

local function emit(self, level, fmt, ...)
  local msg = string.format(fmt, ...)
  if self.log then return self.log(level, msg) end
  log[level]("%s", msg)
end

-- The error object for an unwanted status: code by status, message with the server's ErrorMessage.
local function api_error(method, path, r)
  local ok, doc = pcall(r.json, r)
  local detail, errors = nil, nil
  if ok and type(doc) == "table" then
    detail = doc.ErrorMessage
    errors = doc.Errors
  end
  detail = detail or r.body:sub(1, 200):gsub("%s+", " ")
  return upkit.new_error(STATUS_CODES[r.status] or "HTTP_STATUS",
    http.redact(string.format("octopus: %s %s: %d %s", method, path, r.status, detail)),
    { status = r.status, errors = errors })
end

-- s:request(method, path, { json =, query = }) -> decoded JSON (or the text of a non-JSON reply)
function Server:request(method, path, opts)
  opts = opts or {}
  local r = self.http:request { method = method, path = path, json = opts.json, query = opts.query }
  if r.status < 200 or r.status > 299 then error(api_error(method, path, r), 0) end
  if r.body == "" then return {} end
  if (r.headers["content-type"] or ""):find("json", 1, true) then return r:json() end
  return r.body
end

function Server:get(path, opts) return self:request("GET", path, opts) end
function Server:put(path, body) return self:request("PUT", path, { json = body }) end
function Server:post(path, body) return self:request("POST", path, { json = body }) end

-- octopus.connect{ url, api_key, timeout, retries, verify, cafile, proxy, log, concurrency,
--                  download_base, feed_url } -> server
-- Reads /api once (version, spaces) and checks the key with /api/users/me.
function M.connect(opts)
  opts = check_opts("octopus.connect", opts, {
    url = true, api_key = true, timeout = true, retries = true, verify = true, cafile = true,
    proxy = true, log = true, concurrency = true, download_base = true, feed_url = true, backoff = true })
  if type(opts.url) ~= "string" then upkit.error("EINVAL", "octopus.connect: url is required") end
  if type(opts.api_key) ~= "string" or opts.api_key == "" then
    upkit.error("EINVAL", "octopus.connect: api_key is required")
  end
  log.secret(opts.api_key)
  local base = opts.url:gsub("/+$", ""):gsub("/api$", "")
  local c = http.client {
    base = base, headers = { ["X-Octopus-ApiKey"] = opts.api_key },
    timeout = opts.timeout or 30, retries = opts.retries, verify = opts.verify, cafile = opts.cafile,
    proxy = opts.proxy, log = opts.log, backoff = opts.backoff,
  }
  local s = setmetatable({
    http = c, url = base, log = opts.log, concurrency = opts.concurrency or 8,
    download_base = opts.download_base or M.DOWNLOAD_BASE, feed_url = opts.feed_url or M.FEED_URL,
    client_opts = { timeout = opts.timeout or 30, retries = opts.retries, verify = opts.verify,
                    cafile = opts.cafile, proxy = opts.proxy, log = opts.log, backoff = opts.backoff },
  }, Server)
  local ok, err = pcall(function()
    s.info = s:get("/api")
    if type(s.info) ~= "table" or not s.info.Version then
      upkit.error("BAD_RESPONSE", string.format("octopus.connect: %s/api is not an Octopus Server API", base))
    end
    s.me = s:get("/api/users/me")
  end)
  if not ok then
    c:close()
    error(err, 0)
  end
  return s
end

function Server:close()
  if self.http then self.http:close() end
end
Server.__close = Server.close
Server.__gc = Server.close

function Server:version() return self.info.Version end

function Server:has_spaces()
  return self.info.Links and self.info.Links.Spaces ~= nil or false
end

local function need_version(self, min, what)
  if version.lt(self:version(), min) then
    upkit.error("UNSUPPORTED", string.format("octopus: %s needs Octopus Server %s or later; %s runs %s",
      what, min, self.url, self:version()))
  end
end

-- The path of a collection, inside the given space when the server has spaces.
function Server:path(collection, space)
  if collection:sub(1, 1) == "/" then return collection end
  if space and self:has_spaces() then return "/api/" .. space .. "/" .. collection end
  return "/api/" .. collection
end

function Server:status() return self:get("/api/serverstatus") end
-- Health: /api/serverstatus/health from 2019.4; before, only /api/serverstatus.
function Server:health()
  if version.lt(self:version(), M.HEALTH_SINCE) then return self:get("/api/serverstatus") end
  return self:get("/api/serverstatus/health")
end
function Server:license_status() return self:get("/api/licenses/licenses-current-status") end

function Server:maintenance()
  return self:get("/api/maintenanceconfiguration").IsInMaintenanceMode == true
end

function Server:set_maintenance(on)
  on = on and true or false
  local cur = self:get("/api/maintenanceconfiguration")
  if (cur.IsInMaintenanceMode == true) == on then
    emit(self, "info", "octopus: maintenance mode is already %s on %s", on and "on" or "off", self.url)
    return { changed = false, on = on }
  end
  cur.IsInMaintenanceMode = on
  cur.Links = nil
  local got = self:put("/api/maintenanceconfiguration", cur)
  emit(self, "info", "octopus: maintenance mode switched %s on %s", on and "on" or "off", self.url)
  return { changed = true, on = got.IsInMaintenanceMode == true }
end

function Server:server_folders()
  local d = self:get("/api/configuration/server-folders/values")
  return { artifacts = d.ArtifactsDirectory, packages = d.PackagesDirectory, task_logs = d.LogsDirectory,
           event_exports = d.EventExportsDirectory, raw = d }
end

function Server:spaces()
  if not self:has_spaces() then return {} end
  return self:list("/api/spaces", { take = 1000 })
end

-- for item in s:each(collection, { space =, take = 100, query = }) do ... end
-- Follows Links["Page.Next"] until the last page.
function Server:each(collection, opts)
  opts = check_opts("octopus.each", opts, { space = true, take = true, query = true })
  local query = { take = opts.take or 100 }
  for k, v in pairs(opts.query or {}) do query[k] = v end
  local nextpath, q = self:path(collection, opts.space), query
  local items, i = {}, 0
  return function()
    while true do
      i = i + 1
      if items[i] ~= nil then return items[i] end
      if not nextpath then return nil end
      local page = self:get(nextpath, { query = q })
      if page.Items == nil then  -- a plain array (".../all")
        items, nextpath = page, nil
      else
        items = page.Items
        nextpath = page.Links and page.Links["Page.Next"] and M.expand(page.Links["Page.Next"])
      end
      q, i = nil, 0
    end
  end
end

function Server:list(collection, opts)
  local out = {}
  for item in self:each(collection, opts) do out[#out + 1] = item end
  return out
end

-- Every space id to work on: the one asked for, every space, or nil (no spaces).
local function space_ids(self, space)
  if space then return { space } end
  local ids = {}
  for _, sp in ipairs(self:spaces()) do ids[#ids + 1] = sp.Id end
  if #ids == 0 then ids[1] = false end
  return ids
end

-- The resources of a kind in one space (triggers: through every project's triggers).
local function resources(self, kind, space)
  local sp = space or nil
  if kind ~= "projecttriggers" then return self:list(kind, { space = sp, take = 1000 }) end
  local projects = self:list("projects", { space = sp, take = 1000 })
  local reqs = {}
  for i, p in ipairs(projects) do
    reqs[i] = { path = (p.Links and p.Links.Triggers and M.expand(p.Links.Triggers))
                       or self:path("projects/" .. p.Id .. "/triggers", sp),
                query = { take = 1000 }, expect = 200 }
  end
  local out = {}
  local res = self.http:all(reqs, { concurrency = self.concurrency })
  for i, r in ipairs(res) do
    if r.error then error(r.error, 0) end
    local page = r:json()
    for _, t in ipairs(page.Items) do out[#out + 1] = t end
    local nextpath = page.Links and page.Links["Page.Next"]
    while nextpath do
      page = self:get(M.expand(nextpath))
      for _, t in ipairs(page.Items) do out[#out + 1] = t end
      nextpath = page.Links and page.Links["Page.Next"]
    end
    reqs[i] = nil
  end
  return out
end

-- s:set_disabled(kind, disabled, { space =, concurrency = }) -> { changed, unchanged, total, failed }
-- Whole-resource PUTs, many at once; one failure does not stop the others.
function Server:set_disabled(kind, disabled, opts)
  opts = check_opts("octopus.set_disabled", opts, { space = true, concurrency = true })
  if not KINDS[kind] then
    upkit.error("EINVAL", string.format(
      "octopus.set_disabled: unknown kind '%s' (machines, workers, projecttriggers, subscriptions)", tostring(kind)))
  end
  if disabled == nil then disabled = true end
  disabled = disabled and true or false
  local result = { changed = 0, unchanged = 0, total = 0, failed = {} }
  if kind == "workers" and version.lt(self:version(), "2018.7.0") then
    result.skipped = "workers need Octopus Server 2018.7 or later"
    return result
  end
  for _, space in ipairs(space_ids(self, opts.space)) do
    local sp = space or nil
    local todo, reqs = {}, {}
    for _, item in ipairs(resources(self, kind, sp)) do
      result.total = result.total + 1
      if (item.IsDisabled == true) == disabled then
        result.unchanged = result.unchanged + 1
      else
        item.IsDisabled = disabled
        local path = self:path(kind .. "/" .. item.Id, sp)
        item.Links = nil
        todo[#todo + 1] = item
        reqs[#reqs + 1] = { method = "PUT", path = path, json = item }
      end
    end
    local res = self.http:all(reqs, { concurrency = opts.concurrency or self.concurrency })
    for i, r in ipairs(res) do
      local err = r.error
      if not err and (r.status < 200 or r.status > 299) then err = api_error("PUT", reqs[i].path, r) end
      if err then
        result.failed[#result.failed + 1] = { id = todo[i].Id, name = todo[i].Name, space = sp, error = err }
      else
        result.changed = result.changed + 1
      end
    end
  end
  if #result.failed > 0 then
    emit(self, "warn", "octopus: %s: %d of %d could not be %s", kind, #result.failed, result.total,
      disabled and "disabled" or "enabled")
  end
  return result
end

-- s:active_tasks() -> the first page of Executing, Cancelling and Queued tasks. From 2019.1
-- tasks are mixed-scope: every space and the system tasks are asked for, as
-- Octopus's own client does (spaces=all&includeSystem=true).
function Server:active_tasks()
  local q = { states = "Executing,Cancelling,Queued", take = 100 }
  if version.ge(self:version(), M.SPACES_SINCE) then q.spaces = "all"; q.includeSystem = "true" end
  return self:get("/api/tasks", { query = q })
end

-- s:wait_until_idle{ timeout = 600, interval = 2 } -> { seconds, tasks = 0 }
function Server:wait_until_idle(opts)
  opts = check_opts("octopus.wait_until_idle", opts, { timeout = true, interval = true })
  local timeout, interval = opts.timeout or 600, opts.interval or 2
  local t0 = upkit.now()
  while true do
    local page = self:active_tasks()
    local n = page.TotalResults or #(page.Items or {})
    if n == 0 then return { seconds = upkit.now() - t0, tasks = 0 } end
    if upkit.now() - t0 >= timeout then
      local names = {}
      for _, t in ipairs(page.Items or {}) do names[#names + 1] = string.format("%s (%s, %s)", t.Id, t.Name, t.State) end
      upkit.error("TIMEOUT", string.format("octopus: %d task(s) still running or queued on %s after %g s: %s",
        n, self.url, timeout, table.concat(names, ", ")), { tasks = page.Items })
    end
    upkit.sleep(interval)
  end
end

-- s:wait_task(id, { timeout = 600, interval = 1 }) -> the task once it finished with Success
function Server:wait_task(id, opts)
  opts = check_opts("octopus.wait_task", opts, { timeout = true, interval = true })
  local timeout, interval = opts.timeout or 600, opts.interval or 1
  local t0 = upkit.now()
  while true do
    local t = self:get("/api/tasks/" .. id)
    if t.IsCompleted or t.State == "Success" or t.State == "Failed" or t.State == "Canceled"
        or t.State == "TimedOut" then
      if t.State ~= "Success" then
        upkit.error("TASK_FAILED", string.format("octopus: task %s (%s) ended %s%s", id, t.Name or "?", t.State,
          t.ErrorMessage and (": " .. t.ErrorMessage) or ""), { task = t })
      end
      return t
    end
    if upkit.now() - t0 >= timeout then
      upkit.error("TIMEOUT", string.format("octopus: task %s is still %s after %g s", id, t.State, timeout),
        { task = t })
    end
    upkit.sleep(interval)
  end
end

function Server:nodes()
  local ok, doc = pcall(self.get, self, "/api/octopusservernodes/summary")
  if ok then return doc.Nodes end
  if not (upkit.is_error(doc) and doc.code == "NOT_FOUND") then error(doc, 0) end
  return self:list("/api/octopusservernodes")
end

-- s:drain(node, on) -> { changed, node }; node is an id, a name or a node document.
function Server:drain(node, on)
  if on == nil then on = true end
  on = on and true or false
  local id = type(node) == "table" and node.Id or node
  if type(id) ~= "string" then upkit.error("EINVAL", "octopus.drain: give a node id, name or document") end
  if not id:find("^OctopusServerNodes%-") then
    for _, n in ipairs(self:nodes()) do
      if n.Name == id then id = n.Id end
    end
  end
  local doc = self:get("/api/octopusservernodes/" .. id)
  if (doc.IsInMaintenanceMode == true) == on then
    emit(self, "info", "octopus: node %s is already %s", doc.Name or id, on and "draining" or "not draining")
    return { changed = false, node = doc }
  end
  doc.IsInMaintenanceMode = on
  doc.Links = nil
  return { changed = true, node = self:put("/api/octopusservernodes/" .. id, doc) }
end

local function password_body(pw)
  if type(pw) ~= "string" or pw == "" then upkit.error("EINVAL", "octopus: a password is required") end
  log.secret(pw)
  return { HasValue = true, NewValue = pw }
end

local function task_result(self, reply, opts, what)
  local tid = reply.TaskId
  if not tid then upkit.error("BAD_RESPONSE", "octopus: " .. what .. " returned no TaskId") end
  local out = { task_id = tid }
  if opts.wait ~= false then out.task = self:wait_task(tid, { timeout = opts.timeout, interval = opts.interval }) end
  return out
end

-- s:export_projects{ projects = { ids or names }, password =, space =, wait = true, timeout = }
function Server:export_projects(opts)
  opts = check_opts("octopus.export_projects", opts,
    { projects = true, password = true, space = true, wait = true, timeout = true, interval = true })
  need_version(self, M.EXPORT_SINCE, "exporting projects")
  local space = opts.space or "Spaces-1"
  local byname = {}
  for p in self:each("projects", { space = space, take = 1000 }) do byname[p.Name] = p.Id; byname[p.Id] = p.Id end
  local ids = {}
  for _, p in ipairs(opts.projects or {}) do
    ids[#ids + 1] = byname[p] or upkit.error("NOT_FOUND", string.format("octopus: no project '%s' in %s", p, space))
  end
  if #ids == 0 then upkit.error("EINVAL", "octopus.export_projects: give at least one project") end
  local reply = self:post(self:path("projects/import-export/export", space),
    { IncludedProjectIds = ids, Password = password_body(opts.password) })
  return task_result(self, reply, opts, "the export")
end

-- s:import_projects{ task_id =, password =, source_space =, space =, wait = true, timeout = }
function Server:import_projects(opts)
  opts = check_opts("octopus.import_projects", opts,
    { task_id = true, password = true, source_space = true, space = true, wait = true, timeout = true, interval = true })
  need_version(self, M.EXPORT_SINCE, "importing projects")
  if type(opts.task_id) ~= "string" then upkit.error("EINVAL", "octopus.import_projects: task_id is required") end
  local space = opts.space or "Spaces-1"
  local reply = self:post(self:path("projects/import-export/import", space), {
    ImportSource = { Type = "space", SpaceId = opts.source_space or space, TaskId = opts.task_id },
    Password = password_body(opts.password) })
  return task_result(self, reply, opts, "the import")
end

--[[
s:save_export(task_id, file [, space]) -> { file, bytes }: downloads the package
a project export task left as an artifact (2021.1+) into file, mode 0600
(sensitive values in it are sealed with the export password).
]]
function Server:save_export(task_id, file, space)
  local items = self:get(self:path("artifacts", space or "Spaces-1"), { query = { regarding = task_id } }).Items or {}
  local content = items[1] and items[1].Links and items[1].Links.Content
  if not content then
    upkit.error("NOT_FOUND", string.format("octopus: the export task %s left no package among its artifacts", task_id))
  end
  local r = self.http:request { method = "GET", path = M.expand(content) }
  if r.status ~= 200 then error(api_error("GET", M.expand(content), r), 0) end
  if r.body == "" then
    upkit.error("BAD_RESPONSE", string.format("octopus: the export package of task %s is empty", task_id))
  end
  require("upkit.fs").write(file, r.body, { mode = "0600" })
  return { file = file, bytes = #r.body }
end

-- A multipart/form-data body with one file part: body, content type.
local function multipart(field, filename, data)
  local h = require("upkit.hash").new("sha256")
  local boundary = "upkit-" .. h:update(data):hex():sub(1, 24)
  h:close()
  local body = table.concat {
    "--", boundary, "\r\n",
    'Content-Disposition: form-data; name="', field, '"; filename="', filename, '"\r\n',
    "Content-Type: application/octet-stream\r\n\r\n", data, "\r\n--", boundary, "--\r\n" }
  return body, "multipart/form-data; boundary=" .. boundary
end

--[[
s:import_upload{ file =, password =, space =, wait = true, timeout = } -> { task_id, task, uploaded_file_id }
Imports an export package saved from another server (2021.1+): the zip is
uploaded with a multipart POST to .../projects/import-export/import-files,
then imported with an ImportSource { Type = "upload", UploadedFileId }.
]]
function Server:import_upload(opts)
  opts = check_opts("octopus.import_upload", opts,
    { file = true, password = true, space = true, wait = true, timeout = true, interval = true })
  need_version(self, M.EXPORT_SINCE, "importing projects")
  if type(opts.file) ~= "string" then upkit.error("EINVAL", "octopus.import_upload: file is required") end
  local space = opts.space or "Spaces-1"
  local data = require("upkit.fs").read(opts.file)
  -- The uploaded file is known by its name (OctopusDeploy-Api's ExportImportProjects.ps1);
  -- the upload's answer body is not documented and not read.
  local id = opts.file:match("([^/\\]+)$")
  local body, ctype = multipart("fileData", id, data)
  local path = self:path("projects/import-export/import-files", space)
  local r = self.http:request { method = "POST", path = path, body = body, headers = { ["Content-Type"] = ctype } }
  if r.status < 200 or r.status > 299 then error(api_error("POST", path, r), 0) end
  local reply = self:post(self:path("projects/import-export/import", space), {
    ImportSource = { Type = "upload", UploadedFileId = id }, Password = password_body(opts.password) })
  local out = task_result(self, reply, opts, "the import")
  out.uploaded_file_id = id
  return out
end

-- octopus.answers(url, { timeout =, verify = }) -> the Version of url's /api (anonymous), or nil
-- when nothing answers there (connection refused, timeout, not an Octopus API).
function M.answers(url, opts)
  opts = check_opts("octopus.answers", opts, { timeout = true, verify = true })
  local base = url:gsub("/+$", ""):gsub("/api$", "")
  local c <close> = http.client { base = base, timeout = opts.timeout or 5, verify = opts.verify, retries = 0 }
  local ok, r = pcall(c.get, c, "/api")
  if not ok or r.status ~= 200 then return nil end
  local jok, doc = pcall(r.json, r)
  return jok and type(doc) == "table" and type(doc.Version) == "string" and doc.Version or nil
end

-- octopus.versions{ feed_url =, timeout =, verify =, cafile =, proxy = } -> version strings, ascending
function M.versions(opts)
  opts = check_opts("octopus.versions", opts,
    { feed_url = true, timeout = true, verify = true, cafile = true, proxy = true, retries = true, log = true,
      backoff = true })
  local c <close> = http.client { timeout = opts.timeout or 30, verify = opts.verify, cafile = opts.cafile,
                                  proxy = opts.proxy, retries = opts.retries, log = opts.log, backoff = opts.backoff }
  local url = opts.feed_url or M.FEED_URL
  local feed = c:get(url, { expect = 200 }):json()
  local seen, out = {}, {}
  for _, e in ipairs(feed) do
    local v = type(e) == "table" and e.Version or e
    if type(v) == "string" and not seen[v] and pcall(version.parse, v) then
      seen[v] = true
      out[#out + 1] = v
    end
  end
  return version.sort(out)
end

-- octopus.installer_url(v [, base]) -> base .. "/Octopus.<v>-x64.msi"
function M.installer_url(v, base)
  version.parse(v)
  return (base or M.DOWNLOAD_BASE):gsub("/+$", "") .. "/Octopus." .. v .. "-x64.msi"
end

function Server:versions()
  local o = { feed_url = self.feed_url }
  for k, v in pairs(self.client_opts) do o[k] = v end
  return M.versions(o)
end

function Server:installer_url(v) return M.installer_url(v, self.download_base) end

M.Server = Server
return M
