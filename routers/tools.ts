import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput, timestamp } from '../src/schemas.js';
import {
  BUILTIN_TOOL_NAMES, createTool, DEFAULT_TIMEOUT_MS, deleteTool, getTool, HTTP_METHODS, listTools, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS, testTool, TOOL_NAME, updateTool,
} from '../src/services/tools.js';

const URL_RULES = 'An absolute http(s) URL. `{{name}}` placeholders (declared in input_schema.properties) are filled from the input, URL-encoded; '
  + '`{{secrets.NAME}}` takes a secret. Placeholders may appear in the path, query and fragment only. A literal loopback, private or link-local host '
  + 'is refused unless allow-listed (OUTBOUND_ALLOWLIST); every call checks the resolved address again.';
const BODY_RULES = 'Input fields the URL does not use go as query parameters for GET and DELETE, and as a JSON body for POST, PUT and PATCH.';

const tool = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string(),
  kind: z.enum(['http']),
  method: z.enum(HTTP_METHODS),
  url_template: z.string(),
  headers: z.record(z.string(), z.string()),
  input_schema: z.record(z.string(), z.unknown()),
  timeout_ms: z.number().int(),
  enabled: z.boolean(),
  created_at: timestamp,
  updated_at: timestamp,
});

const fields = {
  name: z.string().regex(TOOL_NAME, 'Letters, digits, _ and -, starting with a letter, at most 64 characters')
    .describe(`The name the model sees; unique in the organization; not a built-in name (${BUILTIN_TOOL_NAMES.join(', ')})`),
  description: z.string().max(2000).describe('What the tool does, for the model'),
  method: z.enum(HTTP_METHODS).describe(`Default GET. ${BODY_RULES}`),
  url_template: z.string().min(1).max(2000).describe(URL_RULES),
  headers: z.record(z.string().max(100), z.string().max(8000))
    .describe('Header name → value; values may reference `{{secrets.NAME}}` (resolved at call time, stored as given). No line breaks.'),
  input_schema: z.record(z.string(), z.unknown()).describe('A JSON Schema with "type": "object" (compiled with ajv, strict)'),
  timeout_ms: z.number().int().min(MIN_TIMEOUT_MS).max(MAX_TIMEOUT_MS).describe(`Default ${DEFAULT_TIMEOUT_MS}, at most ${MAX_TIMEOUT_MS}`),
  enabled: z.boolean().describe('Disabled tools cannot be given to agents (default true)'),
};

const createInput = z.object({
  ...fields,
  description: fields.description.optional(),
  method: fields.method.optional(),
  headers: fields.headers.optional(),
  input_schema: fields.input_schema.optional().describe('Default: an object schema without properties'),
  timeout_ms: fields.timeout_ms.optional(),
  enabled: fields.enabled.optional(),
});
const updateInput = z.object(Object.fromEntries(Object.entries(fields).map(([k, s]) => [k, s.optional()])) as { [K in keyof typeof fields]: z.ZodOptional<(typeof fields)[K]> });

const testResult = z.object({
  ok: z.boolean(),
  output: z.unknown().describe('The response body: JSON when the tool answers JSON, else text; null on failure'),
  latency_ms: z.number().int(),
  error: z.object({
    code: z.string().describe('timeout, network, http_error, forbidden_url, missing_secret, response_too_large, …'),
    message: z.string(),
    retryable: z.boolean().describe('Whether an agent run would retry it (timeouts, network errors, 429, 5xx)'),
    status: z.number().int().nullable().describe('The HTTP status of the response, when there was one'),
  }).optional(),
});

const tags = ['Tools'];

export const toolsRouter = router({
  list: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/tools', tags, summary: 'List HTTP tools', description: 'Stored HTTP tools, newest first. The built-ins (memory_search, contact_lookup) are not stored and not listed; every organization can use them by name.' } })
    .input(z.object({ ...pageParams, search: z.string().max(200).optional().describe('Part of the name, case-insensitive'), enabled: z.boolean().optional() }))
    .output(paginated(tool))
    .query(({ ctx, input }) => listTools(ctx, input)),
  create: procedure
    .meta({ permission: 'agents:write', resource: 'tool', openapi: { method: 'POST', path: '/api/v1/tools', tags, summary: 'Create an HTTP tool', description: `${URL_RULES} ${BODY_RULES} A definition that does not validate answers 400 naming the field, and nothing is stored.`, successStatus: 201, errors: [409] } })
    .input(createInput).output(tool)
    .mutation(({ ctx, input }) => createTool(ctx, input)),
  get: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/tools/{id}', tags, summary: 'Show an HTTP tool' } })
    .input(idInput).output(tool)
    .query(({ ctx, input }) => getTool(ctx, input.id)),
  update: procedure
    .meta({ permission: 'agents:write', resource: 'tool', openapi: { method: 'PATCH', path: '/api/v1/tools/{id}', tags, summary: 'Update an HTTP tool', description: 'The given fields replace the stored ones (headers and input_schema as a whole); the result is validated as on creation.', errors: [409] } })
    .input(updateInput.extend(idInput.shape)).output(tool)
    .mutation(({ ctx, input: { id, ...rest } }) => updateTool(ctx, id, rest)),
  delete: procedure
    .meta({ permission: 'agents:write', resource: 'tool', openapi: { method: 'DELETE', path: '/api/v1/tools/{id}', tags, summary: 'Delete an HTTP tool', successStatus: 204 } })
    .input(idInput).output(z.void())
    .mutation(({ ctx, input }) => deleteTool(ctx, input.id)),
  test: procedure
    .meta({
      permission: 'agents:write', resource: 'tool',
      openapi: {
        method: 'POST', path: '/api/v1/tools/{id}/test', tags, summary: 'Run an HTTP tool once',
        description: 'Really calls the tool (enabled or not) with `input`, as an agent would. Input that does not match the input_schema answers 400 naming `input`. '
          + 'Any other failure (timeout, refused or unreachable URL, non-2xx response, missing secret) answers 200 with `ok: false` and the error.',
      },
    })
    .input(idInput.extend({ input: z.record(z.string(), z.unknown()).optional().describe('The tool input (default {})') }))
    .output(testResult)
    .mutation(({ ctx, input }) => testTool(ctx, input.id, input.input ?? {})),
});
