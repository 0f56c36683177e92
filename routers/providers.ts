import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';
import {
  assertProviderExists, createProvider, deleteModel, deleteProvider, getProvider, listModels, listProviders, testProvider, updateProvider, upsertModel,
} from '../src/services/providers.js';

const TYPES = ['openai', 'anthropic', 'openai_compatible'] as const;

const provider = z.object({
  id: z.string(),
  name: z.string(),
  type: z.enum(TYPES),
  base_url: z.string().nullable().describe('null: the public endpoint of the type (OpenAI, Anthropic)'),
  default_model: z.string(),
  is_default: z.boolean().describe("The organization's default provider (at most one)"),
  has_api_key: z.boolean().describe('The key itself is write-only'),
  api_key_hint: z.string().nullable().describe('The last four characters of the key (`…abcd`), for keys of 12 characters or more'),
  header_names: z.array(z.string()).describe('Names of the extra headers (their values are not shown)'),
  created_at: timestamp,
  updated_at: timestamp,
});

const baseUrl = z.string().trim().max(2000).url().refine((u) => /^https?:\/\//i.test(u), 'Only http and https URLs')
  .describe('The API root including its version path, e.g. `https://api.openai.com/v1`, `https://api.anthropic.com/v1`, `http://ollama.internal:11434/v1`. Required for openai_compatible; for openai and anthropic an optional override of the public endpoint. Must pass the outbound URL guard (public, or listed in OUTBOUND_ALLOWLIST) when called.');
const modelName = z.string().trim().min(1).max(200).refine((m) => !/[\s\p{Cc}]/u.test(m), 'A model name has no spaces or control characters');
const headers = z.record(
  z.string().regex(/^[A-Za-z0-9-]{1,100}$/, 'A header name is letters, digits and dashes').refine((h) => !/^(host|content-length|content-type|transfer-encoding|connection)$/i.test(h), 'This header is set by the client'),
  z.string().max(2000).regex(/^[^\r\n]*$/, 'A header value is one line'),
).refine((h) => Object.keys(h).length <= 20, 'At most 20 headers').describe('Extra HTTP headers sent with every request (write-only values)');

const createFields = z.object({
  name: z.string().trim().min(1).max(200).describe('Unique in the organization'),
  type: z.enum(TYPES),
  base_url: baseUrl.nullable().optional(),
  api_key: z.string().min(1).max(2000).nullable().optional().describe('Required for openai and anthropic; stored encrypted, never returned'),
  default_model: modelName.nullable().optional().describe('Default: gpt-4o-mini (openai), claude-haiku-4-5 (anthropic); required for openai_compatible'),
  is_default: z.boolean().optional().describe("Make it the organization's default (clears the previous one). Default: true for the organization's first provider"),
  headers: headers.optional(),
}).strict();

const patchFields = z.object({
  name: z.string().trim().min(1).max(200).optional(),
  base_url: baseUrl.nullable().optional().describe('null: back to the public endpoint (not for openai_compatible)'),
  api_key: z.string().min(1).max(2000).nullable().optional().describe('A new key; null removes it (openai_compatible only)'),
  default_model: modelName.optional(),
  is_default: z.boolean().optional().describe('true makes it the default (clears the previous one); false leaves the organization without a default'),
  headers: headers.optional().describe('Replaces all extra headers'),
}).strict();

const testResult = z.object({
  ok: z.literal(true),
  provider_id: z.string(),
  model: z.string(),
  latency_ms: z.number().int(),
  text: z.string().describe("The model's answer"),
  usage: z.object({ input_tokens: z.number().int(), output_tokens: z.number().int() }),
  cost: z.number().describe('USD, from the model prices'),
});

const model = z.object({
  id: z.string(),
  provider_id: z.string(),
  name: z.string(),
  input_price_per_million: z.number().describe('USD per million input tokens'),
  output_price_per_million: z.number().describe('USD per million output tokens'),
  created_at: timestamp,
  updated_at: timestamp,
});

const price = z.number().finite().min(0).max(1_000_000);
const modelPath = z.object({ id, model: modelName.describe('The model name, URL-encoded in the path (`%2F` for a `/`)') });

const tags = ['Providers'];

/** PUT upserts a model: an unknown provider answers 404 before the body is validated. */
const existing = procedure.use(async ({ ctx, getRawInput, next }) => {
  await assertProviderExists(ctx, ((await getRawInput()) as { id?: unknown } | undefined)?.id);
  return next();
});

export const providersRouter = router({
  list: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/providers', tags, summary: 'List LLM providers' } })
    .input(z.object({ ...pageParams, type: z.enum(TYPES).optional() }))
    .output(paginated(provider))
    .query(({ ctx, input }) => listProviders(ctx, input)),
  create: procedure
    .meta({
      permission: 'agents:write', resource: 'llm_provider',
      openapi: {
        method: 'POST', path: '/api/v1/providers', tags, summary: 'Add an LLM provider', successStatus: 201, errors: [409],
        description: 'OpenAI, Anthropic or any OpenAI-compatible server (chat completions). The API key is stored encrypted and never returned. The models of OpenAI and Anthropic providers are seeded with public list prices (editable under `/models`).',
      },
    })
    .input(createFields).output(provider)
    .mutation(({ ctx, input }) => createProvider(ctx, input)),
  get: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/providers/{id}', tags, summary: 'Show an LLM provider' } })
    .input(idInput).output(provider)
    .query(({ ctx, input }) => getProvider(ctx, input.id)),
  update: procedure
    .meta({ permission: 'agents:write', resource: 'llm_provider', openapi: { method: 'PATCH', path: '/api/v1/providers/{id}', tags, summary: 'Update an LLM provider', errors: [409] } })
    .input(patchFields.extend(idInput.shape)).output(provider)
    .mutation(({ ctx, input: { id: providerId, ...rest } }) => updateProvider(ctx, providerId, rest)),
  delete: procedure
    .meta({ permission: 'agents:write', resource: 'llm_provider', openapi: { method: 'DELETE', path: '/api/v1/providers/{id}', tags, summary: 'Delete an LLM provider and its model prices', successStatus: 204 } })
    .input(idInput).output(z.void())
    .mutation(({ ctx, input }) => deleteProvider(ctx, input.id)),
  test: procedure
    .meta({
      permission: 'agents:write', resource: 'llm_provider',
      openapi: {
        method: 'POST', path: '/api/v1/providers/{id}/test', tags, summary: 'Test an LLM provider with a real call', errors: [422],
        description: 'Asks the model (the default one, or `model`) for a few tokens. A provider that is misconfigured (key refused, unknown model, unreachable or refused base URL, provider error) answers 422 with `details: {code, provider_status, message, retryable}`, the provider\'s own message included.',
      },
    })
    .input(idInput.extend({ model: modelName.optional().describe("Default: the provider's default model") }).strict())
    .output(testResult)
    .mutation(({ ctx, input }) => testProvider(ctx, input.id, { model: input.model })),
  models: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/providers/{id}/models', tags, summary: "List a provider's models with their prices", description: 'Sorted by name. Prices are USD per million tokens; a model without a row costs 0.' } })
    .input(idInput.extend(pageParams)).output(paginated(model))
    .query(({ ctx, input: { id: providerId, ...page } }) => listModels(ctx, providerId, page)),
  upsertModel: existing
    .meta({
      permission: 'agents:write', resource: 'llm_model',
      openapi: {
        method: 'PUT', path: '/api/v1/providers/{id}/models/{model}', tags, summary: 'Set the prices of a model (creates it if needed)',
        description: 'Model names may contain `.`, `:` and `/` (URL-encode a `/` as `%2F`).',
      },
    })
    .input(modelPath.extend({ input_price_per_million: price.describe('USD per million input tokens'), output_price_per_million: price.describe('USD per million output tokens') }).strict())
    .output(model)
    .mutation(({ ctx, input: { id: providerId, model: name, ...prices } }) => upsertModel(ctx, providerId, name, prices)),
  deleteModel: procedure
    .meta({ permission: 'agents:write', resource: 'llm_model', openapi: { method: 'DELETE', path: '/api/v1/providers/{id}/models/{model}', tags, summary: "Delete a model's prices", successStatus: 204 } })
    .input(modelPath).output(z.void())
    .mutation(({ ctx, input }) => deleteModel(ctx, input.id, input.model)),
});
