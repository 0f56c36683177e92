/**
 * The contacts baseline: raw Fastify + better-sqlite3 (no Kysely, no tRPC, no plugins or hooks),
 * doing the work of GET /api/agents/ and GET /api/agents/download/?format=csv for an API key,
 * with hand-written SQL, statements prepared once:
 *
 * - auth: read the Bearer key, sha256 it, look the key up by key_hash (refusing revoked or expired
 *   keys and roles that cannot read), as bench/raw.ts;
 * - list: the page (limit size+1) of the organization's contacts newest first, keyset (`id < ?`)
 *   after a `cursor`, OFFSET for `page`; the filters as the best plain query for each:
 *   `city`/`esp`/`esg`/`email_validity` an equality on their (organization_id, X, id) index, one
 *   `data_health_flags` value read from contact_flags in contact-id order and joined to contacts
 *   (so a page reads 51 flag entries, whatever the flag's count); `search` with the same two plans as the app (a bounded probe of the two
 *   prefix ranges decides between ids from the ranges and an id-ordered scan), since a plan cannot
 *   be chosen without knowing how many rows match; the 23 fields the API returns, JSON columns
 *   parsed, 0/1 as booleans; `count` from the maintained contact_facets row for no filter or one
 *   (as the app), else a COUNT(*) cached 5 s (the app's CountCache policy); `next`/`previous`
 *   built like src/pagination.ts (page links up to page 10, then opaque keyset cursors);
 * - download: the same rows in the same order through one `.iterate()` of one statement, each
 *   row made into the export's cells (formula-looking text prefixed with `'`, lists joined with
 *   `; `) and written by csv-stringify, paced by the socket's back-pressure (with RAW_CSV_WRITER=chunks:
 *   500 records formatted by hand into one chunk of text, the app's way of writing).
 *
 * Responses are byte for byte those of the app (checked by bench/contacts.ts before measuring).
 */
import { rawKeyAuth } from './raw-auth.js';
import { Readable } from 'node:stream';
import BetterSqlite3 from 'better-sqlite3';
import { stringify } from 'csv-stringify';
import Fastify from 'fastify';
import { installProfiler } from './profiler.js';

const path = (process.env.DATABASE_URL ?? '').replace(/^sqlite:(\/\/)?/, '');
if (!path) throw new Error('DATABASE_URL is required');
const db = new BetterSqlite3(path);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma('foreign_keys = ON');
db.pragma('busy_timeout = 5000');

const FIELDS = [
  'id', 'name', 'email', 'phone', 'company', 'title', 'city', 'state', 'country', 'tags', 'custom_fields', 'source',
  'lead_score', 'lead_score_reasons', 'unsubscribed', 'bounced', 'esp', 'esg', 'email_validity', 'data_health_flags',
  'email_checked_at', 'created_at', 'updated_at',
] as const;
const COLS = FIELDS.map((f) => `c.${f}`).join(', ');

type Row = {
  id: string; name: string | null; email: string | null; phone: string | null; company: string | null; title: string | null;
  city: string | null; state: string | null; country: string | null; tags: string; custom_fields: string; source: string | null;
  lead_score: number | null; lead_score_reasons: string; unsubscribed: number; bounced: number; esp: string | null; esg: string | null;
  email_validity: string | null; data_health_flags: string; email_checked_at: string | null; created_at: string; updated_at: string;
};

// ---- auth ---------------------------------------------------------------------------------------


const authenticate = rawKeyAuth(db);

// ---- queries ------------------------------------------------------------------------------------

/** Statements by SQL text, prepared once. */
const stmts = new Map<string, BetterSqlite3.Statement>();
const prep = (text: string) => {
  let s = stmts.get(text);
  if (!s) { s = db.prepare(text); stmts.set(text, s); }
  return s;
};

interface Filters { city?: string; esp?: string; esg?: string; email_validity?: string; flags: string[]; search?: string }
const SEARCH_PROBE = 20_000;
const upper = (t: string) => `${t}\u{10FFFF}`;
const nameKey = (s: string) => s.normalize('NFKD').replace(/\p{M}+/gu, '').toLowerCase().replace(/\s+/g, ' ').trim();

/** FROM + WHERE (and the id column to order and page by) for the filters. */
function whereOf(org: string, f: Filters): { from: string; where: string[]; params: unknown[]; idCol: string } {
  const params: unknown[] = [];
  const where: string[] = [];
  let from = 'contacts c';
  let idCol = 'c.id';
  if (f.flags.length) {
    // The first flag drives: its (organization_id, flag, contact_id) primary key in id order,
    // each row joined to its contact (CROSS JOIN keeps that loop order: without statistics the
    // planner would rather scan the organization's contacts and sort).
    from = 'contact_flags f cross join contacts c on c.id = f.contact_id';
    idCol = 'f.contact_id';
    where.push('f.organization_id = ?', 'f.flag = ?');
    params.push(org, f.flags[0]);
    for (const flag of f.flags.slice(1)) {
      where.push('c.id in (select contact_id from contact_flags where organization_id = ? and flag = ?)');
      params.push(org, flag);
    }
  }
  where.push('c.organization_id = ?');
  params.push(org);
  for (const k of ['city', 'esp', 'esg', 'email_validity'] as const) {
    if (f[k]) { where.push(`c.${k} = ?`); params.push(f[k]); }
  }
  if (f.search) {
    const ranges: Array<['name_key' | 'email_normalized', string]> = [];
    const nk = nameKey(f.search);
    const ek = f.search.trim().toLowerCase();
    if (nk) ranges.push(['name_key', nk]);
    if (ek) ranges.push(['email_normalized', ek]);
    let hits = 0;
    for (const [col, t] of ranges) {
      hits += prep(`select count(*) from (select id from contacts where organization_id = ? and ${col} >= ? and ${col} < ? limit ${SEARCH_PROBE})`)
        .pluck().get(org, t, upper(t)) as number;
    }
    if (hits < SEARCH_PROBE) {
      where.push(`c.id in (${ranges.map(([col]) => `select id from contacts where organization_id = ? and ${col} >= ? and ${col} < ?`).join(' union all ')})`);
      for (const [, t] of ranges) params.push(org, t, upper(t));
    } else {
      where.push(`(${ranges.map(([col]) => `(c.${col} >= ? and c.${col} < ?)`).join(' or ')})`);
      for (const [, t] of ranges) params.push(t, upper(t));
    }
  }
  return { from, where, params, idCol };
}

const COUNT_TTL_MS = 5000;
const counts = new Map<string, { n: number; at: number }>();
const facetStmt = db.prepare('select count from contact_facets where organization_id = ? and facet = ? and value = ?').pluck();

function countOf(org: string, f: Filters): number {
  const set: [string, string][] = [];
  if (f.city) set.push(['city', f.city]);
  if (f.esp) set.push(['esp', f.esp]);
  if (f.esg) set.push(['esg', f.esg]);
  if (f.email_validity) set.push(['email_validity', f.email_validity]);
  for (const flag of f.flags) set.push(['data_health_flag', flag]);
  if (!f.search && set.length <= 1) {
    const [facet, value] = set[0] ?? ['total', ''];
    return Math.max(0, Number(facetStmt.get(org, facet, value) ?? 0));
  }
  const key = `${org}|${JSON.stringify(f)}`;
  const e = counts.get(key);
  const now = Date.now();
  if (e && now - e.at <= COUNT_TTL_MS) return e.n;
  const q = whereOf(org, f);
  const n = prep(`select count(*) from ${q.from} where ${q.where.join(' and ')}`).pluck().get(...q.params) as number;
  counts.set(key, { n, at: now });
  return n;
}

function present(r: Row) {
  return {
    id: r.id, name: r.name, email: r.email, phone: r.phone, company: r.company, title: r.title,
    city: r.city, state: r.state, country: r.country,
    tags: JSON.parse(r.tags) as string[], custom_fields: JSON.parse(r.custom_fields) as Record<string, unknown>,
    source: r.source, lead_score: r.lead_score, lead_score_reasons: JSON.parse(r.lead_score_reasons) as unknown[],
    unsubscribed: r.unsubscribed === 1, bounced: r.bounced === 1,
    esp: r.esp, esg: r.esg, email_validity: r.email_validity,
    data_health_flags: JSON.parse(r.data_health_flags) as string[],
    email_checked_at: r.email_checked_at, created_at: r.created_at, updated_at: r.updated_at,
  };
}

// ---- links (as src/pagination.ts) ---------------------------------------------------------------

function link(base: string, url: string, key: 'page' | 'cursor', value: string): string {
  const q = url.indexOf('?');
  const p = q === -1 ? url : url.slice(0, q);
  const params = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
  params.delete(key === 'page' ? 'cursor' : 'page');
  params.set(key, value);
  return `${base}${p}?${params.toString()}`;
}
const cursorOf = (id: string, d: 'n' | 'p') => Buffer.from(JSON.stringify({ id, d })).toString('base64url');

// ---- routes -------------------------------------------------------------------------------------

const ENUMS: Record<string, Set<string>> = {
  esp: new Set(['google_workspace', 'microsoft_365', 'yahoo', 'zoho', 'proton', 'amazon_ses', 'fastmail', 'icloud', 'mimecast', 'proofpoint', 'barracuda', 'self_hosted', 'other']),
  esg: new Set(['google', 'microsoft', 'yahoo', 'security_gateway', 'other']),
  email_validity: new Set(['valid', 'invalid', 'risky', 'catch_all', 'unknown']),
};

function filtersOf(q: Record<string, string | undefined>): Filters | null {
  const f: Filters = { flags: [] };
  if (q.city) f.city = q.city;
  for (const k of ['esp', 'esg', 'email_validity'] as const) {
    if (q[k]) { if (!ENUMS[k].has(q[k]!)) return null; f[k] = q[k]; }
  }
  if (q.data_health_flags) f.flags = [...new Set(q.data_health_flags.split(',').filter(Boolean))];
  if (q.search?.trim()) f.search = q.search.trim();
  return f;
}

const app = Fastify({ logger: false });

app.get('/api/agents/', async function listContactsRaw(req, reply) {
  const key = authenticate(req.headers.authorization);
  if (key === 401) return reply.code(401).send({ error: 'Invalid token' });
  if (key === 403) return reply.code(403).send({ error: 'Forbidden' });
  const q = req.query as Record<string, string | undefined>;
  const size = q.page_size === undefined ? 50 : Number(q.page_size);
  const f = filtersOf(q);
  if (!f || !Number.isInteger(size) || size < 1 || size > 100) return reply.code(400).send({ error: 'Bad request' });
  const org = key.organization_id;
  const w = whereOf(org, f);
  let cursor: { id: string; d: 'n' | 'p' } | null = null;
  let page: number | null = null;
  let sqlText: string;
  const params = [...w.params];
  if (q.cursor) {
    try { cursor = JSON.parse(Buffer.from(q.cursor, 'base64url').toString('utf8')) as { id: string; d: 'n' | 'p' }; } catch { return reply.code(400).send({ error: 'Bad cursor' }); }
    const fwd = cursor.d === 'n';
    sqlText = `select ${COLS} from ${w.from} where ${w.where.join(' and ')} and ${w.idCol} ${fwd ? '<' : '>'} ? order by ${w.idCol} ${fwd ? 'desc' : 'asc'} limit ?`;
    params.push(cursor.id, size + 1);
  } else {
    page = q.page === undefined ? 1 : Number(q.page);
    if (!Number.isInteger(page) || page < 1) return reply.code(400).send({ error: 'Bad request' });
    sqlText = `select ${COLS} from ${w.from} where ${w.where.join(' and ')} order by ${w.idCol} desc limit ? offset ?`;
    params.push(size + 1, (page - 1) * size);
  }
  let rows = prep(sqlText).all(...params) as Row[];
  const more = rows.length > size;
  if (more) rows = rows.slice(0, size);
  if (cursor?.d === 'p') rows.reverse();
  const count = countOf(org, f);
  const base = `${req.protocol}://${req.host}`;
  let next: string | null = null;
  let previous: string | null = null;
  if (page !== null) {
    if (more) next = page + 1 <= 10 ? link(base, req.url, 'page', String(page + 1)) : link(base, req.url, 'cursor', cursorOf(rows[rows.length - 1].id, 'n'));
    if (page > 1) previous = page - 1 <= 10 || rows.length === 0 ? link(base, req.url, 'page', String(page - 1)) : link(base, req.url, 'cursor', cursorOf(rows[0].id, 'p'));
  } else if (cursor && rows.length) {
    const fwd = cursor.d === 'n';
    if (fwd ? more : true) next = link(base, req.url, 'cursor', cursorOf(rows[rows.length - 1].id, 'n'));
    if (fwd ? true : more) previous = link(base, req.url, 'cursor', cursorOf(rows[0].id, 'p'));
  }
  const body = JSON.stringify({ count, next, previous, results: rows.map(present) });
  return reply.header('content-type', 'application/json; charset=utf-8').send(body);
});

const FORMULA_START = /^[=+\-@\t\r]/;
const text = (v: string | null) => (v === null ? '' : FORMULA_START.test(v) ? `'${v}` : v);
const joined = (json: string) => (json === '[]' ? '' : text((JSON.parse(json) as string[]).join('; ')));

/** A row as the export's cells (src/http/contacts.ts `cells`), from the stored columns. */
function cells(r: Row): Array<string | number> {
  return [
    r.id, text(r.name), text(r.email), text(r.phone), text(r.company), text(r.title), text(r.city), text(r.state), text(r.country),
    joined(r.tags), r.custom_fields === '{}' ? '' : text(r.custom_fields), text(r.source),
    r.lead_score ?? '', r.lead_score_reasons === '[]' ? '' : text(r.lead_score_reasons),
    r.unsubscribed === 1 ? 'true' : 'false', r.bounced === 1 ? 'true' : 'false', r.esp ?? '', r.esg ?? '', r.email_validity ?? '',
    r.data_health_flags === '[]' ? '' : (JSON.parse(r.data_health_flags) as string[]).join('; '), r.email_checked_at ?? '', r.created_at, r.updated_at,
  ];
}

/**
 * RAW_CSV_WRITER=chunks: instead of csv-stringify fed one row at a time (the baseline the issue
 * names), hundreds of records formatted by hand into one chunk of text (RFC 4180 quoting), as the
 * app now writes: what the app costs over raw code that writes the same way.
 */
const CHUNKS = process.env.RAW_CSV_WRITER === 'chunks';
const field = (s: string) => (/[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);

const exportStmt = db.prepare(`select ${COLS} from contacts c where c.organization_id = ? order by c.id desc`);

app.get('/api/agents/download/', async function downloadContactsRaw(req, reply) {
  const key = authenticate(req.headers.authorization);
  if (key === 401) return reply.code(401).send({ error: 'Invalid token' });
  if (key === 403) return reply.code(403).send({ error: 'Forbidden' });
  const q = req.query as Record<string, string | undefined>;
  if (q.format !== 'csv') return reply.code(400).send({ error: 'Only format=csv here' });
  const it = exportStmt.iterate(key.organization_id) as IterableIterator<Row>;
  let csv: Readable;
  if (CHUNKS) {
    // The app's way of writing (src/http/contacts.ts): 500 records as one chunk of text, no csv-stringify.
    let header = true;
    csv = new Readable({
      read() {
        let out = header ? `${FIELDS.join(',')}\n` : '';
        header = false;
        for (let k = 0; k < 500; k++) {
          const n = it.next();
          if (n.done) { if (out) this.push(out); this.push(null); return; }
          out += cells(n.value).map((v) => field(String(v))).join(',') + '\n';
        }
        this.push(out);
      },
      destroy(err, cb) { it.return?.(); cb(err); },
    });
  } else {
    const source = new Readable({
      objectMode: true,
      read() {
        for (let k = 0; k < 1000; k++) {
          const n = it.next();
          if (n.done) { this.push(null); return; }
          if (!this.push(cells(n.value))) return;
        }
      },
      destroy(err, cb) { it.return?.(); cb(err); },
    });
    const stringifier = stringify({ header: true, columns: [...FIELDS] });
    source.pipe(stringifier);
    source.on('error', (err) => stringifier.destroy(err));
    csv = stringifier;
  }
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  reply.header('content-disposition', `attachment; filename="contacts-${stamp}.csv"`);
  reply.header('cache-control', 'no-store');
  reply.type('text/csv; charset=utf-8');
  return reply.send(csv);
});

installProfiler();
await app.listen({ port: Number(process.env.PORT ?? 0), host: process.env.HOST ?? '127.0.0.1' });

const stop = async () => { await app.close().catch(() => undefined); db.close(); process.exit(0); };
process.on('SIGTERM', () => { void stop(); });
process.on('SIGINT', () => { void stop(); });
