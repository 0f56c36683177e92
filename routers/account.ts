import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { getAccount, getBilling, updateAccount, updateBilling } from '../src/services/account.js';

const readOnlyPlan = z.never({ error: 'Read-only: the plan changes through billing' }).optional();

const account = z.object({
  id: z.string(), name: z.string(), slug: z.string(), plan: z.string(),
  timezone: z.string().describe('IANA time zone, e.g. Europe/Paris'),
  settings: z.record(z.string(), z.unknown()), member_count: z.number().int(),
  created_at: z.string(), updated_at: z.string(),
});

const addressOut = z.object({
  line1: z.string().nullable(), line2: z.string().nullable(), city: z.string().nullable(),
  state: z.string().nullable(), postal_code: z.string().nullable(), country: z.string().nullable().describe('ISO 3166-1 alpha-2'),
});
const line = z.string().trim().max(200).nullable().optional();
const addressIn = z.object({
  line1: line, line2: line, city: line, state: line,
  postal_code: z.string().trim().max(20).nullable().optional(),
  country: z.string().trim().regex(/^[A-Za-z]{2}$/, 'Use a two-letter ISO 3166-1 country code').transform((c) => c.toUpperCase()).nullable().optional(),
});

const billing = z.object({
  billing_email: z.string().nullable(), billing_name: z.string().nullable(), billing_address: addressOut.nullable(),
  tax_id: z.string().nullable(), plan: z.string(), updated_at: z.string(),
});

const tags = ['Account'];

export const accountRouter = router({
  get: procedure
    .meta({ permission: 'account:read', openapi: { method: 'GET', path: '/api/v1/account', tags, summary: 'The organization' } })
    .input(z.object({})).output(account)
    .query(({ ctx }) => getAccount(ctx)),
  update: procedure
    .meta({ permission: 'account:write', resource: 'organization', openapi: { method: 'PATCH', path: '/api/v1/account', tags, summary: 'Update the organization' } })
    .input(z.object({
      name: z.string().trim().min(1).max(200).optional(),
      slug: z.string().min(1).max(48).regex(/^[a-z0-9]+(?:-[a-z0-9]+)*$/, 'Lower-case letters, digits and single hyphens').optional(),
      timezone: z.string().min(1).max(64).optional().describe('IANA time zone, e.g. Europe/Paris'),
      settings: z.record(z.string(), z.unknown()).optional().describe('Replaces the settings object'),
      plan: readOnlyPlan,
    }))
    .output(account)
    .mutation(({ ctx, input: { plan: _plan, ...rest } }) => updateAccount(ctx, rest)),
  billing: procedure
    .meta({ permission: 'billing:read', openapi: { method: 'GET', path: '/api/v1/account/billing', tags, summary: 'Billing details' } })
    .input(z.object({})).output(billing)
    .query(({ ctx }) => getBilling(ctx)),
  updateBilling: procedure
    .meta({ permission: 'billing:write', resource: 'billing', openapi: { method: 'PATCH', path: '/api/v1/account/billing', tags, summary: 'Update billing details' } })
    .input(z.object({
      billing_email: z.email().max(254).nullable().optional(),
      billing_name: z.string().trim().max(200).nullable().optional(),
      billing_address: addressIn.nullable().optional().describe('Replaces the address as a whole; null clears it'),
      tax_id: z.string().trim().max(64).nullable().optional(),
      plan: readOnlyPlan,
    }))
    .output(billing)
    .mutation(({ ctx, input: { plan: _plan, ...rest } }) => updateBilling(ctx, rest)),
});
