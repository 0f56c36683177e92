import type { Ctx, Deps } from '../context.js';
import { AppError, badRequest, notFound } from '../errors.js';
import { nowIso } from '../ids.js';
import { runInline, startRun } from '../engine/runs.js';
import { presentRun } from './runs.js';
import { collectStepErrors, compileJsonSchema, conversationOf } from '../engine/agent_loop.js';
import { LlmError, loadProvider } from '../integrations/llm.js';
import { BudgetExceededError } from './budgets.js';
import { recordAudit } from './audit.js';
import { resolveTools } from './tools.js';
import { loadAgentForRun } from './agents.js';

/**
 * The agent runtime's three entry points: execute (an asynchronous run of the agent loop),
 * inference (one structured answer, synchronous) and score_lead (synchronous, stored on the
 * contact). The run kinds themselves live in src/engine/agent_loop.ts (imported above, so that
 * every process that loads the routers registers them).
 */

type Loaded = Awaited<ReturnType<typeof loadAgentForRun>>;

/** 404 unless the agent exists in the actor's organization (checked before the body is validated). */
export async function assertAgentExists(ctx: Ctx, id: unknown): Promise<void> {
  const found = typeof id === 'string' && id.length > 0 && id.length <= 64 && !id.includes('\u0000')
    && await ctx.deps.db.kysely.selectFrom('agents').select('id').where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!found) throw notFound('Agent');
}

const baseRun = (ctx: Ctx, l: Loaded) => ({
  organizationId: ctx.actor!.organizationId,
  agentId: l.agent.id,
  projectId: l.agent.project_id ?? null,
  policy: l.policy as object,
  createdBy: ctx.actor!.userId ?? ctx.actor!.id,
});

// ---------------------------------------------------------------------------------------------
// execute

export interface ExecuteInput { input: unknown; metadata?: Record<string, unknown> }

/**
 * Starts a run of the agent loop (queued; a worker executes it) with the agent's effective policy
 * frozen, and returns it. A paused or archived agent is a 409 (loadAgentForRun's).
 */
export async function executeAgent(ctx: Ctx, agentId: string, body: ExecuteInput) {
  const l = await loadAgentForRun(ctx, agentId);
  if (!conversationOf(body.input)) throw badRequest({ input: 'A message is needed: a string, or an object with `message` or `messages`' });
  // A provider that is missing or unusable is a 422 now rather than a failed run later.
  try {
    await loadProvider(ctx.deps, ctx.actor!.organizationId, l.policy.provider_id ?? null);
  } catch (err) {
    if (err instanceof LlmError) throw new AppError(422, 'provider_misconfigured', { 'execution_policy.provider_id': err.message });
    throw err;
  }
  // A tool of the policy that no longer exists (or is disabled) is a 400 now rather than a failed run later.
  const tools = l.policy.tools_allowed ?? [];
  if (tools.length) await resolveTools(ctx.deps, ctx.actor!.organizationId, tools, { field: 'execution_policy.tools_allowed' });
  const input = typeof body.input === 'string' ? { message: body.input } : { ...(body.input as object) };
  if (body.metadata !== undefined) Object.assign(input, { metadata: body.metadata });
  const run = await startRun(ctx.deps, { ...baseRun(ctx, l), kind: 'agent', trigger: 'execute', input });
  // Audited here (the route's own audit would name the run's id as the agent's).
  await recordAudit(ctx, { action: 'agent_runtime.execute', resourceType: 'agent', resourceId: l.agent.id, metadata: { run_id: run.id } });
  return presentRun(run);
}

// ---------------------------------------------------------------------------------------------
// inference and score_lead: synchronous runs

interface InlineAnswer { output: unknown; run: { id: string; tokens_in: number; tokens_out: number; cost: number } }

/** A failed synchronous run as the HTTP error its caller gets (never a 500 for a provider's failure). */
function inlineError(run: { id: string; error?: string | null; error_code?: string | null }, causes: unknown[]): AppError {
  const base = { run_id: run.id, error_code: run.error_code ?? null, message: run.error ?? 'The run failed' };
  // The original error of the step that failed the run (earlier ones may have been retried away).
  const last = <T>(type: abstract new (...args: never[]) => T): T | undefined => [...causes].reverse().find((e): e is T => e instanceof type);
  const budget = run.error_code === 'budget_exceeded' ? last(BudgetExceededError) : undefined;
  if (budget) return new AppError(402, 'budget_exceeded', { ...(budget.details as object), run_id: run.id });
  const provider = run.error_code === 'provider_error' ? last(LlmError) : undefined;
  if (provider) {
    const details = { ...base, message: provider.message, provider_status: provider.status, provider_error: provider.code };
    return provider.code === 'misconfigured' || provider.code === 'forbidden_url'
      ? new AppError(422, 'provider_misconfigured', details)
      : new AppError(502, 'provider_error', details);
  }
  switch (run.error_code) {
    case 'budget_exceeded': return new AppError(402, 'budget_exceeded', base);
    case 'max_cost': return new AppError(402, 'max_cost', base);
    case 'invalid_output': return new AppError(422, 'invalid_output', base);
    case 'invalid_request': case 'invalid_input': return new AppError(400, 'Invalid request', base);
    case 'rejected': case 'cancelled': return new AppError(409, run.error_code, base);
    case 'timeout': return new AppError(502, 'timeout', base);
    default: return new AppError(502, 'run_failed', base);
  }
}

async function runSync(ctx: Ctx, l: Loaded, kind: string, input: object): Promise<InlineAnswer> {
  const { result, errors } = await collectStepErrors(() => runInline(ctx.deps, { ...baseRun(ctx, l), kind, trigger: kind, input }));
  const run = result.run;
  if (run.status !== 'succeeded') throw inlineError(run, errors);
  return { output: result.output, run: { id: run.id, tokens_in: Number(run.tokens_in), tokens_out: Number(run.tokens_out), cost: Number(run.cost) } };
}

const usageOf = (run: InlineAnswer['run']) => ({
  usage: { input_tokens: Number(run.tokens_in), output_tokens: Number(run.tokens_out) },
  cost: Number(run.cost),
  run_id: run.id,
});

export interface InferenceInput { input: unknown; schema?: Record<string, unknown>; system?: string }

/** One structured answer (the request's schema, else the agent's or its template's output_schema), validated. */
export async function inferAgent(ctx: Ctx, agentId: string, body: InferenceInput) {
  const l = await loadAgentForRun(ctx, agentId);
  const schema = body.schema ?? (l.outputSchema as Record<string, unknown> | null);
  if (!schema) throw badRequest({ schema: 'Give a JSON Schema, or set the agent\'s output_schema' });
  try {
    compileJsonSchema(schema);
  } catch (err) {
    throw badRequest({ schema: `The JSON Schema does not compile: ${(err as Error).message}` });
  }
  const answer = await runSync(ctx, l, 'inference', { input: body.input, schema, ...(body.system !== undefined ? { system: body.system } : {}) });
  return { output: (answer.output as { output: unknown }).output, ...usageOf(answer.run) };
}

export interface ScoreLeadInput { contact_id?: string; contact?: Record<string, unknown> }

/** The contact fields the model sees (no ids, counters or internal keys). */
const SCORED_FIELDS = ['name', 'email', 'phone', 'company', 'title', 'city', 'state', 'country', 'tags', 'custom_fields', 'source', 'esp', 'esg', 'email_validity', 'data_health_flags', 'unsubscribed', 'bounced'] as const;

async function contactForScoring(ctx: Ctx, contactId: string): Promise<Record<string, unknown>> {
  const row = await ctx.deps.db.kysely.selectFrom('contacts').selectAll()
    .where('id', '=', contactId).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Contact');
  const out: Record<string, unknown> = {};
  for (const k of SCORED_FIELDS) {
    let v: unknown = row[k];
    if (k === 'tags' || k === 'custom_fields' || k === 'data_health_flags') v = JSON.parse(String(v));
    if (k === 'unsubscribed' || k === 'bounced') v = Number(v) === 1;
    if (v !== null && v !== '' && !(Array.isArray(v) && !v.length)) out[k] = v;
  }
  return out;
}

export async function scoreLead(ctx: Ctx, agentId: string, body: ScoreLeadInput) {
  if ((body.contact_id === undefined) === (body.contact === undefined)) {
    throw badRequest({ contact_id: 'Give exactly one of contact_id and contact', contact: 'Give exactly one of contact_id and contact' });
  }
  const l = await loadAgentForRun(ctx, agentId);
  const contactId = body.contact_id ?? null;
  const contact = contactId ? await contactForScoring(ctx, contactId) : body.contact!;
  const answer = await runSync(ctx, l, 'score_lead', { contact_id: contactId, contact });
  const { score, reasons } = (answer.output as { output: { score: number; reasons: string[] } }).output;
  return { contact_id: contactId, score, reasons, ...usageOf(answer.run) };
}

/**
 * Stores a lead score on a contact of the organization (the `score_lead` run's last step);
 * false when the contact no longer exists.
 */
export async function storeLeadScore(deps: Deps, organizationId: string, contactId: string, score: number, reasons: string[]): Promise<boolean> {
  if (!Number.isInteger(score) || score < 0 || score > 100) throw badRequest({ score: 'An integer from 0 to 100' });
  const res = await deps.db.kysely.updateTable('contacts')
    .set({ lead_score: score, lead_score_reasons: JSON.stringify(reasons), updated_at: nowIso() })
    .where('id', '=', contactId).where('organization_id', '=', organizationId).executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

