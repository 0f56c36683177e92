import { tracked } from '@trpc/server';
import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput, timestamp } from '../src/schemas.js';
import {
  assertRunExists, cancelRun, decideRun, getRun, listRunSteps, listRuns, replayRun, runEventStream,
} from '../src/services/runs.js';

const STATUSES = ['queued', 'running', 'waiting', 'awaiting_approval', 'succeeded', 'failed', 'cancelled'] as const;

export const runSchema = z.object({
  id: z.string(),
  agent_id: z.string().nullable(),
  project_id: z.string().nullable(),
  kind: z.string().describe('What runs: `agent` (the agent loop), `inference`, `score_lead`, …'),
  trigger: z.string().describe('api | execute | inference | score_lead | replay | schedule | workflow'),
  status: z.enum(STATUSES),
  input: z.unknown(),
  output: z.unknown().describe('The run\'s result once it succeeded, else null'),
  error: z.string().nullable(),
  error_code: z.string().nullable().describe('Why it failed: step_failed, timeout, rejected, budget_exceeded, non_deterministic, provider and tool error codes …'),
  policy: z.record(z.string(), z.unknown()).describe('The execution policy frozen when the run started'),
  parent_run_id: z.string().nullable().describe('Replays: the run this one was made from'),
  replay_from_seq: z.number().int().nullable().describe('Replays: the first step that ran anew'),
  steps_count: z.number().int(),
  tokens_in: z.number().int(),
  tokens_out: z.number().int(),
  cost: z.number().describe('USD'),
  cancel_requested: z.boolean().describe('A cancel was asked while it was running: it stops at the next step boundary'),
  created_by: z.string().nullable(),
  created_at: timestamp,
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  updated_at: timestamp,
  duration_ms: z.number().int().nullable().describe('From started_at to finished_at (time awaiting approval included)'),
});

export const stepSchema = z.object({
  id: z.string(),
  run_id: z.string(),
  seq: z.number().int().describe('Position in the run, from 0'),
  type: z.string().describe('llm | tool | approval | memory | output …'),
  name: z.string(),
  status: z.enum(['running', 'succeeded', 'failed', 'awaiting_approval', 'rejected', 'cancelled']),
  input: z.unknown(),
  output: z.unknown(),
  error: z.string().nullable().describe('The last error (of the last failed attempt)'),
  provider_id: z.string().nullable(),
  model: z.string().nullable(),
  tokens_in: z.number().int(),
  tokens_out: z.number().int(),
  cost: z.number().describe('USD'),
  latency_ms: z.number().int().nullable(),
  attempt: z.number().int().describe('Attempts made (retries and resumes after a crash included)'),
  decision: z.enum(['approved', 'rejected']).nullable(),
  decided_by: z.string().nullable(),
  decided_at: timestamp.nullable(),
  decision_comment: z.string().nullable(),
  reused: z.boolean().describe('Copied from the parent run by a replay (not run, not paid again)'),
  created_at: timestamp,
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
});

const iso = z.string().max(40).refine((s) => !Number.isNaN(Date.parse(s)), 'An ISO-8601 date or date-time');

const decision = idInput.extend({
  step_id: z.string().min(1).max(64).optional().describe('The approval step (default: the pending one)'),
  comment: z.string().max(2000).optional(),
});

const tags = ['Runs'];

/** Actions on one run: 404 for an unknown id (or another organization's) before the body is validated. */
const existing = procedure.use(async ({ ctx, getRawInput, next }) => {
  await assertRunExists(ctx, ((await getRawInput()) as { id?: unknown } | undefined)?.id);
  return next();
});

export const runsRouter = router({
  list: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/runs', tags, summary: 'List runs', description: 'Newest first.' } })
    .input(z.object({
      ...pageParams,
      agent_id: z.string().max(64).optional(),
      status: z.enum(STATUSES).optional(),
      kind: z.string().max(100).optional(),
      created_after: iso.optional().describe('Created at or after this time (ISO-8601)'),
      created_before: iso.optional().describe('Created before this time (ISO-8601)'),
    }))
    .output(paginated(runSchema))
    .query(({ ctx, input }) => listRuns(ctx, input)),
  get: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/runs/{id}', tags, summary: 'Show a run' } })
    .input(idInput).output(runSchema)
    .query(({ ctx, input }) => getRun(ctx, input.id)),
  steps: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/runs/{id}/steps', tags, summary: 'A run\'s steps', description: 'In order (seq): type, input, output, error, model, tokens, cost, latency, attempt, approval decisions.' } })
    .input(idInput.extend(pageParams)).output(paginated(stepSchema))
    .query(({ ctx, input: { id, ...page } }) => listRunSteps(ctx, id, page)),
  cancel: procedure
    .meta({
      permission: 'agents:write', resource: 'run',
      openapi: {
        method: 'POST', path: '/api/v1/runs/{id}/cancel', tags, summary: 'Cancel a run', errors: [409],
        description: 'A queued, waiting or approval-awaiting run is cancelled at once; a running one gets `cancel_requested` and stops at its next step boundary (its current step sees the abort). 409 when it has already finished.',
      },
    })
    .input(idInput).output(runSchema)
    .mutation(({ ctx, input }) => cancelRun(ctx, input.id)),
  approve: existing
    .meta({
      permission: 'agents:write', resource: 'run', audit: false,
      openapi: { method: 'POST', path: '/api/v1/runs/{id}/approve', tags, summary: 'Approve the pending step', errors: [409], description: 'Records the decision (who, when, comment; audited) and resumes the run. 409 when nothing awaits approval.' },
    })
    .input(decision).output(runSchema)
    .mutation(({ ctx, input: { id, ...rest } }) => decideRun(ctx, id, 'approved', rest)),
  reject: existing
    .meta({
      permission: 'agents:write', resource: 'run', audit: false,
      openapi: { method: 'POST', path: '/api/v1/runs/{id}/reject', tags, summary: 'Reject the pending step', errors: [409], description: 'Records the decision (audited); the run then fails with error_code `rejected` unless its body handles the rejection. 409 when nothing awaits approval.' },
    })
    .input(decision).output(runSchema)
    .mutation(({ ctx, input: { id, ...rest } }) => decideRun(ctx, id, 'rejected', rest)),
  replay: existing
    .meta({
      permission: 'agents:write', resource: 'run',
      openapi: {
        method: 'POST', path: '/api/v1/runs/{id}/replay', tags, summary: 'Replay a run from a step', successStatus: 202, errors: [409],
        description: 'Starts a new run (trigger `replay`, `parent_run_id`, same kind, input and policy) whose steps before `from_step` are copied from this run (`reused`, not run or paid again). 409 unless this run has finished.',
      },
    })
    .input(idInput.extend({ from_step: z.number().int().min(0).describe('The seq of the first step to run anew') }))
    .output(runSchema)
    .mutation(({ ctx, input }) => replayRun(ctx, input.id, input.from_step)),
  /**
   * The run's events over tRPC (httpSubscriptionLink): the same as `GET /api/v1/runs/{id}/stream`,
   * which serves this path for REST clients (the REST facade skips subscriptions).
   */
  stream: procedure
    .meta({
      permission: 'agents:read',
      openapi: { method: 'GET', path: '/api/v1/runs/{id}/stream', tags, summary: 'Follow a run\'s events (Server-Sent Events)' },
    })
    .input(idInput.extend({ lastEventId: z.string().max(20).nullish().describe('Resume after this event id') }))
    .subscription(async function* ({ ctx, input, signal }) {
      await assertRunExists(ctx, input.id);
      const after = Number(input.lastEventId ?? 0);
      for await (const e of runEventStream(ctx, input.id, Number.isFinite(after) ? after : 0, signal)) {
        yield tracked(String(e.id), e);
      }
    }),
});
