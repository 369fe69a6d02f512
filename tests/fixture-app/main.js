// Uses the installed package exactly as a user's app would, then reports what happened.
import { Orion } from './node_modules/orion-orchestrator/index.js';

const out = document.getElementById('result');
const result = { installedFrom: new URL('./node_modules/orion-orchestrator/index.js', import.meta.url).pathname };
try {
  const orion = await Orion.create();
  result.pong = (await orion.ping({ hello: 'from the fixture', n: [1, 2, 3] })).payload;
  result.version = await orion.version();
  result.health = await orion.health();
  result.embedding = Array.from((await orion.embed(['hello from a fixture app']))[0]);
  result.profile = await orion.profile();
  await orion.close();
  result.afterClose = await orion.ping().then(() => 'resolved', (error) => error.code);
} catch (error) {
  result.error = `${error.code}: ${error.message}`;
}
out.textContent = JSON.stringify(result, null, 2);
out.dataset.done = 'true';
