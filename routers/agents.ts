import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';
import { executionPolicyOverridesSchema } from '../src/services/agent_templates.js';
import { runSchema as run } from './runs.js';
import {
  AGENT_STATUSES, createAgent, deleteAgent, getAgent, getAgentCosts, getAgentMetrics, getAgentStatus, listAgentExecutions, listAgentLogs, listAgents,
  LOG_LEVELS, RUN_STATUSES, spawnAgent, updateAgent,
} from '../src/services/agents.js';

const OVERRIDES = "The agent's execution-policy overrides, on top of its template's policy (same keys as a template's policy; unknown keys are refused). The merge is validated as a whole.";
const OUTPUT_SCHEMA = "JSON Schema of the agent's structured output (must compile); null: the template's applies";

export const agent = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string(),
  status: z.enum(AGENT_STATUSES),
  template_id: z.string().nullable(),
  workflow_id: z.string().nullable(),
  project_id: z.string().nullable(),
  config: z.record(z.string(), z.unknown()),
  execution_policy: executionPolicyOverridesSchema.describe("The agent's overrides"),
  effective_policy: executionPolicyOverridesSchema.describe("The template's policy merged with the overrides: what a run freezes when it starts"),
  output_schema: z.record(z.string(), z.unknown()).nullable().describe(OUTPUT_SCHEMA),
  last_run_at: timestamp.nullable(),
  created_at: timestamp,
  updated_at: timestamp,
});

const sums = { cost: z.number().describe('USD'), tokens_in: z.number().int(), tokens_out: z.number().int(), calls: z.number().int().describe('Paid steps (LLM calls)') };

const common = {
  description: z.string().max(5000).optional(),
  project_id: id.nullable().optional(),
  config: z.record(z.string(), z.unknown()).optional(),
  execution_policy: executionPolicyOverridesSchema.optional().describe(OVERRIDES),
  output_schema: z.record(z.string(), z.unknown()).nullable().optional().describe(OUTPUT_SCHEMA),
};
const name = z.string().trim().min(1).max(200);
const days = z.number().int().min(1).max(365).optional().describe('Window in days, today (UTC) included: 1–365, default 30');

const tags = ['Agents'];

export const agentsRouter = router({
  list: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/agents', tags, summary: 'List agents' } })
    .input(z.object({
      ...pageParams,
      status: z.enum(AGENT_STATUSES).optional(), template_id: id.optional(), project_id: id.optional(),
      search: z.string().max(200).optional().describe('Part of the name, case-insensitive'),
    }))
    .output(paginated(agent))
    .query(({ ctx, input }) => listAgents(ctx, input)),
  create: procedure
    .meta({
      permission: 'agents:write', resource: 'agent',
      openapi: {
        method: 'POST', path: '/api/v1/agents', tags, summary: 'Create an agent', successStatus: 201,
        description: "With a template_id, the agent starts from the template: its config is the template's with the given keys on top, and its effective policy is the template's merged with the given overrides.",
      },
    })
    .input(z.object({ name, template_id: id.nullable().optional(), status: z.enum(AGENT_STATUSES).optional(), ...common }))
    .output(agent)
    .mutation(({ ctx, input }) => createAgent(ctx, input)),
  spawn: procedure
    .meta({
      permission: 'agents:write', resource: 'agent',
      openapi: {
        method: 'POST', path: '/api/v1/agents/spawn', tags, summary: 'Deploy an agent from a template or a workflow', successStatus: 201,
        description: "From `template_id`: the name defaults to the template's, the config is the template's with the given keys on top, and the policy is inherited with the given overrides merged. Workflows are not available yet: a `workflow_id` answers 400.",
      },
    })
    .input(z.object({
      template_id: id.optional().describe('The template to deploy'),
      workflow_id: id.optional().describe('Not available yet (400)'),
      name: name.optional().describe("Default: the template's name"),
      ...common,
    }))
    .output(agent)
    .mutation(({ ctx, input }) => spawnAgent(ctx, input)),
  get: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/agents/{id}', tags, summary: 'Show an agent' } })
    .input(idInput).output(agent)
    .query(({ ctx, input }) => getAgent(ctx, input.id)),
  update: procedure
    .meta({
      permission: 'agents:write', resource: 'agent',
      openapi: {
        method: 'PATCH', path: '/api/v1/agents/{id}', tags, summary: 'Update an agent (e.g. status, config)',
        description: 'The given fields replace the stored ones: `config` and `execution_policy` (the overrides) as a whole — `execution_policy: {}` inherits everything from the template again; `output_schema: null` falls back to the template\'s. A paused or archived agent does not run.',
      },
    })
    .input(idInput.extend({ name: name.optional(), status: z.enum(AGENT_STATUSES).optional(), ...common }))
    .output(agent)
    .mutation(({ ctx, input: { id: agentId, ...rest } }) => updateAgent(ctx, agentId, rest)),
  delete: procedure
    .meta({
      permission: 'agents:write', resource: 'agent',
      openapi: {
        method: 'DELETE', path: '/api/v1/agents/{id}', tags, summary: 'Delete an agent', successStatus: 204, errors: [409],
        description: 'Deletes the agent with its runs and their steps. 409 while it has runs queued, running or awaiting approval: cancel them first.',
      },
    })
    .input(idInput).output(z.void())
    .mutation(({ ctx, input }) => deleteAgent(ctx, input.id)),
  executions: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/agents/{id}/executions', tags, summary: "An agent's runs, newest first" } })
    .input(idInput.extend({ ...pageParams, status: z.enum(RUN_STATUSES).optional(), kind: z.string().max(50).optional().describe('agent, inference, score_lead…') }))
    .output(paginated(run))
    .query(({ ctx, input: { id: agentId, ...rest } }) => listAgentExecutions(ctx, agentId, rest)),
  status: procedure
    .meta({ permission: 'agents:read', openapi: { method: 'GET', path: '/api/v1/agents/{id}/status', tags, summary: "An agent's status snapshot" } })
    .input(idInput)
    .output(z.object({
      agent_id: z.string(), name: z.string(), status: z.enum(AGENT_STATUSES),
      runs: z.object(Object.fromEntries([...RUN_STATUSES, 'total'].map((s) => [s, z.number().int()]))).describe('Runs by status, all time'),
      current_runs: z.array(run).describe('Runs running, waiting or awaiting approval (latest 20)'),
      last_run: run.nullable(),
      last_run_at: timestamp.nullable(),
      last_error: z.object({ run_id: z.string(), error: z.string().nullable(), error_code: z.string().nullable(), at: timestamp }).nullable().describe('The latest failed run'),
    }))
    .query(({ ctx, input }) => getAgentStatus(ctx, input.id)),
  logs: procedure
    .meta({
      permission: 'agents:read',
      openapi: {
        method: 'GET', path: '/api/v1/agents/{id}/logs', tags, summary: "An agent's logs, newest first",
        description: "Lines made from the events of the agent's runs: log lines (their own level), status changes and steps (error when failed, warn when cancelled or rejected, else info).",
      },
    })
    .input(idInput.extend({
      ...pageParams, run_id: id.optional(), level: z.enum(LOG_LEVELS).optional(), type: z.enum(['log', 'status', 'step']).optional(),
    }))
    .output(paginated(z.object({
      id: z.string(), run_id: z.string(), seq: z.number().int(), type: z.enum(['log', 'status', 'step']), level: z.enum(LOG_LEVELS),
      message: z.string(), data: z.record(z.string(), z.unknown()), created_at: timestamp,
    })))
    .query(({ ctx, input: { id: agentId, ...rest } }) => listAgentLogs(ctx, agentId, rest)),
  costs: procedure
    .meta({
      permission: 'agents:read',
      openapi: {
        method: 'GET', path: '/api/v1/agents/{id}/costs', tags, summary: "An agent's costs by model and by day",
        description: "From the agent's paid steps (LLM calls) in the window; steps a replay reused from another run are not counted twice. `by_day` lists every day of the window.",
      },
    })
    .input(idInput.extend({ days }))
    .output(z.object({
      agent_id: z.string(), days: z.number().int(), since: timestamp, currency: z.literal('USD'),
      total: z.object(sums),
      by_model: z.array(z.object({ model: z.string().nullable(), ...sums })),
      by_day: z.array(z.object({ date: z.string().describe('YYYY-MM-DD (UTC)'), ...sums })),
    }))
    .query(({ ctx, input }) => getAgentCosts(ctx, input.id, input.days)),
  metrics: procedure
    .meta({
      permission: 'agents:read',
      openapi: {
        method: 'GET', path: '/api/v1/agents/{id}/metrics', tags, summary: "An agent's aggregated metrics",
        description: 'Over the runs created in the window: counts by outcome, success_rate = succeeded / (succeeded + failed) (null without any), latency percentiles of finished runs (finished_at − started_at, interpolated like percentile_cont), steps per finished run, tokens and cost of their steps.',
      },
    })
    .input(idInput.extend({ days }))
    .output(z.object({
      agent_id: z.string(), days: z.number().int(), since: timestamp,
      runs: z.number().int(), succeeded: z.number().int(), failed: z.number().int(), cancelled: z.number().int(), in_progress: z.number().int(),
      success_rate: z.number().nullable(),
      latency_ms: z.object({ p50: z.number().nullable(), p95: z.number().nullable(), p99: z.number().nullable(), avg: z.number().nullable() }),
      avg_steps: z.number().nullable(),
      tokens_in: z.number().int(), tokens_out: z.number().int(), cost: z.number().describe('USD'),
    }))
    .query(({ ctx, input }) => getAgentMetrics(ctx, input.id, input.days)),
});
