"""The `Octopus.Server` stand-in: the server's command line, bound to one simulated machine."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from . import schema
from .common import (DEFAULT_INSTANCE, PID_FILE, SIM_DIR, SimError, connect, db_path_from_cs,
                     find_home_config, folders_of, has_cluster_shared, has_event_exports, load_faults,
                     new_master_key, read_config, read_json, verify_master_key, write_config, write_json)
from .machine import installed_version, machine_name, registry, save_registry

VALUE_OPTS = {"instance", "config", "home", "format", "connectionString", "masterKey", "webListenPrefixes",
              "artifacts", "taskLogs", "nugetRepository", "eventExports", "clusterShared", "drain", "wait",
              "licenseFile", "licenseBase64", "serverNodeName", "username", "password", "email", "user",
              "purpose"}


def parse(argv):
    if not argv:
        raise SimError("Usage: Octopus.Server <command> [--instance=NAME] [--key=value ...]; try 'help'", 2)
    cmd, opts = argv[0], {}
    i = 1
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--") and not a.startswith("/"):
            raise SimError("Unrecognized command line argument: %s" % a, 2)
        a = a.lstrip("-/")
        if "=" in a:
            k, v = a.split("=", 1)
        elif a in VALUE_OPTS and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            k, v = a, argv[i + 1]
            i += 1
        else:
            k, v = a, True
        opts[k] = v
        i += 1
    return cmd, opts


def truthy(v):
    return v is True or str(v).lower() in ("true", "1", "yes")


class Ctx:
    def __init__(self, machine, opts):
        self.machine = machine
        self.opts = opts
        self.instance = opts.get("instance") or DEFAULT_INSTANCE
        self.version = installed_version(machine)
        if self.version is None:
            raise SimError("Octopus Server is not installed on this machine (program folder missing)", 127)

    def entry(self, required=True):
        for e in registry(self.machine)["Instances"]:
            if e["InstanceName"].lower() == self.instance.lower():
                return e
        if required:
            raise SimError("Instance '%s' of Octopus Server has not been configured on this machine. "
                           "Available instances: %s" % (self.instance, ", ".join(
                               e["InstanceName"] for e in registry(self.machine)["Instances"]) or "none"))
        return None

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

    def db(self, cfg=None):
        cfg = cfg or self.config()
        cs = cfg.get("Octopus.Storage.ExternalDatabaseConnectionString")
        if not cs:
            raise SimError("The database connection string is not configured for instance '%s'; run "
                           "'database --connectionString=...' first" % self.instance)
        return connect(db_path_from_cs(cs))

    def out(self, obj, fmt=None):
        if (fmt or self.opts.get("format", "text")).lower() == "json":
            print(json.dumps(obj, indent=2))
        else:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    print("%s: %s" % (k, v))
            else:
                print(obj)


def main(machine, argv):
    try:
        cmd, opts = parse(argv)
        if cmd in ("help", "--help"):
            print(__doc__)
            print("Commands: " + ", ".join(sorted(COMMANDS)))
            return 0
        fn = COMMANDS.get(cmd)
        if not fn:
            raise SimError("Command '%s' is not recognized; see 'help'" % cmd, 2)
        ctx = Ctx(machine, opts)
        allowed = ALLOWED.get(cmd, set()) | {"instance", "console", "noconsolelogging"}
        extra = set(opts) - allowed
        if extra:
            raise SimError("Unrecognized command line arguments: %s" % ", ".join("--" + e for e in sorted(extra)), 2)
        return fn(ctx) or 0
    except SimError as e:
        sys.stderr.write("Octopus.Server: %s\n" % e)
        return e.code or 1


# ---------------------------------------------------------------- commands

def c_version(ctx):
    v = ctx.version
    ctx.out({"InformationalVersion": v, "MajorMinorPatch": v, "NuGetVersion": v, "SemVer": v, "Version": v})


def c_list_instances(ctx):
    items = [{"InstanceName": e["InstanceName"], "ConfigurationFilePath": e["ConfigurationFilePath"],
              "ServiceInstalled": e.get("ServiceInstalled", False), "Running": service_pid(ctx, e) is not None}
             for e in registry(ctx.machine)["Instances"]]
    if ctx.opts.get("format", "").lower() == "json":
        print(json.dumps(items, indent=2))
    else:
        for i in items:
            print("%s  %s  %s" % (i["InstanceName"], i["ConfigurationFilePath"], "running" if i["Running"] else "stopped"))


def c_create_instance(ctx):
    if "config" not in ctx.opts:
        raise SimError("create-instance requires --config=FILE", 2)
    if ctx.entry(required=False):
        raise SimError("Instance '%s' already exists on this machine" % ctx.instance)
    path = os.path.abspath(ctx.opts["config"])
    cfg = read_config(path) if os.path.exists(path) else {}
    cfg.setdefault("Octopus.Server.NodeName", machine_name(ctx.machine))
    cfg["Octopus.Server.InstanceName"] = ctx.instance
    if ctx.opts.get("home"):
        cfg["Octopus.Home"] = os.path.abspath(ctx.opts["home"])
    reg = registry(ctx.machine)
    reg["Instances"].append({"InstanceName": ctx.instance, "ConfigurationFilePath": path,
                             "ServiceInstalled": False})
    save_registry(ctx.machine, reg)
    ctx.save(cfg)
    print("Instance '%s' created with configuration file %s" % (ctx.instance, path))


def c_delete_instance(ctx):
    e = ctx.entry()
    if service_pid(ctx, e):
        raise SimError("Stop the service of instance '%s' before deleting it" % ctx.instance)
    reg = registry(ctx.machine)
    reg["Instances"] = [x for x in reg["Instances"] if x["InstanceName"] != e["InstanceName"]]
    save_registry(ctx.machine, reg)
    print("Instance '%s' deleted (configuration file and home folder are kept)" % ctx.instance)


def c_configure(ctx):
    cfg = ctx.config()
    o = ctx.opts
    if "home" in o:
        cfg["Octopus.Home"] = os.path.abspath(o["home"])
    if "webListenPrefixes" in o:
        cfg["Octopus.WebPortal.ListenPrefixes"] = o["webListenPrefixes"]
    if "serverNodeName" in o:
        cfg["Octopus.Server.NodeName"] = o["serverNodeName"]
    ctx.save(cfg)
    print("Configuration of instance '%s' saved" % ctx.instance)


def c_path(ctx):
    cfg = ctx.config()
    o = ctx.opts
    if "eventExports" in o and not has_event_exports(ctx.version):
        raise SimError("Unrecognized command line arguments: --eventExports (needs Octopus Server 2023.3+)", 2)
    if "clusterShared" in o and not has_cluster_shared(ctx.version):
        raise SimError("Unrecognized command line arguments: --clusterShared (needs Octopus Server 2020.2.15+)", 2)
    if "clusterShared" in o:
        base = os.path.abspath(o["clusterShared"])
        for k, sub in (("Artifacts", "Artifacts"), ("Packages", "Packages"), ("TaskLogs", "TaskLogs"),
                       ("EventExports", "EventExports")):
            cfg["Octopus.Folders." + k] = os.path.join(base, sub)
    for opt, key in (("artifacts", "Artifacts"), ("taskLogs", "TaskLogs"), ("nugetRepository", "Packages"),
                     ("eventExports", "EventExports")):
        if opt in o:
            cfg["Octopus.Folders." + key] = os.path.abspath(o[opt])
    ctx.save(cfg)
    print(json.dumps(folders_of(cfg), indent=2))


def c_show_master_key(ctx):
    key = ctx.config().get("Octopus.Storage.MasterKey")
    if not key:
        raise SimError("No master key is configured for instance '%s'" % ctx.instance)
    if ctx.opts.get("format", "text").lower() == "json":
        print(json.dumps({"MasterKey": key}))
    else:
        print(key)


def c_show_configuration(ctx):
    cfg = ctx.config()
    out = {k: v for k, v in cfg.items() if k != "Octopus.Storage.MasterKey"}
    f = folders_of(cfg)
    out.update({"Octopus.Folders.Artifacts": f["Artifacts"], "Octopus.Folders.Packages": f["Packages"],
                "Octopus.Folders.TaskLogs": f["TaskLogs"], "Octopus.Server.InstalledVersion": ctx.version,
                "Octopus.Server.ConfigurationFilePath": ctx.config_path})
    if has_event_exports(ctx.version):
        out["Octopus.Folders.EventExports"] = f["EventExports"]
    fmt = ctx.opts.get("format", "json").lower()
    if fmt == "json":
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        for k in sorted(out):
            print("%s: %s" % (k, out[k]))


def c_database(ctx):
    o = ctx.opts
    cfg = ctx.config()
    if "connectionString" in o or "masterKey" in o:
        cs = o.get("connectionString") or cfg.get("Octopus.Storage.ExternalDatabaseConnectionString")
        key = o.get("masterKey") or cfg.get("Octopus.Storage.MasterKey")
        if not cs:
            raise SimError("--masterKey needs a connection string (--connectionString=...)", 2)
        if "create" not in o:
            if not key:
                raise SimError("An existing database needs its master key: pass --masterKey=KEY")
            c = connect(db_path_from_cs(cs))
            try:
                schema.schema_version(c)
                verify_master_key(c, key)
            finally:
                c.close()
        cfg["Octopus.Storage.ExternalDatabaseConnectionString"] = cs
        if key:
            cfg["Octopus.Storage.MasterKey"] = key
        ctx.save(cfg)
        print("Database connection string and master key saved for instance '%s'" % ctx.instance)
    if "create" in o:
        cs = cfg.get("Octopus.Storage.ExternalDatabaseConnectionString")
        if not cs:
            raise SimError("database --create needs --connectionString=...", 2)
        key = cfg.get("Octopus.Storage.MasterKey") or new_master_key()
        cfg["Octopus.Storage.MasterKey"] = key
        home = cfg.get("Octopus.Home")
        schema.create_database(db_path_from_cs(cs), key, ctx.version, cfg.get("Octopus.Server.NodeName"),
                               folders=folders_of(cfg) if home else None)
        ctx.save(cfg)
        print("Database created at schema version %s" % ctx.version)
    if "upgrade" in o:
        if service_pid(ctx, ctx.entry()):
            raise SimError("The Octopus Server service of instance '%s' is running; stop it before "
                           "upgrading the database" % ctx.instance)
        key = cfg.get("Octopus.Storage.MasterKey")
        c = ctx.db(cfg)
        try:
            faults = load_faults(ctx.machine)
            node = cfg.get("Octopus.Server.NodeName")
            before = schema.check_upgrade(c, key, ctx.version, node, faults, "skipLicenseCheck" in o)
            if before == ctx.version:
                print("The database is already at version %s; nothing to upgrade" % before)
                return 0
            print("Upgrading the database from %s to %s" % (before, ctx.version))
            schema.apply_migrations(c, ctx.version, node, fault_at=faults.get("migration_fail_at"), log=print)
        finally:
            c.close()
        print("Database upgrade completed: schema version %s" % ctx.version)
    if not ({"connectionString", "masterKey", "create", "upgrade"} & set(o)):
        raise SimError("database: nothing to do (use --connectionString/--masterKey, --create or --upgrade)", 2)


def c_license(ctx):
    o = ctx.opts
    if "licenseFile" in o:
        with open(o["licenseFile"]) as f:
            text = f.read()
    elif "licenseBase64" in o:
        import base64
        text = base64.b64decode(o["licenseBase64"]).decode()
    else:
        raise SimError("license requires --licenseFile=FILE or --licenseBase64=TEXT", 2)
    if "<License" not in text:
        raise SimError("The licence file is not a valid Octopus licence")
    c = ctx.db()
    try:
        schema.put_config_row(c, "license", {"Id": "license", "LicenseText": text})
    finally:
        c.close()
    print("Licence imported")


def c_node(ctx):
    cfg = ctx.config()
    node = cfg.get("Octopus.Server.NodeName")
    c = ctx.db(cfg)
    try:
        if "drain" in ctx.opts:
            on = 1 if truthy(ctx.opts["drain"]) else 0
            c.execute("INSERT OR IGNORE INTO OctopusServerNode VALUES (?,?,?,?,0,5,0,?)",
                      (node, node, schema.now_iso(), "Follower", json.dumps({"Id": node, "Name": node})))
            c.execute("UPDATE OctopusServerNode SET IsInMaintenanceMode=? WHERE Id=?", (on, node))
            print("Node %s drain set to %s" % (node, bool(on)))
            deadline = time.time() + float(ctx.opts.get("wait") or 0)
            while on and time.time() < deadline:
                n = c.execute("SELECT COUNT(*) FROM ServerTask WHERE State IN ('Executing','Cancelling') "
                              "AND ServerNodeId=?", (node,)).fetchone()[0]
                if n == 0:
                    break
                time.sleep(0.2)
    finally:
        c.close()


def c_admin(ctx):
    user = ctx.opts.get("username")
    if not user:
        raise SimError("admin requires --username=NAME --password=PASSWORD", 2)
    c = ctx.db()
    try:
        row = c.execute("SELECT Id FROM [User] WHERE Username=?", (user,)).fetchone()
        if not row:
            schema.add_user(c, user, True)
        print("Administrator '%s' ready" % user)
    finally:
        c.close()


def c_create_api_key(ctx):
    user = ctx.opts.get("user")
    c = ctx.db()
    try:
        row = c.execute("SELECT Id FROM [User] WHERE Username=?", (user,)).fetchone()
        if not row:
            raise SimError("User '%s' does not exist" % user)
        key = schema.new_api_key()
        schema.add_api_key(c, row[0], key, ctx.opts.get("purpose", "command line"))
    finally:
        c.close()
    ctx.out({"ApiKey": key} if ctx.opts.get("format") == "json" else key)


# ---------------------------------------------------------------- service

def service_pid(ctx, entry=None):
    entry = entry or ctx.entry()
    try:
        home = read_config(entry["ConfigurationFilePath"]).get("Octopus.Home")
    except SimError:
        return None
    if not home:
        return None
    try:
        with open(os.path.join(home, PID_FILE)) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"octosim" not in f.read():
                return None
        return pid if alive(pid) else None
    except (OSError, ValueError):
        return None


def preflight(machine, cfg, version):
    """Why the server would refuse to start, as a SimError (checked by `serve` too)."""
    cs = cfg.get("Octopus.Storage.ExternalDatabaseConnectionString")
    if not cs:
        raise SimError("The database connection string is not configured")
    c = connect(db_path_from_cs(cs))
    try:
        sv = schema.schema_version(c)
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


def c_service(ctx):
    o = ctx.opts
    e = ctx.entry()
    reg = registry(ctx.machine)
    me = [x for x in reg["Instances"] if x["InstanceName"] == e["InstanceName"]][0]
    if "stop" in o or "restart" in o:
        stop_service(ctx, e)
    if "uninstall" in o:
        me["ServiceInstalled"] = False
        save_registry(ctx.machine, reg)
        print("Service OctopusDeploy: %s uninstalled" % ctx.instance)
    if "install" in o or "reconfigure" in o:
        me["ServiceInstalled"] = True
        save_registry(ctx.machine, reg)
        print("Service OctopusDeploy: %s installed" % ctx.instance)
    if "start" in o or "restart" in o:
        if not me.get("ServiceInstalled"):
            raise SimError("The service for instance '%s' is not installed (run 'service --install')" % ctx.instance)
        start_service(ctx, e)


def alive(pid):
    """Is `pid` running (a zombie, e.g. a service started in-process and not yet reaped, is not)?"""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_service(ctx, e):
    pid = service_pid(ctx, e)
    home = read_config(e["ConfigurationFilePath"]).get("Octopus.Home")
    if pid is None:
        print("Service of instance '%s' is not running" % ctx.instance)
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not alive(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    try:
        os.unlink(os.path.join(home, PID_FILE))
    except OSError:
        pass
    print("Service of instance '%s' stopped" % ctx.instance)


def start_service(ctx, e):
    if service_pid(ctx, e):
        print("Service of instance '%s' is already running" % ctx.instance)
        return
    cfg = ctx.config()
    home = cfg.get("Octopus.Home")
    if not home:
        raise SimError("The home folder is not configured (configure --home=DIR)")
    preflight(ctx.machine, cfg, ctx.version)
    port = listen_port(cfg)
    logdir = os.path.join(home, "Logs")
    os.makedirs(logdir, exist_ok=True)
    logpath = os.path.join(logdir, "OctopusServer.txt")
    log = open(logpath, "ab")
    p = subprocess.Popen([sys.executable, os.path.join(SIM_DIR, "octosim.py"), "serve", "--home", home,
                          "--port", str(port), "--config", ctx.config_path, "--machine", ctx.machine],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    with open(os.path.join(home, PID_FILE), "w") as f:
        f.write(str(p.pid))
    url = "http://127.0.0.1:%d/api" % port
    deadline = time.time() + 20
    while time.time() < deadline:
        if p.poll() is not None:
            try:
                os.unlink(os.path.join(home, PID_FILE))
            except OSError:
                pass
            with open(logpath, "rb") as f:
                tail = f.read()[-600:].decode(errors="replace").strip().splitlines()
            raise SimError("The Octopus Server service failed to start: %s" % (tail[-1] if tail else "exit %s" % p.returncode))
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers={"X-Octosim-Internal": "1"}),
                                   timeout=1).read()
            print("Service of instance '%s' started (pid %d) on http://127.0.0.1:%d/" % (ctx.instance, p.pid, port))
            return
        except Exception:
            time.sleep(0.1)
    raise SimError("The Octopus Server service did not answer on %s within 20 s" % url)


COMMANDS = {
    "version": c_version, "list-instances": c_list_instances, "create-instance": c_create_instance,
    "delete-instance": c_delete_instance, "configure": c_configure, "path": c_path,
    "show-master-key": c_show_master_key, "show-configuration": c_show_configuration,
    "database": c_database, "service": c_service, "license": c_license, "node": c_node,
    "admin": c_admin, "create-api-key": c_create_api_key,
}
ALLOWED = {
    "version": {"format"}, "list-instances": {"format"}, "create-instance": {"config", "home", "serverNodeName"},
    "delete-instance": set(), "configure": {"home", "webListenPrefixes", "serverNodeName"},
    "path": {"artifacts", "taskLogs", "nugetRepository", "eventExports", "clusterShared"},
    "show-master-key": {"format"}, "show-configuration": {"format"},
    "database": {"connectionString", "masterKey", "create", "upgrade", "skipLicenseCheck", "grant"},
    "service": {"start", "stop", "install", "uninstall", "reconfigure", "restart", "username", "password"},
    "license": {"licenseFile", "licenseBase64"}, "node": {"drain", "wait"},
    "admin": {"username", "password", "email"}, "create-api-key": {"user", "purpose", "format"},
}
