/**
 * The server under test: the real application, built exactly as `agentry serve` builds it
 * (`buildApp(loadConfig())`, without the in-process job workers), configured by the environment
 * the runner sets (DATABASE_URL, PORT, HOST, LOG_LEVEL, RATE_LIMIT_PER_HOUR, JWT_SECRET,
 * SECRETS_KEY, DNS_SERVERS). BENCH_SQL_TRACE=1 records every SQL statement it runs
 * (bench/sql-trace.ts); never in measured runs.
 */
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { installProfiler } from './profiler.js';
import { installSqlTrace, sqlTraceRoute } from './sql-trace.js';

const tracing = process.env.BENCH_SQL_TRACE === '1';
if (tracing) installSqlTrace();
const config = loadConfig();
const app = await buildApp(config);
if (tracing) sqlTraceRoute(app.fastify);
installProfiler();
await app.fastify.listen({ port: config.port, host: config.host });

let closing = false;
const stop = async () => {
  if (closing) return;
  closing = true;
  await app.close().catch(() => undefined);
  process.exit(0);
};
process.on('SIGTERM', () => { void stop(); });
process.on('SIGINT', () => { void stop(); });
process.on('disconnect', () => { void stop(); });
