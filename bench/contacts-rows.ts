/**
 * The rows of the contacts seed (bench/contacts-seed.ts), in chunks that worker threads generate
 * in parallel (bench/contacts-gen-worker.ts): each contact as the contacts service stores it, its
 * flag rows and its share of the maintained facet counts.
 */
import { newId } from '../src/ids.js';
import { analyzeEmail, analyzeSyntax, type EmailAnalysis } from '../src/services/email_intel.js';
import { DATA_HEALTH_FLAGS, dedupeKey, nameKey, normalizeEmail, STALE_AFTER_DAYS } from '../src/services/contacts.js';
import { CHUNK, isRoleAccount, memoryResolver, rng, streamChunk, type GenContact, type World } from './contacts-data.js';

const DAY = 86_400_000;
const FLAG_ORDER = new Map<string, number>(DATA_HEALTH_FLAGS.map((f, i) => [f, i]));
const sortFlags = (flags: string[]) => [...new Set(flags)].sort((a, b) => FLAG_ORDER.get(a)! - FLAG_ORDER.get(b)!);
/** The seed stream's random seed (the import file reuses it to find existing e-mails). */
export const SEED_STREAM = 1;

export type ContactRow = {
  id: string; organization_id: string; name: string | null; name_key: string | null; email: string | null;
  email_normalized: string | null; email_dedupe_key: string | null; phone: string | null; company: string | null;
  title: string | null; city: string | null; state: string | null; country: string | null; tags: string; custom_fields: string;
  source: string | null; lead_score: number | null; lead_score_reasons: string; unsubscribed: number; bounced: number;
  esp: string | null; esg: string | null; email_validity: string | null; data_health_flags: string;
  email_checked_at: string | null; created_at: string; updated_at: string;
};

/** The analyses of every (domain, role account or not, DNS timed out or not), computed by the service's analyzeEmail. */
export async function analysisTable(w: World): Promise<Map<string, EmailAnalysis>> {
  const resolver = memoryResolver(w);
  const out = new Map<string, EmailAnalysis>();
  for (const domain of w.byDomain.keys()) {
    for (const role of [false, true]) {
      const email = `${role ? 'info' : 'jane.doe1'}@${domain}`;
      out.set(`${domain}|${role}|0`, await analyzeEmail(resolver, email));
      out.set(`${domain}|${role}|1`, await analyzeEmail(null, email));
    }
  }
  return out;
}

const nameKeys = new Map<string, string>();
const nameKeyOf = (name: string) => {
  let k = nameKeys.get(name);
  if (k === undefined) { k = nameKey(name); nameKeys.set(name, k); }
  return k;
};

/**
 * The stored row and flags of a generated contact, as saveContact (src/services/contacts.ts)
 * derives them for a create whose e-mail analysis is `analysis`, at time `nowMs`.
 */
export function derive(
  g: GenContact, id: string, org: string, analyses: Map<string, EmailAnalysis>,
  times: { created: number; updated: number; checked: number; now: number },
): { row: ContactRow; flags: string[] } {
  const i = g.input;
  const email = i.email;
  let a: EmailAnalysis | null = null;
  if (email) {
    if (g.domain) {
      const local = email.slice(0, email.lastIndexOf('@'));
      a = analyses.get(`${g.domain}|${isRoleAccount(local)}|${g.dnsUnknown ? 1 : 0}`)!;
    } else {
      const s = analyzeSyntax(email);
      if (s.parsed) throw new Error(`seed bug: ${email} is well-formed but has no domain`);
      a = { email_validity: 'invalid', esp: null, esg: null, flags: s.flags };
    }
  }
  const emailNormalized = email ? normalizeEmail(email) : null;
  const conclusive = !!a && a.email_validity !== 'unknown';
  const checked = conclusive ? times.checked : null;
  const flags: string[] = a ? [...a.flags] : [];
  if (!i.name) flags.push('missing_name');
  if (!emailNormalized) flags.push('missing_email');
  if (g.duplicate) flags.push('duplicate_email');
  if (i.bounced) flags.push('bounced');
  if (i.unsubscribed) flags.push('unsubscribed');
  if (emailNormalized && (checked ?? times.created) < times.now - STALE_AFTER_DAYS * DAY) flags.push('stale');
  const sorted = sortFlags(flags);
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    row: {
      id, organization_id: org, name: i.name, name_key: i.name ? nameKeyOf(i.name) : null,
      email, email_normalized: emailNormalized, email_dedupe_key: email ? dedupeKey(email) : null,
      phone: i.phone, company: i.company, title: i.title, city: i.city, state: i.state, country: i.country,
      tags: JSON.stringify([...new Set(i.tags.map((t) => t.trim()))]), custom_fields: JSON.stringify(i.custom_fields),
      source: i.source, lead_score: i.lead_score, lead_score_reasons: JSON.stringify(i.lead_score_reasons),
      unsubscribed: i.unsubscribed ? 1 : 0, bounced: i.bounced ? 1 : 0,
      esp: a?.esp ?? null, esg: a?.esg ?? null, email_validity: a?.email_validity ?? null,
      data_health_flags: JSON.stringify(sorted), email_checked_at: checked === null ? null : iso(checked),
      created_at: iso(times.created), updated_at: iso(times.updated),
    },
    flags: sorted,
  };
}

/** Facet counts as FacetDelta.row adds them. */
export class Facets {
  readonly map = new Map<string, number>();
  add(facet: string, value: string | null) {
    if (value === null) return;
    const k = `${facet}\u0000${value}`;
    this.map.set(k, (this.map.get(k) ?? 0) + 1);
  }
  row(r: ContactRow, flags: string[]) {
    this.add('total', '');
    this.add('city', r.city);
    this.add('esp', r.esp);
    this.add('esg', r.esg);
    this.add('email_validity', r.email_validity);
    for (const f of flags) this.add('data_health_flag', f);
  }
  rows(org: string) {
    return [...this.map].map(([k, count]) => { const [facet, value] = k.split('\u0000'); return { organization_id: org, facet, value, count }; });
  }
}

export interface ChunkParams { total: number; org: string; now: number; columns: string[] }
export interface Chunk { index: number; rows: unknown[][]; flags: Record<string, string[]>; facets: [string, number][] }

/**
 * Chunk `index` of the seed: contacts created over the three years before `now`, in order (each
 * id minted with `newId('ctc')` at its contact's creation time, so ids and created_at sort
 * together); rows as arrays in `columns` order.
 */
export function generateChunk(w: World, analyses: Map<string, EmailAnalysis>, p: ChunkParams, index: number): Chunk {
  const stream = streamChunk(w, SEED_STREAM, p.total, index);
  const t = rng(99 + index);
  const start = p.now - 3 * 365 * DAY;
  const step = (p.now - 60_000 - start) / p.total;
  const from = index * CHUNK;
  const to = Math.min(p.total, from + CHUNK);
  const facets = new Facets();
  const flags: Record<string, string[]> = Object.fromEntries(DATA_HEALTH_FLAGS.map((f) => [f, []]));
  const rows: unknown[][] = [];
  const realNow = Date.now;
  for (let g = from; g < to; g++) {
    const created = Math.floor(start + g * step + t.next() * step * 0.9);
    let id: string;
    Date.now = () => created;
    try { id = newId('ctc'); } finally { Date.now = realNow; }
    const c = stream.next(g - from);
    const age = p.now - created;
    // Checked at creation; older contacts were re-checked since (the hourly re-check), except
    // a few whose re-check failed (stale).
    const checked = age < STALE_AFTER_DAYS * DAY || t.chance(0.03) ? created : p.now - Math.floor(t.next() * (STALE_AFTER_DAYS - 1) * DAY);
    const updated = t.chance(0.7) ? created : created + Math.floor(t.next() * age);
    const d = derive(c, id, p.org, analyses, { created, updated, checked, now: p.now });
    // The re-check that set email_checked_at wrote the row.
    if (d.row.email_checked_at && Date.parse(d.row.email_checked_at) > updated) d.row.updated_at = d.row.email_checked_at;
    const r = d.row as Record<string, unknown>;
    rows.push(p.columns.map((col) => r[col]));
    facets.row(d.row, d.flags);
    for (const f of d.flags) flags[f].push(id);
  }
  return { index, rows, flags, facets: [...facets.map] };
}
