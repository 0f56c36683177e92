import type { FastifyInstance } from 'fastify';

/** `/openapi.json` and `/docs`. */
export function registerDocsRoutes(_app: FastifyInstance): void {
  // Filled in by the OpenAPI work.
}
