import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';
import {
  ALERT_ORDERINGS, checkDomain, createDomain, dashboardStats, deleteDomain, EMAIL_EVENT_TYPES, getDomain, healthStats,
  listAlerts, listDomains, STAT_PERIODS, updateDomain,
} from '../src/services/outreach.js';
import { ALERT_KINDS, normalizeHostname, normalizeSelector } from '../src/services/outreach_checks.js';

const tags = ['Outreach'];

const checkStatus = z.enum(['pass', 'warn', 'fail', 'unknown']).describe('unknown: DNS gave no usable answer (not counted as a failure)');
const sendingDomain = z.object({
  id: z.string(),
  domain: z.string(),
  dkim_selector: z.string(),
  status: z.enum(['healthy', 'unhealthy', 'unknown']).describe('healthy when health_score ≥ 80; unknown when no DNS check could be answered'),
  health_score: z.number().int().min(0).max(100).nullable().describe('0–100 from the last check (null when no DNS check could be answered)'),
  mx: z.object({ status: checkStatus, message: z.string(), hosts: z.array(z.string()) }),
  spf: z.object({ status: checkStatus, message: z.string(), record: z.string().nullable(), all: z.string().nullable(), lookups: z.number().int().nullable().describe('DNS lookups an SPF evaluation costs (limit 10)') }),
  dkim: z.object({ status: checkStatus, message: z.string(), selector: z.string(), record: z.string().nullable() }),
  dmarc: z.object({ status: checkStatus, message: z.string(), record: z.string().nullable(), policy: z.enum(['none', 'quarantine', 'reject']).nullable() }),
  bounce_rate: z.number().describe('Percent of the messages sent from this domain in the 30 days before the last check'),
  complaint_rate: z.number().describe('Percent of the messages sent from this domain in the 30 days before the last check'),
  sent_last_30_days: z.number().int(),
  last_checked_at: timestamp.nullable(),
  created_at: timestamp,
  updated_at: timestamp,
});

const hostname = z.string().max(300).transform((v, ctx) => {
  const h = normalizeHostname(v);
  if (!h) ctx.addIssue({ code: 'custom', message: 'Must be a valid domain name, such as mail.example.com' });
  return h ?? '';
});
const selector = z.string().max(200).transform((v, ctx) => {
  const s = normalizeSelector(v);
  if (!s) ctx.addIssue({ code: 'custom', message: 'Must be a DNS label (letters, digits, "-", "_"), such as s1 or google' });
  return s ?? '';
});

const alert = z.object({
  id: z.string(),
  domain_id: z.string(),
  domain: z.string(),
  kind: z.enum(ALERT_KINDS),
  severity: z.enum(['critical', 'warning', 'info']),
  message: z.string(),
  detected_at: timestamp,
  resolved: z.boolean(),
  resolved_at: timestamp.nullable(),
});

const counts = Object.fromEntries(EMAIL_EVENT_TYPES.map((t) => [t, z.number().int()])) as Record<(typeof EMAIL_EVENT_TYPES)[number], z.ZodNumber>;
const rate = z.number().describe('Percent of sent, one decimal');
const periods = Object.keys(STAT_PERIODS) as [keyof typeof STAT_PERIODS, ...(keyof typeof STAT_PERIODS)[]];

export const outreachRouter = router({
  listDomains: procedure
    .meta({ permission: 'outreach:read', openapi: { method: 'GET', path: '/api/outreach/domains/', tags, summary: 'List sending domains' } })
    .input(z.object({ ...pageParams, status: z.enum(['healthy', 'unhealthy', 'unknown']).optional(), search: z.string().max(253).optional() }))
    .output(paginated(sendingDomain))
    .query(({ ctx, input }) => listDomains(ctx, input)),
  createDomain: procedure
    .meta({ permission: 'outreach:write', resource: 'sending_domain', openapi: { method: 'POST', path: '/api/outreach/domains/', tags, summary: 'Add a sending domain and check its DNS (MX, SPF, DKIM, DMARC) now', successStatus: 201, errors: [409] } })
    .input(z.object({ domain: hostname, dkim_selector: selector.optional().describe('DKIM selector (default "default")') }))
    .output(sendingDomain)
    .mutation(({ ctx, input }) => createDomain(ctx, input)),
  getDomain: procedure
    .meta({ permission: 'outreach:read', openapi: { method: 'GET', path: '/api/outreach/domains/{id}/', tags, summary: 'Show a sending domain and its last check' } })
    .input(idInput).output(sendingDomain)
    .query(({ ctx, input }) => getDomain(ctx, input.id)),
  updateDomain: procedure
    .meta({ permission: 'outreach:write', resource: 'sending_domain', openapi: { method: 'PATCH', path: '/api/outreach/domains/{id}/', tags, summary: 'Change the DKIM selector of a sending domain (checked again at once)' } })
    .input(idInput.extend({
      dkim_selector: selector.optional(),
      domain: z.undefined({ error: 'The domain cannot be changed; add the new domain instead' }).optional(),
    }))
    .output(sendingDomain)
    .mutation(({ ctx, input }) => updateDomain(ctx, input.id, { dkim_selector: input.dkim_selector })),
  deleteDomain: procedure
    .meta({ permission: 'outreach:write', resource: 'sending_domain', openapi: { method: 'DELETE', path: '/api/outreach/domains/{id}/', tags, summary: 'Delete a sending domain and its alerts' } })
    .input(idInput).output(z.object({ id: z.string(), deleted: z.literal(true) }))
    .mutation(({ ctx, input }) => deleteDomain(ctx, input.id)),
  checkDomain: procedure
    .meta({ permission: 'outreach:write', resource: 'sending_domain', rateLimit: 'health', openapi: { method: 'POST', path: '/api/outreach/domains/{id}/check/', tags, summary: 'Run the SPF/DKIM/DMARC/MX checks of a sending domain now' } })
    .input(idInput).output(sendingDomain)
    .mutation(({ ctx, input }) => checkDomain(ctx, input.id)),
  healthAlerts: procedure
    .meta({ permission: 'outreach:read', rateLimit: 'health', openapi: { method: 'GET', path: '/api/outreach/health-alerts/', tags, summary: 'Sending-domain health alerts' } })
    .input(z.object({
      ...pageParams,
      resolved: z.boolean().optional().describe('Filter by resolved status (true/false)'),
      ordering: z.enum(ALERT_ORDERINGS).optional().describe('-detected_at (default), detected_at, severity (most severe first), -severity'),
      domain_id: id.optional(),
    }))
    .output(paginated(alert))
    .query(({ ctx, input }) => listAlerts(ctx, input)),
  healthStats: procedure
    .meta({ permission: 'outreach:read', rateLimit: 'health', openapi: { method: 'GET', path: '/api/outreach/health-stats/', tags, summary: 'Sending-domain health summary' } })
    .input(z.object({}))
    .output(z.object({ total_domains: z.number().int(), healthy_domains: z.number().int(), unhealthy_domains: z.number().int(), avg_health_score: z.number() }))
    .query(({ ctx }) => healthStats(ctx)),
  dashboardStats: procedure
    .meta({ permission: 'outreach:read', openapi: { method: 'GET', path: '/api/outreach/dashboard/stats/', tags, summary: 'Messages sent, delivered, opened, clicked, replied, bounced, complained and unsubscribed over a period, with rates' } })
    .input(z.object({
      period: z.enum(periods).optional().describe('24h, 7d, 30d (default) or 90d'),
      domain: hostname.optional().describe('Only messages sent from this domain'),
    }))
    .output(z.object({
      period: z.enum(periods), since: timestamp, ...counts,
      delivery_rate: rate, open_rate: rate, click_rate: rate, reply_rate: rate, bounce_rate: rate, complaint_rate: rate, unsubscribe_rate: rate,
    }))
    .query(({ ctx, input }) => dashboardStats(ctx, input)),
});
