import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type Res, type TestEnv } from './helpers.js';
import { newId } from '../src/ids.js';
import { createAgentTemplate } from '../src/services/agent_templates.js';
import { createAgent, loadAgentForRun } from '../src/services/agents.js';
import { createProject } from '../src/services/projects.js';
import type { AppError } from '../src/errors.js';
import { runUntilIdle } from '../src/engine/queue.js';
import { createProvider, upsertModel } from '../src/services/providers.js';
import { startFakeLlm, type FakeLlm } from './support/llm-server.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const BASE = '/api/v1/agents';
const post = (path: string, body: unknown, token = env.member.token) => env.request('POST', `${BASE}${path}`, { token, body });
const get = (path: string, token = env.member.token) => env.request('GET', `${BASE}${path}`, { token });
const ok = (res: Res, status = 200) => { expect(res.status, res.text).toBe(status); return res.body; };

const templatePolicy = { model: 'gpt-4o', system_prompt: 'Nurture leads', tools_allowed: ['memory_search', 'send_email'], tools_requiring_approval: ['send_email'], max_steps: 8, retry: { max_attempts: 3, backoff_ms: 500 } };
const schema = { type: 'object', properties: { score: { type: 'integer' } }, required: ['score'] };

async function template(name: string, extra: Record<string, unknown> = {}) {
  return createAgentTemplate(env.ctxOf(env.owner), { name, config: { tone: 'friendly', lang: 'en' }, execution_policy: templatePolicy, output_schema: schema, ...extra });
}

describe('agents: create, spawn, show, update, delete', () => {
  it('creates an agent from scratch (FluxGate create) with the documented shape', async () => {
    const body = ok(await post('', { name: 'Scratch', description: 'From nothing', config: { a: 1 }, execution_policy: { model: 'gpt-4o-mini', max_steps: 3 } }), 201);
    expect(Object.keys(body).sort()).toEqual([
      'config', 'created_at', 'description', 'effective_policy', 'execution_policy', 'id', 'last_run_at', 'name', 'output_schema', 'project_id', 'status', 'template_id', 'updated_at', 'workflow_id',
    ]);
    expect(body).toMatchObject({
      name: 'Scratch', description: 'From nothing', status: 'active', template_id: null, workflow_id: null, project_id: null, config: { a: 1 },
      execution_policy: { model: 'gpt-4o-mini', max_steps: 3 }, effective_policy: { model: 'gpt-4o-mini', max_steps: 3 }, output_schema: null, last_run_at: null,
    });
    expect(body.id).toMatch(/^agt_/);
    expect(ok(await get(`/${body.id}`, env.viewer.token))).toEqual(body);
    const missingName = await post('', { description: 'x' });
    expectError(missingName, 400);
    expect(missingName.body.details).toHaveProperty('name');
  });

  it('spawns from a template: name, config and policy inherited, overrides merged', async () => {
    const t = await template('Spawn base');
    const plain = ok(await post('/spawn', { template_id: t.id }), 201);
    expect(plain).toMatchObject({
      name: 'Spawn base', template_id: t.id, config: { tone: 'friendly', lang: 'en' }, execution_policy: {}, effective_policy: templatePolicy, output_schema: null,
    });
    const spawned = ok(await post('/spawn', {
      template_id: t.id, name: 'Custom', config: { lang: 'fr', extra: true },
      execution_policy: { model: 'claude-sonnet', tools_allowed: ['memory_search', 'send_email', 'contact_lookup'], retry: { backoff_ms: 50 }, max_cost_usd: 0.25 },
    }), 201);
    expect(spawned).toMatchObject({
      name: 'Custom', template_id: t.id, config: { tone: 'friendly', lang: 'fr', extra: true },
      execution_policy: { model: 'claude-sonnet', tools_allowed: ['memory_search', 'send_email', 'contact_lookup'], retry: { backoff_ms: 50 }, max_cost_usd: 0.25 },
    });
    expect(spawned.effective_policy).toEqual({
      ...templatePolicy, model: 'claude-sonnet', tools_allowed: ['memory_search', 'send_email', 'contact_lookup'], retry: { max_attempts: 3, backoff_ms: 50 }, max_cost_usd: 0.25,
    });
    // A template change reaches its agents' effective policy.
    ok(await env.request('PATCH', `/api/v1/agent_templates/${t.id}/execution_policy`, { token: env.member.token, body: { max_steps: 4 } }));
    expect(ok(await get(`/${spawned.id}`)).effective_policy.max_steps).toBe(4);

    // POST /agents with a template_id does the same.
    const created = ok(await post('', { name: 'Via create', template_id: t.id, execution_policy: { temperature: 0.2 } }), 201);
    expect(created.effective_policy).toEqual({ ...templatePolicy, max_steps: 4, temperature: 0.2 });
  });

  it('spawn from a workflow is refused honestly (400), as is a spawn with neither', async () => {
    const wf = await post('/spawn', { workflow_id: 'wf_123' });
    expectError(wf, 400);
    expect(wf.body.details.workflow_id).toMatch(/Workflows are not available yet/);
    const both = await post('/spawn', { workflow_id: 'wf_123', template_id: (await template('Both')).id });
    expectError(both, 400);
    expect(both.body.details).toHaveProperty('workflow_id');
    const neither = await post('/spawn', { name: 'x' });
    expectError(neither, 400);
    expect(neither.body.details).toHaveProperty('template_id');
    const unknownTemplate = await post('/spawn', { template_id: 'atp_missing' });
    expectError(unknownTemplate, 400);
    expect(unknownTemplate.body.details).toHaveProperty('template_id');
  });

  it('validates overrides, and the merged policy as a whole', async () => {
    const t = await template('Validation base');
    const before = ok(await get('?page_size=1')).count;
    const unknown = await post('/spawn', { template_id: t.id, execution_policy: { max_tokens: 3 } });
    expectError(unknown, 400);
    expect(unknown.body.details.execution_policy).toMatch(/Unknown execution policy key: "max_tokens"/);
    const range = await post('', { name: 'x', execution_policy: { temperature: 3, max_steps: 1000 } });
    expectError(range, 400);
    expect(Object.keys(range.body.details).sort()).toEqual(['execution_policy.max_steps', 'execution_policy.temperature']);
    // Approval of a tool the merge does not allow.
    const approval = await post('/spawn', { template_id: t.id, execution_policy: { tools_requiring_approval: ['contact_lookup'] } });
    expectError(approval, 400);
    expect(approval.body.details['execution_policy.tools_requiring_approval']).toMatch(/"contact_lookup"/);
    const narrowed = await post('/spawn', { template_id: t.id, execution_policy: { tools_allowed: ['memory_search'] } });
    expectError(narrowed, 400);
    expect(narrowed.body.details).toHaveProperty(['execution_policy.tools_requiring_approval']);
    // Allowed by the template: only the approval list overridden.
    expect((await post('/spawn', { template_id: t.id, execution_policy: { tools_requiring_approval: ['memory_search'] } })).status).toBe(201);
    const badSchema = await post('', { name: 'x', output_schema: { type: 'object', properties: { a: { type: 'strin' } } } });
    expectError(badSchema, 400);
    expect(badSchema.body.details).toHaveProperty('output_schema');
    const project = await createProject(env.ctxOf(env.otherOwner), { name: 'B project' });
    const foreignProject = await post('', { name: 'x', project_id: project.id });
    expectError(foreignProject, 400);
    expect(foreignProject.body.details).toHaveProperty('project_id');
    expect(ok(await get('?page_size=1')).count).toBe(before + 1);
  });

  it('PATCH changes status, config and overrides (validated after the merge); paused agents do not run', async () => {
    const t = await template('Patch base');
    const a = ok(await post('/spawn', { template_id: t.id, name: 'Patchable', config: { x: 1 } }), 201);
    const paused = ok(await env.request('PATCH', `${BASE}/${a.id}`, { token: env.member.token, body: { status: 'paused', config: { y: 2 }, description: 'Now paused' } }));
    expect(paused).toMatchObject({ status: 'paused', config: { y: 2 }, description: 'Now paused', name: 'Patchable' });
    const ctx = env.ctxOf(env.owner);
    const err = (await loadAgentForRun(ctx, a.id).catch((e: unknown) => e)) as AppError;
    expect(err.status).toBe(409);
    expect(JSON.stringify(err.details)).toMatch(/paused/);

    const bad = await env.request('PATCH', `${BASE}/${a.id}`, { token: env.member.token, body: { execution_policy: { tools_requiring_approval: ['nope'] } } });
    expectError(bad, 400);
    expect(bad.body.details).toHaveProperty(['execution_policy.tools_requiring_approval']);
    const badStatus = await env.request('PATCH', `${BASE}/${a.id}`, { token: env.member.token, body: { status: 'running' } });
    expectError(badStatus, 400);
    expect(badStatus.body.details).toHaveProperty('status');

    const active = ok(await env.request('PATCH', `${BASE}/${a.id}`, { token: env.member.token, body: { status: 'active', execution_policy: { max_steps: 2 }, output_schema: { type: 'object' } } }));
    expect(active.effective_policy).toEqual({ ...templatePolicy, max_steps: 2 });
    const loaded = await loadAgentForRun(ctx, a.id);
    expect(loaded.agent.id).toBe(a.id);
    expect(loaded.policy).toEqual({ ...templatePolicy, max_steps: 2 });
    expect(loaded.outputSchema).toEqual({ type: 'object' });
    // Back to the template's output schema, and to the template's policy.
    ok(await env.request('PATCH', `${BASE}/${a.id}`, { token: env.member.token, body: { output_schema: null, execution_policy: {} } }));
    const reloaded = await loadAgentForRun(ctx, a.id);
    expect(reloaded.outputSchema).toEqual(schema);
    expect(reloaded.policy).toEqual(templatePolicy);

    ok(await env.request('PATCH', `${BASE}/${a.id}`, { token: env.member.token, body: { status: 'archived' } }));
    expect(((await loadAgentForRun(ctx, a.id).catch((e: unknown) => e)) as AppError).status).toBe(409);
    const foreign = (await loadAgentForRun(env.ctxOf(env.otherOwner), a.id).catch((e: unknown) => e)) as AppError;
    expect(foreign.status).toBe(404);
  });

  it('lists newest first with filters: status, template_id, project_id, search', async () => {
    const t = await template('List base');
    const project = await createProject(env.ctxOf(env.owner), { name: 'Agents project' });
    const a1 = ok(await post('/spawn', { template_id: t.id, name: 'Listed alpha', project_id: project.id }), 201);
    const a2 = ok(await post('/spawn', { template_id: t.id, name: 'Listed beta' }), 201);
    ok(await env.request('PATCH', `${BASE}/${a2.id}`, { token: env.member.token, body: { status: 'paused' } }));
    const byTemplate = ok(await get(`?template_id=${t.id}`));
    expect(byTemplate.count).toBe(2);
    expect(byTemplate.results.map((a: { id: string }) => a.id)).toEqual([a2.id, a1.id]);
    expect(ok(await get(`?template_id=${t.id}&status=paused`)).results.map((a: { id: string }) => a.id)).toEqual([a2.id]);
    expect(ok(await get(`?project_id=${project.id}`)).results.map((a: { id: string }) => a.id)).toEqual([a1.id]);
    expect(ok(await get('?search=LISTED%20AL')).results.map((a: { id: string }) => a.id)).toEqual([a1.id]);
    const page = ok(await get(`?template_id=${t.id}&page_size=1`));
    expect(page.next).toMatch(/page=2/);
    expectError(await get('?status=sleeping'), 400);
  });

  it('deletes (204); 409 while a run is in flight', async () => {
    const a = await createAgent(env.ctxOf(env.owner), { name: 'To delete' });
    const run = await insertRun(a.id, { status: 'running', started_at: new Date().toISOString() });
    const refused = await env.request('DELETE', `${BASE}/${a.id}`, { token: env.member.token });
    expectError(refused, 409);
    expect(refused.body.details.runs).toMatch(/cancel/);
    await env.db.kysely.updateTable('runs').set({ status: 'cancelled', finished_at: new Date().toISOString() }).where('id', '=', run).execute();
    const res = await env.request('DELETE', `${BASE}/${a.id}`, { token: env.member.token });
    expect(res.status, res.text).toBe(204);
    expectError(await get(`/${a.id}`), 404);
    expect(await env.db.kysely.selectFrom('runs').select('id').where('id', '=', run).execute()).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Read side over runs, steps and events written directly (the runtime writes them in production).

const DAY = 86_400_000;
const todayStart = () => { const d = new Date(); d.setUTCHours(0, 0, 0, 0); return d.getTime(); };
const iso = (ms: number) => new Date(ms).toISOString();

async function insertRun(agentId: string, over: Record<string, unknown> = {}, org = env.orgA): Promise<string> {
  const id = newId('run');
  const now = iso(Date.now());
  await env.db.kysely.insertInto('runs').values({
    id, organization_id: org, agent_id: agentId, kind: 'agent', status: 'queued', created_at: now, updated_at: now,
    project_id: null, output: null, error: null, error_code: null, parent_run_id: null, replay_from_seq: null, job_id: null, created_by: null, started_at: null, finished_at: null,
    ...over,
  }).execute();
  return id;
}

let stepSeq = 0;
async function insertStep(runId: string, agentId: string, over: Record<string, unknown> = {}): Promise<string> {
  const id = newId('stp');
  await env.db.kysely.insertInto('run_steps').values({
    id, run_id: runId, organization_id: env.orgA, project_id: null, agent_id: agentId, seq: stepSeq++, type: 'llm', name: 'call', status: 'succeeded',
    input: null, output: null, error: null, provider_id: null, model: null, latency_ms: null, decision: null, decided_by: null, decided_at: null, decision_comment: null,
    created_at: iso(Date.now()), started_at: null, finished_at: null,
    ...over,
  }).execute();
  return id;
}

describe('agents: executions, status, logs, costs, metrics', () => {
  let costAgent: string;
  let metricsAgent: string;
  const runs: Record<string, string> = {};

  beforeAll(async () => {
    const ctx = env.ctxOf(env.owner);
    costAgent = (await createAgent(ctx, { name: 'Cost agent' })).id;
    metricsAgent = (await createAgent(ctx, { name: 'Metrics agent' })).id;
    const other = (await createAgent(ctx, { name: 'Other agent' })).id;
    const t0 = todayStart();

    // Costs: two runs in the window (today, yesterday), one 40 days ago.
    const r1 = await insertRun(costAgent, { status: 'succeeded', created_at: iso(t0 + 60_000) });
    await insertStep(r1, costAgent, { model: 'gpt-4o', tokens_in: 100, tokens_out: 50, cost: 0.01, created_at: iso(t0 + 61_000) });
    await insertStep(r1, costAgent, { type: 'tool', name: 'memory_search', created_at: iso(t0 + 62_000) });
    await insertStep(r1, costAgent, { model: 'gpt-4o-mini', tokens_in: 200, tokens_out: 20, cost: 0.002, created_at: iso(t0 + 63_000) });
    const r2 = await insertRun(costAgent, { status: 'succeeded', created_at: iso(t0 - DAY + 60_000) });
    await insertStep(r2, costAgent, { model: 'gpt-4o', tokens_in: 300, tokens_out: 100, cost: 0.03, created_at: iso(t0 - DAY + 61_000) });
    // Copied by a replay from another run: not paid again.
    await insertStep(r2, costAgent, { model: 'gpt-4o', tokens_in: 300, tokens_out: 100, cost: 0.03, reused: 1, created_at: iso(t0 - DAY + 62_000) });
    const r3 = await insertRun(costAgent, { status: 'succeeded', created_at: iso(t0 - 40 * DAY) });
    await insertStep(r3, costAgent, { model: 'gpt-4o', tokens_in: 1000, tokens_out: 1000, cost: 1, created_at: iso(t0 - 40 * DAY) });
    const ro = await insertRun(other, { status: 'succeeded' });
    await insertStep(ro, other, { model: 'gpt-4o', tokens_in: 5, tokens_out: 5, cost: 5 });

    // Metrics: today, finished latencies 500 (cancelled), 1000..4000 (succeeded), 10000 (failed).
    const base = t0 + 3_600_000;
    const finished = async (status: string, ms: number, steps: number, extra: Record<string, unknown> = {}) => {
      const id = await insertRun(metricsAgent, { status, created_at: iso(base), started_at: iso(base + 1000), finished_at: iso(base + 1000 + ms), updated_at: iso(base + 1000 + ms), ...extra });
      for (let i = 0; i < steps; i++) {
        await insertStep(id, metricsAgent, status === 'failed'
          ? { model: 'gpt-4o', tokens_in: 100, tokens_out: 0, cost: 0.005, status: 'failed', error: 'timeout', created_at: iso(base + 2000) }
          : { model: 'gpt-4o-mini', tokens_in: 10, tokens_out: 5, cost: 0.001, created_at: iso(base + 2000) });
      }
      return id;
    };
    for (const ms of [3000, 1000, 4000, 2000]) runs[`ok${ms}`] = await finished('succeeded', ms, 2);
    runs.failed = await finished('failed', 10_000, 1, { error: 'Provider timed out', error_code: 'provider_error' });
    runs.cancelled = await finished('cancelled', 500, 0);
    runs.running = await insertRun(metricsAgent, { status: 'running', created_at: iso(base), started_at: iso(base + 1000), updated_at: iso(base + 5000) });
    await insertStep(runs.running, metricsAgent, { model: 'gpt-4o-mini', tokens_in: 7, tokens_out: 3, cost: 0.0005, created_at: iso(base + 2000) });
    runs.awaiting = await insertRun(metricsAgent, { status: 'awaiting_approval', created_at: iso(base), started_at: iso(base + 1000), updated_at: iso(base + 9000) });
    runs.queued = await insertRun(metricsAgent, { status: 'queued', created_at: iso(base), updated_at: iso(base) });
    // Outside a 30-day window.
    runs.old = await insertRun(metricsAgent, { status: 'succeeded', created_at: iso(t0 - 40 * DAY), started_at: iso(t0 - 40 * DAY), finished_at: iso(t0 - 40 * DAY + 99_000), updated_at: iso(t0 - 40 * DAY + 99_000) });
    await insertStep(runs.old, metricsAgent, { model: 'gpt-4o', tokens_in: 1000, cost: 2, created_at: iso(t0 - 40 * DAY) });
  });

  it('costs: totals, by model and by day over the window, exact', async () => {
    const c = ok(await get(`/${costAgent}/costs`, env.viewer.token));
    expect(c).toMatchObject({ agent_id: costAgent, days: 30, currency: 'USD' });
    expect(c.since).toBe(iso(todayStart() - 29 * DAY));
    expect(c.total).toEqual({ cost: 0.042, tokens_in: 600, tokens_out: 170, calls: 3 });
    expect(c.by_model).toEqual([
      { model: 'gpt-4o', cost: 0.04, tokens_in: 400, tokens_out: 150, calls: 2 },
      { model: 'gpt-4o-mini', cost: 0.002, tokens_in: 200, tokens_out: 20, calls: 1 },
    ]);
    expect(c.by_day).toHaveLength(30);
    expect(c.by_day[29]).toEqual({ date: iso(todayStart()).slice(0, 10), cost: 0.012, tokens_in: 300, tokens_out: 70, calls: 2 });
    expect(c.by_day[28]).toEqual({ date: iso(todayStart() - DAY).slice(0, 10), cost: 0.03, tokens_in: 300, tokens_out: 100, calls: 1 });
    expect(c.by_day.slice(0, 28).every((d: { calls: number; cost: number }) => d.calls === 0 && d.cost === 0)).toBe(true);

    const wide = ok(await get(`/${costAgent}/costs?days=60`));
    expect(wide.total).toEqual({ cost: 1.042, tokens_in: 1600, tokens_out: 1170, calls: 4 });
    expect(wide.by_day).toHaveLength(60);
    const one = ok(await get(`/${costAgent}/costs?days=1`));
    expect(one.total).toEqual({ cost: 0.012, tokens_in: 300, tokens_out: 70, calls: 2 });
    for (const bad of ['0', '366', 'x', '1.5']) {
      const res = await get(`/${costAgent}/costs?days=${bad}`);
      expectError(res, 400);
      expect(res.body.details).toHaveProperty('days');
    }
  });

  it('metrics: counts, success rate, latency percentiles, steps, tokens and cost, exact', async () => {
    const m = ok(await get(`/${metricsAgent}/metrics`, env.viewerKey));
    expect(m).toEqual({
      agent_id: metricsAgent, days: 30, since: iso(todayStart() - 29 * DAY),
      runs: 9, succeeded: 4, failed: 1, cancelled: 1, in_progress: 3,
      success_rate: 0.8,
      // Sorted: 500 1000 2000 3000 4000 10000; p = v[lo] + frac·(v[lo+1] − v[lo]) at (n−1)·p.
      latency_ms: { p50: 2500, p95: 8500, p99: 9700, avg: 3416.67 },
      avg_steps: 1.5,
      tokens_in: 187, tokens_out: 43, cost: 0.0135,
    });
    const wide = ok(await get(`/${metricsAgent}/metrics?days=365`));
    expect(wide).toMatchObject({ runs: 10, succeeded: 5, success_rate: 0.8333, tokens_in: 1187, cost: 2.0135 });
    // With the old run (99 s): 500 1000 2000 3000 4000 10000 99000.
    expect(wide.latency_ms).toMatchObject({ p50: 3000, p99: 93660 });
    const empty = ok(await get(`/${costAgent}/metrics?days=1`));
    expect(empty).toMatchObject({ runs: 1, succeeded: 1, success_rate: 1, latency_ms: { p50: null, p95: null, p99: null, avg: null }, avg_steps: 3 });
    const none = await createAgent(env.ctxOf(env.owner), { name: 'No runs' });
    expect(ok(await get(`/${none.id}/metrics`))).toMatchObject({ runs: 0, success_rate: null, avg_steps: null, tokens_in: 0, cost: 0 });
  });

  it('executions: newest first, filtered by status, paginated', async () => {
    const all = ok(await get(`/${metricsAgent}/executions`));
    expect(all.count).toBe(10);
    expect(all.results[0].id).toBe(runs.old);
    expect(all.results.map((r: { id: string }) => r.id)).toEqual([...all.results.map((r: { id: string }) => r.id)].sort().reverse());
    const failed = ok(await get(`/${metricsAgent}/executions?status=failed`));
    expect(failed.results).toHaveLength(1);
    expect(failed.results[0]).toMatchObject({ id: runs.failed, status: 'failed', error: 'Provider timed out', error_code: 'provider_error', kind: 'agent', input: {}, policy: {} });
    expect(failed.results[0].finished_at).toBe(iso(Date.parse(failed.results[0].started_at) + 10_000));
    const page = ok(await get(`/${metricsAgent}/executions?page_size=4`));
    expect(page.results).toHaveLength(4);
    expect(page.next).toMatch(/page=2/);
    expectError(await get(`/${metricsAgent}/executions?status=done`), 400);
  });

  it('status: the agent, its runs by status, runs in progress, last run and last error', async () => {
    const s = ok(await get(`/${metricsAgent}/status`, env.viewer.token));
    expect(s).toMatchObject({
      agent_id: metricsAgent, name: 'Metrics agent', status: 'active',
      runs: { queued: 1, running: 1, waiting: 0, awaiting_approval: 1, succeeded: 5, failed: 1, cancelled: 1, total: 10 },
      last_error: { run_id: runs.failed, error: 'Provider timed out', error_code: 'provider_error' },
    });
    expect(s.current_runs.map((r: { id: string }) => r.id)).toEqual([runs.awaiting, runs.running]);
    expect(s.last_run.id).toBe(runs.old);
    expect(s.last_run_at).toBe(s.last_run.created_at);
    const fresh = await createAgent(env.ctxOf(env.owner), { name: 'Fresh' });
    expect(ok(await get(`/${fresh.id}/status`))).toMatchObject({ runs: { total: 0 }, current_runs: [], last_run: null, last_error: null, last_run_at: null });
    // The agent's last_run_at follows its newest run.
    expect(ok(await get(`/${metricsAgent}`)).last_run_at).toBe(s.last_run.created_at);
  });

  it('logs: log, status and step events of its runs, newest first, filtered by run and level', async () => {
    const agent = await createAgent(env.ctxOf(env.owner), { name: 'Logging agent' });
    const a = await insertRun(agent.id, { status: 'failed' });
    const b = await insertRun(agent.id, { status: 'succeeded' });
    const t = Date.now() - 60_000;
    const events: [string, number, string, object][] = [
      [a, 1, 'status', { status: 'running' }],
      [a, 2, 'step', { seq: 0, type: 'llm', name: 'plan', status: 'succeeded' }],
      [a, 3, 'token', { delta: 'Hel' }],
      [a, 4, 'log', { message: 'Looked up the contact', level: 'info', contact_id: 'con_1' }],
      [a, 5, 'step', { step: { seq: 1, type: 'tool', name: 'send_email', status: 'failed', error: 'SMTP refused' } }],
      [a, 6, 'status', { status: 'failed', error: 'SMTP refused' }],
      [a, 7, 'log', { message: 'Careful', level: 'warning' }],
      [b, 1, 'log', { message: 'Other run', level: 'debug' }],
    ];
    for (const [runId, seq, type, data] of events) {
      await env.db.kysely.insertInto('run_events').values({ run_id: runId, seq, organization_id: env.orgA, type, data: JSON.stringify(data), created_at: iso(t + seq * 1000 + (runId === b ? 500 : 0)) }).execute();
    }
    const logs = ok(await get(`/${agent.id}/logs`, env.viewer.token));
    expect(logs.count).toBe(7);
    expect(logs.results.map((l: { run_id: string; seq: number; level: string; message: string }) => [l.run_id === a ? 'a' : 'b', l.seq, l.level, l.message])).toEqual([
      ['a', 7, 'warn', 'Careful'],
      ['a', 6, 'error', 'Run failed: SMTP refused'],
      ['a', 5, 'error', 'Step 1 tool "send_email" failed: SMTP refused'],
      ['a', 4, 'info', 'Looked up the contact'],
      ['a', 2, 'info', 'Step 0 llm "plan" succeeded'],
      ['b', 1, 'debug', 'Other run'],
      ['a', 1, 'info', 'Run running'],
    ]);
    expect(logs.results[3]).toMatchObject({ type: 'log', data: { message: 'Looked up the contact', level: 'info', contact_id: 'con_1' } });
    const errors = ok(await get(`/${agent.id}/logs?level=error`));
    expect(errors.results.map((l: { seq: number }) => l.seq)).toEqual([6, 5]);
    expect(errors.count).toBe(2);
    expect(ok(await get(`/${agent.id}/logs?run_id=${b}`)).results.map((l: { message: string }) => l.message)).toEqual(['Other run']);
    expect(ok(await get(`/${agent.id}/logs?type=status`)).count).toBe(2);
    // Paging through the derived lines (cursor pages included) gives them all once.
    const seen: string[] = [];
    let url: string | null = `${BASE}/${agent.id}/logs?page_size=3`;
    while (url) {
      const page: { results: { id: string }[]; next: string | null } = ok(await env.request('GET', url, { token: env.member.token }));
      seen.push(...page.results.map((l) => l.id));
      url = page.next ? new URL(page.next).pathname + new URL(page.next).search : null;
    }
    expect(seen).toEqual(logs.results.map((l: { id: string }) => l.id));
    expectError(await get(`/${agent.id}/logs?level=loud`), 400);
  });
});

describe('agents: security', () => {
  it("another organization's agent is 404 on every route; lists leave it out", async () => {
    const b = await createAgent(env.ctxOf(env.otherOwner), { name: 'B agent' });
    await insertRun(b.id, { status: 'succeeded' }, env.orgB);
    expect(ok(await get('?page_size=100', env.owner.token)).results.map((a: { id: string }) => a.id)).not.toContain(b.id);
    for (const sub of ['', '/executions', '/status', '/logs', '/costs', '/metrics']) expectError(await get(`/${b.id}${sub}`, env.owner.token), 404);
    expectError(await env.request('PATCH', `${BASE}/${b.id}`, { token: env.owner.token, body: { status: 'paused' } }), 404);
    expectError(await env.request('DELETE', `${BASE}/${b.id}`, { token: env.owner.token }), 404);
    expect(ok(await get(`/${b.id}`, env.otherOwner.token)).status).toBe('active');
  });

  it('viewers read but cannot write (403); no token is 401', async () => {
    const a = await createAgent(env.ctxOf(env.owner), { name: 'Guarded' });
    expectError(await post('', { name: 'x' }, env.viewer.token), 403);
    expectError(await post('/spawn', { template_id: 'atp_x' }, env.viewerKey), 403);
    expectError(await env.request('PATCH', `${BASE}/${a.id}`, { token: env.viewer.token, body: { status: 'paused' } }), 403);
    expectError(await env.request('DELETE', `${BASE}/${a.id}`, { token: env.viewerKey }), 403);
    for (const sub of ['', `/${a.id}`, `/${a.id}/executions`, `/${a.id}/status`, `/${a.id}/logs`, `/${a.id}/costs`, `/${a.id}/metrics`]) {
      expectError(await env.request('GET', `${BASE}${sub}`), 401);
      expect((await get(sub, env.viewerKey)).status).toBe(200);
    }
  });
});

describe('agents: the read side over runs made by the runtime (fake LLM)', () => {
  let e2e: TestEnv;
  let llm: FakeLlm;
  beforeAll(async () => {
    e2e = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
    llm = await startFakeLlm();
  });
  afterAll(async () => {
    await llm?.close();
    await e2e?.close();
  });

  it('spawn from a template, execute twice (one failure), then costs, metrics, logs, status and reasoning agree with the runs', async () => {
    const ctx = e2e.ctxOf(e2e.owner);
    const provider = await createProvider(ctx, { name: 'fake', type: 'openai', base_url: llm.openaiBaseUrl, api_key: 'sk-test-0123456789abcdef', default_model: 'gpt-4o-mini' });
    // $1000 per million input tokens, $2000 per million output tokens.
    await upsertModel(ctx, provider.id, 'gpt-4o-mini', { input_price_per_million: 1000, output_price_per_million: 2000 });
    const t = await createAgentTemplate(ctx, { name: 'E2E', execution_policy: { provider_id: provider.id, model: 'gpt-4o-mini', system_prompt: 'Be brief.', retry: { max_attempts: 1, backoff_ms: 0 } } });
    const spawned = await e2e.request('POST', '/api/v1/agents/spawn', { token: e2e.member.token, body: { template_id: t.id, execution_policy: { max_steps: 3 } } });
    expect(spawned.status, spawned.text).toBe(201);
    const id = spawned.body.id as string;

    llm.push({ text: 'Hello there', usage: { input: 100, output: 20 } });
    const ok1 = await e2e.request('POST', `/api/v1/agents/${id}/execute`, { token: e2e.member.token, body: { input: 'Hi' } });
    expect(ok1.status, ok1.text).toBe(202);
    expect(ok1.body.policy).toMatchObject({ system_prompt: 'Be brief.', max_steps: 3, model: 'gpt-4o-mini' });
    await runUntilIdle(e2e.app.deps, { types: ['runs.execute'] });
    llm.push({ status: 400, errorBody: { error: { message: 'bad request from the model', type: 'invalid_request_error' } } });
    const ko = await e2e.request('POST', `/api/v1/agents/${id}/execute`, { token: e2e.member.token, body: { input: 'Again' } });
    expect(ko.status, ko.text).toBe(202);
    await runUntilIdle(e2e.app.deps, { types: ['runs.execute'] });

    const read = async (sub: string) => { const r = await e2e.request('GET', `/api/v1/agents/${id}${sub}`, { token: e2e.viewer.token }); expect(r.status, r.text).toBe(200); return r.body; };
    const costs = await read('/costs?days=1');
    expect(costs.total).toMatchObject({ tokens_in: 100, tokens_out: 20 });
    expect(costs.total.cost).toBeCloseTo(0.14, 10);
    expect(costs.by_model.map((m: { model: string }) => m.model)).toEqual(['gpt-4o-mini']);

    const metrics = await read('/metrics');
    expect(metrics).toMatchObject({ runs: 2, succeeded: 1, failed: 1, success_rate: 0.5, tokens_in: 100, tokens_out: 20 });
    expect(metrics.latency_ms.p50).toBeGreaterThanOrEqual(0);

    const status = await read('/status');
    expect(status.runs).toMatchObject({ succeeded: 1, failed: 1, total: 2 });
    expect(status.last_run.id).toBe(ko.body.id);
    expect(status.last_error).toMatchObject({ run_id: ko.body.id });
    expect(status.last_error.error).toMatch(/bad request from the model/);

    const executions = await read('/executions');
    expect(executions.results.map((r: { id: string; status: string }) => [r.id, r.status])).toEqual([[ko.body.id, 'failed'], [ok1.body.id, 'succeeded']]);

    const logs = await read(`/logs?run_id=${ok1.body.id}`);
    const messages = logs.results.map((l: { message: string }) => l.message);
    expect(messages[0]).toBe('Run succeeded');
    expect(messages[messages.length - 1]).toBe('Run queued');
    expect(messages.some((m: string) => /^Step 0 llm ".+" succeeded$/.test(m))).toBe(true);
    const errors = await read('/logs?level=error');
    expect(errors.results.length).toBeGreaterThan(0);
    expect(errors.results.every((l: { run_id: string; level: string }) => l.run_id === ko.body.id && l.level === 'error')).toBe(true);

    const trace = await e2e.request('GET', `/api/v1/monitoring/reasoning/${id}`, { token: e2e.viewer.token });
    expect(trace.status, trace.text).toBe(200);
    expect(trace.body.results[0]).toMatchObject({ run_id: ko.body.id, type: 'llm', status: 'failed' });
    expect(trace.body.results.at(-1)).toMatchObject({ run_id: ok1.body.id, type: 'llm', status: 'succeeded', model: 'gpt-4o-mini', tokens_in: 100, tokens_out: 20 });
    const live = await e2e.request('GET', '/api/v1/monitoring/agents', { token: e2e.viewer.token });
    expect(live.body.results.find((a: { id: string }) => a.id === id)).toMatchObject({ running: 0, queued: 0 });
    expect(live.body.results.find((a: { id: string }) => a.id === id).cost_today).toBeCloseTo(0.14, 10);
  });
});
