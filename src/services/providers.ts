import type { Transaction } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { ProviderType } from '../../db/schema/providers.js';
import type { Ctx } from '../context.js';
import { isUniqueViolation } from '../db.js';
import { AppError, badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { callLlm, LlmError } from '../integrations/llm.js';
import { paginate, type PageInput } from '../pagination.js';

// ---------------------------------------------------------------------------------------------
// Built-in prices, seeded into a provider's models when it is created (editable afterwards
// through PUT /api/v1/providers/{id}/models/{model}). Public list prices in USD per million
// tokens (standard tier, no batch or cache discounts) from openai.com/api/pricing and
// anthropic.com/pricing as of 2025. OpenAI-compatible servers (self-hosted, gateways) have no
// known prices: nothing is seeded and calls cost 0 until prices are entered.

export const BUILTIN_PRICES: Record<Exclude<ProviderType, 'openai_compatible'>, Record<string, [input: number, output: number]>> = {
  openai: {
    'gpt-4o': [2.5, 10],
    'gpt-4o-mini': [0.15, 0.6],
    'gpt-4.1': [2, 8],
    'gpt-4.1-mini': [0.4, 1.6],
    'gpt-4.1-nano': [0.1, 0.4],
    'gpt-5': [1.25, 10],
    'gpt-5-mini': [0.25, 2],
    'gpt-5-nano': [0.05, 0.4],
    'o3-mini': [1.1, 4.4],
    'o4-mini': [1.1, 4.4],
  },
  anthropic: {
    'claude-3-5-haiku-latest': [0.8, 4],
    'claude-3-7-sonnet-latest': [3, 15],
    'claude-haiku-4-5': [1, 5],
    'claude-sonnet-4-0': [3, 15],
    'claude-sonnet-4-5': [3, 15],
    'claude-opus-4-1': [15, 75],
    'claude-opus-4-5': [5, 25],
  },
};

/** The model used when a provider is created without one. */
export const DEFAULT_MODELS: Record<Exclude<ProviderType, 'openai_compatible'>, string> = {
  openai: 'gpt-4o-mini',
  anthropic: 'claude-haiku-4-5',
};

// ---------------------------------------------------------------------------------------------
// Providers

const COLUMNS = ['id', 'name', 'type', 'base_url', 'api_key_enc', 'api_key_hint', 'default_model', 'is_default', 'headers', 'created_at', 'updated_at'] as const;
type Row = {
  id: string; name: string; type: ProviderType; base_url: string | null; api_key_enc: string | null; api_key_hint: string | null;
  default_model: string; is_default: number; headers: string; created_at: string; updated_at: string;
};

/** The API view: the key is write-only (only whether there is one, and its last four characters). */
function present(r: Row) {
  let headers: Record<string, string> = {};
  try { headers = JSON.parse(r.headers) as Record<string, string>; } catch { /* none */ }
  return {
    id: r.id, name: r.name, type: r.type, base_url: r.base_url, default_model: r.default_model,
    is_default: r.is_default === 1,
    has_api_key: r.api_key_enc !== null,
    api_key_hint: r.api_key_hint,
    // Header values may hold credentials (proxy tokens): only their names are shown.
    header_names: Object.keys(headers).sort(),
    created_at: r.created_at, updated_at: r.updated_at,
  };
}
export type Provider = ReturnType<typeof present>;

export interface ProviderInput {
  name: string;
  type: ProviderType;
  base_url?: string | null;
  api_key?: string | null;
  default_model?: string | null;
  is_default?: boolean;
  headers?: Record<string, string>;
}
export type ProviderPatch = Partial<Omit<ProviderInput, 'type'>>;

const hintOf = (key: string) => (key.length >= 12 ? `…${key.slice(-4)}` : null);
const nameTaken = () => conflict({ name: 'A provider with this name already exists' });

async function findRow(ctx: Ctx, id: string): Promise<Row | undefined> {
  return ctx.deps.db.kysely.selectFrom('llm_providers').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst() as Promise<Row | undefined>;
}

export function listProviders(ctx: Ctx, input: PageInput & { type?: ProviderType }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('llm_providers').select(COLUMNS).where('organization_id', '=', org);
  if (input.type) query = query.where('type', '=', input.type);
  return paginate(ctx, { query, table: 'llm_providers', scope: org, input }, (r) => present(r as Row));
}

export async function getProvider(ctx: Ctx, id: string): Promise<Provider> {
  const row = await findRow(ctx, id);
  if (!row) throw notFound('Provider');
  return present(row);
}

/** 404 unless the provider exists in the actor's organization (checked before a body is validated). */
export async function assertProviderExists(ctx: Ctx, id: unknown): Promise<void> {
  if (typeof id !== 'string' || id.length === 0 || id.length > 64 || !(await findRow(ctx, id))) throw notFound('Provider');
}

function checkBaseUrl(type: ProviderType, baseUrl: string | null | undefined): void {
  if (type === 'openai_compatible' && !baseUrl) throw badRequest({ base_url: 'Required for openai_compatible providers' });
}

/** Runs `write` in a transaction; name clashes are 409, a concurrent default 409 too. */
async function writeTx<T>(ctx: Ctx, write: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
  try {
    return await ctx.deps.db.kysely.transaction().execute(write);
  } catch (err) {
    if (isUniqueViolation(err)) {
      const text = String((err as Error).message ?? '');
      if (/one_default_uq|\.organization_id\s*$/.test(text)) throw conflict({ is_default: 'Another provider was made the default at the same time: try again' });
      throw nameTaken();
    }
    throw err;
  }
}

export async function createProvider(ctx: Ctx, input: ProviderInput): Promise<Provider> {
  const org = ctx.actor!.organizationId;
  checkBaseUrl(input.type, input.base_url);
  if (input.type !== 'openai_compatible' && !input.api_key) throw badRequest({ api_key: `Required for ${input.type} providers` });
  const defaultModel = input.default_model || (input.type === 'openai_compatible' ? null : DEFAULT_MODELS[input.type]);
  if (!defaultModel) throw badRequest({ default_model: 'Required for openai_compatible providers' });
  const id = newId('prv');
  const now = nowIso();
  await writeTx(ctx, async (trx) => {
    const hasDefault = await trx.selectFrom('llm_providers').select('id').where('organization_id', '=', org).where('is_default', '=', 1).executeTakeFirst();
    // The organization's first provider is its default unless told otherwise.
    const makeDefault = input.is_default ?? !hasDefault;
    if (makeDefault && hasDefault) await trx.updateTable('llm_providers').set({ is_default: 0, updated_at: now }).where('organization_id', '=', org).where('is_default', '=', 1).execute();
    await trx.insertInto('llm_providers').values({
      id, organization_id: org, name: input.name, type: input.type, base_url: input.base_url ?? null,
      api_key_enc: input.api_key ? ctx.deps.box.encrypt(input.api_key) : null, api_key_hint: input.api_key ? hintOf(input.api_key) : null,
      default_model: defaultModel, is_default: makeDefault ? 1 : 0, headers: JSON.stringify(input.headers ?? {}),
      created_at: now, updated_at: now,
    }).execute();
    const seed = input.type === 'openai_compatible' ? {} : BUILTIN_PRICES[input.type];
    const models = Object.entries(seed).map(([name, [inp, out]]) => ({
      id: newId('mdl'), provider_id: id, organization_id: org, name, input_price_per_million: inp, output_price_per_million: out, created_at: now, updated_at: now,
    }));
    if (models.length) await trx.insertInto('llm_models').values(models).execute();
  });
  ctx.deps.counts.invalidate(org, 'llm_providers');
  return getProvider(ctx, id);
}

export async function updateProvider(ctx: Ctx, id: string, patch: ProviderPatch): Promise<Provider> {
  const org = ctx.actor!.organizationId;
  const row = await findRow(ctx, id);
  if (!row) throw notFound('Provider');
  if (patch.base_url !== undefined) checkBaseUrl(row.type, patch.base_url);
  if (patch.api_key === null && row.type !== 'openai_compatible') throw badRequest({ api_key: `Required for ${row.type} providers: replace it instead` });
  if (patch.default_model === null) throw badRequest({ default_model: 'Cannot be null' });
  const now = nowIso();
  const set: Record<string, unknown> = { updated_at: now };
  if (patch.name !== undefined) set.name = patch.name;
  if (patch.base_url !== undefined) set.base_url = patch.base_url;
  if (patch.api_key !== undefined) {
    set.api_key_enc = patch.api_key ? ctx.deps.box.encrypt(patch.api_key) : null;
    set.api_key_hint = patch.api_key ? hintOf(patch.api_key) : null;
  }
  if (patch.default_model) set.default_model = patch.default_model;
  if (patch.headers !== undefined) set.headers = JSON.stringify(patch.headers);
  if (patch.is_default !== undefined) set.is_default = patch.is_default ? 1 : 0;
  await writeTx(ctx, async (trx) => {
    if (patch.is_default) {
      await trx.updateTable('llm_providers').set({ is_default: 0, updated_at: now })
        .where('organization_id', '=', org).where('is_default', '=', 1).where('id', '!=', id).execute();
    }
    await trx.updateTable('llm_providers').set(set).where('id', '=', id).where('organization_id', '=', org).execute();
  });
  return getProvider(ctx, id);
}

/** Deletes the provider and its model prices. Deleting the default leaves the organization without one. */
export async function deleteProvider(ctx: Ctx, id: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  const res = await ctx.deps.db.kysely.deleteFrom('llm_providers').where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) throw notFound('Provider');
  ctx.deps.counts.invalidate(org, 'llm_providers');
}

// ---------------------------------------------------------------------------------------------
// Test

export interface ProviderTestResult {
  ok: true; provider_id: string; model: string; latency_ms: number; text: string;
  usage: { input_tokens: number; output_tokens: number }; cost: number;
}

/**
 * One real minimal call (a few output tokens) with the provider's default model or `model`.
 * A failure is a 422 `{error, details: {code, provider_status, message, retryable}}`, the
 * provider's own message included.
 */
export async function testProvider(ctx: Ctx, id: string, opts: { model?: string } = {}): Promise<ProviderTestResult> {
  const row = await findRow(ctx, id);
  if (!row) throw notFound('Provider');
  try {
    const r = await callLlm(ctx.deps, {
      organizationId: ctx.actor!.organizationId, providerId: id, model: opts.model ?? null,
      messages: [{ role: 'user', content: 'Reply with the single word: ok' }],
      maxOutputTokens: 16, timeoutMs: 30_000,
    });
    return { ok: true, provider_id: id, model: r.model, latency_ms: r.latencyMs, text: r.text, usage: r.usage, cost: r.cost };
  } catch (err) {
    if (err instanceof LlmError) {
      throw new AppError(422, 'Provider test failed', { code: err.code, provider_status: err.status, message: err.message, retryable: err.retryable });
    }
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Models and prices

const MODEL_COLUMNS = ['id', 'provider_id', 'name', 'input_price_per_million', 'output_price_per_million', 'created_at', 'updated_at'] as const;
type ModelRow = { id: string; provider_id: string; name: string; input_price_per_million: number; output_price_per_million: number; created_at: string; updated_at: string };

const presentModel = (r: ModelRow) => ({
  id: r.id, provider_id: r.provider_id, name: r.name,
  input_price_per_million: Number(r.input_price_per_million), output_price_per_million: Number(r.output_price_per_million),
  created_at: r.created_at, updated_at: r.updated_at,
});
export type ProviderModel = ReturnType<typeof presentModel>;

export async function listModels(ctx: Ctx, providerId: string, input: PageInput) {
  const org = ctx.actor!.organizationId;
  await assertProviderExists(ctx, providerId);
  const query = ctx.deps.db.kysely.selectFrom('llm_models').select(MODEL_COLUMNS).where('organization_id', '=', org).where('provider_id', '=', providerId);
  return paginate(ctx, { query, table: 'llm_models', scope: `${org}:${providerId}`, input, sort: { column: 'name', direction: 'asc' } }, (r) => presentModel(r as ModelRow));
}

export interface ModelPricesInput { input_price_per_million: number; output_price_per_million: number }

/** Creates or replaces the prices of one model of the provider. */
export async function upsertModel(ctx: Ctx, providerId: string, name: string, prices: ModelPricesInput): Promise<ProviderModel> {
  const org = ctx.actor!.organizationId;
  await assertProviderExists(ctx, providerId);
  const now = nowIso();
  const db = ctx.deps.db.kysely;
  await db.insertInto('llm_models').values({
    id: newId('mdl'), provider_id: providerId, organization_id: org, name, ...prices, created_at: now, updated_at: now,
  }).onConflict((oc) => oc.columns(['provider_id', 'name']).doUpdateSet({ ...prices, updated_at: now })).execute();
  ctx.deps.counts.invalidate(`${org}:${providerId}`, 'llm_models');
  const row = await db.selectFrom('llm_models').select(MODEL_COLUMNS).where('provider_id', '=', providerId).where('name', '=', name).executeTakeFirstOrThrow();
  return presentModel(row as ModelRow);
}

export async function deleteModel(ctx: Ctx, providerId: string, name: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  await assertProviderExists(ctx, providerId);
  const res = await ctx.deps.db.kysely.deleteFrom('llm_models').where('provider_id', '=', providerId).where('organization_id', '=', org).where('name', '=', name).executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) throw notFound('Model');
  ctx.deps.counts.invalidate(`${org}:${providerId}`, 'llm_models');
}
