import { sql, type Kysely, type Selectable, type SelectQueryBuilder } from 'kysely';
import { z } from 'zod';
import type { Database } from '../../db/schema.js';
import type { ContactsTable } from '../../db/schema/contacts.js';
import type { Ctx, Deps } from '../context.js';
import { isUniqueViolation } from '../db.js';
import { defineJob, defineRecurringJob } from '../engine/queue.js';
import { badRequest, conflict, notFound, zodDetails } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { resolverFor } from '../integrations/dns.js';
import { paginate, type PageInput } from '../pagination.js';
import { analyzeEmail, analyzeSyntax, EMAIL_VALIDITY, ESGS, ESPS, type EmailAnalysis, type EmailFlag } from './email_intel.js';

/**
 * Contacts: the FireGlue "agents" directory (`/api/agents/`), the people Agentry's outreach and AI
 * agents work with.
 *
 * Derived on every write: `name_key` and `email_normalized` (search keys), `email_dedupe_key`,
 * the e-mail analysis (`email_validity`, `esp`, `esg`: src/services/email_intel.ts) and the
 * data-health flags below. Each flag is also one `contact_flags` row (the flag filter), and every
 * filter value's count is kept in `contact_facets` in the same transaction (the filter-option
 * lists and most list counts read it instead of counting rows).
 *
 * | flag              | set when                                                                        |
 * |-------------------|---------------------------------------------------------------------------------|
 * | missing_name      | no name                                                                         |
 * | missing_email     | no e-mail                                                                       |
 * | invalid_email     | email_validity is `invalid`: not an address, or its domain receives no mail     |
 * | disposable_domain | the domain is a disposable-address provider                                     |
 * | role_account      | info@, sales@, noreply@…                                                        |
 * | duplicate_email   | another contact of the organization has the same e-mail once lower-cased, its  |
 * |                   | +tag and the dots of its local part removed (exact and case-variant duplicates  |
 * |                   | are refused: 409)                                                               |
 * | no_mx             | the domain does not exist, has a null MX, or has neither MX nor A/AAAA          |
 * | bounced           | `bounced` is true                                                               |
 * | unsubscribed      | `unsubscribed` is true                                                          |
 * | stale             | the e-mail's last conclusive check (or the contact's creation, when it has      |
 * |                   | none) is more than 180 days old at the time of the write or re-check            |
 *
 * DNS on the request path is bounded (`WRITE_DNS_BUDGET_MS`): a slow domain yields `unknown`,
 * and `recheckContacts` (job `contacts.recheck`, run every hour) settles unknown and stale ones.
 */

export const DATA_HEALTH_FLAGS = [
  'missing_name', 'missing_email', 'invalid_email', 'disposable_domain', 'role_account', 'duplicate_email', 'no_mx',
  'bounced', 'unsubscribed', 'stale',
] as const;
export type DataHealthFlag = (typeof DATA_HEALTH_FLAGS)[number];

const EMAIL_FLAGS: readonly string[] = ['invalid_email', 'disposable_domain', 'role_account', 'no_mx'] satisfies EmailFlag[];
const FLAG_ORDER = new Map<string, number>(DATA_HEALTH_FLAGS.map((f, i) => [f, i]));

export const STALE_AFTER_DAYS = 180;
const DAY_MS = 86_400_000;
/** How long a request waits for DNS before storing `unknown`. */
export const WRITE_DNS_BUDGET_MS = 1500;
/** Rows per upsert transaction. */
const UPSERT_BATCH = 500;
/** Concurrent DNS analyses per upsert batch. */
const DNS_CONCURRENCY = 32;

// ---------------------------------------------------------------------------------------------
// Input schemas (shared by the router, the download route and upsertContacts)

const noNul = (s: string) => !s.includes('\u0000');
const str = (max: number) => z.string().max(max).refine(noNul, 'Must not contain NUL characters');
const optText = (max: number) => str(max).nullable().optional();

/** The writable fields of a contact, with their limits. */
export const contactFields = {
  name: optText(200).describe('Full name'),
  // Any string up to 320 characters is accepted: a malformed address is stored and flagged
  // invalid_email (it may be fixed later), it is not refused.
  email: optText(320).describe('E-mail address; a malformed one is kept and flagged `invalid_email`'),
  phone: optText(50),
  company: optText(200),
  title: optText(200),
  city: optText(100),
  state: optText(100),
  country: optText(100),
  tags: z.array(str(50).trim().min(1)).max(50).optional().describe('At most 50 tags of at most 50 characters'),
  custom_fields: z.record(str(64).min(1), z.union([str(2000), z.number(), z.boolean(), z.null()]))
    .refine((o) => Object.keys(o).length <= 50, 'At most 50 custom fields').optional()
    .describe('Flat object: at most 50 keys; values are strings (≤ 2000 characters), numbers, booleans or null'),
  source: optText(100),
  lead_score: z.number().int().min(0).max(100).nullable().optional().describe('0–100'),
  lead_score_reasons: z.array(z.union([str(500), z.record(z.string(), z.unknown())])).max(20)
    .refine((a) => JSON.stringify(a).length <= 10_000, 'At most 10000 characters as JSON').optional(),
  unsubscribed: z.boolean().optional(),
  bounced: z.boolean().optional(),
};
export const contactInput = z.object(contactFields);
export type ContactInput = z.infer<typeof contactInput>;

/** The list and download filters. */
export const contactFilters = {
  search: str(200).optional().describe('Prefix of the name (any case, accents ignored) or of the e-mail'),
  city: str(100).optional().describe('Exact city'),
  esp: z.enum(ESPS).optional().describe('E-mail service provider'),
  esg: z.enum(ESGS).optional().describe('E-mail service group'),
  email_validity: z.enum(EMAIL_VALIDITY).optional(),
  data_health_flags: z.array(z.enum(DATA_HEALTH_FLAGS)).max(DATA_HEALTH_FLAGS.length).optional()
    .describe('One flag, or several comma-separated: contacts having all of them'),
};
export const contactFilterSchema = z.object(contactFilters);
export type ContactFilters = z.infer<typeof contactFilterSchema>;

// Lenient variant for imports (CSV cells are strings): '' means "not given", numbers and
// booleans may be strings, tags may be one "a, b; c" string.
const blankToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);
const lenient = (s: z.ZodType) => z.preprocess(blankToUndefined, s);
const lenientBool = (s: z.ZodType) => z.preprocess((v) => {
  const b = blankToUndefined(v);
  if (typeof b !== 'string') return b;
  const t = b.trim().toLowerCase();
  return ['true', '1', 'yes', 'y'].includes(t) ? true : ['false', '0', 'no', 'n'].includes(t) ? false : b;
}, s);
const importRow = z.object({
  ...Object.fromEntries(Object.entries(contactFields).map(([k, s]) => [k, lenient(s)])),
  lead_score: z.preprocess((v) => {
    const b = blankToUndefined(v);
    return typeof b === 'string' && /^\s*\d+\s*$/.test(b) ? Number(b) : b;
  }, contactFields.lead_score),
  tags: z.preprocess((v) => {
    const b = blankToUndefined(v);
    return typeof b === 'string' ? b.split(/[,;]/).map((t) => t.trim()).filter(Boolean) : b;
  }, contactFields.tags),
  unsubscribed: lenientBool(contactFields.unsubscribed),
  bounced: lenientBool(contactFields.bounced),
});

// ---------------------------------------------------------------------------------------------
// Normalisation

type Row = Selectable<ContactsTable>;

/** lower-case, accents removed, spaces collapsed: the name's search key (and a search term's). */
export function nameKey(s: string): string {
  return s.normalize('NFKD').replace(/\p{M}+/gu, '').toLowerCase().replace(/\s+/g, ' ').trim();
}

export function normalizeEmail(s: string): string {
  return s.trim().toLowerCase();
}

/** `John.Doe+news@Example.com` → `johndoe@example.com`: duplicate_email groups. */
export function dedupeKey(email: string): string {
  const e = normalizeEmail(email);
  const at = e.lastIndexOf('@');
  if (at <= 0) return e;
  const local = e.slice(0, at).split('+')[0].replace(/\./g, '');
  let domain = e.slice(at + 1);
  if (domain === 'googlemail.com') domain = 'gmail.com';
  return `${local || e.slice(0, at)}@${domain}`;
}

const clean = (v: string | null | undefined): string | null | undefined => {
  if (v === undefined || v === null) return v;
  const t = v.trim();
  return t === '' ? null : t;
};

/** Column values for the writable fields present in `input` (absent fields are left out). */
function columnsOf(input: ContactInput): Partial<Row> {
  const out: Partial<Row> = {};
  for (const k of ['name', 'email', 'phone', 'company', 'title', 'city', 'state', 'country', 'source'] as const) {
    if (input[k] !== undefined) out[k] = clean(input[k]) ?? null;
  }
  if (input.tags !== undefined) out.tags = JSON.stringify([...new Set(input.tags.map((t) => t.trim()))]);
  if (input.custom_fields !== undefined) out.custom_fields = JSON.stringify(input.custom_fields);
  if (input.lead_score !== undefined) out.lead_score = input.lead_score;
  if (input.lead_score_reasons !== undefined) out.lead_score_reasons = JSON.stringify(input.lead_score_reasons);
  if (input.unsubscribed !== undefined) out.unsubscribed = input.unsubscribed ? 1 : 0;
  if (input.bounced !== undefined) out.bounced = input.bounced ? 1 : 0;
  return out;
}

const parseList = (s: string): string[] => JSON.parse(s) as string[];

export function present(r: Pick<Row, (typeof API_COLUMNS)[number]>) {
  return {
    id: r.id, name: r.name, email: r.email, phone: r.phone, company: r.company, title: r.title,
    city: r.city, state: r.state, country: r.country,
    tags: parseList(r.tags), custom_fields: JSON.parse(r.custom_fields) as Record<string, string | number | boolean | null>,
    source: r.source, lead_score: r.lead_score === null ? null : Number(r.lead_score),
    lead_score_reasons: JSON.parse(r.lead_score_reasons) as unknown[],
    unsubscribed: Number(r.unsubscribed) === 1, bounced: Number(r.bounced) === 1,
    esp: r.esp, esg: r.esg, email_validity: r.email_validity as (typeof EMAIL_VALIDITY)[number] | null,
    data_health_flags: parseList(r.data_health_flags) as DataHealthFlag[],
    email_checked_at: r.email_checked_at, created_at: r.created_at, updated_at: r.updated_at,
  };
}
export type Contact = ReturnType<typeof present>;

function isStale(r: Pick<Row, 'email_checked_at' | 'created_at'>, now: number): boolean {
  return Date.parse(r.email_checked_at ?? r.created_at) < now - STALE_AFTER_DAYS * DAY_MS;
}

/** Whether a write should (re)run the DNS analysis: a new e-mail, or a stored one that is unknown or stale. */
function needsAnalysis(before: Row | null, email: string | null): boolean {
  if (!email) return false;
  if (!before || before.email_normalized !== normalizeEmail(email)) return true;
  return before.email_validity === 'unknown' || isStale(before, Date.now());
}

/** An analysis, tied to the address it is about. */
interface Analysed { email: string; result: EmailAnalysis }

async function analyse(deps: Deps, email: string, timeoutMs: number | undefined): Promise<Analysed> {
  const resolver = timeoutMs === 0 ? null : resolverFor(deps.config);
  return { email: normalizeEmail(email), result: await analyzeEmail(resolver, email, timeoutMs === undefined ? {} : { timeoutMs }) };
}

// ---------------------------------------------------------------------------------------------
// The write path: one contact row, its flag rows, its facet counts, its duplicate group.

/** Count changes per (facet, value), applied once per transaction. */
class FacetDelta {
  readonly map = new Map<string, number>();
  add(facet: string, value: string | null, d: number) {
    if (value === null || value === undefined) return;
    const k = `${facet}\u0000${value}`;
    this.map.set(k, (this.map.get(k) ?? 0) + d);
  }
  row(r: Row, d: number) {
    this.add('total', '', d);
    this.add('city', r.city, d);
    this.add('esp', r.esp, d);
    this.add('esg', r.esg, d);
    this.add('email_validity', r.email_validity, d);
    for (const f of parseList(r.data_health_flags)) this.add('data_health_flag', f, d);
  }
  async flush(trx: Kysely<Database>, org: string) {
    const rows = [...this.map].filter(([, n]) => n !== 0).map(([k, n]) => {
      const [facet, value] = k.split('\u0000');
      return { organization_id: org, facet, value, count: n };
    });
    for (let i = 0; i < rows.length; i += 200) {
      await trx.insertInto('contact_facets').values(rows.slice(i, i + 200))
        .onConflict((oc) => oc.columns(['organization_id', 'facet', 'value'])
          .doUpdateSet((eb) => ({ count: eb(eb.ref('contact_facets.count'), '+', eb.ref('excluded.count')) })))
        .execute();
    }
    this.map.clear();
  }
}

const sortFlags = (flags: Iterable<string>) => [...new Set(flags)].sort((a, b) => FLAG_ORDER.get(a)! - FLAG_ORDER.get(b)!);

/** Serialises contact writes of one organization on PostgreSQL (SQLite has one writer anyway). */
async function lockContacts(deps: Deps, trx: Kysely<Database>, org: string): Promise<void> {
  if (deps.db.dialect !== 'postgres') return;
  await sql`select pg_advisory_xact_lock(hashtext(${`agentry.contacts:${org}`}))`.execute(trx);
}

async function syncFlagRows(trx: Kysely<Database>, org: string, id: string, before: string[], after: string[]) {
  const added = after.filter((f) => !before.includes(f));
  const removed = before.filter((f) => !after.includes(f));
  if (added.length) await trx.insertInto('contact_flags').values(added.map((flag) => ({ organization_id: org, flag, contact_id: id }))).execute();
  if (removed.length) await trx.deleteFrom('contact_flags').where('organization_id', '=', org).where('contact_id', '=', id).where('flag', 'in', removed).execute();
}

/** Turns duplicate_email on or off for one stored contact (another member of a group). */
async function setDuplicate(trx: Kysely<Database>, org: string, r: Pick<Row, 'id' | 'data_health_flags'>, on: boolean, delta: FacetDelta) {
  const flags = parseList(r.data_health_flags);
  if (flags.includes('duplicate_email') === on) return;
  const next = on ? sortFlags([...flags, 'duplicate_email']) : flags.filter((f) => f !== 'duplicate_email');
  await trx.updateTable('contacts').set({ data_health_flags: JSON.stringify(next) }).where('id', '=', r.id).execute();
  await syncFlagRows(trx, org, r.id, flags, next);
  delta.add('data_health_flag', 'duplicate_email', on ? 1 : -1);
}

/**
 * Writes one contact inside the caller's locked transaction: creates it (`before` null) or
 * applies `changes` to it. `analysis` is used when it is about the resulting e-mail; an e-mail
 * that changed without one gets what its syntax alone says (`unknown` when well-formed).
 */
async function saveContact(trx: Kysely<Database>, org: string, before: Row | null, changes: Partial<Row>, analysis: Analysed | null, delta: FacetDelta): Promise<Row> {
  const now = nowIso();
  const nowMs = Date.parse(now);
  const base: Row = before ?? {
    id: newId('ctc'), organization_id: org, name: null, name_key: null, email: null, email_normalized: null, email_dedupe_key: null,
    phone: null, company: null, title: null, city: null, state: null, country: null, tags: '[]', custom_fields: '{}', source: null,
    lead_score: null, lead_score_reasons: '[]', unsubscribed: 0, bounced: 0, esp: null, esg: null, email_validity: null,
    data_health_flags: '[]', email_checked_at: null, created_at: now, updated_at: now,
  };
  const after: Row = { ...base, ...changes, id: base.id, organization_id: org, created_at: base.created_at, updated_at: now };
  after.name_key = after.name ? nameKey(after.name) : null;
  after.email_normalized = after.email ? normalizeEmail(after.email) : null;
  after.email_dedupe_key = after.email ? dedupeKey(after.email) : null;

  // The e-mail's derived fields: a fresh analysis, or the stored ones when the address is unchanged.
  let emailFlags: string[];
  if (!after.email_normalized) {
    Object.assign(after, { esp: null, esg: null, email_validity: null, email_checked_at: null });
    emailFlags = [];
  } else if (analysis && analysis.email === after.email_normalized && !(
    // A failed re-check of an unchanged address keeps what the last conclusive check found.
    analysis.result.email_validity === 'unknown' && before?.email_normalized === after.email_normalized
    && before.email_validity !== null && before.email_validity !== 'unknown'
  )) {
    const a = analysis.result;
    const conclusive = a.email_validity !== 'unknown';
    const sameEmail = before?.email_normalized === after.email_normalized;
    Object.assign(after, {
      esp: a.esp, esg: a.esg, email_validity: a.email_validity,
      email_checked_at: conclusive ? now : sameEmail ? before!.email_checked_at : null,
    });
    emailFlags = a.flags;
  } else if (before && before.email_normalized === after.email_normalized) {
    emailFlags = parseList(before.data_health_flags).filter((f) => EMAIL_FLAGS.includes(f));
  } else {
    const s = analyzeSyntax(after.email!);
    Object.assign(after, { esp: null, esg: null, email_validity: s.parsed ? 'unknown' : 'invalid', email_checked_at: s.parsed ? null : now });
    emailFlags = s.flags;
  }

  // duplicate_email: the others sharing the new dedupe key. Two are enough to look at: in a
  // group of two or more every member is already flagged (each write keeps that true), so only
  // a lone member can need the flag; this keeps a write O(1) however large a group grows.
  const oldKey = before?.email_dedupe_key ?? null;
  const newKey = after.email_dedupe_key;
  const others = newKey
    ? await trx.selectFrom('contacts').select(['id', 'data_health_flags']).where('organization_id', '=', org)
      .where('email_dedupe_key', '=', newKey).where('id', '!=', after.id).limit(2).execute()
    : [];

  const flags: string[] = [...emailFlags];
  if (!after.name) flags.push('missing_name');
  if (!after.email_normalized) flags.push('missing_email');
  if (others.length) flags.push('duplicate_email');
  if (Number(after.bounced) === 1) flags.push('bounced');
  if (Number(after.unsubscribed) === 1) flags.push('unsubscribed');
  if (after.email_normalized && isStale(after, nowMs)) flags.push('stale');
  after.data_health_flags = JSON.stringify(sortFlags(flags));

  if (before) {
    const { id, organization_id: _o, created_at: _c, ...set } = after;
    await trx.updateTable('contacts').set(set).where('id', '=', id).where('organization_id', '=', org).execute();
    delta.row(before, -1);
  } else {
    await trx.insertInto('contacts').values(after).execute();
  }
  delta.row(after, 1);
  await syncFlagRows(trx, org, after.id, before ? parseList(before.data_health_flags) : [], parseList(after.data_health_flags));

  for (const o of others) await setDuplicate(trx, org, o, true, delta);
  if (oldKey && oldKey !== newKey) await settleGroup(trx, org, oldKey, after.id, delta);
  return after;
}

/** After a contact left the group `key`: a lone remaining member is no longer a duplicate. */
async function settleGroup(trx: Kysely<Database>, org: string, key: string, leaving: string, delta: FacetDelta) {
  const rest = await trx.selectFrom('contacts').select(['id', 'data_health_flags']).where('organization_id', '=', org)
    .where('email_dedupe_key', '=', key).where('id', '!=', leaving).limit(2).execute();
  if (rest.length === 1) await setDuplicate(trx, org, rest[0], false, delta);
}

async function removeContact(trx: Kysely<Database>, org: string, before: Row, delta: FacetDelta) {
  await trx.deleteFrom('contact_flags').where('organization_id', '=', org).where('contact_id', '=', before.id).execute();
  await trx.deleteFrom('contacts').where('id', '=', before.id).where('organization_id', '=', org).execute();
  delta.row(before, -1);
  if (before.email_dedupe_key) await settleGroup(trx, org, before.email_dedupe_key, before.id, delta);
}

const duplicateEmail = () => conflict({ email: 'Another contact of this organization has this e-mail address' }, 'Duplicate e-mail');

async function rowById(db: Kysely<Database>, org: string, id: string): Promise<Row> {
  const row = noNul(id) ? await db.selectFrom('contacts').selectAll().where('id', '=', id).where('organization_id', '=', org).executeTakeFirst() : undefined;
  if (!row) throw notFound('Contact');
  return row;
}

async function emailTaken(trx: Kysely<Database>, org: string, email: string | null | undefined, exceptId?: string): Promise<boolean> {
  if (!email) return false;
  let q = trx.selectFrom('contacts').select('id').where('organization_id', '=', org).where('email_normalized', '=', normalizeEmail(email));
  if (exceptId) q = q.where('id', '!=', exceptId);
  return !!(await q.executeTakeFirst());
}

// ---------------------------------------------------------------------------------------------
// One contact (the REST procedures)

export async function getContact(ctx: Ctx, id: string): Promise<Contact> {
  return present(await rowById(ctx.deps.db.kysely, ctx.actor!.organizationId, id));
}

export function createContact(ctx: Ctx, input: ContactInput): Promise<Contact> {
  return createContactIn(ctx.deps, ctx.actor!.organizationId, input);
}

export function updateContact(ctx: Ctx, id: string, input: ContactInput): Promise<Contact> {
  return updateContactIn(ctx.deps, ctx.actor!.organizationId, id, input);
}

export function deleteContact(ctx: Ctx, id: string): Promise<{ id: string; deleted: true }> {
  return deleteContactIn(ctx.deps, ctx.actor!.organizationId, id);
}

const needsNameOrEmail = () => badRequest({ name: 'A contact needs a name or an e-mail', email: 'A contact needs a name or an e-mail' });

/**
 * The writes of one contact for any caller (jobs and webhooks too: bounces, unsubscribes, lead
 * scores), so that derived fields, flags and counts stay right. 400 / 404 / 409 as AppErrors.
 */
export async function createContactIn(deps: Deps, org: string, input: ContactInput): Promise<Contact> {
  const changes = columnsOf(input);
  if (!changes.name && !changes.email) throw needsNameOrEmail();
  const db = deps.db.kysely;
  if (await emailTaken(db, org, changes.email)) throw duplicateEmail();
  const analysis = changes.email ? await analyse(deps, changes.email, WRITE_DNS_BUDGET_MS) : null;
  let row: Row;
  try {
    row = await db.transaction().execute(async (trx) => {
      await lockContacts(deps, trx, org);
      if (await emailTaken(trx, org, changes.email)) throw duplicateEmail();
      const delta = new FacetDelta();
      const r = await saveContact(trx, org, null, changes, analysis, delta);
      await delta.flush(trx, org);
      return r;
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw duplicateEmail();
    throw err;
  }
  deps.counts.invalidate(org, 'contacts');
  return present(row);
}

/** Applies the fields present in `input` (null clears). */
export async function updateContactIn(deps: Deps, org: string, id: string, input: ContactInput): Promise<Contact> {
  const db = deps.db.kysely;
  const current = await rowById(db, org, id);
  const changes = columnsOf(input);
  const email = 'email' in changes ? changes.email : current.email;
  if ('email' in changes && await emailTaken(db, org, email, id)) throw duplicateEmail();
  const analysis = needsAnalysis(current, email ?? null) ? await analyse(deps, email!, WRITE_DNS_BUDGET_MS) : null;
  let row: Row;
  try {
    row = await db.transaction().execute(async (trx) => {
      await lockContacts(deps, trx, org);
      const before = await rowById(trx, org, id);
      if (!('name' in changes ? changes.name : before.name) && !('email' in changes ? changes.email : before.email)) throw needsNameOrEmail();
      if ('email' in changes && await emailTaken(trx, org, email, id)) throw duplicateEmail();
      const delta = new FacetDelta();
      const r = await saveContact(trx, org, before, changes, analysis, delta);
      await delta.flush(trx, org);
      return r;
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw duplicateEmail();
    throw err;
  }
  return present(row);
}

export async function deleteContactIn(deps: Deps, org: string, id: string): Promise<{ id: string; deleted: true }> {
  const db = deps.db.kysely;
  await db.transaction().execute(async (trx) => {
    await lockContacts(deps, trx, org);
    const before = await rowById(trx, org, id);
    const delta = new FacetDelta();
    await removeContact(trx, org, before, delta);
    await delta.flush(trx, org);
  });
  deps.counts.invalidate(org, 'contacts');
  return { id, deleted: true };
}

// ---------------------------------------------------------------------------------------------
// Lists

/** The prefix range of a term: `>= term AND < term + U+10FFFF` is "starts with term" in code-point order. */
const upper = (term: string) => `${term}\u{10FFFF}`;

/**
 * Search design. `search` is a prefix of the name (any case, accents ignored: `name_key`) or of
 * the e-mail (`email_normalized`), matched by ranges on two indexes — (organization_id, name_key,
 * id) and (organization_id, email_normalized, id) — never by a scan of the organization's rows:
 * a LIKE '%term%' would read all of them (a million rows take about a second). Both columns
 * compare in code-point order (SQLite's BINARY, PostgreSQL's COLLATE "C"), so a range is exactly
 * a prefix match. The cost is that "smith" does not find "John Smith" (a prefix of the full name
 * or of the address is needed), which keeps every query an index range.
 *
 * PostgreSQL's planner picks between a bitmap OR of the two ranges and an id-ordered scan from
 * its statistics. SQLite has no statistics by default and always prefers the id-ordered scan,
 * which is fast when many rows match and reads the whole organization when few do; so on SQLite
 * a bounded count of each range (at most `searchTuning.probe` index entries) decides: few matches → the
 * ids come from the two ranges (`id IN (… UNION ALL …)`, read from the indexes alone), many →
 * the id-ordered scan stops after a page.
 */
/** The SQLite plan threshold (see above); a setting so that tests can take either path. */
export const searchTuning = { probe: 20_000 };

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ContactQuery = SelectQueryBuilder<Database, 'contacts', any>;

async function applySearch(deps: Deps, org: string, q: ContactQuery, search: string): Promise<ContactQuery> {
  const nk = nameKey(search);
  const ek = normalizeEmail(search);
  const ranges: Array<['name_key' | 'email_normalized', string]> = [];
  if (nk) ranges.push(['name_key', nk]);
  if (ek) ranges.push(['email_normalized', ek]);
  if (!ranges.length) return q;
  const db = deps.db.kysely;
  const range = (col: 'name_key' | 'email_normalized', t: string) =>
    db.selectFrom('contacts').select('id').where('organization_id', '=', org).where(col, '>=', t).where(col, '<', upper(t));
  if (deps.db.dialect === 'sqlite') {
    let hits = 0;
    for (const [col, t] of ranges) {
      const r = await db.selectFrom(range(col, t).limit(searchTuning.probe).as('p')).select((eb) => eb.fn.countAll().as('n')).executeTakeFirst();
      hits += Number(r?.n ?? 0);
    }
    if (hits < searchTuning.probe) {
      const ids = ranges.length === 2 ? range(...ranges[0]).unionAll(range(...ranges[1])) : range(...ranges[0]);
      return q.where('contacts.id', 'in', ids);
    }
  }
  return q.where((eb) => eb.or(ranges.map(([col, t]) => eb.and([eb(`contacts.${col}`, '>=', t), eb(`contacts.${col}`, '<', upper(t))]))));
}

/**
 * Flag-filter plans (see filteredQuery and listQuery): up to `inListMax` contacts with a flag, the
 * flag filter looks them up by id; `drive` lets lists and exports read the page from the flag's
 * own key (off: the contacts-first plans, so that tests can compare them).
 */
export const flagTuning = { inListMax: 5000, drive: true };

/** The organization's contacts matching the filters (no order, no limit), every column. */
export async function filteredQuery(deps: Deps, org: string, f: ContactFilters): Promise<ContactQuery> {
  return contactsFirst(deps, org, f, deps.db.kysely.selectFrom('contacts').selectAll('contacts'));
}

/** The columns `present` and the export read: the API's 23 fields (not the 4 search and dedupe keys). */
const API_COLUMNS = [
  'id', 'name', 'email', 'phone', 'company', 'title', 'city', 'state', 'country', 'tags', 'custom_fields', 'source',
  'lead_score', 'lead_score_reasons', 'unsubscribed', 'bounced', 'esp', 'esg', 'email_validity', 'data_health_flags',
  'email_checked_at', 'created_at', 'updated_at',
] as const;
const apiColumns = API_COLUMNS.map((c) => `contacts.${c}` as const);
/** A row as the list and the export read it. */
export type ApiRow = Pick<Row, (typeof API_COLUMNS)[number]>;

/** The equality filters that are set, as [column, value]. */
function equalityFilters(f: ContactFilters): Array<['city' | 'esp' | 'esg' | 'email_validity', string]> {
  const out: Array<['city' | 'esp' | 'esg' | 'email_validity', string]> = [];
  for (const col of ['city', 'esp', 'esg', 'email_validity'] as const) {
    const v = f[col];
    if (v) out.push([col, v]);
  }
  return out;
}

/** The filters on a query that reads `contacts`; flags looked up by id or probed (see below), search. */
async function contactsFirst(deps: Deps, org: string, f: ContactFilters, from: ContactQuery): Promise<ContactQuery> {
  const db = deps.db.kysely;
  let q: ContactQuery = from.where('contacts.organization_id', '=', org);
  for (const [col, v] of equalityFilters(f)) q = q.where(`contacts.${col}`, '=', v);
  for (const flag of new Set(f.data_health_flags ?? [])) {
    // A rare flag: look its few contacts up by id. A common one: walk the contacts newest first
    // and probe the flag's primary key for each (a page needs about 51 / share rows), instead of
    // materializing every flagged id on every page. The maintained count tells which.
    const n = await facetCount(db, org, 'data_health_flag', flag);
    q = n <= flagTuning.inListMax
      ? q.where('contacts.id', 'in', db.selectFrom('contact_flags').select('contact_id').where('organization_id', '=', org).where('flag', '=', flag))
      : q.where((eb) => eb.exists(eb.selectFrom('contact_flags as cf').select(sql.lit(1).as('one'))
        .where('cf.organization_id', '=', org).where('cf.flag', '=', flag).whereRef('cf.contact_id', '=', 'contacts.id')));
  }
  if (f.search?.trim()) q = await applySearch(deps, org, q, f.search.trim());
  return q;
}

/** The one facet whose maintained count is the count of this filter set, if there is one. */
function facetOfFilters(f: ContactFilters): [string, string] | null {
  if (f.search?.trim()) return null;
  const flags = [...new Set(f.data_health_flags ?? [])];
  const set: Array<[string, string]> = [];
  if (f.city) set.push(['city', f.city]);
  if (f.esp) set.push(['esp', f.esp]);
  if (f.esg) set.push(['esg', f.esg]);
  if (f.email_validity) set.push(['email_validity', f.email_validity]);
  for (const flag of flags) set.push(['data_health_flag', flag]);
  if (set.length === 0) return ['total', ''];
  return set.length === 1 ? set[0] : null;
}

async function facetCount(db: Kysely<Database>, org: string, facet: string, value: string): Promise<number> {
  const r = await db.selectFrom('contact_facets').select('count').where('organization_id', '=', org).where('facet', '=', facet).where('value', '=', value).executeTakeFirst();
  return Math.max(0, Number(r?.count ?? 0));
}

/** The count-cache key of a filter set: the filters themselves, normalised. */
function countKeyOf(f: ContactFilters): string {
  return JSON.stringify([f.search?.trim() || null, f.city ?? null, f.esp ?? null, f.esg ?? null, f.email_validity ?? null, [...new Set(f.data_health_flags ?? [])].sort()]);
}

/**
 * The list's and the export's query: the filtered contacts (API columns), and the column that
 * orders and pages them (newest first) — `contacts.id`, or the driving flag row's `contact_id`,
 * which is the same value.
 *
 * With a flag and no search, when the flag has no more contacts than any other filter value
 * (maintained counts), the flag's own key drives: `contact_flags` read along its primary key
 * (organization_id, flag, contact_id) in contact-id order, each entry joined to its contact, so a
 * page reads about 51 flag entries whatever the flag's count (about 0.7 ms at a million contacts,
 * against 2–14 ms for probing the flag while walking the contacts, and more for materializing
 * every flagged id). CROSS JOIN keeps that loop order on SQLite, whose planner (no statistics)
 * would otherwise start from the contacts and sort; PostgreSQL plans it from its statistics. The
 * rarest flag drives; other flags are probed on their key, other filters checked on the row.
 * `flagCount` is the driving flag's maintained count (a single flag's list count).
 */
async function listQuery(deps: Deps, org: string, f: ContactFilters, columns: 'all' | 'api'): Promise<{ query: ContactQuery; idColumn: string; flagCount?: number }> {
  const db = deps.db.kysely;
  // Lists select every column: naming 23 columns costs Kysely ~100 µs more per request to build
  // and compile than `contacts.*`, more than reading 4 more short columns for 50 rows. An export
  // builds one query per batch and reads a million rows: there the 23 columns pay.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const select = (q: SelectQueryBuilder<any, any, any>) => (columns === 'all' ? q.selectAll('contacts') : q.select(apiColumns)) as ContactQuery;
  const flags = [...new Set(f.data_health_flags ?? [])];
  if (flagTuning.drive && flags.length && !f.search?.trim()) {
    const counts = await Promise.all(flags.map((flag) => facetCount(db, org, 'data_health_flag', flag)));
    const i = counts.indexOf(Math.min(...counts));
    const others = equalityFilters(f);
    let smallest = Infinity;
    for (const [facet, v] of others) smallest = Math.min(smallest, await facetCount(db, org, facet, v));
    if (counts[i] <= smallest) {
      let q = select(db.selectFrom('contact_flags as cf').crossJoin('contacts')
        .where('cf.organization_id', '=', org).where('cf.flag', '=', flags[i])
        .whereRef('contacts.id', '=', 'cf.contact_id').where('contacts.organization_id', '=', org));
      for (const [col, v] of others) q = q.where(`contacts.${col}`, '=', v);
      for (const flag of flags) {
        if (flag === flags[i]) continue;
        q = q.where((eb) => eb.exists(eb.selectFrom('contact_flags as cf2').select(sql.lit(1).as('one'))
          .where('cf2.organization_id', '=', org).where('cf2.flag', '=', flag).whereRef('cf2.contact_id', '=', 'contacts.id')));
      }
      return { query: q, idColumn: 'cf.contact_id', flagCount: counts[i] };
    }
  }
  return { query: await contactsFirst(deps, org, f, select(db.selectFrom('contacts'))), idColumn: 'contacts.id' };
}

export async function listContacts(ctx: Ctx, input: PageInput & ContactFilters) {
  const org = ctx.actor!.organizationId;
  const deps = ctx.deps;
  const { query, idColumn, flagCount } = await listQuery(deps, org, input, 'all');
  const countKey = countKeyOf(input);
  // No filter, or one: the maintained facet count is the list's count, so these lists never count rows.
  const facet = facetOfFilters(input);
  const count = !facet ? undefined
    : facet[0] === 'data_health_flag' && flagCount !== undefined ? () => Promise.resolve(flagCount)
      : () => facetCount(deps.db.kysely, org, facet[0], facet[1]);
  return paginate(ctx, { query, table: 'contacts', scope: org, input, idColumn, countKey, count }, present);
}

/** Reads the next batch: synchronously when it can (SQLite outside a transaction), else a promise; an empty batch at the end. */
export type ContactBatches = () => ApiRow[] | Promise<ApiRow[]>;

/**
 * The filtered contacts (API columns as stored: JSON text, 0/1), newest first, in keyset batches
 * of `size` rows, each batch one indexed range read after the last id of the one before. On
 * SQLite outside a transaction a batch is read synchronously (`Db.readNow`), so that a stream can
 * read a batch, turn it into output and hand it on in one go: the rows die young, in the garbage
 * collector's nursery, instead of waiting in stream buffers across many event-loop turns until
 * they are promoted (which is what made the export's memory grow). Otherwise through Kysely.
 * Each batch is a fresh short read: no transaction is held open for the export's duration.
 */
export async function contactBatches(deps: Deps, org: string, f: ContactFilters, size = 500): Promise<ContactBatches> {
  const { query, idColumn } = await listQuery(deps, org, f, 'api');
  let last: string | null = null;
  let done = false;
  const took = (rows: ApiRow[]) => {
    if (rows.length < size) done = true;
    else last = rows[rows.length - 1].id;
    return rows;
  };
  return () => {
    if (done) return [];
    let q = query.orderBy(sql.ref(idColumn), 'desc').limit(size);
    if (last !== null) q = q.where(sql.ref(idColumn), '<', last);
    const compiled = q.compile();
    const rows = deps.db.readNow?.(compiled.sql, compiled.parameters);
    if (rows) return took(rows as ApiRow[]);
    return deps.db.kysely.executeQuery(compiled).then((r) => took(r.rows as ApiRow[]));
  };
}

/** The filtered contacts, newest first, read in keyset batches: memory stays flat whatever the count. */
export async function* iterateContacts(deps: Deps, org: string, f: ContactFilters, batch = 1000): AsyncGenerator<Contact> {
  const next = await contactBatches(deps, org, f, batch);
  for (;;) {
    const rows = await next();
    for (const r of rows) yield present(r);
    if (rows.length < batch) return;
    // Between batches, let other requests run (SQLite answers synchronously).
    await new Promise((r) => setImmediate(r));
  }
}

// ---------------------------------------------------------------------------------------------
// Filter options

export const FACETS = {
  cities: 'city', esps: 'esp', esgs: 'esg', email_validity: 'email_validity', data_health_flags: 'data_health_flag',
} as const;
export type FacetName = keyof typeof FACETS;

const VOCABULARY: Partial<Record<FacetName, readonly string[]>> = {
  esps: ESPS, esgs: ESGS, email_validity: EMAIL_VALIDITY, data_health_flags: DATA_HEALTH_FLAGS,
};

function pageLink(ctx: Ctx, page: number): string {
  const u = new URL(ctx.url, ctx.baseUrl);
  u.searchParams.set('page', String(page));
  return u.toString();
}

/**
 * One filter's values with their contact counts, from the maintained counts (never a GROUP BY
 * over the contacts). Closed vocabularies (esps, esgs, email validity, data-health flags) list
 * every value, zeros included, so a client learns what it may filter by; cities list the values
 * in use. Ordered by count (highest first), then value. DRF envelope, `page`/`page_size`.
 */
export async function listFacet(ctx: Ctx, name: FacetName, input: { page?: number; page_size?: number }) {
  const org = ctx.actor!.organizationId;
  const facet = FACETS[name];
  const page = input.page ?? 1;
  const size = input.page_size ?? 100;
  const db = ctx.deps.db.kysely;
  const vocabulary = VOCABULARY[name];
  let count: number;
  let results: { value: string; count: number }[];
  if (vocabulary) {
    const rows = await db.selectFrom('contact_facets').select(['value', 'count']).where('organization_id', '=', org).where('facet', '=', facet).execute();
    const counts = new Map(rows.map((r) => [r.value, Math.max(0, Number(r.count))]));
    const all = vocabulary.map((value) => ({ value, count: counts.get(value) ?? 0 }))
      .sort((a, b) => b.count - a.count || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0));
    count = all.length;
    results = all.slice((page - 1) * size, page * size);
  } else {
    const base = db.selectFrom('contact_facets').where('organization_id', '=', org).where('facet', '=', facet).where('count', '>', 0);
    const [c, rows] = await Promise.all([
      base.select((eb) => eb.fn.countAll().as('n')).executeTakeFirst(),
      base.select(['value', 'count']).orderBy('count', 'desc').orderBy('value', 'asc').limit(size).offset((page - 1) * size).execute(),
    ]);
    count = Number(c?.n ?? 0);
    results = rows.map((r) => ({ value: r.value, count: Number(r.count) }));
  }
  return {
    count,
    next: page * size < count ? pageLink(ctx, page + 1) : null,
    previous: page > 1 ? pageLink(ctx, Math.min(page - 1, Math.max(1, Math.ceil(count / size)))) : null,
    results,
  };
}

// ---------------------------------------------------------------------------------------------
// Bulk: upsert by e-mail (imports, inline enrollments) and the re-check

export interface UpsertOptions {
  /** Run the DNS analysis (default true); false stores `unknown` for the re-check to settle. */
  checkEmail?: boolean;
  /** Time allowed for the DNS analyses of one batch (default 5000 ms). */
  dnsBudgetMs?: number;
  /** Rows per transaction (default 500). */
  batchSize?: number;
}
export interface UpsertResult { created: number; updated: number; results: { index: number; id?: string; error?: string }[] }

function describeIssues(err: z.ZodError): string {
  return Object.entries(zodDetails(err)).map(([k, v]) => `${k}: ${v}`).join('; ');
}

/** Runs `fn` over `items` with at most `limit` at a time. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  });
  await Promise.all(workers);
}

/**
 * Creates or updates contacts by e-mail (case-insensitive), `batchSize` rows per transaction.
 * Each row is validated on its own (CSV-style strings are accepted: '' means "not given",
 * "85", "true", "a, b"); a bad row is reported in `results` with the fields at fault and the
 * others are written. A row without an e-mail is an error (it cannot be matched). Present
 * fields replace the stored ones; absent fields are kept.
 */
export async function upsertContacts(deps: Deps, organizationId: string, rows: readonly unknown[], opts: UpsertOptions = {}): Promise<UpsertResult> {
  const org = organizationId;
  const out: UpsertResult = { created: 0, updated: 0, results: [] };
  const size = Math.max(1, opts.batchSize ?? UPSERT_BATCH);
  for (let start = 0; start < rows.length; start += size) {
    const items: { index: number; changes: Partial<Row> }[] = [];
    for (let i = start; i < Math.min(rows.length, start + size); i++) {
      const parsed = importRow.safeParse(rows[i]);
      if (!parsed.success) { out.results.push({ index: i, error: describeIssues(parsed.error) }); continue; }
      const changes = columnsOf(parsed.data as ContactInput);
      if (!changes.email) { out.results.push({ index: i, error: 'email: Required (contacts are matched by e-mail)' }); continue; }
      items.push({ index: i, changes });
    }
    if (!items.length) continue;
    const r = await upsertBatch(deps, org, items, opts);
    out.created += r.created;
    out.updated += r.updated;
    out.results.push(...r.results);
  }
  out.results.sort((a, b) => a.index - b.index);
  if (out.created) deps.counts.invalidate(org, 'contacts');
  return out;
}

async function upsertBatch(deps: Deps, org: string, items: { index: number; changes: Partial<Row> }[], opts: UpsertOptions): Promise<UpsertResult> {
  const db = deps.db.kysely;
  const emails = [...new Set(items.map((it) => normalizeEmail(it.changes.email!)))];
  // Outside the transaction: which addresses need DNS (new, unknown or stale), and the analyses.
  const existing = new Map<string, Row>();
  for (let i = 0; i < emails.length; i += 500) {
    const found = await db.selectFrom('contacts').selectAll().where('organization_id', '=', org).where('email_normalized', 'in', emails.slice(i, i + 500)).execute();
    for (const r of found) existing.set(r.email_normalized!, r);
  }
  const analyses = new Map<string, Analysed>();
  const toCheck = emails.filter((e) => needsAnalysis(existing.get(e) ?? null, e));
  const deadline = Date.now() + (opts.dnsBudgetMs ?? 5000);
  const useDns = opts.checkEmail !== false;
  await eachLimited(toCheck, DNS_CONCURRENCY, async (e) => {
    const left = deadline - Date.now();
    analyses.set(e, await analyse(deps, e, useDns && left > 0 ? left : 0));
  });

  const writeRows = async (trx: Kysely<Database>, batch: typeof items) => {
    await lockContacts(deps, trx, org);
    const current = new Map<string, Row>();
    const keys = [...new Set(batch.map((it) => normalizeEmail(it.changes.email!)))];
    for (let i = 0; i < keys.length; i += 500) {
      for (const r of await trx.selectFrom('contacts').selectAll().where('organization_id', '=', org).where('email_normalized', 'in', keys.slice(i, i + 500)).execute()) {
        current.set(r.email_normalized!, r);
      }
    }
    const delta = new FacetDelta();
    const res: UpsertResult = { created: 0, updated: 0, results: [] };
    const written = new Set<string>();
    for (const it of batch) {
      const key = normalizeEmail(it.changes.email!);
      // A contact written earlier in this batch is read again: a later row may have changed its
      // flags (duplicate_email) since.
      const before = written.has(key)
        ? (await trx.selectFrom('contacts').selectAll().where('organization_id', '=', org).where('email_normalized', '=', key).executeTakeFirst()) ?? null
        : current.get(key) ?? null;
      const row = await saveContact(trx, org, before, it.changes, analyses.get(key) ?? null, delta);
      written.add(key);
      if (before) res.updated++; else res.created++;
      res.results.push({ index: it.index, id: row.id });
    }
    await delta.flush(trx, org);
    return res;
  };

  try {
    return await db.transaction().execute((trx) => writeRows(trx, items));
  } catch (err) {
    // One row failed the whole batch: write them one by one so that only it is reported.
    deps.log.warn({ err, org }, 'contact upsert batch failed; retrying row by row');
    const res: UpsertResult = { created: 0, updated: 0, results: [] };
    for (const it of items) {
      try {
        const r = await db.transaction().execute((trx) => writeRows(trx, [it]));
        res.created += r.created;
        res.updated += r.updated;
        res.results.push(...r.results);
      } catch (e) {
        res.results.push({ index: it.index, error: isUniqueViolation(e) ? 'email: Another contact of this organization has this e-mail address' : 'Could not be saved' });
      }
    }
    return res;
  }
}

export interface RecheckOptions {
  organizationId?: string;
  /** Re-analyse contacts whose last conclusive check is older than this (default: 180 days ago). */
  olderThan?: Date;
  limit: number;
  /** Time allowed per DNS analysis (default: the resolver's own timeout). */
  timeoutMs?: number;
  /** Stops starting new analyses once aborted (a job's shutdown). */
  signal?: AbortSignal;
}

/**
 * Re-analyses the e-mails of contacts whose analysis is `unknown` (least recently written first)
 * or older than `olderThan` (oldest first), at most `limit` of them, and stores what changed.
 */
export async function recheckContacts(deps: Deps, opts: RecheckOptions): Promise<{ checked: number; changed: number; unknown: number }> {
  const db = deps.db.kysely;
  const limit = Math.max(0, Math.floor(opts.limit));
  const cutoff = (opts.olderThan ?? new Date(Date.now() - STALE_AFTER_DAYS * DAY_MS)).toISOString();
  const scope = <Q extends ContactQuery>(q: Q): Q => (opts.organizationId ? q.where('organization_id', '=', opts.organizationId) as Q : q);
  const unknown = limit ? await scope(db.selectFrom('contacts').selectAll()).where('email_validity', '=', 'unknown')
    .orderBy('updated_at', 'asc').limit(limit).execute() : [];
  const stale = limit - unknown.length > 0
    ? await scope(db.selectFrom('contacts').selectAll()).where('email_checked_at', '<', cutoff).where('email_normalized', 'is not', null)
      .orderBy('email_checked_at', 'asc').limit(limit - unknown.length).execute()
    : [];
  const candidates = [...unknown, ...stale];
  let changed = 0;
  let stillUnknown = 0;
  let checked = 0;
  await eachLimited(candidates, DNS_CONCURRENCY, async (c) => {
    if (opts.signal?.aborted) return;
    checked++;
    const a = await analyse(deps, c.email!, opts.timeoutMs);
    if (a.result.email_validity === 'unknown') stillUnknown++;
    const did = await db.transaction().execute(async (trx) => {
      await lockContacts(deps, trx, c.organization_id);
      const before = await trx.selectFrom('contacts').selectAll().where('id', '=', c.id).executeTakeFirst();
      if (!before || before.email_normalized !== a.email) return false;
      const delta = new FacetDelta();
      const after = await saveContact(trx, c.organization_id, before, {}, a, delta);
      await delta.flush(trx, c.organization_id);
      return after.email_validity !== before.email_validity || after.esp !== before.esp || after.data_health_flags !== before.data_health_flags;
    });
    if (did) changed++;
  });
  return { checked, changed, unknown: stillUnknown };
}

/** Job `contacts.recheck` (on demand): payload `{ organization_id?, limit? (default 500, at most 10000), older_than? (ISO) }`. */
export const RECHECK_JOB = 'contacts.recheck';
/** Job `contacts.recheck_due`: every hour, the 500 most overdue contacts of all organizations. */
export const RECHECK_DUE_JOB = 'contacts.recheck_due';

defineJob(RECHECK_JOB, async ({ deps, job, signal }) => {
  const p = job.payload as { organization_id?: unknown; limit?: unknown; older_than?: unknown };
  const organizationId = typeof p.organization_id === 'string' ? p.organization_id : job.organization_id ?? undefined;
  const limit = typeof p.limit === 'number' && p.limit > 0 ? Math.min(Math.floor(p.limit), 10_000) : 500;
  const olderThan = typeof p.older_than === 'string' && !Number.isNaN(Date.parse(p.older_than)) ? new Date(p.older_than) : undefined;
  return recheckContacts(deps, { organizationId, limit, olderThan, signal });
});
defineRecurringJob(RECHECK_DUE_JOB, 60 * 60 * 1000, ({ deps, signal }) => recheckContacts(deps, { limit: 500, signal }));
