import { sql, type CompiledQuery, type SelectQueryBuilder } from 'kysely';
import { z } from 'zod';
import type { Ctx } from './context.js';
import { runRead } from './db.js';
import { badRequest } from './errors.js';

export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 50;
/** Past this page, `next`/`previous` carry a keyset cursor instead of a page number. */
export const CURSOR_AFTER_PAGE = 10;

/** Query parameters every list accepts. */
export const pageParams = {
  page: z.number().int().min(1).optional().describe('Page number (1-based)'),
  page_size: z.number().int().min(1).max(MAX_PAGE_SIZE).optional().describe(`Rows per page (max ${MAX_PAGE_SIZE})`),
  cursor: z.string().max(500).optional().describe('Opaque cursor from a `next`/`previous` link'),
};
export type PageInput = { page?: number; page_size?: number; cursor?: string };

/** The DRF list envelope. */
export function paginated<T extends z.ZodType>(item: T) {
  return z.object({
    count: z.number().int(),
    next: z.string().nullable(),
    previous: z.string().nullable(),
    results: z.array(item),
  });
}
export interface Page<T> { count: number; next: string | null; previous: string | null; results: T[] }

/**
 * Row counts for list envelopes, cached per organization, table and filter for a few seconds and
 * dropped when the organization writes to the table: a list request never pays a full COUNT(*)
 * more than once per TTL.
 */
export class CountCache {
  private entries = new Map<string, { n: number; at: number }>();
  private versions = new Map<string, number>();
  constructor(private readonly ttlMs = 5000, private readonly max = 10000) {}

  key(scope: string, table: string, sqlText: string, params: readonly unknown[]): string {
    const v = this.versions.get(`${scope}|${table}`) ?? 0;
    return params.length ? `${scope}|${table}|${v}|${sqlText}|${JSON.stringify(params)}` : `${scope}|${table}|${v}|${sqlText}`;
  }
  get(key: string): number | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (Date.now() - e.at > this.ttlMs) { this.entries.delete(key); return undefined; }
    return e.n;
  }
  set(key: string, n: number): void {
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { n, at: Date.now() });
  }
  /** Call after a write that adds or removes rows of `table` in `scope` (an organization id). */
  invalidate(scope: string, table: string): void {
    const k = `${scope}|${table}`;
    this.versions.set(k, (this.versions.get(k) ?? 0) + 1);
  }
}

interface CursorState { v: unknown; id: string; d: 'n' | 'p' }

function encodeCursor(c: CursorState): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}
function decodeCursor(raw: string): CursorState {
  try {
    const c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as CursorState;
    if (typeof c.id !== 'string' || (c.d !== 'n' && c.d !== 'p')) throw new Error('shape');
    return c;
  } catch {
    throw badRequest({ cursor: 'Invalid cursor' });
  }
}

/** The request's absolute URL with `key` set to `value` and the other paging key removed. */
function link(ctx: Ctx, key: 'page' | 'cursor', value: string): string {
  const q = ctx.url.indexOf('?');
  const path = q === -1 ? ctx.url : ctx.url.slice(0, q);
  const params = new URLSearchParams(q === -1 ? '' : ctx.url.slice(q + 1));
  params.delete(key === 'page' ? 'cursor' : 'page');
  params.set(key, value);
  return `${ctx.baseUrl}${path}?${params.toString()}`;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ListQuery<R> = SelectQueryBuilder<any, any, R>;

export interface PaginateOptions<R> {
  /**
   * Filtered and organization-scoped; selects at least `id` and the sort column. A function that
   * builds it is only called when the query must be compiled (see `prepared`).
   */
  query: ListQuery<R> | (() => ListQuery<R>);
  /** Table name for count invalidation (see CountCache.invalidate). */
  table: string;
  /** Scope for the count cache, normally the organization id. */
  scope: string;
  input: PageInput;
  /** Sort column (qualified if the query joins) and direction; `id` breaks ties. Default: id desc (newest first). */
  sort?: { column: string; direction: 'asc' | 'desc'; key?: (row: R) => unknown };
  /**
   * Qualified id column when the query joins (default `id`). It may be another table's column
   * that equals the row's `id`, such as a join table's foreign key when that table drives the
   * query (the contacts flag filter pages by `contact_flags.contact_id`): the order and the keyset
   * use this column, cursors carry the row's `id`.
   */
  idColumn?: string;
  /**
   * What the filtered row set depends on besides `scope` (e.g. the filters, as JSON), to key the
   * count cache without compiling the count query on every request. Default: the count query's SQL.
   */
  countKey?: string;
  /** The count when the caller knows it better (maintained counters); then no count query runs. */
  count?: () => Promise<number>;
  /**
   * For lists on hot paths: the query's shape (everything about it but its parameter values, such
   * as which filters are set) and its parameters in the order of their placeholders. The page
   * query is then compiled once per shape and paging mode, and later requests neither build nor
   * compile it. Each shape's first compile checks `params` against the compiled query's.
   */
  prepared?: { shape: string; params: readonly unknown[] };
}

/** Compiled page queries by database, then by table, shape and paging mode (see `PaginateOptions.prepared`). */
const compiledPages = new WeakMap<object, Map<string, CompiledQuery>>();

/** How a page is cut from the list query, and the paging parameters in SQL order. */
interface PagingPlan {
  idCol: string; sortCol: string; sameCol: boolean;
  /** Null for page numbers. */
  cursor: CursorState | null;
  op: '<' | '>'; dir: 'asc' | 'desc'; limit: number; offset: number;
  params: unknown[];
}

function withPaging<R>(query: ListQuery<R>, p: PagingPlan): ListQuery<R> {
  let q = query;
  const c = p.cursor;
  if (c) {
    q = p.sameCol
      ? q.where(sql.ref(p.idCol), p.op, c.id)
      : q.where((eb) => eb.or([
        eb(sql.ref(p.sortCol), p.op, c.v),
        eb.and([eb(sql.ref(p.sortCol), '=', c.v), eb(sql.ref(p.idCol), p.op, c.id)]),
      ]));
  }
  if (!p.sameCol) q = q.orderBy(sql.ref(p.sortCol), p.dir);
  q = q.orderBy(sql.ref(p.idCol), p.dir).limit(p.limit);
  return c ? q : q.offset(p.offset);
}

function preparedPage<R>(ctx: Ctx, opts: PaginateOptions<R>, plan: PagingPlan): CompiledQuery<R> {
  const { shape, params } = opts.prepared!;
  // The paging options are part of the key: a service that sorts by input need not say so in `shape`.
  const key = `${opts.table}|${shape}|${plan.sortCol}|${plan.idCol}|${plan.dir}|${plan.cursor ? `cursor ${plan.op}` : 'page'}`;
  const db = ctx.deps.db.kysely;
  let pages = compiledPages.get(db);
  if (!pages) compiledPages.set(db, pages = new Map());
  const parameters = [...params, ...plan.params];
  const hit = pages.get(key) as CompiledQuery<R> | undefined;
  if (hit) return { ...hit, parameters };
  const compiled = withPaging(queryOf(opts), plan).compile();
  const same = compiled.parameters.length === parameters.length && compiled.parameters.every((v, i) => v === parameters[i]);
  if (!same) {
    // A caller whose `params` disagree with its query: correct rows from this compile, never a
    // cached query; tests and development fail loudly.
    if (ctx.deps.config.validateResponses) throw new Error(`paginate: the prepared parameters of ${key} do not match its query's`);
    return compiled;
  }
  if (pages.size < 1000) pages.set(key, compiled);
  return compiled;
}

const queryOf = <R>(opts: PaginateOptions<R>): ListQuery<R> => (typeof opts.query === 'function' ? opts.query() : opts.query);

function sortValue<R extends { id: string }>(opts: PaginateOptions<R>, row: R): unknown {
  if (opts.sort?.key) return opts.sort.key(row);
  return opts.sort ? (row as Record<string, unknown>)[opts.sort.column.split('.').pop()!] : row.id;
}

function cursorLink<R extends { id: string }>(ctx: Ctx, opts: PaginateOptions<R>, sameCol: boolean, row: R, d: 'n' | 'p'): string {
  return link(ctx, 'cursor', encodeCursor({ v: sameCol ? undefined : sortValue(opts, row), id: row.id, d }));
}

/** The one pagination helper: DRF envelope, page numbers, keyset cursors for deep pages, cached count. */
export async function paginate<R extends { id: string }, T>(ctx: Ctx, opts: PaginateOptions<R>, map: (row: R) => T): Promise<Page<T>> {
  const size = opts.input.page_size ?? DEFAULT_PAGE_SIZE;
  const idCol = opts.idColumn ?? 'id';
  const sortCol = opts.sort?.column ?? idCol;
  const desc = (opts.sort?.direction ?? 'desc') === 'desc';
  const sameCol = sortCol === idCol;

  const countPromise = opts.count ? opts.count() : countOf(ctx, opts);

  let page: number | null = null;
  let cursor: CursorState | null = null;
  let plan: PagingPlan;
  if (opts.input.cursor) {
    cursor = decodeCursor(opts.input.cursor);
    const forward = cursor.d === 'n';
    plan = {
      idCol, sortCol, sameCol, cursor, op: forward === desc ? '<' : '>', dir: forward === desc ? 'desc' : 'asc', limit: size + 1, offset: 0,
      params: sameCol ? [cursor.id, size + 1] : [cursor.v, cursor.v, cursor.id, size + 1],
    };
  } else {
    page = opts.input.page ?? 1;
    plan = { idCol, sortCol, sameCol, cursor: null, op: '<', dir: desc ? 'desc' : 'asc', limit: size + 1, offset: (page - 1) * size, params: [size + 1, (page - 1) * size] };
  }
  const compiled = opts.prepared
    ? preparedPage(ctx, opts, plan)
    : withPaging(queryOf(opts), plan).compile();

  let rows = await runRead(ctx.deps.db, compiled);
  const more = rows.length > size;
  if (more) rows = rows.slice(0, size);
  if (cursor?.d === 'p') rows.reverse();
  const count = await countPromise;

  let next: string | null = null;
  let previous: string | null = null;
  if (page !== null) {
    if (more) next = page + 1 <= CURSOR_AFTER_PAGE ? link(ctx, 'page', String(page + 1)) : cursorLink(ctx, opts, sameCol, rows[rows.length - 1], 'n');
    if (page > 1) previous = page - 1 <= CURSOR_AFTER_PAGE || rows.length === 0 ? link(ctx, 'page', String(page - 1)) : cursorLink(ctx, opts, sameCol, rows[0], 'p');
  } else if (cursor && rows.length) {
    const forward = cursor.d === 'n';
    if (forward ? more : true) next = cursorLink(ctx, opts, sameCol, rows[rows.length - 1], 'n');
    if (forward ? true : more) previous = cursorLink(ctx, opts, sameCol, rows[0], 'p');
  }
  return { count, next, previous, results: rows.map(map) };
}

function countQuery<R>(opts: PaginateOptions<R>) {
  return queryOf(opts).clearSelect().clearOrderBy().select((eb) => eb.fn.countAll().as('n'));
}

async function countOf<R>(ctx: Ctx, opts: PaginateOptions<R>): Promise<number> {
  let key: string;
  if (opts.countKey !== undefined) {
    key = ctx.deps.counts.key(opts.scope, opts.table, opts.countKey, []);
  } else {
    const compiled = countQuery(opts).compile();
    key = ctx.deps.counts.key(opts.scope, opts.table, compiled.sql, compiled.parameters);
  }
  const hit = ctx.deps.counts.get(key);
  if (hit !== undefined) return hit;
  const [row] = (await runRead(ctx.deps.db, countQuery(opts).compile())) as { n: number | string }[];
  const n = Number(row?.n ?? 0);
  ctx.deps.counts.set(key, n);
  return n;
}
