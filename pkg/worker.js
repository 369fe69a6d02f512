// ORION's worker bootstrap: loads the wasm and hands every message to it.
// Messages that arrive while the wasm loads are queued, so the page may post immediately.
import init, { OrionWorker } from './wasm/orion_web.js';

const PROTOCOL_VERSION = 1;
// `transfer`: buffers moved to the page with the message (a backup file's parts).
const post = (message, transfer) => self.postMessage(message, transfer ?? []);
const early = [];
let orion = null;
let dead = false;

// A trap in wasm leaves the instance unusable: report it (the Rust panic hook usually did
// already, with the panic message) and stop, so the page starts a fresh worker.
function die(error) {
  if (dead) return;
  dead = true;
  post({ type: 'crashed', v: PROTOCOL_VERSION, message: String(error?.message ?? error) });
  self.close();
}

function deliver(message) {
  try {
    orion.handle(message);
  } catch (error) {
    die(error);
  }
}

self.onmessage = (event) => {
  if (dead) return;
  if (orion) deliver(event.data);
  else early.push(event.data);
};

self.onmessageerror = () => {
  post({
    type: 'error',
    v: PROTOCOL_VERSION,
    id: null,
    error: { code: 'ERR_INVALID_MESSAGE', message: 'a message from the page could not be deserialized in the worker' },
  });
};

// A module with one SIMD instruction: it validates only where wasm SIMD is supported.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);

// What the profile rules look at (orion_core::profile); a fact the browser hides stays null.
async function deviceFacts() {
  let quota = null;
  try {
    quota = (await navigator.storage?.estimate?.())?.quota ?? null;
  } catch {
    quota = null;
  }
  return {
    hardwareConcurrency: navigator.hardwareConcurrency ?? null,
    deviceMemoryGb: navigator.deviceMemory ?? null,
    storageQuotaBytes: quota,
    wasmSimd: WebAssembly.validate(SIMD_PROBE),
  };
}

// Workers of other tabs on the same origin hear which memories this one changed, and the reverse.
const memoryChanges = typeof BroadcastChannel === 'function' ? new BroadcastChannel('orion-memories') : null;
const publish = (message) => memoryChanges?.postMessage(message);

// Of all the workers on one database (one per tab), the holder of its Web Lock is the leader: it
// runs schedules and workflows. The lock is held until this worker ends, closed or crashed, and
// the browser then grants it to a waiting worker. Without Web Locks a worker never leads.
function requestLeadership(name) {
  navigator.locks
    ?.request(name, () => {
      if (!dead) {
        try {
          orion.leadershipGained();
        } catch (error) {
          die(error);
        }
      }
      return new Promise(() => {});
    })
    .catch(() => {});
}

try {
  const [facts] = await Promise.all([deviceFacts(), init()]);
  orion = new OrionWorker(post, facts, publish, requestLeadership);
  // The client counts a worker that never says this as hung (`startTimeoutMs`).
  post({ type: 'loaded', v: PROTOCOL_VERSION });
  if (memoryChanges) {
    memoryChanges.onmessage = (event) => {
      if (dead) return;
      try {
        orion.memoriesChanged(event.data);
      } catch (error) {
        die(error);
      }
    };
  }
  for (const message of early.splice(0)) deliver(message);
} catch (error) {
  dead = true;
  post({
    type: 'fatal',
    v: PROTOCOL_VERSION,
    error: { code: 'ERR_WORKER_START', message: `ORION's wasm could not be loaded: ${error?.message ?? error}` },
  });
  self.close();
}
