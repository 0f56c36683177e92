import type { Transaction } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { Ctx } from '../context.js';
import { containsText, isUniqueViolation } from '../db.js';
import { AppError, badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { callLlm, estimateMaxCost, LlmError } from '../integrations/llm.js';
import { paginate, type PageInput } from '../pagination.js';
import { assertWithinBudget } from './budgets.js';
import { plainLiquid } from './email_templates.js';
import { assertProviderExists } from './providers.js';

// Prompts: named templates with numbered, immutable versions. Labels (`production`, `staging`, …)
// point at one version each and move between versions atomically. Templates are Liquid, rendered
// by the project's one engine (plain text, strict: a missing variable is an error).

export interface ModelSettings { provider_id?: string | null; model?: string | null; temperature?: number }

const liquid = plainLiquid();

// ---------------------------------------------------------------------------------------------
// Templates.

/** Parses a template (400 naming the line on a syntax error) and returns the names it reads. */
export function templateVariables(template: string): string[] {
  let parsed;
  try {
    parsed = liquid.parse(template);
  } catch (err) {
    throw badRequest({ template: liquid.describeError(err) }, 'Invalid template');
  }
  return [...new Set(liquid.engine.globalVariablesSync(parsed))];
}

function setPath(data: Record<string, unknown>, path: string[]): void {
  let cur = data;
  for (const [i, key] of path.entries()) {
    if (i === path.length - 1) { cur[key] = ''; return; }
    const next = cur[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[key] = {};
    cur = cur[key] as Record<string, unknown>;
  }
}

const MAX_MISSING = 50;

/**
 * Renders a template as plain text with `variables`. Every missing variable is named in one 400
 * (`details.missing`), not only the first; any other rendering error is a 400 naming the line.
 */
export async function renderPrompt(template: string, variables: Record<string, unknown>): Promise<string> {
  const parsed = (() => {
    try { return liquid.parse(template); } catch (err) { throw badRequest({ template: liquid.describeError(err) }, 'Invalid template'); }
  })();
  const missing: string[] = [];
  let data = variables;
  let previous: string | undefined;
  for (let attempt = 0; attempt <= MAX_MISSING; attempt++) {
    try {
      const text = String(await liquid.engine.render(parsed, data));
      if (missing.length === 0) return text;
      break;
    } catch (err) {
      const name = (err as Error)?.name === 'UndefinedVariableError' ? /undefined variable: ([^,\s]+)/.exec((err as Error).message)?.[1] : undefined;
      if (!name) {
        if (missing.length) break; // the missing variables are reported first
        throw badRequest({ template: liquid.describeError(err) }, 'Template rendering failed');
      }
      if (name === previous) break; // a loop variable's field: no stand-in in the data helps
      previous = name;
      // Render again with a stand-in for it, to find the others; a path under one already named is not named again.
      if (!missing.some((m) => name === m || name.startsWith(`${m}.`))) missing.push(name);
      if (data === variables) data = structuredClone(variables);
      setPath(data, name.split('.'));
    }
  }
  throw badRequest({ variables: `Missing variables: ${missing.join(', ')}`, missing }, 'Missing variables');
}

// ---------------------------------------------------------------------------------------------
// Rows.

const PROMPT_COLUMNS = ['id', 'name', 'description', 'created_at', 'updated_at'] as const;
type PromptRow = { id: string; name: string; description: string; created_at: string; updated_at: string };

const VERSION_COLUMNS = ['id', 'prompt_id', 'version', 'template', 'variables', 'model_settings', 'labels', 'created_by', 'created_at'] as const;
type VersionRow = {
  id: string; prompt_id: string; version: number; template: string; variables: string; model_settings: string | null;
  labels: string; created_by: string | null; created_at: string;
};

const presentVersion = (r: VersionRow) => ({
  id: r.id, prompt_id: r.prompt_id, version: Number(r.version), template: r.template,
  variables: JSON.parse(r.variables) as string[],
  model_settings: r.model_settings === null ? null : (JSON.parse(r.model_settings) as ModelSettings),
  labels: JSON.parse(r.labels) as string[],
  created_by: r.created_by, created_at: r.created_at,
});
export type PromptVersion = ReturnType<typeof presentVersion>;

export interface VersionInput { template: string; variables?: string[]; model_settings?: ModelSettings | null; labels?: string[] }
export interface PromptInput { name: string; description?: string }

const nameTaken = () => conflict({ name: 'A prompt with this name already exists' });

async function findPrompt(ctx: Ctx, id: unknown): Promise<PromptRow> {
  if (typeof id !== 'string' || id.length === 0 || id.length > 64) throw notFound('Prompt');
  const row = await ctx.deps.db.kysely.selectFrom('prompts').select(PROMPT_COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Prompt');
  return row;
}

/** 404 unless the prompt exists in the actor's organization (checked before a body is validated). */
export async function assertPromptExists(ctx: Ctx, id: unknown): Promise<void> {
  await findPrompt(ctx, id);
}

const versionsOf = (ctx: Ctx, promptId: string) =>
  ctx.deps.db.kysely.selectFrom('prompt_versions').select(VERSION_COLUMNS).where('prompt_id', '=', promptId).where('organization_id', '=', ctx.actor!.organizationId);

/** The latest version, the labelled ones, and the label → version map. */
async function summary(ctx: Ctx, promptId: string) {
  const [latest, labelled, count] = await Promise.all([
    versionsOf(ctx, promptId).orderBy('version', 'desc').limit(1).executeTakeFirst(),
    versionsOf(ctx, promptId).where('labels', '!=', '[]').orderBy('version', 'desc').execute(),
    ctx.deps.db.kysely.selectFrom('prompt_versions').select((eb) => eb.fn.countAll<number>().as('n')).where('prompt_id', '=', promptId).executeTakeFirst(),
  ]);
  const labels: Record<string, number> = {};
  for (const v of labelled) for (const l of JSON.parse(v.labels) as string[]) labels[l] = Number(v.version);
  return {
    versions_count: Number(count?.n ?? 0),
    latest_version: latest ? presentVersion(latest) : null,
    labels,
    labeled_versions: labelled.map(presentVersion),
  };
}

async function validateVersion(ctx: Ctx, input: VersionInput) {
  const derived = templateVariables(input.template);
  const providerId = input.model_settings?.provider_id;
  if (providerId) {
    try { await assertProviderExists(ctx, providerId); } catch { throw badRequest({ 'model_settings.provider_id': 'No LLM provider with this id in the organization' }); }
  }
  return { variables: input.variables ? [...new Set(input.variables)] : derived };
}

/**
 * Takes `labels` off every other version of the prompt and puts them on `versionId` (with the
 * version's own `keep` labels), inside the caller's transaction.
 */
async function moveLabels(trx: Transaction<Database>, promptId: string, versionId: string, labels: string[]): Promise<void> {
  const others = await trx.selectFrom('prompt_versions').select(['id', 'labels'])
    .where('prompt_id', '=', promptId).where('id', '!=', versionId).where('labels', '!=', '[]').execute();
  for (const o of others) {
    const current = JSON.parse(o.labels) as string[];
    const kept = current.filter((l) => !labels.includes(l));
    if (kept.length !== current.length) await trx.updateTable('prompt_versions').set({ labels: JSON.stringify(kept) }).where('id', '=', o.id).execute();
  }
  await trx.updateTable('prompt_versions').set({ labels: JSON.stringify([...new Set(labels)].sort()) }).where('id', '=', versionId).execute();
}

/** Locks the prompt for the rest of the transaction (PostgreSQL row lock; SQLite serializes writers). */
async function lockPrompt(trx: Transaction<Database>, org: string, promptId: string, now: string): Promise<void> {
  const res = await trx.updateTable('prompts').set({ updated_at: now }).where('id', '=', promptId).where('organization_id', '=', org).executeTakeFirst();
  if (Number(res.numUpdatedRows) === 0) throw notFound('Prompt');
}

async function insertVersion(ctx: Ctx, trx: Transaction<Database>, promptId: string, input: VersionInput, variables: string[], now: string): Promise<string> {
  const org = ctx.actor!.organizationId;
  const last = await trx.selectFrom('prompt_versions').select((eb) => eb.fn.max('version').as('v')).where('prompt_id', '=', promptId).executeTakeFirst();
  const id = newId('pver');
  await trx.insertInto('prompt_versions').values({
    id, prompt_id: promptId, organization_id: org, version: Number(last?.v ?? 0) + 1, template: input.template,
    variables: JSON.stringify(variables), model_settings: input.model_settings ? JSON.stringify(input.model_settings) : null,
    labels: '[]', created_by: ctx.actor!.userId ?? ctx.actor!.id, created_at: now,
  }).execute();
  if (input.labels?.length) await moveLabels(trx, promptId, id, input.labels);
  return id;
}

// ---------------------------------------------------------------------------------------------
// Prompts.

export function listPrompts(ctx: Ctx, input: PageInput & { search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('prompts').select(PROMPT_COLUMNS)
    .select((eb) => eb.selectFrom('prompt_versions').select((e) => e.fn.max('version').as('v')).whereRef('prompt_versions.prompt_id', '=', 'prompts.id').as('latest_version'))
    .where('organization_id', '=', org);
  if (input.search) query = query.where(containsText('name', input.search));
  return paginate(ctx, { query, table: 'prompts', scope: org, input, countKey: input.search ?? '' },
    (r) => ({ ...r, latest_version: r.latest_version === null ? null : Number(r.latest_version) }));
}

/** The prompt with its latest and labelled versions; with `label` or `version`, that version as `resolved_version`. */
export async function getPrompt(ctx: Ctx, id: string, pick: { label?: string; version?: number } = {}) {
  const p = await findPrompt(ctx, id);
  const s = await summary(ctx, p.id);
  const out = { ...p, ...s };
  if (pick.label === undefined && pick.version === undefined) return out;
  return { ...out, resolved_version: await resolveVersion(ctx, p.id, pick) };
}

async function resolveVersion(ctx: Ctx, promptId: string, pick: { label?: string; version?: number }): Promise<PromptVersion> {
  if (pick.version !== undefined) {
    const row = await versionsOf(ctx, promptId).where('version', '=', pick.version).executeTakeFirst();
    if (!row) throw notFound(`Version ${pick.version} of the prompt`);
    if (pick.label !== undefined && !(JSON.parse(row.labels) as string[]).includes(pick.label)) {
      throw badRequest({ label: `Version ${pick.version} does not carry the label "${pick.label}"` });
    }
    return presentVersion(row);
  }
  if (pick.label !== undefined) {
    const { labeled_versions } = await summary(ctx, promptId);
    const v = labeled_versions.find((x) => x.labels.includes(pick.label!));
    if (!v) throw notFound(`A version labelled "${pick.label}"`);
    return v;
  }
  // Neither: the production version, else the latest.
  const { labeled_versions, latest_version } = await summary(ctx, promptId);
  const chosen = labeled_versions.find((x) => x.labels.includes('production')) ?? latest_version;
  if (!chosen) throw badRequest({ version: 'The prompt has no versions yet' });
  return chosen;
}

export async function createPrompt(ctx: Ctx, input: PromptInput & Partial<VersionInput>) {
  const org = ctx.actor!.organizationId;
  const first = input.template !== undefined ? { ...input, template: input.template } : null;
  if (!first && (input.variables || input.model_settings || input.labels)) {
    throw badRequest({ template: 'Required with variables, model_settings or labels (they belong to the first version)' });
  }
  const checked = first ? await validateVersion(ctx, first) : null;
  const id = newId('prm');
  const now = nowIso();
  try {
    await ctx.deps.db.kysely.transaction().execute(async (trx) => {
      await trx.insertInto('prompts').values({ id, organization_id: org, name: input.name, description: input.description ?? '', created_at: now, updated_at: now }).execute();
      if (first) await insertVersion(ctx, trx, id, first, checked!.variables, now);
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  ctx.deps.counts.invalidate(org, 'prompts');
  return getPrompt(ctx, id);
}

export async function updatePrompt(ctx: Ctx, id: string, input: Partial<PromptInput>) {
  await findPrompt(ctx, id);
  try {
    await ctx.deps.db.kysely.updateTable('prompts').set({ ...input, updated_at: nowIso() })
      .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  return getPrompt(ctx, id);
}

export async function deletePrompt(ctx: Ctx, id: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  const res = await ctx.deps.db.kysely.deleteFrom('prompts').where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) throw notFound('Prompt');
  ctx.deps.counts.invalidate(org, 'prompts');
}

// ---------------------------------------------------------------------------------------------
// Versions.

export async function listPromptVersions(ctx: Ctx, promptId: string, input: PageInput & { label?: string }) {
  const p = await findPrompt(ctx, promptId);
  let query = versionsOf(ctx, p.id);
  if (input.label) query = query.where(containsText('labels', JSON.stringify(input.label)));
  return paginate(ctx, { query, table: 'prompt_versions', scope: p.id, input, countKey: input.label ?? '' }, presentVersion);
}

export async function getPromptVersion(ctx: Ctx, promptId: string, version: number): Promise<PromptVersion> {
  const p = await findPrompt(ctx, promptId);
  return resolveVersion(ctx, p.id, { version });
}

/** A new version (numbered after the last); its labels move to it from the other versions, in one transaction. */
export async function createPromptVersion(ctx: Ctx, promptId: string, input: VersionInput): Promise<PromptVersion> {
  const org = ctx.actor!.organizationId;
  const p = await findPrompt(ctx, promptId);
  const { variables } = await validateVersion(ctx, input);
  const now = nowIso();
  let id: string;
  try {
    id = await ctx.deps.db.kysely.transaction().execute(async (trx) => {
      await lockPrompt(trx, org, p.id, now);
      return insertVersion(ctx, trx, p.id, input, variables, now);
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict({ version: 'Another version was created at the same time: try again' });
    throw err;
  }
  ctx.deps.counts.invalidate(p.id, 'prompt_versions');
  const row = await versionsOf(ctx, p.id).where('id', '=', id).executeTakeFirstOrThrow();
  return presentVersion(row);
}

/** Sets a version's labels: labels it gains leave the other versions, in one transaction. */
export async function setPromptVersionLabels(ctx: Ctx, promptId: string, version: number, labels: string[]): Promise<PromptVersion> {
  const org = ctx.actor!.organizationId;
  const p = await findPrompt(ctx, promptId);
  const target = await resolveVersion(ctx, p.id, { version });
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    await lockPrompt(trx, org, p.id, nowIso());
    await moveLabels(trx, p.id, target.id, labels);
  });
  return resolveVersion(ctx, p.id, { version });
}

// ---------------------------------------------------------------------------------------------
// Test: render, and optionally run on a provider.

export interface PromptTestInput {
  variables?: Record<string, unknown>;
  version?: number;
  label?: string;
  run?: { provider_id?: string | null; model?: string | null; temperature?: number; max_output_tokens?: number };
}

export async function testPrompt(ctx: Ctx, promptId: string, input: PromptTestInput) {
  const p = await findPrompt(ctx, promptId);
  const v = await resolveVersion(ctx, p.id, { version: input.version, label: input.label });
  const rendered = await renderPrompt(v.template, input.variables ?? {});
  const out = { rendered, variables: v.variables, version: v.version, labels: v.labels };
  if (!input.run) return out;

  const org = ctx.actor!.organizationId;
  const settings = v.model_settings ?? {};
  const temperature = input.run.temperature ?? settings.temperature;
  const req = {
    organizationId: org,
    providerId: input.run.provider_id ?? settings.provider_id ?? null,
    model: input.run.model ?? settings.model ?? null,
    ...(temperature !== undefined && temperature !== null ? { temperature } : {}),
    ...(input.run.max_output_tokens !== undefined ? { maxOutputTokens: input.run.max_output_tokens } : {}),
  };
  try {
    // A test run is a paid call too: the organization's budgets apply.
    await assertWithinBudget(ctx.deps, { organizationId: org }, await estimateMaxCost(ctx.deps, { ...req, inputChars: rendered.length }));
    const r = await callLlm(ctx.deps, { ...req, messages: [{ role: 'user', content: rendered }] });
    return {
      ...out,
      output: { text: r.text, usage: r.usage, cost: r.cost, provider_id: r.providerId, model: r.model, latency_ms: r.latencyMs, finish_reason: r.finishReason },
    };
  } catch (err) {
    if (err instanceof LlmError) {
      const details = { run: err.message, code: err.code, provider_status: err.status };
      // The provider's own trouble (timeouts, 429, 5xx) is a bad gateway; a misconfiguration or refused request is the caller's.
      throw err.retryable ? new AppError(502, 'Provider error', details) : badRequest(details, 'Provider error');
    }
    throw err;
  }
}
