// The agent pod's loader: the sidecar that hands a warm OpenClaw gateway its one user's agent, and
// saves that agent's state back to the archive store (activities/runtime/kubernetes.py drives it).
//
// A spare pod boots OpenClaw with no user. When a user claims it, the runtime POSTs /load: the
// loader fetches the user's state archive from a presigned URL (the pod holds no store credentials;
// each URL reaches one object for minutes), unpacks it under the state folder, writes the agent's
// files and then the new config, which OpenClaw's config watcher hot-reloads. POST /save packs the
// state and PUTs it to a presigned URL (at Idle as a checkpoint, and before the pod is deleted at
// Sleep). The pod serves one agent, once: a second /load for another agent is refused.
//
// Node's standard library only; `tar` and `gzip` from the image. Every request but /healthz needs
// the gateway's own bearer token (the loader and the gateway share the pod and its Secret).
import { spawn } from "node:child_process";
import { timingSafeEqual } from "node:crypto";
import { mkdir, rename, writeFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";

const STATE_DIR = required("OPENCLAW_STATE_DIR");
const CONFIG_PATH = required("OPENCLAW_CONFIG_PATH");
const TOKEN = required("OPENCLAW_GATEWAY_TOKEN");
const HOST = process.env.DEEPCLAW_LOADER_HOST || "0.0.0.0";
// How to run OpenClaw's CLI here (a JSON argv prefix), for session retention before a save at Sleep.
const OPENCLAW = JSON.parse(process.env.DEEPCLAW_OPENCLAW_COMMAND || '["openclaw"]');
const CLEANUP_TIMEOUT_MS = 60_000;
const PORT = Number(process.env.DEEPCLAW_LOADER_PORT || 18790);
const AGENT = /^user-[0-9a-f]{32}$/;
const MAX_BODY = 1 << 20; // a config and a few agent files
const FETCH_TIMEOUT_MS = 60_000;

let loaded = null; // the one agent this pod serves, once loaded

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`loader: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authorized(request) {
  const given = Buffer.from(request.headers.authorization || "");
  const wanted = Buffer.from(`Bearer ${TOKEN}`);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

async function readJson(request) {
  const chunks = [];
  let size = 0;
  for await (const chunk of request) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Refused(413, "body too large");
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new Refused(400, "body is not JSON");
  }
}

function run(command, args, input, timeoutMs = 0) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs });
    const out = [];
    const err = [];
    child.stdout.on("data", (chunk) => out.push(chunk));
    child.stderr.on("data", (chunk) => err.push(chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`${command} ${args.join(" ")} exited ${code}: ${Buffer.concat(err).toString().slice(-300)}`));
    });
    child.stdin.on("error", () => {}); // an early exit is reported by close
    child.stdin.end(input ?? Buffer.alloc(0));
  });
}

function agentDir(agent) {
  if (typeof agent !== "string" || !AGENT.test(agent)) throw new Refused(400, "agent must be user-<32 hex>");
  return path.join(STATE_DIR, "agents", agent);
}

async function writeAtomically(file, text) {
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, text, { mode: 0o600 });
  await rename(temporary, file); // the watcher sees one complete file, never half of one
}

async function writeFiles(dir, files) {
  for (const [relative, text] of Object.entries(files || {})) {
    const target = path.resolve(dir, relative);
    if (!target.startsWith(dir + path.sep) || typeof text !== "string") throw new Refused(400, `bad file ${relative}`);
    await writeAtomically(target, text);
  }
}

function checkConfig(config) {
  if (typeof config !== "object" || config === null || Array.isArray(config)) throw new Refused(400, "config must be an object");
  return JSON.stringify(config, null, 2);
}

async function load({ agent, config, files, state_url: stateUrl }) {
  const dir = agentDir(agent);
  if (loaded !== null && loaded !== agent) throw new Refused(409, "this pod serves another agent");
  const text = checkConfig(config);
  const started = performance.now();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let bytes = 0;
  let found = false;
  if (stateUrl) {
    const response = await fetch(stateUrl, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (response.ok) {
      const archive = Buffer.from(await response.arrayBuffer());
      bytes = archive.length;
      found = true;
      await run("tar", ["-xzf", "-", "-C", dir, "--no-same-owner"], archive);
    } else if (response.status !== 404) {
      throw new Refused(502, `state fetch answered ${response.status}`);
    } // 404: a new user, who has no state yet
  }
  const fetched = performance.now();
  await writeFiles(dir, files);
  await writeAtomically(CONFIG_PATH, text);
  loaded = agent;
  return { found, bytes, state_ms: Math.round(fetched - started), total_ms: Math.round(performance.now() - started) };
}

async function cleanSessions(agent) {
  // OpenClaw's session retention (age, count, disk budget), which the gateway's config leaves to us
  // so it never runs on a wake's first turn. A failure is logged: the state is saved regardless.
  const [command, ...prefix] = OPENCLAW;
  try {
    await run(command, [...prefix, "sessions", "cleanup", "--enforce", "--agent", agent, "--json"], null,
      CLEANUP_TIMEOUT_MS);
  } catch (error) {
    console.error(`loader: session cleanup for ${agent} failed: ${error.message}`);
  }
}

async function save({ agent, url, cleanup }) {
  const dir = agentDir(agent);
  if (loaded !== agent) throw new Refused(409, "this pod does not serve that agent");
  if (typeof url !== "string") throw new Refused(400, "url must be a presigned PUT URL");
  const started = performance.now();
  if (cleanup === true) await cleanSessions(agent);
  const archive = await run("tar", ["-czf", "-", "-C", dir, "."]);
  const packed = performance.now();
  const response = await fetch(url, { method: "PUT", body: archive, signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!response.ok) throw new Refused(502, `state upload answered ${response.status}`);
  return { bytes: archive.length, pack_ms: Math.round(packed - started), total_ms: Math.round(performance.now() - started) };
}

async function configure({ agent, config, files }) {
  const dir = agentDir(agent);
  if (loaded !== agent) throw new Refused(409, "this pod does not serve that agent");
  const text = checkConfig(config);
  await writeFiles(dir, files);
  await writeAtomically(CONFIG_PATH, text);
  return {};
}

const routes = { "/load": load, "/save": save, "/config": configure };

const server = http.createServer(async (request, response) => {
  const reply = (status, body) => {
    response.writeHead(status, { "content-type": "application/json" });
    response.end(JSON.stringify(body));
  };
  try {
    if (request.method === "GET" && request.url === "/healthz") return reply(200, { loaded });
    const route = routes[request.url];
    if (!route) return reply(404, { error: "not found" });
    if (request.method !== "POST") return reply(405, { error: "POST only" });
    if (!authorized(request)) return reply(401, { error: "unauthorized" });
    return reply(200, await route(await readJson(request)));
  } catch (error) {
    const status = error instanceof Refused ? error.status : 500;
    console.error(`loader: ${request.method} ${request.url}: ${error.message}`);
    return reply(status, { error: error.message });
  }
});

server.listen(PORT, HOST, () => console.log(`loader: listening on ${HOST}:${PORT}`));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
