"""Shared pieces of the Octopus Deploy simulator: versions, config files, faults, sealing."""

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import sqlite3
import time
import xml.etree.ElementTree as ET

SIM_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Installable versions (the download site offers exactly these) and their release dates.
VERSIONS = [
    ("3.17.14", "2017-11-12"),
    ("2019.1.5", "2019-03-20"),
    ("2021.1.7687", "2021-03-31"),
    ("2021.3.12912", "2021-11-30"),
    ("2022.1.2735", "2022-03-21"),
    ("2023.4.8166", "2023-11-20"),
    ("2024.4.7000", "2024-12-10"),
    ("2025.4.10700", "2025-11-05"),
]
RELEASED = dict(VERSIONS)

DEFAULT_INSTANCE = "OctopusServer"
PROGRAM_REL = os.path.join("ProgramFiles", "OctopusDeploy", "Octopus")
SERVER_EXE = "Octopus.Server"
PID_FILE = "octosim-service.pid"

# The stand-ins of Windows programs (msiexec, sc) end with a Windows exit code, of which a POSIX exit
# status keeps only the low 8 bits. tests/sim/winforward.py sets FULL_EXIT_CODES in the process that
# calls a stand-in, so the full code (3010, 1603, 1060...) can be carried across Wine to upkit.exe.
FULL_EXIT_CODES = False


def exit_status(code):
    """What a POSIX parent sees when a Windows program exits with `code`: the low 8 bits (0 -> 0,
    3010 -> 194, 1603 -> 67, 1605 -> 69, 1619 -> 83, 1620 -> 84, 1639 -> 103, 1060 -> 36); the
    full code when FULL_EXIT_CODES is set."""
    return code if FULL_EXIT_CODES else code & 0xFF


def vkey(v):
    """Sort key of a dotted version string ("2024.4.7000" -> (2024, 4, 7000))."""
    parts = [int(p) for p in re.findall(r"\d+", str(v))[:4]]
    return tuple(parts + [0] * (4 - len(parts)))


def vcmp(a, b):
    ka, kb = vkey(a), vkey(b)
    return (ka > kb) - (ka < kb)


def has_spaces(v):
    return vcmp(v, "2019.1.0") >= 0


def has_workers(v):
    return vcmp(v, "2018.7.0") >= 0


def has_event_exports(v):
    return vcmp(v, "2023.3.0") >= 0


def has_export_import(v):
    return vcmp(v, "2021.1.0") >= 0


def has_cluster_shared(v):
    return vcmp(v, "2020.2.15") >= 0


def checks_running_nodes(v):
    return vcmp(v, "2023.2.9755") >= 0


def needs_sql2016(v):
    return vcmp(v, "2020.2.0") >= 0


def has_node_status(v):
    return vcmp(v, "2019.1.0") >= 0


def has_health(v):
    return vcmp(v, "2019.4.0") >= 0


def since(v, first):
    """Does version `v` have something that first appeared in `first` (None = always)?"""
    return first is None or vcmp(v, first) >= 0


def issue_7790(frm_has_0321, to):
    """OctopusDeploy/Issues #7790: a database that ran Script0321DeleteQueuedCleanupTasks (2021.3.12912+)
    cannot be opened by 2022.1.2735 up to the last 2022.3 release."""
    return frm_has_0321 and vcmp(to, "2022.1.2735") >= 0 and vcmp(to, "2022.4.0") < 0


def api_version(v):
    return "3.0.0"


def required_stop(frm, to):
    """The intermediate version an upgrade from `frm` to `to` must stop at, or None."""
    if vcmp(frm, "2021.1.0") < 0 and vcmp(to, "2023.4.0") >= 0:
        return ("2021.1", "from before 2021.1 to 2023.4 or later, upgrade to 2021.1 first",
                [v for v, _ in VERSIONS if v.startswith("2021.1.")][0])
    if vcmp(frm, "2024.3.600") < 0 and vcmp(to, "2025.4.10666") > 0:
        mids = [v for v, _ in VERSIONS
                if vcmp(v, "2024.3.600") >= 0 and vcmp(v, "2025.4.10666") <= 0]
        return ("2024.3.600-2025.4.10666",
                "from 2024.3 or earlier to 2025.4 or later, first upgrade to a version "
                "between 2024.3.600 and 2025.4.10666", mids[0])
    return None


def now_iso(t=None):
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03d+00:00" % int((t % 1) * 1000)


def parse_iso(s):
    s = s[:19]
    return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S")) - time.timezone


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


class SimError(Exception):
    """A failure reported to the user: message on stderr, non-zero exit code."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- connection strings

# SqlClient's keywords (SqlConnectionStringBuilder); anything else is "Keyword not supported".
SQLCLIENT_KEYWORDS = {k.lower() for k in (
    "Data Source", "Server", "Address", "Addr", "Network Address", "Initial Catalog", "Database",
    "Integrated Security", "Trusted_Connection", "User ID", "UID", "User", "Password", "PWD",
    "Encrypt", "TrustServerCertificate", "Trust Server Certificate", "Connect Timeout",
    "Connection Timeout", "Timeout", "Application Name", "App", "MultipleActiveResultSets",
    "Multiple Active Result Sets", "Persist Security Info", "PersistSecurityInfo", "Pooling",
    "Max Pool Size", "Min Pool Size", "MultiSubnetFailover", "Multi Subnet Failover",
    "ApplicationIntent", "Application Intent", "Workstation ID", "WSID", "Packet Size",
    "Failover Partner", "Authentication", "Command Timeout", "Column Encryption Setting",
    "Connect Retry Count", "Connect Retry Interval", "Current Language", "Language",
    "Load Balance Timeout", "Connection Lifetime", "Enlist", "Replication", "Transaction Binding",
    "Type System Version", "User Instance", "AttachDbFilename", "Extended Properties",
    "Initial File Name", "Network Library", "Net", "Network", "Context Connection")}


class KeywordNotSupported(Exception):
    pass


def parse_ado(cs):
    """An ADO.NET (SqlClient) connection string as {lower-case keyword: value}; raises
    KeywordNotSupported for a keyword SqlClient does not know (e.g. ODBC's Driver)."""
    out = {}
    for part in (cs or "").split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise KeywordNotSupported("Format of the initialization string does not conform to "
                                      "specification starting at index 0.")
        k, v = part.split("=", 1)
        k = " ".join(k.split()).lower()
        if k not in SQLCLIENT_KEYWORDS:
            raise KeywordNotSupported("Keyword not supported: '%s'." % k)
        out[k] = v.strip()
    return out


def db_path_from_cs(cs):
    """The SQLite file behind an ADO.NET connection string `Data Source=SQLSERVER;Initial Catalog=DB`:
    the simulated SQL Server is a folder and its database DB is the file SQLSERVER/DB.db."""
    try:
        d = parse_ado(cs)
    except KeywordNotSupported as e:
        raise SimError(str(e), 100)
    server = d.get("data source") or d.get("server") or d.get("address") or d.get("addr") \
        or d.get("network address")
    catalog = d.get("initial catalog") or d.get("database")
    if not server:
        raise SimError("A network-related or instance-specific error occurred while establishing a "
                       "connection to SQL Server (no Data Source in the connection string)")
    if not catalog:
        raise SimError("Cannot open database \"master\" for Octopus: give Initial Catalog= in the "
                       "connection string")
    return os.path.join(server, catalog + ".db")


def connection_string(path):
    """The ADO.NET string of the simulated database file `path` (SQLSERVER/DB.db)."""
    path = os.path.abspath(path)
    return "Data Source=%s;Initial Catalog=%s;Integrated Security=True" % (
        os.path.dirname(path), os.path.splitext(os.path.basename(path))[0])


def odbc_connection_string(path):
    """How upkit reaches the same simulated database through ODBC."""
    return "Driver=SQLite3;Database=%s" % os.path.abspath(path)


def connect(path, check=True):
    if check and not os.path.exists(path):
        raise SimError("cannot open database %s: file not found "
                       "(A network-related or instance-specific error occurred while establishing "
                       "a connection to SQL Server)" % path)
    c = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA busy_timeout=30000")
    return c


# ---------------------------------------------------------------- sealing with the master key

SEAL_PREFIX = "sealed:v1:"


def new_master_key():
    return base64.b64encode(os.urandom(16)).decode()


def _key_bytes(master_key):
    return hashlib.sha256(("octosim-master-key:" + master_key).encode()).digest()


def _stream(key, nonce, n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(key + nonce + i.to_bytes(4, "big")).digest()
        i += 1
    return bytes(out[:n])


def seal(master_key, plaintext):
    key = _key_bytes(master_key)
    nonce = os.urandom(16)
    data = plaintext.encode()
    ct = bytes(a ^ b for a, b in zip(data, _stream(key, nonce, len(data))))
    tag = hmac.new(key, nonce + ct, hashlib.sha256).digest()
    return SEAL_PREFIX + base64.b64encode(nonce + ct + tag).decode()


class MasterKeyMismatch(SimError):
    pass


def unseal(master_key, sealed):
    if not sealed.startswith(SEAL_PREFIX):
        raise SimError("not a sealed value")
    raw = base64.b64decode(sealed[len(SEAL_PREFIX):])
    key = _key_bytes(master_key)
    nonce, ct, tag = raw[:16], raw[16:-32], raw[-32:]
    if not hmac.compare_digest(tag, hmac.new(key, nonce + ct, hashlib.sha256).digest()):
        raise MasterKeyMismatch("the master key does not match the database: sealed values "
                                "cannot be decrypted (master key does not match)")
    return bytes(a ^ b for a, b in zip(ct, _stream(key, nonce, len(ct)))).decode()


def verify_master_key(conn, master_key):
    row = conn.execute("SELECT JSON FROM Configuration WHERE Id='smtp'").fetchone()
    if not row:
        raise SimError("database has no sealed 'smtp' configuration to check the master key with")
    unseal(master_key, json.loads(row[0])["Password"])


# ---------------------------------------------------------------- instance configuration file

def read_config(path):
    if not os.path.exists(path):
        raise SimError("configuration file %s does not exist" % path)
    root = ET.parse(path).getroot()
    return {e.get("key"): (e.text or "") for e in root.findall("set")}


def write_config(path, values):
    root = ET.Element("octopus-settings")
    root.set("xmlns:xsd", "http://www.w3.org/2001/XMLSchema")
    for k in sorted(values):
        e = ET.SubElement(root, "set", key=k)
        e.text = str(values[k])
    ET.indent(root)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


FOLDER_KEYS = {"Artifacts": "Octopus.Folders.ArtifactsDirectory", "Packages": "Octopus.Folders.PackagesDirectory",
               "TaskLogs": "Octopus.Folders.LogDirectory"}
EVENT_EXPORTS_KEY = "Octopus.Folders.EventExportsDirectory"  # unverified key: stored, never shown


def folders_of(cfg):
    """The effective folders of an instance (defaults under its home)."""
    home = cfg.get("Octopus.Home", "")
    f = {k: cfg.get(key) or os.path.join(home, k) for k, key in FOLDER_KEYS.items()}
    f["EventExports"] = cfg.get(EVENT_EXPORTS_KEY) or os.path.join(home, "EventExports")
    return f


def find_home_config(home):
    """The configuration file of the instance whose home is `home`."""
    ptr = read_json(os.path.join(home, "octosim-instance.json"))
    if ptr and os.path.exists(ptr.get("config", "")):
        return ptr["config"]
    for name in sorted(os.listdir(home)):
        if name.endswith(".config"):
            return os.path.join(home, name)
    raise SimError("no instance configuration found in home folder %s" % home)


# ---------------------------------------------------------------- faults

FAULT_KEYS = {
    "migration_fail_at": str, "license_noncompliant_after_upgrade": bool,
    "sqlserver_version": str, "nodes_running": int, "msi_exit": int, "msi_local_disk": bool,
    "rest_error_status": int, "rest_error_rate": float, "rest_error_first": int,
    "retry_after": int, "rest_delay_ms": int, "rest_drop_rate": float, "rest_drop_first": int,
    "download_break_after": int, "download_break_count": int, "task_duration": float,
    "node_stale_seconds": int, "node_offline_delay": float, "startup_delay": float,
}


def _coerce(key, value):
    t = FAULT_KEYS.get(key)
    if t is bool and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if t and value is not None and not isinstance(value, t):
        try:
            return t(value)
        except (TypeError, ValueError):
            return value
    return value


def load_faults(machine=None, env=None):
    """Faults from MACHINE/faults.json, then $OCTOSIM_FAULTS (JSON), then $OCTOSIM_FAULT_<KEY>."""
    env = os.environ if env is None else env
    f = {}
    if machine:
        f.update(read_json(os.path.join(machine, "faults.json"), {}) or {})
    if env.get("OCTOSIM_FAULTS"):
        f.update(json.loads(env["OCTOSIM_FAULTS"]))
    for k in FAULT_KEYS:
        ev = env.get("OCTOSIM_FAULT_" + k.upper())
        if ev is not None:
            f[k] = ev
    return {k: _coerce(k, v) for k, v in f.items()}


class FaultCache:
    """Faults re-read at most every 0.5 s (so a running server sees faults.json changes)."""

    def __init__(self, machine):
        self.machine = machine
        self.at = 0
        self.value = {}
        self.sig = None

    def get(self):
        now = time.monotonic()
        if now - self.at > 0.5:
            self.at = now
            v = load_faults(self.machine)
            sig = json.dumps(v, sort_keys=True)
            self.changed = sig != self.sig
            self.sig = sig
            self.value = v
        return self.value
