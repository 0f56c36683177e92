import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db.js';
import { getJob, runUntilIdle } from '../src/engine/queue.js';
import { defineRunKind, startRun } from '../src/engine/runs.js';
import { buildApp } from '../src/app.js';
import { createOrganization } from '../src/services/organizations.js';
import { freshDb, testConfig } from './helpers.js';

// A worker killed with SIGKILL in the middle of a run's second step: once the job's lease runs
// out, another worker resumes the run; the first step (a paid call) is not made again, and the
// step that was in flight runs again as attempt 2.
let fresh: Awaited<ReturnType<typeof freshDb>>;
let db: Db;
let server: Server;
const hits: string[] = [];

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await fresh?.drop();
});

describe('a worker process killed mid-run', () => {
  it('resumes at the step in flight: succeeded steps are not run again, the interrupted one gets attempt 2', async () => {
    server = createServer((req, res) => {
      hits.push(req.url!);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ call: hits.length }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const counterUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

    fresh = await freshDb({ shared: true });
    db = fresh.db;
    const org = (await createOrganization(db.kysely, { name: 'Crash Org' })).id;
    const app = await buildApp(testConfig(), { db, logger: pino({ level: 'silent' }) });
    const run = await startRun(app.deps, { organizationId: org, agentId: null, kind: 'crash.two_steps', trigger: 'api', input: {}, policy: { timeout_seconds: 120 } });

    const child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/run-child.ts'], {
      env: { ...process.env, CRASH_DB_URL: fresh.url, CRASH_DB_SCHEMA: fresh.schema, CRASH_COUNTER_URL: counterUrl }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`child did not reach step 2: ${out}`)), 45_000);
      child.stdout!.on('data', (d) => { out += d; if (out.includes('step2')) { clearTimeout(t); resolve(); } });
      child.on('exit', (code) => reject(new Error(`child exited ${code}: ${out}`)));
    });
    const steps = () => db.kysely.selectFrom('run_steps').selectAll().where('run_id', '=', run.id).orderBy('seq', 'asc').execute();
    expect((await steps()).map((s) => [s.name, s.status, s.attempt])).toEqual([['paid_call', 'succeeded', 1], ['slow_tool', 'running', 1]]);

    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const job = await getJob(db.kysely, run.job_id!);
    expect(job).toMatchObject({ status: 'running', attempts: 1 }); // nobody told the database
    expect((await db.kysely.selectFrom('runs').select('status').where('id', '=', run.id).executeTakeFirst())?.status).toBe('running');

    // Another worker: the same kind, whose second step now completes.
    let paidAgain = 0;
    const attempts: number[] = [];
    defineRunKind('crash.two_steps', async (rc) => {
      const first = await rc.step('llm', 'paid_call', {}, async () => { paidAgain++; return { output: { call: -1 } }; });
      const second = await rc.step('tool', 'slow_tool', {}, async ({ attempt }) => { attempts.push(attempt); return { output: 'done' }; });
      return { first, second };
    });
    // Wait for the dead worker's lease to run out (it is never extended again), then claim.
    const until = Date.parse((await getJob(db.kysely, run.job_id!))!.locked_until!);
    await new Promise((r) => setTimeout(r, Math.max(0, until - Date.now()) + 100));
    expect(await runUntilIdle(app.deps, { types: ['runs.execute'], leaseMs: 5000 })).toBe(1);

    expect(paidAgain).toBe(0);
    expect(attempts).toEqual([2]);
    expect(hits.filter((h) => h.startsWith('/step1'))).toHaveLength(1);
    const finished = await db.kysely.selectFrom('runs').selectAll().where('id', '=', run.id).executeTakeFirst();
    expect(finished).toMatchObject({ status: 'succeeded', steps_count: 2, tokens_in: 10, tokens_out: 20, cost: 0.25 });
    expect(JSON.parse(finished!.output!)).toEqual({ first: { call: 1 }, second: 'done' });
    expect((await steps()).map((s) => [s.name, s.status, s.attempt])).toEqual([['paid_call', 'succeeded', 1], ['slow_tool', 'succeeded', 2]]);
    expect(await getJob(db.kysely, run.job_id!)).toMatchObject({ status: 'succeeded', attempts: 2 });
    await app.close();
  });
});
