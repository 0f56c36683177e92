import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';
import {
  assertPromptExists, createPrompt, createPromptVersion, deletePrompt, getPrompt, getPromptVersion, listPrompts, listPromptVersions,
  setPromptVersionLabels, testPrompt, updatePrompt,
} from '../src/services/prompts.js';

const LIQUID = 'Liquid, rendered as plain text (no HTML escaping); strict: a missing variable or unknown filter is an error.';

const label = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,49}$/, 'Lower-case letters, digits, `_`, `.` and `-`, at most 50 characters');
const labels = z.array(label).max(20).describe('Labels such as `production` or `staging`. A label is on at most one version of a prompt: giving it here moves it from the version that had it.');
const versionNumber = z.number().int().min(1).max(1e9);

const modelSettings = z.object({
  provider_id: id.nullable().optional().describe('An LLM provider of the organization; absent or null: the organization\'s default'),
  model: z.string().min(1).max(200).nullable().optional().describe('Absent or null: the provider\'s default model'),
  temperature: z.number().min(0).max(2).optional(),
}).strict();

const version = z.object({
  id: z.string(),
  prompt_id: z.string(),
  version: z.number().int().describe('1, 2, … per prompt'),
  template: z.string(),
  variables: z.array(z.string()).describe('The variable names the template reads (declared, or found in the template)'),
  model_settings: modelSettings.nullable(),
  labels: z.array(z.string()),
  created_by: z.string().nullable(),
  created_at: timestamp,
});

const promptBase = {
  id: z.string(),
  name: z.string(),
  description: z.string(),
  created_at: timestamp,
  updated_at: timestamp,
};
const promptListItem = z.object({ ...promptBase, latest_version: z.number().int().nullable() });
const prompt = z.object({
  ...promptBase,
  versions_count: z.number().int(),
  latest_version: version.nullable(),
  labels: z.record(z.string(), z.number().int()).describe('Each label and the version number carrying it'),
  labeled_versions: z.array(version).describe('The versions that carry labels, newest first'),
  resolved_version: version.optional().describe('With `label` or `version`: the version they designate'),
});

const versionFields = {
  template: z.string().min(1).max(200_000).describe(LIQUID),
  variables: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'A variable name')).max(200).optional()
    .describe('The variable names it takes; found in the template when absent'),
  model_settings: modelSettings.nullable().optional(),
  labels: labels.optional(),
};

const promptFields = {
  name: z.string().trim().min(1).max(200).describe('Unique in the organization'),
  description: z.string().max(5000).optional(),
};

const versionParam = z.string().regex(/^[1-9][0-9]{0,8}$/, 'A version number').describe('The version number (1, 2, …)');

const testResult = z.object({
  rendered: z.string(),
  variables: z.array(z.string()).describe('The variable names of the version'),
  version: z.number().int().describe('The version rendered'),
  labels: z.array(z.string()).describe('Its labels'),
  output: z.object({
    text: z.string(),
    usage: z.object({ input_tokens: z.number().int(), output_tokens: z.number().int() }),
    cost: z.number().describe('USD'),
    provider_id: z.string(),
    model: z.string(),
    latency_ms: z.number().int(),
    finish_reason: z.string(),
  }).optional().describe('With `run`: the model\'s answer to the rendered prompt (sent as one user message)'),
});

const tags = ['Prompts'];

/** Routes whose body or path carry more than the id: an unknown prompt answers 404 before they are validated. */
const existing = procedure.use(async ({ ctx, getRawInput, next }) => {
  await assertPromptExists(ctx, ((await getRawInput()) as { id?: unknown } | undefined)?.id);
  return next();
});

export const promptsRouter = router({
  list: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/prompts', tags, summary: 'List prompts' } })
    .input(z.object({ ...pageParams, search: z.string().max(200).optional().describe('Part of the name, case-insensitive') }))
    .output(paginated(promptListItem))
    .query(({ ctx, input }) => listPrompts(ctx, input)),
  create: procedure
    .meta({
      permission: 'agents:write', resource: 'prompt',
      openapi: {
        method: 'POST', path: '/api/v1/prompts', tags, summary: 'Create a prompt', successStatus: 201, errors: [409],
        description: 'With `template` (and optionally `variables`, `model_settings`, `labels`), the prompt starts with version 1.',
      },
    })
    .input(z.object({ ...promptFields, ...versionFields, template: versionFields.template.optional() }))
    .output(prompt)
    .mutation(({ ctx, input }) => createPrompt(ctx, input)),
  get: procedure
    .meta({
      permission: 'agents:read',
      openapi: {
        method: 'GET', path: '/api/v1/prompts/{id}', tags, summary: 'Show a prompt',
        description: 'The prompt with its latest version and its labelled versions. `label` (e.g. `production`) or `version` resolves one version, returned as `resolved_version` (404 when none carries the label).',
      },
    })
    .input(idInput.extend({ label: label.optional(), version: versionNumber.optional() }))
    .output(prompt)
    .query(({ ctx, input: { id: promptId, ...pick } }) => getPrompt(ctx, promptId, pick)),
  update: procedure
    .meta({ permission: 'agents:write', resource: 'prompt', openapi: { method: 'PATCH', path: '/api/v1/prompts/{id}', tags, summary: 'Rename or describe a prompt', errors: [409] } })
    .input(idInput.extend({ name: promptFields.name.optional(), description: promptFields.description }))
    .output(prompt)
    .mutation(({ ctx, input: { id: promptId, ...rest } }) => updatePrompt(ctx, promptId, rest)),
  delete: procedure
    .meta({ permission: 'agents:write', resource: 'prompt', openapi: { method: 'DELETE', path: '/api/v1/prompts/{id}', tags, summary: 'Delete a prompt and its versions', successStatus: 204 } })
    .input(idInput).output(z.void())
    .mutation(({ ctx, input }) => deletePrompt(ctx, input.id)),
  versions: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/prompts/{id}/versions', tags, summary: 'List the versions of a prompt', description: 'Newest first.' } })
    .input(idInput.extend({ ...pageParams, label: label.optional().describe('Only the version carrying this label') }))
    .output(paginated(version))
    .query(({ ctx, input: { id: promptId, ...rest } }) => listPromptVersions(ctx, promptId, rest)),
  createVersion: existing
    .meta({
      permission: 'agents:write', resource: 'prompt_version',
      openapi: {
        method: 'POST', path: '/api/v1/prompts/{id}/versions', tags, summary: 'Add a version to a prompt', successStatus: 201, errors: [409],
        description: 'Numbered after the last one. Its `labels` move to it from other versions in the same transaction.',
      },
    })
    .input(idInput.extend(versionFields))
    .output(version)
    .mutation(({ ctx, input: { id: promptId, ...rest } }) => createPromptVersion(ctx, promptId, rest)),
  getVersion: existing
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/prompts/{id}/versions/{version}', tags, summary: 'Show one version of a prompt' } })
    .input(idInput.extend({ version: versionParam }))
    .output(version)
    .query(({ ctx, input }) => getPromptVersion(ctx, input.id, Number(input.version))),
  setLabels: existing
    .meta({
      permission: 'agents:write', resource: 'prompt_version',
      openapi: {
        method: 'PATCH', path: '/api/v1/prompts/{id}/versions/{version}', tags, summary: 'Set the labels of a version',
        description: 'Replaces the version\'s labels. A label it gains is removed from the version that had it, in one transaction (e.g. promote version 3 to `production`).',
      },
    })
    .input(idInput.extend({ version: versionParam, labels }))
    .output(version)
    .mutation(({ ctx, input }) => setPromptVersionLabels(ctx, input.id, Number(input.version), input.labels)),
  test: existing
    .meta({
      permission: 'agents:write', resource: 'prompt',
      openapi: {
        method: 'POST', path: '/api/v1/prompts/{id}/test', tags, summary: 'Render a prompt, and optionally run it on a model',
        description: 'Renders `version`, or the version labelled `label`, or else the `production` version, or else the latest, with `variables`. '
          + 'Missing variables answer 400 naming every one (`details.missing`); a template error answers 400 naming the line. '
          + 'With `run`, the rendered text is sent to the model (the version\'s model settings, overridden by `run`) as one user message; the organization\'s budgets apply. '
          + 'A provider misconfiguration or refusal answers 400, a provider failure (timeout, 429, 5xx) 502.',
        errors: [402, 502],
      },
    })
    .input(idInput.extend({
      variables: z.record(z.string(), z.unknown()).optional().describe('The values to render with'),
      version: versionNumber.optional(),
      label: label.optional(),
      run: z.object({
        provider_id: id.nullable().optional(),
        model: z.string().min(1).max(200).nullable().optional(),
        temperature: z.number().min(0).max(2).optional(),
        max_output_tokens: z.number().int().min(1).max(200_000).optional(),
      }).strict().optional().describe('Run the rendered prompt on a model (`{}`: the version\'s settings, else the organization\'s default provider)'),
    }))
    .output(testResult)
    .mutation(({ ctx, input: { id: promptId, ...rest } }) => testPrompt(ctx, promptId, rest)),
});
