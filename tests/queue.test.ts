import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from './helpers.js';
import { createOrganization } from '../src/services/organizations.js';
import {
  PermanentJobError, Worker, backoffMs, claimJob, defineJob, defineRecurringJob, enqueue, getJob, runUntilIdle,
} from '../src/engine/queue.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const db = () => env.app.deps.db.kysely;
const makeDue = (id: string) => db().updateTable('jobs').set({ run_at: new Date(Date.now() - 1000).toISOString() }).where('id', '=', id).execute();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('job queue', () => {
  it('runs a job with its payload and records the result', async () => {
    const seen: unknown[] = [];
    defineJob('t.echo', async ({ job }) => { seen.push(job.payload); return { doubled: (job.payload.n as number) * 2 }; });
    const id = await enqueue(db(), { type: 't.echo', payload: { n: 21 }, organizationId: env.orgA });
    expect(await runUntilIdle(env.app.deps, { types: ['t.echo'] })).toBe(1);
    expect(seen).toEqual([{ n: 21 }]);
    const job = await getJob(db(), id);
    expect(job).toMatchObject({ status: 'succeeded', attempts: 1, result: JSON.stringify({ doubled: 42 }), locked_by: null });
    expect(job?.finished_at).toBeTruthy();
  });

  it('retries with backoff, then marks the job dead after its last attempt', async () => {
    let calls = 0;
    defineJob('t.flaky', async () => { calls++; throw new Error(`boom ${calls}`); });
    const id = await enqueue(db(), { type: 't.flaky', maxAttempts: 3 });
    await runUntilIdle(env.app.deps, { types: ['t.flaky'] });
    let job = await getJob(db(), id);
    expect(job).toMatchObject({ status: 'queued', attempts: 1, last_error: 'boom 1' });
    expect(new Date(job!.run_at).getTime()).toBeGreaterThan(Date.now());
    expect(await runUntilIdle(env.app.deps, { types: ['t.flaky'] })).toBe(0); // not due yet
    await makeDue(id);
    await runUntilIdle(env.app.deps, { types: ['t.flaky'] });
    await makeDue(id);
    await runUntilIdle(env.app.deps, { types: ['t.flaky'] });
    job = await getJob(db(), id);
    expect(job).toMatchObject({ status: 'dead', attempts: 3, last_error: 'boom 3' });
    expect(calls).toBe(3);
  });

  it('backoff grows exponentially with jitter and a cap', () => {
    for (let attempt = 1; attempt <= 6; attempt++) {
      const ceiling = 1000 * 2 ** (attempt - 1);
      for (let i = 0; i < 20; i++) {
        const d = backoffMs(attempt);
        expect(d).toBeGreaterThanOrEqual(ceiling / 2);
        expect(d).toBeLessThanOrEqual(ceiling);
      }
    }
    expect(backoffMs(40)).toBeLessThanOrEqual(60 * 60 * 1000);
  });

  it('a permanent error is dead at once; an unknown type too', async () => {
    defineJob('t.permanent', async () => { throw new PermanentJobError('bad input'); });
    const a = await enqueue(db(), { type: 't.permanent' });
    const b = await enqueue(db(), { type: 't.nobody-handles-this' });
    await runUntilIdle(env.app.deps, { types: ['t.permanent', 't.nobody-handles-this'] });
    expect(await getJob(db(), a)).toMatchObject({ status: 'dead', attempts: 1, last_error: 'bad input' });
    expect((await getJob(db(), b))?.status).toBe('dead');
  });

  it('runUntilIdle can be limited to given jobs', async () => {
    const ran: string[] = [];
    defineJob('t.pick', async ({ job }) => { ran.push(job.id); });
    const a = await enqueue(db(), { type: 't.pick' });
    const b = await enqueue(db(), { type: 't.pick' });
    expect(await runUntilIdle(env.app.deps, { types: ['t.pick'], ids: [b] })).toBe(1);
    expect(ran).toEqual([b]);
    expect((await getJob(db(), a))?.status).toBe('queued');
    await runUntilIdle(env.app.deps, { types: ['t.pick'] });
    expect(ran).toEqual([b, a]);
  });

  it('runs higher priority first and waits for run_at', async () => {
    const order: string[] = [];
    defineJob('t.order', async ({ job }) => { order.push(job.payload.name as string); });
    await enqueue(db(), { type: 't.order', payload: { name: 'low' }, priority: 0 });
    await enqueue(db(), { type: 't.order', payload: { name: 'high' }, priority: 10 });
    await enqueue(db(), { type: 't.order', payload: { name: 'later' }, priority: 100, runAt: new Date(Date.now() + 60_000) });
    await runUntilIdle(env.app.deps, { types: ['t.order'] });
    expect(order).toEqual(['high', 'low']);
  });

  it('an expired lease is claimed again by another worker, and the first worker can no longer finish it', async () => {
    const id = await enqueue(db(), { type: 't.lease' });
    const first = await claimJob(env.app.deps, 'worker-a', 20, ['t.lease']);
    expect(first?.id).toBe(id);
    expect(await claimJob(env.app.deps, 'worker-b', 20, ['t.lease'])).toBeNull(); // still leased
    await sleep(40);
    const second = await claimJob(env.app.deps, 'worker-b', 30_000, ['t.lease']);
    expect(second).toMatchObject({ id, attempts: 2, locked_by: 'worker-b' });
    const stale = await db().updateTable('jobs').set({ status: 'succeeded' }).where('id', '=', id).where('locked_by', '=', 'worker-a').executeTakeFirst();
    expect(Number(stale.numUpdatedRows)).toBe(0);
  });

  it('a concurrency key runs at most its limit at a time', async () => {
    const ids = await Promise.all([1, 2, 3].map((n) => enqueue(db(), { type: 't.limited', payload: { n }, concurrencyKey: 'org:x', concurrencyLimit: 2 })));
    const other = await enqueue(db(), { type: 't.limited', payload: { n: 9 } });
    const claimed = [];
    for (let i = 0; i < 4; i++) claimed.push(await claimJob(env.app.deps, 'w', 30_000, ['t.limited']));
    const got = claimed.filter(Boolean).map((j) => j!.id).sort();
    expect(got).toHaveLength(3);
    expect(got).toContain(other);
    expect(got.filter((x) => ids.includes(x))).toHaveLength(2);
    expect(claimed[3]).toBeNull();
  });

  it('an organization runs at most ORG_CONCURRENCY jobs at a time, whatever their keys', async () => {
    const deps = { ...env.app.deps, config: { ...env.app.deps.config, orgConcurrency: 2 } };
    const ofA = await Promise.all([1, 2, 3].map((n) => enqueue(db(), { type: 't.orgcap', payload: { n }, organizationId: env.orgA, concurrencyKey: `k${n}`, concurrencyLimit: 5 })));
    const ofB = await enqueue(db(), { type: 't.orgcap', payload: { n: 4 }, organizationId: env.orgB });
    const claimed = [];
    for (let i = 0; i < 4; i++) claimed.push(await claimJob(deps, 'w', 30_000, ['t.orgcap']));
    const got = claimed.filter(Boolean).map((j) => j!.id);
    expect(got).toHaveLength(3);
    expect(got).toContain(ofB);
    expect(got.filter((x) => ofA.includes(x))).toHaveLength(2);
    expect(claimed[3]).toBeNull();
    // Without the limit (the default), the third job of A is claimed.
    expect((await claimJob(env.app.deps, 'w', 30_000, ['t.orgcap']))?.id).toBe(ofA.find((x) => !got.includes(x)));
  });

  it('keeps a concurrency key and ORG_CONCURRENCY within their limits when workers claim at the same moment', async () => {
    const keyed = await Promise.all(Array.from({ length: 8 }, (_, n) => enqueue(db(), { type: 't.keyrace', payload: { n }, concurrencyKey: 'race:k', concurrencyLimit: 2 })));
    const claims = await Promise.all(Array.from({ length: 8 }, (_, i) => claimJob(env.app.deps, `kr-${i}`, 30_000, ['t.keyrace'])));
    expect(claims.filter(Boolean).map((j) => j!.id).filter((id) => keyed.includes(id))).toHaveLength(2);
    const deps = { ...env.app.deps, config: { ...env.app.deps.config, orgConcurrency: 3 } };
    const org = (await createOrganization(db(), { name: 'Racing' })).id;
    await Promise.all(Array.from({ length: 8 }, (_, n) => enqueue(db(), { type: 't.orgrace', payload: { n }, organizationId: org })));
    const orgClaims = await Promise.all(Array.from({ length: 8 }, (_, i) => claimJob(deps, `or-${i}`, 30_000, ['t.orgrace'])));
    expect(orgClaims.filter(Boolean)).toHaveLength(3);
  });

  it('never hands one job to two claimers at once', async () => {
    const ids = new Set(await Promise.all(Array.from({ length: 20 }, () => enqueue(db(), { type: 't.race' }))));
    const claims = await Promise.all(Array.from({ length: 30 }, (_, i) => claimJob(env.app.deps, `racer-${i}`, 30_000, ['t.race'])));
    const got = claims.filter(Boolean).map((j) => j!.id);
    expect(new Set(got).size).toBe(got.length);
    expect(got.every((id) => ids.has(id))).toBe(true);
    expect(got.length).toBe(20);
  });

  it('a worker runs jobs as they come, and a graceful stop hands back what it could not finish', async () => {
    const done: number[] = [];
    defineJob('t.quick', async ({ job }) => { done.push(job.payload.n as number); });
    defineJob('t.slow', ({ signal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')))));
    const worker = new Worker(env.app.deps, { concurrency: 2, pollMs: 20, leaseMs: 5000, types: ['t.quick', 't.slow'] });
    await worker.start();
    await enqueue(db(), { type: 't.quick', payload: { n: 1 } });
    await enqueue(db(), { type: 't.quick', payload: { n: 2 } });
    const slow = await enqueue(db(), { type: 't.slow' });
    for (let i = 0; i < 100 && (done.length < 2 || (await getJob(db(), slow))?.status !== 'running'); i++) await sleep(20);
    expect(done.sort()).toEqual([1, 2]);
    await worker.stop(50);
    expect(await getJob(db(), slow)).toMatchObject({ status: 'queued', attempts: 0, locked_by: null });
  });

  it('recurring jobs have one schedule and come back after each run', async () => {
    let runs = 0;
    defineRecurringJob('t.every-minute', 60_000, async () => { runs++; });
    const w1 = new Worker(env.app.deps, { types: ['t.every-minute'], pollMs: 20 });
    const w2 = new Worker(env.app.deps, { types: ['t.every-minute'], pollMs: 20 });
    await w1.start();
    await w2.start();
    for (let i = 0; i < 100 && runs < 1; i++) await sleep(20);
    await w1.stop();
    await w2.stop();
    const rows = await db().selectFrom('jobs').selectAll().where('type', '=', 't.every-minute').execute();
    expect(rows).toHaveLength(1);
    expect(runs).toBe(1);
    expect(rows[0].status).toBe('queued');
    expect(new Date(rows[0].run_at).getTime()).toBeGreaterThan(Date.now() + 50_000);
  });
});

describe('job queue: leases of a running Worker', () => {
  const waitFor = async (cond: () => boolean | Promise<boolean>, ms = 2000) => {
    for (const end = Date.now() + ms; Date.now() < end; await sleep(10)) if (await cond()) return;
    throw new Error('timed out waiting');
  };

  it('a live worker keeps its job past the lease with heartbeats; nobody else can claim it', async () => {
    let calls = 0;
    let startedAt = 0;
    defineJob('t.hb-keep', async () => { calls++; startedAt = Date.now(); await sleep(1000); return { ok: true }; });
    const worker = new Worker(env.app.deps, { concurrency: 1, leaseMs: 300, pollMs: 20, types: ['t.hb-keep'] });
    try {
      const id = await enqueue(db(), { type: 't.hb-keep' });
      await worker.start();
      await waitFor(() => calls === 1);
      // Twice the lease: without heartbeats the lease would have expired by now.
      await sleep(Math.max(0, startedAt + 600 - Date.now()));
      expect(await claimJob(env.app.deps, 'thief', 300, ['t.hb-keep'])).toBeNull();
      const during = await getJob(db(), id);
      expect(during).toMatchObject({ status: 'running', attempts: 1, locked_by: worker.id });
      expect(new Date(during!.locked_until!).getTime()).toBeGreaterThan(Date.now());
      await waitFor(async () => (await getJob(db(), id))?.status !== 'running', 2000);
      const after = await getJob(db(), id);
      expect(after).toMatchObject({ status: 'succeeded', attempts: 1, locked_by: null, locked_until: null, result: JSON.stringify({ ok: true }) });
      expect(calls).toBe(1);
    } finally {
      await worker.stop(100);
    }
  });

  it('a lost lease aborts the handler, and the old worker leaves the new holder\'s row alone', async () => {
    let calls = 0;
    let abortedAfter = -1;
    let reason: unknown;
    let stolenAt = 0;
    defineJob('t.hb-lost', ({ signal }) => {
      calls++;
      return new Promise((_, reject) => signal.addEventListener('abort', () => {
        abortedAfter = Date.now() - stolenAt;
        reason = signal.reason;
        reject(signal.reason as Error);
      }));
    });
    const worker = new Worker(env.app.deps, { concurrency: 1, leaseMs: 300, pollMs: 20, types: ['t.hb-lost'] });
    try {
      const id = await enqueue(db(), { type: 't.hb-lost' });
      await worker.start();
      await waitFor(() => calls === 1);
      expect(await getJob(db(), id)).toMatchObject({ status: 'running', attempts: 1, locked_by: worker.id });
      // Another worker took the job (with a long lease of its own, so the old worker cannot re-claim it as expired).
      const theirs = new Date(Date.now() + 60_000).toISOString();
      stolenAt = Date.now();
      await db().updateTable('jobs').set({ locked_by: 'someone-else', locked_until: theirs }).where('id', '=', id).execute();
      await waitFor(() => abortedAfter >= 0, 1000);
      expect(abortedAfter).toBeLessThan(400); // heartbeats every 100 ms
      expect((reason as Error).message).toBe('lease lost');
      // The handler rejected; runClaimed records the failure only where locked_by is still its own id.
      await worker.stop(1000);
      const row = await getJob(db(), id);
      expect(row).toMatchObject({ status: 'running', attempts: 1, locked_by: 'someone-else', locked_until: theirs, last_error: null, finished_at: null });
      expect(calls).toBe(1);
    } finally {
      await worker.stop(100);
    }
  });
});
