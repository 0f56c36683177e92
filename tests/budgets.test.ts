import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { toHttpError } from '../src/errors.js';
import { newId, nowIso } from '../src/ids.js';
import { createOrganization } from '../src/services/organizations.js';
import { createProject } from '../src/services/projects.js';
import {
  assertWithinBudget, BudgetExceededError, createBudget, periodAt, recordSpend, type BudgetInput,
} from '../src/services/budgets.js';
import type { Ctx } from '../src/context.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });
afterEach(() => { vi.useRealTimers(); });

const BASE = '/api/v1/budgets';
const create = (body: unknown, token = env.member.token) => env.request('POST', BASE, { token, body });

// ---- Test data: agents, runs and run steps written directly (the runtime writes them in production).

async function agentIn(org: string, projectId: string | null = null): Promise<string> {
  const id = newId('agt');
  const now = nowIso();
  await env.db.kysely.insertInto('agents').values({ id, organization_id: org, project_id: projectId, name: `agent ${id}`, created_at: now, updated_at: now }).execute();
  return id;
}

/** One run with one step costing `cost`, recorded at `at`. */
async function spend(org: string, cost: number, at: string, where: { agentId?: string | null; projectId?: string | null } = {}): Promise<void> {
  const runId = newId('run');
  await env.db.kysely.insertInto('runs').values({
    id: runId, organization_id: org, project_id: where.projectId ?? null, agent_id: where.agentId ?? null, kind: 'agent', created_at: at, updated_at: at,
  }).execute();
  await env.db.kysely.insertInto('run_steps').values({
    id: newId('stp'), run_id: runId, organization_id: org, project_id: where.projectId ?? null, agent_id: where.agentId ?? null,
    seq: 0, type: 'llm', name: 'call', status: 'succeeded', cost, created_at: at,
  }).execute();
}

/** A fresh organization and an owner context in it, so that organization-wide sums start at zero. */
async function freshOrg(): Promise<{ org: string; ctx: Ctx }> {
  const org = (await createOrganization(env.db.kysely, { name: `Budget org ${Math.random()}` })).id;
  return { org, ctx: env.ctxOf({ ...env.owner, organizationId: org }) };
}

const budgetIn = (ctx: Ctx, input: Partial<BudgetInput> = {}) =>
  createBudget(ctx, { name: `budget ${Math.random()}`, scope: 'organization', limit_usd: 10, ...input });

const catchErr = async (p: Promise<unknown>): Promise<unknown> => p.then(() => { throw new Error('expected a rejection'); }, (e: unknown) => e);

describe('budgets CRUD', () => {
  it('creates, shows, lists with filters, updates and deletes', async () => {
    const created = await create({ name: 'Org monthly', scope: 'organization', limit_usd: 100 });
    expect(created.status, created.text).toBe(201);
    expect(created.body).toEqual({
      id: expect.stringMatching(/^bud_/), name: 'Org monthly', scope: 'organization', scope_id: null, period: 'monthly', limit_usd: 100,
      alert_thresholds: [50, 80, 100], enabled: true, created_at: expect.any(String), updated_at: expect.any(String),
    });
    const id = created.body.id as string;

    const project = await env.request('POST', '/api/v1/projects', { token: env.member.token, body: { name: 'Budgeted project' } });
    const projectBudget = await create({ name: 'Project daily', scope: 'project', scope_id: project.body.id, period: 'daily', limit_usd: 2.5, alert_thresholds: [90, 25, 25] });
    expect(projectBudget.status, projectBudget.text).toBe(201);
    expect(projectBudget.body).toMatchObject({ scope: 'project', scope_id: project.body.id, period: 'daily', limit_usd: 2.5, alert_thresholds: [25, 90] });

    const shown = await env.request('GET', `${BASE}/${id}`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(created.body);

    const all = await env.request('GET', BASE, { token: env.viewerKey });
    expect(all.status).toBe(200);
    expect(all.body.results.map((b: { id: string }) => b.id)).toEqual(expect.arrayContaining([id, projectBudget.body.id]));
    const projects = await env.request('GET', `${BASE}?scope=project&scope_id=${project.body.id}`, { token: env.viewer.token });
    expect(projects.body.results.map((b: { id: string }) => b.id)).toEqual([projectBudget.body.id]);
    expect(projects.body.count).toBe(1);

    const patched = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { limit_usd: 50.5, period: 'weekly', enabled: false, alert_thresholds: [75] } });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body).toMatchObject({ id, name: 'Org monthly', limit_usd: 50.5, period: 'weekly', enabled: false, alert_thresholds: [75] });
    const disabled = await env.request('GET', `${BASE}?enabled=false`, { token: env.viewer.token });
    expect(disabled.body.results.map((b: { id: string }) => b.id)).toEqual([id]);

    // Moving the budget to an agent (it must exist in the organization), then back to the organization.
    const agentId = await agentIn(env.orgA);
    const toAgent = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { scope: 'agent', scope_id: agentId } });
    expect(toAgent.body).toMatchObject({ scope: 'agent', scope_id: agentId });
    const toOrg = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { scope: 'organization' } });
    expect(toOrg.body).toMatchObject({ scope: 'organization', scope_id: null });

    const deleted = await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token });
    expect(deleted.status).toBe(204);
    expect(deleted.text).toBe('');
    expectError(await env.request('GET', `${BASE}/${id}`, { token: env.member.token }), 404);
    expectError(await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token }), 404);
    expectError(await env.request('GET', `${BASE}/${id}/usage`, { token: env.member.token }), 404);
  });

  it('validates the body, naming the field, and writes nothing', async () => {
    const count = async () => (await env.request('GET', BASE, { token: env.owner.token })).body.count as number;
    const before = await count();
    const cases: [unknown, string][] = [
      [{ scope: 'organization', limit_usd: 1 }, 'name'],
      [{ name: 'x', scope: 'organization' }, 'limit_usd'],
      [{ name: 'x', scope: 'organization', limit_usd: 0 }, 'limit_usd'],
      [{ name: 'x', scope: 'organization', limit_usd: -5 }, 'limit_usd'],
      [{ name: 'x', scope: 'organization', limit_usd: '5' }, 'limit_usd'],
      [{ name: 'x', scope: 'galaxy', limit_usd: 1 }, 'scope'],
      [{ name: 'x', scope: 'organization', limit_usd: 1, period: 'hourly' }, 'period'],
      [{ name: 'x', scope: 'organization', limit_usd: 1, alert_thresholds: [0] }, 'alert_thresholds.0'],
      [{ name: 'x', scope: 'organization', limit_usd: 1, alert_thresholds: [50, 101] }, 'alert_thresholds.1'],
      [{ name: 'x', scope: 'organization', limit_usd: 1, alert_thresholds: [50.5] }, 'alert_thresholds.0'],
      [{ name: 'x', scope: 'organization', limit_usd: 1, scope_id: 'prj_x' }, 'scope_id'],
      [{ name: 'x', scope: 'project', limit_usd: 1 }, 'scope_id'],
      [{ name: 'x', scope: 'agent', limit_usd: 1, scope_id: null }, 'scope_id'],
      [{ name: 'x', scope: 'project', limit_usd: 1, scope_id: 'prj_missing' }, 'scope_id'],
      [{ name: 'x', scope: 'agent', limit_usd: 1, scope_id: 'agt_missing' }, 'scope_id'],
    ];
    for (const [body, field] of cases) {
      const res = await create(body);
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body)).toHaveProperty([field]);
    }
    // Another organization's project or agent is as unknown as a missing one.
    const foreignProject = await createProject(env.ctxOf(env.otherOwner), { name: 'B project' });
    const foreignAgent = await agentIn(env.orgB);
    expect((await create({ name: 'x', scope: 'project', limit_usd: 1, scope_id: foreignProject.id })).body.details).toHaveProperty('scope_id');
    expect((await create({ name: 'x', scope: 'agent', limit_usd: 1, scope_id: foreignAgent })).body.details).toHaveProperty('scope_id');
    expect(await count()).toBe(before);

    // PATCH validates the merged budget: an agent scope needs an agent id, and nothing changes on a refusal.
    const b = await create({ name: 'Patch me', scope: 'organization', limit_usd: 3 });
    const noId = await env.request('PATCH', `${BASE}/${b.body.id}`, { token: env.member.token, body: { scope: 'agent' } });
    expectError(noId, 400);
    expect(noId.body.details).toHaveProperty('scope_id');
    const badLimit = await env.request('PATCH', `${BASE}/${b.body.id}`, { token: env.member.token, body: { limit_usd: 0, name: 'changed' } });
    expectError(badLimit, 400);
    expect(badLimit.body.details).toHaveProperty('limit_usd');
    expect((await env.request('GET', `${BASE}/${b.body.id}`, { token: env.member.token })).body).toEqual(b.body);
    expectError(await env.request('GET', `${BASE}?scope=nope`, { token: env.member.token }), 400);
  });
});

describe('periods', () => {
  it('are UTC calendar periods: days, weeks from Monday, months, and all time', () => {
    const at = new Date('2026-11-22T15:04:05.678Z'); // a Sunday
    expect(periodAt('daily', at)).toEqual({ start: '2026-11-22T00:00:00.000Z', end: '2026-11-23T00:00:00.000Z' });
    expect(periodAt('weekly', at)).toEqual({ start: '2026-11-16T00:00:00.000Z', end: '2026-11-23T00:00:00.000Z' });
    expect(periodAt('weekly', new Date('2026-11-23T00:00:00.000Z'))).toEqual({ start: '2026-11-23T00:00:00.000Z', end: '2026-11-30T00:00:00.000Z' });
    expect(periodAt('weekly', new Date('2026-11-29T23:59:59.999Z')).start).toBe('2026-11-23T00:00:00.000Z');
    expect(periodAt('weekly', new Date('2027-01-01T10:00:00Z'))).toEqual({ start: '2026-12-28T00:00:00.000Z', end: '2027-01-04T00:00:00.000Z' });
    expect(periodAt('monthly', at)).toEqual({ start: '2026-11-01T00:00:00.000Z', end: '2026-12-01T00:00:00.000Z' });
    expect(periodAt('monthly', new Date('2026-12-31T23:59:59.999Z'))).toEqual({ start: '2026-12-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z' });
    expect(periodAt('monthly', new Date('2028-02-29T12:00:00Z'))).toEqual({ start: '2028-02-01T00:00:00.000Z', end: '2028-03-01T00:00:00.000Z' });
    expect(periodAt('total', at)).toEqual({ start: '1970-01-01T00:00:00.000Z', end: null });
  });
});

describe('usage', () => {
  it('sums the run steps in scope during the current period, with a per-day breakdown', async () => {
    const now = new Date();
    const day = periodAt('daily', now);
    const month = periodAt('monthly', now);
    const week = periodAt('weekly', now);
    const beforeMonth = new Date(Date.parse(month.start) - 1).toISOString();
    const beforeDay = new Date(Date.parse(day.start) - 1).toISOString();
    // Organization A's only spend in this file: today, at the very start of the day and month, and before them.
    await spend(env.orgA, 0.1, nowIso());
    await spend(env.orgA, 0.2, day.start);
    await spend(env.orgA, 1, month.start);
    await spend(env.orgA, 4, beforeMonth);
    await spend(env.orgA, 8, beforeDay);
    await spend(env.orgB, 100, nowIso()); // another organization's spend never counts

    const daily = await create({ name: 'Usage daily', scope: 'organization', period: 'daily', limit_usd: 1.2 });
    const u = await env.request('GET', `${BASE}/${daily.body.id}/usage`, { token: env.viewer.token });
    expect(u.status, u.text).toBe(200);
    expect(u.body).toEqual({
      budget_id: daily.body.id, period: 'daily', period_start: day.start, period_end: day.end,
      used_usd: 0.3, limit_usd: 1.2, remaining_usd: 0.9, percent: 25, exceeded: false,
      by_day: [{ day: day.start.slice(0, 10), used_usd: 0.3 }],
    });

    const monthly = await create({ name: 'Usage monthly', scope: 'organization', period: 'monthly', limit_usd: 1 });
    const m = (await env.request('GET', `${BASE}/${monthly.body.id}/usage`, { token: env.viewer.token })).body;
    // The month's first day may be today; the step just before today counts when it is in this month.
    const expectedMonth = 0.1 + 0.2 + 1 + (beforeDay >= month.start ? 8 : 0);
    expect(m.used_usd).toBeCloseTo(expectedMonth, 9);
    expect(m).toMatchObject({ period_start: month.start, period_end: month.end, limit_usd: 1, remaining_usd: 0, exceeded: true });
    expect(m.percent).toBeCloseTo(expectedMonth * 100, 2);
    expect(m.by_day.length).toBe(now.getUTCDate());
    expect(m.by_day[0]).toEqual({ day: month.start.slice(0, 10), used_usd: expect.any(Number) });
    expect(m.by_day[m.by_day.length - 1].day).toBe(day.start.slice(0, 10));
    expect(m.by_day.reduce((a: number, d: { used_usd: number }) => a + d.used_usd, 0)).toBeCloseTo(expectedMonth, 9);

    const weekly = await create({ name: 'Usage weekly', scope: 'organization', period: 'weekly', limit_usd: 100 });
    const w = (await env.request('GET', `${BASE}/${weekly.body.id}/usage`, { token: env.viewer.token })).body;
    expect(w.period_start).toBe(week.start);
    expect(w.by_day.length).toBe(((now.getUTCDay() + 6) % 7) + 1);

    const total = await create({ name: 'Usage total', scope: 'organization', period: 'total', limit_usd: 100 });
    const t = (await env.request('GET', `${BASE}/${total.body.id}/usage`, { token: env.viewer.token })).body;
    expect(t).toMatchObject({ period: 'total', period_start: '1970-01-01T00:00:00.000Z', period_end: null, used_usd: 13.3, remaining_usd: 86.7, percent: 13.3 });
    expect(t.by_day.map((d: { day: string }) => d.day)).toEqual([...new Set([beforeMonth, month.start, beforeDay, day.start].map((s) => s.slice(0, 10)))].sort());
  });

  it('counts only the project or the agent a budget is for', async () => {
    const { org, ctx } = await freshOrg();
    const p1 = (await createProject(ctx, { name: 'P1' })).id;
    const p2 = (await createProject(ctx, { name: 'P2' })).id;
    const a1 = await agentIn(org, p1);
    const a2 = await agentIn(org, p1);
    const now = nowIso();
    await spend(org, 1, now, { agentId: a1, projectId: p1 });
    await spend(org, 2, now, { agentId: a2, projectId: p1 });
    await spend(org, 4, now, { projectId: p2 });
    await spend(org, 8, now);
    const usage = async (id: string) => (await env.request('GET', `${BASE}/${id}/usage`, { token: env.owner.token })).status;
    expect(await usage((await budgetIn(ctx)).id)).toBe(404); // the owner of organization A does not see it

    const { getBudgetUsage } = await import('../src/services/budgets.js');
    const used = async (input: Partial<BudgetInput>) => (await getBudgetUsage(ctx, (await budgetIn(ctx, { limit_usd: 100, ...input })).id)).used_usd;
    expect(await used({})).toBe(15);
    expect(await used({ scope: 'project', scope_id: p1 })).toBe(3);
    expect(await used({ scope: 'project', scope_id: p2 })).toBe(4);
    expect(await used({ scope: 'agent', scope_id: a1 })).toBe(1);
    expect(await used({ scope: 'agent', scope_id: a2 })).toBe(2);
  });
});

describe('enforcement before a paid step', () => {
  it('throws budget_exceeded (402) naming the budget when the estimate would exceed it', async () => {
    const { org, ctx } = await freshOrg();
    const b = await budgetIn(ctx, { name: 'Org cap', limit_usd: 1, period: 'daily' });
    await spend(org, 0.7, nowIso());
    await expect(assertWithinBudget(env.app.deps, { organizationId: org }, 0.3)).resolves.toBeUndefined();
    const err = await catchErr(assertWithinBudget(env.app.deps, { organizationId: org }, 0.31));
    expect(err).toBeInstanceOf(BudgetExceededError);
    const e = err as BudgetExceededError;
    expect(e.status).toBe(402);
    expect(e.errorCode).toBe('budget_exceeded');
    expect(e.retryable).toBe(false);
    const { status, body } = toHttpError(e);
    expect(status).toBe(402);
    expect(body.error).toBe('budget_exceeded');
    expect(body.details).toMatchObject({
      budget_id: b.id, name: 'Org cap', scope: 'organization', scope_id: null, limit: 1, used: 0.7, estimated_cost: 0.31,
      period: 'daily', period_start: periodAt('daily').start, period_end: periodAt('daily').end,
    });
    expect((body.details as { message: string }).message).toMatch(/Org cap.*0\.7.*1/);

    // Used up: even a step of unknown (zero) cost is refused; a disabled budget is not enforced.
    await spend(org, 0.3, nowIso());
    await expect(assertWithinBudget(env.app.deps, { organizationId: org }, 0)).rejects.toBeInstanceOf(BudgetExceededError);
    await env.db.kysely.updateTable('budgets').set({ enabled: 0 }).where('id', '=', b.id).execute();
    await expect(assertWithinBudget(env.app.deps, { organizationId: org }, 5)).resolves.toBeUndefined();
  });

  it('applies organization, project and agent budgets each only to their scope', async () => {
    const { org, ctx } = await freshOrg();
    const p1 = (await createProject(ctx, { name: 'P1' })).id;
    const p2 = (await createProject(ctx, { name: 'P2' })).id;
    const a1 = await agentIn(org, p1);
    const a2 = await agentIn(org, p2);
    const deps = env.app.deps;
    const now = nowIso();
    const agentBudget = await budgetIn(ctx, { scope: 'agent', scope_id: a1, limit_usd: 1 });
    await spend(org, 0.9, now, { agentId: a1, projectId: p1 });
    const refused = async (scope: Parameters<typeof assertWithinBudget>[1], estimate: number) =>
      ((await catchErr(assertWithinBudget(deps, scope, estimate))) as BudgetExceededError).budget.budget_id;

    // Agent budget: a1 only.
    expect(await refused({ organizationId: org, projectId: p1, agentId: a1 }, 0.2)).toBe(agentBudget.id);
    await assertWithinBudget(deps, { organizationId: org, projectId: p2, agentId: a2 }, 0.2);
    await assertWithinBudget(deps, { organizationId: org, projectId: p1 }, 0.2);
    await assertWithinBudget(deps, { organizationId: org }, 0.2);

    // Project budget: p1's steps and spenders only; the agent's project is found when the caller does not say.
    const projectBudget = await budgetIn(ctx, { scope: 'project', scope_id: p1, limit_usd: 2 });
    await spend(org, 1, now, { projectId: p1 });
    expect(await refused({ organizationId: org, projectId: p1 }, 0.2)).toBe(projectBudget.id);
    const a3 = await agentIn(org, p1);
    expect(await refused({ organizationId: org, agentId: a3 }, 0.15)).toBe(projectBudget.id);
    await assertWithinBudget(deps, { organizationId: org, projectId: p2, agentId: a2 }, 0.5);
    await assertWithinBudget(deps, { organizationId: org, projectId: null, agentId: a3 }, 0.15); // null: no project

    // Organization budget: everyone in the organization, no one outside it.
    const orgBudget = await budgetIn(ctx, { limit_usd: 3 });
    await spend(org, 1, now, { projectId: p2 });
    expect(await refused({ organizationId: org, projectId: p2, agentId: a2 }, 0.2)).toBe(orgBudget.id);
    expect(await refused({ organizationId: org }, 0.2)).toBe(orgBudget.id);
    await assertWithinBudget(deps, { organizationId: env.orgB }, 0.2);
  });
});

describe('alerts', () => {
  const eventsOf = async (org: string) => (await env.db.kysely.selectFrom('events').select(['type', 'payload']).where('organization_id', '=', org).orderBy('id').execute())
    .map((e) => ({ type: e.type, payload: JSON.parse(e.payload) as Record<string, unknown> }));

  it('raises each threshold once per period, with rows and events', async () => {
    const { org, ctx } = await freshOrg();
    const deps = env.app.deps;
    const b = await budgetIn(ctx, { name: 'Alerting', limit_usd: 10, period: 'monthly', alert_thresholds: [50, 80] });
    const step = async (cost: number) => { await spend(org, cost, nowIso()); await recordSpend(deps, { organizationId: org }, cost); };
    const alerts = async () => (await env.db.kysely.selectFrom('budget_alerts').selectAll().where('budget_id', '=', b.id).orderBy('threshold').execute());

    await step(4);
    expect(await alerts()).toEqual([]);
    await step(2); // 60 %
    expect((await alerts()).map((a) => [a.threshold, a.kind, a.used_usd])).toEqual([[50, 'threshold', 6]]);
    await step(0.5); // 65 %: nothing new
    await recordSpend(deps, { organizationId: org }, 0); // a free step changes nothing
    expect((await alerts()).length).toBe(1);
    await step(3); // 95 %: straight past 80
    expect((await alerts()).map((a) => a.threshold)).toEqual([50, 80]);
    await step(1); // 105 %: exceeded, although 100 is not among the thresholds
    await step(1);
    const rows = await alerts();
    expect(rows.map((a) => [a.threshold, a.kind])).toEqual([[50, 'threshold'], [80, 'threshold'], [100, 'exceeded']]);
    const period = periodAt('monthly');
    expect(rows.every((a) => a.period_start === period.start && a.limit_usd === 10 && a.organization_id === org)).toBe(true);

    const events = await eventsOf(org);
    expect(events.map((e) => [e.type, e.payload.threshold])).toEqual([
      ['budget.threshold_reached', 50], ['budget.threshold_reached', 80], ['budget.exceeded', 100],
    ]);
    expect(events[2].payload).toMatchObject({
      budget_id: b.id, name: 'Alerting', scope: 'organization', scope_id: null, period: 'monthly', threshold: 100,
      used_usd: 10.5, limit_usd: 10, percent: 105, period_start: period.start, period_end: period.end,
    });
    expect(events[0].payload.alert_id).toBe(rows[0].id);

    // Concurrent recorders still raise each alert once.
    const b2 = await budgetIn(ctx, { name: 'Concurrent', limit_usd: 20, period: 'total', alert_thresholds: [50] });
    await Promise.all(Array.from({ length: 5 }, () => recordSpend(deps, { organizationId: org }, 1)));
    const b2Alerts = await env.db.kysely.selectFrom('budget_alerts').select(['threshold']).where('budget_id', '=', b2.id).execute();
    expect(b2Alerts.map((a) => a.threshold)).toEqual([50]);
    expect((await eventsOf(org)).filter((e) => e.payload.budget_id === b2.id).length).toBe(1);
  });

  it('raises them again in the next period', async () => {
    const { org, ctx } = await freshOrg();
    const deps = env.app.deps;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-03-10T12:00:00.000Z'));
    const b = await budgetIn(ctx, { limit_usd: 1, period: 'daily', alert_thresholds: [50] });
    await spend(org, 0.6, nowIso());
    await recordSpend(deps, { organizationId: org }, 0.6);
    await recordSpend(deps, { organizationId: org }, 0.6);
    vi.setSystemTime(new Date('2030-03-11T00:00:00.000Z'));
    await recordSpend(deps, { organizationId: org }, 0.6); // the new day has no spend yet
    await spend(org, 0.5, nowIso());
    await recordSpend(deps, { organizationId: org }, 0.5);
    vi.useRealTimers();
    const rows = await env.db.kysely.selectFrom('budget_alerts').select(['threshold', 'period_start', 'used_usd']).where('budget_id', '=', b.id).orderBy('period_start').execute();
    expect(rows).toEqual([
      { threshold: 50, period_start: '2030-03-10T00:00:00.000Z', used_usd: 0.6 },
      { threshold: 50, period_start: '2030-03-11T00:00:00.000Z', used_usd: 0.5 },
    ]);
  });

  it('are listed through the API, newest first, filtered by budget, within the organization', async () => {
    const { org, ctx } = await freshOrg();
    // Alerts of organization A: a budget of A with spend of A.
    const b1 = await create({ name: 'Alerts list 1', scope: 'organization', period: 'total', limit_usd: 1e6, alert_thresholds: [1] });
    const b2 = await create({ name: 'Alerts list 2', scope: 'organization', period: 'total', limit_usd: 1e6, alert_thresholds: [1, 2] });
    await spend(env.orgA, 30_000, nowIso());
    await recordSpend(env.app.deps, { organizationId: env.orgA }, 30_000);
    // And one in another organization.
    await budgetIn(ctx, { limit_usd: 1, alert_thresholds: [50] });
    await spend(org, 1, nowIso());
    await recordSpend(env.app.deps, { organizationId: org }, 1);

    const all = await env.request('GET', `${BASE}/alerts?page_size=2`, { token: env.viewer.token });
    expect(all.status, all.text).toBe(200);
    expect(all.body.count).toBeGreaterThanOrEqual(3);
    expect(all.body.next).toMatch(/page=2/);
    expect(Object.keys(all.body.results[0]).sort()).toEqual(['budget_id', 'created_at', 'id', 'kind', 'limit_usd', 'period_start', 'threshold', 'used_usd']);
    const one = await env.request('GET', `${BASE}/alerts?budget_id=${b2.body.id}`, { token: env.viewer.token });
    expect(one.body.results.map((a: { threshold: number }) => a.threshold)).toEqual([2, 1]);
    expect(one.body.results[0]).toMatchObject({ budget_id: b2.body.id, kind: 'threshold', used_usd: 30_013.3, limit_usd: 1e6 }); // with the usage test's spend
    const first = await env.request('GET', `${BASE}/alerts?budget_id=${b1.body.id}`, { token: env.viewer.token });
    expect(first.body.count).toBe(1);
    // Another organization's alerts are not listed, even when asked for by budget.
    const foreignBudget = (await env.db.kysely.selectFrom('budget_alerts').select('budget_id').where('organization_id', '=', org).executeTakeFirstOrThrow()).budget_id;
    const foreign = await env.request('GET', `${BASE}/alerts?budget_id=${foreignBudget}`, { token: env.owner.token });
    expect(foreign.body).toMatchObject({ count: 0, results: [] });
    // Deleting a budget deletes its alerts.
    await env.request('DELETE', `${BASE}/${b1.body.id}`, { token: env.member.token });
    expect((await env.request('GET', `${BASE}/alerts?budget_id=${b1.body.id}`, { token: env.viewer.token })).body.count).toBe(0);
    await env.request('DELETE', `${BASE}/${b2.body.id}`, { token: env.member.token });
  });
});

describe('budgets security', () => {
  it('401 without a token, 403 for viewers on writes, 404 for another organization\'s budget', async () => {
    const b = await create({ name: 'Secure', scope: 'organization', limit_usd: 5 });
    for (const [method, url] of [['GET', BASE], ['POST', BASE], ['GET', `${BASE}/alerts`], ['GET', `${BASE}/${b.body.id}`], ['PATCH', `${BASE}/${b.body.id}`], ['DELETE', `${BASE}/${b.body.id}`], ['GET', `${BASE}/${b.body.id}/usage`]]) {
      expectError(await env.request(method, url, { body: method === 'POST' || method === 'PATCH' ? {} : undefined }), 401);
    }
    for (const token of [env.viewer.token, env.viewerKey]) {
      expectError(await create({ name: 'x', scope: 'organization', limit_usd: 1 }, token), 403);
      expectError(await env.request('PATCH', `${BASE}/${b.body.id}`, { token, body: { limit_usd: 1 } }), 403);
      expectError(await env.request('DELETE', `${BASE}/${b.body.id}`, { token }), 403);
    }
    const foreign = await createBudget(env.ctxOf(env.otherOwner), { name: 'B budget', scope: 'organization', limit_usd: 5 });
    for (const [method, url] of [['GET', `${BASE}/${foreign.id}`], ['PATCH', `${BASE}/${foreign.id}`], ['DELETE', `${BASE}/${foreign.id}`], ['GET', `${BASE}/${foreign.id}/usage`]]) {
      expectError(await env.request(method, url, { token: env.owner.token, body: method === 'PATCH' ? { limit_usd: 1 } : undefined }), 404);
    }
    expect((await env.request('GET', BASE, { token: env.owner.token })).body.results.map((x: { id: string }) => x.id)).not.toContain(foreign.id);
    // Unchanged by the refused requests.
    expect((await env.request('GET', `${BASE}/${foreign.id}`, { token: env.otherOwner.token })).body).toEqual(foreign);
    expect((await env.request('GET', `${BASE}/${b.body.id}`, { token: env.owner.token })).body).toEqual(b.body);
  });
});
