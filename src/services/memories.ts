import { sql, type Selectable } from 'kysely';
import type { MemoriesTable } from '../../db/schema/tools.js';
import type { Ctx, Deps } from '../context.js';
import { parseJsonObject } from '../json.js';
import { badRequest, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';

// What agents remember: short texts per organization, optionally per agent (agent_id null means
// shared by the organization's agents), grouped in namespaces, searched by ranked full text
// (SQLite FTS5 with bm25, PostgreSQL to_tsvector/ts_rank: see db/migrations/0010_tools.ts).

export const DEFAULT_NAMESPACE = 'default';
export const MAX_SEARCH_LIMIT = 50;
export const DEFAULT_SEARCH_LIMIT = 10;
/** Terms of a search beyond this many are ignored. */
const MAX_TERMS = 32;

type Row = Selectable<MemoriesTable>;
const COLUMNS = ['id', 'agent_id', 'namespace', 'content', 'metadata', 'created_at', 'updated_at'] as const;


const present = (r: Pick<Row, (typeof COLUMNS)[number]>) => ({
  id: r.id, agent_id: r.agent_id, namespace: r.namespace, content: r.content, metadata: parseJsonObject(r.metadata) ?? {},
  created_at: r.created_at, updated_at: r.updated_at,
});
export type Memory = ReturnType<typeof present>;

export interface MemoryInput {
  content: string;
  agent_id?: string | null;
  namespace?: string;
  metadata?: Record<string, unknown>;
}

export interface MemoryFilters { agent_id?: string; namespace?: string }

/** 400 naming agent_id unless the agent is the organization's. */
async function assertAgent(deps: Deps, org: string, agentId: string | null | undefined): Promise<void> {
  if (agentId === null || agentId === undefined) return;
  const found = await deps.db.kysely.selectFrom('agents').select('id').where('id', '=', agentId).where('organization_id', '=', org).executeTakeFirst();
  if (!found) throw badRequest({ agent_id: 'No agent with this id in the organization' });
}

export function listMemories(ctx: Ctx, input: PageInput & MemoryFilters) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('memories').select(COLUMNS).where('organization_id', '=', org);
  if (input.agent_id) query = query.where('agent_id', '=', input.agent_id);
  if (input.namespace) query = query.where('namespace', '=', input.namespace);
  return paginate(ctx, { query, table: 'memories', scope: org, input, countKey: JSON.stringify([input.agent_id ?? null, input.namespace ?? null]) }, present);
}

async function findRow(deps: Deps, org: string, id: string) {
  return deps.db.kysely.selectFrom('memories').select(COLUMNS).where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
}

export async function getMemory(ctx: Ctx, id: string): Promise<Memory> {
  const row = await findRow(ctx.deps, ctx.actor!.organizationId, id);
  if (!row) throw notFound('Memory');
  return present(row);
}

/** Stores a memory in `organizationId` (for the agent loop as well as the API). */
export async function createMemoryIn(deps: Deps, organizationId: string, input: MemoryInput): Promise<Memory> {
  await assertAgent(deps, organizationId, input.agent_id);
  const now = nowIso();
  const id = newId('mem');
  await deps.db.kysely.insertInto('memories').values({
    id, organization_id: organizationId, agent_id: input.agent_id ?? null, namespace: input.namespace ?? DEFAULT_NAMESPACE,
    content: input.content, metadata: JSON.stringify(input.metadata ?? {}), created_at: now, updated_at: now,
  }).execute();
  deps.counts.invalidate(organizationId, 'memories');
  const row = await findRow(deps, organizationId, id);
  return present(row!);
}

export function createMemory(ctx: Ctx, input: MemoryInput): Promise<Memory> {
  return createMemoryIn(ctx.deps, ctx.actor!.organizationId, input);
}

export async function updateMemory(ctx: Ctx, id: string, input: Partial<MemoryInput>): Promise<Memory> {
  const org = ctx.actor!.organizationId;
  if (!(await findRow(ctx.deps, org, id))) throw notFound('Memory');
  await assertAgent(ctx.deps, org, input.agent_id);
  const set: Partial<Row> = { updated_at: nowIso() };
  if (input.content !== undefined) set.content = input.content;
  if (input.agent_id !== undefined) set.agent_id = input.agent_id;
  if (input.namespace !== undefined) set.namespace = input.namespace;
  if (input.metadata !== undefined) set.metadata = JSON.stringify(input.metadata);
  await ctx.deps.db.kysely.updateTable('memories').set(set).where('id', '=', id).where('organization_id', '=', org).execute();
  return getMemory(ctx, id);
}

export async function deleteMemory(ctx: Ctx, id: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  const res = await ctx.deps.db.kysely.deleteFrom('memories').where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) throw notFound('Memory');
  ctx.deps.counts.invalidate(org, 'memories');
}

// ---------------------------------------------------------------------------------------------
// Search

export interface MemorySearch {
  query: string;
  /**
   * An agent id: that agent's memories and the organization's shared ones (agent_id null), unless
   * `include_shared` is false. null: only the shared ones. Absent: every memory of the organization.
   */
  agent_id?: string | null;
  namespace?: string;
  /** 1–50, default 10. */
  limit?: number;
  /** With an agent id: also the shared memories (default true). */
  include_shared?: boolean;
}

export interface MemoryHit {
  id: string; content: string; score: number; namespace: string; agent_id: string | null; metadata: Record<string, unknown>;
}

/**
 * The words of a free-text query, as the full-text tokenizers see them: runs of letters and
 * digits. Everything else (quotes, `*`, `-`, `:`, parentheses, NUL…) separates words, so user
 * text never reaches FTS5's or tsquery's query syntax; `AND`/`OR`/`NOT` are plain words here.
 */
export function searchTerms(query: string): string[] {
  const words = query.normalize('NFKC').match(/[\p{L}\p{N}]+/gu) ?? [];
  const seen = new Set<string>();
  for (const w of words) {
    const t = w.toLowerCase();
    if (!seen.has(t)) seen.add(t);
    if (seen.size >= MAX_TERMS) break;
  }
  return [...seen];
}

/**
 * Ranked full-text search over the organization's memories: a memory matches when it contains any
 * of the query's words (stemmed, English), best matches first (more matching words, rarer words
 * and shorter texts rank higher). `score` is higher for better matches (SQLite: -bm25; PostgreSQL:
 * ts_rank); scores compare within one search, not across engines. Uses the full-text index
 * (never a LIKE scan). A query without words finds nothing.
 */
export async function searchMemories(deps: Deps, organizationId: string, q: MemorySearch): Promise<MemoryHit[]> {
  const terms = searchTerms(typeof q.query === 'string' ? q.query : '');
  if (terms.length === 0) return [];
  const limit = Math.max(1, Math.min(MAX_SEARCH_LIMIT, Math.floor(Number(q.limit ?? DEFAULT_SEARCH_LIMIT)) || DEFAULT_SEARCH_LIMIT));
  const includeShared = q.include_shared !== false;

  const scope = (m: string) => {
    const parts = [sql`${sql.ref(`${m}.organization_id`)} = ${organizationId}`];
    if (q.namespace !== undefined) parts.push(sql`${sql.ref(`${m}.namespace`)} = ${q.namespace}`);
    if (q.agent_id === null) parts.push(sql`${sql.ref(`${m}.agent_id`)} is null`);
    else if (q.agent_id !== undefined) {
      parts.push(includeShared
        ? sql`(${sql.ref(`${m}.agent_id`)} = ${q.agent_id} or ${sql.ref(`${m}.agent_id`)} is null)`
        : sql`${sql.ref(`${m}.agent_id`)} = ${q.agent_id}`);
    }
    return sql.join(parts, sql` and `);
  };

  type Hit = { id: string; content: string; score: number | string; namespace: string; agent_id: string | null; metadata: string };
  let rows: Hit[];
  if (deps.db.dialect === 'postgres') {
    // One plainto_tsquery per word, OR-ed: parameters only, no query syntax from the user.
    const tsq = sql.join(terms.map((t) => sql`plainto_tsquery('english', ${t})`), sql` || `);
    const res = await sql<Hit>`
      select m.id, m.content, m.namespace, m.agent_id, m.metadata, ts_rank(to_tsvector('english', m.content), s.q) as score
      from memories m, (select ${tsq} as q) s
      where to_tsvector('english', m.content) @@ s.q and ${scope('m')}
      order by score desc, m.id desc
      limit ${limit}`.execute(deps.db.kysely);
    rows = res.rows;
  } else {
    // Each word a quoted FTS5 string (words hold no quotes), OR-ed.
    const match = terms.map((t) => `"${t}"`).join(' OR ');
    const res = await sql<Hit>`
      select m.id, m.content, m.namespace, m.agent_id, m.metadata, -bm25(memories_fts) as score
      from memories_fts join memories m on m.rowid = memories_fts.rowid
      where memories_fts match ${match} and ${scope('m')}
      order by bm25(memories_fts), m.id desc
      limit ${limit}`.execute(deps.db.kysely);
    rows = res.rows;
  }
  return rows.map((r) => ({
    id: r.id, content: r.content, score: Number(r.score), namespace: r.namespace, agent_id: r.agent_id, metadata: parseJsonObject(r.metadata) ?? {},
  }));
}
