import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { health } from '../src/services/health.js';

const healthOut = z.object({
  status: z.enum(['healthy', 'unhealthy']),
  timestamp: z.string(),
  version: z.string(),
  checks: z.record(z.string(), z.object({ status: z.enum(['up', 'down']), latency_ms: z.number() })),
});

export const healthRouter = router({
  check: procedure
    .meta({
      public: true, rateLimit: 'health',
      openapi: { method: 'GET', path: '/api/health/', aliases: ['/health', '/api/v1/health'], tags: ['Platform'], summary: 'Service health with a database check (503 when a dependency is down)', errors: [503] },
    })
    .input(z.object({}))
    .output(healthOut)
    .query(({ ctx }) => health(ctx)),
});
