// ORION's worker bootstrap: loads the wasm and hands every message to it.
// Messages that arrive while the wasm loads are queued, so the page may post immediately.
import init, { OrionWorker } from './wasm/orion_web.js';

const PROTOCOL_VERSION = 1;
const post = (message) => self.postMessage(message);
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

try {
  await init();
  orion = new OrionWorker(post);
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
