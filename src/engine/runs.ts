import { EventEmitter } from 'node:events';
import { sql, type Kysely, type Selectable, type Updateable, type UpdateObject } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { RunsTable, RunStatus, RunStepsTable } from '../../db/schema/runtime.js';
import type { Deps } from '../context.js';
import { prepared, type Db } from '../db.js';
import { newId, nowIso } from '../ids.js';
import { backoffMs, defineJob, enqueue, JOB_COMPLETED, type ClaimHook } from './queue.js';

/**
 * Durable runs and steps.
 *
 * A run of a kind (registered with `defineRunKind`) executes as a `runs.execute` job of the queue.
 * Its body is re-executed from the top every time the job runs (after a crash, after an approval):
 * `rc.step` #n returns the recorded output when step #n already succeeded, so a finished step
 * (an LLM call, a tool call) never runs — and is never paid — twice. Each step's outcome is
 * recorded atomically with the run's totals and a `step` run event; every status change writes a
 * `status` run event; LLM token deltas are coalesced into `token` run events. Run events carry a
 * per-run sequence number and are what `GET /api/v1/runs/{id}/stream` replays and follows.
 *
 * Status machine: queued → running → (awaiting_approval ⇄ queued → running) → succeeded | failed |
 * cancelled, and `waiting` while the run's job waits for a retry after an infrastructure error.
 */

// ---------------------------------------------------------------------------------------------
// Types

export type RunRecord = Selectable<RunsTable>;
export type StepRecord = Selectable<RunStepsTable>;

/** The parts of the execution policy the runtime itself reads (the rest is the body's business). */
export interface RunPolicy {
  timeout_seconds?: number;
  retry?: { max_attempts?: number; backoff_ms?: number };
  [key: string]: unknown;
}

/** A run with its JSON columns parsed. */
export type RunRow = Omit<RunRecord, 'input' | 'policy' | 'output'> & { input: unknown; policy: RunPolicy; output: unknown };

export interface StartRunInput {
  organizationId: string;
  agentId: string | null;
  projectId?: string | null;
  kind: string;
  trigger: string;
  input: unknown;
  policy: object;
  createdBy?: string | null;
  parentRunId?: string | null;
  replayFromSeq?: number | null;
}

export interface StepResult<T> {
  output: T;
  usage?: { input_tokens: number; output_tokens: number };
  cost?: number;
  model?: string | null;
  providerId?: string | null;
}

export interface StepHelpers {
  /** 1 for the first try; after a crash, one more than the attempt that was in flight. */
  attempt: number;
  /** Aborted when the run is cancelled, times out, or its worker shuts down. */
  signal: AbortSignal;
  /** Streams an LLM text delta to the run's listeners (`token` events, coalesced). */
  emitToken(delta: string): void;
}

export interface RunTotals { steps: number; cost: number; tokens_in: number; tokens_out: number }

export interface RunContext {
  deps: Deps;
  run: RunRow;
  signal: AbortSignal;
  /**
   * Durable step #n (n = call order in the body): returns the recorded output if it already
   * succeeded, else runs `fn` (retried in-process per `policy.retry` for errors whose `retryable`
   * is true) and records type, name, input, output, error, tokens, cost, latency, attempt, model.
   * The output is returned as recorded (JSON round trip), the same on the first run and on resume.
   */
  step<T>(type: string, name: string, input: unknown, fn: (s: StepHelpers) => Promise<StepResult<T>>): Promise<T>;
  /** Parks the run in awaiting_approval until approve/reject; returns when approved; throws RunRejected when rejected. */
  approval(name: string, details: unknown): Promise<void>;
  /** A `log` run event (not memoized: a re-executed body logs again). */
  log(message: string, data?: object): Promise<void>;
  /** Totals so far: the recorded steps the body has reached (memoized ones included, later ones not). */
  totals(): RunTotals;
}

export type RunBody = (rc: RunContext) => Promise<unknown>;

/** Thrown by a body to fail its run with a machine-readable `error_code`. */
export class RunFailure extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'RunFailure';
  }
}

/** Thrown by `rc.approval` when a person rejected it; uncaught, the run fails with error_code `rejected`. */
export class RunRejected extends Error {
  readonly code = 'rejected';
  constructor(readonly stepSeq: number, readonly comment: string | null) {
    super(comment ? `Rejected: ${comment}` : 'Rejected');
    this.name = 'RunRejected';
  }
}

/** A step that failed for good (non-retryable error, or its last attempt). */
export class StepFailed extends Error {
  constructor(readonly code: string, message: string, readonly seq: number) {
    super(message);
    this.name = 'StepFailed';
  }
}

/** What the signal of a cancelled run is aborted with (fn sees it as `signal.reason`). */
export class RunCancelled extends Error {
  readonly code = 'cancelled';
  constructor() { super('The run was cancelled'); this.name = 'RunCancelled'; }
}

/** What the signal of a run past its timeout is aborted with. */
export class RunTimedOut extends Error {
  readonly code = 'timeout';
  constructor(seconds: number) { super(`The run exceeded its timeout of ${seconds} s`); this.name = 'RunTimedOut'; }
}

/** The body parked the run (approval): the job ends without failing. */
class Parked extends Error {}

/** A bookkeeping write failed (the database, not the step): the job is retried. */
class InfraError extends Error {
  constructor(readonly inner: unknown) { super((inner as Error)?.message ?? String(inner)); }
}

export const TERMINAL_STATUSES: ReadonlySet<string> = new Set<RunStatus>(['succeeded', 'failed', 'cancelled']);
export const RUN_JOB_TYPE = 'runs.execute';
/** Runs of one agent executing at once (others wait in the queue). */
export const RUNS_PER_AGENT = Number(process.env.RUNS_PER_AGENT ?? 4);

const DEFAULT_TIMEOUT_SECONDS = 300;
const DEFAULT_MAX_ATTEMPTS = 3;
const DEFAULT_BACKOFF_MS = 500;

// ---------------------------------------------------------------------------------------------
// Registry, in-process notifications

const kinds = new Map<string, RunBody>();

/** Registers the body of a run kind (once per process, at import time). */
export function defineRunKind(kind: string, body: RunBody): void {
  kinds.set(kind, body);
}

export function hasRunKind(kind: string): boolean {
  return kinds.has(kind);
}

/**
 * In-process wake-ups: `event:<runId>` after a run event is committed by this process,
 * `cancel:<runId>` when a cancel is requested here. Other processes are seen by polling.
 */
export const runBus = new EventEmitter();
runBus.setMaxListeners(0);

// ---------------------------------------------------------------------------------------------
// Rows

const parse = (text: string | null | undefined): unknown => {
  if (text === null || text === undefined) return null;
  try { return JSON.parse(text); } catch { return text; }
};
const json = (v: unknown): string => JSON.stringify(v === undefined ? null : v);

export function parseRun(r: RunRecord): RunRow {
  const policy = parse(r.policy);
  return { ...r, input: parse(r.input), output: parse(r.output), policy: (policy && typeof policy === 'object' ? policy : {}) as RunPolicy };
}

export async function loadRun(db: Kysely<Database>, id: string): Promise<RunRecord | undefined> {
  return db.selectFrom('runs').selectAll().where('id', '=', id).executeTakeFirst();
}

type Tx = Kysely<Database>;

/**
 * Appends a run event; the caller has locked the run's row in this transaction (an UPDATE of it
 * first), so concurrent writers of one run take their sequence numbers one after the other.
 */
async function appendEvent(db: Db, trx: Tx, run: { id: string; organization_id: string }, type: string, data: unknown): Promise<void> {
  await q.event.in(db, trx, [run.id, run.organization_id, type, json(data), nowIso(), run.id]);
}

/**
 * The statements on every step of every run, compiled once (see `prepared`); each comment gives
 * the parameters, in order.
 */
const q = {
  // run id, organization, type, data, created_at, run id
  event: prepared(() => sql`insert into run_events (run_id, seq, organization_id, type, data, created_at)
    select ${''}, coalesce(max(seq), 0) + 1, ${''}, ${''}, ${''}, ${''} from run_events where run_id = ${''}`),
  // updated_at, run id
  runTouched: prepared((k) => k.updateTable('runs').set({ updated_at: '' }).where('id', '=', '')),
  // updated_at, run id
  runStepAdded: prepared((k) => k.updateTable('runs').set({ steps_count: sql`steps_count + 1`, updated_at: '' }).where('id', '=', '')),
  // tokens in, tokens out, cost, updated_at, run id
  runSpent: prepared((k) => k.updateTable('runs')
    .set({ tokens_in: sql`tokens_in + ${0}`, tokens_out: sql`tokens_out + ${0}`, cost: sql`cost + ${0}`, updated_at: '' }).where('id', '=', '')),
  // the values of the shape's columns, in its order
  stepInsert: prepared.byShape((k, columns: string) => k.insertInto('run_steps').values(placeholders(columns) as never)),
  // the values of the shape's columns, in its order, then the step id
  stepUpdate: prepared.byShape((k, columns: string) => k.updateTable('run_steps').set(placeholders(columns)).where('id', '=', '')),
};

/** `{column: null, …}` for a comma-separated list of columns: the placeholders of a shape. */
function placeholders(columns: string): Record<string, null> {
  return Object.fromEntries(columns.split(',').map((c) => [c, null]));
}

const notify = (runId: string) => runBus.emit(`event:${runId}`);

/** transitionRun's writes, in the caller's transaction; `unlessCancelling` leaves a run whose cancel was requested as it is. */
async function transitionIn(
  db: Db, trx: Tx, runId: string, from: readonly string[], status: RunStatus, set: UpdateObject<Database, 'runs'>, opts: { unlessCancelling?: boolean } = {},
): Promise<RunRecord | null> {
  let update = trx.updateTable('runs').set({ ...set, status, updated_at: nowIso() }).where('id', '=', runId).where('status', 'in', [...from]);
  if (opts.unlessCancelling) update = update.where('cancel_requested', '=', 0);
  const updated = await update.returningAll().executeTakeFirst();
  if (!updated) return null;
  await appendEvent(db, trx, updated, 'status', {
    status, ...(updated.error ? { error: updated.error } : {}), ...(updated.error_code ? { error_code: updated.error_code } : {}),
    ...(TERMINAL_STATUSES.has(status) ? { output: parse(updated.output) } : {}),
  });
  return updated;
}

/**
 * Moves a run from one of `from` to a new status (with `set`), writing the `status` event, in
 * one transaction (`more` adds writes to it). Returns the updated row, or null when the run was
 * not in one of `from`.
 */
export async function transitionRun(
  deps: Pick<Deps, 'db'> & Partial<Pick<Deps, 'counts'>>, runId: string, from: readonly string[], status: RunStatus, set: Updateable<RunsTable> = {},
  more?: (trx: Tx, run: RunRecord) => Promise<void>,
): Promise<RunRecord | null> {
  const row = await deps.db.kysely.transaction().execute(async (trx) => {
    const updated = await transitionIn(deps.db, trx, runId, from, status, set);
    if (updated && more) await more(trx, updated);
    return updated;
  });
  if (row) {
    deps.counts?.invalidate(row.organization_id, 'runs');
    notify(runId);
  }
  return row;
}

/** Appends an event to a run (locking its row first). */
export async function appendRunEvent(deps: Pick<Deps, 'db'>, run: { id: string; organization_id: string }, type: string, data: unknown): Promise<void> {
  await deps.db.kysely.transaction().execute(async (trx) => {
    await trx.updateTable('runs').set({ updated_at: nowIso() }).where('id', '=', run.id).execute();
    await appendEvent(deps.db, trx, run, type, data);
  });
  notify(run.id);
}

// ---------------------------------------------------------------------------------------------
// Starting runs

function runValues(input: StartRunInput, status: RunStatus, id: string) {
  const now = nowIso();
  return {
    id, organization_id: input.organizationId, project_id: input.projectId ?? null, agent_id: input.agentId,
    kind: input.kind, trigger: input.trigger, status, input: json(input.input), output: null, error: null, error_code: null,
    policy: json(input.policy ?? {}), parent_run_id: input.parentRunId ?? null, replay_from_seq: input.replayFromSeq ?? null,
    job_id: newId('job'), created_by: input.createdBy ?? null, created_at: now, started_at: null, finished_at: null, updated_at: now,
  };
}

/**
 * Enqueues the run's job. A run inserted with its `job_id` already set (a new run) gets the job
 * of that id; otherwise the run's `job_id` is pointed at the new job.
 */
async function enqueueRunJob(trx: Tx, run: { id: string; organization_id: string; agent_id: string | null; job_id?: string | null }, runAt?: Date): Promise<string> {
  const jobId = await enqueue(trx, {
    ...(run.job_id ? { id: run.job_id } : {}),
    type: RUN_JOB_TYPE, payload: { run_id: run.id }, organizationId: run.organization_id, maxAttempts: 10,
    ...(run.agent_id ? { concurrencyKey: `agent:${run.agent_id}`, concurrencyLimit: RUNS_PER_AGENT } : {}),
    ...(runAt ? { runAt } : {}),
  });
  if (!run.job_id) await trx.updateTable('runs').set({ job_id: jobId }).where('id', '=', run.id).execute();
  return jobId;
}

/**
 * Inserts a run (queued) and enqueues its job, in one transaction; `more` adds writes to it
 * (replay copies its steps there). Returns the run row.
 */
export async function startRun(deps: Deps, input: StartRunInput, more?: (trx: Tx, run: RunRecord) => Promise<void>): Promise<RunRecord> {
  const id = newId('run');
  // The row as inserted (no read-back unless `more` may have changed it).
  const row: RunRecord = {
    ...runValues(input, 'queued', id), steps_count: 0, tokens_in: 0, tokens_out: 0, cost: 0, cancel_requested: 0,
  };
  await deps.db.kysely.transaction().execute(async (trx) => {
    await trx.insertInto('runs').values(row).execute();
    await appendEvent(deps.db, trx, row, 'status', { status: 'queued' });
    if (more) await more(trx, row);
    await enqueueRunJob(trx, row);
  });
  deps.counts.invalidate(input.organizationId, 'runs');
  notify(id);
  return more ? (await loadRun(deps.db.kysely, id))! : row;
}

/** Enqueues the run's job again (after an approval or a rejection). */
export async function resumeRunJob(trx: Tx, run: { id: string; organization_id: string; agent_id: string | null }): Promise<string> {
  return enqueueRunJob(trx, { id: run.id, organization_id: run.organization_id, agent_id: run.agent_id });
}

/**
 * Runs a run to completion inside the current process (synchronous inference, lead scoring):
 * the same recording, no wait for a worker. A safety job is enqueued for after the timeout, so a
 * run whose process died is still finished (failed with `timeout`). A body that parks on an
 * approval returns with the run awaiting_approval (approving it resumes it in a worker).
 * Failures do not throw: the returned run has status `failed` and its error/error_code.
 */
export async function runInline(deps: Deps, input: StartRunInput): Promise<{ run: RunRow; output: unknown }> {
  const id = newId('run');
  const timeout = Number((input.policy as RunPolicy)?.timeout_seconds ?? DEFAULT_TIMEOUT_SECONDS);
  await deps.db.kysely.transaction().execute(async (trx) => {
    const values = runValues(input, 'queued', id);
    await trx.insertInto('runs').values(values).execute();
    await appendEvent(deps.db, trx, values, 'status', { status: 'queued' });
    await enqueueRunJob(trx, values, new Date(Date.now() + (timeout + 30) * 1000));
  });
  deps.counts.invalidate(input.organizationId, 'runs');
  notify(id);
  await executeRun(deps, id, new AbortController().signal, { lastAttempt: true });
  const run = parseRun((await loadRun(deps.db.kysely, id))!);
  return { run, output: run.status === 'succeeded' ? run.output : undefined };
}

// ---------------------------------------------------------------------------------------------
// Executing

/**
 * With its job's claim, in the claim's transaction, a queued or waiting run moves to `running`
 * (executeRun would do it first thing otherwise, in a commit of its own). A run whose cancel was
 * requested, or that is in another status, is left to executeRun.
 */
const startWithClaim: ClaimHook = async (deps, trx, job) => {
  const runId = job.payload.run_id;
  if (typeof runId !== 'string' || job.attempts > job.max_attempts) return;
  const moved = await transitionIn(deps.db, trx, runId, ['queued', 'waiting'], 'running',
    { started_at: sql<string>`coalesce(started_at, ${nowIso()})` }, { unlessCancelling: true });
  if (moved) {
    return () => {
      deps.counts?.invalidate(moved.organization_id, 'runs');
      notify(runId);
    };
  }
};

defineJob(RUN_JOB_TYPE, async (ctx) => {
  const { deps, job, signal } = ctx;
  const runId = job.payload.run_id;
  if (typeof runId !== 'string') throw new Error('runs.execute without run_id');
  if (job.attempts > job.max_attempts) {
    // Claimed again after its last attempt: its workers keep dying (a lease expired each time).
    await failRun(deps, runId, ['queued', 'waiting', 'running'], 'worker_lost', `The run's worker stopped ${job.attempts - 1} times without finishing it`);
    return { status: 'failed' };
  }
  const out = await executeRun(deps, runId, signal, { lastAttempt: job.attempts >= job.max_attempts, completeJob: ctx.completeIn });
  return out.jobCompleted ? JOB_COMPLETED : { status: out.status };
}, { onClaim: startWithClaim });

/** Coalesces token deltas into `token` events (per ~75 ms or 256 characters), in order. */
class TokenBuffer {
  private text = '';
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  constructor(private readonly write: (delta: string) => Promise<void>) {}
  push(delta: string): void {
    if (!delta) return;
    this.text += delta;
    if (this.text.length >= 256) this.flushSoon(0);
    else if (!this.timer) this.flushSoon(75);
  }
  private flushSoon(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => { void this.flush(); }, ms);
  }
  flush(): Promise<void> {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.text) {
      const delta = this.text;
      this.text = '';
      this.chain = this.chain.then(() => this.write(delta)).catch(() => undefined);
    }
    return this.chain;
  }
}

const sleep = (ms: number, signal: AbortSignal) => new Promise<void>((resolve) => {
  if (signal.aborted) return resolve();
  const t = setTimeout(done, ms);
  function done() { clearTimeout(t); signal.removeEventListener('abort', done); resolve(); }
  signal.addEventListener('abort', done);
});

const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err)) || 'error';
const errorCode = (err: unknown, fallback: string) => {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && code ? code : fallback;
};

class Execution implements RunContext {
  readonly run: RunRow;
  readonly signal: AbortSignal;
  private next = 0;
  private readonly steps = new Map<number, StepRecord>();

  constructor(
    readonly deps: Deps, run: RunRecord, steps: StepRecord[], private readonly controller: AbortController,
    private readonly deadline: number, private readonly timeoutSeconds: number,
  ) {
    this.run = parseRun(run);
    this.signal = controller.signal;
    for (const s of steps) this.steps.set(s.seq, s);
  }

  private db() { return this.deps.db.kysely; }

  private async infra<T>(fn: () => Promise<T>): Promise<T> {
    try { return await fn(); } catch (err) { throw new InfraError(err); }
  }

  /** Throws the abort reason at a step boundary (the deadline is checked here too, not only by the timer). */
  private checkAbort(): void {
    if (!this.signal.aborted && Date.now() >= this.deadline) this.controller.abort(new RunTimedOut(this.timeoutSeconds));
    if (this.signal.aborted) throw this.signal.reason instanceof Error ? this.signal.reason : new Error(String(this.signal.reason));
  }

  private claimSeq(type: string, name: string): { seq: number; prior: StepRecord | undefined } {
    const seq = this.next++;
    this.checkAbort();
    const prior = this.steps.get(seq);
    if (prior && (prior.type !== type || prior.name !== name)) {
      throw new RunFailure('non_deterministic', `The run's body is not deterministic: step #${seq} was recorded as ${prior.type} "${prior.name}" and is now ${type} "${name}"`);
    }
    return { seq, prior };
  }

  /**
   * Inserts step #seq, or updates it with the columns of `set` that change (a column left as it
   * is keeps its index entries untouched). Returns the row as written, without reading it back:
   * steps are only ever set to values, never to SQL expressions.
   */
  private async writeStep(trx: Tx, seq: number, prior: StepRecord | undefined, set: Updateable<RunStepsTable>, type: string, name: string): Promise<StepRecord> {
    let row: StepRecord;
    if (prior) {
      const changed = Object.entries(set).filter(([k, v]) => prior[k as keyof StepRecord] !== v);
      if (changed.length) {
        await q.stepUpdate(this.deps.db, trx, changed.map(([k]) => k).join(','), [...changed.map(([, v]) => v), prior.id]);
      }
      row = { ...prior, ...(Object.fromEntries(changed) as Partial<StepRecord>) };
    } else {
      const now = nowIso();
      const values = {
        id: newId('stp'), run_id: this.run.id, organization_id: this.run.organization_id, project_id: this.run.project_id,
        agent_id: this.run.agent_id, seq, type, name, status: 'running', input: null, output: null, error: null,
        provider_id: null, model: null, latency_ms: null, decision: null, decided_by: null, decided_at: null,
        decision_comment: null, created_at: now, started_at: now, finished_at: null, ...set,
      };
      await q.stepInsert(this.deps.db, trx, Object.keys(values).join(','), Object.values(values));
      row = { tokens_in: 0, tokens_out: 0, cost: 0, attempt: 1, reused: 0, ...(values as Partial<StepRecord>) } as StepRecord;
    }
    this.steps.set(seq, row);
    return row;
  }

  private stepEvent(s: StepRecord) {
    return {
      step_id: s.id, seq: s.seq, type: s.type, name: s.name, status: s.status, attempt: s.attempt,
      ...(s.status === 'succeeded' ? { output: parse(s.output), tokens_in: s.tokens_in, tokens_out: s.tokens_out, cost: s.cost, latency_ms: s.latency_ms, model: s.model } : {}),
      ...(s.error ? { error: s.error } : {}),
    };
  }

  /**
   * Writes step #seq, the run's row (its steps_count for a new step, its totals with `spent`) and
   * a step event in one transaction. The run's row is updated first: on PostgreSQL that locks it,
   * so that concurrent writers of one run take their event numbers one after the other.
   */
  private async recordStep(
    seq: number, prior: StepRecord | undefined, set: Updateable<RunStepsTable>, type: string, name: string,
    spent?: { tokensIn: number; tokensOut: number; cost: number },
  ): Promise<StepRecord> {
    const db = this.deps.db;
    const row = await this.infra(() => this.db().transaction().execute(async (trx) => {
      const now = nowIso();
      if (!prior) await q.runStepAdded.in(db, trx, [now, this.run.id]);
      if (spent) await q.runSpent.in(db, trx, [spent.tokensIn, spent.tokensOut, spent.cost, now, this.run.id]);
      else if (prior) await q.runTouched.in(db, trx, [now, this.run.id]);
      const s = await this.writeStep(trx, seq, prior, set, type, name);
      await appendEvent(db, trx, this.run, 'step', this.stepEvent(s));
      return s;
    }));
    notify(this.run.id);
    return row;
  }

  async step<T>(type: string, name: string, input: unknown, fn: (s: StepHelpers) => Promise<StepResult<T>>): Promise<T> {
    const { seq, prior } = this.claimSeq(type, name);
    if (prior?.status === 'succeeded') return parse(prior.output) as T;
    const retry = this.run.policy.retry ?? {};
    let attempt = prior ? prior.attempt + 1 : 1;
    const maxAttempts = Math.max(attempt, Number(retry.max_attempts ?? DEFAULT_MAX_ATTEMPTS));
    const base = Number(retry.backoff_ms ?? DEFAULT_BACKOFF_MS);
    let current = await this.recordStep(seq, prior, {
      status: 'running', attempt, input: json(input), error: null, started_at: nowIso(), finished_at: null,
    }, type, name);
    for (;;) {
      const startedAt = Date.now();
      const tokens = new TokenBuffer((delta) => appendRunEvent(this.deps, this.run, 'token', { seq, delta }));
      try {
        const result = await fn({ attempt, signal: this.signal, emitToken: (d) => tokens.push(d) });
        await tokens.flush();
        const usage = result?.usage ?? { input_tokens: 0, output_tokens: 0 };
        const cost = Number(result?.cost ?? 0) || 0;
        const tokensIn = Math.max(0, Math.round(Number(usage.input_tokens) || 0));
        const tokensOut = Math.max(0, Math.round(Number(usage.output_tokens) || 0));
        const output = json(result?.output);
        // Committed before the body goes on: a step that succeeded never runs again.
        current = await this.recordStep(seq, current, {
          status: 'succeeded', output, error: null, tokens_in: tokensIn, tokens_out: tokensOut, cost,
          latency_ms: Date.now() - startedAt, attempt, model: result?.model ?? null, provider_id: result?.providerId ?? null, finished_at: nowIso(),
        }, type, name, tokensIn || tokensOut || cost ? { tokensIn, tokensOut, cost } : undefined);
        return parse(output) as T;
      } catch (err) {
        await tokens.flush();
        if (err instanceof InfraError) throw err;
        const latency = Date.now() - startedAt;
        if (this.signal.aborted) throw err; // the run's outcome (cancel, timeout, shutdown) decides what the step becomes
        const message = errorMessage(err);
        if ((err as { retryable?: unknown })?.retryable === true && attempt < maxAttempts) {
          current = await this.recordStep(seq, current, { error: message, latency_ms: latency }, type, name);
          await sleep(backoffMs(attempt, base, 30_000), this.signal);
          this.checkAbort();
          attempt++;
          current = await this.recordStep(seq, current, { attempt, status: 'running', started_at: nowIso() }, type, name);
          continue;
        }
        await this.recordStep(seq, current, { status: 'failed', error: message, latency_ms: latency, finished_at: nowIso() }, type, name);
        throw new StepFailed(errorCode(err, 'step_failed'), message, seq);
      }
    }
  }

  async approval(name: string, details: unknown): Promise<void> {
    const { seq, prior } = this.claimSeq('approval', name);
    if (prior?.status === 'succeeded') return;
    if (prior?.status === 'rejected') throw new RunRejected(seq, prior.decision_comment);
    const row = await this.infra(() => this.db().transaction().execute(async (trx) => {
      const parked = await trx.updateTable('runs').set({ status: 'awaiting_approval', ...(prior ? {} : { steps_count: sql`steps_count + 1` }), updated_at: nowIso() })
        .where('id', '=', this.run.id).where('status', '=', 'running').returningAll().executeTakeFirst();
      if (!parked) return null;
      const s = await this.writeStep(trx, seq, prior, {
        status: 'awaiting_approval', input: json(details), started_at: prior?.started_at ?? nowIso(),
      }, 'approval', name);
      await appendEvent(this.deps.db, trx, this.run, 'step', this.stepEvent(s));
      await appendEvent(this.deps.db, trx, this.run, 'status', { status: 'awaiting_approval', step_id: s.id, seq });
      return s;
    }));
    notify(this.run.id);
    if (!row) this.checkAbort();
    throw new Parked('awaiting approval');
  }

  async log(message: string, data?: object): Promise<void> {
    await this.infra(() => appendRunEvent(this.deps, this.run, 'log', { message, ...(data ? { data } : {}) }));
  }

  totals(): RunTotals {
    const t = { steps: 0, cost: 0, tokens_in: 0, tokens_out: 0 };
    for (const s of this.steps.values()) {
      // Only the steps the body has reached in this execution (on resume, later recorded steps are not "so far").
      if (s.seq >= this.next) continue;
      t.steps++;
      t.cost += s.cost;
      t.tokens_in += s.tokens_in;
      t.tokens_out += s.tokens_out;
    }
    return t;
  }

  /** The step in flight when the run stopped (for cancel/timeout bookkeeping). */
  inFlight(): StepRecord | undefined {
    for (const s of this.steps.values()) if (s.status === 'running') return s;
    return undefined;
  }

  async closeInFlight(status: 'cancelled' | 'failed', error: string): Promise<void> {
    const s = this.inFlight();
    if (!s) return;
    await this.recordStep(s.seq, s, { status, error, finished_at: nowIso() }, s.type, s.name);
  }

  controllerAbort(reason: Error): void { this.controller.abort(reason); }
}

const jsonError = (err: unknown) => errorMessage(err).slice(0, 4000);

async function failRun(deps: Deps, runId: string, from: readonly string[], code: string, message: string): Promise<void> {
  await transitionRun(deps, runId, from, 'failed', { error: message.slice(0, 4000), error_code: code, finished_at: nowIso(), cancel_requested: 0 });
}

/**
 * Executes (or resumes) a run: the body of its kind from the top, memoized steps skipped. Returns
 * the run's status at the end of this execution. Throws only for the queue to retry (bookkeeping
 * failures, worker shutdown).
 */
export async function executeRun(
  deps: Deps, runId: string, jobSignal: AbortSignal,
  opts: { lastAttempt: boolean; completeJob?: (trx: Tx, result: unknown) => Promise<void> },
): Promise<{ status: string; jobCompleted?: boolean }> {
  const db = deps.db.kysely;
  let run = await loadRun(db, runId);
  if (!run) return { status: 'missing' };
  if (TERMINAL_STATUSES.has(run.status) || run.status === 'awaiting_approval') return { status: run.status };
  if (run.cancel_requested) {
    await transitionRun(deps, runId, ['queued', 'waiting', 'running'], 'cancelled', { finished_at: nowIso(), cancel_requested: 0 });
    return { status: 'cancelled' };
  }
  if (run.status !== 'running') {
    const moved = await transitionRun(deps, runId, ['queued', 'waiting'], 'running', { started_at: run.started_at ?? nowIso() });
    if (!moved) {
      run = await loadRun(db, runId);
      if (!run || run.status !== 'running') return { status: run?.status ?? 'missing' };
    } else {
      run = moved;
    }
  }
  const body = kinds.get(run.kind);
  if (!body) {
    await failRun(deps, runId, ['running'], 'unknown_kind', `No run kind "${run.kind}" is registered in this process`);
    return { status: 'failed' };
  }

  // A run that has recorded no step yet (a fresh one) has none to read back.
  const steps = Number(run.steps_count) === 0 ? [] : await db.selectFrom('run_steps').selectAll().where('run_id', '=', runId).orderBy('seq', 'asc').execute();
  const policy = parseRun(run).policy;
  const timeoutSeconds = Number(policy.timeout_seconds ?? DEFAULT_TIMEOUT_SECONDS) || DEFAULT_TIMEOUT_SECONDS;
  // The timeout counts from the start, or from the last approval decision (time spent waiting for a person does not count).
  let since = Date.parse(run.started_at ?? run.created_at);
  for (const s of steps) if (s.type === 'approval' && s.decided_at) since = Math.max(since, Date.parse(s.decided_at));
  const remainingMs = since + timeoutSeconds * 1000 - Date.now();

  const controller = new AbortController();
  const exec = new Execution(deps, run, steps, controller, since + timeoutSeconds * 1000, timeoutSeconds);
  if (remainingMs <= 0) {
    const message = new RunTimedOut(timeoutSeconds).message;
    await exec.closeInFlight('failed', message);
    await failRun(deps, runId, ['running'], 'timeout', message);
    return { status: 'failed' };
  }
  const onJobAbort = () => controller.abort(jobSignal.reason instanceof Error ? jobSignal.reason : new Error('worker stopping'));
  if (jobSignal.aborted) onJobAbort();
  jobSignal.addEventListener('abort', onJobAbort);
  const timer = setTimeout(() => controller.abort(new RunTimedOut(timeoutSeconds)), Math.max(0, remainingMs));
  const onCancel = () => controller.abort(new RunCancelled());
  runBus.on(`cancel:${runId}`, onCancel);
  const poll = setInterval(() => {
    void db.selectFrom('runs').select(['cancel_requested', 'status']).where('id', '=', runId).executeTakeFirst()
      .then((r) => { if (r?.cancel_requested || r?.status === 'cancelled') onCancel(); }).catch(() => undefined);
  }, 500);

  let output: unknown;
  let failure: unknown = null;
  try {
    output = await body(exec);
  } catch (err) {
    failure = err;
  } finally {
    clearTimeout(timer);
    clearInterval(poll);
    runBus.off(`cancel:${runId}`, onCancel);
    jobSignal.removeEventListener('abort', onJobAbort);
  }

  if (failure instanceof Parked) return { status: 'awaiting_approval' };
  const reason = controller.signal.aborted ? controller.signal.reason : null;
  if (reason && !(reason instanceof RunCancelled) && !(reason instanceof RunTimedOut)) {
    // The worker is stopping or lost the lease: the job is handed back (or already taken over).
    throw reason;
  }
  if (reason instanceof RunCancelled) {
    await exec.closeInFlight('cancelled', 'The run was cancelled').catch(() => undefined);
    await transitionRun(deps, runId, ['running', 'awaiting_approval', 'queued', 'waiting'], 'cancelled', { finished_at: nowIso(), cancel_requested: 0 });
    return { status: 'cancelled' };
  }
  if (reason instanceof RunTimedOut) {
    await exec.closeInFlight('failed', reason.message).catch(() => undefined);
    await failRun(deps, runId, ['running'], 'timeout', reason.message);
    return { status: 'failed' };
  }
  if (failure instanceof InfraError) {
    if (opts.lastAttempt) {
      await failRun(deps, runId, ['running'], 'internal_error', `The run could not be recorded: ${failure.message}`);
      return { status: 'failed' };
    }
    await transitionRun(deps, runId, ['running'], 'waiting').catch(() => undefined);
    throw failure.inner;
  }
  if (failure) {
    const code = failure instanceof RunFailure || failure instanceof StepFailed || failure instanceof RunRejected ? failure.code : errorCode(failure, 'error');
    await failRun(deps, runId, ['running'], code, jsonError(failure));
    return { status: 'failed' };
  }
  // The job is marked done in the same transaction, when the worker passed the means.
  const done = await transitionRun(deps, runId, ['running'], 'succeeded', { output: json(output), finished_at: nowIso() },
    opts.completeJob ? (trx) => opts.completeJob!(trx, { status: 'succeeded' }) : undefined);
  if (done) return { status: 'succeeded', jobCompleted: !!opts.completeJob };
  return { status: (await loadRun(db, runId))?.status ?? 'missing' };
}

// ---------------------------------------------------------------------------------------------
// Cancel, approve, reject, replay (the service layer checks organizations and actors)

export class RunStateError extends Error {
  constructor(readonly status: string, message: string) { super(message); }
}

/**
 * Cancels a run: queued, waiting or awaiting approval → cancelled at once; running →
 * cancel_requested (the signal aborts and the runner marks it cancelled at the next step
 * boundary). Throws RunStateError when the run has already finished.
 */
export async function cancelRun(deps: Deps, runId: string): Promise<RunRecord> {
  for (let i = 0; i < 3; i++) {
    const now = nowIso();
    const cancelled = await transitionRun(deps, runId, ['queued', 'waiting', 'awaiting_approval'], 'cancelled', { finished_at: now, cancel_requested: 0 }, async (trx) => {
      await trx.updateTable('run_steps').set({ status: 'cancelled', finished_at: now })
        .where('run_id', '=', runId).where('status', 'in', ['awaiting_approval', 'running']).execute();
    });
    if (cancelled) return cancelled;
    const r = await deps.db.kysely.updateTable('runs').set({ cancel_requested: 1, updated_at: nowIso() })
      .where('id', '=', runId).where('status', '=', 'running').returningAll().executeTakeFirst();
    if (r) {
      runBus.emit(`cancel:${runId}`);
      await appendRunEvent(deps, r, 'log', { message: 'Cancel requested: the run stops at its next step boundary' }).catch(() => undefined);
      return r;
    }
    const cur = await loadRun(deps.db.kysely, runId);
    if (!cur) throw new RunStateError('missing', 'No such run');
    if (TERMINAL_STATUSES.has(cur.status)) throw new RunStateError(cur.status, `The run has already finished (${cur.status})`);
  }
  throw new RunStateError('busy', 'The run changed status; try again');
}

export interface Decision { stepId?: string | null; comment?: string | null; decidedBy: string | null }

/**
 * Records a person's decision on the pending approval step and resumes the run (its body then
 * returns from `approval`, or gets RunRejected). Throws RunStateError when the run is not
 * awaiting approval or the step is not pending.
 */
export async function decideApproval(deps: Deps, runId: string, decision: 'approved' | 'rejected', d: Decision): Promise<{ run: RunRecord; step: StepRecord }> {
  const db = deps.db.kysely;
  const pending = await db.selectFrom('run_steps').selectAll().where('run_id', '=', runId).where('status', '=', 'awaiting_approval')
    .$if(!!d.stepId, (q) => q.where('id', '=', d.stepId!)).orderBy('seq', 'asc').executeTakeFirst();
  if (!pending) {
    if (d.stepId) throw new RunStateError('step', 'That step is not awaiting approval');
    throw new RunStateError('run', 'The run is not awaiting approval');
  }
  const now = nowIso();
  let step: StepRecord | undefined;
  const run = await transitionRun(deps, runId, ['awaiting_approval'], 'queued', {}, async (trx, r) => {
    const res = await trx.updateTable('run_steps').set({
      status: decision === 'approved' ? 'succeeded' : 'rejected', decision, decided_by: d.decidedBy, decided_at: now,
      decision_comment: d.comment ?? null, finished_at: now, output: json({ decision, comment: d.comment ?? null }),
    }).where('id', '=', pending.id).where('status', '=', 'awaiting_approval').executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) throw new RunStateError('step', 'That step is not awaiting approval');
    step = (await trx.selectFrom('run_steps').selectAll().where('id', '=', pending.id).executeTakeFirst())!;
    await appendEvent(deps.db, trx, r, 'step', {
      step_id: step.id, seq: step.seq, type: step.type, name: step.name, status: step.status, attempt: step.attempt,
      decision, decided_by: d.decidedBy, comment: d.comment ?? null,
    });
    await resumeRunJob(trx, r);
  });
  if (!run || !step) throw new RunStateError('run', 'The run is not awaiting approval');
  return { run: (await loadRun(db, runId))!, step };
}

/**
 * A new run from step `fromSeq` of a finished run: same kind, input and policy; the steps before
 * `fromSeq` are copied as succeeded with `reused = 1` (memoized, not paid again: their tokens and
 * cost are not counted a second time), then it runs.
 */
export async function replayRun(deps: Deps, source: RunRecord, fromSeq: number, createdBy: string | null): Promise<RunRecord> {
  const steps = await deps.db.kysely.selectFrom('run_steps').selectAll().where('run_id', '=', source.id).where('seq', '<', fromSeq).orderBy('seq', 'asc').execute();
  return startRun(deps, {
    organizationId: source.organization_id, agentId: source.agent_id, projectId: source.project_id, kind: source.kind,
    trigger: 'replay', input: parse(source.input), policy: (parse(source.policy) ?? {}) as object, createdBy,
    parentRunId: source.id, replayFromSeq: fromSeq,
  }, async (trx, run) => {
    const now = nowIso();
    for (const s of steps) {
      await trx.insertInto('run_steps').values({
        ...s, id: newId('stp'), run_id: run.id, status: 'succeeded', reused: 1, tokens_in: 0, tokens_out: 0, cost: 0,
        error: null, created_at: now, attempt: s.attempt,
      }).execute();
    }
    if (steps.length) await trx.updateTable('runs').set({ steps_count: steps.length }).where('id', '=', run.id).execute();
  });
}
