// Preloaded into every agent's OpenClaw gateway (NODE_OPTIONS=--import), so that a turn after a
// minute of silence does not wait for OpenClaw to rebuild the worker threads it retired meanwhile.
//
// Measured on OpenClaw 2026.9.6 (a lone gateway, model stand-in): a turn costs 0.4-0.6 s while
// warm, and 3.2-4.3 s after 60-70 s of silence, all of it before the model is asked. Two causes:
//  1. The gateway's worker-placement sweep (WORKER_PLACEMENT_RECONCILE_INTERVAL_MS, 60 s, runs
//     whether or not cloud workers are configured) reads session evidence on the session-history
//     worker and then rotates it. The next turn spawns a fresh session-transcript worker, which
//     lazily imports ~28 modules (and what they import): 2.2-2.7 s before the turn's first read.
//  2. WorkerTaskPool retires an idle worker after `idleTimeoutMs ?? 60 s`; the memory-search,
//     memory-index and model-context pools leave it at that default and are rebuilt on the turn.
// Neither is configurable. So, without changing what OpenClaw does:
//  - a pool that leaves the idle timeout unset keeps its idle worker for 30 min (OpenClaw's own
//    SQLITE_IDLE_HANDLE_TTL_MS, the window its history worker already keeps); memory pressure
//    still retires idle workers as before;
//  - when the history pool has been rotated while the agent was in use (a session read in the last
//    WARM_FOR_MS), a new worker is started at once with a harmless task, off the caller's turn, and
//    that worker imports what the turns' tasks import as it starts (workers started on demand are
//    left as OpenClaw makes them);
//  - the worker-placement sweep runs every 30 min instead of every minute. Under steady use the
//    rebuild above was still on someone's turn once a minute per agent: the sweep's own read runs
//    on a new worker and rotates it again, and on two busy cores each rebuild took 2-6 s
//    (bench/sms.py, 4 agents: one answer a minute per agent 4-9 s late). Standby workers built
//    ahead (tried) helped one agent's texts, but with four agents their builds cost more CPU than
//    they saved (answers p50 2.4 -> 3.8 s). What the sweep looks
//    after (worker environments' placements, their disk space, GitHub publications) serves cloud
//    workers and nodes, which no DeepClaw agent has; it still runs, and on the events OpenClaw
//    triggers it on;
//  - an agent's database execution, which OpenClaw closes a minute after the agent's last run,
//    stays open for 5 min (closed before an unused agent goes Idle at 10 min). Reopening it
//    was most of a turn after a minute of silence: a lone gateway, 90 s after its last turn,
//    answered in 1.5-2.0 s with it closed and 0.3-0.4 s with it open (0.25-0.4 s warm); texts,
//    unlike calls (voice/keep_warm.py), have no warm-up runs between them.
// Nothing else's timer changes.
// Anything not shaped as expected leaves the gateway untouched and says so on stderr.

import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isMainThread } from "node:worker_threads";

const IDLE_WORKER_MS = 30 * 60_000;
const WARM_FOR_MS = 10 * 60_000; // an agent no one used for this long may go cold again
const HISTORY_WORKER = "/config/sessions/session-transcript.worker.js";
// What the worker-placement sweep (and the warm-up task below) ask the history worker: not a use.
const HOUSEKEEPING_KINDS = new Set(["session-target-inventory", "session-identity-evidence", "session-store-target", "sqlite-target"]);

let respawning = false; // set while the history pool is being given a worker off anyone's turn

const say = (message) => process.stderr.write(`deepclaw warmth: ${message}\n`);

// Timers OpenClaw arms with a fixed delay (module constants), picked out by their callback.
const STRETCHED_TIMERS = [
  { // the worker-placement sweep: every 30 min instead of every minute
    timer: "setInterval", ms: 60_000, callback: (f) => f.name === "sweepActivePlacements",
    stretchedMs: 30 * 60_000, says: "worker-placement sweep every",
  },
  { // an agent's idle database execution (IDLE_EXECUTION_MS), whose reopening is most of what a turn
    // after a minute of silence pays: closed after 5 min, well before an unused agent goes Idle
    // (10 min), where Kubernetes saves its state
    timer: "setTimeout", ms: 60_000, callback: (f) => String(f).includes("owner.closeIdle()"),
    stretchedMs: 5 * 60_000, says: "idle agent database kept open",
  },
];

/** The global timer functions, giving the timers above their stretched delay (said once each);
 * every other timer is left as it is. */
function stretchTimers() {
  for (const name of new Set(STRETCHED_TIMERS.map((t) => t.timer))) {
    const given = globalThis[name];
    const mine = STRETCHED_TIMERS.filter((t) => t.timer === name);
    const said = new Set();
    const stretching = function (callback, ms, ...args) {
      const found = typeof callback === "function" && mine.find((t) => t.ms === ms && t.callback(callback));
      if (found) {
        ms = found.stretchedMs;
        if (!said.has(found)) say(`${found.says} ${ms / 1000} s`);
        said.add(found);
      }
      return given.call(this, callback, ms, ...args);
    };
    // What the function carries stays (util.promisify's custom form of setTimeout, its name).
    Object.defineProperties(stretching, Object.getOwnPropertyDescriptors(given));
    globalThis[name] = stretching;
  }
}

function gatewayDist() {
  if (!isMainThread || !process.argv[1]) return undefined;
  let entry;
  try {
    entry = realpathSync(process.argv[1]);
  } catch {
    return undefined;
  }
  return entry.endsWith("/openclaw.mjs") ? join(dirname(entry), "dist") : undefined; // only the gateway
}

/** The session-transcript worker, wrapped so that it imports what its tasks import as it starts. */
function preloadingWorkerUrl(href) {
  const source = readFileSync(fileURLToPath(href), "utf8");
  const modules = [...new Set([...source.matchAll(/import\("(\.[^"]+\.mjs)"\)/g)].map((m) => new URL(m[1], href).href))];
  const body = `await Promise.allSettled(${JSON.stringify(modules)}.map((m) => import(m)));\n` +
    `await import(${JSON.stringify(href)});\n`;
  return new URL(`data:text/javascript,${encodeURIComponent(body)}`);
}

function preloadHistoryWorkers() {
  const threads = createRequire(import.meta.url)("node:worker_threads");
  const Worker = threads.Worker;
  threads.Worker = class extends Worker {
    constructor(url, options) {
      const href = String(url);
      const warming = respawning && href.startsWith("file:") && href.endsWith(HISTORY_WORKER);
      super(warming ? preloadingWorkerUrl(href) : url, options);
    }
  };
  syncBuiltinESMExports(); // `import { Worker } from "node:worker_threads"` now names the subclass
}

async function tunePools(dist) {
  const file = readdirSync(dist).find((name) => /^worker-task-pool-[\w-]+\.mjs$/.test(name));
  if (!file) return "no worker-task-pool module";
  const { t: WorkerTaskPool } = await import(pathToFileURL(join(dist, file)).href);
  if (typeof WorkerTaskPool !== "function") return `${file} exports no WorkerTaskPool`;
  const core = Object.getPrototypeOf(new WorkerTaskPool({ workerUrl: new URL("data:text/javascript,") }).core);
  if (typeof core.idle !== "function") return "no WorkerTaskPoolCore.idle";
  for (const method of ["run", "rotate"]) if (typeof WorkerTaskPool.prototype[method] !== "function") return `no WorkerTaskPool.${method}`;

  const idle = core.idle;
  core.idle = function (slot) {
    if (this.options.idleTimeoutMs === undefined) this.options = { ...this.options, idleTimeoutMs: IDLE_WORKER_MS };
    return idle.call(this, slot);
  };

  let lastUse = -Infinity; // of a session read that neither the sweep nor this module makes
  const noteUse = (request) => {
    if (request && typeof request.kind === "string" && !HOUSEKEEPING_KINDS.has(request.kind)) lastUse = performance.now();
  };
  const run = WorkerTaskPool.prototype.run;
  WorkerTaskPool.prototype.run = function (input, options) {
    if (typeof input !== "function") noteUse(input);
    else { // a task prepared when it is dispatched: see what it asks for then, unchanged
      const prepare = input;
      input = () => {
        const request = prepare();
        Promise.resolve(request).then(noteUse, () => undefined);
        return request;
      };
    }
    return run.call(this, input, options);
  };
  const rotate = WorkerTaskPool.prototype.rotate;
  WorkerTaskPool.prototype.rotate = function () {
    const rotated = rotate.call(this);
    const options = this.core?.options ?? {};
    if (String(options.workerUrl).endsWith(HISTORY_WORKER) && options.idleTimeoutMs === 0 && performance.now() - lastUse < WARM_FOR_MS) {
      rotated.then(() => {
        respawning = true; // the pool creates its worker synchronously inside run(): that one preloads
        try {
          return run.call(this, { kind: "sqlite-target", storePath: join(dist, "..", "warmth", "sessions.json") },
            { inputBytes: 0, timeoutMs: 60_000 });
        } finally {
          respawning = false;
        }
      }).catch(() => undefined); // a pool closing down says no: fine
    }
    return rotated;
  };
  return undefined;
}

const dist = gatewayDist();
if (dist) {
  try {
    const refused = await tunePools(dist);
    if (refused) say(`left alone (${refused})`);
    else {
      preloadHistoryWorkers();
      stretchTimers();
      say("keeping worker threads warm");
    }
  } catch (error) {
    say(`left alone (${error})`);
  }
}
