import type { RestRoute } from './http/rest.js';

/** The OpenAPI 3.1 document of every REST route (filled in by the OpenAPI work). */
export function generateOpenApi(routes: RestRoute[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) (paths[r.path] ??= {})[r.openapi.method.toLowerCase()] = { summary: r.openapi.summary, tags: r.openapi.tags };
  return { openapi: '3.1.0', info: { title: 'Agentry', version: '0.1.0' }, paths };
}
