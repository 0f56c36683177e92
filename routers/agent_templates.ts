import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput, timestamp } from '../src/schemas.js';
import {
  createAgentTemplate, deleteAgentTemplate, executionPolicyOverridesSchema, executionPolicyPatchShape, getAgentTemplate, listAgentTemplates,
  patchAgentTemplatePolicy, unknownKeys, updateAgentTemplate,
} from '../src/services/agent_templates.js';

const POLICY = 'The execution policy: provider_id, model, system_prompt, temperature (0–2), max_output_tokens, tools_allowed, tools_requiring_approval (a subset of tools_allowed), max_steps (1–100), max_cost_usd (> 0), timeout_seconds (1–3600), retry {max_attempts 1–10, backoff_ms 0–60000}, max_invalid_output_retries (0–5). Unknown keys are refused.';
const OUTPUT_SCHEMA = 'JSON Schema of the structured output of inference calls (must compile); null for none';

export const agentTemplate = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string(),
  category: z.string(),
  config: z.record(z.string(), z.unknown()).describe('Default agent configuration, copied onto agents made from the template'),
  execution_policy: executionPolicyOverridesSchema.describe(POLICY),
  output_schema: z.record(z.string(), z.unknown()).nullable().describe(OUTPUT_SCHEMA),
  agents_count: z.number().int().describe('Agents made from this template'),
  created_at: timestamp,
  updated_at: timestamp,
});

const fields = {
  name: z.string().trim().min(1).max(200).describe('Unique in the organization'),
  description: z.string().max(5000).optional(),
  category: z.string().trim().min(1).max(100).optional().describe('Free-form grouping (default "general")'),
  config: z.record(z.string(), z.unknown()).optional(),
  execution_policy: executionPolicyOverridesSchema.optional().describe(POLICY),
  output_schema: z.record(z.string(), z.unknown()).nullable().optional().describe(OUTPUT_SCHEMA),
};

const policyPatch = z.strictObject(executionPolicyPatchShape, unknownKeys('execution policy'));

const tags = ['Agent templates'];

export const agentTemplatesRouter = router({
  list: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/agent_templates', tags, summary: 'List agent templates' } })
    .input(z.object({ ...pageParams, category: z.string().max(100).optional(), search: z.string().max(200).optional().describe('Part of the name, case-insensitive') }))
    .output(paginated(agentTemplate))
    .query(({ ctx, input }) => listAgentTemplates(ctx, input)),
  create: procedure
    .meta({ permission: 'agents:write', resource: 'agent_template', openapi: { method: 'POST', path: '/api/v1/agent_templates', tags, summary: 'Create an agent template', successStatus: 201, errors: [409] } })
    .input(z.object(fields)).output(agentTemplate)
    .mutation(({ ctx, input }) => createAgentTemplate(ctx, input)),
  get: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/agent_templates/{id}', tags, summary: 'Show an agent template' } })
    .input(idInput).output(agentTemplate)
    .query(({ ctx, input }) => getAgentTemplate(ctx, input.id)),
  update: procedure
    .meta({
      permission: 'agents:write', resource: 'agent_template',
      openapi: {
        method: 'PATCH', path: '/api/v1/agent_templates/{id}', tags, summary: 'Update an agent template', errors: [409],
        description: 'The given fields replace the stored ones (`execution_policy` as a whole; use `PATCH …/execution_policy` to change some keys). A policy that would make the effective policy of an agent made from the template invalid is refused (400).',
      },
    })
    .input(idInput.extend({ ...fields, name: fields.name.optional() })).output(agentTemplate)
    .mutation(({ ctx, input: { id, ...rest } }) => updateAgentTemplate(ctx, id, rest)),
  delete: procedure
    .meta({
      permission: 'agents:write', resource: 'agent_template',
      openapi: {
        method: 'DELETE', path: '/api/v1/agent_templates/{id}', tags, summary: 'Delete an agent template', successStatus: 204, errors: [409],
        description: 'A template that agents were made from answers 409 unless `force=true`: then each of those agents keeps working without a template — its execution policy becomes the effective policy it had, it keeps the template\'s output schema when it had none, and its template_id becomes null.',
      },
    })
    .input(idInput.extend({ force: z.boolean().optional().describe('Delete even when agents were made from it (they keep their effective policy)') })).output(z.void())
    .mutation(({ ctx, input }) => deleteAgentTemplate(ctx, input.id, { force: input.force })),
  updateExecutionPolicy: procedure
    .meta({
      permission: 'agents:write', resource: 'agent_template',
      openapi: {
        method: 'PATCH', path: '/api/v1/agent_templates/{id}/execution_policy', tags, summary: "Update an agent template's execution policy",
        description: 'A JSON merge patch (RFC 7386) of the policy: the body holds policy keys (or wraps them in `execution_policy`); a given key replaces the stored one, `null` removes it; `retry` is patched key by key. The result is validated as a whole (bounds, tools_requiring_approval within tools_allowed, and the effective policy of every agent made from the template). Answers the template.',
      },
    })
    .input(z.strictObject({ ...idInput.shape, ...executionPolicyPatchShape, execution_policy: policyPatch.optional().describe('The patch, when sent wrapped') }, unknownKeys('execution policy')))
    .output(agentTemplate)
    .mutation(({ ctx, input: { id, execution_policy, ...rest } }) => patchAgentTemplatePolicy(ctx, id, { ...rest, ...(execution_policy ?? {}) })),
});
