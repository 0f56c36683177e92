import { sql } from 'kysely';
import type { Ctx } from '../context.js';
import { paginate, type PageInput } from '../pagination.js';
import { requireAgentRow, type AgentStatus } from './agents.js';

// Live views over the agents of an organization and the step traces of their runs.

const roundUsd = (n: number) => Math.round(Number(n ?? 0) * 1e8) / 1e8;

function startOfTodayUtc(): string {
  const d = new Date();
  d.setUTCHours(0, 0, 0, 0);
  return d.toISOString();
}

/**
 * Every agent of the organization (newest first, paged) with its live state: runs queued,
 * running, waiting and awaiting approval now, the time of its latest activity (the last change
 * of any of its runs) and what its steps cost today (UTC).
 */
export async function monitorAgents(ctx: Ctx, input: PageInput & { status?: AgentStatus }) {
  const org = ctx.actor!.organizationId;
  const db = ctx.deps.db.kysely;
  let query = db.selectFrom('agents').select(['id', 'name', 'status', 'project_id', 'updated_at']).where('organization_id', '=', org);
  if (input.status) query = query.where('status', '=', input.status);
  const page = await paginate(ctx, { query, table: 'agents', scope: org, input, countKey: `monitor|${input.status ?? ''}` }, (r) => r);
  const ids = page.results.map((r) => r.id);
  const live = new Map<string, Record<string, number>>();
  const activity = new Map<string, string>();
  const cost = new Map<string, number>();
  if (ids.length) {
    const counts = await db.selectFrom('runs').select(['agent_id', 'status', (eb) => eb.fn.countAll().as('n')])
      .where('organization_id', '=', org).where('agent_id', 'in', ids).where('status', 'in', ['queued', 'running', 'waiting', 'awaiting_approval'])
      .groupBy(['agent_id', 'status']).execute();
    for (const c of counts) {
      const m = live.get(c.agent_id!) ?? {};
      m[c.status] = Number(c.n);
      live.set(c.agent_id!, m);
    }
    const last = await db.selectFrom('runs').select(['agent_id', sql<string>`max(updated_at)`.as('at')])
      .where('organization_id', '=', org).where('agent_id', 'in', ids).groupBy('agent_id').execute();
    for (const l of last) if (l.at) activity.set(l.agent_id!, l.at);
    const today = await db.selectFrom('run_steps').select(['agent_id', sql<number>`coalesce(sum(cost), 0)`.as('cost')])
      .where('organization_id', '=', org).where('agent_id', 'in', ids).where('created_at', '>=', startOfTodayUtc()).where('reused', '=', 0)
      .groupBy('agent_id').execute();
    for (const t of today) cost.set(t.agent_id!, Number(t.cost));
  }
  return {
    ...page,
    results: page.results.map((r) => {
      const m = live.get(r.id) ?? {};
      return {
        id: r.id, name: r.name, status: r.status as AgentStatus, project_id: r.project_id,
        running: m.running ?? 0, queued: m.queued ?? 0, waiting: m.waiting ?? 0, awaiting_approval: m.awaiting_approval ?? 0,
        last_activity_at: activity.get(r.id) ?? null,
        cost_today: roundUsd(cost.get(r.id) ?? 0),
      };
    }),
  };
}

/** Characters of a step's input or output shown in a trace. */
export const TRACE_TEXT_MAX = 2000;

function traceValue(text: string | null, length: number | null): { value: unknown; truncated: boolean } {
  if (text === null) return { value: null, truncated: false };
  const full = Number(length ?? text.length);
  if (full > TRACE_TEXT_MAX) return { value: `${text.slice(0, TRACE_TEXT_MAX)}… [${full - TRACE_TEXT_MAX} more characters]`, truncated: true };
  try { return { value: JSON.parse(text), truncated: false }; } catch { return { value: text, truncated: false }; }
}

/**
 * The latest steps of the agent's runs, newest first (at most `limit`, 1–200): what it called,
 * with what, what came back (input and output cut to TRACE_TEXT_MAX characters), model, tokens,
 * cost, latency and error. Only the first characters of inputs and outputs are read.
 */
export async function reasoningTrace(ctx: Ctx, agentId: string, limit = 50) {
  const agent = await requireAgentRow(ctx, agentId);
  const org = ctx.actor!.organizationId;
  const rows = await ctx.deps.db.kysely.selectFrom('run_steps as s').innerJoin('runs as r', 'r.id', 's.run_id')
    .select([
      's.id', 's.run_id', 'r.status as run_status', 's.seq', 's.type', 's.name', 's.status', 's.model', 's.provider_id',
      's.tokens_in', 's.tokens_out', 's.cost', 's.latency_ms', 's.attempt', 's.error', 's.reused', 's.created_at', 's.finished_at',
      sql<string | null>`substr(s.input, 1, ${TRACE_TEXT_MAX + 1})`.as('input'), sql<number | null>`length(s.input)`.as('input_length'),
      sql<string | null>`substr(s.output, 1, ${TRACE_TEXT_MAX + 1})`.as('output'), sql<number | null>`length(s.output)`.as('output_length'),
    ])
    .where('s.organization_id', '=', org).where('s.agent_id', '=', agentId).where('r.organization_id', '=', org)
    .orderBy('s.created_at', 'desc').orderBy('s.run_id', 'desc').orderBy('s.seq', 'desc').limit(limit).execute();
  return {
    agent_id: agent.id, name: agent.name,
    results: rows.map((r) => {
      const input = traceValue(r.input, r.input_length);
      const output = traceValue(r.output, r.output_length);
      return {
        id: r.id, run_id: r.run_id, run_status: r.run_status, seq: Number(r.seq), type: r.type, name: r.name, status: r.status,
        input: input.value, input_truncated: input.truncated, output: output.value, output_truncated: output.truncated,
        model: r.model, provider_id: r.provider_id, tokens_in: Number(r.tokens_in), tokens_out: Number(r.tokens_out), cost: roundUsd(r.cost),
        latency_ms: r.latency_ms === null ? null : Number(r.latency_ms), attempt: Number(r.attempt), reused: Number(r.reused) === 1,
        error: r.error, created_at: r.created_at, finished_at: r.finished_at,
      };
    }),
  };
}
