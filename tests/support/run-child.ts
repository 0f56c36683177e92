// A worker process for tests/runs-crash.test.ts: runs the crash test's run; its first step calls
// the test's counter server and completes, its second step announces itself and hangs until the
// process is killed.
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import { openDatabase } from '../../src/db.js';
import { Worker } from '../../src/engine/queue.js';
import { defineRunKind } from '../../src/engine/runs.js';
import { testConfig } from '../helpers.js';

const counter = process.env.CRASH_COUNTER_URL!;
const db = await openDatabase({ url: process.env.CRASH_DB_URL!, schema: process.env.CRASH_DB_SCHEMA || undefined });
const app = await buildApp(testConfig(), { db, logger: pino({ level: 'silent' }) });
defineRunKind('crash.two_steps', async (rc) => {
  const first = await rc.step('llm', 'paid_call', {}, async () => {
    const res = await fetch(`${counter}/step1`, { method: 'POST' });
    return { output: await res.json(), usage: { input_tokens: 10, output_tokens: 20 }, cost: 0.25 };
  });
  const second = await rc.step('tool', 'slow_tool', {}, async ({ attempt }) => {
    await fetch(`${counter}/step2?attempt=${attempt}`, { method: 'POST' });
    process.stdout.write('step2\n');
    await new Promise(() => undefined);
    return { output: 'never' };
  });
  return { first, second };
});
const worker = new Worker(app.deps, { types: ['runs.execute'], leaseMs: 1500, pollMs: 20 });
await worker.start();
process.stdout.write('ready\n');
