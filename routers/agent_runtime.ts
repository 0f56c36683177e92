import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { idInput } from '../src/schemas.js';
import { assertAgentExists, executeAgent, inferAgent, scoreLead } from '../src/services/agent_runtime.js';
import { runSchema } from './runs.js';

const tags = ['Agents'];
const jsonObject = z.record(z.string(), z.unknown());

/** An unknown id (or another organization's) answers 404 before the body is validated. */
const existing = procedure.use(async ({ ctx, getRawInput, next }) => {
  await assertAgentExists(ctx, ((await getRawInput()) as { id?: unknown } | undefined)?.id);
  return next();
});

const text = (max: number) => z.string().max(max);
const boundedJson = (max: number, what: string) => (v: unknown) => JSON.stringify(v ?? null).length <= max || `${what} is at most ${max} characters as JSON`;

const agentInput = z.union([
  text(100_000).min(1).describe('One user message'),
  z.strictObject({
    message: text(100_000).optional().describe('The user message (appended after `messages`)'),
    messages: z.array(z.strictObject({ role: z.enum(['user', 'assistant']), content: text(100_000) })).max(200).optional()
      .describe('The conversation so far, oldest first'),
    context: jsonObject.optional().describe('Any JSON object, given to the model with the system prompt'),
  }),
]).refine((v) => JSON.stringify(v).length <= 500_000, 'At most 500000 characters as JSON');

const usage = z.object({ input_tokens: z.number().int(), output_tokens: z.number().int() });

const schemaField = jsonObject.refine(boundedJson(100_000, 'The schema'))
  .describe('A JSON Schema (draft-07 by default; 2019-09 and 2020-12 by `$schema`); it must compile');

export const agentRuntimeRouter = router({
  execute: existing
    .meta({
      // Audited by the service (resource: the agent; the run's id in the metadata).
      permission: 'agents:write', resource: 'agent', audit: false,
      openapi: {
        method: 'POST', path: '/api/v1/agents/{id}/execute', tags, summary: 'Start a run of the agent (policy-driven)', successStatus: 202, errors: [409, 422],
        description: 'Starts a run of the agent loop with the agent\'s effective execution policy (frozen in the run): the model is called with the '
          + 'system prompt, the input (and, when the policy allows `memory_search`, the agent\'s most relevant memories); the tools it asks for '
          + 'run (those in `tools_requiring_approval` after `POST /api/v1/runs/{id}/approve`; a tool outside `tools_allowed` never runs) and '
          + 'their results go back to it, until it answers without tool calls. The run stops with error_code `max_steps`, `max_cost`, '
          + '`budget_exceeded`, `timeout`, `provider_error`, `tool_error` or `rejected`. Answers 202 with the run; follow it at '
          + '`GET /api/v1/runs/{id}` or `/stream`. Honours `Idempotency-Key`. A paused or archived agent answers 409; a policy naming a tool '
          + 'that does not exist 400; a missing or unusable provider 422 `provider_misconfigured`.',
      },
    })
    .input(idInput.extend({
      input: agentInput.describe('A string (one user message), or `{message?, messages?, context?}` with at least one message'),
      metadata: jsonObject.refine(boundedJson(10_000, 'metadata')).optional().describe('Kept with the run input, not shown to the model'),
    }))
    .output(runSchema)
    .mutation(({ ctx, input: { id, ...body } }) => executeAgent(ctx, id, body)),

  inference: existing
    .meta({
      permission: 'agents:write', resource: 'agent',
      openapi: {
        method: 'POST', path: '/api/v1/agents/{id}/inference', tags, summary: 'One structured JSON answer from the model', errors: [402, 409, 422, 502],
        description: 'One structured call, recorded as a run (kind `inference`) with its steps. The answer is validated against `schema` '
          + '(or the agent\'s `output_schema`; one of them is required) and asked again, with the validation errors, up to the policy\'s '
          + '`max_invalid_output_retries` (default 2); then 422 `invalid_output`. 402 `budget_exceeded` when a budget refuses the call; '
          + '502 `provider_error` (422 `provider_misconfigured`) with the provider\'s message when the provider fails.',
      },
    })
    .input(idInput.extend({
      input: z.union([text(100_000).min(1), jsonObject]).refine(boundedJson(200_000, 'input')).describe('A string, or any JSON object (sent as JSON)'),
      schema: schemaField.optional(),
      system: text(100_000).optional().describe("Replaces the policy's system prompt for this call"),
    }))
    .output(z.object({ output: z.unknown().describe('The validated JSON value'), usage, cost: z.number().describe('USD'), run_id: z.string() }))
    .mutation(({ ctx, input: { id, ...body } }) => inferAgent(ctx, id, body)),

  score_lead: existing
    .meta({
      permission: 'agents:write', resource: 'agent',
      openapi: {
        method: 'POST', path: '/api/v1/agents/{id}/score_lead', tags, summary: 'Score a lead 0–100 with reasons', errors: [402, 409, 422, 502],
        description: 'Asks the model for `{score, reasons}` about a contact (by `contact_id`, stored on the contact as `lead_score` and '
          + '`lead_score_reasons`; or an inline `contact`, not stored). Exactly one of `contact_id` and `contact`. Recorded as a run '
          + '(kind `score_lead`); errors as for inference.',
      },
    })
    .input(idInput.extend({
      contact_id: z.string().min(1).max(64).optional().describe('A contact of the organization'),
      contact: jsonObject.refine(boundedJson(50_000, 'contact')).optional().describe('An inline contact (name, email, company, title, …)'),
    }))
    .output(z.object({
      contact_id: z.string().nullable().describe('null for an inline contact'),
      score: z.number().int().min(0).max(100), reasons: z.array(z.string()), run_id: z.string(), usage, cost: z.number(),
    }))
    .mutation(({ ctx, input: { id, ...body } }) => scoreLead(ctx, id, body)),
});
