import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { createSecret, deleteSecret, getSecret, listSecrets, SECRET_NAME, updateSecret } from '../src/services/secrets.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput, timestamp } from '../src/schemas.js';

const secret = z.object({
  id: z.string(), name: z.string(), description: z.string(), created_by: z.string().nullable(),
  created_at: timestamp, updated_at: timestamp,
}).describe('A secret; its value is write-only and never returned');
const fields = {
  name: z.string().regex(SECRET_NAME, 'Use an upper-case identifier: A-Z first, then A-Z, 0-9 or _, at most 64 characters')
    .describe('Referenced as {{secrets.NAME}}'),
  description: z.string().max(1000).optional(),
  value: z.string().min(1).max(65536).describe('Write-only; stored encrypted'),
};
const tags = ['Secrets'];

export const secretsRouter = router({
  list: procedure
    .meta({ permission: 'secrets:read', openapi: { method: 'GET', path: '/api/v1/secrets', tags, summary: 'List secrets (values never shown)' } })
    .input(z.object({ ...pageParams, search: z.string().max(64).optional().describe('Part of the name') }))
    .output(paginated(secret))
    .query(({ ctx, input }) => listSecrets(ctx, input)),
  create: procedure
    .meta({ permission: 'secrets:write', resource: 'secret', openapi: { method: 'POST', path: '/api/v1/secrets', tags, summary: 'Create a secret', successStatus: 201 } })
    .input(z.object(fields)).output(secret)
    .mutation(({ ctx, input }) => createSecret(ctx, input)),
  get: procedure
    .meta({ permission: 'secrets:read', openapi: { method: 'GET', path: '/api/v1/secrets/{id}', tags, summary: 'Show a secret (without its value)' } })
    .input(idInput).output(secret)
    .query(({ ctx, input }) => getSecret(ctx, input.id)),
  update: procedure
    .meta({ permission: 'secrets:write', resource: 'secret', openapi: { method: 'PATCH', path: '/api/v1/secrets/{id}', tags, summary: 'Rename, describe or rotate a secret' } })
    .input(idInput.extend({ name: fields.name.optional(), description: fields.description, value: fields.value.optional() })).output(secret)
    .mutation(({ ctx, input: { id, ...rest } }) => updateSecret(ctx, id, rest)),
  delete: procedure
    .meta({ permission: 'secrets:write', resource: 'secret', openapi: { method: 'DELETE', path: '/api/v1/secrets/{id}', tags, summary: 'Delete a secret' } })
    .input(idInput).output(z.object({ id: z.string(), deleted: z.literal(true) }))
    .mutation(({ ctx, input }) => deleteSecret(ctx, input.id)),
});
