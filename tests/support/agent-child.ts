// A worker process for tests/agent-crash.test.ts: the real app (so the real `agent` run kind of
// src/engine/agent_loop.ts) and a queue worker with a short lease, allowed to call the test's
// local fake LLM and tool servers. It runs the crash test's agent run until the test kills it
// (the test's tool server never answers this worker's call).
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import { openDatabase } from '../../src/db.js';
import { Worker } from '../../src/engine/queue.js';
import { testConfig } from '../helpers.js';

const db = await openDatabase({ url: process.env.CRASH_DB_URL!, schema: process.env.CRASH_DB_SCHEMA || undefined });
const app = await buildApp(testConfig({ outboundAllowlist: ['127.0.0.1'] }), { db, logger: pino({ level: 'silent' }) });
const worker = new Worker(app.deps, { types: ['runs.execute'], leaseMs: 1500, pollMs: 20 });
await worker.start();
process.stdout.write('ready\n');
