import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { apiKeyUsage, createApiKey, getApiKey, listApiKeys, revokeApiKey } from '../src/services/api_keys.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput } from '../src/schemas.js';

const apiKey = z.object({
  id: z.string(), name: z.string(), prefix: z.string().describe('First characters of the key, for recognising it'),
  role: z.string(), status: z.enum(['active', 'revoked', 'expired']), created_by: z.string().nullable(),
  expires_at: z.string().nullable(), last_used_at: z.string().nullable(), revoked_at: z.string().nullable(), created_at: z.string(),
});
const tags = ['API keys'];

export const apiKeysRouter = router({
  list: procedure
    .meta({ permission: 'api_keys:read', openapi: { method: 'GET', path: '/api/v1/api_keys', tags, summary: 'List API keys (secrets redacted)' } })
    .input(z.object(pageParams)).output(paginated(apiKey))
    .query(({ ctx, input }) => listApiKeys(ctx, input)),
  create: procedure
    .meta({ permission: 'api_keys:write', resource: 'api_key', openapi: { method: 'POST', path: '/api/v1/api_keys', tags, summary: 'Create an API key: the full key is returned once', successStatus: 201 } })
    .input(z.object({
      name: z.string().trim().min(1).max(100),
      role: z.string().max(80).optional().describe('Scope: admin, member, viewer or custom:<role id> (default member)'),
      expires_at: z.iso.datetime({ offset: true }).optional(),
    }))
    .output(apiKey.extend({ key: z.string().describe('The full key; shown only now') }))
    .mutation(({ ctx, input }) => createApiKey(ctx, input)),
  usage: procedure
    .meta({ permission: 'api_keys:read', openapi: { method: 'GET', path: '/api/v1/api_keys/usage', tags, summary: 'Requests per key per day' } })
    .input(z.object({ days: z.number().int().min(1).max(366).optional(), api_key_id: id.optional() }))
    .output(z.object({
      since: z.string(), total_requests: z.number().int(),
      results: z.array(z.object({ api_key_id: z.string(), name: z.string(), prefix: z.string(), day: z.string(), requests: z.number().int() })),
    }))
    .query(({ ctx, input }) => apiKeyUsage(ctx, input)),
  get: procedure
    .meta({ permission: 'api_keys:read', openapi: { method: 'GET', path: '/api/v1/api_keys/{id}', tags, summary: 'Show an API key' } })
    .input(idInput).output(apiKey)
    .query(({ ctx, input }) => getApiKey(ctx, input.id)),
  revoke: procedure
    .meta({ permission: 'api_keys:write', resource: 'api_key', openapi: { method: 'DELETE', path: '/api/v1/api_keys/{id}/revoke', tags, summary: 'Revoke an API key' } })
    .input(idInput).output(apiKey)
    .mutation(({ ctx, input }) => revokeApiKey(ctx, input.id)),
});
