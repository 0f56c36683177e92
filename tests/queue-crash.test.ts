import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, openDatabase, type Db } from '../src/db.js';
import { defineJob, enqueue, getJob, runUntilIdle } from '../src/engine/queue.js';
import { buildApp } from '../src/app.js';
import { testConfig } from './helpers.js';
import pino from 'pino';

// A worker killed with SIGKILL mid-job loses nothing: once its lease runs out, another worker
// claims the job again and finishes it.
const dir = mkdtempSync(join(tmpdir(), 'agentry-crash-'));
const pgUrl = process.env.TEST_DATABASE_URL;
const schema = pgUrl ? `t_${randomBytes(6).toString('hex')}` : '';
const url = pgUrl ?? join(dir, 'crash.db');
let db: Db;

afterAll(async () => {
  await db?.close();
  if (pgUrl) {
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('a worker process killed mid-job', () => {
  it('leaves the job to be claimed again once its lease expires, and it then completes', async () => {
    db = await openDatabase({ url, schema: schema || undefined });
    await migrate(db);
    const id = await enqueue(db.kysely, { type: 'crash.slow', payload: { n: 1 } });

    const child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/queue-child.ts'], {
      env: { ...process.env, CRASH_DB_URL: url, CRASH_DB_SCHEMA: schema }, stdio: ['ignore', 'pipe', 'inherit'],
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
    expect(await runUntilIdle(app.deps, { types: ['crash.slow'] })).toBe(0); // lease still held
    await new Promise((r) => setTimeout(r, 1600));
    expect(await runUntilIdle(app.deps, { types: ['crash.slow'] })).toBe(1);
    expect(seen).toEqual([{ n: 1 }]);
    expect(await getJob(db.kysely, id)).toMatchObject({ status: 'succeeded', attempts: 2, locked_by: null });
    await app.close();
  });
});
