-- ha-upgrade: upgrade an Octopus Server cluster (high availability: several
-- nodes sharing one database and one set of folders).
--
-- The guide's high-availability notes: stop every node, back up, upgrade one
-- node (it upgrades the database), then install the new version on the other
-- nodes without a database upgrade, start them. Since 2023.2.9755 the database
-- upgrade aborts while another node is running, so every node is drained and
-- stopped first. In order: check every node (its program, instance, database;
-- no running node left out); download the installers; back up master key,
-- licence and config; maintenance on; wait until idle; drain and stop every
-- node, then mark the stopped nodes offline in OctopusServerNode (their last
-- heartbeat would still count as running; a node marks itself online when it
-- starts); back up database and folders; upgrade this node through the upgrade
-- path; install the target on the other nodes; start and undrain every node;
-- test; maintenance off. `upkit run rollback` with the same backup_dir undoes a
-- failed upgrade of this node (the other nodes get the previous version with
-- their own installer).
--
-- This node is described by server_exe and msiexec; the other nodes by two
-- comma-separated lists of equal length, other_server_exes and other_msiexecs
-- (the same instance name on every node).
local upkit = require "upkit"
local fs = require "upkit.fs"
local version = require "upkit.version"
local U = require "upkit.upgrade"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "msiexec", "db", "backup_dir",
  "download_url", "versions_feed", "target_version", "timeout", "verify_tls",
  { name = "other_server_exes", type = "string", required = true,
    describe = "Octopus.Server executables of the other nodes, comma-separated",
    validate = function(v)
      if #U.split_list(v) == 0 then return false, "name at least one other node's Octopus.Server executable" end
      return true
    end },
  { name = "other_msiexecs", type = "string", required = true,
    describe = "installer programs of the other nodes, comma-separated, in the order of other_server_exes",
    validate = function(v, p)
      local n, m = #U.split_list(v), #U.split_list(p.other_server_exes)
      if n ~= m then return false, string.format("%d installer programs for %d other nodes", n, m) end
      return true
    end },
  { name = "skip_license_check", type = "boolean", default = false,
    describe = "pass --skipLicenseCheck to the database upgrade" })

-- Every node: { label, cli, msiexec }; this node first.
local function nodes(ctx)
  if not ctx._nodes then
    local p = ctx.params
    local list = { { label = "this node", cli = U.cli(ctx), msiexec = p.msiexec } }
    local msis = U.split_list(p.other_msiexecs)
    for i, exe in ipairs(U.split_list(p.other_server_exes)) do
      list[#list + 1] = { label = string.format("node %d (%s)", i + 1, exe), msiexec = msis[i],
                          cli = U.server { exe = exe, instance = p.instance, timeout = p.timeout } }
    end
    ctx._nodes = list
  end
  return ctx._nodes
end

-- The node name a node runs as; the cluster's node rows are found by it.
local function node_name(node)
  return node.cli:node_name() or upkit.error("BAD_OUTPUT", string.format(
    "%s: show-configuration gives no Octopus.Server.NodeName", node.label))
end

local function each_other(ctx)
  local list = nodes(ctx)
  local i = 1
  return function()
    i = i + 1
    return list[i]
  end
end

return {
  name = "ha-upgrade",
  summary = "Upgrade every node of a high-availability Octopus Server cluster, with a backup first and a test after",
  params = params,
  steps = {
    S.connect(),
    {
      name = "check-nodes",
      describe = "check every other node: its program, instance and database; no running node left out",
      check = function(ctx)
        local main_cs = U.cli(ctx):connection_string()
        local main_version = U.api(ctx):version()
        local ours = { [node_name(nodes(ctx)[1])] = true }
        for node in each_other(ctx) do
          if not fs.exists(node.cli.exe) then
            upkit.error("ENOENT", string.format("%s: the Octopus.Server executable %s does not exist", node.label,
                                                node.cli.exe))
          end
          local listed = false
          for _, i in ipairs(node.cli:instances()) do if i.InstanceName == ctx.params.instance then listed = true end end
          if not listed then
            upkit.error("NOT_FOUND", string.format("%s has no instance %s", node.label, ctx.params.instance))
          end
          local v = node.cli:version()
          if version.compare(v, main_version) ~= 0 then
            upkit.error("VERSION_MISMATCH", string.format("%s runs %s, this node %s", node.label, v, main_version))
          end
          if node.cli:connection_string() ~= main_cs then
            upkit.error("DATABASE_MISMATCH", string.format("%s uses another database than this node", node.label))
          end
          ours[node_name(node)] = true
        end
        for _, n in ipairs(U.api(ctx):nodes()) do
          if not n.IsOffline and not ours[n.Name] then
            upkit.error("UNKNOWN_NODE", string.format("node %s is online but is not one of the nodes given " ..
              "(server_exe, other_server_exes): every node must be stopped for the upgrade", n.Name))
          end
        end
        return true
      end,
      run = function(ctx)
        local names = {}
        for _, node in ipairs(nodes(ctx)) do
          names[#names + 1] = node_name(node)
          ctx.log("%s: node %s, Octopus %s", node.label, names[#names], node.cli:version())
        end
        return { node_names = names }
      end,
    },
    S.download_installers(),
    S.master_key(),
    S.licence_and_config(),
    S.maintenance_on(),
    S.wait_idle(),
    {
      name = "drain-and-stop-nodes",
      describe = "drain every node, stop every node's service, mark the stopped nodes offline",
      run = function(ctx)
        for _, node in ipairs(nodes(ctx)) do node.cli:drain(true) end
        for _, node in ipairs(nodes(ctx)) do
          if node.cli:running() then node.cli:service("stop") end
          if node.cli:running() then
            upkit.error("STILL_RUNNING", string.format("%s: the service still runs after service --stop", node.label))
          end
          ctx.log("%s: drained and stopped", node.label)
        end
        local db <close> = U.connect(U.db_connection(ctx))
        local n = U.mark_nodes_offline(db, ctx.state.node_names)
        ctx.log("%d node rows marked offline", n)
      end,
    },
    S.backup_database(),
    S.backup_folders(),
    S.write_manifest(),
    {
      name = "upgrade-this-node",
      describe = "install each version on the path on this node and upgrade the database",
      run = function(ctx)
        local installed = U.upgrade_instance(ctx, U.cli(ctx), ctx.params.msiexec, ctx.state.target,
                                             ctx.run_dir .. "/logs", U.db_connection(ctx))
        return { installed = installed }
      end,
    },
    {
      name = "install-other-nodes",
      describe = "install the target version on the other nodes (their database is upgraded already)",
      run = function(ctx)
        local inst = U.fetch_installer(U.downloads(ctx), ctx.state.target, ctx.run_dir .. "/installers",
                                       { download_url = ctx.params.download_url })
        for node in each_other(ctx) do
          if version.compare(node.cli:version(), ctx.state.target) < 0 then
            local r = U.install(node.msiexec, inst.file, inst.sha256, ctx.run_dir .. "/logs", ctx.params.timeout)
            ctx.log("%s: installed %s (exit code %d)", node.label, ctx.state.target, r.code)
          else
            ctx.log("%s: %s is installed already", node.label, ctx.state.target)
          end
        end
      end,
    },
    {
      name = "start-and-undrain",
      describe = "start every node's service and take every node out of drain",
      run = function(ctx)
        for _, node in ipairs(nodes(ctx)) do
          if not node.cli:running() then node.cli:service("start") end
        end
        for _, node in ipairs(nodes(ctx)) do node.cli:drain(false) end
        ctx._api = U.wait_api(ctx.params.server_url, ctx.params.api_key, ctx.params.verify_tls, 120)
      end,
    },
    {
      name = "test",
      describe = "test the cluster: every node runs the target, online; version, health, row counts, folders",
      run = function(ctx)
        local api = U.api(ctx)
        local online = {}
        for _, n in ipairs(api:nodes()) do if not n.IsOffline then online[n.Name] = true end end
        local db <close> = U.connect(U.db_connection(ctx))
        local folders = {}
        for name, f in pairs(ctx.state.folders or {}) do
          folders[#folders + 1] = { path = f.path, manifest = ctx.params.backup_dir .. "/folders/" .. name .. ".SHA256SUMS" }
        end
        U.test_instance(ctx, api, db, {
          version = ctx.state.target, counts = ctx.state.source_counts, folders = folders,
          test = function()
            for i, node in ipairs(nodes(ctx)) do
              local v = node.cli:version()
              if version.compare(v, ctx.state.target) ~= 0 then error(node.label .. " runs " .. v, 0) end
              if not node.cli:running() then error(node.label .. ": the service is not running", 0) end
              if not online[ctx.state.node_names[i]] then error(node.label .. " is not online in the cluster", 0) end
            end
          end })
        ctx.log("%d nodes run Octopus %s", #nodes(ctx), ctx.state.target)
      end,
    },
    S.maintenance_off(),
  },
}
