import { sql, type Kysely, type Transaction } from 'kysely';
import { z } from 'zod';
import type { Database } from '../../db/schema.js';
import type { AlertSeverity, DomainStatus, EmailEventType } from '../../db/schema/outreach.js';
import type { Ctx, Deps } from '../context.js';
import { containsText, isUniqueViolation } from '../db.js';
import { badRequest, conflict, notFound, zodDetails } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { resolverFor } from '../integrations/dns.js';
import { paginate, type PageInput } from '../pagination.js';
import { emitEvent } from './events.js';
import {
  healthScore, HEALTHY_SCORE, rateLevel, runDomainChecks, RATE_THRESHOLDS,
  type AlertKind, type DomainChecks, type Outcome,
} from './outreach_checks.js';

/**
 * Outreach health: sending domains and their DNS checks, the alerts those raise, and the e-mail
 * event table with the statistics read from it.
 */

export const EMAIL_EVENT_TYPES = ['sent', 'delivered', 'opened', 'clicked', 'replied', 'bounced', 'complained', 'unsubscribed'] as const satisfies readonly EmailEventType[];

/** How long one domain check may take in all (each DNS query is also bounded by the resolver). */
export const CHECK_BUDGET_MS = 10_000;
const RATE_WINDOW_DAYS = 30;
const DAY_MS = 86_400_000;

const SEVERITY_RANK: Record<AlertSeverity, number> = { critical: 1, warning: 2, info: 3 };

// ───────────────────────────── e-mail events ─────────────────────────────

const emailEventInput = z.object({
  organizationId: z.string().min(1),
  contactId: z.string().min(1).nullable().optional(),
  messageId: z.string().min(1).max(500),
  recipient: z.string().trim().min(3).max(320),
  sendingDomain: z.string().trim().min(1).max(253).transform((d) => d.toLowerCase().replace(/\.$/, '')),
  type: z.enum(EMAIL_EVENT_TYPES),
  bounceType: z.enum(['hard', 'soft']).nullable().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  occurredAt: z.union([z.date(), z.iso.datetime({ offset: true })]).optional(),
}).refine((e) => e.type === 'bounced' || e.bounceType == null, { path: ['bounceType'], message: 'Only bounces have a bounce type' });
export type EmailEventInput = z.input<typeof emailEventInput>;

/** The one writer of `email_events` (the delivery pipeline and tests call it). Returns the event id. */
export async function recordEmailEvent(db: Kysely<Database>, event: EmailEventInput): Promise<string> {
  const parsed = emailEventInput.safeParse(event);
  if (!parsed.success) throw badRequest(zodDetails(parsed.error), 'Invalid e-mail event');
  const e = parsed.data;
  const id = newId('eev');
  await db.insertInto('email_events').values({
    id, organization_id: e.organizationId, contact_id: e.contactId ?? null, message_id: e.messageId,
    recipient: e.recipient.toLowerCase(), sending_domain: e.sendingDomain, type: e.type, bounce_type: e.bounceType ?? null,
    metadata: JSON.stringify(e.metadata ?? {}), occurred_at: new Date(e.occurredAt ?? Date.now()).toISOString(),
  }).execute();
  return id;
}

/**
 * Messages per event type since `since` (distinct message ids, so two opens of one message count
 * once), counted in SQL over the (organization, [domain,] occurred_at) indexes.
 */
async function countEvents(db: Kysely<Database>, org: string, since: string, domain?: string): Promise<Record<EmailEventType, number>> {
  let q = db.selectFrom('email_events')
    .select(['type', sql<number>`count(distinct ${sql.ref('message_id')})`.as('n')])
    .where('organization_id', '=', org).where('occurred_at', '>=', since);
  if (domain) q = q.where('sending_domain', '=', domain);
  const rows = await q.groupBy('type').execute();
  const out = Object.fromEntries(EMAIL_EVENT_TYPES.map((t) => [t, 0])) as Record<EmailEventType, number>;
  for (const r of rows) if (r.type in out) out[r.type] = Number(r.n);
  return out;
}

/** `part` as a percentage of `whole`, rounded to `digits` decimals; 0 when `whole` is 0. */
const percent = (part: number, whole: number, digits: number) => (whole > 0 ? Number(((part / whole) * 100).toFixed(digits)) : 0);

// ───────────────────────────── sending domains ─────────────────────────────

const DOMAIN_COLUMNS = ['id', 'organization_id', 'domain', 'dkim_selector', 'status', 'health_score', 'checks', 'bounce_rate', 'complaint_rate', 'sent_last_30_days', 'last_checked_at', 'created_at', 'updated_at'] as const;
interface DomainRow {
  id: string; organization_id: string; domain: string; dkim_selector: string; status: DomainStatus; health_score: number | null; checks: string;
  bounce_rate: number; complaint_rate: number; sent_last_30_days: number; last_checked_at: string | null; created_at: string; updated_at: string;
}

function presentDomain(r: DomainRow) {
  const checks = JSON.parse(r.checks) as DomainChecks;
  return {
    id: r.id, domain: r.domain, dkim_selector: r.dkim_selector, status: r.status,
    health_score: r.health_score === null ? null : Number(r.health_score),
    mx: checks.mx, spf: checks.spf, dkim: checks.dkim, dmarc: checks.dmarc,
    bounce_rate: Number(r.bounce_rate), complaint_rate: Number(r.complaint_rate), sent_last_30_days: Number(r.sent_last_30_days),
    last_checked_at: r.last_checked_at, created_at: r.created_at, updated_at: r.updated_at,
  };
}

export function listDomains(ctx: Ctx, input: PageInput & { status?: DomainStatus; search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('sending_domains').select(DOMAIN_COLUMNS).where('organization_id', '=', org);
  if (input.status) query = query.where('status', '=', input.status);
  if (input.search) query = query.where(containsText('domain', input.search));
  return paginate(ctx, { query, table: 'sending_domains', scope: org, input }, presentDomain);
}

async function domainRow(db: Kysely<Database>, org: string, id: string): Promise<DomainRow> {
  const row = await db.selectFrom('sending_domains').select(DOMAIN_COLUMNS).where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (!row) throw notFound('Sending domain');
  return row;
}

export async function getDomain(ctx: Ctx, id: string) {
  return presentDomain(await domainRow(ctx.deps.db.kysely, ctx.actor!.organizationId, id));
}

/** What one check of a domain found: DNS results, rates, score, and the alerts they call for. */
interface Assessment {
  checks: DomainChecks;
  health_score: number | null;
  status: DomainStatus;
  bounce_rate: number;
  complaint_rate: number;
  sent_last_30_days: number;
  checked_at: string;
  /** Per alert family decided by this check (families whose check is unknown are absent): the kind that should be open, or none. */
  alerts: { family: readonly AlertKind[]; open: { kind: AlertKind; severity: AlertSeverity; message: string } | null }[];
}

const CHECK_FAMILIES = {
  mx: ['mx_missing'], spf: ['spf_missing', 'spf_invalid'], dkim: ['dkim_missing', 'dkim_invalid'], dmarc: ['dmarc_missing', 'dmarc_invalid'],
} as const satisfies Record<keyof DomainChecks, readonly AlertKind[]>;
const CHECK_SEVERITY: Record<keyof DomainChecks, AlertSeverity> = { mx: 'critical', spf: 'critical', dkim: 'critical', dmarc: 'warning' };

async function assess(deps: Deps, org: string, domain: string, selector: string): Promise<Assessment> {
  const since = new Date(Date.now() - RATE_WINDOW_DAYS * DAY_MS).toISOString();
  const [outcomes, counts] = await Promise.all([
    runDomainChecks(resolverFor(deps.config).fresh(), domain, selector, Date.now() + CHECK_BUDGET_MS),
    countEvents(deps.db.kysely, org, since, domain),
  ]);
  const checks: DomainChecks = { mx: outcomes.mx.result, spf: outcomes.spf.result, dkim: outcomes.dkim.result, dmarc: outcomes.dmarc.result };
  const sent = counts.sent;
  // Exact rates decide thresholds and score; the stored and shown ones are rounded to two decimals.
  const rates = {
    bounce: { exact: sent ? (counts.bounced / sent) * 100 : 0, count: counts.bounced, kind: 'bounce_rate_high', label: 'Bounce' },
    complaint: { exact: sent ? (counts.complained / sent) * 100 : 0, count: counts.complained, kind: 'complaint_rate_high', label: 'Complaint' },
  } as const;
  const score = healthScore(checks, { bounce: rates.bounce.exact, complaint: rates.complaint.exact });

  const alerts: Assessment['alerts'] = [];
  for (const key of Object.keys(CHECK_FAMILIES) as (keyof DomainChecks)[]) {
    const o = outcomes[key] as Outcome<{ status: string; message: string }>;
    if (o.result.status === 'unknown') continue; // no answer: neither raise nor resolve
    alerts.push({ family: CHECK_FAMILIES[key], open: o.failKind ? { kind: o.failKind, severity: CHECK_SEVERITY[key], message: `${domain}: ${o.result.message}` } : null });
  }
  for (const name of ['bounce', 'complaint'] as const) {
    const r = rates[name];
    const level = rateLevel(r.exact, name);
    const message = level && `${domain}: ${r.label} rate ${percent(r.count, sent, 2)}% over the last ${RATE_WINDOW_DAYS} days (${r.count} of ${sent} sent) is above ${RATE_THRESHOLDS[name][level]}%`;
    alerts.push({ family: [r.kind], open: level && message ? { kind: r.kind, severity: level, message } : null });
  }
  return {
    checks, health_score: score, status: score === null ? 'unknown' : score >= HEALTHY_SCORE ? 'healthy' : 'unhealthy',
    bounce_rate: percent(counts.bounced, sent, 2), complaint_rate: percent(counts.complained, sent, 2), sent_last_30_days: sent, checked_at: nowIso(), alerts,
  };
}

const assessedColumns = (a: Assessment) => ({
  status: a.status, health_score: a.health_score, checks: JSON.stringify(a.checks),
  bounce_rate: a.bounce_rate, complaint_rate: a.complaint_rate, sent_last_30_days: a.sent_last_30_days, last_checked_at: a.checked_at,
});

/**
 * Brings a domain's alerts in line with an assessment, inside the transaction that stores it: one
 * open alert per domain and kind (a partial unique index guarantees it), raised with an
 * `outreach.alert_raised` event, resolved (with `outreach.alert_resolved`) once its check recovers.
 */
async function reconcileAlerts(trx: Transaction<Database>, d: { id: string; organization_id: string; domain: string }, a: Assessment): Promise<boolean> {
  let changed = false;
  for (const { family, open } of a.alerts) {
    const stale = family.filter((k) => k !== open?.kind);
    if (stale.length) {
      const resolved = await trx.updateTable('domain_health_alerts').set({ resolved_at: a.checked_at })
        .where('domain_id', '=', d.id).where('kind', 'in', stale).where('resolved_at', 'is', null)
        .returning(['id', 'kind', 'severity']).execute();
      for (const r of resolved) {
        changed = true;
        await emitEvent(trx, { organizationId: d.organization_id, type: 'outreach.alert_resolved', payload: { alert_id: r.id, domain_id: d.id, domain: d.domain, kind: r.kind, severity: r.severity, resolved_at: a.checked_at } });
      }
    }
    if (!open) continue;
    const id = newId('dha');
    const inserted = await trx.insertInto('domain_health_alerts').values({
      id, organization_id: d.organization_id, domain_id: d.id, domain: d.domain, kind: open.kind, severity: open.severity,
      severity_rank: SEVERITY_RANK[open.severity], message: open.message, detected_at: a.checked_at, resolved_at: null,
    }).onConflict((oc) => oc.columns(['domain_id', 'kind']).where('resolved_at', 'is', null).doNothing()).returning('id').executeTakeFirst();
    if (inserted) {
      changed = true;
      await emitEvent(trx, { organizationId: d.organization_id, type: 'outreach.alert_raised', payload: { alert_id: id, domain_id: d.id, domain: d.domain, kind: open.kind, severity: open.severity, message: open.message, detected_at: a.checked_at } });
    } else {
      // Still open: keep its detection time, refresh what it says (a rate may have got worse).
      await trx.updateTable('domain_health_alerts').set({ severity: open.severity, severity_rank: SEVERITY_RANK[open.severity], message: open.message })
        .where('domain_id', '=', d.id).where('kind', '=', open.kind).where('resolved_at', 'is', null).execute();
    }
  }
  return changed;
}

export interface DomainInput { domain: string; dkim_selector?: string }

export async function createDomain(ctx: Ctx, input: DomainInput) {
  const org = ctx.actor!.organizationId;
  const db = ctx.deps.db.kysely;
  const taken = () => conflict({ domain: `${input.domain} is already a sending domain of this organization` });
  const exists = await db.selectFrom('sending_domains').select('id').where('organization_id', '=', org).where('domain', '=', input.domain).executeTakeFirst();
  if (exists) throw taken();
  const selector = input.dkim_selector ?? 'default';
  const a = await assess(ctx.deps, org, input.domain, selector);
  const id = newId('sdm');
  const now = nowIso();
  try {
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('sending_domains').values({ id, organization_id: org, domain: input.domain, dkim_selector: selector, ...assessedColumns(a), created_at: now, updated_at: now }).execute();
      await reconcileAlerts(trx, { id, organization_id: org, domain: input.domain }, a);
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw taken();
    throw err;
  }
  ctx.deps.counts.invalidate(org, 'sending_domains');
  ctx.deps.counts.invalidate(org, 'domain_health_alerts');
  return getDomain(ctx, id);
}

/** Checks one stored domain now and stores the results; false when it was deleted meanwhile. */
async function refreshDomain(deps: Deps, d: { id: string; organization_id: string; domain: string; dkim_selector: string }, extra: { dkim_selector?: string } = {}): Promise<boolean> {
  const a = await assess(deps, d.organization_id, d.domain, extra.dkim_selector ?? d.dkim_selector);
  const { found, changed } = await deps.db.kysely.transaction().execute(async (trx) => {
    const res = await trx.updateTable('sending_domains').set({ ...extra, ...assessedColumns(a), updated_at: a.checked_at })
      .where('id', '=', d.id).where('organization_id', '=', d.organization_id).executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) return { found: false, changed: false };
    return { found: true, changed: await reconcileAlerts(trx, d, a) };
  });
  deps.counts.invalidate(d.organization_id, 'sending_domains'); // its status may have changed
  if (changed) deps.counts.invalidate(d.organization_id, 'domain_health_alerts');
  return found;
}

export async function checkDomain(ctx: Ctx, id: string) {
  const row = await domainRow(ctx.deps.db.kysely, ctx.actor!.organizationId, id);
  if (!(await refreshDomain(ctx.deps, row))) throw notFound('Sending domain');
  return getDomain(ctx, id);
}

/** Only the DKIM selector changes (the domain is the resource's identity); a new selector is checked at once. */
export async function updateDomain(ctx: Ctx, id: string, input: { dkim_selector?: string }) {
  const row = await domainRow(ctx.deps.db.kysely, ctx.actor!.organizationId, id);
  if (input.dkim_selector !== undefined && input.dkim_selector !== row.dkim_selector) {
    if (!(await refreshDomain(ctx.deps, row, { dkim_selector: input.dkim_selector }))) throw notFound('Sending domain');
  }
  return getDomain(ctx, id);
}

export async function deleteDomain(ctx: Ctx, id: string) {
  const org = ctx.actor!.organizationId;
  const d = await domainRow(ctx.deps.db.kysely, org, id);
  // Its alerts go with it (foreign key, on delete cascade); e-mail events stay (they name the domain, not the row).
  await ctx.deps.db.kysely.deleteFrom('sending_domains').where('id', '=', id).where('organization_id', '=', org).execute();
  ctx.deps.counts.invalidate(org, 'sending_domains');
  ctx.deps.counts.invalidate(org, 'domain_health_alerts');
  return { id: d.id, deleted: true as const };
}

/**
 * Re-checks every sending domain of every organization (for a periodic job), a few at a time.
 * A domain whose check throws is counted in `failed` and logged; the others go on.
 */
export async function checkAllDomains(deps: Deps, opts: { concurrency?: number } = {}): Promise<{ checked: number; failed: number }> {
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  let checked = 0;
  let failed = 0;
  let after = '';
  for (;;) {
    const batch = await deps.db.kysely.selectFrom('sending_domains').select(['id', 'organization_id', 'domain', 'dkim_selector'])
      .where('id', '>', after).orderBy('id').limit(100).execute();
    if (!batch.length) break;
    after = batch[batch.length - 1].id;
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(concurrency, batch.length) }, async () => {
      while (next < batch.length) {
        const d = batch[next++];
        try {
          if (await refreshDomain(deps, d)) checked++;
        } catch (err) {
          failed++;
          deps.log.warn({ err, domainId: d.id }, 'sending domain check failed');
        }
      }
    }));
  }
  return { checked, failed };
}

// ───────────────────────────── alerts ─────────────────────────────

export const ALERT_ORDERINGS = ['-detected_at', 'detected_at', 'severity', '-severity'] as const;
export type AlertOrdering = (typeof ALERT_ORDERINGS)[number];

interface AlertRow { id: string; domain_id: string; domain: string; kind: string; severity: AlertSeverity; severity_rank: number; message: string; detected_at: string; resolved_at: string | null }
const presentAlert = (r: AlertRow) => ({
  id: r.id, domain_id: r.domain_id, domain: r.domain, kind: r.kind as AlertKind, severity: r.severity, message: r.message,
  detected_at: r.detected_at, resolved: r.resolved_at !== null, resolved_at: r.resolved_at,
});

/** `severity` orders by rank, most severe first (critical, warning, info); `-severity` the reverse. */
export function listAlerts(ctx: Ctx, input: PageInput & { resolved?: boolean; ordering?: AlertOrdering; domain_id?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('domain_health_alerts')
    .select(['id', 'domain_id', 'domain', 'kind', 'severity', 'severity_rank', 'message', 'detected_at', 'resolved_at'])
    .where('organization_id', '=', org);
  if (input.resolved !== undefined) query = query.where('resolved_at', input.resolved ? 'is not' : 'is', null);
  if (input.domain_id) query = query.where('domain_id', '=', input.domain_id);
  const ordering = input.ordering ?? '-detected_at';
  const desc = ordering.startsWith('-');
  const column = ordering.replace(/^-/, '') === 'severity' ? 'severity_rank' : 'detected_at';
  return paginate(ctx, { query, table: 'domain_health_alerts', scope: org, input, sort: { column, direction: desc ? 'desc' : 'asc' } }, presentAlert);
}

// ───────────────────────────── statistics ─────────────────────────────

/** The documented shape exactly: `avg_health_score` is rounded to one decimal, 0 without scored domains. */
export async function healthStats(ctx: Ctx) {
  const row = await ctx.deps.db.kysely.selectFrom('sending_domains')
    .select((eb) => [
      eb.fn.countAll<number>().as('total'),
      eb.fn.sum<number>(sql`case when status = 'healthy' then 1 else 0 end`).as('healthy'),
      eb.fn.sum<number>(sql`case when status = 'unhealthy' then 1 else 0 end`).as('unhealthy'),
      eb.fn.avg<number>('health_score').as('avg'),
    ])
    .where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirstOrThrow();
  return {
    total_domains: Number(row.total),
    healthy_domains: Number(row.healthy ?? 0),
    unhealthy_domains: Number(row.unhealthy ?? 0),
    avg_health_score: row.avg === null ? 0 : Math.round(Number(row.avg) * 10) / 10,
  };
}

export const STAT_PERIODS = { '24h': DAY_MS, '7d': 7 * DAY_MS, '30d': 30 * DAY_MS, '90d': 90 * DAY_MS } as const;
export type StatPeriod = keyof typeof STAT_PERIODS;

/**
 * Messages per event type over the period (distinct messages: two opens of one message are one
 * opened message), and each as a percentage of the messages sent, rounded to one decimal (0 when
 * nothing was sent).
 */
export async function dashboardStats(ctx: Ctx, input: { period?: StatPeriod; domain?: string }) {
  const period = input.period ?? '30d';
  const since = new Date(Date.now() - STAT_PERIODS[period]).toISOString();
  const c = await countEvents(ctx.deps.db.kysely, ctx.actor!.organizationId, since, input.domain);
  const rate = (n: number) => percent(n, c.sent, 1);
  return {
    period, since, ...c,
    delivery_rate: rate(c.delivered), open_rate: rate(c.opened), click_rate: rate(c.clicked), reply_rate: rate(c.replied),
    bounce_rate: rate(c.bounced), complaint_rate: rate(c.complained), unsubscribe_rate: rate(c.unsubscribed),
  };
}
