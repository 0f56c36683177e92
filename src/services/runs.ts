import type { RunStatus } from '../../db/schema/runtime.js';
import type { Ctx } from '../context.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { paginate, type PageInput } from '../pagination.js';
import { recordAudit } from './audit.js';
import {
  RunStateError, TERMINAL_STATUSES, cancelRun as cancelRunNow, runBus, decideApproval, replayRun as replayRunNow, type RunRecord, type StepRecord,
} from '../engine/runs.js';

/** Runs and their steps, as the API shows them (the execution itself is src/engine/runs.ts). */

const RUN_COLUMNS = [
  'id', 'agent_id', 'project_id', 'kind', 'trigger', 'status', 'input', 'output', 'error', 'error_code', 'policy',
  'parent_run_id', 'replay_from_seq', 'steps_count', 'tokens_in', 'tokens_out', 'cost', 'cancel_requested', 'created_by',
  'created_at', 'started_at', 'finished_at', 'updated_at',
] as const;

type RunCols = Pick<RunRecord, (typeof RUN_COLUMNS)[number]>;

const parse = (text: string | null): unknown => {
  if (text === null) return null;
  try { return JSON.parse(text); } catch { return text; }
};

export function presentRun(r: RunCols) {
  return {
    id: r.id, agent_id: r.agent_id, project_id: r.project_id, kind: r.kind, trigger: r.trigger, status: r.status as RunStatus,
    input: parse(r.input), output: parse(r.output), error: r.error, error_code: r.error_code,
    policy: (parse(r.policy) ?? {}) as Record<string, unknown>,
    parent_run_id: r.parent_run_id, replay_from_seq: r.replay_from_seq,
    steps_count: Number(r.steps_count), tokens_in: Number(r.tokens_in), tokens_out: Number(r.tokens_out), cost: Number(r.cost),
    cancel_requested: Number(r.cancel_requested) === 1, created_by: r.created_by,
    created_at: r.created_at, started_at: r.started_at, finished_at: r.finished_at, updated_at: r.updated_at,
    duration_ms: r.started_at && r.finished_at ? Math.max(0, Date.parse(r.finished_at) - Date.parse(r.started_at)) : null,
  };
}
export type RunView = ReturnType<typeof presentRun>;

type StepStatus = 'running' | 'succeeded' | 'failed' | 'awaiting_approval' | 'rejected' | 'cancelled';

const STEP_COLUMNS = [
  'id', 'run_id', 'seq', 'type', 'name', 'status', 'input', 'output', 'error', 'provider_id', 'model', 'tokens_in', 'tokens_out',
  'cost', 'latency_ms', 'attempt', 'decision', 'decided_by', 'decided_at', 'decision_comment', 'reused', 'created_at', 'started_at', 'finished_at',
] as const;
type StepCols = Pick<StepRecord, (typeof STEP_COLUMNS)[number]>;

export function presentStep(s: StepCols) {
  return {
    id: s.id, run_id: s.run_id, seq: s.seq, type: s.type, name: s.name, status: s.status as StepStatus,
    input: parse(s.input), output: parse(s.output), error: s.error, provider_id: s.provider_id, model: s.model,
    tokens_in: Number(s.tokens_in), tokens_out: Number(s.tokens_out), cost: Number(s.cost), latency_ms: s.latency_ms, attempt: Number(s.attempt),
    decision: s.decision as 'approved' | 'rejected' | null, decided_by: s.decided_by, decided_at: s.decided_at, decision_comment: s.decision_comment,
    reused: Number(s.reused) === 1, created_at: s.created_at, started_at: s.started_at, finished_at: s.finished_at,
  };
}

export interface RunFilters {
  agent_id?: string;
  status?: string;
  kind?: string;
  created_after?: string;
  created_before?: string;
}

export function listRuns(ctx: Ctx, input: PageInput & RunFilters) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('runs').select(RUN_COLUMNS).where('organization_id', '=', org);
  if (input.agent_id) query = query.where('agent_id', '=', input.agent_id);
  if (input.status) query = query.where('status', '=', input.status);
  if (input.kind) query = query.where('kind', '=', input.kind);
  if (input.created_after) query = query.where('created_at', '>=', new Date(input.created_after).toISOString());
  if (input.created_before) query = query.where('created_at', '<', new Date(input.created_before).toISOString());
  const countKey = JSON.stringify([input.agent_id, input.status, input.kind, input.created_after, input.created_before]);
  return paginate(ctx, { query, table: 'runs', scope: org, input, countKey }, presentRun);
}

async function loadOwnRun(ctx: Ctx, id: string): Promise<RunRecord> {
  const row = await ctx.deps.db.kysely.selectFrom('runs').selectAll()
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Run');
  return row;
}

/** 404 unless the run exists in the actor's organization (checked before a body is validated). */
export async function assertRunExists(ctx: Ctx, id: unknown): Promise<void> {
  if (typeof id !== 'string' || id.length === 0 || id.length > 64) throw notFound('Run');
  await loadOwnRun(ctx, id);
}

export async function getRun(ctx: Ctx, id: string): Promise<RunView> {
  return presentRun(await loadOwnRun(ctx, id));
}

export async function listRunSteps(ctx: Ctx, id: string, input: PageInput) {
  const run = await loadOwnRun(ctx, id);
  const query = ctx.deps.db.kysely.selectFrom('run_steps').select(STEP_COLUMNS).where('run_id', '=', run.id);
  return paginate(ctx, {
    query, table: 'run_steps', scope: run.id, input, sort: { column: 'seq', direction: 'asc' },
    count: async () => Number((await ctx.deps.db.kysely.selectFrom('run_steps').select((eb) => eb.fn.countAll().as('n')).where('run_id', '=', run.id).executeTakeFirst())?.n ?? 0),
  }, presentStep);
}

const stateError = (err: unknown): never => {
  if (err instanceof RunStateError) throw conflict(err.message);
  throw err;
};

/**
 * Answers the run as the cancel left it: cancelled, or still running with `cancel_requested`. Not
 * read back afterwards, since a worker may already have stopped the run by then.
 */
export async function cancelRun(ctx: Ctx, id: string): Promise<RunView> {
  await loadOwnRun(ctx, id);
  return presentRun(await cancelRunNow(ctx.deps, id).catch(stateError));
}

export interface DecisionInput { step_id?: string; comment?: string }

/** Approve or reject the pending approval step (the one given, or the first pending); audited with the decision. */
export async function decideRun(ctx: Ctx, id: string, decision: 'approved' | 'rejected', input: DecisionInput): Promise<RunView> {
  const run = await loadOwnRun(ctx, id);
  if (input.step_id) {
    const step = await ctx.deps.db.kysely.selectFrom('run_steps').select(['id', 'type']).where('id', '=', input.step_id).where('run_id', '=', run.id).executeTakeFirst();
    if (!step) throw badRequest({ step_id: 'No such step in this run' });
    if (step.type !== 'approval') throw badRequest({ step_id: 'Not an approval step' });
  }
  const actor = ctx.actor!;
  const decidedBy = actor.userId ?? `api_key:${actor.id}`;
  const { step } = await decideApproval(ctx.deps, run.id, decision, { stepId: input.step_id ?? null, comment: input.comment ?? null, decidedBy }).catch(stateError);
  await recordAudit(ctx, {
    action: decision === 'approved' ? 'runs.approve' : 'runs.reject', resourceType: 'run', resourceId: run.id,
    metadata: { step_id: step.id, seq: step.seq, name: step.name, decision, comment: input.comment ?? null },
  });
  return getRun(ctx, id);
}

/** A new run from step `from_step` of a finished run, reusing the results before it. */
export async function replayRun(ctx: Ctx, id: string, fromStep: number): Promise<RunView> {
  const run = await loadOwnRun(ctx, id);
  if (!TERMINAL_STATUSES.has(run.status)) throw conflict(`Only a finished run can be replayed; this one is ${run.status}`);
  const steps = await ctx.deps.db.kysely.selectFrom('run_steps').select(['seq', 'status']).where('run_id', '=', run.id).orderBy('seq', 'asc').execute();
  const last = steps.length ? steps[steps.length - 1].seq : 0;
  if (fromStep < 0 || fromStep > last) throw badRequest({ from_step: `Out of range: this run's steps are 0 to ${last}` });
  const notReusable = steps.find((s) => s.seq < fromStep && s.status !== 'succeeded');
  if (notReusable) throw badRequest({ from_step: `Step ${notReusable.seq} did not succeed (${notReusable.status}): replay from it or an earlier step` });
  return presentRun(await replayRunNow(ctx.deps, run, fromStep, ctx.actor!.userId ?? ctx.actor!.id));
}

export interface RunEvent { id: number; type: string; data: unknown; created_at: string }

const STREAM_BATCH = 500;

/**
 * The run's events after `after` (a seq), then the new ones as they are written, until the run's
 * terminal status event (or `signal`). Wakes on the in-process notification when this process
 * writes the events, and polls the table (`pollMs`) for writers in other processes. The caller
 * has checked that the run belongs to the actor's organization.
 */
export async function* runEventStream(ctx: Ctx, runId: string, after: number, signal?: AbortSignal, pollMs = 500): AsyncGenerator<RunEvent> {
  const db = ctx.deps.db.kysely;
  let last = Math.max(0, Math.floor(after));
  const state = { woken: false };
  let wake: (() => void) | null = null;
  const onEvent = () => { state.woken = true; wake?.(); };
  const onAbort = () => wake?.();
  runBus.on(`event:${runId}`, onEvent);
  signal?.addEventListener('abort', onAbort);
  try {
    while (!signal?.aborted) {
      state.woken = false;
      const rows = await db.selectFrom('run_events').select(['seq', 'type', 'data', 'created_at'])
        .where('run_id', '=', runId).where('seq', '>', last).orderBy('seq', 'asc').limit(STREAM_BATCH).execute();
      let finished = false;
      for (const r of rows) {
        last = r.seq;
        const data = parseEventData(r.data);
        yield { id: r.seq, type: r.type, data, created_at: r.created_at };
        if (r.type === 'status' && TERMINAL_STATUSES.has(String((data as { status?: unknown })?.status))) finished = true;
      }
      if (finished) return;
      if (rows.length === STREAM_BATCH) continue;
      if (rows.length === 0) {
        const run = await db.selectFrom('runs').select('status').where('id', '=', runId).executeTakeFirst();
        if (!run) return;
        if (TERMINAL_STATUSES.has(run.status)) {
          // Finished before we looked (the terminal event may have been read on an earlier page).
          const more = await db.selectFrom('run_events').select('seq').where('run_id', '=', runId).where('seq', '>', last).executeTakeFirst();
          if (!more) return;
          continue;
        }
      }
      if (state.woken) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, pollMs);
        function done() { clearTimeout(t); wake = null; resolve(); }
        wake = done;
      });
    }
  } finally {
    runBus.off(`event:${runId}`, onEvent);
    signal?.removeEventListener('abort', onAbort);
  }
}

function parseEventData(text: string): unknown {
  try { return JSON.parse(text); } catch { return text; }
}
