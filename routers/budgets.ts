import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';
import {
  BUDGET_PERIODS, BUDGET_SCOPES, createBudget, deleteBudget, getBudget, getBudgetUsage, listBudgetAlerts, listBudgets, updateBudget,
} from '../src/services/budgets.js';

const scope = z.enum(BUDGET_SCOPES).describe('What the budget limits: the whole organization, one project or one agent');
const period = z.enum(BUDGET_PERIODS).describe('UTC calendar period the limit applies to (weeks start on Monday); `total` never resets');

const budget = z.object({
  id: z.string(),
  name: z.string(),
  scope,
  scope_id: z.string().nullable().describe('The project or agent id; null for the organization'),
  period,
  limit_usd: z.number(),
  alert_thresholds: z.array(z.number()).describe('Percentages of the limit that raise an alert (once per period each)'),
  enabled: z.boolean(),
  created_at: timestamp,
  updated_at: timestamp,
});

const fields = {
  name: z.string().trim().min(1).max(200),
  scope,
  scope_id: id.nullable().optional().describe('Required for project and agent budgets: an id in the organization; absent or null for the organization'),
  period: period.optional().describe('Default: monthly'),
  limit_usd: z.number().positive().max(1e12).describe('USD, more than 0'),
  alert_thresholds: z.array(z.number().int().min(1).max(100)).max(20).optional()
    .describe('Percentages 1–100 (stored sorted and unique; default [50, 80, 100]). Reaching 100 % always raises an `exceeded` alert.'),
  enabled: z.boolean().optional().describe('Default: true. A disabled budget is neither enforced nor alerted.'),
};

const usage = z.object({
  budget_id: z.string(),
  period,
  period_start: timestamp,
  period_end: timestamp.nullable().describe('Exclusive; null for `total`'),
  used_usd: z.number().describe('The cost of the run steps in scope during the current period'),
  limit_usd: z.number(),
  remaining_usd: z.number(),
  percent: z.number().describe('used / limit, in percent (2 decimals)'),
  exceeded: z.boolean(),
  by_day: z.array(z.object({ day: z.string().describe('YYYY-MM-DD (UTC)'), used_usd: z.number() }))
    .describe('Per UTC day: every day of the period up to today; for `total`, the days with spend'),
});

const alert = z.object({
  id: z.string(),
  budget_id: z.string(),
  threshold: z.number().describe('Percent of the limit'),
  kind: z.enum(['threshold', 'exceeded']),
  period_start: timestamp,
  used_usd: z.number(),
  limit_usd: z.number(),
  created_at: timestamp,
});

const tags = ['Budgets'];

export const budgetsRouter = router({
  list: procedure
    .meta({ permission: 'budgets:read', openapi: { method: 'GET', path: '/api/v1/budgets', tags, summary: 'List budgets' } })
    .input(z.object({ ...pageParams, scope: scope.optional(), scope_id: id.optional(), enabled: z.boolean().optional() }))
    .output(paginated(budget))
    .query(({ ctx, input }) => listBudgets(ctx, input)),
  create: procedure
    .meta({
      permission: 'budgets:write', resource: 'budget',
      openapi: {
        method: 'POST', path: '/api/v1/budgets', tags, summary: 'Create a budget', successStatus: 201,
        description: 'Enforced before every paid step of a run: a step whose estimated cost would take any budget covering it (the organization\'s, its project\'s, its agent\'s) over its limit is not made, and the run fails with `budget_exceeded`.',
      },
    })
    .input(z.object(fields)).output(budget)
    .mutation(({ ctx, input }) => createBudget(ctx, input)),
  alerts: procedure
    .meta({
      permission: 'budgets:read',
      openapi: {
        method: 'GET', path: '/api/v1/budgets/alerts', tags, summary: 'List budget alerts',
        description: 'Alerts raised when spend reaches a threshold (once per threshold per period), newest first. Each is also a `budget.threshold_reached` or `budget.exceeded` event.',
      },
    })
    .input(z.object({ ...pageParams, budget_id: id.optional() }))
    .output(paginated(alert))
    .query(({ ctx, input }) => listBudgetAlerts(ctx, input)),
  get: procedure
    .meta({ permission: 'budgets:read', openapi: { method: 'GET', path: '/api/v1/budgets/{id}', tags, summary: 'Show a budget' } })
    .input(idInput).output(budget)
    .query(({ ctx, input }) => getBudget(ctx, input.id)),
  update: procedure
    .meta({ permission: 'budgets:write', resource: 'budget', openapi: { method: 'PATCH', path: '/api/v1/budgets/{id}', tags, summary: 'Update a budget' } })
    .input(idInput.extend({ ...fields, name: fields.name.optional(), scope: scope.optional(), limit_usd: fields.limit_usd.optional() }))
    .output(budget)
    .mutation(({ ctx, input: { id: budgetId, ...rest } }) => updateBudget(ctx, budgetId, rest)),
  delete: procedure
    .meta({ permission: 'budgets:write', resource: 'budget', openapi: { method: 'DELETE', path: '/api/v1/budgets/{id}', tags, summary: 'Delete a budget', successStatus: 204 } })
    .input(idInput).output(z.void())
    .mutation(({ ctx, input }) => deleteBudget(ctx, input.id)),
  usage: procedure
    .meta({ permission: 'budgets:read', openapi: { method: 'GET', path: '/api/v1/budgets/{id}/usage', tags, summary: 'Show a budget\'s usage in its current period' } })
    .input(idInput).output(usage)
    .query(({ ctx, input }) => getBudgetUsage(ctx, input.id)),
});
