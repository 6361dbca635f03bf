// Preloaded into every agent's OpenClaw gateway (NODE_OPTIONS=--import), so that a turn after a
// minute of silence does not wait for OpenClaw to rebuild the worker threads it retired meanwhile,
// and a woken agent answers soon (its config reloaded, its database opened: see the end).
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
// A wake hands a spare the user's agent through the config file; the agent's first turn then opens
// its database. Measured (a spare, a returning user, model stand-in): the agent listed 0.9-1.0 s
// after the config was written, and a first turn of 2.0-2.3 s against 0.3 s warm. So:
//  - OpenClaw hosts an agent's SQLite database in a worker thread and terminates the thread when its
//    databases are closed; only one idle agent's database stays open per gateway, so the woken
//    agent's first turn closes the spare's, its thread goes, and a new one imports ~140 modules
//    (~1.3 s) before the database opens. A thread retired whole is kept and given to OpenClaw the
//    next time it starts one with the same script and options (recycleDatabaseWorker): first turn
//    0.8-1.1 s;
//  - the config watcher waits for a write to stay unchanged 20 ms instead of 200 ms, and reloads
//    10 ms after it instead of 300 ms (the platform writes a config in one rename): listed after
//    0.4-0.55 s;
//  - the integrity quick check OpenClaw queues for a database it opens (a process of its own, ~1 s
//    of a core) waits 30 s instead of starting at once, beside the woken agent's first answers.
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
const DATABASE_WORKER = "/infra/sqlite-store.worker.js";
const SETTLED_MS = 20;
const INTEGRITY_CHILD = "infra/sqlite-integrity.worker.js";
// The first as the gateway finishes starting (it watches its config: its environment is settled, its
// port set in it), before a spare is ready; the next a while after one was used, off the woken
// agent's first turns.
const FIRST_FORK_AHEAD_MS = 2_000;
const FORK_AHEAD_AFTER_MS = 20_000;
// What the worker-placement sweep (and the warm-up task below) ask the history worker: not a use.
const HOUSEKEEPING_KINDS = new Set(["session-target-inventory", "session-identity-evidence", "session-store-target", "sqlite-target"]);

let respawning = false; // set while the history pool is being given a worker off anyone's turn
let watched;
const watching = new Promise((resolve) => { watched = resolve; }); // once the gateway watches its config

const say = (message) => process.stderr.write(`deepclaw warmth: ${message}\n`);
const said = new Set();
const sayOnce = (message) => { if (!said.has(message)) say(message); said.add(message); };

// Timers OpenClaw arms with a fixed delay (module constants), picked out by their callback and given
// another delay.
const RETIMED_TIMERS = [
  { // the worker-placement sweep: every 30 min instead of every minute
    timer: "setInterval", ms: 60_000, callback: (f) => f.name === "sweepActivePlacements",
    becomes: 30 * 60_000, says: "worker-placement sweep every",
  },
  { // an agent's idle database execution (IDLE_EXECUTION_MS), whose reopening is most of what a turn
    // after a minute of silence pays: closed after 5 min, well before an unused agent goes Idle
    // (10 min), where Kubernetes saves its state
    timer: "setTimeout", ms: 60_000, callback: (f) => String(f).includes("owner.closeIdle()"),
    becomes: 5 * 60_000, says: "idle agent database kept open",
  },
  { // the config watcher's debounce (300 ms): the platform writes a config in one rename, so there is
    // nothing to gather, and a wake waits for this reload
    timer: "setTimeout", ms: 300, callback: (f) => String(f).includes("startTrackedReload()"),
    becomes: 10, says: "config reload debounce",
  },
  { // the integrity quick check OpenClaw queues when it opens an agent's database: a process of its
    // own (~1 s of a core) that competed with a woken agent's first answers on two cores. The first
    // runs at once: it checks the database a spare's warm-up opened, at boot, before anyone waits.
    timer: "setTimeout", ms: 0, callback: (f) => String(f).includes("inOwnerContext(run)"),
    becomes: 30_000, says: "agent database quick check after", firstAsIs: true,
  },
];

/** The global timer functions, giving the timers above their delay (said once each); every other
 * timer is left as it is. */
function retimeTimers() {
  for (const name of new Set(RETIMED_TIMERS.map((t) => t.timer))) {
    const given = globalThis[name];
    const mine = RETIMED_TIMERS.filter((t) => t.timer === name);
    const seen = new Set();
    const retiming = function (callback, ms, ...args) {
      const found = typeof callback === "function" && mine.find((t) => t.ms === ms && t.callback(callback));
      if (found && (seen.has(found) || !found.firstAsIs)) {
        ms = found.becomes;
        sayOnce(`${found.says} ${ms / 1000} s`);
      }
      if (found) seen.add(found);
      return given.call(this, callback, ms, ...args);
    };
    // What the function carries stays (util.promisify's custom form of setTimeout, its name).
    Object.defineProperties(retiming, Object.getOwnPropertyDescriptors(given));
    globalThis[name] = retiming;
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

/** A database worker OpenClaw retired, kept for the next one it starts (see recycleDatabaseWorker). */
let kept; // { worker, key, timer, terminate }

function takeKept(key) {
  if (!kept || kept.key !== key) return undefined;
  const { worker, timer } = kept;
  kept = undefined;
  clearTimeout(timer);
  return worker;
}

function dropKept() {
  const dropped = kept;
  if (dropped && takeKept(dropped.key)) dropped.terminate();
}

/** OpenClaw runs each agent's SQLite database in a worker thread of its own and terminates the thread
 * once its databases are all closed; the next database opened (a woken agent's, an agent's after
 * its execution went idle) waits for a new thread to import ~140 modules (~1.3 s of the turn on two
 * cores). So a thread retired whole is kept, and the next thread OpenClaw asks for with the same
 * script and options is that one, its modules loaded. OpenClaw itself hosts databases one after
 * another in one thread (when it has as many threads as it allows); only a thread that never
 * failed is kept (no error or failed reply seen), the newest one, for IDLE_WORKER_MS. */
function recycleDatabaseWorker(worker, key) {
  let healthy = true;
  const sick = () => { healthy = false; };
  const replied = (reply) => { if (reply?.ok === false) healthy = false; };
  const exited = () => { if (kept?.worker === worker) takeKept(key); };
  const watch = () => {
    worker.on("error", sick).on("messageerror", sick).on("message", replied).on("exit", exited);
  };
  watch();
  const terminate = worker.terminate;
  worker.terminate = function () {
    if (!healthy) return terminate.call(this);
    dropKept(); // the newest is kept: it was started with the gateway's environment as it is now
    const exits = worker.listeners("exit").filter((listener) => listener !== exited);
    // (Node's own listeners, which ref the thread's port while someone listens, stay.)
    for (const event of ["message", "messageerror", "error", "exit", "online"]) worker.removeAllListeners(event);
    watch();
    worker.unref(); // as OpenClaw left it: a kept thread never holds the gateway open
    const timer = setTimeout(dropKept, IDLE_WORKER_MS);
    timer.unref();
    kept = { worker, key, timer, terminate: () => terminate.call(worker) };
    for (const exit of exits) exit.call(worker, 1); // as a terminated thread's exit reads to OpenClaw
    return Promise.resolve(1);
  };
}

function patchWorkers() {
  const threads = createRequire(import.meta.url)("node:worker_threads");
  const Worker = threads.Worker;
  threads.Worker = class extends Worker {
    constructor(url, options) {
      const href = String(url);
      const database = href.startsWith("file:") && href.endsWith(DATABASE_WORKER);
      const key = database ? `${href} ${JSON.stringify(options ?? {})}` : undefined;
      const reused = database && takeKept(key);
      if (reused) { // (a subclass may construct another object instead of itself)
        sayOnce("a database worker thread kept from closed databases serves the next");
        return reused;
      }
      const warming = respawning && href.startsWith("file:") && href.endsWith(HISTORY_WORKER);
      super(warming ? preloadingWorkerUrl(href) : url, options);
      if (database) recycleDatabaseWorker(this, key);
    }
  };
  syncBuiltinESMExports(); // `import { Worker } from "node:worker_threads"` now names the subclass
}

/** OpenClaw checks an existing agent database's integrity before it first writes to it (a woken
 * agent's first turn) in a child process forked for the check, and the turn waits for that node
 * process to start (~0.35 s on two cores, for a check of a few ms). So one such process is forked
 * ahead, idle until asked (the check's protocol starts with OpenClaw's first message), and the next
 * fork OpenClaw asks for with the same module, arguments, options and environment is that one, with
 * OpenClaw's timeout and abort signal applied from then on; the next one is forked a while later,
 * off anyone's turn (a fork that finds none, or another environment, is made as OpenClaw asked).
 * Any other fork is left as it is. */
function forkIntegrityChecksAhead(dist) {
  const processes = createRequire(import.meta.url)("node:child_process");
  const fork = processes.fork;
  const module = pathToFileURL(join(dist, INTEGRITY_CHILD));
  // How OpenClaw 2026.9.6 forks it (openclaw-agent-db-maintenance); another shape is forked as asked.
  const shape = { execArgv: [], serialization: "advanced", stdio: ["ignore", "ignore", "ignore", "ipc"], killSignal: "SIGKILL" };
  const keyOf = (modulePath, args, options) => {
    const { timeout, signal, ...rest } = options ?? {};
    return JSON.stringify([String(modulePath), args ?? [], rest, process.env]);
  };
  let ahead; // { child, key }
  let timer;
  const forkLater = (delay = FORK_AHEAD_AFTER_MS) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (ahead) return;
      const child = fork.call(processes, module, [], shape);
      child.on("error", () => undefined); // (its own, until OpenClaw has it)
      child.once("exit", () => { if (ahead?.child === child) ahead = undefined; });
      child.unref();
      child.channel?.unref(); // an idle check never holds the gateway open
      ahead = { child, key: keyOf(module, [], shape) };
    }, delay);
    timer.unref();
  };
  process.once("exit", () => ahead?.child.kill("SIGKILL"));
  processes.fork = function (modulePath, args, options) {
    if (!String(modulePath).endsWith(INTEGRITY_CHILD)) return fork.apply(this, arguments);
    let child;
    if (ahead && ahead.key === keyOf(modulePath, args, options) && ahead.child.connected) {
      child = ahead.child;
      ahead = undefined;
      child.ref();
      child.channel?.ref();
      const kill = () => child.kill(options.killSignal ?? "SIGTERM");
      if (options.signal?.aborted) kill();
      else options.signal?.addEventListener("abort", kill, { once: true });
      if (options.timeout > 0) {
        const deadline = setTimeout(kill, options.timeout);
        child.once("exit", () => clearTimeout(deadline));
      }
      sayOnce("an integrity check process forked ahead serves the next check");
    } else {
      child = fork.apply(this, arguments);
    }
    forkLater();
    return child;
  };
  syncBuiltinESMExports(); // `import { fork } from "node:child_process"` now names this one
  watching.then(() => forkLater(FIRST_FORK_AHEAD_MS));
}

/** OpenClaw's config watcher waits for a written file to stay unchanged 200 ms (for editors writing in
 * pieces) before it even starts its reload; the platform writes a config in one rename. */
async function quickenConfigWatcher(dist) {
  const { default: chokidar } = await import(pathToFileURL(createRequire(join(dist, "index.js")).resolve("chokidar")).href);
  if (typeof chokidar?.watch !== "function") return "no chokidar.watch";
  const watch = chokidar.watch;
  chokidar.watch = function (paths, options) {
    const settle = options?.awaitWriteFinish;
    if (settle?.stabilityThreshold === 200 && settle.pollInterval === 50) { // the config watcher
      watched();
      options = { ...options, awaitWriteFinish: { stabilityThreshold: SETTLED_MS, pollInterval: SETTLED_MS / 2 } };
      say(`config watcher waits ${SETTLED_MS / 1000} s for a write to settle`);
    }
    return watch.call(this, paths, options);
  };
  return undefined;
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
      patchWorkers();
      forkIntegrityChecksAhead(dist);
      retimeTimers();
      say("keeping worker threads warm");
    }
  } catch (error) {
    say(`left alone (${error})`);
  }
  try {
    const refused = await quickenConfigWatcher(dist);
    if (refused) say(`config watcher left alone (${refused})`);
  } catch (error) {
    say(`config watcher left alone (${error})`);
  }
}
