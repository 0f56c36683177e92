import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import type { DnsResolver, DnsResult } from '../integrations/dns.js';

/**
 * The DNS checks of a sending domain (MX, SPF, DKIM, DMARC) and the health score built from them.
 * Each check answers pass / warn / fail / unknown with a message; `unknown` means DNS gave no usable
 * answer (timeout, SERVFAIL…): it is never counted as a failure.
 */

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'unknown';
export const ALERT_KINDS = [
  'mx_missing', 'spf_missing', 'spf_invalid', 'dkim_missing', 'dkim_invalid', 'dmarc_missing', 'dmarc_invalid',
  'bounce_rate_high', 'complaint_rate_high',
] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];

export interface MxCheck { status: CheckStatus; message: string; hosts: string[] }
export interface SpfCheck { status: CheckStatus; message: string; record: string | null; all: string | null; lookups: number | null }
export interface DkimCheck { status: CheckStatus; message: string; selector: string; record: string | null }
export interface DmarcCheck { status: CheckStatus; message: string; record: string | null; policy: 'none' | 'quarantine' | 'reject' | null }
export interface DomainChecks { mx: MxCheck; spf: SpfCheck; dkim: DkimCheck; dmarc: DmarcCheck }

/** A check's result and, when it failed, the alert kind it raises. */
export interface Outcome<T> { result: T; failKind?: AlertKind }

type Resolver = Pick<DnsResolver, 'mx' | 'txt'>;

/** RFC 7208 §4.6.4: at most 10 mechanisms and modifiers that cause DNS lookups per SPF evaluation. */
export const SPF_LOOKUP_LIMIT = 10;
/** At most this many records are fetched to count an SPF record's lookups. */
const SPF_FOLLOW_QUERIES = 25;

// ───────────────────────────── names ─────────────────────────────

/** A hostname lower-cased and in ASCII (IDNs as punycode), or null when it is not a valid hostname. */
export function normalizeHostname(input: string): string | null {
  const raw = input.trim().replace(/\.$/, '');
  if (!raw || raw.length > 253 || isIP(raw)) return null;
  if (/[\s/:@?#[\]\\]/.test(raw)) return null;
  const ascii = domainToASCII(raw).toLowerCase();
  if (!ascii || ascii.length > 253) return null;
  const labels = ascii.split('.');
  if (labels.length < 2) return null;
  if (!labels.every((l) => /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(l))) return null;
  if (!/[a-z]/.test(labels[labels.length - 1])) return null; // the top-level label is never all digits
  return ascii;
}

/** A DKIM selector: one or more DNS labels (letters, digits, `-`, `_`), lower-cased; null when invalid. */
export function normalizeSelector(input: string): string | null {
  const s = input.trim().toLowerCase();
  if (!s || s.length > 200) return null;
  return s.split('.').every((l) => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(l)) ? s : null;
}

// ───────────────────────────── helpers ─────────────────────────────

const dnsUnknown = (r: { error: string }) => `DNS lookup failed (${r.error}); the result is unknown`;

/** `tag=value; tag=value` lists of DKIM (RFC 6376 §3.2) and DMARC (RFC 7489 §6.4) records. */
function parseTags(record: string): { tags: Map<string, string>; order: string[] } | null {
  const tags = new Map<string, string>();
  const order: string[] = [];
  for (const part of record.split(';')) {
    const t = part.trim();
    if (!t) continue;
    const eq = t.indexOf('=');
    if (eq <= 0) return null;
    const name = t.slice(0, eq).trim().toLowerCase();
    if (!/^[a-z][a-z0-9_]*$/.test(name) || tags.has(name)) return null;
    tags.set(name, t.slice(eq + 1).trim());
    order.push(name);
  }
  return { tags, order };
}

function withDeadline<T>(p: Promise<T>, deadline: number, onTimeout: () => T): Promise<T> {
  const left = deadline - Date.now();
  if (left <= 0) return Promise.resolve(onTimeout());
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<T>((resolve) => { timer = setTimeout(() => resolve(onTimeout()), left); });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

// ───────────────────────────── MX ─────────────────────────────

export async function checkMx(dns: Resolver, domain: string): Promise<Outcome<MxCheck>> {
  const r = await dns.mx(domain);
  if (r.status === 'error') return { result: { status: 'unknown', message: dnsUnknown(r), hosts: [] } };
  if (r.status === 'nxdomain') return { result: { status: 'fail', message: `${domain} does not exist in DNS`, hosts: [] }, failKind: 'mx_missing' };
  if (r.status === 'nodata') return { result: { status: 'fail', message: `${domain} has no MX records: replies and bounces cannot be received`, hosts: [] }, failKind: 'mx_missing' };
  const hosts = r.records.map((m) => m.exchange);
  // RFC 7505: a single MX with the root as exchange says the domain accepts no mail.
  if (hosts.length === 1 && hosts[0] === '') return { result: { status: 'fail', message: `${domain} publishes a null MX: it accepts no mail`, hosts: [] }, failKind: 'mx_missing' };
  return { result: { status: 'pass', message: `${hosts.length} mail server${hosts.length === 1 ? '' : 's'} found`, hosts: hosts.filter(Boolean) } };
}

// ───────────────────────────── SPF (RFC 7208) ─────────────────────────────

const isSpf = (txt: string) => /^v=spf1(\s|$)/i.test(txt.trim());

interface SpfTerms { all: string | null; includes: string[]; redirect: string | null; lookups: number; invalid: string | null }

function validIp4(s: string): boolean {
  const [addr, cidr, ...rest] = s.split('/');
  if (rest.length || isIP(addr) !== 4) return false;
  return cidr === undefined || (/^\d{1,2}$/.test(cidr) && Number(cidr) <= 32);
}
function validIp6(s: string): boolean {
  const slash = s.lastIndexOf('/');
  const addr = slash >= 0 ? s.slice(0, slash) : s;
  const cidr = slash >= 0 ? s.slice(slash + 1) : undefined;
  if (isIP(addr) !== 6) return false;
  return cidr === undefined || (/^\d{1,3}$/.test(cidr) && Number(cidr) <= 128);
}

/** The terms of one SPF record: its `all`, what it includes or redirects to, and its own lookups. */
export function parseSpf(record: string): SpfTerms {
  const out: SpfTerms = { all: null, includes: [], redirect: null, lookups: 0, invalid: null };
  const terms = record.trim().split(/\s+/).slice(1);
  for (const term of terms) {
    const m = /^([+\-~?]?)([a-z0-9]+)(.*)$/i.exec(term);
    const modifier = /^([a-z][a-z0-9_.-]*)=(.*)$/i.exec(term);
    if (modifier) {
      const name = modifier[1].toLowerCase();
      if (name === 'redirect') {
        if (!modifier[2] || out.redirect !== null) { out.invalid ??= term; continue; }
        out.redirect = modifier[2].toLowerCase();
      }
      continue; // exp= and unknown modifiers do not count (RFC 7208 §6)
    }
    if (!m) { out.invalid ??= term; continue; }
    const qualifier = m[1] || '+';
    const name = m[2].toLowerCase();
    const rest = m[3];
    switch (name) {
      case 'all':
        if (rest) out.invalid ??= term;
        else if (out.all === null) out.all = `${qualifier}all`;
        break;
      case 'include':
      case 'exists':
        if (!/^:.+$/.test(rest)) { out.invalid ??= term; break; }
        out.lookups++;
        if (name === 'include') out.includes.push(rest.slice(1).toLowerCase());
        break;
      case 'a':
      case 'mx':
        if (!/^(:[^/]+)?(\/\d{1,2})?(\/\/\d{1,3})?$/.test(rest)) { out.invalid ??= term; break; }
        out.lookups++;
        break;
      case 'ptr':
        if (rest && !/^:.+$/.test(rest)) { out.invalid ??= term; break; }
        out.lookups++;
        break;
      case 'ip4':
        if (!rest.startsWith(':') || !validIp4(rest.slice(1))) out.invalid ??= term;
        break;
      case 'ip6':
        if (!rest.startsWith(':') || !validIp6(rest.slice(1))) out.invalid ??= term;
        break;
      default:
        out.invalid ??= term;
    }
  }
  // The redirect modifier is ignored when the record has an `all` (RFC 7208 §6.1).
  if (out.all !== null) out.redirect = null;
  if (out.redirect !== null) out.lookups++;
  return out;
}

interface SpfTree { lookups: number; all: string | null; incomplete: string[]; broken: string[] }

/**
 * Counts the lookups an SPF evaluation of `domain` costs, following include: and redirect= (names
 * with macros are counted but not followed). Stops following at the deadline or after
 * SPF_FOLLOW_QUERIES queries; what was not followed is listed, and the count is then a lower bound.
 */
async function expandSpf(dns: Resolver, terms: SpfTerms, deadline: number, seen: Set<string>, budget: { queries: number }): Promise<SpfTree> {
  const tree: SpfTree = { lookups: terms.lookups, all: terms.all, incomplete: [], broken: [] };
  const targets = [...terms.includes.map((d) => ({ d, redirect: false })), ...(terms.redirect ? [{ d: terms.redirect, redirect: true }] : [])];
  for (const { d, redirect } of targets) {
    if (d.includes('%')) { tree.incomplete.push(d); continue; }
    if (seen.has(d)) { tree.broken.push(`${d} (loop)`); continue; }
    if (Date.now() >= deadline || budget.queries <= 0) { tree.incomplete.push(d); continue; }
    budget.queries--;
    const txt = await withDeadline(dns.txt(d), deadline, (): DnsResult<string> => ({ status: 'error', error: 'check deadline passed' }));
    if (txt.status === 'error') { tree.incomplete.push(d); continue; }
    const records = txt.status === 'ok' ? txt.records.filter(isSpf) : [];
    if (records.length !== 1) { tree.broken.push(`${d} (${records.length ? 'several SPF records' : 'no SPF record'})`); continue; }
    const inner = parseSpf(records[0]);
    if (inner.invalid) { tree.broken.push(`${d} (invalid term "${inner.invalid}")`); continue; }
    const sub = await expandSpf(dns, inner, deadline, new Set([...seen, d]), budget);
    tree.lookups += sub.lookups;
    tree.incomplete.push(...sub.incomplete);
    tree.broken.push(...sub.broken);
    if (redirect) tree.all = sub.all;
  }
  return tree;
}

export async function checkSpf(dns: Resolver, domain: string, deadline: number): Promise<Outcome<SpfCheck>> {
  const r = await dns.txt(domain);
  const none = { record: null, all: null, lookups: null };
  if (r.status === 'error') return { result: { status: 'unknown', message: dnsUnknown(r), ...none } };
  const records = r.status === 'ok' ? r.records.filter(isSpf) : [];
  if (records.length === 0) return { result: { status: 'fail', message: `No SPF record (TXT "v=spf1 …") at ${domain}`, ...none }, failKind: 'spf_missing' };
  if (records.length > 1) {
    return { result: { status: 'fail', message: `${records.length} SPF records at ${domain}: receivers treat this as a permanent error; publish exactly one`, ...none, record: records.join(' | ') }, failKind: 'spf_invalid' };
  }
  const record = records[0];
  const terms = parseSpf(record);
  if (terms.invalid) return { result: { status: 'fail', message: `Invalid SPF term "${terms.invalid}"`, record, all: terms.all, lookups: null }, failKind: 'spf_invalid' };
  const tree = await expandSpf(dns, terms, deadline, new Set([domain]), { queries: SPF_FOLLOW_QUERIES });
  const all = tree.all;
  const base = { record, all, lookups: tree.lookups };
  const partial = tree.incomplete.length ? ` (at least; not followed: ${tree.incomplete.join(', ')})` : '';
  if (tree.lookups > SPF_LOOKUP_LIMIT) {
    return { result: { status: 'fail', message: `SPF needs ${tree.lookups} DNS lookups${partial}; the limit is ${SPF_LOOKUP_LIMIT}`, ...base }, failKind: 'spf_invalid' };
  }
  if (tree.broken.length) {
    return { result: { status: 'fail', message: `SPF refers to names without a usable SPF record: ${tree.broken.join(', ')}`, ...base }, failKind: 'spf_invalid' };
  }
  if (all === null && terms.redirect && tree.incomplete.includes(terms.redirect)) {
    return { result: { status: 'unknown', message: `SPF delegates its policy to redirect=${terms.redirect}, which could not be read; the result is unknown`, ...base } };
  }
  if (all === '+all') return { result: { status: 'fail', message: 'SPF ends in +all: it authorizes every server on the internet', ...base }, failKind: 'spf_invalid' };
  const lookups = `${tree.lookups} DNS lookup${tree.lookups === 1 ? '' : 's'}${partial}`;
  if (all === '?all') return { result: { status: 'warn', message: `SPF ends in ?all (neutral): unauthorized servers are not rejected; use -all or ~all. ${lookups}`, ...base } };
  if (all === null) return { result: { status: 'warn', message: `SPF has no all mechanism: unauthorized servers get a neutral result; end it with -all or ~all. ${lookups}`, ...base } };
  return { result: { status: 'pass', message: `Valid SPF record ending in ${all}; ${lookups}`, ...base } };
}

// ───────────────────────────── DKIM (RFC 6376 §3.6.1) ─────────────────────────────

export async function checkDkim(dns: Resolver, domain: string, selector: string): Promise<Outcome<DkimCheck>> {
  const name = `${selector}._domainkey.${domain}`;
  const r = await dns.txt(name);
  const base = { selector, record: null };
  if (r.status === 'error') return { result: { status: 'unknown', message: dnsUnknown(r), ...base } };
  if (r.status !== 'ok') return { result: { status: 'fail', message: `No DKIM key at ${name}`, ...base }, failKind: 'dkim_missing' };
  const keys = r.records.map((text) => ({ text, parsed: parseTags(text) })).filter((k) => k.parsed && (k.parsed.tags.has('p') || k.parsed.tags.has('v')));
  if (!keys.length) return { result: { status: 'fail', message: `The TXT record at ${name} is not a DKIM key record (no p= tag)`, ...base }, failKind: 'dkim_missing' };
  const { text: record, parsed } = keys[0];
  const tags = parsed!.tags;
  const invalid = (message: string): Outcome<DkimCheck> => ({ result: { status: 'fail', message, selector, record }, failKind: 'dkim_invalid' });
  const v = tags.get('v');
  if (v !== undefined && (v !== 'DKIM1' || parsed!.order[0] !== 'v')) return invalid('v= must be the first tag and equal DKIM1');
  const p = tags.get('p');
  if (p === undefined) return invalid(`The DKIM record at ${name} has no p= (public key) tag`);
  const key = p.replace(/\s+/g, '');
  if (key === '') return invalid(`The DKIM key at ${name} is revoked (empty p=)`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(key)) return invalid(`The DKIM public key at ${name} is not valid base64`);
  const notes: string[] = [];
  if (v === undefined) notes.push('no v=DKIM1 tag');
  const k = tags.get('k')?.toLowerCase();
  if (k !== undefined && k !== 'rsa' && k !== 'ed25519') notes.push(`unknown key type k=${k}`);
  if ((tags.get('t') ?? '').split(':').map((x) => x.trim()).includes('y')) notes.push('testing mode (t=y): receivers may ignore failed signatures');
  if (keys.length > 1) notes.push(`${keys.length} key records at one selector`);
  if (notes.length) return { result: { status: 'warn', message: `DKIM key found at ${name}, but: ${notes.join('; ')}`, selector, record } };
  return { result: { status: 'pass', message: `DKIM key found at ${name}`, selector, record } };
}

// ───────────────────────────── DMARC (RFC 7489 §6.3) ─────────────────────────────

export async function checkDmarc(dns: Resolver, domain: string): Promise<Outcome<DmarcCheck>> {
  const name = `_dmarc.${domain}`;
  const r = await dns.txt(name);
  const none = { record: null, policy: null };
  if (r.status === 'error') return { result: { status: 'unknown', message: dnsUnknown(r), ...none } };
  const records = r.status === 'ok' ? r.records.filter((t) => /^v\s*=\s*DMARC1\s*(;|$)/i.test(t.trim())) : [];
  if (!records.length) return { result: { status: 'fail', message: `No DMARC record (TXT "v=DMARC1; p=…") at ${name}`, ...none }, failKind: 'dmarc_missing' };
  if (records.length > 1) return { result: { status: 'fail', message: `${records.length} DMARC records at ${name}: receivers ignore them all; publish exactly one`, ...none, record: records.join(' | ') }, failKind: 'dmarc_invalid' };
  const record = records[0];
  const parsed = parseTags(record);
  if (!parsed) return { result: { status: 'fail', message: 'The DMARC record is not a valid tag list', record, policy: null }, failKind: 'dmarc_invalid' };
  const p = parsed.tags.get('p')?.toLowerCase();
  if (p !== 'none' && p !== 'quarantine' && p !== 'reject') {
    return { result: { status: 'fail', message: p === undefined ? 'The DMARC record has no p= policy' : `Unknown DMARC policy p=${p}`, record, policy: null }, failKind: 'dmarc_invalid' };
  }
  const pct = parsed.tags.get('pct');
  const partial = pct !== undefined && /^\d+$/.test(pct) && Number(pct) < 100 ? ` for ${Number(pct)}% of failing mail` : '';
  if (p === 'none') return { result: { status: 'warn', message: 'DMARC policy is none: monitoring only, failing mail is still delivered; move to quarantine or reject', record, policy: p } };
  return { result: { status: 'pass', message: `DMARC policy is ${p}${partial}`, record, policy: p } };
}

// ───────────────────────────── all checks, bounded ─────────────────────────────

/**
 * Runs the four checks in parallel. Each is bounded by `deadline` (an epoch ms); a check still
 * waiting then is `unknown`, like any other failure to get an answer.
 */
export async function runDomainChecks(dns: Resolver, domain: string, selector: string, deadline: number): Promise<{ [K in keyof DomainChecks]: Outcome<DomainChecks[K]> }> {
  const late = 'The check did not finish in time; the result is unknown';
  const [mx, spf, dkim, dmarc] = await Promise.all([
    withDeadline(checkMx(dns, domain), deadline, () => ({ result: { status: 'unknown' as const, message: late, hosts: [] } })),
    withDeadline(checkSpf(dns, domain, deadline), deadline, () => ({ result: { status: 'unknown' as const, message: late, record: null, all: null, lookups: null } })),
    withDeadline(checkDkim(dns, domain, selector), deadline, () => ({ result: { status: 'unknown' as const, message: late, selector, record: null } })),
    withDeadline(checkDmarc(dns, domain), deadline, () => ({ result: { status: 'unknown' as const, message: late, record: null, policy: null } })),
  ]);
  return { mx, spf, dkim, dmarc };
}

// ───────────────────────────── score ─────────────────────────────

/**
 * Health score, 0–100:
 * - the DNS checks weigh 25 points each (MX, SPF, DKIM, DMARC): pass earns them all, warn half,
 *   fail none; an `unknown` check is left out of the total (the score is scaled over the checks that
 *   answered), so a DNS outage never lowers it. When no check answered, there is no score (null).
 * - then penalties for the last 30 days' rates (percent of sent): bounce rate above 2 % costs 25
 *   points, above 5 % 40; complaint rate above 0.1 % costs 25, above 0.3 % 40.
 * With equal weights, one failed check (75) or a rate over its threshold (≤ 75) makes a domain
 * unhealthy (healthy needs ≥ 80); one warning alone (87.5 → 88) does not.
 */
export const CHECK_WEIGHT = 25;
export const RATE_THRESHOLDS = {
  bounce: { warning: 2, critical: 5 },
  complaint: { warning: 0.1, critical: 0.3 },
} as const;
const PENALTY = { warning: 25, critical: 40 } as const;
export const HEALTHY_SCORE = 80;

export function rateLevel(rate: number, kind: keyof typeof RATE_THRESHOLDS): 'warning' | 'critical' | null {
  const t = RATE_THRESHOLDS[kind];
  return rate > t.critical ? 'critical' : rate > t.warning ? 'warning' : null;
}

export function healthScore(checks: DomainChecks, rates: { bounce: number; complaint: number }): number | null {
  const earned = { pass: 1, warn: 0.5, fail: 0 } as const;
  let known = 0;
  let points = 0;
  for (const c of [checks.mx, checks.spf, checks.dkim, checks.dmarc]) {
    if (c.status === 'unknown') continue;
    known += CHECK_WEIGHT;
    points += CHECK_WEIGHT * earned[c.status];
  }
  if (known === 0) return null;
  let score = (points / known) * 100;
  for (const kind of ['bounce', 'complaint'] as const) {
    const level = rateLevel(rates[kind], kind);
    if (level) score -= PENALTY[level];
  }
  return Math.max(0, Math.min(100, Math.round(score)));
}
