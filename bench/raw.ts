/**
 * The baseline: raw Fastify + better-sqlite3, no Kysely, no tRPC, no plugins or hooks, doing the
 * same work as GET /api/v1/projects for an API key: read the Bearer key, sha256 it, look the key
 * up by key_hash (refusing revoked or expired keys), select the page (limit size+1 to know whether
 * there is a next page) of the organization's projects newest first, parse each row's settings
 * JSON, build the `next` link from the request URL, and answer the same {count, next, previous,
 * results} envelope.
 *
 * count: COUNT(*) per organization, cached for 5 s — the same policy as the app's CountCache
 * (src/pagination.ts), so neither server counts on every request.
 */
import { rawKeyAuth } from './raw-auth.js';
import BetterSqlite3 from 'better-sqlite3';
import Fastify from 'fastify';
import { installProfiler } from './profiler.js';

const path = (process.env.DATABASE_URL ?? '').replace(/^sqlite:(\/\/)?/, '');
if (!path) throw new Error('DATABASE_URL is required');
const db = new BetterSqlite3(path);
// The same settings as src/db.ts.
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma('foreign_keys = ON');
db.pragma('busy_timeout = 5000');

const pageStmt = db.prepare(
  'select id, name, description, status, settings, created_at, updated_at from projects where organization_id = ? order by id desc limit ? offset ?',
);
// RAW_ROWS=arrays: the page is read in better-sqlite3's raw mode (arrays) and each row built by an
// object literal, as the app's data layer reads rows (src/db.ts, rowBuilder): the baseline for the
// app's overhead alone, its cheaper row reading aside.
const arrays = process.env.RAW_ROWS === 'arrays';
if (arrays) pageStmt.raw(true);
type Cells = [string, string, string, string, string, string, string];
const countStmt = db.prepare('select count(*) as n from projects where organization_id = ?').pluck();

const COUNT_TTL_MS = 5000;
const counts = new Map<string, { n: number; at: number }>();
function countOf(org: string): number {
  const e = counts.get(org);
  const now = Date.now();
  if (e && now - e.at <= COUNT_TTL_MS) return e.n;
  const n = countStmt.get(org) as number;
  counts.set(org, { n, at: now });
  return n;
}

type ProjectRow = { id: string; name: string; description: string; status: string; settings: string; created_at: string; updated_at: string };


const authenticate = rawKeyAuth(db);

function selectPage(org: string, size: number, page: number): ProjectRow[] {
  if (!arrays) return pageStmt.all(org, size + 1, (page - 1) * size) as ProjectRow[];
  return (pageStmt.all(org, size + 1, (page - 1) * size) as Cells[]).map((r) => ({
    id: r[0], name: r[1], description: r[2], status: r[3], settings: r[4], created_at: r[5], updated_at: r[6],
  }));
}

function present(rows: ProjectRow[]) {
  return rows.map((r) => ({ ...r, settings: JSON.parse(r.settings) as Record<string, unknown> }));
}

function pageLink(url: string, base: string, page: number): string {
  const u = new URL(url, base);
  u.searchParams.delete('cursor');
  u.searchParams.set('page', String(page));
  return u.toString();
}

const app = Fastify({ logger: false });
app.get('/api/v1/projects', async function listProjectsRaw(req, reply) {
  const key = authenticate(req.headers.authorization);
  if (key === 401) return reply.code(401).send({ error: 'Invalid token' });
  if (key === 403) return reply.code(403).send({ error: 'Forbidden' });

  const q = req.query as Record<string, string | undefined>;
  const size = q.page_size === undefined ? 50 : Number(q.page_size);
  const page = q.page === undefined ? 1 : Number(q.page);
  if (!Number.isInteger(size) || size < 1 || size > 100 || !Number.isInteger(page) || page < 1) {
    return reply.code(400).send({ error: 'Bad request' });
  }
  let rows = selectPage(key.organization_id, size, page);
  const more = rows.length > size;
  if (more) rows = rows.slice(0, size);
  const base = `${req.protocol}://${req.host}`;
  return {
    count: countOf(key.organization_id),
    next: more ? pageLink(req.url, base, page + 1) : null,
    previous: page > 1 ? pageLink(req.url, base, page - 1) : null,
    results: present(rows),
  };
});

installProfiler();
await app.listen({ port: Number(process.env.PORT ?? 0), host: process.env.HOST ?? '127.0.0.1' });

const stop = async () => { await app.close().catch(() => undefined); db.close(); process.exit(0); };
process.on('SIGTERM', () => { void stop(); });
process.on('SIGINT', () => { void stop(); });
