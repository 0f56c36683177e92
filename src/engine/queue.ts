import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { JobsTable } from '../../db/schema/engine.js';
import type { Deps } from '../context.js';
import { newId, nowIso } from '../ids.js';

/**
 * The durable job queue. Jobs live in the `jobs` table; a worker claims one with a lease (one
 * atomic UPDATE … WHERE id = (SELECT … LIMIT 1) — with FOR UPDATE SKIP LOCKED on PostgreSQL),
 * extends the lease while it runs, and records the outcome. A job whose lease expires (its worker
 * died) is claimed again by another worker. Failures are retried with exponential backoff and
 * jitter until `max_attempts`, then the job is `dead`. Several API and worker processes can share
 * one database.
 */

export interface JobSpec {
  type: string;
  payload?: Record<string, unknown>;
  organizationId?: string | null;
  runAt?: Date;
  /** Higher runs first. */
  priority?: number;
  maxAttempts?: number;
  /** Jobs with the same key run at most `concurrencyLimit` at a time (e.g. `org:<id>`, `import:<source id>`). */
  concurrencyKey?: string;
  concurrencyLimit?: number;
  /** A fixed id makes enqueueing idempotent (a second enqueue with the same id does nothing). */
  id?: string;
}

export type ClaimedJob = Omit<JobsTable, 'payload'> & { payload: Record<string, unknown> };

export interface JobContext {
  deps: Deps;
  job: ClaimedJob;
  /** Aborted when the worker shuts down or loses the lease. */
  signal: AbortSignal;
  /** Extends the lease now (the worker also does it on a timer). */
  heartbeat(): Promise<void>;
  /**
   * Marks the job succeeded in `trx`, the handler's own transaction with the writes that finish
   * its work (one commit instead of two); the handler then returns JOB_COMPLETED. Throws when the
   * worker no longer holds the job (the transaction then rolls back).
   */
  completeIn(trx: Kysely<Database>, result: unknown): Promise<void>;
}

/** What a handler returns when it has marked its job succeeded itself (`completeIn`). */
export const JOB_COMPLETED = Symbol('job completed');

export type JobHandler = (ctx: JobContext) => Promise<unknown>;

/** Thrown by a handler for a failure that retrying cannot fix: the job goes straight to `dead`. */
export class PermanentJobError extends Error {}

/**
 * Writes that belong with a job's claim, in the claim's transaction (a run's move to `running`):
 * one commit instead of two. The job is already marked running (its attempts counted). What it
 * returns runs once the claim is committed.
 */
export type ClaimHook = (
  deps: Pick<Deps, 'db'> & Partial<Pick<Deps, 'counts'>>, trx: Kysely<Database>, job: ClaimedJob,
) => Promise<(() => void) | void>;

interface Definition { handler: JobHandler; everyMs?: number; onClaim?: ClaimHook }
const registry = new Map<string, Definition>();

/** Registers the handler of a job type (once per process, at import time). */
export function defineJob(type: string, handler: JobHandler, opts: { onClaim?: ClaimHook } = {}): void {
  registry.set(type, { handler, ...opts });
}

/** A job type that runs every `everyMs` (one schedule for all processes). */
export function defineRecurringJob(type: string, everyMs: number, handler: JobHandler): void {
  registry.set(type, { handler, everyMs });
}

const wakeups = new EventEmitter();
wakeups.setMaxListeners(0);

export async function enqueue(db: Kysely<Database>, spec: JobSpec): Promise<string> {
  const now = nowIso();
  const id = spec.id ?? newId('job');
  await db.insertInto('jobs').values({
    id, organization_id: spec.organizationId ?? null, type: spec.type, payload: JSON.stringify(spec.payload ?? {}),
    status: 'queued', priority: spec.priority ?? 0, run_at: (spec.runAt ?? new Date()).toISOString(), attempts: 0,
    max_attempts: spec.maxAttempts ?? 5, concurrency_key: spec.concurrencyKey ?? null, concurrency_limit: spec.concurrencyLimit ?? null,
    locked_by: null, locked_until: null, last_error: null, result: null, created_at: now, updated_at: now, finished_at: null,
  }).onConflict((oc) => oc.column('id').doNothing()).execute();
  wakeups.emit('job');
  return id;
}

export async function getJob(db: Kysely<Database>, id: string): Promise<ClaimedJob | undefined> {
  const row = await db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
  return row ? { ...row, payload: JSON.parse(row.payload) } : undefined;
}

const LEASE_SWEEP_MS = 1000;
/** The PostgreSQL advisory lock claims serialize on (a fixed 64-bit key of this queue's own). */
const CLAIM_LOCK = sql.raw('7018969357386674545');
/** Per database: when this process next looks for expired leases before due jobs. */
const nextLeaseSweep = new WeakMap<Kysely<Database>, number>();

/**
 * Claims the next due job (or one whose lease expired), or returns null.
 *
 * Which concurrency keys (and, with ORG_CONCURRENCY, organizations) are full is worked out once
 * per claim from the running jobs (few: at most the workers' slots), not once per candidate, so a
 * claim costs the same with ten or ten thousand jobs waiting behind a full key. Expired leases are
 * looked for (`jobs_running_idx`) before due jobs (in priority order, `jobs_claim_idx`) once a second,
 * and after them otherwise.
 */
export async function claimJob(deps: Pick<Deps, 'db' | 'config'> & Partial<Pick<Deps, 'counts'>>, workerId: string, leaseMs: number, types?: string[], ids?: string[]): Promise<ClaimedJob | null> {
  const { kysely: db, dialect } = deps.db;
  const now = nowIso();
  const until = new Date(Date.now() + leaseMs).toISOString();
  const typeFilter = types?.length ? sql`and j.type in (${sql.join(types)})` : sql``;
  const idFilter = ids?.length ? sql`and j.id in (${sql.join(ids)})` : sql``;
  const lock = dialect === 'postgres' ? sql`for update skip locked` : sql``;
  const fullKeys = sql`(
    select r.concurrency_key from jobs r
    where r.status = 'running' and r.locked_until >= ${now} and r.concurrency_key is not null
    group by r.concurrency_key having count(*) >= min(r.concurrency_limit))`;
  // ORG_CONCURRENCY: an organization's running jobs (live leases), across every worker, stay under the limit.
  const orgLimit = deps.config.orgConcurrency;
  const orgFilter = orgLimit > 0 ? sql`and (j.organization_id is null or j.organization_id not in (
    select o.organization_id from jobs o
    where o.status = 'running' and o.locked_until >= ${now} and o.organization_id is not null
    group by o.organization_id having count(*) >= ${orgLimit}))` : sql``;
  const filters = sql`${typeFilter} ${idFilter} ${orgFilter}
    and (j.concurrency_key is null or j.concurrency_limit is null or j.concurrency_key not in ${fullKeys})`;
  const pick = async (exec: Kysely<Database>) => {
    const claim = async (candidates: RawBuilder<unknown>) => (await sql<JobsTable>`
      update jobs set status = 'running', locked_by = ${workerId}, locked_until = ${until}, attempts = attempts + 1, updated_at = ${now}
      where id = (${candidates} ${lock})
      returning *`.execute(exec)).rows[0];
    const expired = () => claim(sql`select j.id from jobs j where j.status = 'running' and j.locked_until < ${now} ${filters} order by j.locked_until limit 1`);
    const due = () => claim(sql`select j.id from jobs j where j.status = 'queued' and j.run_at <= ${now} ${filters} order by j.priority desc, j.run_at asc, j.id asc limit 1`);
    // Expired leases are looked for first at most once per LEASE_SWEEP_MS (a busy worker claims
    // thousands of times a second, and leases last tens of seconds), and whenever nothing is due.
    if (Date.now() >= (nextLeaseSweep.get(db) ?? 0)) {
      nextLeaseSweep.set(db, Date.now() + LEASE_SWEEP_MS);
      return await expired() ?? await due();
    }
    return await due() ?? await expired();
  };
  // One transaction: the claim and its type's claim hook. SQLite has one writer at a time, so
  // claims are serial. On PostgreSQL, two workers claiming at once would each count the running
  // jobs without the other's claim and could both take a job of a full key: claims take a
  // transaction-scoped advisory lock, one after the other.
  const claimed = await db.transaction().execute(async (trx) => {
    if (dialect === 'postgres') await sql`select pg_advisory_xact_lock(${CLAIM_LOCK})`.execute(trx);
    const row = await pick(trx);
    if (!row) return null;
    const job: ClaimedJob = { ...row, payload: JSON.parse(row.payload) };
    return { job, after: await registry.get(job.type)?.onClaim?.(deps, trx, job) };
  });
  claimed?.after?.();
  return claimed?.job ?? null;
}

/** Exponential backoff with full jitter: up to base·2^(attempt-1), at least half of it, capped. */
export function backoffMs(attempt: number, baseMs = 1000, maxMs = 60 * 60 * 1000): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

async function finish(db: Kysely<Database>, job: ClaimedJob, workerId: string, set: Partial<JobsTable>): Promise<boolean> {
  const r = await db.updateTable('jobs').set({ ...set, updated_at: nowIso() })
    .where('id', '=', job.id).where('locked_by', '=', workerId).where('status', '=', 'running').executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

async function runClaimed(deps: Deps, job: ClaimedJob, workerId: string, leaseMs: number, signal: AbortSignal): Promise<void> {
  const db = deps.db.kysely;
  const def = registry.get(job.type);
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal.reason);
  signal.addEventListener('abort', onAbort);
  const heartbeat = async () => {
    const r = await db.updateTable('jobs').set({ locked_until: new Date(Date.now() + leaseMs).toISOString() })
      .where('id', '=', job.id).where('locked_by', '=', workerId).where('status', '=', 'running').executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) controller.abort(new Error('lease lost'));
  };
  const timer = setInterval(() => { void heartbeat().catch(() => undefined); }, Math.max(50, leaseMs / 3));
  try {
    if (!def) throw new PermanentJobError(`no handler for job type "${job.type}"`);
    const completeIn = async (trx: Kysely<Database>, result: unknown) => {
      const done = await finish(trx, job, workerId, { status: 'succeeded', result: JSON.stringify(result ?? null), locked_by: null, locked_until: null, finished_at: nowIso() });
      if (!done) throw new Error('lease lost');
    };
    const result = await def.handler({ deps, job, signal: controller.signal, heartbeat, completeIn });
    if (result === JOB_COMPLETED) {
      // Marked succeeded in the handler's transaction.
    } else if (def.everyMs) {
      await finish(db, job, workerId, { status: 'queued', run_at: new Date(Date.now() + def.everyMs).toISOString(), attempts: 0, locked_by: null, locked_until: null, last_error: null, result: JSON.stringify(result ?? null) });
    } else {
      await finish(db, job, workerId, { status: 'succeeded', result: JSON.stringify(result ?? null), locked_by: null, locked_until: null, finished_at: nowIso() });
    }
  } catch (err) {
    if (signal.aborted) {
      // Shutting down: hand the job back untouched (the attempt does not count).
      await finish(db, job, workerId, { status: 'queued', attempts: Math.max(0, job.attempts - 1), locked_by: null, locked_until: null });
      return;
    }
    const message = (err as Error)?.message ?? String(err);
    const dead = err instanceof PermanentJobError || job.attempts >= job.max_attempts;
    if (dead && def?.everyMs) {
      await finish(db, job, workerId, { status: 'queued', run_at: new Date(Date.now() + def.everyMs).toISOString(), attempts: 0, locked_by: null, locked_until: null, last_error: message });
    } else if (dead) {
      await finish(db, job, workerId, { status: 'dead', last_error: message, locked_by: null, locked_until: null, finished_at: nowIso() });
      deps.log.warn({ jobId: job.id, type: job.type, attempts: job.attempts, err: message }, 'job dead');
    } else {
      await finish(db, job, workerId, { status: 'queued', last_error: message, locked_by: null, locked_until: null, run_at: new Date(Date.now() + backoffMs(job.attempts)).toISOString() });
    }
  } finally {
    clearInterval(timer);
    signal.removeEventListener('abort', onAbort);
  }
}

/** Makes sure each recurring job type (of `types`, when given) has its one schedule row. */
export async function ensureRecurringJobs(db: Kysely<Database>, types?: string[]): Promise<void> {
  for (const [type, def] of registry) {
    if (def.everyMs && (!types || types.includes(type))) await enqueue(db, { id: `job_recurring_${type}`, type, maxAttempts: 3 });
  }
}

export interface WorkerOptions {
  concurrency?: number;
  leaseMs?: number;
  pollMs?: number;
  /** Only these job types (default: all registered). */
  types?: string[];
}

/** Claims and runs jobs until stopped. `serve` runs one in-process; `worker` runs one alone. */
export class Worker {
  readonly id = `${hostname()}:${process.pid}:${newId('wrk').slice(4)}`;
  private running = false;
  private readonly inflight = new Set<Promise<void>>();
  private readonly shutdown = new AbortController();
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private readonly opts: Required<Omit<WorkerOptions, 'types'>> & { types?: string[] };

  constructor(private readonly deps: Deps, opts: WorkerOptions = {}) {
    this.opts = { concurrency: opts.concurrency ?? 4, leaseMs: opts.leaseMs ?? 30_000, pollMs: opts.pollMs ?? 500, types: opts.types };
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await ensureRecurringJobs(this.deps.db.kysely, this.opts.types);
    // A job enqueued (or a slot freed) while the loop is busy claiming must not wait for the next poll.
    let woken = false;
    const onJob = () => { woken = true; this.wake?.(); };
    wakeups.on('job', onJob);
    this.loop = (async () => {
      while (this.running) {
        woken = false;
        let claimed: ClaimedJob | null = null;
        if (this.inflight.size < this.opts.concurrency) {
          try {
            claimed = await claimJob(this.deps, this.id, this.opts.leaseMs, this.opts.types);
          } catch (err) {
            this.deps.log.error({ err }, 'job claim failed');
          }
        }
        if (claimed) {
          const p = runClaimed(this.deps, claimed, this.id, this.opts.leaseMs, this.shutdown.signal)
            .catch((err) => this.deps.log.error({ err, jobId: claimed!.id }, 'job bookkeeping failed'))
            .finally(() => { this.inflight.delete(p); onJob(); });
          this.inflight.add(p);
          continue;
        }
        if (woken) continue;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.opts.pollMs);
          this.wake = () => { clearTimeout(t); resolve(); };
        });
        this.wake = null;
      }
      wakeups.off('job', onJob);
    })();
  }

  /** Stops claiming; waits up to `graceMs` for running jobs, then aborts and releases the rest. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake?.();
    await this.loop;
    const all = Promise.all([...this.inflight]);
    const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), graceMs).unref())]);
    if (timedOut) {
      this.shutdown.abort(new Error('worker shutting down'));
      await all;
    }
  }
}

/**
 * Runs due jobs one at a time until none is due; returns how many ran. For tests and one-shot
 * commands: the same claim/run/record path as the Worker.
 */
export async function runUntilIdle(deps: Deps, opts: { types?: string[]; ids?: string[]; max?: number; leaseMs?: number } = {}): Promise<number> {
  const workerId = `idle:${process.pid}:${newId('wrk').slice(4)}`;
  const signal = new AbortController().signal;
  let n = 0;
  for (;;) {
    if (opts.max !== undefined && n >= opts.max) return n;
    const job = await claimJob(deps, workerId, opts.leaseMs ?? 30_000, opts.types, opts.ids);
    if (!job) return n;
    await runClaimed(deps, job, workerId, opts.leaseMs ?? 30_000, signal);
    n++;
  }
}
