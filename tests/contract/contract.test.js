// Every JSON resource the simulator returns, checked against the matching interface of
// @octopusdeploy/message-contracts (Octopus's own resource definitions): a field the simulator
// returns that the interface lacks fails, unless EXTRA lists it with the public source showing
// that real servers return it. Every field upkit reads must be in the interface and in the answer.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { loadContracts, fieldsOf, createServer, serve, stop, api, waitTask } = require("./lib.js");

const decls = loadContracts();

// Fields real servers return that message-contracts does not declare, each with its source.
const EXTRA = {
  RootResource: { HasLongTermSupport: "root-2023 (a real 2023.1.9626 GET /api, FIDELITY.md)" },
  DeploymentTargetResource: { SpaceId: "OctopusClients MachineResource : IHaveSpaceResource" },
  WorkerMachineResource: { SpaceId: "OctopusClients WorkerResource : IHaveSpaceResource" },
  TriggerResource: { SpaceId: "OctopusClients ProjectTriggerResource : IHaveSpaceResource" },
  SpaceResource: { Slug: "OctopusClients SpaceResource.Slug" },
  ResourceCollectionLinks: { "Page.Next": "OctopusClients paging (Links[\"Page.Next\"])",
                             "Page.Previous": "OctopusClients paging (Links[\"Page.Previous\"])" },
  ArtifactResource: { SpaceId: "OctopusClients ArtifactResource : IHaveSpaceResource" },
};

// What upkit's procedures read (lua/upkit/octopus*.lua, scripts/): these must be declared and present.
const READS = {
  RootResource: ["Version", "InstallationId", "Links"],
  ServerStatusResource: ["IsInMaintenanceMode"],
  ServerStatusHealthResource: ["IsOperatingNormally", "Description", "IsCompliantWithLicense"],
  MaintenanceConfigurationResource: ["Id", "IsInMaintenanceMode"],
  ResourceCollection: ["Items", "TotalResults", "Links"],
  DeploymentTargetResource: ["Id", "Name", "IsDisabled"],
  WorkerMachineResource: ["Id", "Name", "IsDisabled"],
  TriggerResource: ["Id", "Name", "IsDisabled", "ProjectId"],
  SubscriptionResource: ["Id", "Name", "IsDisabled"],
  TaskResource: ["Id", "State", "IsCompleted", "ErrorMessage", "SpaceId"],
  OctopusServerClusterSummaryResource: ["Nodes"],
  OctopusServerNodeSummaryResource: ["Id", "Name", "IsOffline", "IsInMaintenanceMode", "RunningTaskCount"],
  LicenseStatusResource: ["IsCompliant", "Messages"],
  LicenseResource: ["LicenseText"],
  SpaceResource: ["Id", "Name", "IsDefault"],
  ArtifactResource: ["Id", "Filename", "ServerTaskId", "Links"],
};

function allowed(name) {
  const f = fieldsOf(decls, name);
  for (const k of Object.keys(EXTRA[name] || {})) f.add(k);
  return f;
}

function check(name, obj, where) {
  assert.equal(typeof obj, "object", where + " is not an object");
  const ok = allowed(name);
  const extra = Object.keys(obj).filter((k) => !ok.has(k));
  assert.deepEqual(extra, [], `${where}: fields not in message-contracts ${name}: ${extra.join(", ")}`);
  for (const k of READS[name] || []) {
    assert.ok(fieldsOf(decls, name).has(k) || (EXTRA[name] || {})[k], `${name} does not declare ${k}, which upkit reads`);
    assert.ok(k in obj, `${where}: ${k} (read by upkit) is missing`);
  }
}

function checkCollection(itemName, obj, where) {
  check("ResourceCollection", obj, where);
  const linkOk = allowed("ResourceCollectionLinks");
  const extra = Object.keys(obj.Links).filter((k) => !linkOk.has(k));
  assert.deepEqual(extra, [], `${where}: collection links not in ResourceCollectionLinks: ${extra.join(", ")}`);
  assert.ok(obj.Items.length > 0, where + " has no items to check");
  obj.Items.forEach((it, i) => check(itemName, it, `${where} Items[${i}]`));
}

for (const version of ["2023.4.8166", "2025.4.10700"]) test(`the simulator's resources match @octopusdeploy/message-contracts (${version})`, async (t) => {
  const info = await serve(createServer(version, "mc"));
  t.after(() => stop(info));
  const get = async (p, key) => {
    const r = await api(info, "GET", p, undefined, key);
    assert.equal(r.status, 200, `GET ${p} -> ${r.status} ${r.text.slice(0, 200)}`);
    return r.json;
  };

  await t.test("root and its links", async () => {
    const root = await get("/api", "");
    check("RootResource", root, "GET /api");
    const linkOk = new Set([...fieldsOf(decls, "GlobalRootLinks"), ...fieldsOf(decls, "SpaceRootLinks")]);
    const extra = Object.keys(root.Links).filter((k) => !linkOk.has(k));
    assert.deepEqual(extra, [], "root links not in GlobalRootLinks/SpaceRootLinks: " + extra.join(", "));
    assert.match(root.Links.Tasks, /\{\?[^}]*spaces,includeSystem/);
  });

  await t.test("server status, health, maintenance", async () => {
    check("ServerStatusResource", await get("/api/serverstatus"), "GET /api/serverstatus");
    check("ServerStatusHealthResource", await get("/api/serverstatus/health", ""), "GET /api/serverstatus/health");
    check("MaintenanceConfigurationResource", await get("/api/maintenanceconfiguration"), "GET maintenance");
    const put = await api(info, "PUT", "/api/maintenanceconfiguration", { Id: "maintenance", IsInMaintenanceMode: false });
    assert.equal(put.status, 200);
    check("MaintenanceConfigurationResource", put.json, "PUT maintenance");
  });

  await t.test("spaces and space-scoped collections", async () => {
    checkCollection("SpaceResource", await get("/api/spaces"), "GET /api/spaces");
    check("SpaceResource", await get("/api/spaces/Spaces-1"), "GET /api/spaces/Spaces-1");
    checkCollection("DeploymentTargetResource", await get("/api/Spaces-1/machines?take=5"), "GET machines");
    checkCollection("ProjectResource", await get("/api/Spaces-1/projects"), "GET projects");
    checkCollection("EnvironmentResource", await get("/api/Spaces-1/environments"), "GET environments");
    checkCollection("TriggerResource", await get("/api/Spaces-1/projects/Projects-2/triggers"), "GET triggers");
    checkCollection("SubscriptionResource", await get("/api/Spaces-1/subscriptions"), "GET subscriptions");
    checkCollection("ArtifactResource", await get("/api/Spaces-1/artifacts"), "GET artifacts");
    const m = await get("/api/Spaces-1/machines/Machines-1");
    const put = await api(info, "PUT", "/api/Spaces-1/machines/Machines-1", Object.assign(m, { IsDisabled: true }));
    assert.equal(put.status, 200);
    check("DeploymentTargetResource", put.json, "PUT machine");
  });

  await t.test("workers", async () => {
    const w = await get("/api/Spaces-1/workers");
    check("ResourceCollection", w, "GET workers");
    w.Items.forEach((it, i) => check("WorkerMachineResource", it, `workers Items[${i}]`));
  });

  await t.test("tasks, nodes, licences", async () => {
    const posted = await api(info, "POST", "/api/tasks", { Name: "Health", Description: "Check", SimDurationSeconds: 0.1 });
    assert.equal(posted.status, 201);
    check("TaskResource", posted.json, "POST /api/tasks");
    check("TaskResource", await waitTask(info, "/api/tasks/" + posted.json.Id), "GET task");
    checkCollection("TaskResource", await get("/api/tasks?spaces=all&includeSystem=true&states=Success"), "GET tasks");
    const summary = await get("/api/octopusservernodes/summary");
    check("OctopusServerClusterSummaryResource", summary, "GET node summary");
    summary.Nodes.forEach((n, i) => check("OctopusServerNodeSummaryResource", n, `Nodes[${i}]`));
    check("OctopusServerNodeResource", await get("/api/octopusservernodes/" + summary.Nodes[0].Id), "GET node");
    const ls = await get("/api/licenses/licenses-current-status");
    check("LicenseStatusResource", ls, "GET licence status");
    ls.Limits.forEach((l, i) => check("LicenseLimitStatus", l, `Limits[${i}]`));
    check("LicenseResource", await get("/api/licenses/licenses-current"), "GET licence");
  });
});
