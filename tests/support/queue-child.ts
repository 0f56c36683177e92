// A worker process for tests/queue-crash.test.ts: claims the crash test's job and hangs in it
// (heartbeating) until it is killed.
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import { openDatabase } from '../../src/db.js';
import { Worker, defineJob } from '../../src/engine/queue.js';
import { testConfig } from '../helpers.js';

const db = await openDatabase({ url: process.env.CRASH_DB_URL!, schema: process.env.CRASH_DB_SCHEMA || undefined });
const app = await buildApp(testConfig(), { db, logger: pino({ level: 'silent' }) });
defineJob('crash.slow', async () => {
  process.stdout.write('started\n');
  await new Promise(() => undefined);
});
const worker = new Worker(app.deps, { types: ['crash.slow'], leaseMs: 5000, pollMs: 20 });
await worker.start();
process.stdout.write('ready\n');
