"""The REST API of a simulated Octopus Server instance, and the download site.

State lives in the instance's SQLite database, so the API and ODBC see the same data."""

import io
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import schema
from .common import (FaultCache, SimError, connect, db_path_from_cs, folders_of, has_export_import,
                     has_health, has_node_status, has_spaces, has_workers, now_iso, parse_iso, read_config,
                     read_json, seal, unseal, vcmp)

STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content", 400: "Bad Request",
               401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
               409: "Conflict", 416: "Range Not Satisfiable", 429: "Too Many Requests",
               500: "Internal Server Error", 503: "Service Unavailable"}


class HttpError(Exception):
    def __init__(self, status, message, errors=None, headers=None):
        super().__init__(message)
        self.status = status
        self.errors = errors or []
        self.headers = headers or {}


# resource name -> (table, ItemType, columns overlaid on the JSON document, booleans, id prefix,
# minimum version)
RESOURCES = {
    "machines": ("Machine", "DeploymentTarget", ["Name", "IsDisabled"], "Machines", None),
    "workers": ("Worker", "Worker", ["Name", "IsDisabled"], "Workers", "2018.7.0"),
    "workerpools": ("WorkerPool", "WorkerPool", ["Name"], "WorkerPools", "2018.7.0"),
    "projects": ("Project", "Project", ["Name", "Slug", "IsDisabled"], "Projects", None),
    "environments": ("Environment", "Environment", ["Name", "SortOrder"], "Environments", None),
    "projecttriggers": ("ProjectTrigger", "ProjectTrigger", ["Name", "ProjectId", "IsDisabled"],
                        "ProjectTriggers", None),
    "subscriptions": ("Subscription", "Subscription", ["Name", "IsDisabled"], "Subscriptions", None),
    "events": ("Event", "Event", ["Occurred", "Category", "Username"], "Events", None),
    "artifacts": ("Artifact", "Artifact", ["Filename", "ServerTaskId"], "Artifacts", None),
}
BOOL_COLS = {"IsDisabled", "IsDefault", "IsInMaintenanceMode", "IsOffline"}
TASK_COLS = ["Id", "Name", "Description", "QueueTime", "StartTime", "CompletedTime", "State",
             "ServerNodeId", "DurationSeconds", "HasWarningsOrErrors", "JSON"]
DONE_STATES = ("Failed", "Canceled", "TimedOut", "Success")
MARK_OFFLINE = ("import sqlite3, sys, time\n"
                "time.sleep(float(sys.argv[1]))\n"
                "c = sqlite3.connect(sys.argv[2], timeout=30)\n"
                "c.execute('UPDATE OctopusServerNodeStatus SET IsOffline=1 WHERE Id=?', (sys.argv[3],))\n"
                "c.commit()\n")


class App:
    def __init__(self, home, config_path, machine, version, downloads=None):
        self.home = home
        self.config_path = config_path
        self.machine = machine
        self.version = version
        self.downloads = downloads
        cfg = read_config(config_path)
        self.cfg = cfg
        self.db_path = db_path_from_cs(cfg["Octopus.Storage.ExternalDatabaseConnectionString"])
        self.master_key = cfg.get("Octopus.Storage.MasterKey", "")
        self.node = cfg.get("Octopus.Server.NodeName") or \
            (read_json(os.path.join(machine, "machine.json"), {}) or {}).get("Name") or "SIM-SERVER"
        self.node_status = has_node_status(version)
        self.folders = folders_of(cfg)
        self.spaces = has_spaces(version)
        self.faults = FaultCache(machine)
        self.local = threading.local()
        self.auth_cache = {}
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "downloads": 0}
        self.stop_event = threading.Event()

    # -------------------------------------------------------------- plumbing
    def conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = connect(self.db_path)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            self.local.conn = c
        return c

    def get_faults(self):
        f = self.faults.get()
        if getattr(self.faults, "changed", False):
            self.faults.changed = False
            with self.lock:
                self.counts = {"requests": 0, "downloads": 0}
        return f

    def count(self, what):
        with self.lock:
            self.counts[what] += 1
            return self.counts[what]

    def start_background(self):
        c = self.conn()
        c.execute("INSERT OR IGNORE INTO OctopusServerNode VALUES (?,?,?,?,0,5,0,?)",
                  (self.node, self.node, now_iso(), "Leader", json.dumps({"Id": self.node, "Name": self.node})))
        c.execute("UPDATE OctopusServerNode SET LastSeen=?, IsOffline=0 WHERE Id=?", (now_iso(), self.node))
        if self.node_status:
            c.execute("INSERT OR REPLACE INTO OctopusServerNodeStatus VALUES (?,?,0,?)",
                      (self.node, now_iso(), json.dumps({"Id": self.node})))
        t = threading.Thread(target=self.task_loop, daemon=True)
        t.start()

    def heartbeat(self):
        c = self.conn()
        if self.node_status:
            c.execute("UPDATE OctopusServerNodeStatus SET LastSeen=?, IsOffline=0 WHERE Id=?", (now_iso(), self.node))
        else:
            c.execute("UPDATE OctopusServerNode SET LastSeen=? WHERE Id=?", (now_iso(), self.node))

    def mark_offline_later(self):
        """A stopping 2019+ node marks itself offline in OctopusServerNodeStatus after a short delay; the
        service is already stopped by then (a child process does the write)."""
        if not self.node_status:
            self.conn().execute("UPDATE OctopusServerNode SET IsOffline=1 WHERE Id=?", (self.node,))
            return
        delay = float(self.get_faults().get("node_offline_delay") or 2)
        # a fresh process (not a fork of this threaded one) that holds none of the service's descriptors
        subprocess.Popen([sys.executable, "-c", MARK_OFFLINE, str(delay), self.db_path, self.node],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)

    # -------------------------------------------------------------- task processor
    def task_loop(self):
        last_beat = time.time()
        while not self.stop_event.wait(0.1):
            try:
                self.process_tasks()
                if time.time() - last_beat > 10:
                    last_beat = time.time()
                    self.heartbeat()
            except Exception as e:  # keep the processor alive; report like the server log would
                print("task processor error: %r" % e, flush=True)

    def task_log(self, tid, line):
        os.makedirs(self.folders["TaskLogs"], exist_ok=True)
        with open(os.path.join(self.folders["TaskLogs"], tid.lower() + ".log.txt"), "a") as f:
            f.write("%s  Info     | %s\n" % (now_iso(), line))

    def process_tasks(self):
        c = self.conn()
        now = time.time()
        default = float(self.get_faults().get("task_duration") or 3)
        running = c.execute("SELECT Id, Name, StartTime, State, JSON FROM ServerTask "
                            "WHERE State IN ('Executing','Cancelling')").fetchall()
        for tid, name, start, state, js in running:
            doc = json.loads(js)
            dur = float(doc.get("SimDurationSeconds", default))
            if state == "Cancelling":
                self.finish(tid, doc, "Canceled", start, "")
            elif now - parse_iso(start) >= dur:
                try:
                    if name == "ExportProjects":
                        self.run_export(tid, doc)
                    elif name == "ImportProjects":
                        self.run_import(doc)
                    self.finish(tid, doc, "Success", start, "")
                except Exception as e:
                    self.finish(tid, doc, "Failed", start, str(e))
        node = c.execute("SELECT IsInMaintenanceMode, MaxConcurrentTasks FROM OctopusServerNode WHERE Id=?",
                         (self.node,)).fetchone()
        if node and node[0]:
            return
        free = (node[1] if node else 5) - len(running)
        if free <= 0:
            return
        for (tid,) in c.execute("SELECT Id FROM ServerTask WHERE State='Queued' ORDER BY QueueTime LIMIT ?",
                                (free,)).fetchall():
            c.execute("UPDATE ServerTask SET State='Executing', StartTime=?, ServerNodeId=? WHERE Id=? "
                      "AND State='Queued'", (now_iso(), self.node, tid))
            self.task_log(tid, "Task started on node %s" % self.node)

    def finish(self, tid, doc, state, start, error):
        doc["State"] = state
        doc["ErrorMessage"] = error
        dur = int(time.time() - parse_iso(start)) if start else 0
        self.conn().execute("UPDATE ServerTask SET State=?, CompletedTime=?, DurationSeconds=?, "
                            "HasWarningsOrErrors=?, JSON=? WHERE Id=?",
                            (state, now_iso(), dur, 1 if error else 0, json.dumps(doc), tid))
        self.task_log(tid, "Task %s%s" % (state, (": " + error) if error else ""))

    def queue_task(self, name, description, space, args, duration=None, system=False):
        c = self.conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            tid = schema.allocate(c, "ServerTasks")
            doc = {"Id": tid, "Name": name, "Description": description, "Arguments": args or {},
                   "State": "Queued", "ErrorMessage": ""}
            if duration is not None:
                doc["SimDurationSeconds"] = float(duration)
            cols = "Id, Name, Description, QueueTime, State, JSON"
            vals = [tid, name, description, now_iso(), "Queued", json.dumps(doc)]
            if self.spaces:
                cols += ", SpaceId"
                vals.append(None if system else (space or "Spaces-1"))
            c.execute("INSERT INTO ServerTask (%s) VALUES (%s)" % (cols, ",".join("?" * len(vals))), vals)
            c.execute("COMMIT")
        except Exception:
            c.execute("ROLLBACK")
            raise
        self.task_log(tid, "Task queued: %s" % description)
        return tid

    # -------------------------------------------------------------- export / import
    def run_export(self, tid, doc):
        c = self.conn()
        a = doc["Arguments"]
        space = a.get("SpaceId", "Spaces-1")
        password = a.get("Password") or ""
        projects = []
        for pid in a.get("ProjectIds", []):
            row = c.execute("SELECT JSON, Name, Slug, IsDisabled FROM Project WHERE Id=? AND SpaceId=?",
                            (pid, space)).fetchone()
            if not row:
                raise SimError("Project %s was not found in space %s" % (pid, space))
            pdoc = json.loads(row[0])
            pdoc.update({"Name": row[1], "Slug": row[2], "IsDisabled": bool(row[3])})
            vs = c.execute("SELECT JSON FROM VariableSet WHERE OwnerId=?", (pid,)).fetchone()
            variables = json.loads(vs[0])["Variables"] if vs else []
            for v in variables:
                if v.get("IsSensitive") and v.get("Value"):
                    v["Value"] = seal("export-password:" + password, unseal(self.master_key, v["Value"]))
            projects.append({"Project": pdoc, "Variables": variables})
        manifest = {"Format": "octosim-project-export/1", "SourceVersion": self.version,
                    "SourceSpaceId": space, "TaskId": tid, "Exported": now_iso(),
                    "PasswordCheck": seal("export-password:" + password, "octosim"), "Projects": projects}
        d = os.path.join(self.folders["Artifacts"], tid)
        os.makedirs(d, exist_ok=True)
        fname = "Octopus-Export-%s.zip" % tid
        with zipfile.ZipFile(os.path.join(d, fname), "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1))
        c.execute("BEGIN IMMEDIATE")
        aid = schema.allocate(c, "Artifacts")
        c.execute("INSERT INTO Artifact (Id, Filename, ServerTaskId, Created, JSON, SpaceId) VALUES (?,?,?,?,?,?)",
                  (aid, fname, tid, now_iso(), json.dumps({"Id": aid, "Filename": fname, "ServerTaskId": tid,
                                                           "RelativePath": tid + "/" + fname}), space))
        c.execute("COMMIT")
        self.task_log(tid, "Exported %d project(s) to artifact %s" % (len(projects), fname))

    def artifact_path(self, aid):
        row = self.conn().execute("SELECT JSON FROM Artifact WHERE Id=?", (aid,)).fetchone()
        if not row:
            return None
        return os.path.join(self.folders["Artifacts"], json.loads(row[0])["RelativePath"])

    def imports_dir(self):
        return os.path.join(self.cfg.get("Octopus.Home") or self.home, "Imports")

    def fetch_package(self, src):
        typ = (src.get("Type") or "").lower()
        if typ == "upload":
            name = os.path.basename(src.get("UploadedFileId") or "")
            path = os.path.join(self.imports_dir(), name)
            if not name or not os.path.exists(path):
                raise SimError("The uploaded file %r was not found" % src.get("UploadedFileId"))
            with open(path, "rb") as f:
                return f.read()
        space, task = src.get("SpaceId", "Spaces-1"), src.get("TaskId")
        row = self.conn().execute("SELECT Id FROM Artifact WHERE ServerTaskId=? AND Filename LIKE 'Octopus-Export-%'",
                                  (task,)).fetchone()
        if not row:
            raise SimError("No export package found for task %s in space %s" % (task, space))
        with open(self.artifact_path(row[0]), "rb") as f:
            return f.read()

    def run_import(self, doc):
        a = doc["Arguments"]
        data = self.fetch_package(a.get("ImportSource") or {})
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            m = json.loads(z.read("manifest.json"))
        if vcmp(m["SourceVersion"], self.version) > 0:
            raise SimError("Projects can only be imported from an Octopus Server of the same or an older "
                           "version (source %s, this server %s)" % (m["SourceVersion"], self.version))
        pw = "export-password:" + (a.get("Password") or "")
        try:
            unseal(pw, m["PasswordCheck"])
        except SimError:
            raise SimError("The password provided does not match the password used to export the projects")
        space = a.get("SpaceId", "Spaces-1")
        c = self.conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            if not c.execute("SELECT 1 FROM ProjectGroup WHERE SpaceId=?", (space,)).fetchone():
                c.execute("INSERT OR IGNORE INTO ProjectGroup VALUES ('ProjectGroups-1','Default Project Group',?,?)",
                          (json.dumps({"Id": "ProjectGroups-1", "Name": "Default Project Group"}), space))
            if not c.execute("SELECT 1 FROM Lifecycle WHERE SpaceId=?", (space,)).fetchone():
                c.execute("INSERT OR IGNORE INTO Lifecycle VALUES ('Lifecycles-1','Default Lifecycle',?,?)",
                          (json.dumps({"Id": "Lifecycles-1", "Name": "Default Lifecycle", "Phases": []}), space))
            pg = c.execute("SELECT Id FROM ProjectGroup WHERE SpaceId=? LIMIT 1", (space,)).fetchone()[0]
            lc = c.execute("SELECT Id FROM Lifecycle WHERE SpaceId=? LIMIT 1", (space,)).fetchone()[0]
            for entry in m["Projects"]:
                p = entry["Project"]
                old = c.execute("SELECT Id FROM Project WHERE Name=? AND SpaceId=?", (p["Name"], space)).fetchone()
                pid = old[0] if old else schema.allocate(c, "Projects")
                p.update({"Id": pid, "ProjectGroupId": pg, "LifecycleId": lc, "SpaceId": space,
                          "VariableSetId": "variableset-" + pid})
                c.execute("DELETE FROM Project WHERE Id=?", (pid,))
                c.execute("INSERT INTO Project (Id, Name, Slug, IsDisabled, ProjectGroupId, LifecycleId, JSON, "
                          "SpaceId) VALUES (?,?,?,?,?,?,?,?)", (pid, p["Name"], p.get("Slug") or pid,
                                                                1 if p.get("IsDisabled") else 0, pg, lc,
                                                                json.dumps(p), space))
                variables = entry["Variables"]
                for v in variables:
                    if v.get("IsSensitive") and v.get("Value"):
                        v["Value"] = seal(self.master_key, unseal(pw, v["Value"]))
                c.execute("INSERT OR REPLACE INTO VariableSet (Id, OwnerId, Version, JSON, SpaceId) "
                          "VALUES (?,?,1,?,?)", ("variableset-" + pid, pid, json.dumps(
                              {"Id": "variableset-" + pid, "OwnerId": pid, "Variables": variables}), space))
            c.execute("COMMIT")
        except Exception:
            c.execute("ROLLBACK")
            raise

    # -------------------------------------------------------------- auth and state
    def authenticate(self, key):
        if not key:
            raise HttpError(401, "You must be logged in to perform this action. Please provide an API key "
                                 "in the X-Octopus-ApiKey header.")
        now = time.monotonic()
        hit = self.auth_cache.get(key)
        if hit and hit[2] > now:
            return hit
        c = self.conn()
        row = c.execute("SELECT k.UserId FROM ApiKey k JOIN [User] u ON u.Id=k.UserId "
                        "WHERE k.ApiKeyHashed=? AND u.IsActive=1", (schema.hash_api_key(key),)).fetchone()
        if not row:
            raise HttpError(401, "The API key you provided was not valid. Please double-check your API key "
                                 "and try again.")
        team = json.loads(c.execute("SELECT JSON FROM Team WHERE Id='teams-administrators'").fetchone()[0])
        hit = (row[0], row[0] in team.get("MemberUserIds", []), now + 5)
        self.auth_cache[key] = hit
        return hit

    def maintenance(self):
        return bool(schema.get_config_row(self.conn(), "maintenance", {}).get("IsInMaintenanceMode"))

    def installation_id(self):
        return schema.get_config_row(self.conn(), "upgradeavailability", {}).get("InstallationId")


# ------------------------------------------------------------------ request handling

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Octopus-Simulator"
    app = None  # set on the subclass

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.handle_any("GET")

    def do_HEAD(self):
        self.handle_any("HEAD")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    # -------------------------------------------------------------- responses
    def send(self, status, body=b"", ctype="application/json; charset=utf-8", headers=None):
        head = ["HTTP/1.1 %d %s" % (status, STATUS_TEXT.get(status, "Status")),
                "Server: Octopus-Simulator", "Content-Type: " + ctype, "Content-Length: %d" % len(body)]
        for k, v in (headers or {}).items():
            head.append("%s: %s" % (k, v))
        if self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode()
        self.wfile.write(data if self.command == "HEAD" else data + body)

    def send_json(self, status, obj, headers=None):
        self.send(status, json.dumps(obj).encode(), headers=headers)

    def drop(self):
        self.close_connection = True
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_any(self, method):
        app = self.app
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = urllib.parse.parse_qs(url.query)
        if app.downloads and (path.startswith("/download/") or path.startswith("/octopus/")):
            return serve_download(self, app, app.downloads, path)
        if not (path == "/api" or path.startswith("/api/")):
            return self.send_json(404, {"ErrorMessage": "Not found: %s" % path, "Errors": []})
        if not self.headers.get("X-Octosim-Internal"):
            f = app.get_faults()
            if f and self.apply_faults(f):
                return
        self.raw_body = raw
        ctype = self.headers.get("Content-Type") or ""
        try:
            body = json.loads(raw) if raw and not ctype.startswith("multipart/") else None
        except ValueError:
            return self.send_json(400, {"ErrorMessage": "The request body is not valid JSON", "Errors": []})
        try:
            status, obj = route(app, self, method, path, query, body)
            if isinstance(obj, (bytes, bytearray)):
                self.send(status, bytes(obj), ctype="application/octet-stream")
            elif isinstance(obj, str):
                self.send(status, obj.encode(), ctype="text/plain; charset=utf-8")
            else:
                self.send_json(status, obj)
        except HttpError as e:
            self.send_json(e.status, {"ErrorMessage": str(e), "Errors": e.errors or [str(e)]}, e.headers)
        except SimError as e:
            self.send_json(400, {"ErrorMessage": str(e), "Errors": [str(e)]})
        except Exception as e:
            self.send_json(500, {"ErrorMessage": "Internal error: %r" % e, "Errors": [repr(e)],
                                 "FullException": repr(e)})

    def apply_faults(self, f):
        n = self.app.count("requests")
        if f.get("rest_delay_ms"):
            time.sleep(int(f["rest_delay_ms"]) / 1000.0)
        if (f.get("rest_drop_first") and n <= int(f["rest_drop_first"])) or \
                (f.get("rest_drop_rate") and random.random() < float(f["rest_drop_rate"])):
            self.drop()
            return True
        status = int(f.get("rest_error_status") or 503)
        if (f.get("rest_error_first") and n <= int(f["rest_error_first"])) or \
                (f.get("rest_error_rate") and random.random() < float(f["rest_error_rate"])):
            h = {}
            if status in (429, 503):
                h["Retry-After"] = str(int(f.get("retry_after", 1)))
            msg = "Too many requests" if status == 429 else "The Octopus Server is temporarily unavailable"
            self.send_json(status, {"ErrorMessage": msg + " (simulated fault)", "Errors": [msg]}, h)
            return True
        return False


# ------------------------------------------------------------------ routing

def route(app, req, method, path, query, body):
    parts = path.split("/")[2:]  # after "/api"
    if not parts:
        if method != "GET":
            raise HttpError(405, "Method not allowed")
        return 200, root_doc(app)
    if parts == ["serverstatus", "health"]:
        if not has_health(app.version):
            raise HttpError(404, "The resource you requested was not found: %s" % path)
        if method != "GET":
            raise HttpError(405, "Method not allowed")
        return 200, health_doc(app)
    user, admin, _ = app.authenticate(req.headers.get("X-Octopus-ApiKey") or (query.get("apikey") or [None])[0])
    space = None
    if app.spaces and re.fullmatch(r"Spaces-\d+", parts[0]):
        space = parts[0]
        if not app.conn().execute("SELECT 1 FROM Space WHERE Id=?", (space,)).fetchone():
            raise HttpError(404, "The space %s was not found" % space)
        parts = parts[1:]
        if not parts:
            return 200, space_doc(app, space)
    if method in ("PUT", "POST", "DELETE") and app.maintenance() and not admin:
        raise HttpError(403, "The Octopus Server is in maintenance mode: only system administrators can "
                             "make changes until it is switched off")
    head = parts[0]
    rest = parts[1:]
    ctx = Ctx(app, req, method, query, body, space, admin)
    if head == "serverstatus":
        return ctx.server_status(rest)
    if head == "maintenanceconfiguration" and not rest:
        return ctx.maintenance_config()
    if head == "spaces" and app.spaces and space is None:
        return ctx.spaces(rest)
    if head == "tasks":
        return ctx.tasks(rest)
    if head == "configuration" and rest == ["server-folders", "values"] and app.spaces:
        return ctx.server_folders()
    if head == "licenses" and rest:
        return ctx.licenses(rest)
    if head == "octopusservernodes":
        return ctx.nodes(rest)
    if head == "projects" and len(rest) == 2 and rest[1] == "triggers":
        return ctx.collection("projecttriggers", [], extra=("ProjectId", rest[0]))
    if head == "projects" and rest[:1] == ["import-export"] and has_export_import(app.version):
        return ctx.import_export(rest[1:])
    if head == "artifacts" and len(rest) == 2 and rest[1] == "content":
        p = app.artifact_path(rest[0])
        if not p or not os.path.exists(p):
            raise HttpError(404, "Artifact %s content was not found" % rest[0])
        with open(p, "rb") as f:
            return 200, f.read()
    if head in RESOURCES:
        minv = RESOURCES[head][4]
        if minv and vcmp(app.version, minv) < 0:
            raise HttpError(404, "The resource '%s' is not available in Octopus Server %s" % (head, app.version))
        return ctx.collection(head, rest)
    if head == "users" and rest == ["me"]:
        row = app.conn().execute("SELECT JSON FROM [User] WHERE Id=?", (user,)).fetchone()
        return 200, json.loads(row[0])
    raise HttpError(404, "The resource you requested was not found: %s" % path)


# Link templates of a real 2023.1 server's GET /api (FIDELITY.md, root-2023); SPACE is replaced by the
# default space from 2019.1 and dropped before.
ROOT_LINKS = {
    "Self": "/api",
    "Artifacts": "/api/SPACE/artifacts{/id}{?skip,take,regarding,ids,partialName,order}",
    "CurrentLicense": "/api/licenses/licenses-current",
    "CurrentLicenseStatus": "/api/licenses/licenses-current-status",
    "CurrentUser": "/api/users/me",
    "Environments": "/api/SPACE/environments{/id}{?name,skip,ids,take,partialName}",
    "Events": "/api/events{/id}{?skip,regarding,regardingAny,user,users,projects,projectGroups,environments,"
              "eventGroups,eventCategories,eventAgents,tags,tenants,from,to,internal,fromAutoId,toAutoId,"
              "documentTypes,asCsv,take,ids,spaces,includeSystem,excludeDifference}",
    "ExportProjects": "/api/SPACE/projects/import-export/export",
    "ImportProjects": "/api/SPACE/projects/import-export/import",
    "ProjectImportFiles": "/api/SPACE/projects/import-export/import-files",
    "Machines": "/api/SPACE/machines{/id}{?skip,take,name,ids,partialName,roles,isDisabled,healthStatuses,"
                "commStyles,tenantIds,tenantTags,environmentIds,thumbprint,deploymentId,shellNames,"
                "deploymentTargetTypes}",
    "MaintenanceConfiguration": "/api/maintenanceconfiguration",
    "OctopusServerClusterSummary": "/api/octopusservernodes/summary",
    "OctopusServerNodes": "/api/octopusservernodes{/id}{?skip,take,ids,partialName}",
    "Projects": "/api/SPACE/projects{/id}{?name,skip,ids,clone,take,partialName,clonedFromProjectId}",
    "ProjectTriggers": "/api/SPACE/projecttriggers{/id}{?skip,take,ids,runbooks}",
    "ServerHealthStatus": "/api/serverstatus/health",
    "ServerStatus": "/api/serverstatus",
    "SpaceHome": "/api/{spaceId}",
    "Spaces": "/api/spaces{/id}{?skip,ids,take,partialName}",
    "Subscriptions": "/api/SPACE/subscriptions{/id}{?skip,take,ids,partialName,spaces}",
    "Tasks": "/api/tasks{/id}{?skip,active,environment,tenant,runbook,project,name,node,running,states,"
             "hasPendingInterruptions,hasWarningsOrErrors,take,ids,partialName,spaces,includeSystem,description,"
             "fromCompletedDate,toCompletedDate,fromQueueDate,toQueueDate,fromStartDate,toStartDate}",
    "WorkerPools": "/api/SPACE/workerpools{/id}{?skip,ids,take,partialName}",
    "Workers": "/api/SPACE/workers{/id}{?skip,take,name,ids,partialName,isDisabled,healthStatuses,commStyles,"
               "workerPoolIds,thumbprint,shellNames}",
}


def root_links(app):
    v = app.version
    drop = set()
    if not app.spaces:
        drop |= {"SpaceHome", "Spaces"}
    if not has_workers(v):
        drop |= {"Workers", "WorkerPools"}
    if not has_health(v):
        drop.add("ServerHealthStatus")
    if not has_export_import(v):
        drop |= {"ExportProjects", "ImportProjects", "ProjectImportFiles"}
    sp = "Spaces-1/" if app.spaces else ""
    links = {k: t.replace("SPACE/", sp) for k, t in ROOT_LINKS.items() if k not in drop}
    if not app.spaces:
        for k in ("Tasks", "Events", "Subscriptions"):
            links[k] = links[k].replace(",spaces,includeSystem", "").replace(",spaces}", "}")
    return links


def root_doc(app):
    return {"Application": "Octopus Deploy", "Version": app.version, "ApiVersion": "3.0.0",
            "InstallationId": app.installation_id(), "HasLongTermSupport": False, "Links": root_links(app)}


def health_doc(app):
    ok, msgs = schema.license_compliance(app.conn(), app.version)
    return {"IsOperatingNormally": ok, "IsEntireClusterReadOnly": False, "IsEntireClusterDrainingTasks": False,
            "IsCompliantWithLicense": ok,
            "Description": "Octopus Server is %s" % (
                "operating normally" if ok else "not compliant with its licence: " + " ".join(msgs)),
            "Links": {"Self": "/api/serverstatus/health", "Index": "/api"}}


def space_doc(app, space):
    row = app.conn().execute("SELECT JSON FROM Space WHERE Id=?", (space,)).fetchone()
    d = json.loads(row[0])
    d["Links"] = {"Self": "/api/spaces/" + space, "SpaceHome": "/api/" + space,
                  "Web": "/app#/" + space, "Logo": "/api/spaces/%s/logo" % space,
                  "Search": "/api/spaces/%s/search{?keyword}" % space}
    return d


def to_bool_row(cols, row):
    out = {}
    for k, v in zip(cols, row):
        out[k] = bool(v) if k in BOOL_COLS else v
    return out


def page(items_total, skip, take, base, query, item_type, items):
    pages = int(math.ceil(items_total / float(take))) if take > 0 else 0
    q = {k: v[-1] for k, v in query.items() if k not in ("skip", "take", "apikey")}

    def link(s):
        return base + "?" + urllib.parse.urlencode(dict(q, skip=s, take=take), safe=",")
    links = {"Self": link(skip), "Template": base + "{?skip,take,ids,partialName}",
             "Page.All": base + "/all", "Page.Current": link(skip)}
    if skip + take < items_total:
        links["Page.Next"] = link(skip + take)
    if skip > 0:
        links["Page.Previous"] = link(max(0, skip - take))
    if pages > 0:
        links["Page.Last"] = link((pages - 1) * take)
    return {"ItemType": item_type, "TotalResults": items_total, "ItemsPerPage": take,
            "NumberOfPages": pages, "LastPageNumber": pages - 1, "Items": items, "Links": links}


def qint(query, name, default):
    try:
        return max(0, int(query.get(name, [default])[-1]))
    except ValueError:
        raise HttpError(400, "Query parameter %s must be an integer" % name)


class Ctx:
    def __init__(self, app, req, method, query, body, space, admin):
        self.app, self.req, self.method, self.query, self.body = app, req, method, query, body
        self.space = space or ("Spaces-1" if app.spaces else None)
        self.admin = admin
        self.c = app.conn()

    def prefix(self):
        return "/api/" + self.space if self.space else "/api"

    def need(self, *methods):
        if self.method not in methods:
            raise HttpError(405, "Method %s is not allowed here" % self.method)

    def need_admin(self, what):
        if not self.admin:
            raise HttpError(403, "You do not have permission to perform this action. Please contact your "
                                 "Octopus administrator. Missing permission: AdministerSystem (%s)" % what)

    def need_body(self):
        if not isinstance(self.body, dict):
            raise HttpError(400, "A JSON object is required in the request body")
        return self.body

    # -------------------------------------------------------------- generic resources
    def doc(self, name, cols, row):
        d = json.loads(row[-1])
        d.update(to_bool_row(cols, row[:-1]))
        if self.space:
            d["SpaceId"] = d.get("SpaceId") or self.space
        d["Links"] = {"Self": "%s/%s/%s" % (self.prefix(), name, d["Id"])}
        if name == "artifacts":
            d.pop("RelativePath", None)  # where the simulator keeps the file; not a resource field
            d["Links"]["Content"] = "%s/artifacts/%s/content" % (self.prefix(), d["Id"])
        if name == "projects":
            d["Links"]["Triggers"] = ("%s/projects/%s/triggers{?skip,take,partialName,triggerActionType,"
                                      "triggerActionCategory,runbooks}" % (self.prefix(), d["Id"]))
        return d

    def collection(self, name, rest, extra=None):
        table, item_type, cols, _, _ = RESOURCES[name]
        cols = ["Id"] + cols
        sel = "SELECT %s, JSON FROM [%s]" % (", ".join("[%s]" % c for c in cols), table)
        where, args = [], []
        if self.space:
            where.append("SpaceId=?")
            args.append(self.space)
        if extra:
            where.append("%s=?" % extra[0])
            args.append(extra[1])
        if rest and rest[0] != "all":
            if len(rest) != 1:
                raise HttpError(404, "Not found")
            row = self.c.execute(sel + " WHERE " + " AND ".join(where + ["Id=?"]), args + [rest[0]]).fetchone()
            if not row:
                raise HttpError(404, "The %s with id %s was not found" % (item_type, rest[0]))
            if self.method == "GET":
                return 200, self.doc(name, cols, row)
            self.need("PUT", "DELETE")
            if self.method == "DELETE":
                self.c.execute("DELETE FROM [%s] WHERE Id=?" % table, (rest[0],))
                return 200, {}
            return 200, self.put(name, table, cols, rest[0], row)
        self.need("GET")
        q = self.query
        if q.get("ids"):
            ids = [i for v in q["ids"] for i in v.split(",") if i]
            where.append("Id IN (%s)" % ",".join("?" * len(ids)))
            args += ids
        if q.get("partialName"):
            where.append("Name LIKE ?")
            args.append("%" + q["partialName"][-1] + "%")
        if name == "artifacts" and q.get("regarding"):
            where.append("ServerTaskId=?")
            args.append(q["regarding"][-1])
        w = (" WHERE " + " AND ".join(where)) if where else ""
        if rest == ["all"]:
            return 200, [self.doc(name, cols, r) for r in self.c.execute(sel + w + " ORDER BY rowid", args)]
        skip, take = qint(q, "skip", 0), qint(q, "take", 30)
        total = self.c.execute("SELECT COUNT(*) FROM [%s]%s" % (table, w), args).fetchone()[0]
        rows = self.c.execute(sel + w + " ORDER BY rowid LIMIT ? OFFSET ?", args + [take, skip]).fetchall()
        base = self.req.path.split("?")[0].rstrip("/")
        if self.app.spaces and not base.startswith("/api/Spaces-"):
            base = self.prefix() + base[len("/api"):]
        return 200, page(total, skip, take, base, q, item_type, [self.doc(name, cols, r) for r in rows])

    def put(self, name, table, cols, id_, row):
        b = self.need_body()
        if b.get("Id") not in (None, id_):
            raise HttpError(400, "The Id in the body (%s) does not match the URL (%s)" % (b.get("Id"), id_))
        current = self.doc(name, cols, row)
        current.update(b)
        current["Id"] = id_
        current.pop("Links", None)
        sets = [c for c in cols[1:] if c in b]
        vals = [(1 if b[c] else 0) if c in BOOL_COLS else b[c] for c in sets]
        self.c.execute("UPDATE [%s] SET %s JSON=? WHERE Id=?" % (table, "".join("[%s]=?, " % c for c in sets)),
                       vals + [json.dumps(current), id_])
        row = self.c.execute("SELECT %s, JSON FROM [%s] WHERE Id=?" % (", ".join("[%s]" % c for c in cols), table),
                             (id_,)).fetchone()
        return self.doc(name, cols, row)

    # -------------------------------------------------------------- server status and config
    def server_status(self, rest):
        self.need("GET")
        app = self.app
        if rest:
            raise HttpError(404, "Not found")
        links = {"Self": "/api/serverstatus"}
        if has_health(app.version):
            links["Health"] = "/api/serverstatus/health"
        return 200, {"IsDatabaseEncrypted": True, "IsMajorMinorUpgrade": False,
                     "IsInMaintenanceMode": app.maintenance(), "IsUpgradeAvailable": False,
                     "MaximumAvailableVersion": app.version, "MaximumAvailableVersionCoveredByLicense": app.version,
                     "MaintenanceExpires": schema.license_field(
                         schema.get_config_row(self.c, "license", {}).get("LicenseText"), "MaintenanceExpires"),
                     "Links": links}

    def maintenance_config(self):
        self.need("GET", "PUT")
        if self.method == "PUT":
            self.need_admin("maintenance mode")
            b = self.need_body()
            if "IsInMaintenanceMode" not in b:
                raise HttpError(400, "IsInMaintenanceMode is required")
            schema.put_config_row(self.c, "maintenance", {"Id": "maintenance",
                                                          "IsInMaintenanceMode": bool(b["IsInMaintenanceMode"])})
        return 200, {"Id": "maintenance", "IsInMaintenanceMode": self.app.maintenance(),
                     "Links": {"Self": "/api/maintenanceconfiguration"}}

    def server_folders(self):
        self.need("GET")
        f = self.app.folders
        return 200, {"ArtifactsDirectory": f["Artifacts"], "PackagesDirectory": f["Packages"],
                     "LogsDirectory": f["TaskLogs"], "Links": {"Self": "/api/configuration/server-folders/values"}}

    def licenses(self, rest):
        lic = schema.get_config_row(self.c, "license", {})
        if rest == ["licenses-current"]:
            self.need("GET", "PUT")
            if self.method == "PUT":
                self.need_admin("licence")
                text = self.need_body().get("LicenseText") or ""
                if "<License" not in text:
                    raise HttpError(400, "The licence text is not valid")
                lic = {"Id": "license", "LicenseText": text}
                schema.put_config_row(self.c, "license", lic)
            return 200, {"Id": "licenses-current", "LicenseText": lic.get("LicenseText", ""),
                         "SerialNumber": schema.license_field(lic.get("LicenseText"), "LicenseKey") or "",
                         "Links": {"Self": "/api/licenses/licenses-current"}}
        if rest == ["licenses-current-status"]:
            self.need("GET")
            ok, msgs = schema.license_compliance(self.c, self.app.version)
            n = self.c.execute("SELECT COUNT(*) FROM Machine").fetchone()[0]
            limit = schema.license_field(lic.get("LicenseText"), "MachineLimit") or "Unlimited"
            expiry = schema.license_field(lic.get("LicenseText"), "MaintenanceExpires") or ""
            try:
                days = int((parse_iso(expiry + "T00:00:00") - time.time()) // 86400)
            except ValueError:
                days = 0
            return 200, {"Id": "licenses-current-status", "IsCompliant": ok, "HostingEnvironment": "SelfHosted",
                         "ComplianceSummary": "Your license is compliant" if ok else "Your license is not compliant",
                         "EffectiveExpiryDate": expiry, "DaysToEffectiveExpiryDate": days,
                         "Messages": [{"Disposition": "Error", "Message": m} for m in msgs],
                         "Limits": [{"Name": "Targets", "CurrentUsage": n,
                                     "EffectiveLimit": -1 if limit == "Unlimited" else int(limit),
                                     "EffectiveLimitDescription": limit, "IsUnlimited": limit == "Unlimited",
                                     "Message": "", "Disposition": "Information"}],
                         "EffectiveNodeTaskLimit": -1, "EffectiveClusterTaskLimit": -1,
                         "IsNodeTaskLimitControlledByLicense": False, "IsClusterTaskLimitControlledByLicense": False,
                         "PermissionsMode": "Full", "DoesExpiryBlockKeyActivities": False,
                         "Links": {"Self": "/api/licenses/licenses-current-status"}}
        raise HttpError(404, "Not found")

    # -------------------------------------------------------------- nodes
    NODE_SEL = "SELECT Id, Name, LastSeen, IsOffline, MaxConcurrentTasks, IsInMaintenanceMode FROM OctopusServerNode"

    def node_doc(self, row, summary):
        id_, name, seen, off, cap, mm = row
        d = {"Id": id_, "Name": name, "MaxConcurrentTasks": cap, "IsInMaintenanceMode": bool(mm),
             "Links": {"Self": "/api/octopusservernodes/" + id_}}
        if not summary:
            return d
        if self.app.node_status:
            st = self.c.execute("SELECT LastSeen, IsOffline FROM OctopusServerNodeStatus WHERE Id=?", (id_,)).fetchone()
            seen, off = st if st else (seen, 1)
        stale = int(self.app.get_faults().get("node_stale_seconds") or 300)
        d["LastSeen"] = seen
        d["IsOffline"] = bool(off) or (time.time() - parse_iso(seen) > stale)
        d["RunningTaskCount"] = self.c.execute("SELECT COUNT(*) FROM ServerTask WHERE ServerNodeId=? AND "
                                               "State IN ('Executing','Cancelling')", (id_,)).fetchone()[0]
        return d

    def nodes(self, rest):
        sel = self.NODE_SEL
        if rest == ["summary"]:
            self.need("GET")
            nodes = [self.node_doc(r, True) for r in self.c.execute(sel + " ORDER BY Name")]
            return 200, {"Nodes": nodes, "Links": {"Self": "/api/octopusservernodes/summary"}}
        if not rest or rest == ["all"]:
            self.need("GET")
            nodes = [self.node_doc(r, False) for r in self.c.execute(sel + " ORDER BY Name")]
            if rest:
                return 200, nodes
            return 200, page(len(nodes), 0, max(30, len(nodes)), "/api/octopusservernodes", {},
                             "OctopusServerNode", nodes)
        row = self.c.execute(sel + " WHERE Id=?", (rest[0],)).fetchone()
        if not row:
            raise HttpError(404, "The OctopusServerNode with id %s was not found" % rest[0])
        if self.method == "PUT":
            self.need_admin("node")
            b = self.need_body()
            if "IsInMaintenanceMode" in b:
                self.c.execute("UPDATE OctopusServerNode SET IsInMaintenanceMode=? WHERE Id=?",
                               (1 if b["IsInMaintenanceMode"] else 0, rest[0]))
            if "MaxConcurrentTasks" in b:
                self.c.execute("UPDATE OctopusServerNode SET MaxConcurrentTasks=? WHERE Id=?",
                               (int(b["MaxConcurrentTasks"]), rest[0]))
            row = self.c.execute(sel + " WHERE Id=?", (rest[0],)).fetchone()
        else:
            self.need("GET")
        return 200, self.node_doc(row, False)

    # -------------------------------------------------------------- spaces
    def spaces(self, rest):
        if not rest and self.method == "POST":
            self.need_admin("spaces")
            b = self.need_body()
            if not b.get("Name"):
                raise HttpError(400, "The space Name is required", ["Name is required"])
            n = self.c.execute("SELECT MAX(CAST(SUBSTR(Id, 8) AS INTEGER)) FROM Space").fetchone()[0] or 0
            sid = "Spaces-%d" % (n + 1)
            doc = {"Id": sid, "Name": b["Name"], "Slug": b["Name"].lower().replace(" ", "-"),
                   "Description": b.get("Description") or "", "IsDefault": False,
                   "SpaceManagersTeams": b.get("SpaceManagersTeams") or ["teams-administrators"],
                   "SpaceManagersTeamMembers": b.get("SpaceManagersTeamMembers") or [], "TaskQueueStopped": False}
            self.c.execute("INSERT INTO Space VALUES (?,?,?,0,0,?)", (sid, doc["Name"], doc["Slug"], json.dumps(doc)))
            return 201, space_doc(self.app, sid)
        self.need("GET")
        rows = self.c.execute("SELECT Id FROM Space ORDER BY rowid").fetchall()
        docs = [space_doc(self.app, r[0]) for r in rows]
        if rest == ["all"]:
            return 200, docs
        if rest:
            for d in docs:
                if d["Id"] == rest[0]:
                    return 200, d
            raise HttpError(404, "The space %s was not found" % rest[0])
        skip, take = qint(self.query, "skip", 0), qint(self.query, "take", 30)
        return 200, page(len(docs), skip, take, "/api/spaces", self.query, "Space", docs[skip:skip + take])

    # -------------------------------------------------------------- tasks
    def task_doc(self, row):
        r = dict(zip(TASK_COLS + (["SpaceId"] if self.app.spaces else []), row))
        d = json.loads(r.pop("JSON"))
        state = r["State"]
        d.update({"Id": r["Id"], "Name": r["Name"], "Description": r["Description"], "State": state,
                  "QueueTime": r["QueueTime"], "StartTime": r["StartTime"], "CompletedTime": r["CompletedTime"],
                  "ServerNode": r["ServerNodeId"], "IsCompleted": state in DONE_STATES,
                  "FinishedSuccessfully": state == "Success", "HasBeenPickedUpByProcessor": r["StartTime"] is not None,
                  "HasPendingInterruptions": False, "HasWarningsOrErrors": bool(r["HasWarningsOrErrors"]),
                  "Duration": "%d seconds" % (r["DurationSeconds"] or 0), "CanRerun": state in DONE_STATES})
        d.pop("SimDurationSeconds", None)
        if self.app.spaces:
            d["SpaceId"] = r.get("SpaceId")
        d["Links"] = {"Self": "/api/tasks/" + r["Id"], "Raw": "/api/tasks/%s/raw" % r["Id"],
                      "Cancel": "/api/tasks/%s/cancel" % r["Id"]}
        return d

    def tasks(self, rest):
        cols = TASK_COLS + (["SpaceId"] if self.app.spaces else [])
        sel = "SELECT %s FROM ServerTask" % ", ".join(cols)
        if not rest:
            if self.method == "POST":
                return self.create_task(self.need_body())
            self.need("GET")
            where, args = [], []
            if self.query.get("states"):
                states = [s for v in self.query["states"] for s in v.split(",") if s]
                where.append("State IN (%s)" % ",".join("?" * len(states)))
                args += states
            if self.query.get("ids"):
                ids = [s for v in self.query["ids"] for s in v.split(",") if s]
                where.append("Id IN (%s)" % ",".join("?" * len(ids)))
                args += ids
            if self.query.get("name"):
                where.append("Name=?")
                args.append(self.query["name"][-1])
            if self.req.path.startswith("/api/Spaces-"):
                where.append("SpaceId=?")
                args.append(self.space)
            elif self.app.spaces:
                # Mixed-scope: without `spaces`, the default space only; `spaces=all` every space;
                # system tasks (no space) only with includeSystem=true (OctopusClients MixedScopeBaseRepository).
                sp = [x for v in self.query.get("spaces", []) for x in v.split(",") if x]
                system = (self.query.get("includeSystem") or ["false"])[-1].lower() == "true"
                cond = []
                if "all" in [x.lower() for x in sp]:
                    cond.append("SpaceId IS NOT NULL")
                else:
                    sp = sp or ([] if system and self.query.get("spaces") else ["Spaces-1"])
                    if sp:
                        cond.append("SpaceId IN (%s)" % ",".join("?" * len(sp)))
                        args += sp
                if system:
                    cond.append("SpaceId IS NULL")
                where.append("(" + (" OR ".join(cond) or "0") + ")")
            w = (" WHERE " + " AND ".join(where)) if where else ""
            skip, take = qint(self.query, "skip", 0), qint(self.query, "take", 30)
            total = self.c.execute("SELECT COUNT(*) FROM ServerTask" + w, args).fetchone()[0]
            rows = self.c.execute(sel + w + " ORDER BY QueueTime DESC, rowid DESC LIMIT ? OFFSET ?",
                                  args + [take, skip]).fetchall()
            base = self.req.path.split("?")[0].rstrip("/")
            return 200, page(total, skip, take, base, self.query, "Task", [self.task_doc(r) for r in rows])
        row = self.c.execute(sel + " WHERE Id=?", (rest[0],)).fetchone()
        if not row:
            raise HttpError(404, "The task %s was not found" % rest[0])
        if rest[1:] == ["raw"]:
            p = os.path.join(self.app.folders["TaskLogs"], rest[0].lower() + ".log.txt")
            return 200, open(p).read() if os.path.exists(p) else ""
        if rest[1:] == ["cancel"]:
            self.need("POST")
            self.c.execute("UPDATE ServerTask SET State=CASE State WHEN 'Queued' THEN 'Canceled' "
                           "ELSE 'Cancelling' END WHERE Id=? AND State IN ('Queued','Executing')", (rest[0],))
            row = self.c.execute(sel + " WHERE Id=?", (rest[0],)).fetchone()
        elif rest[1:]:
            raise HttpError(404, "Not found")
        else:
            self.need("GET")
        return 200, self.task_doc(row)

    def refuse_in_maintenance(self):
        if self.app.maintenance():
            raise HttpError(409, "The Octopus Server is in maintenance mode: new tasks cannot be queued "
                                 "until maintenance mode is switched off (queued and running tasks still finish)")

    def create_task(self, b):
        self.refuse_in_maintenance()
        name = b.get("Name")
        if not name:
            raise HttpError(400, "The task Name is required", ["Name is required"])
        space = self.space
        if self.app.spaces and "SpaceId" in b and not self.req.path.startswith("/api/Spaces-"):
            space = b["SpaceId"]  # None: a system task
            if space and not self.c.execute("SELECT 1 FROM Space WHERE Id=?", (space,)).fetchone():
                raise HttpError(400, "The space %s was not found" % space)
        tid = self.app.queue_task(name, b.get("Description") or name, space,
                                  b.get("Arguments"), b.get("SimDurationSeconds"), system=space is None)
        return 201, self.task_doc(self.c.execute("SELECT %s FROM ServerTask WHERE Id=?" % ", ".join(
            TASK_COLS + (["SpaceId"] if self.app.spaces else [])), (tid,)).fetchone())

    # -------------------------------------------------------------- project export / import
    def import_export(self, rest):
        self.need("POST")
        self.refuse_in_maintenance()
        if rest == ["import-files"]:
            return self.upload_import_file()
        b = self.need_body()
        pw = b.get("Password") or {}
        password = pw.get("NewValue") if pw.get("HasValue") else None
        if not password:
            raise HttpError(400, "A password is required", ["Password is required"])
        if rest == ["export"]:
            ids = b.get("IncludedProjectIds") or []
            if not ids:
                raise HttpError(400, "At least one project must be included", ["IncludedProjectIds is empty"])
            for pid in ids:
                if not self.c.execute("SELECT 1 FROM Project WHERE Id=? AND SpaceId=?", (pid, self.space)).fetchone():
                    raise HttpError(400, "Project %s was not found in space %s" % (pid, self.space))
            tid = self.app.queue_task("ExportProjects", "Export projects", self.space,
                                      {"SpaceId": self.space, "ProjectIds": ids, "Password": password},
                                      b.get("SimDurationSeconds", 0.2))
            return 200, {"TaskId": tid}
        if rest == ["import"]:
            src = b.get("ImportSource") or {}
            typ = src.get("Type") or ""
            if typ.lower() not in ("space", "upload"):
                raise HttpError(400, "ImportSource.Type must be 'space' or 'upload'", ["Unknown import source type"])
            if typ.lower() == "upload" and not src.get("UploadedFileId"):
                raise HttpError(400, "ImportSource.UploadedFileId is required", ["UploadedFileId is required"])
            tid = self.app.queue_task("ImportProjects", "Import projects", self.space,
                                      {"SpaceId": self.space, "ImportSource": src, "Password": password},
                                      b.get("SimDurationSeconds", 0.2))
            return 200, {"TaskId": tid}
        raise HttpError(404, "Not found")

    def upload_import_file(self):
        """Multipart upload of an export zip (OctopusDeploy-Api ExportImportProjects.ps1: form field
        `fileData`; the file's name is its UploadedFileId)."""
        import email.parser
        import email.policy
        ctype = self.req.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            raise HttpError(400, "A multipart/form-data upload is required")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + self.req.raw_body)
        for part in msg.iter_parts():
            name = os.path.basename(part.get_filename() or "")
            if part.get_param("name", header="content-disposition") == "fileData" and name:
                d = self.app.imports_dir()
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, name), "wb") as f:
                    f.write(part.get_payload(decode=True) or b"")
                return 200, {}
        raise HttpError(400, "The upload has no file in the form field 'fileData'")


# ------------------------------------------------------------------ download site

def serve_download(req, app, root, path):
    """The versions feed (/download/upgrade/v3) and installers (/octopus/Octopus.<version>-x64.msi)."""
    if req.command not in ("GET", "HEAD"):
        return req.send_json(405, {"ErrorMessage": "Method not allowed", "Errors": []})
    if path == "/download/upgrade/v3":
        # Octopus documents "every version ... and its corresponding release date", oldest first
        # (its script takes $versions[-1]); the other fields of versions.json are the tests' own.
        with open(os.path.join(root, "versions.json")) as f:
            feed = [{"Version": e["Version"], "Released": e["Released"]} for e in json.load(f)]
        return req.send(200, json.dumps(feed).encode())
    name = path[len("/octopus/"):] if path.startswith("/octopus/") else ""
    full = os.path.join(root, name)
    # only installers are downloadable: no digest file is published next to them
    if not name.endswith(".msi") or "/" in name or name.startswith(".") or not os.path.isfile(full):
        return req.send(404, b"Not Found\n", ctype="text/plain")
    size = os.path.getsize(full)
    start, end, status = 0, size - 1, 200
    rng = req.headers.get("Range")
    headers = {"Accept-Ranges": "bytes", "Last-Modified": time.strftime(
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(os.path.getmtime(full)))}
    if rng:
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        if not m or (m.group(1) == "" and m.group(2) == ""):
            return req.send(416, b"", headers={"Content-Range": "bytes */%d" % size})
        if m.group(1) == "":
            start = max(0, size - int(m.group(2)))
        else:
            start = int(m.group(1))
            if m.group(2):
                end = min(end, int(m.group(2)))
        if start >= size or start > end:
            return req.send(416, b"", ctype="text/plain", headers={"Content-Range": "bytes */%d" % size})
        status = 206
        headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
    length = end - start + 1
    ctype = "application/octet-stream" if name.endswith(".msi") else "text/plain; charset=utf-8"
    f = app.get_faults() if app else {}
    brk = f.get("download_break_after")
    if brk is not None and name.endswith(".msi") and req.command == "GET":
        n = app.count("downloads")
        if f.get("download_break_count") and n > int(f["download_break_count"]):
            brk = None
    head = ["HTTP/1.1 %d %s" % (status, STATUS_TEXT[status]), "Server: Octopus-Simulator",
            "Content-Type: " + ctype, "Content-Length: %d" % length]
    head += ["%s: %s" % kv for kv in headers.items()]
    req.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode())
    if req.command == "HEAD":
        return
    limit = length if brk is None else min(length, int(brk))
    with open(full, "rb") as fh:
        fh.seek(start)
        left = limit
        while left > 0:
            chunk = fh.read(min(65536, left))
            if not chunk:
                break
            req.wfile.write(chunk)
            left -= len(chunk)
    if brk is not None and limit < length:
        req.drop()


class DownloadOnly:
    """Stand-in for App when the download site runs alone."""

    def __init__(self, root, machine=None):
        self.faults = FaultCache(machine)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "downloads": 0}
        self.downloads = root

    get_faults = App.get_faults
    count = App.count


class DownloadHandler(Handler):
    def handle_any(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        path = urllib.parse.urlsplit(self.path).path
        serve_download(self, self.app, self.app.downloads, path)


def make_server(port, handler_cls, app):
    cls = type("BoundHandler", (handler_cls,), {"app": app})
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    return ThreadingHTTPServer(("127.0.0.1", port), cls)
