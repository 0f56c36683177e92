import { Ajv } from 'ajv';
import { z } from 'zod';
import type { Ctx } from '../context.js';
import { parseJsonObject } from '../json.js';
import { containsText, isUniqueViolation } from '../db.js';
import { AppError, badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';

// ---------------------------------------------------------------------------------------------
// The execution policy: what a run of an agent may do. Stored as JSON on agent templates (the
// base) and on agents (overrides); a run freezes the merged one in runs.policy.

const toolName = z.string().trim().min(1).max(100);

/** Names the unknown keys of a strict object in its 400. */
export const unknownKeys = (what: string) => ({
  error: (iss: { code?: string; keys?: string[] }) => (iss.code === 'unrecognized_keys' && iss.keys
    ? `Unknown ${what} key${iss.keys.length > 1 ? 's' : ''}: ${iss.keys.map((k) => JSON.stringify(k)).join(', ')}`
    : undefined),
});

const retryShape = {
  max_attempts: z.number().int().min(1).max(10).optional().describe('Attempts per step on retryable provider/tool errors (default 3)'),
  backoff_ms: z.number().int().min(0).max(60_000).optional().describe('Base delay between attempts, in ms (default 500)'),
};

const policyShape = {
  provider_id: z.string().min(1).max(64).nullable().optional().describe("The provider; null → the organization's default provider"),
  model: z.string().trim().min(1).max(200).nullable().optional().describe("The model; null → the provider's default model"),
  system_prompt: z.string().max(100_000).optional(),
  temperature: z.number().min(0).max(2).optional().describe('0–2'),
  max_output_tokens: z.number().int().min(1).max(1_000_000).optional(),
  tools_allowed: z.array(toolName).max(100).optional().describe('Tool names the agent may call (HTTP tools by name; built-ins: memory_search, contact_lookup)'),
  tools_requiring_approval: z.array(toolName).max(100).optional().describe('A subset of tools_allowed: a call parks the run in awaiting_approval until a person decides'),
  max_steps: z.number().int().min(1).max(100).optional().describe('LLM and tool steps of a run, 1–100 (default 10)'),
  max_cost_usd: z.number().positive().max(1_000_000).nullable().optional().describe('Per run, USD (> 0); null → no per-run limit'),
  timeout_seconds: z.number().int().min(1).max(3600).optional().describe('Per run, 1–3600 (default 300)'),
  retry: z.strictObject(retryShape, unknownKeys('retry')).optional(),
  max_invalid_output_retries: z.number().int().min(0).max(5).optional().describe('Inference: re-asks on invalid JSON output, 0–5 (default 2)'),
};

/**
 * The policy's fields, strict (unknown keys are refused), without the cross-field rule: what an
 * agent stores as overrides (the rule holds on the merged policy, not on a part of it).
 */
export const executionPolicyOverridesSchema = z.strictObject(policyShape, unknownKeys('execution policy'));

export type ExecutionPolicy = z.infer<typeof executionPolicyOverridesSchema>;

function checkApprovalSubset(p: ExecutionPolicy, ctx: z.RefinementCtx): void {
  const allowed = new Set(p.tools_allowed ?? []);
  const outside = (p.tools_requiring_approval ?? []).filter((t) => !allowed.has(t));
  if (outside.length) {
    ctx.addIssue({
      code: 'custom', path: ['tools_requiring_approval'],
      message: `Must be a subset of tools_allowed; not allowed: ${outside.map((t) => JSON.stringify(t)).join(', ')}`,
    });
  }
}

/** The whole execution policy (a template's, or an agent's effective one): strict, bounded, approvals ⊆ tools_allowed. */
export const executionPolicySchema = executionPolicyOverridesSchema.superRefine(checkApprovalSubset);

/**
 * The effective policy: the template's with the agent's keys on top. A key the agent sets
 * (null included) replaces the template's; arrays are replaced, not concatenated; `retry` is
 * merged key by key.
 */
export function mergePolicies(templatePolicy: ExecutionPolicy | null | undefined, agentPolicy: ExecutionPolicy | null | undefined): ExecutionPolicy {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(templatePolicy ?? {})) if (v !== undefined) out[k] = Array.isArray(v) ? [...v] : k === 'retry' && v ? { ...(v as object) } : v;
  for (const [k, v] of Object.entries(agentPolicy ?? {})) {
    if (v === undefined) continue;
    if (k === 'retry' && v && typeof v === 'object') {
      const merged: Record<string, unknown> = { ...((out.retry as object | undefined) ?? {}) };
      for (const [rk, rv] of Object.entries(v)) if (rv !== undefined) merged[rk] = rv;
      out.retry = merged;
    } else {
      out[k] = Array.isArray(v) ? [...v] : v;
    }
  }
  return out as ExecutionPolicy;
}

/** `{ "<field>.<path>": message }` for each issue; an unknown key is named in its own entry. */
function policyIssues(err: z.ZodError, field: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const issue of err.issues) {
    const base = [field, ...issue.path.map(String)].join('.');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out[`${base}.${key}`] = issue.message;
    } else if (!(base in out)) {
      out[base] = issue.message;
    }
  }
  return out;
}

/** Validates a whole policy; 400 naming each bad field as `<field>.<key>`. */
export function validatePolicy(policy: unknown, field = 'execution_policy'): ExecutionPolicy {
  const res = executionPolicySchema.safeParse(policy);
  if (!res.success) throw badRequest(policyIssues(res.error, field));
  return res.data;
}

/** Validates an agent's overrides alone (strict, bounded; the subset rule is checked after the merge). */
export function validatePolicyOverrides(policy: unknown, field = 'execution_policy'): ExecutionPolicy {
  const res = executionPolicyOverridesSchema.safeParse(policy);
  if (!res.success) throw badRequest(policyIssues(res.error, field));
  return res.data;
}

/** A stored policy (JSON text) as an object; a damaged value reads as {} rather than failing a run. */
export function parsePolicy(text: string | null | undefined): ExecutionPolicy {
  if (!text) return {};
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as ExecutionPolicy) : {};
  } catch {
    return {};
  }
}

/** A JSON merge patch (RFC 7386) of a policy: given keys replace, null removes a key; `retry` is patched key by key. */
export function applyPolicyPatch(policy: ExecutionPolicy, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...policy };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    if (v === null) { delete out[k]; continue; }
    if (k === 'retry' && typeof v === 'object' && !Array.isArray(v)) {
      const retry: Record<string, unknown> = { ...((out.retry as object | undefined) ?? {}) };
      for (const [rk, rv] of Object.entries(v as Record<string, unknown>)) {
        if (rv === undefined) continue;
        if (rv === null) delete retry[rk];
        else retry[rk] = rv;
      }
      if (Object.keys(retry).length) out.retry = retry;
      else delete out.retry;
      continue;
    }
    out[k] = v;
  }
  return out;
}

/** The body of `PATCH …/execution_policy`: every policy key, each also null (= remove it). */
export const executionPolicyPatchShape = Object.fromEntries(
  Object.entries(policyShape).map(([k, s]) => [k, k === 'retry'
    ? z.strictObject({ max_attempts: retryShape.max_attempts.nullable(), backoff_ms: retryShape.backoff_ms.nullable() }, unknownKeys('retry')).nullable().optional()
    : (s as z.ZodOptional<z.ZodType>).unwrap().nullable().optional()]),
) as unknown as Record<keyof typeof policyShape, z.ZodType>;

// ---------------------------------------------------------------------------------------------
// Output schemas: JSON Schema objects that must compile.

const OUTPUT_SCHEMA_MAX_CHARS = 100_000;
const ajv = new Ajv({ strict: false, allErrors: false, validateSchema: true, addUsedSchema: false });

/** 400 naming `field` unless the value is a JSON Schema object that ajv compiles (no remote references). */
export function assertOutputSchema(schema: unknown, field = 'output_schema'): Record<string, unknown> | null {
  if (schema === null || schema === undefined) return null;
  if (typeof schema !== 'object' || Array.isArray(schema)) throw badRequest({ [field]: 'Must be a JSON Schema object' });
  if (JSON.stringify(schema).length > OUTPUT_SCHEMA_MAX_CHARS) throw badRequest({ [field]: `At most ${OUTPUT_SCHEMA_MAX_CHARS} characters of JSON` });
  try {
    ajv.compile(schema);
  } catch (err) {
    throw badRequest({ [field]: `Not a valid JSON Schema: ${(err as Error).message}` });
  }
  return schema as Record<string, unknown>;
}


// ---------------------------------------------------------------------------------------------
// Agent templates of an organization.

const COLUMNS = ['id', 'name', 'description', 'category', 'config', 'execution_policy', 'output_schema', 'created_at', 'updated_at'] as const;
export interface AgentTemplateRow {
  id: string; name: string; description: string; category: string; config: string; execution_policy: string;
  output_schema: string | null; created_at: string; updated_at: string;
}

export interface AgentTemplate {
  id: string; name: string; description: string; category: string;
  config: Record<string, unknown>; execution_policy: ExecutionPolicy; output_schema: Record<string, unknown> | null;
  agents_count: number; created_at: string; updated_at: string;
}

const present = (r: AgentTemplateRow, agentsCount: number): AgentTemplate => ({
  id: r.id, name: r.name, description: r.description, category: r.category,
  config: parseJsonObject(r.config) ?? {}, execution_policy: parsePolicy(r.execution_policy), output_schema: parseJsonObject(r.output_schema),
  agents_count: agentsCount, created_at: r.created_at, updated_at: r.updated_at,
});

export interface AgentTemplateInput {
  name: string; description?: string; category?: string; config?: Record<string, unknown>;
  execution_policy?: ExecutionPolicy; output_schema?: Record<string, unknown> | null;
}

const nameTaken = () => conflict({ name: 'An agent template with this name already exists' });

async function agentsCounts(ctx: Ctx, ids: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  if (!ids.length) return out;
  const rows = await ctx.deps.db.kysely.selectFrom('agents').select(['template_id', (eb) => eb.fn.countAll().as('n')])
    .where('organization_id', '=', ctx.actor!.organizationId).where('template_id', 'in', ids).groupBy('template_id').execute();
  for (const r of rows) out.set(r.template_id!, Number(r.n));
  return out;
}

export async function listAgentTemplates(ctx: Ctx, input: PageInput & { category?: string; search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('agent_templates').select(COLUMNS).where('organization_id', '=', org);
  if (input.category) query = query.where('category', '=', input.category);
  if (input.search) query = query.where(containsText('name', input.search));
  const page = await paginate(ctx, { query, table: 'agent_templates', scope: org, input, countKey: JSON.stringify([input.category ?? null, input.search ?? null]) }, (r) => r);
  const counts = await agentsCounts(ctx, page.results.map((r) => r.id));
  return { ...page, results: page.results.map((r) => present(r, counts.get(r.id) ?? 0)) };
}

/** The template row in the actor's organization, or undefined. */
export async function findAgentTemplateRow(ctx: Ctx, id: string): Promise<AgentTemplateRow | undefined> {
  return ctx.deps.db.kysely.selectFrom('agent_templates').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
}

async function requireRow(ctx: Ctx, id: string): Promise<AgentTemplateRow> {
  const row = await findAgentTemplateRow(ctx, id);
  if (!row) throw notFound('Agent template');
  return row;
}

export async function getAgentTemplate(ctx: Ctx, id: string): Promise<AgentTemplate> {
  const row = await requireRow(ctx, id);
  return present(row, (await agentsCounts(ctx, [id])).get(id) ?? 0);
}

export async function createAgentTemplate(ctx: Ctx, input: AgentTemplateInput): Promise<AgentTemplate> {
  const org = ctx.actor!.organizationId;
  const policy = validatePolicy(input.execution_policy ?? {});
  const outputSchema = assertOutputSchema(input.output_schema);
  const now = nowIso();
  const id = newId('atp');
  try {
    await ctx.deps.db.kysely.insertInto('agent_templates').values({
      id, organization_id: org, name: input.name, description: input.description ?? '', category: input.category ?? 'general',
      config: JSON.stringify(input.config ?? {}), execution_policy: JSON.stringify(policy),
      output_schema: outputSchema ? JSON.stringify(outputSchema) : null, created_at: now, updated_at: now,
    }).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  ctx.deps.counts.invalidate(org, 'agent_templates');
  return getAgentTemplate(ctx, id);
}

/**
 * A template's policy changes the effective policy of every agent made from it: refuse a change
 * that would leave one of them invalid (e.g. an agent that requires approval for a tool the
 * template no longer allows).
 */
async function assertAgentsStayValid(ctx: Ctx, templateId: string, policy: ExecutionPolicy): Promise<void> {
  const agents = await ctx.deps.db.kysely.selectFrom('agents').select(['id', 'name', 'execution_policy'])
    .where('organization_id', '=', ctx.actor!.organizationId).where('template_id', '=', templateId).execute();
  for (const a of agents) {
    const res = executionPolicySchema.safeParse(mergePolicies(policy, parsePolicy(a.execution_policy)));
    if (!res.success) {
      const issues = policyIssues(res.error, 'execution_policy');
      const [key, message] = Object.entries(issues)[0];
      throw badRequest({ execution_policy: `Agent ${a.id} (${a.name}) made from this template would get an invalid effective policy: ${key}: ${message}` });
    }
  }
}

export async function updateAgentTemplate(ctx: Ctx, id: string, input: Partial<AgentTemplateInput>): Promise<AgentTemplate> {
  await requireRow(ctx, id);
  const set: Record<string, unknown> = {};
  if (input.name !== undefined) set.name = input.name;
  if (input.description !== undefined) set.description = input.description;
  if (input.category !== undefined) set.category = input.category;
  if (input.config !== undefined) set.config = JSON.stringify(input.config);
  if (input.execution_policy !== undefined) {
    const policy = validatePolicy(input.execution_policy);
    await assertAgentsStayValid(ctx, id, policy);
    set.execution_policy = JSON.stringify(policy);
  }
  if (input.output_schema !== undefined) {
    const s = assertOutputSchema(input.output_schema);
    set.output_schema = s ? JSON.stringify(s) : null;
  }
  try {
    await ctx.deps.db.kysely.updateTable('agent_templates').set({ ...set, updated_at: nowIso() })
      .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  return getAgentTemplate(ctx, id);
}

/** Merge patch of the template's policy (null removes a key); the result is validated as a whole. */
export async function patchAgentTemplatePolicy(ctx: Ctx, id: string, patch: Record<string, unknown>): Promise<AgentTemplate> {
  const row = await requireRow(ctx, id);
  const policy = validatePolicy(applyPolicyPatch(parsePolicy(row.execution_policy), patch));
  await assertAgentsStayValid(ctx, id, policy);
  await ctx.deps.db.kysely.updateTable('agent_templates').set({ execution_policy: JSON.stringify(policy), updated_at: nowIso() })
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  return getAgentTemplate(ctx, id);
}

/**
 * Deletes a template. When agents were made from it: 409, unless `force`; then each of those
 * agents keeps working on its own: its overrides become the whole effective policy it had
 * (template merged with its overrides), it keeps the template's output schema when it had none
 * of its own, and its template_id becomes null — all in one transaction with the delete.
 */
export async function deleteAgentTemplate(ctx: Ctx, id: string, opts: { force?: boolean } = {}): Promise<void> {
  const org = ctx.actor!.organizationId;
  const row = await requireRow(ctx, id);
  const db = ctx.deps.db.kysely;
  await db.transaction().execute(async (trx) => {
    const agents = await trx.selectFrom('agents').select(['id', 'execution_policy', 'output_schema'])
      .where('organization_id', '=', org).where('template_id', '=', id).execute();
    if (agents.length && !opts.force) {
      throw new AppError(409, 'Conflict', {
        agents_count: agents.length,
        template: `${agents.length} agent(s) were made from this template. Delete them first, or delete with ?force=true: each agent then keeps its current effective policy and output schema, without a template.`,
      });
    }
    const templatePolicy = parsePolicy(row.execution_policy);
    const now = nowIso();
    for (const a of agents) {
      await trx.updateTable('agents').set({
        template_id: null,
        execution_policy: JSON.stringify(mergePolicies(templatePolicy, parsePolicy(a.execution_policy))),
        output_schema: a.output_schema ?? row.output_schema,
        updated_at: now,
      }).where('id', '=', a.id).where('organization_id', '=', org).execute();
    }
    await trx.deleteFrom('agent_templates').where('id', '=', id).where('organization_id', '=', org).execute();
  });
  ctx.deps.counts.invalidate(org, 'agent_templates');
}
