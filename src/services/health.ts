import type { Ctx } from '../context.js';
import { ping } from '../db.js';

/** Liveness with a database check; 503 when a dependency is down. */
export async function health(ctx: Ctx) {
  const started = performance.now();
  const dbOk = await ping(ctx.deps.db);
  const checks: Record<string, { status: 'up' | 'down'; latency_ms: number }> = {
    database: { status: dbOk ? 'up' : 'down', latency_ms: Math.round((performance.now() - started) * 100) / 100 },
  };
  const healthy = Object.values(checks).every((c) => c.status === 'up');
  if (!healthy) ctx.responseStatus = 503;
  return {
    status: healthy ? ('healthy' as const) : ('unhealthy' as const),
    timestamp: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    version: ctx.deps.config.version,
    checks,
  };
}
