"""The `Octopus.Server` stand-in: the server's command line, bound to one simulated machine.

Each command accepts exactly the options FIDELITY.md (section 2) lists for the installed version
and refuses anything else the way the command framework does: `Unrecognized command line
arguments: ...` on stderr and exit 1; an unknown command prints the command list and exits 2."""

import base64
import json
import os
import sys
import time
import xml.etree.ElementTree as ET

from . import schema, winsvc
from .common import (EVENT_EXPORTS_KEY, FOLDER_KEYS, SimError, connect, db_path_from_cs, folders_of,
                     load_faults, new_master_key, parse_ado, read_config, KeywordNotSupported, since,
                     vcmp, verify_master_key, write_config, write_json)
from .machine import file_version, installed_version, machine_name, registry, save_registry

DEFAULT_INSTANCE = winsvc.DEFAULT_INSTANCE
COMMON = {"help", "nologo", "noconsolelogging", "console"}
DOCS = "2023.1.0"  # options shown only by the docs pages (dated 2023-01-01)


class Opt:
    def __init__(self, value, first=None, until=None, key=None):
        self.value, self.first, self.until, self.key = value, first, until, key


def V(first=None, until=None, key=None):
    return Opt(True, first, until, key)


def F(first=None, until=None, key=None):
    return Opt(False, first, until, key)


INSTANCE = {"instance": V(), "config": V()}
SKIPDB = {"skipDatabaseCompatibilityCheck": F(DOCS), "skipDatabaseSchemaUpgradeCheck": F(DOCS)}
CONFIGURE_DOCS_ONLY = (
    "cachePackages cacheLowDiskSpaceThreshold cacheDirectoryFullThreshold maxConcurrentTasks sendTelemetry "
    "grpcListenPort commsListenWebSocket requestLoggingEnabled customBundledPackageDirectory "
    "upgradeNotification AzureDevOpsIsEnabled jiraIsEnabled jiraBaseUrl GitHubIsEnabled GitHubBaseUrl "
    "webCorsWhitelist xFrameOptions xFrameOptionAllowFrom hstsEnabled hstsMaxAge "
    "webContentSecurityPolicyEnabled webReferrerPolicy webServer trustedProxies webTrustedRedirectUrls "
    "autoLoginEnabled selfServiceLoginEditingEnabled cookieDomain dynamicExtensionsEnabled "
    "experiencesEnabled azureADIsEnabled azureADIssuer azureADClientId azureADClientSecret azureADScope "
    "azureADNameClaimType azureADAllowAutoUserCreation azureADRoleClaimType activeDirectoryIsEnabled "
    "activeDirectoryContainer webAuthenticationScheme allowFormsAuthenticationForDomainUsers "
    "activeDirectorySecurityGroupsEnabled activeDirectoryAllowAutoUserCreation googleAppsIsEnabled "
    "googleAppsIssuer googleAppsClientId googleAppsClientSecret googleAppsScope googleAppsNameClaimType "
    "googleAppsAllowAutoUserCreation googleAppsHostedDomain guestloginenabled ldapIsEnabled ldapServer "
    "ldapPort ldapSecurityProtocol ldapIgnoreSslErrors ldapUsername ldapPassword ldapUserBaseDn "
    "ldapGroupBaseDn ldapDefaultDomain ldapUniqueAccountNameAttribute ldapUserFilter ldapGroupFilter "
    "ldapNestedGroupFilter ldapNestedGroupSearchDepth ldapAllowAutoUserCreation "
    "ldapReferralFollowingEnabled ldapReferralHopLimit ldapConstraintTimeLimit "
    "ldapUserDisplayNameAttribute ldapUserPrincipalNameAttribute ldapUserMembershipAttribute "
    "ldapUserEmailAttribute ldapGroupNameAttribute oktaIsEnabled oktaIssuer oktaClientId "
    "oktaClientSecret oktaScope oktaNameClaimType oktaAllowAutoUserCreation").split()

SPECS = {
    "version": (DOCS, {"format": V()}),
    "list-instances": (None, {"format": V()}),
    "create-instance": (None, {"instance": V(), "config": V(), "home": V("3.16.4"), "serverNodeName": V(DOCS)}),
    "delete-instance": (None, dict(INSTANCE)),
    "configure": (None, dict(INSTANCE, **SKIPDB, **{
        "home": V(key="Octopus.Home"), "webListenPrefixes": V(key="Octopus.WebPortal.ListenPrefixes"),
        "commsListenPort": V(key="Octopus.Communications.ServicesPort"),
        "upgradeCheck": V(key="Octopus.Upgrades.AllowChecking"), "webForceSSL": V(key="Octopus.WebPortal.ForceSsl"),
        "serverNodeName": V(key="Octopus.Server.NodeName"),
        "storageConnectionString": V(until="2018.1.0"), "masterKey": V(until="2018.1.0")},
        **{o: V(DOCS) for o in CONFIGURE_DOCS_ONLY})),
    "path": (None, dict(INSTANCE, **SKIPDB, **{
        "artifacts": V(key=FOLDER_KEYS["Artifacts"]), "taskLogs": V(key=FOLDER_KEYS["TaskLogs"]),
        "nugetRepository": V(key=FOLDER_KEYS["Packages"]), "clusterShared": V("2020.2.15"),
        "eventExports": V("2023.3.0", key=EVENT_EXPORTS_KEY), "imports": V(DOCS), "telemetry": V(DOCS),
        "cacheDirectory": V(DOCS)})),
    "show-master-key": (None, dict(INSTANCE, format=V(DOCS))),
    "show-configuration": ("3.5.0", dict(INSTANCE, format=V(), file=V())),
    "database": (None, dict(INSTANCE, create=F(), masterKey=V(), grant=V(), upgrade=F("3.13.9"),
                            connectionString=V("2018.1.0"), skipLicenseCheck=F("2018.8.9"),
                            skipDatabaseCompatibilityCheck=F(DOCS), delete=F(DOCS))),
    "service": (None, {"instance": V(), "start": F(), "stop": F(), "restart": F(), "reconfigure": F(),
                       "install": F(), "uninstall": F(), "username": V(), "user": V(), "password": V(),
                       "dependOn": V()}),
    "node": ("2018.1.0", dict(INSTANCE, **SKIPDB, drain=V(), wait=V("2019.1.0"), **{
        "cancel-tasks": F("2019.1.0"), "taskCap": V("2018.6.13"), "cancel-wait": V("2025.3.0")})),
    "watchdog": (None, {"create": F(), "delete": F(), "interval": V(), "instances": V()}),
    "license": (None, dict(INSTANCE, licenseFile=V(), licenseBase64=V(), skipLicenseCheck=F("2018.8.9"),
                           free=F(until=DOCS))),
    "admin": (None, dict(INSTANCE, **SKIPDB, username=V(), user=V(), password=V(), email=V(), apiKey=V(),
                         wait=V(DOCS), externalGroup=V(DOCS), externalGroupId=V(DOCS), externalRoleId=V(DOCS),
                         externalGroupDescription=V(DOCS), externalRoleDescription=V(DOCS))),
}
NOT_SIMULATED = ("builtin-worker checkservices export-certificate import-certificate lost-master-key metrics "
                 "new-certificate proxy regenerate-certificate rotate-master-key run set-master-key "
                 "show-thumbprint ssl-certificate external-worker").split()


def available(spec, version):
    return since(version, spec.first) and (spec.until is None or vcmp(version, spec.until) < 0)


def parse(argv, opts_spec, version):
    """Mono.Options-style parsing (names case-insensitive, as OctopusDSC's `--connectionstring` shows).
    Returns ({canonical name: value or True}, [unrecognized arguments])."""
    names = {k.lower(): k for k, o in opts_spec.items() if available(o, version)}
    names.update({c: c for c in COMMON})
    opts, bad = {}, []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        body = a[2:] if a.startswith("--") else a[1:] if a[:1] in ("-", "/") else None
        if not body:
            bad.append(a)
            continue
        name, sep, val = body.partition("=")
        if not sep:
            name, sep, val = body.partition(":")
        key = names.get(name.lower())
        if key is None:
            bad.append(a)
            continue
        spec = opts_spec.get(key)
        if spec is not None and spec.value:
            if not sep:
                if i >= len(argv):
                    raise SimError("Missing required value for option '--%s'." % key, 100)
                val = argv[i]
                i += 1
            opts[key] = val
        elif sep:
            bad.append(a)
        else:
            opts[key] = True
    if bad:
        raise SimError("Unrecognized command line arguments: " + " ".join(bad), 1)
    return opts


def truthy(v, what):
    s = str(v).strip().lower()
    if s in ("true", "false"):
        return s == "true"
    raise SimError("String '%s' was not recognized as a valid Boolean (%s)." % (v, what), 100)


class Ctx:
    def __init__(self, machine, cmd, opts, version):
        self.machine, self.cmd, self.opts, self.version = machine, cmd, opts, version
        self._instance = None

    @property
    def instance(self):
        if self._instance is None:
            self._instance = self.entry()["InstanceName"]
        return self._instance

    def entry(self):
        """The instance the command acts on (framework rules, OctopusDeploy/Issues #4945)."""
        entries = registry(self.machine)["Instances"]
        avail = ", ".join(e["InstanceName"] for e in entries)
        name, cfgpath = self.opts.get("instance"), self.opts.get("config")
        if name:
            for e in entries:
                if e["InstanceName"].lower() == name.lower():
                    return e
            raise SimError("Instance %s of Octopus Server has not been configured on this machine. "
                           "Available instances: %s." % (name, avail or "none"))
        if cfgpath:
            for e in entries:
                if os.path.abspath(e["ConfigurationFilePath"]) == os.path.abspath(cfgpath):
                    return e
            raise SimError("No instance of Octopus Server uses the configuration file %s" % cfgpath)
        for e in entries:
            if e["InstanceName"] == DEFAULT_INSTANCE:
                return e
        if len(entries) == 1 and since(self.version, "2018.1.0"):
            return entries[0]
        raise SimError("There is no default instance of Octopus Server configured on this machine. Please pass "
                       "--instance=INSTANCENAME when invoking this command to target a specific instance. "
                       "Available instances: %s." % (avail or "none"))

    @property
    def config_path(self):
        return self.entry()["ConfigurationFilePath"]

    def config(self):
        return read_config(self.config_path)

    def save(self, cfg):
        write_config(self.config_path, cfg)
        home = cfg.get("Octopus.Home")
        if home:
            os.makedirs(home, exist_ok=True)
            write_json(os.path.join(home, "octosim-instance.json"),
                       {"machine": self.machine, "instance": self.instance, "config": self.config_path})

    def node_name(self, cfg=None):
        return (cfg or self.config()).get("Octopus.Server.NodeName") or machine_name(self.machine)

    def db(self, cfg=None):
        cs = (cfg or self.config()).get("Octopus.Storage.ExternalDatabaseConnectionString")
        if not cs:
            raise SimError("The database connection string is not configured for instance '%s'" % self.instance)
        return connect(db_path_from_cs(cs))


def main(machine, argv):
    try:
        version = installed_version(machine)
        if version is None:
            raise SimError("Octopus Server is not installed on this machine (program folder missing)", 127)
        cmd = (argv[0] if argv else "").lower().lstrip("-/")
        spec = SPECS.get(cmd)
        if cmd in NOT_SIMULATED:
            raise SimError("The command '%s' exists in Octopus Server but is not simulated" % cmd, 2)
        if spec is None or not since(version, spec[0]):
            print("Usage: Octopus.Server <command> [<options>]\n\nWhere <command> is one of:")
            for c in sorted(c for c, s in SPECS.items() if since(version, s[0])):
                print("  " + c)
            return 2
        opts = parse(argv[1:], spec[1], version)
        if "help" in opts:
            print("Usage: Octopus.Server %s [<options>]" % cmd)
            for k, o in sorted(spec[1].items()):
                if available(o, version):
                    print("      --%s%s" % (k, "=VALUE" if o.value else ""))
            return 0
        return COMMANDS[cmd](Ctx(machine, cmd, opts, version)) or 0
    except SimError as e:
        sys.stderr.write("%s\n" % e)
        return e.code or 1


def fmt_of(ctx, allowed, default):
    f = str(ctx.opts.get("format", default)).lower()
    if f not in allowed:
        raise SimError("The format '%s' is not supported. Try %s." % (ctx.opts["format"], " or ".join(allowed)))
    return f


# ---------------------------------------------------------------- commands

def c_version(ctx):
    v = ctx.version
    if fmt_of(ctx, ("text", "json"), "text") == "json":
        print(json.dumps({"InformationalVersion": v, "MajorMinorPatch": v, "NuGetVersion": v,
                          "SourceBranchName": "main", "IsPrerelease": False}, indent=2))
    else:
        print(v)


def c_list_instances(ctx):
    entries = registry(ctx.machine)["Instances"]
    if fmt_of(ctx, ("text", "json"), "text") == "json":
        print(json.dumps([{"InstanceName": e["InstanceName"], "ConfigurationFilePath": e["ConfigurationFilePath"]}
                          for e in entries], indent=2))
    elif not entries:
        print("No instances installed")
    else:
        for e in entries:
            print("Instance '%s' uses configuration '%s'." % (e["InstanceName"], e["ConfigurationFilePath"]))


def c_create_instance(ctx):
    name = ctx.opts.get("instance") or DEFAULT_INSTANCE
    if "config" not in ctx.opts:
        raise SimError("Please provide the path to the configuration file to create with --config=FILE")
    reg = registry(ctx.machine)
    if any(e["InstanceName"].lower() == name.lower() for e in reg["Instances"]):
        raise SimError("An instance named '%s' already exists on this machine" % name)
    path = os.path.abspath(ctx.opts["config"])
    cfg = read_config(path) if os.path.exists(path) else {}
    cfg["Octopus.Home"] = os.path.abspath(ctx.opts.get("home") or cfg.get("Octopus.Home") or os.path.dirname(path))
    if ctx.opts.get("serverNodeName"):
        cfg["Octopus.Server.NodeName"] = ctx.opts["serverNodeName"]
    reg["Instances"].append({"InstanceName": name, "ConfigurationFilePath": path})
    save_registry(ctx.machine, reg)
    ctx._instance = name
    ctx.opts["instance"] = name
    ctx.save(cfg)
    print("Creating installation for instance '%s' with configuration file %s" % (name, path))


def c_delete_instance(ctx):
    e = ctx.entry()
    if winsvc.pid_of(ctx.machine, e["InstanceName"]):
        raise SimError("The service of instance '%s' is running; stop it first" % e["InstanceName"])
    reg = registry(ctx.machine)
    reg["Instances"] = [x for x in reg["Instances"] if x["InstanceName"] != e["InstanceName"]]
    save_registry(ctx.machine, reg)
    print("Deleted instance: %s" % e["InstanceName"])


def set_keys(ctx, cfg, absolute=()):
    spec = SPECS[ctx.cmd][1]
    for k, v in ctx.opts.items():
        key = spec[k].key if k in spec else None
        if key:
            cfg[key] = os.path.abspath(v) if k in absolute else v


def c_configure(ctx):
    cfg = ctx.config()
    set_keys(ctx, cfg, absolute=("home",))
    if "storageConnectionString" in ctx.opts:
        set_connection_string(cfg, ctx.opts["storageConnectionString"])
    if "masterKey" in ctx.opts:
        cfg["Octopus.Storage.MasterKey"] = ctx.opts["masterKey"]
    ctx.save(cfg)
    print("Configuration of instance '%s' saved" % ctx.instance)


def c_path(ctx):
    cfg = ctx.config()
    if "clusterShared" in ctx.opts:
        base = os.path.abspath(ctx.opts["clusterShared"])
        for k, key in FOLDER_KEYS.items():
            cfg[key] = os.path.join(base, k)
    set_keys(ctx, cfg, absolute=("artifacts", "taskLogs", "nugetRepository", "eventExports"))
    ctx.save(cfg)
    print("Paths of instance '%s' saved" % ctx.instance)


def c_show_master_key(ctx):
    key = ctx.config().get("Octopus.Storage.MasterKey")
    if not key:
        raise SimError("No master key is configured for instance '%s'" % ctx.instance)
    if fmt_of(ctx, ("text", "json"), "text") == "json":
        print(json.dumps({"MasterKey": key}))
    else:
        print(key)


def shown_configuration(ctx):
    cfg = ctx.config()
    out = {k: v for k, v in cfg.items()
           if k not in ("Octopus.Storage.MasterKey", EVENT_EXPORTS_KEY) and not k.startswith("Octopus.Sim.")}
    f = folders_of(cfg)
    for k, key in FOLDER_KEYS.items():
        out[key] = f[k]
    out["Octopus.Server.NodeName"] = ctx.node_name(cfg)
    if since(ctx.version, "4.1.3"):
        try:
            c = ctx.db(cfg)
            try:
                out["Octopus.Server.License"] = (schema.get_config_row(c, "license") or {}).get("LicenseText", "")
            finally:
                c.close()
        except SimError:
            out["Octopus.Server.License"] = ""
    w = winsvc.watchdog(ctx.machine)
    out["Octopus.Watchdog.Enabled"] = "True" if w and winsvc.watched(ctx.machine, ctx.instance) else "False"
    out["Octopus.Watchdog.Instances"] = (w or {}).get("Instances", "")
    out["Octopus.Watchdog.Interval"] = str((w or {}).get("Interval", 0))
    return out


def c_show_configuration(ctx):
    out = shown_configuration(ctx)
    f = fmt_of(ctx, ("xml", "json", "json-hierarchical"), "xml")
    if f == "json":
        text = json.dumps(out, indent=2, sort_keys=True)
    elif f == "json-hierarchical":
        tree = {}
        for k in sorted(out):
            node = tree
            parts = k.split(".")
            for p in parts[:-1]:
                nxt = node.setdefault(p, {})
                if not isinstance(nxt, dict):
                    nxt = node[p] = {"": nxt}
                node = nxt
            node[parts[-1]] = out[k]
        text = json.dumps(tree, indent=2)
    else:
        root = ET.Element("octopus-settings")
        for k in sorted(out):
            ET.SubElement(root, "set", key=k).text = str(out[k])
        ET.indent(root)
        text = ET.tostring(root, encoding="unicode")
    if ctx.opts.get("file"):
        with open(ctx.opts["file"], "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)


def set_connection_string(cfg, cs):
    try:
        parse_ado(cs)
    except KeywordNotSupported as e:
        raise SimError(str(e), 100)
    db_path_from_cs(cs)
    cfg["Octopus.Storage.ExternalDatabaseConnectionString"] = cs


def c_database(ctx):
    o = ctx.opts
    cfg = ctx.config()
    acted = False
    if "connectionString" in o:
        set_connection_string(cfg, o["connectionString"])
        acted = True
    if "masterKey" in o:
        cfg["Octopus.Storage.MasterKey"] = o["masterKey"]
        acted = True
    if acted:
        ctx.save(cfg)
        print("Database connection settings saved for instance '%s'" % ctx.instance)
    if "create" in o:
        cs = cfg.get("Octopus.Storage.ExternalDatabaseConnectionString")
        if not cs:
            raise SimError("database --create needs a connection string", 1)
        path = db_path_from_cs(cs)
        if os.path.exists(path):
            print("The database already exists; nothing was created")
        else:
            key = cfg.get("Octopus.Storage.MasterKey") or new_master_key()
            cfg["Octopus.Storage.MasterKey"] = key
            schema.create_database(path, key, ctx.version, ctx.node_name(cfg), folders=folders_of(cfg))
            ctx.save(cfg)
            print("Database created at schema version %s" % ctx.version)
        acted = True
    if "upgrade" in o:
        upgrade(ctx, cfg)
        acted = True
    if not acted:
        raise SimError("Please specify at least one of --create, --upgrade or --connectionString", 1)


def upgrade(ctx, cfg):
    winsvc.watchdog_tick(ctx.machine, lambda inst, c: start_service(ctx.machine, inst, c))
    if winsvc.pid_of(ctx.machine, ctx.instance):
        raise SimError("The Octopus Server service of instance '%s' is running; stop it before upgrading the "
                       "database" % ctx.instance)
    c = ctx.db(cfg)
    try:
        faults = load_faults(ctx.machine)
        node = ctx.node_name(cfg)
        before = schema.check_upgrade(c, cfg.get("Octopus.Storage.MasterKey"), ctx.version, node, faults,
                                      "skipLicenseCheck" in ctx.opts)
        if before == ctx.version:
            print("The database is already at version %s; nothing to upgrade" % before)
            return
        print("Upgrading the database from %s to %s" % (before, ctx.version))
        schema.apply_migrations(c, ctx.version, node, fault_at=faults.get("migration_fail_at"), log=print)
    finally:
        c.close()
    print("Database upgrade completed: schema version %s" % ctx.version)


def c_license(ctx):
    o = ctx.opts
    if "licenseFile" in o:
        with open(o["licenseFile"]) as f:
            text = f.read()
    elif "licenseBase64" in o:
        text = base64.b64decode(o["licenseBase64"]).decode()
    elif "free" in o:
        text = schema.license_xml(machine_limit="10")
    else:
        raise SimError("Please provide --licenseFile=FILE or --licenseBase64=TEXT")
    if "<License" not in text:
        raise SimError("The licence file is not a valid Octopus licence")
    c = ctx.db()
    try:
        schema.put_config_row(c, "license", {"Id": "license", "LicenseText": text})
    finally:
        c.close()
    print("Licence imported")


def c_node(ctx):
    o = ctx.opts
    drain = truthy(o["drain"], "--drain") if "drain" in o else None
    if drain is not True and ("wait" in o or "cancel-tasks" in o or "cancel-wait" in o):
        raise SimError("The --wait, --cancel-tasks and --cancel-wait arguments can only be passed if the "
                       "--drain parameter is set to true")
    cfg = ctx.config()
    node = ctx.node_name(cfg)
    c = ctx.db(cfg)
    try:
        c.execute("INSERT OR IGNORE INTO OctopusServerNode VALUES (?,?,?,?,0,5,0,?)",
                  (node, node, schema.now_iso(), "Follower", json.dumps({"Id": node, "Name": node})))
        if "taskCap" in o:
            c.execute("UPDATE OctopusServerNode SET MaxConcurrentTasks=? WHERE Id=?", (int(o["taskCap"]), node))
            print("Task cap of node %s set to %s" % (node, o["taskCap"]))
        if drain is None:
            return
        c.execute("UPDATE OctopusServerNode SET IsInMaintenanceMode=? WHERE Id=?", (int(drain), node))
        print("Setting drain mode to %s." % drain)
        deadline = time.time() + float(o.get("wait") or 0)
        while drain:
            n = c.execute("SELECT COUNT(*) FROM ServerTask WHERE State IN ('Executing','Cancelling') "
                          "AND ServerNodeId=?", (node,)).fetchone()[0]
            if n == 0 or time.time() >= deadline:
                break
            time.sleep(0.2)
        if drain and "cancel-tasks" in o:
            c.execute("UPDATE ServerTask SET State='Cancelling' WHERE State='Executing' AND ServerNodeId=?", (node,))
    finally:
        c.close()


def c_watchdog(ctx):
    o = ctx.opts
    if "create" in o:
        winsvc.set_watchdog(ctx.machine, o.get("instances", "*"), int(o.get("interval", 5)))
        print("Watchdog task created for instances %s" % o.get("instances", "*"))
    elif "delete" in o:
        winsvc.delete_watchdog(ctx.machine)
        print("Watchdog task deleted")
    else:
        raise SimError("Please specify --create or --delete")


def c_admin(ctx):
    user = ctx.opts.get("username") or ctx.opts.get("user")
    if not user:
        raise SimError("Please provide --username=NAME")
    c = ctx.db()
    try:
        row = c.execute("SELECT Id FROM [User] WHERE Username=?", (user,)).fetchone()
        uid = row[0] if row else schema.add_user(c, user, True)
        key = ctx.opts.get("apiKey")
        if key:
            if not key.startswith("API-"):
                raise SimError("The API key must start with 'API-'")
            if not c.execute("SELECT 1 FROM ApiKey WHERE ApiKeyHashed=?", (schema.hash_api_key(key),)).fetchone():
                schema.add_api_key(c, uid, key, "admin --apiKey")
        print("Administrator '%s' ready" % user)
    finally:
        c.close()


# ---------------------------------------------------------------- service

def preflight(machine, cfg, version):
    """Why the server would refuse to start, as a SimError (checked by `serve` too)."""
    cs = cfg.get("Octopus.Storage.ExternalDatabaseConnectionString")
    if not cs:
        raise SimError("The database connection string is not configured")
    c = connect(db_path_from_cs(cs))
    try:
        sv = schema.schema_version(c)
        schema.check_history(c, version)
        if sv != version:
            raise SimError("The database schema version (%s) does not match the installed Octopus Server "
                           "(%s): database upgrade required (run 'database --upgrade')" % (sv, version)
                           if schema.vcmp(sv, version) < 0 else
                           "The database schema version (%s) is newer than the installed Octopus Server (%s)"
                           % (sv, version))
        verify_master_key(c, cfg.get("Octopus.Storage.MasterKey") or "")
    finally:
        c.close()


def listen_port(cfg):
    import urllib.parse
    prefix = cfg.get("Octopus.WebPortal.ListenPrefixes", "").split(",")[0].strip()
    try:
        port = urllib.parse.urlsplit(prefix).port
    except ValueError:
        port = None
    if not port:
        raise SimError("No web listen prefix with a port is configured (configure --webListenPrefixes="
                       "http://127.0.0.1:PORT/)")
    return port


def start_service(machine, instance, config):
    version = installed_version(machine)
    if version is None:
        raise SimError("Octopus Server is not installed")
    return winsvc.start(machine, instance, config, listen_port)


def c_service(ctx):
    o = ctx.opts
    if o.get("instance") == "*":
        entries = registry(ctx.machine)["Instances"]
    else:
        entries = [ctx.entry()]
    for e in entries:
        inst, cfg = e["InstanceName"], e["ConfigurationFilePath"]
        name = winsvc.service_name(inst)
        restart = False
        if "restart" in o:
            restart = winsvc.stop(ctx.machine, inst)
            print("Service %s %s" % (name, "stopped" if restart else "wasn't restarted as it is not running"))
        if "stop" in o:
            print("Service %s %s" % (name, "stopped" if winsvc.stop(ctx.machine, inst) else "is not running"))
        if "uninstall" in o:
            winsvc.uninstall(ctx.machine, inst)
            print("Service %s uninstalled" % name)
        if "install" in o or "reconfigure" in o:
            winsvc.install(ctx.machine, inst, cfg)
            print("Service %s installed" % name)
        if "start" in o or restart:
            if not winsvc.is_installed(ctx.machine, inst):
                raise SimError("Start requested for service %s, but no service with this name was found." % name)
            r = start_service(ctx.machine, inst, cfg)
            print("Service %s %s" % (name, "is already running" if r is None else "started"))


COMMANDS = {
    "version": c_version, "list-instances": c_list_instances, "create-instance": c_create_instance,
    "delete-instance": c_delete_instance, "configure": c_configure, "path": c_path,
    "show-master-key": c_show_master_key, "show-configuration": c_show_configuration,
    "database": c_database, "service": c_service, "license": c_license, "node": c_node,
    "watchdog": c_watchdog, "admin": c_admin,
}


# ---------------------------------------------------------------- Windows stand-ins of this machine

def sc_main(machine, argv):
    return winsvc.sc_main(machine, argv, lambda inst, cfg: start_service(machine, inst, cfg))


def filever_main(machine, argv):
    return winsvc.filever_main(machine, argv, lambda p: file_version(machine, p))
