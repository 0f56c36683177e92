import { sql, type Selectable } from 'kysely';
import type { AgentsTable } from '../../db/schema/runtime.js';
import type { Ctx } from '../context.js';
import { parseJsonObject } from '../json.js';
import { containsText } from '../db.js';
import { AppError, badRequest, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';
import {
  assertOutputSchema, findAgentTemplateRow, mergePolicies, parsePolicy, validatePolicy, validatePolicyOverrides,
  type ExecutionPolicy,
} from './agent_templates.js';
import { presentRun } from './runs.js';

// ---------------------------------------------------------------------------------------------
// Agents of an organization. An agent stores its execution-policy overrides; its effective
// policy is its template's policy merged with them (read live, so a template change reaches its
// agents; a run freezes the effective policy when it starts).

export type AgentRow = Selectable<AgentsTable>;
export const AGENT_STATUSES = ['active', 'paused', 'archived'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];

export interface Agent {
  id: string; name: string; description: string; status: AgentStatus;
  template_id: string | null; workflow_id: string | null; project_id: string | null;
  config: Record<string, unknown>;
  execution_policy: ExecutionPolicy;
  effective_policy: ExecutionPolicy;
  output_schema: Record<string, unknown> | null;
  last_run_at: string | null; created_at: string; updated_at: string;
}

export interface AgentInput {
  /** Required unless template_id is given (the template's name is then the default). */
  name?: string;
  description?: string;
  template_id?: string | null;
  /** Workflows are not available yet: a value is refused with 400. */
  workflow_id?: string | null;
  project_id?: string | null;
  status?: AgentStatus;
  /** Merged over the template's config (top-level keys) when a template is given. */
  config?: Record<string, unknown>;
  /** Overrides on top of the template's policy. */
  execution_policy?: ExecutionPolicy;
  /** Null: the template's output schema applies. */
  output_schema?: Record<string, unknown> | null;
}

type ListRow = AgentRow & { template_policy: string | null; computed_last_run_at: string | null };

function selectAgents(ctx: Ctx) {
  return ctx.deps.db.kysely.selectFrom('agents')
    .leftJoin('agent_templates', (j) => j.onRef('agent_templates.id', '=', 'agents.template_id').onRef('agent_templates.organization_id', '=', 'agents.organization_id'))
    .selectAll('agents')
    .select((eb) => [
      'agent_templates.execution_policy as template_policy',
      eb.selectFrom('runs').select('runs.created_at').whereRef('runs.agent_id', '=', 'agents.id').orderBy('runs.id', 'desc').limit(1).as('computed_last_run_at'),
    ])
    .where('agents.organization_id', '=', ctx.actor!.organizationId);
}

function present(r: ListRow): Agent {
  const overrides = parsePolicy(r.execution_policy);
  return {
    id: r.id, name: r.name, description: r.description, status: r.status as AgentStatus,
    template_id: r.template_id, workflow_id: r.workflow_id, project_id: r.project_id,
    config: parseJsonObject(r.config) ?? {},
    execution_policy: overrides,
    effective_policy: mergePolicies(parsePolicy(r.template_policy), overrides),
    output_schema: parseJsonObject(r.output_schema),
    last_run_at: r.computed_last_run_at,
    created_at: r.created_at, updated_at: r.updated_at,
  };
}

export function listAgents(ctx: Ctx, input: PageInput & { status?: string; template_id?: string; project_id?: string; search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = selectAgents(ctx);
  if (input.status) query = query.where('agents.status', '=', input.status);
  if (input.template_id) query = query.where('agents.template_id', '=', input.template_id);
  if (input.project_id) query = query.where('agents.project_id', '=', input.project_id);
  if (input.search) query = query.where(containsText('agents.name', input.search));
  const countKey = JSON.stringify([input.status ?? null, input.template_id ?? null, input.project_id ?? null, input.search ?? null]);
  return paginate(ctx, { query, table: 'agents', scope: org, input, idColumn: 'agents.id', countKey }, (r) => present(r as ListRow));
}

async function findAgent(ctx: Ctx, id: string): Promise<ListRow | undefined> {
  return (await selectAgents(ctx).where('agents.id', '=', id).executeTakeFirst()) as ListRow | undefined;
}

/** The agent row in the actor's organization; 404 otherwise. */
export async function requireAgentRow(ctx: Ctx, id: string): Promise<AgentRow> {
  const row = await ctx.deps.db.kysely.selectFrom('agents').selectAll()
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Agent');
  return row;
}

export async function getAgent(ctx: Ctx, id: string): Promise<Agent> {
  const row = await findAgent(ctx, id);
  if (!row) throw notFound('Agent');
  return present(row);
}

async function assertProject(ctx: Ctx, projectId: string | null | undefined): Promise<void> {
  if (!projectId) return;
  const p = await ctx.deps.db.kysely.selectFrom('projects').select('id')
    .where('id', '=', projectId).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!p) throw badRequest({ project_id: 'No such project in this organization' });
}

const workflowsUnavailable = () => badRequest({
  workflow_id: 'Workflows are not available yet: agents cannot be spawned from a workflow. Spawn from a template_id instead.',
});

/** Overrides validated alone, then the merge with the template's policy validated as a whole. */
function checkPolicy(templatePolicy: ExecutionPolicy, overrides: unknown): ExecutionPolicy {
  const own = validatePolicyOverrides(overrides ?? {});
  validatePolicy(mergePolicies(templatePolicy, own));
  return own;
}

/** Creates an agent (from a template or from scratch). Used by `POST /agents`, `POST /agents/spawn` and test fixtures. */
export async function createAgent(ctx: Ctx, input: AgentInput): Promise<Agent> {
  const org = ctx.actor!.organizationId;
  if (input.workflow_id) throw workflowsUnavailable();
  const template = input.template_id ? await findAgentTemplateRow(ctx, input.template_id) : undefined;
  if (input.template_id && !template) throw badRequest({ template_id: 'No such agent template in this organization' });
  const name = input.name ?? template?.name;
  if (!name) throw badRequest({ name: 'Required (or give a template_id: the agent then takes its name)' });
  const overrides = checkPolicy(parsePolicy(template?.execution_policy), input.execution_policy);
  const outputSchema = assertOutputSchema(input.output_schema);
  await assertProject(ctx, input.project_id);
  const config = { ...(parseJsonObject(template?.config) ?? {}), ...(input.config ?? {}) };
  const now = nowIso();
  const id = newId('agt');
  await ctx.deps.db.kysely.insertInto('agents').values({
    id, organization_id: org, project_id: input.project_id ?? null, template_id: template?.id ?? null, workflow_id: null,
    name, description: input.description ?? template?.description ?? '', status: input.status ?? 'active',
    config: JSON.stringify(config), execution_policy: JSON.stringify(overrides),
    output_schema: outputSchema ? JSON.stringify(outputSchema) : null,
    created_by: ctx.actor!.userId, created_at: now, updated_at: now,
  }).execute();
  ctx.deps.counts.invalidate(org, 'agents');
  return getAgent(ctx, id);
}

/** DripPulse `spawn`: deploy from a template (name optional) or a workflow (not available yet: 400). */
export async function spawnAgent(ctx: Ctx, input: AgentInput): Promise<Agent> {
  if (input.workflow_id) throw workflowsUnavailable();
  if (!input.template_id) throw badRequest({ template_id: 'Required: the template to deploy (workflows are not available yet)' });
  return createAgent(ctx, input);
}

export type AgentUpdate = Pick<AgentInput, 'name' | 'description' | 'status' | 'project_id' | 'config' | 'execution_policy' | 'output_schema'>;

/**
 * PATCH: the given fields replace the stored ones (`config` and `execution_policy` as a whole;
 * `execution_policy: {}` inherits everything from the template again; `output_schema: null`
 * falls back to the template's).
 */
export async function updateAgent(ctx: Ctx, id: string, input: AgentUpdate): Promise<Agent> {
  const row = await requireAgentRow(ctx, id);
  const set: Record<string, unknown> = {};
  if (input.name !== undefined) set.name = input.name;
  if (input.description !== undefined) set.description = input.description;
  if (input.status !== undefined) set.status = input.status;
  if (input.project_id !== undefined) { await assertProject(ctx, input.project_id); set.project_id = input.project_id; }
  if (input.config !== undefined) set.config = JSON.stringify(input.config);
  if (input.execution_policy !== undefined) {
    const template = row.template_id ? await findAgentTemplateRow(ctx, row.template_id) : undefined;
    set.execution_policy = JSON.stringify(checkPolicy(parsePolicy(template?.execution_policy), input.execution_policy));
  }
  if (input.output_schema !== undefined) {
    const s = assertOutputSchema(input.output_schema);
    set.output_schema = s ? JSON.stringify(s) : null;
  }
  await ctx.deps.db.kysely.updateTable('agents').set({ ...set, updated_at: nowIso() })
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  return getAgent(ctx, id);
}

const ACTIVE_RUN_STATUSES = ['queued', 'running', 'waiting', 'awaiting_approval'];

/** Deletes the agent with its runs, steps and events; 409 while it has runs in flight (cancel them first). */
export async function deleteAgent(ctx: Ctx, id: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  await requireAgentRow(ctx, id);
  const active = await ctx.deps.db.kysely.selectFrom('runs').select((eb) => eb.fn.countAll().as('n'))
    .where('organization_id', '=', org).where('agent_id', '=', id).where('status', 'in', ACTIVE_RUN_STATUSES).executeTakeFirst();
  if (Number(active?.n ?? 0) > 0) {
    throw new AppError(409, 'Conflict', { runs: `The agent has ${Number(active!.n)} run(s) queued, running or awaiting approval: cancel them (POST /api/v1/runs/{id}/cancel) before deleting it` });
  }
  await ctx.deps.db.kysely.deleteFrom('agents').where('id', '=', id).where('organization_id', '=', org).execute();
  ctx.deps.counts.invalidate(org, 'agents');
}

/**
 * The agent in the actor's organization (404 otherwise) with its effective policy (template
 * merged with the agent's overrides) and its output schema (the agent's, else the template's).
 * 409 when the agent is paused or archived.
 */
export async function loadAgentForRun(ctx: Ctx, agentId: string): Promise<{ agent: AgentRow; policy: ExecutionPolicy; outputSchema: object | null; config: Record<string, unknown> }> {
  const agent = await requireAgentRow(ctx, agentId);
  if (agent.status !== 'active') {
    throw new AppError(409, 'Conflict', {
      status: agent.status === 'paused'
        ? 'The agent is paused: set its status to active (PATCH /api/v1/agents/{id}) before running it'
        : 'The agent is archived: set its status to active (PATCH /api/v1/agents/{id}) before running it',
    });
  }
  const template = agent.template_id ? await findAgentTemplateRow(ctx, agent.template_id) : undefined;
  return {
    agent,
    policy: mergePolicies(parsePolicy(template?.execution_policy), parsePolicy(agent.execution_policy)),
    outputSchema: parseJsonObject(agent.output_schema) ?? parseJsonObject(template?.output_schema),
    config: parseJsonObject(agent.config) ?? {},
  };
}

// ---------------------------------------------------------------------------------------------
// Read side over the agent's runs, steps and events (written by the runtime).

export const RUN_STATUSES = ['queued', 'running', 'waiting', 'awaiting_approval', 'succeeded', 'failed', 'cancelled'] as const;
const FINISHED = ['succeeded', 'failed', 'cancelled'];

const roundUsd = (n: number) => Math.round(Number(n ?? 0) * 1e8) / 1e8;

function agentRuns(ctx: Ctx, agentId: string) {
  return ctx.deps.db.kysely.selectFrom('runs').selectAll()
    .where('organization_id', '=', ctx.actor!.organizationId).where('agent_id', '=', agentId);
}

/** The agent's runs, newest first, shown as `GET /api/v1/runs/{id}` shows them. */
export async function listAgentExecutions(ctx: Ctx, agentId: string, input: PageInput & { status?: string; kind?: string }) {
  await requireAgentRow(ctx, agentId);
  let query = agentRuns(ctx, agentId);
  if (input.status) query = query.where('status', '=', input.status);
  if (input.kind) query = query.where('kind', '=', input.kind);
  return paginate(ctx, {
    query, table: 'runs', scope: ctx.actor!.organizationId, input, countKey: JSON.stringify([agentId, input.status ?? null, input.kind ?? null]),
  }, presentRun);
}

/** A snapshot: the agent's status, its runs by status, the runs in progress, the last run and the last error. */
export async function getAgentStatus(ctx: Ctx, agentId: string) {
  const agent = await requireAgentRow(ctx, agentId);
  const db = ctx.deps.db.kysely;
  const org = ctx.actor!.organizationId;
  const byStatus = await db.selectFrom('runs').select(['status', (eb) => eb.fn.countAll().as('n')])
    .where('organization_id', '=', org).where('agent_id', '=', agentId).groupBy('status').execute();
  const runs: Record<string, number> = Object.fromEntries(RUN_STATUSES.map((s) => [s, 0]));
  let total = 0;
  for (const r of byStatus) { runs[r.status] = (runs[r.status] ?? 0) + Number(r.n); total += Number(r.n); }
  const current = await agentRuns(ctx, agentId).where('status', 'in', ['running', 'waiting', 'awaiting_approval']).orderBy('id', 'desc').limit(20).execute();
  const last = await agentRuns(ctx, agentId).orderBy('id', 'desc').limit(1).executeTakeFirst();
  const lastError = await db.selectFrom('runs').select(['id', 'error', 'error_code', 'finished_at', 'updated_at'])
    .where('organization_id', '=', org).where('agent_id', '=', agentId).where('status', '=', 'failed')
    .orderBy('id', 'desc').limit(1).executeTakeFirst();
  return {
    agent_id: agent.id, name: agent.name, status: agent.status as AgentStatus,
    runs: { ...runs, total } as Record<(typeof RUN_STATUSES)[number] | 'total', number>,
    current_runs: current.map(presentRun),
    last_run: last ? presentRun(last) : null,
    last_run_at: last?.created_at ?? null,
    last_error: lastError ? { run_id: lastError.id, error: lastError.error, error_code: lastError.error_code, at: lastError.finished_at ?? lastError.updated_at } : null,
  };
}

// Logs: lines derived from the run events of type log, status and step.

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

function jsonText(ctx: Ctx, path: string[]) {
  if (ctx.deps.db.dialect === 'postgres') {
    const head = path.slice(0, -1).map((p) => sql`->${sql.lit(p)}`);
    return sql<string | null>`((ev.data)::jsonb${sql.join(head, sql``)}->>${sql.lit(path[path.length - 1])})`;
  }
  return sql<string | null>`json_extract(ev.data, ${sql.lit(`$.${path.join('.')}`)})`;
}

/** The level of an event, in SQL (so that the level filter pages correctly). */
function levelExpr(ctx: Ctx) {
  const logLevel = jsonText(ctx, ['level']);
  const status = sql`coalesce(${jsonText(ctx, ['status'])}, ${jsonText(ctx, ['step', 'status'])})`;
  return sql<string>`case
    when ev.type = 'log' then (case when ${logLevel} in ('debug', 'info', 'warn', 'error') then ${logLevel} when ${logLevel} = 'warning' then 'warn' else 'info' end)
    when ${status} = 'failed' then 'error'
    when ${status} in ('cancelled', 'rejected') then 'warn'
    else 'info' end`;
}

function paddedSeq(ctx: Ctx) {
  return ctx.deps.db.dialect === 'postgres' ? sql<string>`lpad(ev.seq::text, 10, '0')` : sql<string>`substr('0000000000' || ev.seq, -10)`;
}

interface EventRow { id: string; run_id: string; seq: number; type: string; data: string; created_at: string; level: string }

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : typeof v === 'number' ? String(v) : null;
}

/** A readable line from an event's data, whatever the runtime put in it. */
function logMessage(type: string, data: Record<string, unknown>): string {
  if (type === 'log') return str(data.message) ?? JSON.stringify(data);
  if (type === 'status') {
    const s = str(data.status) ?? 'changed';
    const err = str(data.error);
    return `Run ${s}${err ? `: ${err}` : ''}`;
  }
  const step = (data.step && typeof data.step === 'object' ? data.step : data) as Record<string, unknown>;
  const parts = ['Step', str(step.seq), str(step.type), step.name !== undefined ? JSON.stringify(step.name) : null, str(step.status)].filter((p) => p !== null);
  const err = str(step.error);
  return `${parts.join(' ')}${err ? `: ${err}` : ''}`;
}

/** The agent's log: status changes, steps and log lines of its runs, newest first. */
export async function listAgentLogs(ctx: Ctx, agentId: string, input: PageInput & { run_id?: string; level?: LogLevel; type?: 'log' | 'status' | 'step' }) {
  await requireAgentRow(ctx, agentId);
  const org = ctx.actor!.organizationId;
  const db = ctx.deps.db.kysely;
  let inner = db.selectFrom('run_events as ev').innerJoin('runs as r', 'r.id', 'ev.run_id')
    .select([
      sql<string>`ev.run_id || ':' || ${paddedSeq(ctx)}`.as('id'),
      'ev.run_id', 'ev.seq', 'ev.type', 'ev.data', 'ev.created_at', levelExpr(ctx).as('level'),
    ])
    .where('r.organization_id', '=', org).where('r.agent_id', '=', agentId).where('ev.organization_id', '=', org)
    .where('ev.type', 'in', input.type ? [input.type] : ['log', 'status', 'step']);
  if (input.run_id) inner = inner.where('ev.run_id', '=', input.run_id);
  let query = db.selectFrom(inner.as('e')).selectAll('e');
  if (input.level) query = query.where('e.level', '=', input.level);
  return paginate(ctx, {
    query: query as never, table: 'run_events', scope: org, input,
    sort: { column: 'created_at', direction: 'desc' },
    countKey: JSON.stringify([agentId, input.run_id ?? null, input.level ?? null, input.type ?? null]),
  }, (row: EventRow) => {
    const data = parseJsonObject(row.data) ?? {};
    return {
      id: row.id, run_id: row.run_id, seq: Number(row.seq), type: row.type as 'log' | 'status' | 'step', level: row.level as LogLevel,
      message: logMessage(row.type, data), data, created_at: row.created_at,
    };
  });
}

// Costs and metrics over a window of days (UTC), today included.

function windowStart(days: number): string {
  const d = new Date();
  d.setUTCHours(0, 0, 0, 0);
  d.setUTCDate(d.getUTCDate() - (days - 1));
  return d.toISOString();
}

interface Sums { cost: number; tokens_in: number; tokens_out: number; calls: number }
const sums = (r: { cost: unknown; tokens_in: unknown; tokens_out: unknown; calls: unknown } | undefined): Sums => ({
  cost: roundUsd(Number(r?.cost ?? 0)), tokens_in: Number(r?.tokens_in ?? 0), tokens_out: Number(r?.tokens_out ?? 0), calls: Number(r?.calls ?? 0),
});

/**
 * Cost of the agent's paid steps (LLM calls: steps with a model, tokens or a cost) in the last
 * `days` days: totals, by model and by day (every day of the window, zeros included). Steps a
 * replay reused from another run are not counted again.
 */
export async function getAgentCosts(ctx: Ctx, agentId: string, days = 30) {
  await requireAgentRow(ctx, agentId);
  const since = windowStart(days);
  const base = () => ctx.deps.db.kysely.selectFrom('run_steps')
    .where('organization_id', '=', ctx.actor!.organizationId).where('agent_id', '=', agentId).where('created_at', '>=', since)
    .where('reused', '=', 0)
    .where((eb) => eb.or([eb('model', 'is not', null), eb('cost', '>', 0), eb('tokens_in', '>', 0), eb('tokens_out', '>', 0)]));
  const aggregates = [
    sql<number>`coalesce(sum(cost), 0)`.as('cost'), sql<number>`coalesce(sum(tokens_in), 0)`.as('tokens_in'),
    sql<number>`coalesce(sum(tokens_out), 0)`.as('tokens_out'), sql<number>`count(*)`.as('calls'),
  ] as const;
  const total = await base().select(aggregates).executeTakeFirst();
  const byModel = await base().select(['model', ...aggregates]).groupBy('model').execute();
  const dayExpr = sql<string>`substr(created_at, 1, 10)`;
  const byDayRows = await base().select([dayExpr.as('day'), ...aggregates]).groupBy(dayExpr).execute();
  const byDay = new Map(byDayRows.map((r) => [r.day, sums(r)]));
  const dayList: (Sums & { date: string })[] = [];
  for (let i = 0; i < days; i++) {
    const date = new Date(Date.parse(since) + i * 86_400_000).toISOString().slice(0, 10);
    dayList.push({ date, ...(byDay.get(date) ?? { cost: 0, tokens_in: 0, tokens_out: 0, calls: 0 }) });
  }
  return {
    agent_id: agentId, days, since, currency: 'USD' as const,
    total: sums(total),
    by_model: byModel.map((r) => ({ model: r.model, ...sums(r) })).sort((a, b) => b.cost - a.cost || (a.model ?? '').localeCompare(b.model ?? '')),
    by_day: dayList,
  };
}

function latencyExpr(ctx: Ctx) {
  return ctx.deps.db.dialect === 'postgres'
    ? sql<number>`round(extract(epoch from (finished_at::timestamptz - started_at::timestamptz)) * 1000)`
    : sql<number>`cast(round((julianday(finished_at) - julianday(started_at)) * 86400000) as integer)`;
}

/**
 * Runs created in the last `days` days: how many, by outcome, success rate (succeeded over
 * succeeded + failed; cancelled runs are not counted against it), latency percentiles of the
 * finished runs (finished_at − started_at, linear interpolation between closest ranks, as
 * PostgreSQL's percentile_cont), steps per finished run, tokens and cost of their steps.
 */
export async function getAgentMetrics(ctx: Ctx, agentId: string, days = 30) {
  await requireAgentRow(ctx, agentId);
  const org = ctx.actor!.organizationId;
  const db = ctx.deps.db.kysely;
  const since = windowStart(days);
  const runsIn = () => db.selectFrom('runs').where('organization_id', '=', org).where('agent_id', '=', agentId).where('created_at', '>=', since);

  const byStatus = await runsIn().select(['status', (eb) => eb.fn.countAll().as('n')]).groupBy('status').execute();
  const n = (s: string) => Number(byStatus.find((r) => r.status === s)?.n ?? 0);
  const runs = byStatus.reduce((a, r) => a + Number(r.n), 0);
  const succeeded = n('succeeded');
  const failed = n('failed');
  const cancelled = n('cancelled');

  const finished = () => runsIn().where('status', 'in', FINISHED).where('started_at', 'is not', null).where('finished_at', 'is not', null);
  const lat = latencyExpr(ctx);
  const agg = await finished().select([sql<number>`count(*)`.as('n'), sql<number>`avg(${lat})`.as('avg')]).executeTakeFirst();
  const count = Number(agg?.n ?? 0);
  const percentile = async (p: number): Promise<number | null> => {
    if (!count) return null;
    const pos = (p / 100) * (count - 1);
    const lo = Math.floor(pos);
    const rows = await finished().select(lat.as('ms')).orderBy(lat).limit(2).offset(lo).execute();
    const a = Number(rows[0].ms);
    const b = rows[1] !== undefined ? Number(rows[1].ms) : a;
    return Math.round((a + (pos - lo) * (b - a)) * 100) / 100;
  };

  const stepsOfFinished = await db.selectFrom('run_steps').select(sql<number>`count(*)`.as('n'))
    .where('organization_id', '=', org)
    .where('run_id', 'in', runsIn().select('id').where('status', 'in', FINISHED)).executeTakeFirst();
  const usage = await db.selectFrom('run_steps')
    .select([sql<number>`coalesce(sum(tokens_in), 0)`.as('tokens_in'), sql<number>`coalesce(sum(tokens_out), 0)`.as('tokens_out'), sql<number>`coalesce(sum(cost), 0)`.as('cost')])
    .where('organization_id', '=', org).where('reused', '=', 0)
    .where('run_id', 'in', runsIn().select('id')).executeTakeFirst();
  const fr = succeeded + failed + cancelled;
  return {
    agent_id: agentId, days, since,
    runs, succeeded, failed, cancelled, in_progress: runs - succeeded - failed - cancelled,
    success_rate: succeeded + failed > 0 ? Math.round((succeeded / (succeeded + failed)) * 10_000) / 10_000 : null,
    latency_ms: {
      p50: await percentile(50), p95: await percentile(95), p99: await percentile(99),
      avg: count ? Math.round(Number(agg!.avg) * 100) / 100 : null,
    },
    avg_steps: fr ? Math.round((Number(stepsOfFinished?.n ?? 0) / fr) * 100) / 100 : null,
    tokens_in: Number(usage?.tokens_in ?? 0), tokens_out: Number(usage?.tokens_out ?? 0), cost: roundUsd(Number(usage?.cost ?? 0)),
  };
}
