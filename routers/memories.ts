import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';
import {
  createMemory, deleteMemory, getMemory, listMemories, MAX_SEARCH_LIMIT, searchMemories, updateMemory,
} from '../src/services/memories.js';

const metadata = z.record(z.string(), z.unknown())
  .refine((o) => JSON.stringify(o).length <= 16_000, 'At most 16000 characters as JSON');
const namespace = z.string().trim().min(1).max(100);

const memory = z.object({
  id: z.string(),
  agent_id: z.string().nullable(),
  namespace: z.string(),
  content: z.string(),
  metadata: z.record(z.string(), z.unknown()),
  created_at: timestamp,
  updated_at: timestamp,
});

const fields = {
  content: z.string().trim().min(1).max(20_000).describe('The text remembered (full-text indexed)'),
  agent_id: id.nullable().describe('The agent it belongs to; null: shared by the organization\'s agents'),
  namespace: namespace.describe('Default "default"'),
  metadata: metadata.describe('Free-form JSON object'),
};

const hit = z.object({
  id: z.string(),
  content: z.string(),
  score: z.number().describe('Relevance, higher is better (compare within one search)'),
  namespace: z.string(),
  agent_id: z.string().nullable(),
  metadata: z.record(z.string(), z.unknown()),
});

const tags = ['Memory'];

export const memoriesRouter = router({
  list: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/memories', tags, summary: 'List memories', description: 'Newest first.' } })
    .input(z.object({ ...pageParams, agent_id: id.optional().describe('Only this agent\'s memories'), namespace: namespace.optional() }))
    .output(paginated(memory))
    .query(({ ctx, input }) => listMemories(ctx, input)),
  create: procedure
    .meta({ permission: 'agents:write', resource: 'memory', openapi: { method: 'POST', path: '/api/v1/memories', tags, summary: 'Store a memory', successStatus: 201 } })
    .input(z.object({ ...fields, agent_id: fields.agent_id.optional(), namespace: fields.namespace.optional(), metadata: fields.metadata.optional() }))
    .output(memory)
    .mutation(({ ctx, input }) => createMemory(ctx, input)),
  search: procedure
    .meta({
      permission: 'agents:read', audit: false,
      openapi: {
        method: 'POST', path: '/api/v1/memories/search', tags, summary: 'Search memories by full text',
        description: 'Ranked full-text search (SQLite FTS5 / PostgreSQL full text, English stemming): a memory matches when it holds any word of the query, '
          + 'best matches first. Punctuation and operators in the query are ignored (words only). With `agent_id`: that agent\'s memories and the '
          + 'shared ones (agent_id null), unless include_shared is false.',
      },
    })
    .input(z.object({
      query: z.string().min(1).max(1000).describe('Free text'),
      agent_id: id.nullable().optional().describe('An agent\'s memories (and the shared ones); null: only the shared ones; absent: all'),
      namespace: namespace.optional(),
      include_shared: z.boolean().optional().describe('With agent_id: also the organization\'s shared memories (default true)'),
      limit: z.number().int().min(1).max(MAX_SEARCH_LIMIT).optional().describe(`1–${MAX_SEARCH_LIMIT}, default 10`),
    }))
    .output(z.object({ results: z.array(hit) }))
    .mutation(async ({ ctx, input }) => ({ results: await searchMemories(ctx.deps, ctx.actor!.organizationId, input) })),
  get: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/memories/{id}', tags, summary: 'Show a memory' } })
    .input(idInput).output(memory)
    .query(({ ctx, input }) => getMemory(ctx, input.id)),
  update: procedure
    .meta({ permission: 'agents:write', resource: 'memory', openapi: { method: 'PATCH', path: '/api/v1/memories/{id}', tags, summary: 'Update a memory', description: 'The given fields replace the stored ones (metadata as a whole).' } })
    .input(z.object({ content: fields.content.optional(), agent_id: fields.agent_id.optional(), namespace: fields.namespace.optional(), metadata: fields.metadata.optional() }).extend(idInput.shape))
    .output(memory)
    .mutation(({ ctx, input: { id: memoryId, ...rest } }) => updateMemory(ctx, memoryId, rest)),
  delete: procedure
    .meta({ permission: 'agents:write', resource: 'memory', openapi: { method: 'DELETE', path: '/api/v1/memories/{id}', tags, summary: 'Delete a memory', successStatus: 204 } })
    .input(idInput).output(z.void())
    .mutation(({ ctx, input }) => deleteMemory(ctx, input.id)),
});
