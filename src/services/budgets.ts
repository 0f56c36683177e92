import { sql, type Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { Ctx, Deps } from '../context.js';
import { AppError, badRequest, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';
import { emitEvent } from './events.js';

// Budgets: spend limits on an organization, one of its projects or one of its agents, per UTC
// calendar period. Spend is what run steps cost (`run_steps.cost`), so usage is always computed
// from the steps themselves: nothing to keep in sync, and a replayed or resumed run never counts
// a step twice.

export type BudgetScope = 'organization' | 'project' | 'agent';
export type BudgetPeriod = 'daily' | 'weekly' | 'monthly' | 'total';
export const BUDGET_SCOPES = ['organization', 'project', 'agent'] as const;
export const BUDGET_PERIODS = ['daily', 'weekly', 'monthly', 'total'] as const;
export const DEFAULT_ALERT_THRESHOLDS = [50, 80, 100];

/** Who is spending: the organization, and the project and agent of the run when there are. */
export interface SpendScope { organizationId: string; projectId?: string | null; agentId?: string | null }

// Money sums of doubles are rounded to a nano-dollar before they are compared or shown, so that
// 0.1 + 0.2 is 0.3 against a 0.3 limit.
const money = (n: number) => Math.round(n * 1e9) / 1e9;

// ---------------------------------------------------------------------------------------------
// Periods (UTC calendar periods; weeks start on Monday).

export interface Period { start: string; end: string | null }

const TOTAL_START = new Date(0).toISOString();

/** The period of `period` that contains `at`: [start, end), end null for `total`. */
export function periodAt(period: BudgetPeriod, at: Date = new Date()): Period {
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  const d = at.getUTCDate();
  switch (period) {
    case 'daily':
      return { start: new Date(Date.UTC(y, m, d)).toISOString(), end: new Date(Date.UTC(y, m, d + 1)).toISOString() };
    case 'weekly': {
      const sinceMonday = (at.getUTCDay() + 6) % 7;
      return { start: new Date(Date.UTC(y, m, d - sinceMonday)).toISOString(), end: new Date(Date.UTC(y, m, d - sinceMonday + 7)).toISOString() };
    }
    case 'monthly':
      return { start: new Date(Date.UTC(y, m, 1)).toISOString(), end: new Date(Date.UTC(y, m + 1, 1)).toISOString() };
    case 'total':
      return { start: TOTAL_START, end: null };
  }
}

// ---------------------------------------------------------------------------------------------
// Rows.

const COLUMNS = ['id', 'name', 'scope', 'scope_id', 'period', 'limit_usd', 'alert_thresholds', 'enabled', 'created_at', 'updated_at'] as const;
interface Row {
  id: string; name: string; scope: string; scope_id: string | null; period: string; limit_usd: number;
  alert_thresholds: string; enabled: number; created_at: string; updated_at: string;
}

const present = (r: Row) => ({
  id: r.id, name: r.name, scope: r.scope as BudgetScope, scope_id: r.scope_id, period: r.period as BudgetPeriod,
  limit_usd: Number(r.limit_usd), alert_thresholds: JSON.parse(r.alert_thresholds) as number[], enabled: r.enabled === 1,
  created_at: r.created_at, updated_at: r.updated_at,
});
export type Budget = ReturnType<typeof present>;

/** The steps a budget counts, in [start, end): one indexed range per scope. */
function spendQuery(db: Kysely<Database>, org: string, scope: BudgetScope, scopeId: string | null, p: Period) {
  let q = db.selectFrom('run_steps').where('created_at', '>=', p.start);
  if (p.end) q = q.where('created_at', '<', p.end);
  if (scope === 'agent') q = q.where('agent_id', '=', scopeId).where('organization_id', '=', org);
  else if (scope === 'project') q = q.where('project_id', '=', scopeId).where('organization_id', '=', org);
  else q = q.where('organization_id', '=', org);
  return q;
}

async function usedIn(db: Kysely<Database>, org: string, b: Pick<Row, 'scope' | 'scope_id'>, p: Period): Promise<number> {
  const row = await spendQuery(db, org, b.scope as BudgetScope, b.scope_id, p)
    .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('cost'), sql<number>`0`).as('used')).executeTakeFirst();
  return money(Number(row?.used ?? 0));
}

// ---------------------------------------------------------------------------------------------
// Enforcement (the runtime calls these around every paid step).

/** A paid step would take a budget over its limit: the run stops with this (402, `budget_exceeded`). */
export class BudgetExceededError extends AppError {
  /** The run's `error_code`. */
  readonly errorCode = 'budget_exceeded';
  /** Never retried: waiting does not make a budget larger (until the next period). */
  readonly retryable = false;
  constructor(readonly budget: {
    budget_id: string; name: string; scope: BudgetScope; scope_id: string | null; limit: number; used: number;
    estimated_cost: number; period: BudgetPeriod; period_start: string; period_end: string | null;
  }) {
    super(402, 'budget_exceeded', {
      ...budget,
      message: `Budget "${budget.name}" (${budget.scope}${budget.scope_id ? ` ${budget.scope_id}` : ''}, ${budget.period}) `
        + `has used $${budget.used} of $${budget.limit}; a step estimated at $${budget.estimated_cost} would exceed it`,
    });
    this.name = 'BudgetExceededError';
  }
}

/** The enabled budgets that cover a spend: the organization's, its project's and its agent's. */
async function coveringBudgets(deps: Deps, scope: SpendScope): Promise<{ budgets: Row[]; projectId: string | null }> {
  const db = deps.db.kysely;
  let projectId = scope.projectId ?? null;
  const agentId = scope.agentId ?? null;
  // An agent's project counts when the caller did not say (undefined, not null).
  if (scope.projectId === undefined && agentId) {
    const agent = await db.selectFrom('agents').select('project_id').where('id', '=', agentId).where('organization_id', '=', scope.organizationId).executeTakeFirst();
    projectId = agent?.project_id ?? null;
  }
  const budgets = await db.selectFrom('budgets').select(COLUMNS)
    .where('organization_id', '=', scope.organizationId).where('enabled', '=', 1)
    .where((eb) => eb.or([
      eb('scope', '=', 'organization'),
      ...(projectId ? [eb.and([eb('scope', '=', 'project'), eb('scope_id', '=', projectId)])] : []),
      ...(agentId ? [eb.and([eb('scope', '=', 'agent'), eb('scope_id', '=', agentId)])] : []),
    ]))
    .execute();
  return { budgets, projectId };
}

/**
 * Throws BudgetExceededError when any enabled budget covering the scope (the organization's, its
 * project's, its agent's) would be exceeded by `estimatedCost` in its current period, or is
 * already used up. One indexed query for the budgets, then one per budget.
 */
export async function assertWithinBudget(deps: Deps, scope: SpendScope, estimatedCost: number): Promise<void> {
  const { budgets } = await coveringBudgets(deps, scope);
  if (budgets.length === 0) return;
  const estimate = Number.isFinite(estimatedCost) && estimatedCost > 0 ? estimatedCost : 0;
  const now = new Date();
  for (const b of budgets) {
    const p = periodAt(b.period as BudgetPeriod, now);
    const used = await usedIn(deps.db.kysely, scope.organizationId, b, p);
    const limit = Number(b.limit_usd);
    if (used >= limit || money(used + estimate) > limit) {
      throw new BudgetExceededError({
        budget_id: b.id, name: b.name, scope: b.scope as BudgetScope, scope_id: b.scope_id, limit, used, estimated_cost: money(estimate),
        period: b.period as BudgetPeriod, period_start: p.start, period_end: p.end,
      });
    }
  }
}

/**
 * After a paid step, once its cost is recorded in `run_steps`: for every budget covering the scope,
 * raises the alerts whose thresholds the period's usage has now reached — one `budget_alerts` row
 * and one event (`budget.threshold_reached`, or `budget.exceeded` at 100 %) per threshold per
 * period, even when several workers record spend at once. Reaching the limit always raises the
 * `exceeded` alert, whether or not 100 is among the thresholds. A zero cost changes nothing.
 */
export async function recordSpend(deps: Deps, scope: SpendScope, cost: number): Promise<void> {
  if (!(Number.isFinite(cost) && cost > 0)) return;
  const { budgets } = await coveringBudgets(deps, scope);
  const now = new Date();
  for (const b of budgets) {
    const p = periodAt(b.period as BudgetPeriod, now);
    const used = await usedIn(deps.db.kysely, scope.organizationId, b, p);
    const limit = Number(b.limit_usd);
    const percent = (used / limit) * 100;
    const thresholds = [...new Set([...(JSON.parse(b.alert_thresholds) as number[]), 100])].sort((x, y) => x - y);
    const reached = thresholds.filter((t) => (t >= 100 ? used >= limit : percent >= t));
    if (reached.length === 0) continue;
    // Most calls find every reached threshold already alerted: one read settles it.
    const done = new Set((await deps.db.kysely.selectFrom('budget_alerts').select('threshold')
      .where('budget_id', '=', b.id).where('period_start', '=', p.start).execute()).map((r) => Number(r.threshold)));
    for (const threshold of reached.filter((t) => !done.has(t))) {
      const kind = threshold >= 100 ? 'exceeded' : 'threshold';
      const createdAt = nowIso();
      const raised = await deps.db.kysely.transaction().execute(async (trx) => {
        const inserted = await trx.insertInto('budget_alerts').values({
          id: newId('bal'), organization_id: scope.organizationId, budget_id: b.id, threshold, period_start: p.start,
          used_usd: used, limit_usd: limit, kind, created_at: createdAt,
        }).onConflict((oc) => oc.columns(['budget_id', 'period_start', 'threshold']).doNothing()).returning('id').executeTakeFirst();
        if (!inserted) return false; // another worker raised it first
        await emitEvent(trx, {
          organizationId: scope.organizationId,
          type: kind === 'exceeded' ? 'budget.exceeded' : 'budget.threshold_reached',
          payload: {
            budget_id: b.id, alert_id: inserted.id, name: b.name, scope: b.scope, scope_id: b.scope_id, period: b.period,
            threshold, used_usd: used, limit_usd: limit, percent: Math.round(percent * 100) / 100, period_start: p.start, period_end: p.end,
          },
        });
        return true;
      });
      if (raised) deps.counts.invalidate(scope.organizationId, 'budget_alerts');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The API.

export interface BudgetInput {
  name: string; scope: BudgetScope; scope_id?: string | null; period?: BudgetPeriod; limit_usd: number;
  alert_thresholds?: number[]; enabled?: boolean;
}

const normalizeThresholds = (t: number[]) => [...new Set(t)].sort((a, b) => a - b);

/** The scope's target must exist in the organization; the organization scope has none. */
async function checkScope(ctx: Ctx, scope: BudgetScope, scopeId: string | null | undefined): Promise<string | null> {
  const org = ctx.actor!.organizationId;
  if (scope === 'organization') {
    if (scopeId) throw badRequest({ scope_id: 'An organization budget has no scope_id (leave it out or null)' });
    return null;
  }
  if (!scopeId) throw badRequest({ scope_id: `Required for a ${scope} budget: the ${scope}'s id` });
  const table = scope === 'project' ? 'projects' : 'agents';
  const found = await ctx.deps.db.kysely.selectFrom(table).select('id').where('id', '=', scopeId).where('organization_id', '=', org).executeTakeFirst();
  if (!found) throw badRequest({ scope_id: `No ${scope} with this id in the organization` });
  return scopeId;
}

export function listBudgets(ctx: Ctx, input: PageInput & { scope?: BudgetScope; scope_id?: string; enabled?: boolean }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('budgets').select(COLUMNS).where('organization_id', '=', org);
  if (input.scope) query = query.where('scope', '=', input.scope);
  if (input.scope_id) query = query.where('scope_id', '=', input.scope_id);
  if (input.enabled !== undefined) query = query.where('enabled', '=', input.enabled ? 1 : 0);
  return paginate(ctx, {
    query, table: 'budgets', scope: org, input, countKey: JSON.stringify([input.scope ?? null, input.scope_id ?? null, input.enabled ?? null]),
  }, present);
}

async function findRow(ctx: Ctx, id: string): Promise<Row> {
  const row = await ctx.deps.db.kysely.selectFrom('budgets').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Budget');
  return row;
}

export async function getBudget(ctx: Ctx, id: string): Promise<Budget> {
  return present(await findRow(ctx, id));
}

export async function createBudget(ctx: Ctx, input: BudgetInput): Promise<Budget> {
  const org = ctx.actor!.organizationId;
  const scopeId = await checkScope(ctx, input.scope, input.scope_id);
  const now = nowIso();
  const id = newId('bud');
  await ctx.deps.db.kysely.insertInto('budgets').values({
    id, organization_id: org, name: input.name, scope: input.scope, scope_id: scopeId, period: input.period ?? 'monthly',
    limit_usd: input.limit_usd, alert_thresholds: JSON.stringify(normalizeThresholds(input.alert_thresholds ?? DEFAULT_ALERT_THRESHOLDS)),
    enabled: input.enabled === false ? 0 : 1, created_at: now, updated_at: now,
  }).execute();
  ctx.deps.counts.invalidate(org, 'budgets');
  return getBudget(ctx, id);
}

export async function updateBudget(ctx: Ctx, id: string, input: Partial<BudgetInput>): Promise<Budget> {
  const current = await findRow(ctx, id);
  const set: Partial<Record<string, unknown>> = {};
  if (input.scope !== undefined || input.scope_id !== undefined) {
    const scope = input.scope ?? (current.scope as BudgetScope);
    // Changing the scope to the organization drops the old target; otherwise keep it unless replaced.
    const scopeId = input.scope_id !== undefined ? input.scope_id : scope === 'organization' ? null : scope === current.scope ? current.scope_id : undefined;
    set.scope = scope;
    set.scope_id = await checkScope(ctx, scope, scopeId);
  }
  if (input.name !== undefined) set.name = input.name;
  if (input.period !== undefined) set.period = input.period;
  if (input.limit_usd !== undefined) set.limit_usd = input.limit_usd;
  if (input.alert_thresholds !== undefined) set.alert_thresholds = JSON.stringify(normalizeThresholds(input.alert_thresholds));
  if (input.enabled !== undefined) set.enabled = input.enabled ? 1 : 0;
  await ctx.deps.db.kysely.updateTable('budgets').set({ ...set, updated_at: nowIso() })
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  return getBudget(ctx, id);
}

export async function deleteBudget(ctx: Ctx, id: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  const res = await ctx.deps.db.kysely.deleteFrom('budgets').where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) throw notFound('Budget');
  ctx.deps.counts.invalidate(org, 'budgets');
  ctx.deps.counts.invalidate(org, 'budget_alerts');
}

/** The current period's spend against the limit, with a per-day breakdown (UTC days). */
export async function getBudgetUsage(ctx: Ctx, id: string) {
  const b = await findRow(ctx, id);
  const org = ctx.actor!.organizationId;
  const now = new Date();
  const p = periodAt(b.period as BudgetPeriod, now);
  const db = ctx.deps.db.kysely;
  const day = sql<string>`substr(created_at, 1, 10)`;
  const rows = await spendQuery(db, org, b.scope as BudgetScope, b.scope_id, p)
    .select([day.as('day'), (eb) => eb.fn.sum<number>('cost').as('used')])
    .groupBy(day).orderBy(day).execute();
  const byDay = new Map(rows.map((r) => [r.day, money(Number(r.used))]));
  // Bounded periods list every day from the start to today (or the period's end); `total` lists the days with spend.
  const days: { day: string; used_usd: number }[] = [];
  if (p.end) {
    const last = now.toISOString().slice(0, 10);
    for (let d = new Date(p.start); d.toISOString() < p.end && d.toISOString().slice(0, 10) <= last; d = new Date(d.getTime() + 86_400_000)) {
      const key = d.toISOString().slice(0, 10);
      days.push({ day: key, used_usd: byDay.get(key) ?? 0 });
    }
  } else {
    for (const [key, used] of byDay) days.push({ day: key, used_usd: used });
  }
  const used = money([...byDay.values()].reduce((a, x) => a + x, 0));
  const limit = Number(b.limit_usd);
  return {
    budget_id: b.id, period: b.period as BudgetPeriod, period_start: p.start, period_end: p.end,
    used_usd: used, limit_usd: limit, remaining_usd: money(Math.max(0, limit - used)),
    percent: Math.round((used / limit) * 10000) / 100, exceeded: used >= limit, by_day: days,
  };
}

const ALERT_COLUMNS = ['id', 'budget_id', 'threshold', 'kind', 'period_start', 'used_usd', 'limit_usd', 'created_at'] as const;
type AlertRow = { id: string; budget_id: string; threshold: number; kind: string; period_start: string; used_usd: number; limit_usd: number; created_at: string };

export function listBudgetAlerts(ctx: Ctx, input: PageInput & { budget_id?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('budget_alerts').select(ALERT_COLUMNS).where('organization_id', '=', org);
  if (input.budget_id) query = query.where('budget_id', '=', input.budget_id);
  return paginate(ctx, { query, table: 'budget_alerts', scope: org, input, countKey: input.budget_id ?? '' }, (r: AlertRow) => ({
    ...r, threshold: Number(r.threshold), kind: r.kind as 'threshold' | 'exceeded', used_usd: Number(r.used_usd), limit_usd: Number(r.limit_usd),
  }));
}
