import { isTrackedEnvelope } from '@trpc/server';
import { createClient, parseSse } from '../src/client.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { RunFailure, RunRejected, RUNS_PER_AGENT, defineRunKind, executeRun, runInline, startRun, type StartRunInput, type StepResult } from '../src/engine/runs.js';
import type { Deps } from '../src/context.js';
import { claimJob, runUntilIdle } from '../src/engine/queue.js';
import { newId, nowIso } from '../src/ids.js';

let env: TestEnv;
let agentId: string;
let otherAgentId: string;
beforeAll(async () => {
  env = await createTestEnv();
  const now = nowIso();
  agentId = newId('agt');
  otherAgentId = newId('agt');
  for (const [id, name] of [[agentId, 'runner'], [otherAgentId, 'other']]) {
    await env.db.kysely.insertInto('agents').values({
      id, organization_id: env.orgA, project_id: null, template_id: null, workflow_id: null, name, output_schema: null,
      created_by: null, created_at: now, updated_at: now,
    }).execute();
  }
});
afterAll(async () => { await env.close(); });

const deps = () => env.app.deps;
const drain = () => runUntilIdle(deps(), { types: ['runs.execute'] });
const start = (kind: string, extra: Partial<StartRunInput> = {}) =>
  startRun(deps(), { organizationId: env.orgA, agentId, kind, trigger: 'api', input: { q: 'hello' }, policy: {}, ...extra });
const getRun = async (id: string) => (await env.request('GET', `/api/v1/runs/${id}`, { token: env.viewer.token })).body;
const getSteps = async (id: string) => (await env.request('GET', `/api/v1/runs/${id}/steps`, { token: env.viewer.token })).body.results as any[];
const events = (id: string) => env.db.kysely.selectFrom('run_events').selectAll().where('run_id', '=', id).orderBy('seq', 'asc').execute();
const statuses = async (id: string) => (await events(id)).filter((e) => e.type === 'status').map((e) => JSON.parse(e.data).status);
const deferred = () => { let resolve!: () => void; const promise = new Promise<void>((r) => { resolve = r; }); return { promise, resolve }; };
const retryable = (message: string) => Object.assign(new Error(message), { retryable: true });

/** Parses an SSE body into messages (comments dropped). */
// Test-only run kinds.
const calls: Record<string, number> = {};
const bump = (k: string) => { calls[k] = (calls[k] ?? 0) + 1; };

defineRunKind('t.two_steps', async (rc) => {
  const answer = await rc.step('llm', 'think', { prompt: (rc.run.input as { q: string }).q }, async ({ emitToken }) => {
    bump('think');
    for (const w of ['Hel', 'lo', ' wor', 'ld']) emitToken(w);
    return { output: { text: 'Hello world' }, usage: { input_tokens: 12, output_tokens: 5 }, cost: 0.0015, model: 'gpt-test', providerId: 'prv_test' };
  });
  await rc.log('thought', { chars: answer.text.length });
  const tool = await rc.step('tool', 'lookup', { id: 7 }, async () => { bump('lookup'); return { output: { found: true } }; });
  return { answer: answer.text, tool, totals: rc.totals() };
});

describe('runs: steps, memoization, totals', () => {
  it('records each step with all its fields, the run\'s totals and its events', async () => {
    const run = await start('t.two_steps');
    expect(run).toMatchObject({ status: 'queued', kind: 't.two_steps', agent_id: agentId, trigger: 'api' });
    const job = await env.db.kysely.selectFrom('jobs').selectAll().where('id', '=', run.job_id!).executeTakeFirstOrThrow();
    expect(job).toMatchObject({ type: 'runs.execute', organization_id: env.orgA, concurrency_key: `agent:${agentId}`, concurrency_limit: RUNS_PER_AGENT });
    expect(JSON.parse(job.payload)).toEqual({ run_id: run.id });
    expect(await drain()).toBe(1);
    // The job is marked done in the transaction that records the run's success.
    const done = await env.db.kysely.selectFrom('jobs').selectAll().where('id', '=', run.job_id!).executeTakeFirstOrThrow();
    expect(done).toMatchObject({ status: 'succeeded', locked_by: null, locked_until: null, attempts: 1 });
    expect(JSON.parse(done.result!)).toEqual({ status: 'succeeded' });
    expect(done.finished_at).toBeTruthy();
    const shown = await getRun(run.id);
    expect(shown).toMatchObject({
      id: run.id, status: 'succeeded', agent_id: agentId, kind: 't.two_steps', input: { q: 'hello' }, error: null, error_code: null,
      steps_count: 2, tokens_in: 12, tokens_out: 5, cost: 0.0015, parent_run_id: null, replay_from_seq: null, cancel_requested: false,
      output: { answer: 'Hello world', tool: { found: true }, totals: { steps: 2, cost: 0.0015, tokens_in: 12, tokens_out: 5 } },
    });
    expect(shown.started_at).toBeTruthy();
    expect(shown.finished_at).toBeTruthy();
    const steps = await getSteps(run.id);
    expect(steps.map((s) => [s.seq, s.type, s.name, s.status])).toEqual([[0, 'llm', 'think', 'succeeded'], [1, 'tool', 'lookup', 'succeeded']]);
    expect(steps[0]).toMatchObject({
      input: { prompt: 'hello' }, output: { text: 'Hello world' }, error: null, model: 'gpt-test', provider_id: 'prv_test',
      tokens_in: 12, tokens_out: 5, cost: 0.0015, attempt: 1, reused: false, decision: null,
    });
    expect(typeof steps[0].latency_ms).toBe('number');
    expect(steps[0].finished_at).toBeTruthy();
    expect(await statuses(run.id)).toEqual(['queued', 'running', 'succeeded']);
    const ev = await events(run.id);
    expect(ev.map((e) => e.seq)).toEqual(ev.map((_, i) => i + 1));
    const tokens = ev.filter((e) => e.type === 'token').map((e) => JSON.parse(e.data));
    expect(tokens.map((t) => t.delta).join('')).toBe('Hello world');
    expect(tokens.length).toBeLessThan(4); // coalesced
    expect(ev.some((e) => e.type === 'log' && JSON.parse(e.data).message === 'thought')).toBe(true);
    expect(ev.filter((e) => e.type === 'step').map((e) => JSON.parse(e.data).status)).toEqual(['running', 'succeeded', 'running', 'succeeded']);
  });

  it('a body that does not replay the same steps fails as non-deterministic', async () => {
    let execution = 0;
    defineRunKind('t.nondeterministic', async (rc) => {
      execution++;
      await rc.step('tool', execution === 1 ? 'first' : 'changed', {}, async () => ({ output: 1 }));
      await rc.approval('gate', {});
    });
    const run = await start('t.nondeterministic');
    await drain();
    expect((await getRun(run.id)).status).toBe('awaiting_approval');
    expect((await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.member.token, body: {} })).status).toBe(200);
    await drain();
    const shown = await getRun(run.id);
    expect(shown).toMatchObject({ status: 'failed', error_code: 'non_deterministic' });
    expect(shown.error).toContain('step #0');
  });

  it('an unknown kind fails the run', async () => {
    const run = await start('t.nobody');
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'failed', error_code: 'unknown_kind' });
  });
});

describe('runs: what is committed when', () => {
  /** Counts the transactions executeRun opens on the database. */
  const counting = () => {
    const real = deps().db.kysely;
    const counter = { transactions: 0 };
    const kysely = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === 'transaction') counter.transactions++;
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    return { counter, deps: { ...deps(), db: { ...deps().db, kysely } } as Deps };
  };

  it("each step's start is committed before it runs and its success before the body goes on; the run's success and its job's completion together", async () => {
    const seen: string[] = [];
    const look = async (runId: string) => {
      const rows = await env.db.kysely.selectFrom('run_steps').select(['name', 'status']).where('run_id', '=', runId).orderBy('seq').execute();
      seen.push(rows.map((r) => `${r.name}:${r.status}`).join(' '));
    };
    defineRunKind('t.committed', async (rc) => {
      const a = await rc.step('tool', 'a', {}, async () => ({ output: 1 }));
      await look(rc.run.id);
      const b = await rc.step('llm', 'b', {}, async () => { await look(rc.run.id); return { output: 2, cost: 0.01, usage: { input_tokens: 3, output_tokens: 4 } }; });
      return a + b;
    });
    const run = await start('t.committed');
    const { counter, deps: counted } = counting();
    await executeRun(counted, run.id, new AbortController().signal, { lastAttempt: true });
    expect(seen).toEqual(['a:succeeded', 'a:succeeded b:running']);
    // running; a started; a succeeded; b started; b succeeded; the outcome.
    expect(counter.transactions).toBe(6);
    expect(await getRun(run.id)).toMatchObject({ status: 'succeeded', output: 3, steps_count: 2, cost: 0.01, tokens_in: 3, tokens_out: 4 });
    const stepEvents = (await events(run.id)).filter((e) => e.type === 'step').map((e) => JSON.parse(e.data)).map((d) => `${d.name}:${d.status}`);
    expect(stepEvents).toEqual(['a:running', 'a:succeeded', 'b:running', 'b:succeeded']);
  });

  it('a run moves to running with its job\'s claim, in the same transaction', async () => {
    defineRunKind('t.claimed', async () => 'ok');
    const run = await start('t.claimed');
    const job = await claimJob(deps(), 'claimer', 30_000, ['runs.execute'], [run.job_id!]);
    expect(job?.id).toBe(run.job_id);
    const claimed = await getRun(run.id);
    expect(claimed.status).toBe('running');
    expect(claimed.started_at).toBeTruthy();
    expect(await statuses(run.id)).toEqual(['queued', 'running']);
    await executeRun(deps(), run.id, new AbortController().signal, { lastAttempt: true });
    expect(await getRun(run.id)).toMatchObject({ status: 'succeeded', output: 'ok', started_at: claimed.started_at });
    expect(await statuses(run.id)).toEqual(['queued', 'running', 'succeeded']);
    await env.db.kysely.updateTable('jobs').set({ status: 'succeeded', locked_by: null, locked_until: null }).where('id', '=', job!.id).execute();
  });
});

describe('runs: retries and failures', () => {
  it('retries retryable errors with each attempt recorded, then succeeds', async () => {
    let n = 0;
    const attempts: number[] = [];
    defineRunKind('t.flaky', async (rc) => rc.step('llm', 'flaky', {}, async ({ attempt }) => {
      attempts.push(attempt);
      if (++n < 3) throw retryable(`429 number ${n}`);
      return { output: 'ok' };
    }));
    const run = await start('t.flaky', { policy: { retry: { max_attempts: 3, backoff_ms: 1 } } });
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'succeeded', output: 'ok' });
    expect(attempts).toEqual([1, 2, 3]);
    const [step] = await getSteps(run.id);
    expect(step).toMatchObject({ status: 'succeeded', attempt: 3, error: null, output: 'ok' });
    const errors = (await events(run.id)).filter((e) => e.type === 'step').map((e) => JSON.parse(e.data).error).filter(Boolean);
    expect([...new Set(errors)]).toEqual(['429 number 1', '429 number 2']);
  });

  it('the last attempt of a retryable error fails the step and the run (step_failed)', async () => {
    defineRunKind('t.always_flaky', async (rc) => rc.step('llm', 'down', {}, async () => { throw retryable('503 upstream'); }));
    const run = await start('t.always_flaky', { policy: { retry: { max_attempts: 2, backoff_ms: 1 } } });
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'failed', error: '503 upstream', error_code: 'step_failed', finished_at: expect.any(String) });
    expect((await getSteps(run.id))[0]).toMatchObject({ status: 'failed', attempt: 2, error: '503 upstream' });
  });

  it('a non-retryable error fails at once with its code', async () => {
    let n = 0;
    defineRunKind('t.bad_tool', async (rc) => {
      await rc.step('tool', 'ok', {}, async () => ({ output: 1 }));
      await rc.step('tool', 'bad', {}, async () => { n++; throw Object.assign(new Error('invalid input: q'), { code: 'invalid_input', retryable: false }); });
      return 'never';
    });
    const run = await start('t.bad_tool');
    await drain();
    expect(n).toBe(1);
    expect(await getRun(run.id)).toMatchObject({ status: 'failed', error: 'invalid input: q', error_code: 'invalid_input', output: null, steps_count: 2 });
    expect((await getSteps(run.id)).map((s) => [s.status, s.attempt])).toEqual([['succeeded', 1], ['failed', 1]]);
    expect(await statuses(run.id)).toEqual(['queued', 'running', 'failed']);
  });

  it('a body can fail its run with RunFailure and a code', async () => {
    defineRunKind('t.run_failure', async () => { throw new RunFailure('max_steps', 'Stopped after 10 steps'); });
    const run = await start('t.run_failure');
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'failed', error: 'Stopped after 10 steps', error_code: 'max_steps' });
  });

  it('times out: the step sees the abort and the run fails with error_code timeout', async () => {
    let sawAbort = false;
    let stepStarted = false;
    defineRunKind('t.slow', async (rc) => rc.step('llm', 'slow', {}, ({ signal }) => new Promise<StepResult<unknown>>((_, reject) => {
      stepStarted = true;
      signal.addEventListener('abort', () => { sawAbort = true; reject(signal.reason); });
    })));
    const run = await start('t.slow', { policy: { timeout_seconds: 1 } });
    await drain();
    const shown = await getRun(run.id);
    expect(shown).toMatchObject({ status: 'failed', error_code: 'timeout' });
    expect(shown.error).toContain('timeout of 1 s');
    // (On a very slow machine the deadline may pass before the step starts; then there is no step.)
    if (stepStarted) {
      expect(sawAbort).toBe(true);
      expect((await getSteps(run.id))[0].status).toBe('failed');
    }

    // Resumed past its deadline (counted from started_at): it fails at once, its step is not run.
    let ran = 0;
    defineRunKind('t.late', async (rc) => rc.step('llm', 'late', {}, async () => { ran++; return { output: 1 }; }));
    const late = await start('t.late', { policy: { timeout_seconds: 60 } });
    await env.db.kysely.updateTable('runs').set({ status: 'running', started_at: new Date(Date.now() - 120_000).toISOString() }).where('id', '=', late.id).execute();
    await drain();
    expect(await getRun(late.id)).toMatchObject({ status: 'failed', error_code: 'timeout' });
    expect(ran).toBe(0);
  });
  it('a bookkeeping failure hands the run back to the queue (waiting); the unrecorded step runs again on resume', async () => {
    const attempts: number[] = [];
    defineRunKind('t.infra', async (rc) => {
      const a = await rc.step('tool', 'once', {}, async ({ attempt }) => { attempts.push(attempt); return { output: attempt }; });
      await rc.step('tool', 'then', {}, async () => ({ output: null }));
      return a;
    });
    const run = await start('t.infra');
    // A database that fails the transaction recording the first step's success (the 3rd of this
    // execution: running, "once" started, "once" succeeded).
    let transactions = 0;
    const real = deps().db.kysely;
    const flaky = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === 'transaction' && ++transactions === 3) return () => ({ execute: async () => { throw new Error('connection reset'); } });
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const flakyDeps: Deps = { ...deps(), db: { ...deps().db, kysely: flaky } };
    await expect(executeRun(flakyDeps, run.id, new AbortController().signal, { lastAttempt: false })).rejects.toThrow('connection reset');
    expect(await getRun(run.id)).toMatchObject({ status: 'waiting' });
    expect(await statuses(run.id)).toEqual(['queued', 'running', 'waiting']);
    await drain(); // its job was never claimed: it runs now
    expect(await getRun(run.id)).toMatchObject({ status: 'succeeded', output: 2 });
    expect(attempts).toEqual([1, 2]);
    expect((await getSteps(run.id))[0]).toMatchObject({ status: 'succeeded', attempt: 2 });
  });
  it('a run whose workers keep dying fails (worker_lost) once its job is claimed past its last attempt', async () => {
    defineRunKind('t.crashy', async () => 'never reached');
    const run = await start('t.crashy');
    const past = new Date(Date.now() - 1000).toISOString();
    await env.db.kysely.updateTable('jobs').set({ status: 'running', attempts: 10, locked_by: 'dead-worker', locked_until: past }).where('id', '=', run.job_id!).execute();
    await env.db.kysely.updateTable('runs').set({ status: 'running', started_at: past }).where('id', '=', run.id).execute();
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'failed', error_code: 'worker_lost' });
  });
});

describe('runs: cancel', () => {
  it('a queued run is cancelled at once and never executes', async () => {
    let ran = 0;
    defineRunKind('t.cancel_queued', async () => { ran++; });
    const run = await start('t.cancel_queued');
    const res = await env.request('POST', `/api/v1/runs/${run.id}/cancel`, { token: env.member.token });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: run.id, status: 'cancelled', finished_at: expect.any(String) });
    await drain();
    expect(ran).toBe(0);
    expect(await statuses(run.id)).toEqual(['queued', 'cancelled']);
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/cancel`, { token: env.member.token }), 409);
  });

  it('a running run gets cancel_requested, its step sees the abort, and it ends cancelled', async () => {
    const started = deferred();
    let sawAbort = false;
    let after = 0;
    defineRunKind('t.cancel_running', async (rc) => {
      await rc.step('llm', 'long', {}, ({ signal }) => new Promise<StepResult<unknown>>((_, reject) => {
        started.resolve();
        signal.addEventListener('abort', () => { sawAbort = true; reject(signal.reason); });
      }));
      after++;
    });
    const run = await start('t.cancel_running');
    const worker = drain();
    await started.promise;
    const res = await env.request('POST', `/api/v1/runs/${run.id}/cancel`, { token: env.member.token });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'running', cancel_requested: true });
    await worker;
    expect(sawAbort).toBe(true);
    expect(after).toBe(0);
    expect(await getRun(run.id)).toMatchObject({ status: 'cancelled', cancel_requested: false });
    expect((await getSteps(run.id))[0].status).toBe('cancelled');
    expect(await statuses(run.id)).toEqual(['queued', 'running', 'cancelled']);
  });
});

describe('runs: approvals', () => {
  let sideEffects = 0;
  let drafts = 0;
  defineRunKind('t.approval', async (rc) => {
    const draft = await rc.step('llm', 'draft', {}, async () => { drafts++; return { output: 'Dear customer' }; });
    try {
      await rc.approval('send_email', { to: 'a@example.test', body: draft });
    } catch (err) {
      if (err instanceof RunRejected && (rc.run.input as { tolerate?: boolean }).tolerate) return { sent: false, comment: err.comment };
      throw err;
    }
    await rc.step('tool', 'send', {}, async () => { sideEffects++; return { output: { sent: true } }; });
    return { sent: true };
  });

  it('parks the run in awaiting_approval; approve records the decision and the run goes on', async () => {
    const run = await start('t.approval');
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'awaiting_approval', finished_at: null });
    let steps = await getSteps(run.id);
    expect(steps[1]).toMatchObject({ type: 'approval', name: 'send_email', status: 'awaiting_approval', input: { to: 'a@example.test', body: 'Dear customer' }, decision: null });
    expect(sideEffects).toBe(0);

    expectError(await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.viewer.token, body: {} }), 403);
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/replay`, { token: env.member.token, body: { from_step: 0 } }), 409);
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.member.token, body: { step_id: steps[0].id } }), 400);
    const res = await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.member.token, body: { comment: 'looks good' } });
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('queued');
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.member.token, body: {} }), 409);
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'succeeded', output: { sent: true } });
    expect(drafts).toBe(1); // memoized across the re-execution
    expect(sideEffects).toBe(1);
    steps = await getSteps(run.id);
    expect(steps[1]).toMatchObject({ status: 'succeeded', decision: 'approved', decided_by: env.member.userId, decision_comment: 'looks good', decided_at: expect.any(String) });
    expect(steps.map((s) => s.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    expect(await statuses(run.id)).toEqual(['queued', 'running', 'awaiting_approval', 'queued', 'running', 'succeeded']);
    const audit = await env.db.kysely.selectFrom('audit_logs').selectAll().where('resource_id', '=', run.id).execute();
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ action: 'runs.approve', resource_type: 'run', actor_id: env.member.userId, organization_id: env.orgA });
    expect(JSON.parse(audit[0].metadata)).toMatchObject({ decision: 'approved', comment: 'looks good', step_id: steps[1].id });
  });

  it('reject marks the step rejected and fails the run (rejected), audited', async () => {
    const before = sideEffects;
    const run = await start('t.approval');
    await drain();
    const res = await env.request('POST', `/api/v1/runs/${run.id}/reject`, { token: env.admin.token, body: { comment: 'wrong recipient' } });
    expect(res.status).toBe(200);
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'failed', error_code: 'rejected', error: 'Rejected: wrong recipient' });
    const steps = await getSteps(run.id);
    expect(steps[1]).toMatchObject({ status: 'rejected', decision: 'rejected', decided_by: env.admin.userId, decision_comment: 'wrong recipient' });
    expect(sideEffects).toBe(before);
    const audit = await env.db.kysely.selectFrom('audit_logs').selectAll().where('resource_id', '=', run.id).execute();
    expect(audit.map((a) => a.action)).toEqual(['runs.reject']);
  });

  it('a body may catch the rejection', async () => {
    const run = await start('t.approval', { input: { tolerate: true } });
    await drain();
    await env.request('POST', `/api/v1/runs/${run.id}/reject`, { token: env.member.token, body: { comment: 'no' } });
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'succeeded', output: { sent: false, comment: 'no' } });
  });

  it('cancelling a run awaiting approval cancels it at once', async () => {
    const run = await start('t.approval');
    await drain();
    const res = await env.request('POST', `/api/v1/runs/${run.id}/cancel`, { token: env.member.token });
    expect(res.body.status).toBe('cancelled');
    expect((await getSteps(run.id))[1].status).toBe('cancelled');
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.member.token, body: {} }), 409);
  });
});

describe('runs: replay', () => {
  const ran: string[] = [];
  let failAt: string | null = 'c';
  defineRunKind('t.three', async (rc) => {
    const out: unknown[] = [];
    for (const name of ['a', 'b', 'c']) {
      out.push(await rc.step('tool', name, { name }, async () => {
        ran.push(name);
        if (failAt === name) throw new Error(`${name} broke`);
        return { output: `${name}!`, usage: { input_tokens: 1, output_tokens: 1 }, cost: 0.01 };
      }));
    }
    return out;
  });

  it('a new run reuses the steps before from_step (not run again) and runs the rest', async () => {
    const run = await start('t.three');
    await drain();
    expect(await getRun(run.id)).toMatchObject({ status: 'failed', error: 'c broke' });
    expect(ran).toEqual(['a', 'b', 'c']);
    failAt = null;
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/replay`, { token: env.member.token, body: { from_step: 3 } }), 400);
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/replay`, { token: env.member.token, body: {} }), 400);
    expectError(await env.request('POST', `/api/v1/runs/${run.id}/replay`, { token: env.viewer.token, body: { from_step: 2 } }), 403);
    const res = await env.request('POST', `/api/v1/runs/${run.id}/replay`, { token: env.member.token, body: { from_step: 2 } });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ status: 'queued', trigger: 'replay', parent_run_id: run.id, replay_from_seq: 2, kind: 't.three', input: { q: 'hello' }, agent_id: agentId, created_by: env.member.userId });
    await drain();
    expect(ran).toEqual(['a', 'b', 'c', 'c']);
    const replayed = await getRun(res.body.id);
    expect(replayed).toMatchObject({ status: 'succeeded', output: ['a!', 'b!', 'c!'], steps_count: 3, cost: 0.01 });
    const steps = await getSteps(res.body.id);
    expect(steps.map((s) => [s.seq, s.name, s.status, s.reused, s.cost])).toEqual([[0, 'a', 'succeeded', true, 0], [1, 'b', 'succeeded', true, 0], [2, 'c', 'succeeded', false, 0.01]]);
    const audit = await env.db.kysely.selectFrom('audit_logs').select(['action', 'resource_type']).where('resource_id', '=', res.body.id).execute();
    expect(audit).toEqual([{ action: 'runs.replay', resource_type: 'run' }]);

    // From step 0: everything runs again.
    const all = await env.request('POST', `/api/v1/runs/${run.id}/replay`, { token: env.member.token, body: { from_step: 0 } });
    await drain();
    expect(ran.slice(4)).toEqual(['a', 'b', 'c']);
    expect((await getRun(all.body.id)).status).toBe('succeeded');
  });
});

describe('runs: inline', () => {
  it('runInline runs in this process with the same recording', async () => {
    defineRunKind('t.inline', async (rc) => rc.step('llm', 'infer', {}, async () => ({ output: { score: 87 }, usage: { input_tokens: 2, output_tokens: 3 }, cost: 0.002 })));
    const { run, output } = await runInline(deps(), { organizationId: env.orgA, agentId, kind: 't.inline', trigger: 'inference', input: {}, policy: {} });
    expect(output).toEqual({ score: 87 });
    expect(run).toMatchObject({ status: 'succeeded', tokens_in: 2, tokens_out: 3, cost: 0.002, output: { score: 87 } });
    // Its safety job finds the run finished and does nothing.
    await env.db.kysely.updateTable('jobs').set({ run_at: new Date(Date.now() - 1000).toISOString() }).where('id', '=', run.job_id!).execute();
    await drain();
    expect((await getRun(run.id)).status).toBe('succeeded');

    defineRunKind('t.inline_fail', async () => { throw new RunFailure('invalid_output', 'not JSON'); });
    const failed = await runInline(deps(), { organizationId: env.orgA, agentId, kind: 't.inline_fail', trigger: 'inference', input: {}, policy: {} });
    expect(failed.output).toBeUndefined();
    expect(failed.run).toMatchObject({ status: 'failed', error_code: 'invalid_output' });
  });
});

describe('runs: list', () => {
  it('filters by agent, status, kind and time, newest first, paginated', async () => {
    defineRunKind('t.list', async () => 'done');
    const a = await start('t.list', { agentId: otherAgentId });
    const b = await start('t.list', { agentId: otherAgentId });
    await drain();
    const c = await start('t.list', { agentId: otherAgentId });
    const res = await env.request('GET', `/api/v1/runs?agent_id=${otherAgentId}`, { token: env.viewerKey });
    expect(res.status).toBe(200);
    expect(res.body.count).toBe(3);
    expect(res.body.results.map((r: { id: string }) => r.id)).toEqual([c.id, b.id, a.id]);
    const queued = await env.request('GET', `/api/v1/runs?agent_id=${otherAgentId}&status=queued`, { token: env.viewer.token });
    expect(queued.body.results.map((r: { id: string }) => r.id)).toEqual([c.id]);
    const done = await env.request('GET', `/api/v1/runs?kind=t.list&status=succeeded`, { token: env.viewer.token });
    expect(done.body.results.map((r: { id: string }) => r.id)).toEqual([b.id, a.id]);
    const page = await env.request('GET', `/api/v1/runs?agent_id=${otherAgentId}&page_size=2`, { token: env.viewer.token });
    expect(page.body.results).toHaveLength(2);
    expect(page.body.next).toContain('page=2');
    const future = new Date(Date.now() + 3600_000).toISOString();
    expect((await env.request('GET', `/api/v1/runs?agent_id=${otherAgentId}&created_after=${future}`, { token: env.viewer.token })).body.count).toBe(0);
    expect((await env.request('GET', `/api/v1/runs?agent_id=${otherAgentId}&created_before=${future}`, { token: env.viewer.token })).body.count).toBe(3);
    expect((await env.request('GET', `/api/v1/runs?agent_id=${otherAgentId}&created_before=2000-01-01`, { token: env.viewer.token })).body.count).toBe(0);
    const bad = await env.request('GET', '/api/v1/runs?status=exploded&created_after=yesterday', { token: env.viewer.token });
    expectError(bad, 400);
    expect(Object.keys(bad.body.details).sort()).toEqual(['created_after', 'status']);
    await env.request('POST', `/api/v1/runs/${c.id}/cancel`, { token: env.member.token });
  });
});

describe('runs: stream (SSE)', () => {
  it('sends every event with its id, resumes after Last-Event-ID, and ends after the terminal status', async () => {
    const run = await start('t.two_steps');
    await drain();
    const all = await env.request('GET', `/api/v1/runs/${run.id}/stream`, { token: env.viewer.token });
    expect(all.status).toBe(200);
    expect(all.headers['content-type']).toContain('text/event-stream');
    expect(Number(all.headers['x-ratelimit-reset'])).toBeGreaterThan(Date.now() / 1000 - 5);
    const stored = await events(run.id);
    const msgs = parseSse(all.text);
    expect(msgs.map((m) => Number(m.id))).toEqual(stored.map((e) => e.seq));
    expect(msgs.map((m) => m.event)).toEqual(stored.map((e) => e.type));
    expect(msgs.map((m) => JSON.parse(m.data!))).toEqual(stored.map((e) => JSON.parse(e.data)));
    expect(JSON.parse(msgs[msgs.length - 1].data!)).toMatchObject({ status: 'succeeded' });

    const resumed = parseSse((await env.request('GET', `/api/v1/runs/${run.id}/stream`, { token: env.viewer.token, headers: { 'last-event-id': '4' } })).text);
    expect(resumed.map((m) => Number(m.id))).toEqual(stored.filter((e) => e.seq > 4).map((e) => e.seq));
    const byQuery = parseSse((await env.request('GET', `/api/v1/runs/${run.id}/stream?last_event_id=${stored.length - 1}`, { token: env.viewer.token })).text);
    expect(byQuery.map((m) => Number(m.id))).toEqual([stored.length]);
    expect(parseSse((await env.request('GET', `/api/v1/runs/${run.id}/stream?last_event_id=999`, { token: env.viewer.token })).text)).toEqual([]);
    expectError(await env.request('GET', `/api/v1/runs/${run.id}/stream?last_event_id=abc`, { token: env.viewer.token }), 400);
  });

  it('follows a live run until it finishes; a reconnect gets only what it missed', async () => {
    await env.app.fastify.listen({ port: 0, host: '127.0.0.1' });
    const { port } = env.app.fastify.server.address() as { port: number };
    const base = `http://127.0.0.1:${port}`;
    const run = await start('t.approval');
    await drain();
    const seen = (await events(run.id)).length;

    // First connection: read what is there, then drop.
    const first = await fetch(`${base}/api/v1/runs/${run.id}/stream`, { headers: { authorization: `Bearer ${env.viewer.token}` } });
    const reader1 = first.body!.getReader();
    let text1 = '';
    while (parseSse(text1).length < seen) text1 += new TextDecoder().decode((await reader1.read()).value);
    await reader1.cancel();
    const lastId = parseSse(text1).at(-1)!.id!;
    expect(Number(lastId)).toBe(seen);

    // The run goes on while no one listens.
    await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.member.token, body: {} });

    const second = await fetch(`${base}/api/v1/runs/${run.id}/stream`, { headers: { authorization: `Bearer ${env.viewer.token}`, 'last-event-id': lastId } });
    const body = second.text();
    await drain();
    const msgs = parseSse(await body); // ends by itself after the terminal status event
    const stored = await events(run.id);
    expect(msgs.map((m) => Number(m.id))).toEqual(stored.filter((e) => e.seq > seen).map((e) => e.seq));
    expect(msgs.slice(0, 2).map((m) => [m.event, JSON.parse(m.data!).status])).toEqual([['status', 'queued'], ['step', 'succeeded']]); // the decision
    expect(JSON.parse(msgs.at(-1)!.data!)).toMatchObject({ status: 'succeeded' });
  });

  it('the tRPC subscription runs.stream yields the same events, tracked, resumable with lastEventId', async () => {
    const { port } = env.app.fastify.server.address() as { port: number };
    const run = await start('t.two_steps');
    await drain();
    const stored = await events(run.id);
    const url = (input: object) => `http://127.0.0.1:${port}/trpc/runs.stream?input=${encodeURIComponent(JSON.stringify(input))}`;
    const res = await fetch(url({ id: run.id }), { headers: { authorization: `Bearer ${env.viewer.token}` } });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const msgs = parseSse(await res.text()).filter((m) => m.id !== undefined);
    expect(msgs.map((m) => Number(m.id))).toEqual(stored.map((e) => e.seq));
    expect(JSON.parse(msgs[0].data!)).toMatchObject({ id: 1, type: 'status', data: { status: 'queued' } });
    const resumed = parseSse(await (await fetch(url({ id: run.id, lastEventId: '5' }), { headers: { authorization: `Bearer ${env.viewer.token}` } })).text()).filter((m) => m.id !== undefined);
    expect(resumed.map((m) => Number(m.id))).toEqual(stored.filter((e) => e.seq > 5).map((e) => e.seq));
    const header = parseSse(await (await fetch(url({ id: run.id }), { headers: { authorization: `Bearer ${env.viewer.token}`, 'last-event-id': '6' } })).text()).filter((m) => m.id !== undefined);
    expect(header.map((m) => Number(m.id))).toEqual(stored.filter((e) => e.seq > 6).map((e) => e.seq));

    const caller = (await import('../routers/index.js')).appRouter.createCaller(env.ctxOf(env.owner));
    const got: number[] = [];
    for await (const e of await caller.runs.stream({ id: run.id, lastEventId: String(stored.length - 2) })) got.push(Number(isTrackedEnvelope(e) ? e[0] : NaN));
    expect(got).toEqual([stored.length - 1, stored.length]);
    const foreign = (await import('../routers/index.js')).appRouter.createCaller(env.ctxOf(env.otherOwner));
    await expect((async () => { for await (const e of await foreign.runs.stream({ id: run.id })) void e; })()).rejects.toMatchObject({ status: 404 });
  });
  it('createClient subscribes (httpSubscriptionLink over SSE) and follows a live run to its end', async () => {
    const { port } = env.app.fastify.server.address() as { port: number };
    // The package's own client: subscriptions go over SSE with the token in the Authorization header.
    const client = createClient(`http://127.0.0.1:${port}`, () => env.viewer.token);
    const run = await start('t.approval');
    await drain();
    const received: { id: number; type: string; data: { status?: string } }[] = [];
    const done = new Promise<void>((resolve, reject) => {
      const sub = client.runs.stream.subscribe({ id: run.id }, {
        onData: (e) => {
          received.push(e.data as (typeof received)[number]);
          if (received.at(-1)!.type === 'status' && received.at(-1)!.data.status === 'succeeded') { sub.unsubscribe(); resolve(); }
        },
        onError: reject,
      });
    });
    while (!received.some((e) => e.data.status === 'awaiting_approval')) await new Promise((r) => setTimeout(r, 10));
    await env.request('POST', `/api/v1/runs/${run.id}/approve`, { token: env.member.token, body: {} });
    await drain();
    await done;
    const stored = await events(run.id);
    expect(received.map((e) => e.id)).toEqual(stored.map((e) => e.seq));
    expect(received.map((e) => e.type)).toEqual(stored.map((e) => e.type));
  });
});

describe('runs: security', () => {
  it('401 without a token, 403 for viewers on writes, 404 for another organization\'s run (stream included)', async () => {
    const foreign = (await startRun(deps(), { organizationId: env.orgB, agentId: null, kind: 't.two_steps', trigger: 'api', input: {}, policy: {} })).id;
    const mine = (await start('t.list')).id;
    for (const [method, path] of [['GET', '/api/v1/runs'], ['GET', `/api/v1/runs/${mine}`], ['GET', `/api/v1/runs/${mine}/steps`], ['GET', `/api/v1/runs/${mine}/stream`], ['POST', `/api/v1/runs/${mine}/cancel`]] as const) {
      expectError(await env.request(method, path), 401);
    }
    for (const action of ['cancel', 'approve', 'reject', 'replay']) {
      expectError(await env.request('POST', `/api/v1/runs/${mine}/${action}`, { token: env.viewer.token, body: {} }), 403);
      expectError(await env.request('POST', `/api/v1/runs/${foreign}/${action}`, { token: env.owner.token, body: {} }), 404);
    }
    for (const path of ['', '/steps', '/stream']) expectError(await env.request('GET', `/api/v1/runs/${foreign}${path}`, { token: env.owner.token }), 404);
    const list = await env.request('GET', '/api/v1/runs?page_size=100', { token: env.owner.token });
    expect(list.body.results.some((r: { id: string }) => r.id === foreign)).toBe(false);
    expect((await getRun(foreign))?.status).toBeUndefined();
    await env.request('POST', `/api/v1/runs/${mine}/cancel`, { token: env.member.token });
    await env.request('POST', `/api/v1/runs/${foreign}/cancel`, { token: env.otherOwner.token });
  });
});
