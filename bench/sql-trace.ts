/**
 * Opt-in SQL trace for the app under test (BENCH_SQL_TRACE=1, bench/server.ts): wraps every
 * better-sqlite3 statement the process prepares so that each execution is recorded (SQL text,
 * rows, time), and serves the record at GET /__bench/sql (which also clears it). Used to show
 * which queries one list request runs, and that none of them counts the organization's rows.
 * Not installed in measured runs.
 */
import BetterSqlite3 from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';

export interface TracedQuery { sql: string; method: string; rows: number; ms: number }

let trace: TracedQuery[] = [];

export function installSqlTrace(): void {
  const proto = (BetterSqlite3 as unknown as { prototype: { prepare: (sql: string) => BetterSqlite3.Statement } }).prototype;
  const prepare = proto.prepare;
  proto.prepare = function tracedPrepare(this: BetterSqlite3.Database, sqlText: string) {
    const stmt = prepare.call(this, sqlText) as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const method of ['all', 'get', 'run', 'iterate'] as const) {
      const orig = stmt[method];
      stmt[method] = function traced(this: unknown, ...args: unknown[]) {
        const t0 = performance.now();
        const out = orig.apply(this, args);
        const rows = method === 'all' ? (out as unknown[]).length : method === 'get' ? (out === undefined ? 0 : 1) : method === 'run' ? Number((out as { changes: number }).changes) : -1;
        trace.push({ sql: sqlText, method, rows, ms: performance.now() - t0 });
        return out;
      };
    }
    return stmt as unknown as BetterSqlite3.Statement;
  };
}

export function sqlTraceRoute(app: FastifyInstance): void {
  app.get('/__bench/sql', async () => {
    const out = trace;
    trace = [];
    return out;
  });
}

/** Per SQL text: executions and total time, largest first (for `summaryOnExit`). */
export function traceSummary(limit = 12): string {
  const agg = new Map<string, { n: number; ms: number; rows: number }>();
  for (const q of trace) {
    const e = agg.get(q.sql) ?? { n: 0, ms: 0, rows: 0 };
    e.n++; e.ms += q.ms; e.rows += Math.max(0, q.rows);
    agg.set(q.sql, e);
  }
  const total = trace.reduce((t, q) => t + q.ms, 0);
  const lines = [...agg].sort((a, b) => b[1].ms - a[1].ms).slice(0, limit)
    .map(([s, e]) => `${e.ms.toFixed(0).padStart(7)} ms ${String(e.n).padStart(7)}× ${(e.ms * 1000 / e.n).toFixed(0).padStart(7)} µs  ${s.replace(/\s+/g, ' ').replace(/"/g, '').slice(0, 110)}`);
  return [`SQL time ${total.toFixed(0)} ms in ${trace.length} executions; by statement:`, ...lines].join('\n');
}

/** Prints `traceSummary()` to stderr when the process exits (the importer, BENCH_IMPORT_TRACE=1). */
export function summaryOnExit(): void {
  process.on('exit', () => { process.stderr.write(`${traceSummary()}\n`); });
}
