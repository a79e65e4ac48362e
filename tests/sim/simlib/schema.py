"""The simulated Octopus database: baseline schema (3.x), DbUp-style migrations, seed data."""

import hashlib
import json
import os
import random
import time
import uuid

from .common import (RELEASED, SimError, checks_running_nodes, issue_7790, needs_sql2016, now_iso, parse_iso,
                     required_stop, seal, vcmp, vkey, verify_master_key, VERSIONS)

BASELINE = "3.17.14"

BASELINE_SQL = """
CREATE TABLE SchemaVersions (Id INTEGER PRIMARY KEY AUTOINCREMENT, ScriptName TEXT NOT NULL,
  Applied TEXT NOT NULL, Version TEXT NOT NULL);
CREATE TABLE KeyAllocation (CollectionName TEXT PRIMARY KEY, Allocated INTEGER NOT NULL);
CREATE TABLE Configuration (Id TEXT PRIMARY KEY, JSON TEXT NOT NULL);
CREATE TABLE [User] (Id TEXT PRIMARY KEY, Username TEXT NOT NULL UNIQUE, DisplayName TEXT,
  IsService INTEGER NOT NULL DEFAULT 0, IsActive INTEGER NOT NULL DEFAULT 1, JSON TEXT NOT NULL);
CREATE TABLE Team (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, JSON TEXT NOT NULL);
CREATE TABLE ApiKey (Id TEXT PRIMARY KEY, UserId TEXT NOT NULL, ApiKeyHashed TEXT NOT NULL UNIQUE,
  Created TEXT NOT NULL, JSON TEXT NOT NULL);
CREATE TABLE ProjectGroup (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, JSON TEXT NOT NULL);
CREATE TABLE Lifecycle (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, JSON TEXT NOT NULL);
CREATE TABLE Project (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, Slug TEXT NOT NULL,
  IsDisabled INTEGER NOT NULL DEFAULT 0, ProjectGroupId TEXT, LifecycleId TEXT, JSON TEXT NOT NULL);
CREATE TABLE Environment (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, SortOrder INTEGER NOT NULL,
  JSON TEXT NOT NULL);
CREATE TABLE Machine (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, IsDisabled INTEGER NOT NULL DEFAULT 0,
  Roles TEXT, EnvironmentIds TEXT, MachinePolicyId TEXT, Thumbprint TEXT, CommunicationStyle TEXT,
  JSON TEXT NOT NULL);
CREATE TABLE ProjectTrigger (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, ProjectId TEXT NOT NULL,
  IsDisabled INTEGER NOT NULL DEFAULT 0, TriggerType TEXT, JSON TEXT NOT NULL);
CREATE TABLE Subscription (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, Type TEXT,
  IsDisabled INTEGER NOT NULL DEFAULT 0, JSON TEXT NOT NULL);
CREATE TABLE ServerTask (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, Description TEXT,
  QueueTime TEXT NOT NULL, StartTime TEXT, CompletedTime TEXT, State TEXT NOT NULL,
  ServerNodeId TEXT, ProjectId TEXT, EnvironmentId TEXT, DurationSeconds INTEGER,
  HasWarningsOrErrors INTEGER NOT NULL DEFAULT 0, JSON TEXT NOT NULL);
CREATE INDEX IX_ServerTask_State ON ServerTask (State);
CREATE TABLE Event (Id TEXT PRIMARY KEY, Occurred TEXT NOT NULL, Category TEXT, UserId TEXT,
  Username TEXT, RelatedDocumentIds TEXT, JSON TEXT NOT NULL);
CREATE TABLE OctopusServerNode (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, LastSeen TEXT NOT NULL,
  Rank TEXT, IsOffline INTEGER NOT NULL DEFAULT 0, MaxConcurrentTasks INTEGER NOT NULL DEFAULT 5,
  IsInMaintenanceMode INTEGER NOT NULL DEFAULT 0, JSON TEXT NOT NULL);
CREATE TABLE ExtensionConfiguration (Id TEXT PRIMARY KEY, Name TEXT, ExtensionAuthor TEXT,
  JSON TEXT NOT NULL);
CREATE TABLE OctopusServerInstallationHistory (Id INTEGER PRIMARY KEY AUTOINCREMENT,
  Node TEXT NOT NULL, Version TEXT NOT NULL, Installed TEXT NOT NULL, JSON TEXT NOT NULL);
CREATE TABLE VariableSet (Id TEXT PRIMARY KEY, OwnerId TEXT, Version INTEGER, JSON TEXT NOT NULL);
CREATE TABLE Artifact (Id TEXT PRIMARY KEY, Filename TEXT NOT NULL, ServerTaskId TEXT,
  Created TEXT NOT NULL, JSON TEXT NOT NULL);
"""

SPACE_TABLES = ["Project", "ProjectGroup", "Lifecycle", "Environment", "Machine", "Worker",
                "WorkerPool", "ProjectTrigger", "Subscription", "ServerTask", "Event",
                "VariableSet", "Artifact", "Team"]


def _script(c, sql):
    """Run several statements inside the caller's transaction (executescript would commit)."""
    for stmt in sql.split(";"):
        if stmt.strip():
            c.execute(stmt)


def _m_workers(c):
    _script(c, """
    CREATE TABLE Worker (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, IsDisabled INTEGER NOT NULL DEFAULT 0,
      WorkerPoolIds TEXT, MachinePolicyId TEXT, Thumbprint TEXT, CommunicationStyle TEXT,
      JSON TEXT NOT NULL);
    CREATE TABLE WorkerPool (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, IsDefault INTEGER NOT NULL,
      SortOrder INTEGER NOT NULL, JSON TEXT NOT NULL);
    """)
    c.execute("INSERT INTO WorkerPool VALUES ('WorkerPools-1','Default Worker Pool',1,0,?)",
              (json.dumps({"Id": "WorkerPools-1", "Name": "Default Worker Pool", "IsDefault": True}),))


def _m_spaces(c):
    c.execute("""CREATE TABLE Space (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, Slug TEXT,
      IsDefault INTEGER NOT NULL, TaskQueueStopped INTEGER NOT NULL DEFAULT 0, JSON TEXT NOT NULL)""")
    c.execute("INSERT INTO Space VALUES ('Spaces-1','Default','default',1,0,?)",
              (json.dumps({"Id": "Spaces-1", "Name": "Default", "Slug": "default", "IsDefault": True,
                           "Description": "", "SpaceManagersTeams": ["teams-administrators"],
                           "SpaceManagersTeamMembers": [], "TaskQueueStopped": False}),))
    for t in SPACE_TABLES:
        c.execute("ALTER TABLE [%s] ADD COLUMN SpaceId TEXT" % t)
        c.execute("UPDATE [%s] SET SpaceId='Spaces-1'" % t)


def _m_runbooks(c):
    c.execute("""CREATE TABLE Runbook (Id TEXT PRIMARY KEY, Name TEXT NOT NULL, ProjectId TEXT NOT NULL,
      SpaceId TEXT, JSON TEXT NOT NULL)""")


def _m_node_status(c):
    # Liveness moved out of OctopusServerNode in 2019 (OctopusDeploy/Issues #5729); columns unverified.
    c.execute("""CREATE TABLE OctopusServerNodeStatus (Id TEXT PRIMARY KEY, LastSeen TEXT NOT NULL,
      IsOffline INTEGER NOT NULL DEFAULT 0, JSON TEXT NOT NULL)""")
    c.execute("INSERT INTO OctopusServerNodeStatus SELECT Id, LastSeen, IsOffline, JSON FROM OctopusServerNode")


def _m_noop(c):
    pass


def _m_event_exports(c):
    c.execute("""CREATE TABLE ArchivedEventFile (Id TEXT PRIMARY KEY, FileName TEXT NOT NULL,
      Created TEXT NOT NULL, JSON TEXT NOT NULL)""")
    c.execute("INSERT OR REPLACE INTO Configuration VALUES ('event-retention', ?)",
              (json.dumps({"Id": "event-retention", "RetentionDays": 90}),))


def _m_freeze(c):
    c.execute("""CREATE TABLE DeploymentFreeze (Id TEXT PRIMARY KEY, Name TEXT NOT NULL,
      Start TEXT, [End] TEXT, JSON TEXT NOT NULL)""")


def _m_platform_hub(c):
    c.execute("""CREATE TABLE PlatformHubConfiguration (Id TEXT PRIMARY KEY, JSON TEXT NOT NULL)""")
    c.execute("ALTER TABLE Project ADD COLUMN IsVersionControlled INTEGER NOT NULL DEFAULT 0")


# (version, script name, function); a script runs when its version <= the installed program's
# version and its name is not yet in SchemaVersions (that is how DbUp decides).
MIGRATIONS = [
    ("2018.7.0", "Script0180-AddWorkers", _m_workers),
    ("2019.1.0", "Script0200-AddSpaces", _m_spaces),
    ("2019.1.0", "Script0205-AddOctopusServerNodeStatus", _m_node_status),
    ("2019.11.0", "Script0230-AddRunbooks", _m_runbooks),
    ("2021.3.12912", "Script0321DeleteQueuedCleanupTasks", _m_noop),
    ("2022.1.2735", "Script0332DeleteQueuedCleanupTasks", _m_noop),
    ("2023.3.0", "Script0330-AddArchivedEventFiles", _m_event_exports),
    ("2024.1.0", "Script0360-AddDeploymentFreeze", _m_freeze),
    ("2025.4.0", "Script0400-AddPlatformHub", _m_platform_hub),
]


def in_program(v, name, version):
    """Does the program of `version` ship script `name` (first shipped in `v`)? The 2021.3 script was
    renamed in 2022.1 (OctopusDeploy/Issues #7790), so 2022.1+ programs do not ship 0321."""
    if name == "Script0321DeleteQueuedCleanupTasks" and vcmp(version, "2022.1.0") >= 0:
        return False
    return vcmp(v, version) <= 0


def migration_names(version):
    return [{"Version": v, "Script": n} for v, n, _ in MIGRATIONS if in_program(v, n, version)]


def schema_version(c):
    row = c.execute("SELECT Version FROM SchemaVersions ORDER BY Id DESC LIMIT 1").fetchone()
    if not row:
        raise SimError("database has no SchemaVersions rows: not an Octopus database")
    return row[0]


def table_exists(c, name):
    return c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def allocate(c, collection, prefix=None):
    prefix = prefix or collection
    c.execute("INSERT INTO KeyAllocation VALUES (?,1) ON CONFLICT(CollectionName) "
              "DO UPDATE SET Allocated=Allocated+1", (collection,))
    n = c.execute("SELECT Allocated FROM KeyAllocation WHERE CollectionName=?", (collection,)).fetchone()[0]
    return "%s-%d" % (prefix, n)


def _set_alloc(c, collection, n):
    c.execute("INSERT OR REPLACE INTO KeyAllocation VALUES (?,?)", (collection, n))


def hash_api_key(key):
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key():
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "API-" + "".join(random.SystemRandom().choice(alphabet) for _ in range(26))


def license_xml(maintenance_expires="2099-12-31", machine_limit="Unlimited", licensed_to="Simulated Corp"):
    return ('<License Signature="%s">\n  <LicensedTo>%s</LicensedTo>\n  <LicenseKey>%s</LicenseKey>\n'
            '  <Version>2.0</Version>\n  <ValidFrom>2017-01-01</ValidFrom>\n'
            '  <MaintenanceExpires>%s</MaintenanceExpires>\n  <ProjectLimit>Unlimited</ProjectLimit>\n'
            '  <MachineLimit>%s</MachineLimit>\n  <UserLimit>Unlimited</UserLimit>\n</License>\n'
            % (hashlib.sha256(licensed_to.encode()).hexdigest()[:40], licensed_to,
               str(uuid.uuid4())[:23].upper(), maintenance_expires, machine_limit))


def license_field(text, name):
    import re
    m = re.search(r"<%s>([^<]*)</%s>" % (name, name), text or "")
    return m.group(1) if m else None


def get_config_row(c, id_, default=None):
    row = c.execute("SELECT JSON FROM Configuration WHERE Id=?", (id_,)).fetchone()
    return json.loads(row[0]) if row else default


def put_config_row(c, id_, obj):
    c.execute("INSERT OR REPLACE INTO Configuration VALUES (?,?)", (id_, json.dumps(obj)))


def license_compliance(c, version):
    """(IsCompliant, messages) of the stored licence for a server of `version`."""
    lic = get_config_row(c, "license", {}).get("LicenseText", "")
    msgs = []
    exp = license_field(lic, "MaintenanceExpires")
    rel = RELEASED.get(version)
    if exp and rel and exp < rel:
        msgs.append("Your license maintenance expired on %s but Octopus Server %s was released on %s."
                    % (exp, version, rel))
    limit = license_field(lic, "MachineLimit")
    if limit and limit.isdigit():
        n = c.execute("SELECT COUNT(*) FROM Machine").fetchone()[0]
        if n > int(limit):
            msgs.append("Your license permits %s deployment targets but %d are in use." % (limit, n))
    return (not msgs, msgs)


# ---------------------------------------------------------------- create and seed

def create_database(path, master_key, version, node_name, seed_opts=None, folders=None):
    """A new database at `version`: baseline, basic rows, optional seed, migrations."""
    if os.path.exists(path):
        raise SimError("database %s already exists" % path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    from .common import connect
    c = connect(path, check=False)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("BEGIN")
    _script(c, BASELINE_SQL)
    c.execute("INSERT INTO SchemaVersions (ScriptName, Applied, Version) VALUES (?,?,?)",
              ("Script0001-Baseline", now_iso(), BASELINE))
    put_config_row(c, "upgradeavailability", {"Id": "upgradeavailability",
                                              "InstallationId": str(uuid.uuid4()),
                                              "IsUpgradeAvailable": False, "LastChecked": now_iso()})
    put_config_row(c, "maintenance", {"Id": "maintenance", "IsInMaintenanceMode": False})
    put_config_row(c, "smtp", {"Id": "smtp", "SmtpHost": "smtp.example.com", "SmtpPort": 25,
                               "SmtpLogin": "octopus", "Password": seal(master_key, "smtp-secret")})
    put_config_row(c, "license", {"Id": "license", "LicenseText": license_xml()})
    c.execute("INSERT INTO Team VALUES ('teams-administrators','Octopus Administrators',?)",
              (json.dumps({"Id": "teams-administrators", "Name": "Octopus Administrators",
                           "MemberUserIds": []}),))
    c.execute("INSERT INTO Team VALUES ('teams-everyone','Everyone',?)",
              (json.dumps({"Id": "teams-everyone", "Name": "Everyone", "MemberUserIds": []}),))
    for ext, name in [("authentication-usernamepassword", "Usernames and passwords"),
                      ("authentication-octopusid", "Octopus ID"),
                      ("jira-integration", "Jira Integration")]:
        c.execute("INSERT INTO ExtensionConfiguration VALUES (?,?,?,?)",
                  (ext, name, "Octopus Deploy", json.dumps({"Id": ext, "IsEnabled": True})))
    c.execute("INSERT INTO OctopusServerNode VALUES (?,?,?,?,0,5,0,?)",
              (node_name, node_name, now_iso(), "Leader", json.dumps({"Id": node_name, "Name": node_name})))
    c.execute("COMMIT")
    if seed_opts is not None:
        seed(c, master_key, seed_opts, folders, node_name)
    apply_migrations(c, version, node_name, fault_at=None)
    c.close()


def add_user(c, username, admin, api_key=None, purpose="seed"):
    uid = allocate(c, "Users")
    c.execute("INSERT INTO [User] (Id, Username, DisplayName, IsService, IsActive, JSON) VALUES (?,?,?,?,1,?)",
              (uid, username, username, 0, json.dumps({"Id": uid, "Username": username,
                                                       "DisplayName": username, "IsActive": True})))
    if admin:
        row = json.loads(c.execute("SELECT JSON FROM Team WHERE Id='teams-administrators'").fetchone()[0])
        row["MemberUserIds"].append(uid)
        c.execute("UPDATE Team SET JSON=? WHERE Id='teams-administrators'", (json.dumps(row),))
    if api_key:
        add_api_key(c, uid, api_key, purpose)
    return uid


def add_api_key(c, uid, api_key, purpose):
    kid = allocate(c, "ApiKeys")
    c.execute("INSERT INTO ApiKey VALUES (?,?,?,?,?)",
              (kid, uid, hash_api_key(api_key), now_iso(), json.dumps({"Id": kid, "Purpose": purpose,
                                                                       "UserId": uid})))


SIZES = {
    "small": {"machines": 12, "files": 20, "package_mb": 1, "packages": 3, "projects": 5, "events": 20},
    "large": {"machines": 10000, "files": 3000, "package_mb": 80, "packages": 3, "projects": 200,
              "events": 2000},
}


def seed_options(size="small", machines=None, files=None, package_mb=None):
    if size not in SIZES:
        raise SimError("unknown size %r (small|large)" % size)
    o = dict(SIZES[size])
    if machines is not None:
        o["machines"] = machines
    if files is not None:
        o["files"] = files
    if package_mb is not None:
        o["package_mb"] = package_mb
    return o


def seed(c, master_key, o, folders, node_name):
    rnd = random.Random(42)
    t0 = time.time() - 86400 * 30
    c.execute("BEGIN")
    c.execute("INSERT INTO Lifecycle VALUES ('Lifecycles-1','Default Lifecycle',?)",
              (json.dumps({"Id": "Lifecycles-1", "Name": "Default Lifecycle", "Phases": []}),))
    c.execute("INSERT INTO ProjectGroup VALUES ('ProjectGroups-1','Default Project Group',?)",
              (json.dumps({"Id": "ProjectGroups-1", "Name": "Default Project Group"}),))
    envs = ["Development", "Test", "Production"]
    for i, e in enumerate(envs, 1):
        c.execute("INSERT INTO Environment VALUES (?,?,?,?)",
                  ("Environments-%d" % i, e, i, json.dumps({"Id": "Environments-%d" % i, "Name": e,
                                                            "SortOrder": i, "UseGuidedFailure": False})))
    _set_alloc(c, "Environments", len(envs))
    rows = []
    for i in range(1, o["machines"] + 1):
        env = "Environments-%d" % (i % 3 + 1)
        roles = ["web-server"] if i % 2 else ["app-server", "db-server"]
        thumb = hashlib.sha1(b"m%d" % i).hexdigest().upper()
        doc = {"Id": "Machines-%d" % i, "Name": "target-%05d" % i, "IsDisabled": False,
               "Roles": roles, "EnvironmentIds": [env], "TenantIds": [], "TenantTags": [],
               "MachinePolicyId": "MachinePolicies-1", "StatusSummary": "Octopus was able to successfully "
               "establish a connection with this machine", "HealthStatus": "Healthy",
               "TenantedDeploymentParticipation": "Untenanted",
               "HasLatestCalamari": True, "IsInProcess": False,
               "Endpoint": {"CommunicationStyle": "TentaclePassive", "Thumbprint": thumb,
                            "Uri": "https://target-%05d.example.com:10933/" % i}}
        rows.append((doc["Id"], doc["Name"], 0, ",".join(roles), env, "MachinePolicies-1", thumb,
                     "TentaclePassive", json.dumps(doc)))
    c.executemany("INSERT INTO Machine VALUES (?,?,?,?,?,?,?,?,?)", rows)
    _set_alloc(c, "Machines", o["machines"])
    nt = 0
    for i in range(1, o["projects"] + 1):
        pid = "Projects-%d" % i
        name = "Project %d" % i
        c.execute("INSERT INTO Project VALUES (?,?,?,0,'ProjectGroups-1','Lifecycles-1',?)",
                  (pid, name, "project-%d" % i, json.dumps({
                      "Id": pid, "Name": name, "Slug": "project-%d" % i, "Description": "Seeded project",
                      "IsDisabled": False, "ProjectGroupId": "ProjectGroups-1",
                      "LifecycleId": "Lifecycles-1", "VariableSetId": "variableset-" + pid,
                      "DeploymentProcessId": "deploymentprocess-" + pid})))
        c.execute("INSERT INTO VariableSet VALUES (?,?,1,?)",
                  ("variableset-" + pid, pid, json.dumps({"Id": "variableset-" + pid, "OwnerId": pid,
                    "Variables": [{"Name": "DbPassword", "IsSensitive": True,
                                   "Value": seal(master_key, "p@ss-%d" % i)},
                                  {"Name": "Url", "IsSensitive": False, "Value": "https://p%d" % i}]})))
        for kind in (["OnDeploymentTarget"] if i % 2 else ["OnDeploymentTarget", "Scheduled"]):
            nt += 1
            tid = "ProjectTriggers-%d" % nt
            c.execute("INSERT INTO ProjectTrigger VALUES (?,?,?,0,?,?)",
                      (tid, "%s trigger %d" % (kind, nt), pid, kind, json.dumps({
                          "Id": tid, "Name": "%s trigger %d" % (kind, nt), "ProjectId": pid,
                          "IsDisabled": False, "Filter": {"FilterType": kind + "Filter"},
                          "Action": {"ActionType": "AutoDeploy"}})))
    _set_alloc(c, "Projects", o["projects"])
    _set_alloc(c, "ProjectTriggers", nt)
    for i, (name, typ) in enumerate([("Notify on failure", "Event"), ("Audit to Slack", "Event"),
                                     ("Webhook on deploy", "Event")], 1):
        sid = "Subscriptions-%d" % i
        c.execute("INSERT INTO Subscription VALUES (?,?,?,0,?)", (sid, name, typ, json.dumps({
            "Id": sid, "Name": name, "Type": typ, "IsDisabled": False,
            "EventNotificationSubscription": {"WebhookURI": "https://hooks.example.com/%d" % i}})))
    _set_alloc(c, "Subscriptions", 3)
    admin = add_user(c, "admin", True)
    add_user(c, "deployer", False)
    rows = []
    for i in range(1, o["events"] + 1):
        eid = "Events-%d" % i
        rows.append((eid, now_iso(t0 + i * 60), "MachineHealthy", admin, "admin",
                     "Machines-%d" % (i % max(1, o["machines"]) + 1),
                     json.dumps({"Id": eid, "Message": "Machine target-%05d is healthy" % i})))
    c.executemany("INSERT INTO Event VALUES (?,?,?,?,?,?,?)", rows)
    _set_alloc(c, "Events", o["events"])
    # finished tasks with their logs, artifacts and packages on disk
    rows = []
    os.makedirs(folders["TaskLogs"], exist_ok=True)
    line = "%s  Info     | Deploying package to target-%05d: step %d of 12 completed, 4.2 MB transferred\n"
    for i in range(1, o["files"] + 1):
        tid = "ServerTasks-%d" % i
        q = t0 + i * 30
        doc = {"Id": tid, "Name": "Deploy", "Description": "Deploy Project %d release 1.0.%d" % (i % 5 + 1, i),
               "State": "Success", "IsCompleted": True, "FinishedSuccessfully": True,
               "Arguments": {}, "ErrorMessage": ""}
        rows.append((tid, "Deploy", doc["Description"], now_iso(q), now_iso(q + 1), now_iso(q + 9),
                     "Success", node_name, "Projects-%d" % (i % max(1, o["projects"]) + 1),
                     "Environments-1", 8, 0, json.dumps(doc)))
        n = 40 if o["files"] < 100 else 200 + rnd.randrange(200)
        with open(os.path.join(folders["TaskLogs"], "servertasks-%d.log.txt" % i), "w") as f:
            stamp = now_iso(q)
            f.write("".join(line % (stamp, i, k % 12 + 1) for k in range(n)))
    c.executemany("INSERT INTO ServerTask VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    _set_alloc(c, "ServerTasks", o["files"])
    na = min(o["files"], 10)
    for i in range(1, na + 1):
        aid = "Artifacts-%d" % i
        d = os.path.join(folders["Artifacts"], "ServerTasks-%d" % i)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "report-%d.txt" % i), "w") as f:
            f.write("artifact %d\n" % i * 50)
        c.execute("INSERT INTO Artifact VALUES (?,?,?,?,?)",
                  (aid, "report-%d.txt" % i, "ServerTasks-%d" % i, now_iso(t0),
                   json.dumps({"Id": aid, "Filename": "report-%d.txt" % i,
                               "ServerTaskId": "ServerTasks-%d" % i,
                               "RelativePath": "ServerTasks-%d/report-%d.txt" % (i, i)})))
    _set_alloc(c, "Artifacts", na)
    c.execute("COMMIT")
    os.makedirs(folders["Packages"], exist_ok=True)
    block = bytearray(rnd.randbytes(1 << 20))
    for p in range(1, o["packages"] + 1):
        with open(os.path.join(folders["Packages"], "Acme.App%d.1.0.%d.zip" % (p, p)), "wb") as f:
            for mb in range(o["package_mb"]):
                block[0:8] = (p * 100000 + mb).to_bytes(8, "big")
                f.write(block)
    for k in ("Artifacts", "EventExports"):
        os.makedirs(folders[k], exist_ok=True)


# ---------------------------------------------------------------- database upgrade

def apply_migrations(c, version, node_name, fault_at=None, log=None):
    """Run the scripts up to `version` not yet applied, each version step in one transaction,
    then record the install. Raises SimError naming the failing script (its step rolled back)."""
    applied = {r[0] for r in c.execute("SELECT ScriptName FROM SchemaVersions")}
    steps = [(v, n, f) for v, n, f in MIGRATIONS if in_program(v, n, version) and n not in applied]
    steps.append((version, "Release-%s" % version, None))
    for v, name, fn in steps:
        c.execute("BEGIN")
        try:
            if fn:
                fn(c)
            c.execute("INSERT INTO SchemaVersions (ScriptName, Applied, Version) VALUES (?,?,?)",
                      (name, now_iso(), v))
            if fn is None:
                c.execute("INSERT INTO OctopusServerInstallationHistory (Node, Version, Installed, JSON) "
                          "VALUES (?,?,?,?)", (node_name, version, now_iso(),
                                               json.dumps({"Node": node_name, "Version": version})))
            if fault_at and vcmp(v, fault_at) >= 0:
                fault_at = None
                raise SimError("Error running script %s: simulated failure (migration_fail_at)" % name)
            c.execute("COMMIT")
            if log:
                log("Executed upgrade script %s (%s)" % (name, v))
        except Exception as e:
            c.execute("ROLLBACK")
            if isinstance(e, SimError):
                raise SimError("Database upgrade failed: %s; the transaction was rolled back" % e)
            raise SimError("Database upgrade failed in script %s: %s; the transaction was rolled back"
                           % (name, e))


def check_history(c, version):
    """OctopusDeploy/Issues #7790: the schema journal has a script this version does not know."""
    has_0321 = c.execute("SELECT 1 FROM SchemaVersions WHERE ScriptName='Script0321DeleteQueuedCleanupTasks'"
                         ).fetchone() is not None
    if issue_7790(has_0321, version):
        raise SimError("Unexpected upgrade history detected. You probably need to upgrade to a later version of "
                       "Octopus Server. Extra upgrade script(s) found: Script0321DeleteQueuedCleanupTasks")


def live_nodes(c, stale):
    """(name, ...) of nodes that look alive: OctopusServerNodeStatus from 2019, OctopusServerNode before."""
    if table_exists(c, "OctopusServerNodeStatus"):
        rows = c.execute("SELECT n.Name, s.LastSeen, s.IsOffline FROM OctopusServerNodeStatus s "
                         "JOIN OctopusServerNode n ON n.Id = s.Id")
    else:
        rows = c.execute("SELECT Name, LastSeen, IsOffline FROM OctopusServerNode")
    return [name for name, seen, off in rows if not off and time.time() - parse_iso(seen) < stale]


def check_upgrade(c, master_key, target, node_name, faults, skip_license_check, log=print):
    """Everything the real upgrader checks before it changes anything."""
    current = schema_version(c)
    verify_master_key(c, master_key)
    check_history(c, target)
    if vcmp(current, target) > 0:
        raise SimError("The database schema is at version %s, which is newer than this Octopus Server "
                       "(%s). Install %s or later, or restore a backup taken before the upgrade."
                       % (current, target, current))
    stop = required_stop(current, target)
    if stop:
        raise SimError("Cannot upgrade directly from %s to %s: %s (for example %s). Nothing was changed."
                       % (current, target, stop[1], stop[2]))
    sqlver = str(faults.get("sqlserver_version") or "2019")
    if needs_sql2016(target) and vkey(sqlver) < vkey("2016"):
        raise SimError("Octopus Server %s requires SQL Server 2016 or later; this SQL Server is %s. "
                       "Upgrade SQL Server first. Nothing was changed." % (target, sqlver))
    if checks_running_nodes(target):
        stale = int(faults.get("node_stale_seconds") or 300)
        running = [n for n in live_nodes(c, stale) if n != node_name]
        running += ["SimulatedNode-%d" % i for i in range(1, int(faults.get("nodes_running") or 0) + 1)]
        if running:
            raise SimError("Cannot upgrade the database while other Octopus Server nodes are running: %s. "
                           "Stop every node first. Nothing was changed." % ", ".join(running))
    if not skip_license_check:
        ok, msgs = license_compliance(c, target)
        if faults.get("license_noncompliant_after_upgrade"):
            ok, msgs = False, msgs + ["Simulated licence limits exceeded."]
        if not ok:
            raise SimError("Cannot upgrade: after upgrading your licence will no longer be compliant. %s "
                           "Use --skipLicenseCheck to upgrade anyway. Nothing was changed." % " ".join(msgs))
    return current


def installable_versions():
    return [v for v, _ in VERSIONS]
