import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, timestamp } from '../src/schemas.js';
import { AGENT_STATUSES } from '../src/services/agents.js';
import { monitorAgents, reasoningTrace, TRACE_TEXT_MAX } from '../src/services/monitoring.js';

const tags = ['Monitoring'];

export const monitoringRouter = router({
  agents: procedure
    .meta({
      permission: 'agents:read',
      openapi: {
        method: 'GET', path: '/api/v1/monitoring/agents', tags, summary: 'Live state of every agent',
        description: "Each agent with its runs queued, running, waiting and awaiting approval now, its latest activity (the last change of one of its runs) and what it cost today (UTC).",
      },
    })
    .input(z.object({ ...pageParams, status: z.enum(AGENT_STATUSES).optional() }))
    .output(paginated(z.object({
      id: z.string(), name: z.string(), status: z.enum(AGENT_STATUSES), project_id: z.string().nullable(),
      running: z.number().int(), queued: z.number().int(), waiting: z.number().int(), awaiting_approval: z.number().int(),
      last_activity_at: timestamp.nullable(), cost_today: z.number().describe('USD'),
    })))
    .query(({ ctx, input }) => monitorAgents(ctx, input)),
  reasoning: procedure
    .meta({
      permission: 'agents:read',
      openapi: {
        method: 'GET', path: '/api/v1/monitoring/reasoning/{agent_id}', tags, summary: "Recent step traces of an agent's runs",
        description: `The latest steps of the agent's runs, newest first. Inputs and outputs longer than ${TRACE_TEXT_MAX} characters (as JSON text) are cut, and flagged as truncated.`,
      },
    })
    .input(z.object({ agent_id: id, limit: z.number().int().min(1).max(200).optional().describe('Steps, 1–200 (default 50)') }))
    .output(z.object({
      agent_id: z.string(), name: z.string(),
      results: z.array(z.object({
        id: z.string(), run_id: z.string(), run_status: z.string(), seq: z.number().int(), type: z.string(), name: z.string(), status: z.string(),
        input: z.unknown(), input_truncated: z.boolean(), output: z.unknown(), output_truncated: z.boolean(),
        model: z.string().nullable(), provider_id: z.string().nullable(), tokens_in: z.number().int(), tokens_out: z.number().int(),
        cost: z.number().describe('USD'), latency_ms: z.number().nullable(), attempt: z.number().int(), reused: z.boolean(),
        error: z.string().nullable(), created_at: timestamp, finished_at: timestamp.nullable(),
      })),
    }))
    .query(({ ctx, input }) => reasoningTrace(ctx, input.agent_id, input.limit)),
});
