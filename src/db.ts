import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type CompiledQuery, type MigrationProvider } from 'kysely';
import pg from 'pg';
import type { Database } from '../db/schema.js';
import { migrations } from '../db/migrations/index.js';

export type Dialect = 'sqlite' | 'postgres';

export interface Db {
  kysely: Kysely<Database>;
  dialect: Dialect;
  /**
   * SQLite only: runs a compiled read synchronously on the cached statement when no transaction
   * is open on the connection (what Kysely's driver would do, minus its async hops); null when a
   * transaction is open, so the caller goes through Kysely, which waits for it.
   */
  readNow?: (sql: string, parameters: readonly unknown[]) => unknown[] | null;
  /** PostgreSQL only: the schema this handle works in, when not the default. */
  schema?: string;
  close(): Promise<void>;
}

// PostgreSQL returns int8 (COUNT, SUM) and numeric as strings; the API speaks numbers.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

/**
 * A function that turns one row read as an array (better-sqlite3's `raw` mode) into the object
 * the driver would have built, compiled once per statement from its column names. better-sqlite3
 * builds each row object through the V8 API one property at a time; an object literal of a fixed
 * shape costs a third as much, and reading a page of rows is most of a list request's work.
 * Duplicate names keep the last column, as better-sqlite3 does. Null when the names cannot be
 * object-literal keys safely (`__proto__`): such statements return objects the driver's way.
 */
function rowBuilder(columns: string[]): ((r: unknown[]) => Record<string, unknown>) | null {
  if (columns.includes('__proto__')) return null;
  const body = columns.map((c, i) => `${JSON.stringify(c)}: r[${i}]`).join(', ');
  return new Function('r', `return { ${body} };`) as (r: unknown[]) => Record<string, unknown>;
}

/** What Kysely's SQLite driver calls on a statement. */
interface DriverStatement {
  readonly reader: boolean;
  all(parameters: readonly unknown[]): unknown[];
  run(parameters: readonly unknown[]): BetterSqlite3.RunResult;
  iterate(parameters: readonly unknown[]): IterableIterator<unknown>;
}

/** A reader statement in raw mode, its rows built as objects by `build`. */
function arrayRows(stmt: BetterSqlite3.Statement, build: (r: unknown[]) => Record<string, unknown>): DriverStatement {
  stmt.raw(true);
  return {
    reader: true,
    all(parameters) {
      const rows = stmt.all(parameters as unknown[]) as unknown[][];
      const out = new Array<Record<string, unknown>>(rows.length);
      for (let i = 0; i < rows.length; i++) out[i] = build(rows[i]);
      return out;
    },
    run: (parameters) => stmt.run(parameters as unknown[]),
    *iterate(parameters) {
      for (const r of stmt.iterate(parameters as unknown[]) as IterableIterator<unknown[]>) yield build(r);
    },
  };
}

/**
 * better-sqlite3 wrapped so that each SQL text is prepared once (Kysely's SQLite driver calls
 * `prepare` for every query, which costs more than running a small indexed query), and reader
 * statements return their rows through a compiled row builder (see `rowBuilder`).
 */
function withStatementCache(db: BetterSqlite3.Database, max = 500) {
  const cache = new Map<string, DriverStatement>();
  const prepare = (text: string): DriverStatement => {
    let stmt = cache.get(text);
    if (stmt) return stmt;
    const s = db.prepare(text);
    const build = s.reader ? rowBuilder(s.columns().map((c) => c.name)) : null;
    stmt = build ? arrayRows(s, build) : (s as unknown as DriverStatement);
    if (cache.size >= max) cache.delete(cache.keys().next().value as string);
    cache.set(text, stmt);
    return stmt;
  };
  return {
    close: () => db.close(),
    prepare,
    readNow(text: string, parameters: readonly unknown[]): unknown[] | null {
      if (db.inTransaction) return null;
      const stmt = prepare(text);
      return stmt.reader ? stmt.all(parameters) : null;
    },
  };
}

/**
 * WAL pages a SQLite writer lets accumulate before the commit that crosses the mark checkpoints
 * them into the database (SQLite's default is 1,000 pages, 4 MB). A checkpoint costs two fsyncs
 * and a copy of every distinct page in the WAL, and the pages a busy server writes are mostly the
 * same few (the tails of its tables and indexes): at 10,000 the engine's checkpoint time fell to
 * a third (bench/runs.ts).
 */
export const WAL_AUTOCHECKPOINT_PAGES = 10_000;

export interface OpenOptions {
  /** `postgres://…` or `postgresql://…` for PostgreSQL; otherwise a SQLite file path, `sqlite:path` or `:memory:`. */
  url: string;
  /** PostgreSQL only: the schema to use (created if missing). Tests use one schema each. */
  schema?: string;
}

/** The one place that opens the database. */
export async function openDatabase(opts: OpenOptions): Promise<Db> {
  if (/^postgres(ql)?:\/\//.test(opts.url)) {
    const pool = new pg.Pool({
      connectionString: opts.url,
      max: Number(process.env.DATABASE_POOL_SIZE ?? 10),
      ...(opts.schema ? { options: `-c search_path=${opts.schema}` } : {}),
    });
    if (opts.schema) {
      if (!/^[a-z_][a-z0-9_]*$/.test(opts.schema)) throw new Error(`invalid schema name ${opts.schema}`);
      await pool.query(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}`);
    }
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { kysely, dialect: 'postgres', schema: opts.schema, close: () => kysely.destroy() };
  }
  const path = opts.url.replace(/^sqlite:(\/\/)?/, '');
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const raw = new BetterSqlite3(path);
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  raw.pragma('foreign_keys = ON');
  raw.pragma('busy_timeout = 5000');
  raw.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
  const cached = withStatementCache(raw);
  const kysely = new Kysely<Database>({ dialect: new SqliteDialect({ database: cached }) });
  return { kysely, dialect: 'sqlite', readNow: cached.readNow, close: () => kysely.destroy() };
}

const provider: MigrationProvider = { getMigrations: async () => migrations };

/** Runs every pending migration; throws with the failing migration's name. */
export async function migrate(db: Db): Promise<string[]> {
  // With a schema of its own, the bookkeeping tables live in it too (otherwise Kysely may find
  // another schema's kysely_migration on the search path and skip creating its own).
  const migrator = new Migrator({ db: db.kysely, provider, ...(db.schema ? { migrationTableSchema: db.schema } : {}) });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`migration ${failed?.migrationName ?? '?'} failed: ${(error as Error).message ?? error}`);
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** True when the database answers a trivial query. */
export async function ping(db: Db): Promise<boolean> {
  try {
    await sql`select 1`.execute(db.kysely);
    return true;
  } catch {
    return false;
  }
}

/**
 * Queries built and compiled once per database (and per shape), then run with new parameters:
 * for the queries on every request's path (token resolution) and every step of a run, where
 * building and compiling the SQL each time would cost more than running it. `build` uses
 * placeholder values; the parameters are passed in the order their placeholders appear in the SQL.
 *
 * `prepared(build)` is one query: call it to read (synchronously on SQLite when possible), or
 * `.in(db, executor, parameters)` to run it in a transaction. `prepared.byShape(build)` compiles
 * once per shape (say, the columns an update sets), the shape given with each call.
 */
type Compilable<R> = { compile(): CompiledQuery<R> } | { compile(k: Kysely<Database>): CompiledQuery<R> };

function compileWith<R>(k: Kysely<Database>, q: Compilable<R>): CompiledQuery<R> {
  return (q as { compile(k?: Kysely<Database>): CompiledQuery<R> }).compile(k);
}

function checked<R>(q: CompiledQuery<R>, parameters: readonly unknown[]): CompiledQuery<R> {
  if (q.parameters.length !== parameters.length) throw new Error(`prepared query takes ${q.parameters.length} parameters, got ${parameters.length}`);
  return { ...q, parameters };
}

export function prepared<R>(build: (k: Kysely<Database>) => Compilable<R>) {
  const cache = new WeakMap<Kysely<Database>, CompiledQuery<R>>();
  const compiledFor = (db: Db): CompiledQuery<R> => {
    let q = cache.get(db.kysely);
    if (!q) {
      q = compileWith(db.kysely, build(db.kysely));
      cache.set(db.kysely, q);
    }
    return q;
  };
  const read = (db: Db, parameters: unknown[]): Promise<R[]> => runRead(db, checked(compiledFor(db), parameters));
  return Object.assign(read, {
    /** Runs the query in `executor` (the database or a transaction of it). */
    in: (db: Db, executor: Kysely<Database>, parameters: unknown[]) => executor.executeQuery<R>(checked(compiledFor(db), parameters)),
  });
}

prepared.byShape = function byShape<S extends string, R = unknown>(build: (k: Kysely<Database>, shape: S) => Compilable<R>) {
  const cache = new WeakMap<Kysely<Database>, Map<S, CompiledQuery<R>>>();
  return (db: Db, executor: Kysely<Database>, shape: S, parameters: unknown[]) => {
    let shapes = cache.get(db.kysely);
    if (!shapes) cache.set(db.kysely, shapes = new Map());
    let q = shapes.get(shape);
    if (!q) {
      q = compileWith(db.kysely, build(db.kysely, shape));
      if (shapes.size < 200) shapes.set(shape, q);
    }
    return executor.executeQuery<R>(checked(q, parameters));
  };
};

/** Runs a compiled read: synchronously on SQLite when no transaction is open, else through Kysely. */
export async function runRead<R>(db: Db, q: CompiledQuery<R>): Promise<R[]> {
  const rows = db.readNow?.(q.sql, q.parameters);
  if (rows) return rows as R[];
  return (await db.kysely.executeQuery<R>(q)).rows;
}

/**
 * `lower(column) LIKE %term%` with the term's wildcards taken literally, the same on both engines
 * (SQLite's LIKE has no default escape character and PostgreSQL's is case-sensitive).
 */
export function containsText(column: string, term: string) {
  return sql<boolean>`lower(${sql.ref(column)}) like ${containsPattern(term)} escape '\\'`;
}

/** The LIKE pattern (the query's one parameter) of `containsText(column, term)`. */
export function containsPattern(term: string): string {
  return `%${term.toLowerCase().replace(/[%_\\]/g, (c) => `\\${c}`)}%`;
}

/** True for a unique-constraint violation on either engine. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}
