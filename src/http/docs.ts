import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { appRouter } from '../../routers/index.js';
import { notFound } from '../errors.js';
import { generateOpenApi } from '../openapi.js';
import { restRoutes, type RestRoute } from './rest.js';

/** The Swagger UI files served under /docs/, from the installed swagger-ui-dist (no CDN). */
export const DOCS_ASSETS: Readonly<Record<string, string>> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
  'favicon-16x16.png': 'image/png',
};

const swaggerDir = () => dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

// Asset and spec URLs are relative, so the page also works behind a proxy that mounts the API under a prefix.
const PAGE = `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Agentry API reference</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
  <style>body { margin: 0; }</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/init.js"></script>
</body>
</html>
`;

const INIT = `window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: new URL('openapi.json', document.baseURI).toString(),
    dom_id: '#swagger-ui',
    deepLinking: true,
    persistAuthorization: true,
    displayRequestDuration: true,
    tryItOutEnabled: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout'
  });
});
`;

/**
 * `GET /openapi.json` (the generated document, built on first use and kept) and `GET /docs`
 * (Swagger UI over it, with its assets under `/docs/…`). These routes get the standard
 * rate limit, as every route registered after the rate-limit plugin.
 */
export function registerDocsRoutes(app: FastifyInstance, opts: { routes?: RestRoute[] } = {}): void {
  let spec: string | undefined;
  const assets = new Map<string, Buffer>();

  app.get('/openapi.json', async (_req, reply) => {
    // Built lazily, so that non-JSON operations documented by modules loaded later are included.
    spec ??= JSON.stringify(generateOpenApi(opts.routes ?? restRoutes(appRouter)));
    reply.header('content-type', 'application/json; charset=utf-8').header('cache-control', 'no-cache');
    return reply.send(spec);
  });

  app.get('/docs', async (_req, reply) => {
    reply.header('content-type', 'text/html; charset=utf-8').header('x-content-type-options', 'nosniff');
    return reply.send(PAGE);
  });

  app.get('/docs/:asset', async (req, reply) => {
    const { asset } = req.params as { asset: string };
    // `/docs/` would resolve the page's relative asset URLs one level too deep.
    if (asset === '') return reply.redirect('../docs', 301);
    if (asset === 'init.js') {
      reply.header('content-type', 'application/javascript; charset=utf-8').header('cache-control', 'no-cache');
      return reply.send(INIT);
    }
    const type = Object.prototype.hasOwnProperty.call(DOCS_ASSETS, asset) ? DOCS_ASSETS[asset] : undefined;
    if (!type) throw notFound(`Documentation asset "${asset}"`);
    let body = assets.get(asset);
    if (!body) { body = readFileSync(join(swaggerDir(), asset)); assets.set(asset, body); }
    reply.header('content-type', type).header('cache-control', 'public, max-age=86400').header('x-content-type-options', 'nosniff');
    return reply.send(body);
  });
}
