-- preflight: read-only checks before an upgrade; changes nothing.
--
-- Server reachable and its version known; the target version exists on the
-- download site and the upgrade path (with the documented intermediate stops);
-- licence compliance; SQL Server version supported by the target; free disk for
-- the backups; no other node running (high availability); no task executing;
-- and the notes for 3.x sources (Tentacle TLS 1.2 from 3.1, NuGet v1 feeds from
-- 3.4, the config file from 3.5). Every finding is reported; the last step fails
-- when any check failed.
local upkit = require "upkit"
local fs = require "upkit.fs"
local version = require "upkit.version"
local U = require "upkit.upgrade"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "file_version", "db", "backup_dir",
  "download_url", "versions_feed", "target_version", "timeout", "verify_tls")

-- Each check returns { problem = "..." } or { note = "..." }; the verdict collects them.
local function finding(name, describe, fn)
  return {
    name = name, describe = describe,
    run = function(ctx)
      local ok, problem, note = pcall(fn, ctx)
      if not ok then problem = require("upkit.procedure").errmsg(problem) end
      if problem then ctx.warn("%s: %s", name, problem) end
      if note then ctx.log("%s", note) end
      return { ["problem:" .. name] = problem or false }
    end,
  }
end

local function sql_server_major(db)
  local row = db:first("SELECT CAST(SERVERPROPERTY('ProductVersion') AS NVARCHAR(128)) AS v")
  return tonumber(tostring(row.v):match("^(%d+)"))
end

return {
  name = "preflight",
  summary = "Read-only checks before an Octopus upgrade (changes nothing)",
  params = params,
  steps = {
    S.connect(),
    finding("target-version", "the target version exists and the upgrade path is known", function(ctx)
      local target = U.target(ctx)
      local hops = U.upgrade_path(ctx.state.source_version, target, U.released_versions(ctx))
      ctx.state.target = target
      if #hops > 1 then
        return nil, string.format("upgrade %s -> %s needs intermediate stops: %s", ctx.state.source_version, target,
                                  table.concat(hops, " -> "))
      end
      return nil, string.format("upgrade %s -> %s needs no intermediate stop", ctx.state.source_version, target)
    end),
    finding("licence", "the licence is compliant", function(ctx)
      local st = U.api(ctx):license_status()
      if st.IsCompliant == false then
        local msgs = {}
        for _, m in ipairs(st.Messages or {}) do msgs[#msgs + 1] = type(m) == "table" and (m.Message or "") or tostring(m) end
        return "the licence is not compliant: " .. table.concat(msgs, "; ")
      end
      return nil, "licence is compliant"
    end),
    finding("database-version", "the database's installation history agrees with the running server", function(ctx)
      local db <close> = U.connect(U.db_connection(ctx))
      local schema = U.schema_version(db)
      if not schema then
        return "the database's OctopusServerInstallationHistory is empty: the schema's version is unknown"
      end
      if version.compare(schema, ctx.state.source_version) ~= 0 then
        return string.format("the database was last upgraded to %s but the server runs %s", schema,
                             ctx.state.source_version)
      end
      return nil, "database schema " .. schema
    end),
    finding("sql-server", "the SQL Server version is supported by the target", function(ctx)
      local db <close> = U.connect(U.db_connection(ctx))
      local info = db:info()
      if require("upkit.sql").engine(db) ~= "mssql" then
        return nil, string.format("database engine is %s %s (not SQL Server: no version rule)", info.dbms, info.dbms_version or "")
      end
      local major = sql_server_major(db)
      if ctx.state.target and version.compare(ctx.state.target, "2020.2.0") >= 0 and major < 13 then
        return string.format("SQL Server major version %d is too old: Octopus 2020.2 and later need SQL Server 2016 (13) or later", major)
      end
      return nil, string.format("SQL Server major version %d", major)
    end),
    finding("free-disk", "the backup folder has room for the database and the folders", function(ctx)
      fs.mkdirs(ctx.params.backup_dir)
      local need = 0
      for _, path in pairs(ctx.state.server_folders) do need = need + U.tree_size(path) end
      local cs = U.db_connection(ctx)
      local dbfile = cs:match("[Dd]atabase=([^;]+)")
      if dbfile and fs.exists(dbfile) then need = need + U.tree_size(dbfile) end
      local free = fs.free(ctx.params.backup_dir)
      if free < need * 1.1 then
        return string.format("%s has %d MB free; the backup needs about %d MB", ctx.params.backup_dir,
                             free // 1000000, need // 1000000)
      end
      return nil, string.format("%d MB free for a backup of about %d MB", free // 1000000, need // 1000000)
    end),
    finding("nodes", "no other node of a high-availability cluster is running", function(ctx)
      local online = {}
      for _, n in ipairs(U.api(ctx):nodes()) do
        if not n.IsOffline then online[#online + 1] = n.Name end
      end
      if #online > 1 then
        return "several nodes are online (" .. table.concat(online, ", ") .. "): use ha-upgrade, which stops every node"
      end
      return nil, "single node"
    end),
    finding("tasks", "no task is executing or queued", function(ctx)
      local page = U.api(ctx):active_tasks()
      local n = page.TotalResults or #(page.Items or {})
      if n > 0 then
        return string.format("%d tasks are executing or queued; in-place-upgrade waits for them", n)
      end
      return nil, "no task executing"
    end),
    finding("notes-3x", "notes for upgrades from 3.x", function(ctx)
      local v, notes = ctx.state.source_version, {}
      if version.compare(v, "3.1.0") < 0 then
        notes[#notes + 1] = "3.1: Tentacles move to .NET 4.5 and TLS 1.2; Windows Server 2003 and 2008 SP1 are unsupported"
      end
      if version.compare(v, "3.4.0") < 0 then
        notes[#notes + 1] = "3.4: NuGet v1 feeds (TeamCity 7-8) stop working; SemVer 2 needs OctoPack/CLI 3.4+"
      end
      if version.compare(v, "3.5.0") < 0 then
        notes[#notes + 1] = "3.5: settings move from the config file into the database: keep the config file (backup does)"
      end
      if version.compare(v, "2019.1.0") < 0 then
        notes[#notes + 1] = "2019.1: spaces arrive; API scripts must use /api/Spaces-1/... paths"
      end
      return nil, #notes > 0 and ("notes: " .. table.concat(notes, " | ")) or "no 3.x notes apply"
    end),
    {
      name = "verdict",
      describe = "fail when any check found a problem",
      run = function(ctx)
        local problems = {}
        for k, v in pairs(ctx.state) do
          local name = k:match("^problem:(.+)$")
          if name and v then problems[#problems + 1] = name .. ": " .. v end
        end
        table.sort(problems)
        if #problems > 0 then
          upkit.error("PREFLIGHT_FAILED", string.format("%d problem(s): %s", #problems, table.concat(problems, " | ")))
        end
        ctx.log("ready to upgrade %s -> %s", ctx.state.source_version, tostring(ctx.state.target))
      end,
    },
  },
}
