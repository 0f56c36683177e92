import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type Res, type TestEnv } from './helpers.js';
import { newId } from '../src/ids.js';
import { createAgent } from '../src/services/agents.js';
import { TRACE_TEXT_MAX } from '../src/services/monitoring.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const ok = (res: Res) => { expect(res.status, res.text).toBe(200); return res.body; };
const DAY = 86_400_000;
const todayStart = () => { const d = new Date(); d.setUTCHours(0, 0, 0, 0); return d.getTime(); };
const iso = (ms: number) => new Date(ms).toISOString();

async function insertRun(agentId: string, status: string, at: number, org = env.orgA): Promise<string> {
  const id = newId('run');
  await env.db.kysely.insertInto('runs').values({
    id, organization_id: org, agent_id: agentId, kind: 'agent', status, created_at: iso(at), updated_at: iso(at),
    project_id: null, output: null, error: null, error_code: null, parent_run_id: null, replay_from_seq: null, job_id: null, created_by: null, started_at: null, finished_at: null,
  }).execute();
  return id;
}

async function insertStep(runId: string, agentId: string, seq: number, over: Record<string, unknown>, org = env.orgA) {
  await env.db.kysely.insertInto('run_steps').values({
    id: newId('stp'), run_id: runId, organization_id: org, project_id: null, agent_id: agentId, seq, type: 'llm', name: 'call', status: 'succeeded',
    input: null, output: null, error: null, provider_id: null, model: null, latency_ms: null, decision: null, decided_by: null, decided_at: null, decision_comment: null,
    created_at: iso(Date.now()), started_at: null, finished_at: null, ...over,
  }).execute();
}

describe('monitoring', () => {
  it('agents: live counts, latest activity and cost today for every agent of the organization', async () => {
    const ctx = env.ctxOf(env.owner);
    const busy = (await createAgent(ctx, { name: 'Busy' })).id;
    const idle = (await createAgent(ctx, { name: 'Idle', status: 'paused' })).id;
    const foreign = (await createAgent(env.ctxOf(env.otherOwner), { name: 'Foreign' })).id;
    const t0 = todayStart();
    const running = await insertRun(busy, 'running', t0 + 1000);
    await insertRun(busy, 'running', t0 + 2000);
    await insertRun(busy, 'queued', t0 + 3000);
    await insertRun(busy, 'awaiting_approval', t0 + 4000);
    const done = await insertRun(busy, 'succeeded', t0 - DAY);
    await insertStep(running, busy, 0, { cost: 0.25, model: 'm', created_at: iso(t0 + 1500) });
    await insertStep(running, busy, 1, { cost: 0.125, model: 'm', created_at: iso(t0 + 1600) });
    await insertStep(running, busy, 2, { cost: 0.125, model: 'm', reused: 1, created_at: iso(t0 + 1700) });
    await insertStep(done, busy, 0, { cost: 7, model: 'm', created_at: iso(t0 - DAY) });
    const foreignRun = await insertRun(foreign, 'running', t0 + 1000, env.orgB);
    await insertStep(foreignRun, foreign, 0, { cost: 3, model: 'm' }, env.orgB);

    const res = ok(await env.request('GET', '/api/v1/monitoring/agents', { token: env.viewer.token }));
    expect(res.count).toBe(2);
    expect(res.results).toEqual([
      { id: idle, name: 'Idle', status: 'paused', project_id: null, running: 0, queued: 0, waiting: 0, awaiting_approval: 0, last_activity_at: null, cost_today: 0 },
      { id: busy, name: 'Busy', status: 'active', project_id: null, running: 2, queued: 1, waiting: 0, awaiting_approval: 1, last_activity_at: iso(t0 + 4000), cost_today: 0.375 },
    ]);
    const paused = ok(await env.request('GET', '/api/v1/monitoring/agents?status=paused', { token: env.viewerKey }));
    expect(paused.results.map((a: { id: string }) => a.id)).toEqual([idle]);
    expectError(await env.request('GET', '/api/v1/monitoring/agents?status=busy', { token: env.viewer.token }), 400);
    expectError(await env.request('GET', '/api/v1/monitoring/agents'), 401);
  });

  it("reasoning: the latest steps of the agent's runs, newest first, inputs and outputs bounded", async () => {
    const agent = (await createAgent(env.ctxOf(env.owner), { name: 'Thinker' })).id;
    const t = Date.now() - 600_000;
    const r1 = await insertRun(agent, 'succeeded', t);
    const r2 = await insertRun(agent, 'failed', t + 100_000);
    const long = { text: 'x'.repeat(5000) };
    await insertStep(r1, agent, 0, { type: 'llm', name: 'plan', model: 'gpt-4o', provider_id: 'prv_1', tokens_in: 120, tokens_out: 30, cost: 0.0015, latency_ms: 850, input: JSON.stringify({ messages: ['hi'] }), output: JSON.stringify({ text: 'plan' }), created_at: iso(t + 1000), finished_at: iso(t + 1850) });
    await insertStep(r1, agent, 1, { type: 'tool', name: 'memory_search', input: JSON.stringify({ query: 'acme' }), output: JSON.stringify(long), latency_ms: 12, created_at: iso(t + 2000) });
    await insertStep(r2, agent, 0, { type: 'tool', name: 'send_email', status: 'failed', error: 'SMTP refused', attempt: 3, input: JSON.stringify({ to: 'a@b.c' }), created_at: iso(t + 101_000) });

    const res = ok(await env.request('GET', `/api/v1/monitoring/reasoning/${agent}`, { token: env.viewer.token }));
    expect(res.agent_id).toBe(agent);
    expect(res.name).toBe('Thinker');
    expect(res.results.map((s: { run_id: string; seq: number }) => [s.run_id, s.seq])).toEqual([[r2, 0], [r1, 1], [r1, 0]]);
    expect(res.results[0]).toMatchObject({ run_status: 'failed', type: 'tool', name: 'send_email', status: 'failed', error: 'SMTP refused', attempt: 3, input: { to: 'a@b.c' }, output: null, cost: 0 });
    expect(res.results[2]).toMatchObject({
      type: 'llm', name: 'plan', model: 'gpt-4o', provider_id: 'prv_1', tokens_in: 120, tokens_out: 30, cost: 0.0015, latency_ms: 850,
      input: { messages: ['hi'] }, input_truncated: false, output: { text: 'plan' }, output_truncated: false, reused: false, finished_at: iso(t + 1850),
    });
    const cut = res.results[1];
    expect(cut.output_truncated).toBe(true);
    expect(typeof cut.output).toBe('string');
    expect(cut.output.startsWith(JSON.stringify(long).slice(0, TRACE_TEXT_MAX))).toBe(true);
    expect(cut.output).toContain(`[${JSON.stringify(long).length - TRACE_TEXT_MAX} more characters]`);
    expect(cut.input).toEqual({ query: 'acme' });

    const limited = ok(await env.request('GET', `/api/v1/monitoring/reasoning/${agent}?limit=1`, { token: env.member.token }));
    expect(limited.results).toHaveLength(1);
    for (const bad of ['0', '201', 'x']) {
      const r = await env.request('GET', `/api/v1/monitoring/reasoning/${agent}?limit=${bad}`, { token: env.member.token });
      expectError(r, 400);
      expect(r.body.details).toHaveProperty('limit');
    }
  });

  it("another organization's agent is 404; unknown agent is 404; 401 without a token", async () => {
    const b = (await createAgent(env.ctxOf(env.otherOwner), { name: 'B thinker' })).id;
    expectError(await env.request('GET', `/api/v1/monitoring/reasoning/${b}`, { token: env.owner.token }), 404);
    expectError(await env.request('GET', '/api/v1/monitoring/reasoning/agt_missing', { token: env.owner.token }), 404);
    expectError(await env.request('GET', `/api/v1/monitoring/reasoning/${b}`), 401);
    expect((await env.request('GET', `/api/v1/monitoring/reasoning/${b}`, { token: env.otherOwner.token })).status).toBe(200);
  });
});
