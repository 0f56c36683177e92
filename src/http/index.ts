import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.js';
import { register as branding, registerUploads as brandingUploads } from './branding.js';
import { register as contacts } from './contacts.js';
import { registerUploads as dataSourceUploads } from './data_sources.js';
import { register as runs } from './runs.js';
import { register as status } from './status.js';

/**
 * The non-JSON routes (downloads, uploads, HTML pages), one module per domain. Each calls the same
 * services as the procedures, authorizes with `authorizeActor(request.ctx, meta)` (src/trpc.ts),
 * and documents itself with `documentOperation` (src/openapi.ts) at import time — not inside
 * `register`, since `agentry openapi` builds no app.
 */
export function registerHttpRoutes(app: FastifyInstance, deps: Deps): void {
  contacts(app, deps);
  status(app, deps);
  branding(app, deps);
  runs(app, deps);
}

/** The routes that take files (multipart/form-data): `app` is the scope with the multipart parser. */
export function registerUploadRoutes(app: FastifyInstance): void {
  brandingUploads(app);
  dataSourceUploads(app);
}
