// Octopus's official TypeScript client (@octopusdeploy/api-client) driven against a simulated
// 2023.4 server, for each endpoint upkit uses. Links are used the way the client uses them: as
// RFC 6570 templates expanded with arguments (never as plain paths).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Client, SpaceRepository, SpaceServerTaskRepository } = require("@octopusdeploy/api-client");
const { createServer, serve, stop } = require("./lib.js");

test("the official api-client works against the simulator (2023.4)", async (t) => {
  const info = await serve(createServer("2023.4.8166", "client"));
  t.after(() => stop(info));
  const client = await Client.create({ instanceURL: info.url, apiKey: info.api_key, userAgentApp: "upkit-contract" });
  const root = await client.get("~/api");

  await t.test("root and server information", async () => {
    const si = await client.getServerInformation();
    assert.equal(si.version, "2023.4.8166");
    assert.equal(root.Version, "2023.4.8166");
  });

  await t.test("server status, health and maintenance configuration", async () => {
    const st = await client.get(root.Links.ServerStatus);
    assert.equal(typeof st.IsInMaintenanceMode, "boolean");
    const h = await client.get(root.Links.ServerHealthStatus);
    assert.equal(h.IsOperatingNormally, true);
    const mc = await client.get(root.Links.MaintenanceConfiguration);
    assert.equal(mc.Id, "maintenance");
    const on = await client.doUpdate(root.Links.MaintenanceConfiguration, Object.assign(mc, { IsInMaintenanceMode: true }));
    assert.equal(on.IsInMaintenanceMode, true);
    assert.equal((await client.get(root.Links.ServerStatus)).IsInMaintenanceMode, true);
    const off = await client.doUpdate(root.Links.MaintenanceConfiguration, Object.assign(mc, { IsInMaintenanceMode: false }));
    assert.equal(off.IsInMaintenanceMode, false);
  });

  await t.test("spaces", async () => {
    const spaces = await new SpaceRepository(client).list({});
    assert.ok(spaces.Items.some((s) => s.Id === "Spaces-1" && s.IsDefault));
    const one = await client.get(root.Links.Spaces, { id: "Spaces-1" });
    assert.equal(one.Name, "Default");
  });

  await t.test("machines: page through with Page.Next, disable one with PUT", async () => {
    let page = await client.get(root.Links.Machines, { take: 5 });
    const ids = [];
    for (;;) {
      ids.push(...page.Items.map((m) => m.Id));
      if (!page.Links["Page.Next"]) break;
      page = await client.get(page.Links["Page.Next"]);
    }
    assert.equal(ids.length, 12);
    const m = await client.get(root.Links.Machines, { id: "Machines-2" });
    const out = await client.doUpdate(m.Links.Self, Object.assign(m, { IsDisabled: true }));
    assert.equal(out.IsDisabled, true);
  });

  await t.test("workers, project triggers, subscriptions", async () => {
    const w = await client.get(root.Links.Workers, { take: 100 });
    assert.equal(w.ItemType, "Worker");
    const project = await client.get(root.Links.Projects, { id: "Projects-2" });
    const triggers = await client.get(project.Links.Triggers, { take: 100 });
    assert.ok(triggers.Items.length > 0);
    const tr = triggers.Items[0];
    const out = await client.doUpdate(root.Links.ProjectTriggers, Object.assign(tr, { IsDisabled: true }), { id: tr.Id });
    assert.equal(out.IsDisabled, true);
    const subs = await client.get(root.Links.Subscriptions, { take: 100 });
    assert.equal(subs.Items.length, 3);
  });

  await t.test("tasks across spaces and system tasks", async () => {
    const sys = await client.post("~/api/tasks", { Name: "Backup", Description: "System task", SpaceId: null,
                                                   SimDurationSeconds: 30 });
    const mine = await client.get(root.Links.Tasks, { states: "Queued,Executing", take: 100 });
    assert.ok(!mine.Items.some((x) => x.Id === sys.Id), "a system task is listed without includeSystem");
    const all = await client.get(root.Links.Tasks, { states: "Queued,Executing", spaces: "all", includeSystem: true,
                                                     take: 100 });
    assert.ok(all.Items.some((x) => x.Id === sys.Id));
    const t1 = await client.post("~/api/tasks", { Name: "Health", Description: "Check", SimDurationSeconds: 0.1 });
    const got = await new SpaceServerTaskRepository(client, "Default").getById(t1.Id);
    assert.equal(got.Id, t1.Id);
    await client.post("~/api/tasks/" + sys.Id + "/cancel", {});
  });

  await t.test("nodes, licence status, server folders", async () => {
    const summary = await client.get(root.Links.OctopusServerClusterSummary);
    assert.equal(summary.Nodes.length, 1);
    assert.equal(summary.Nodes[0].IsOffline, false);
    const node = await client.get(root.Links.OctopusServerNodes, { id: summary.Nodes[0].Id });
    const drained = await client.doUpdate(node.Links.Self, Object.assign(node, { IsInMaintenanceMode: true }));
    assert.equal(drained.IsInMaintenanceMode, true);
    const ls = await client.get(root.Links.CurrentLicenseStatus);
    assert.equal(ls.IsCompliant, true);
    const folders = await client.get("~/api/configuration/server-folders/values");
    assert.equal(folders.LogsDirectory, info.folders.TaskLogs);
    assert.equal(folders.ArtifactsDirectory, info.folders.Artifacts);
    assert.equal(folders.PackagesDirectory, info.folders.Packages);
  });
});
