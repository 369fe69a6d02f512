// The first time it runs in an origin this worker hangs, as if its imports never loaded; after
// that it is ORION's worker. The client should replace the hung one and start normally.
const early = [];
self.onmessage = (event) => early.push(event);
const MARK = 'orion-test-hung-once';
if (await caches.has(MARK)) {
  await import('/pkg/worker.js');
  // worker.js set its own handler; hand it what arrived before.
  for (const event of early.splice(0)) self.onmessage(event);
} else {
  await caches.open(MARK);
}
