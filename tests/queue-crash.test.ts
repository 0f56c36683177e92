import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db.js';
import { defineJob, enqueue, getJob, runUntilIdle } from '../src/engine/queue.js';
import { buildApp } from '../src/app.js';
import { freshDb, testConfig } from './helpers.js';
import pino from 'pino';

// A worker killed with SIGKILL mid-job loses nothing: once its lease runs out, another worker
// claims the job again and finishes it.
let fresh: Awaited<ReturnType<typeof freshDb>>;
let db: Db;

afterAll(async () => { await fresh?.drop(); });

describe('a worker process killed mid-job', () => {
  it('leaves the job to be claimed again once its lease expires, and it then completes', async () => {
    fresh = await freshDb({ shared: true });
    db = fresh.db;
    const id = await enqueue(db.kysely, { type: 'crash.slow', payload: { n: 1 } });

    const child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/queue-child.ts'], {
      env: { ...process.env, CRASH_DB_URL: fresh.url, CRASH_DB_SCHEMA: fresh.schema }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`child did not start the job: ${out}`)), 45_000);
      child.stdout!.on('data', (d) => { out += d; if (out.includes('started')) { clearTimeout(t); resolve(); } });
      child.on('exit', (code) => reject(new Error(`child exited ${code}: ${out}`)));
    });
    const running = await getJob(db.kysely, id);
    expect(running).toMatchObject({ status: 'running', attempts: 1 });
    expect(running?.locked_by).toBeTruthy();

    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect((await getJob(db.kysely, id))?.status).toBe('running'); // nobody told the database

    const app = await buildApp(testConfig(), { db, logger: pino({ level: 'silent' }) });
    const seen: unknown[] = [];
    defineJob('crash.slow', async ({ job }) => { seen.push(job.payload); return { done: true }; });
    // The dead worker's lease (5 s, extended every ~1.7 s until the kill) is still held: no one may claim the job yet.
    const until = Date.parse((await getJob(db.kysely, id))!.locked_until!);
    if (until - Date.now() > 500) expect(await runUntilIdle(app.deps, { types: ['crash.slow'] })).toBe(0);
    // Once it runs out (it is never extended again), another worker claims the job.
    await new Promise((r) => setTimeout(r, Math.max(0, until - Date.now()) + 100));
    expect(await runUntilIdle(app.deps, { types: ['crash.slow'] })).toBe(1);
    expect(seen).toEqual([{ n: 1 }]);
    expect(await getJob(db.kysely, id)).toMatchObject({ status: 'succeeded', attempts: 2, locked_by: null });
    await app.close();
  });
});
