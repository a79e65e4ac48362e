// Shared pieces of the contract tests: the interfaces of @octopusdeploy/message-contracts read
// from its .d.ts files, and a simulated Octopus Server (tests/sim) to check against them.
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { spawn, execFileSync } = require("node:child_process");

const ROOT = path.resolve(__dirname, "..", "..");
const MC_DIST = path.join(path.dirname(require.resolve("@octopusdeploy/message-contracts/package.json")), "dist");

// ------------------------------------------------------------------ .d.ts interfaces

// Skip a balanced run of `open`..`close` starting at text[i] === open; returns the index after it.
function skipBalanced(text, i, open, close) {
  let depth = 0;
  for (; i < text.length; i++) {
    if (text[i] === open) depth++;
    else if (text[i] === close && --depth === 0) return i + 1;
  }
  throw new Error("unbalanced " + open + close);
}

// Split at top-level separators (outside <>, {}, ()).
function splitTop(s, sep) {
  const out = [];
  let depth = 0, cur = "";
  for (const ch of s) {
    if ("<{(".includes(ch)) depth++;
    if (">})".includes(ch)) depth--;
    if (ch === sep && depth === 0) { out.push(cur); cur = ""; } else cur += ch;
  }
  out.push(cur);
  return out.map((x) => x.trim()).filter(Boolean);
}

// Field names declared directly in a `{ ... }` body (depth 1 only).
function bodyFields(body) {
  const fields = new Set();
  let depth = 0, line = "";
  for (const ch of body.slice(1, -1)) {
    if (ch === "{" || ch === "<" || ch === "(") depth++;
    if (ch === "}" || ch === ">" || ch === ")") depth--;
    if ((ch === ";" || ch === "\n") && depth === 0) {
      const m = /^\s*(?:readonly\s+)?("([^"]+)"|[A-Za-z_$][\w$]*)\??\s*:/.exec(line);
      if (m) fields.add(m[2] || m[1]);
      line = "";
    } else line += ch;
  }
  return fields;
}

// A type expression as {fields, refs}: inline object bodies give fields, names give refs;
// Omit<X, "A" | "B"> and Partial<X> are followed (Omit's keys are dropped).
function typeParts(expr) {
  const fields = new Set(), refs = [], omit = new Set();
  for (const part of splitTop(expr, "&").flatMap((p) => splitTop(p, "|"))) {
    if (part.startsWith("{")) {
      for (const f of bodyFields(part)) fields.add(f);
      continue;
    }
    const m = /^([A-Za-z_$][\w$]*)\s*(<([\s\S]*)>)?$/.exec(part);
    if (!m) continue;
    if ((m[1] === "Omit" || m[1] === "Partial") && m[3]) {
      const args = splitTop(m[3], ",");
      const inner = typeParts(args[0]);
      inner.fields.forEach((f) => fields.add(f));
      refs.push(...inner.refs);
      if (m[1] === "Omit" && args[1]) for (const k of args[1].matchAll(/"([^"]+)"/g)) omit.add(k[1]);
      continue;
    }
    refs.push(m[1]);
    // generic arguments that are inline objects describe links etc. (ResourceWithId<{ Self: string }>)
    if (m[3]) for (const a of splitTop(m[3], ",")) if (a.startsWith("{")) bodyFields(a).forEach((f) => fields.add(f));
  }
  return { fields, refs, omit };
}

function loadContracts(dir = MC_DIST) {
  const decls = new Map();
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith(".d.ts"))) {
    const text = fs.readFileSync(path.join(dir, f), "utf8");
    const re = /(?:export\s+)?(?:declare\s+)?(interface|type)\s+([A-Za-z_$][\w$]*)/g;
    let m;
    while ((m = re.exec(text))) {
      let i = re.lastIndex;
      if (text[i] === "<") i = skipBalanced(text, i, "<", ">");
      if (m[1] === "interface") {
        const brace = text.indexOf("{", i);
        let ext = text.slice(i, brace).trim();
        // an extends clause may hold inline object generics: find the body's brace at depth 0
        let j = i, depth = 0;
        for (; j < text.length; j++) {
          const ch = text[j];
          if (ch === "<") depth++;
          else if (ch === ">") depth--;
          else if (ch === "{" && depth === 0) break;
          else if (ch === "{") j = skipBalanced(text, j, "{", "}") - 1;
        }
        ext = text.slice(i, j).trim().replace(/^extends\s+/, "");
        const end = skipBalanced(text, j, "{", "}");
        const own = bodyFields(text.slice(j, end));
        const parts = ext ? splitTop(ext, ",").map(typeParts) : [];
        const refs = parts.flatMap((p) => p.refs);
        parts.forEach((p) => p.fields.forEach((x) => own.add(x)));
        decls.set(m[2], { fields: own, refs, omit: new Set() });
        re.lastIndex = end;
      } else {
        const eq = text.indexOf("=", i);
        const semi = (() => {
          let d = 0;
          for (let k = eq + 1; k < text.length; k++) {
            if ("<{(".includes(text[k])) d++;
            if (">})".includes(text[k])) d--;
            if (text[k] === ";" && d === 0) return k;
          }
          return text.length;
        })();
        decls.set(m[2], typeParts(text.slice(eq + 1, semi).trim()));
        re.lastIndex = semi;
      }
    }
  }
  return decls;
}

// Every field name of `name`, following extends/intersections.
function fieldsOf(decls, name, seen = new Set()) {
  const d = decls.get(name);
  if (!d) throw new Error("message-contracts has no declaration " + name);
  if (seen.has(name)) return new Set();
  seen.add(name);
  const out = new Set(d.fields);
  for (const r of d.refs) if (decls.has(r)) fieldsOf(decls, r, seen).forEach((f) => out.add(f));
  d.omit.forEach((f) => out.delete(f));
  return out;
}

// ------------------------------------------------------------------ a simulated server

function createServer(version, name) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "upkit-contract-" + (name || "sim") + "-"));
  const out = execFileSync("python3", [path.join(ROOT, "tests", "sim", "octosim.py"), "create", "--home", home,
                                       "--version", version], { encoding: "utf8", timeout: 120000 });
  const info = JSON.parse(out);
  info.tmp = home;
  return info;
}

function serve(info) {
  return new Promise((resolve, reject) => {
    const p = spawn("python3", [path.join(ROOT, "tests", "sim", "octosim.py"), "serve", "--home", info.home,
                                "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
    let buf = "", err = "", started = false;
    const timer = setTimeout(() => { p.kill("SIGKILL"); reject(new Error("serve did not start: " + err)); }, 30000);
    p.stderr.on("data", (d) => { err += d; });
    p.stdout.on("data", (d) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl >= 0 && !started) {
        started = true;
        clearTimeout(timer);
        info.url = buf.slice(0, nl).trim();
        info.proc = p;
        resolve(info);
      }
    });
    p.on("exit", (code) => { clearTimeout(timer); if (!started) reject(new Error("serve exited " + code + ": " + err)); });
  });
}

function stop(info) {
  if (info.proc && info.proc.exitCode === null) info.proc.kill("SIGTERM");
  fs.rmSync(info.tmp, { recursive: true, force: true });
}

async function api(info, method, p, body, key) {
  const r = await fetch(info.url + p, {
    method,
    headers: Object.assign({ "X-Octopus-ApiKey": key === undefined ? info.api_key : key },
                           body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30000),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  return { status: r.status, json, text };
}

async function waitTask(info, p) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const t = (await api(info, "GET", p)).json;
    if (t.IsCompleted || Date.now() > deadline) return t;
    await new Promise((r) => setTimeout(r, 100));
  }
}

module.exports = { loadContracts, fieldsOf, createServer, serve, stop, api, waitTask, ROOT };
