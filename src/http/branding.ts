import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { brandingOutput } from '../../routers/branding.js';
import type { Ctx, Deps } from '../context.js';
import { authorizeActor } from '../trpc.js';
import { AppError, badRequest, notFound } from '../errors.js';
import { documentOperation } from '../openapi.js';
import type { Permission } from '../permissions.js';
import { LOGO_CONTENT_TYPES, LOGO_KINDS, MAX_LOGO_BYTES, logoFile, uploadLogo, type LogoKind } from '../services/branding.js';

/** Non-JSON routes: logo uploads and serving. */

const UPLOAD_PATH = '/api/branding/logos/{kind}/';
const MEDIA_PATH = '/media/logos/{org}/{file}';
const colon = (p: string) => p.replace(/\{([^}]+)\}/g, ':$1');
const binary = { schema: { type: 'string', format: 'binary' } };

documentOperation({
  method: 'POST', path: UPLOAD_PATH, operationId: 'branding.uploadLogo', tags: ['Platform configuration'],
  summary: 'Upload a logo',
  description: 'A multipart/form-data request with one file field (`file`): a PNG, JPEG, SVG or WebP image of at most 2 MB, '
    + 'recognized by its content, not by its declared type. SVG files with scripts, event handlers or script URLs are refused. '
    + `The file is served publicly at \`${MEDIA_PATH}\` and the logo URL of that kind is set to it.\n\nNeeds the \`account:write\` permission.`,
  parameters: [{ name: 'kind', in: 'path', description: 'Which logo', schema: z.enum(LOGO_KINDS) }],
  requestBody: {
    required: true,
    content: { 'multipart/form-data': { schema: { type: 'object', properties: { file: { type: 'string', format: 'binary', description: 'PNG, JPEG, SVG or WebP, at most 2 MB' } }, required: ['file'] } } },
  },
  responses: { 200: { description: 'The branding configuration, with the new URL', content: { 'application/json': { schema: brandingOutput } } } },
  errors: [413, 415],
});

documentOperation({
  method: 'GET', path: MEDIA_PATH, operationId: 'branding.logoFile', tags: ['Platform configuration'],
  summary: 'An uploaded logo', description: 'Served with its image type, `X-Content-Type-Options: nosniff` and a one-year immutable cache (file names are never reused).',
  public: true,
  parameters: [
    { name: 'org', in: 'path', description: 'The organization id', schema: { type: 'string', pattern: '^org_[0-9A-HJKMNP-TV-Z]{26}$' } },
    { name: 'file', in: 'path', description: 'The file name', schema: { type: 'string', pattern: '^[0-9a-f]{32}\\.(png|jpg|svg|webp)$' } },
  ],
  responses: {
    200: {
      description: 'The image',
      content: Object.fromEntries(Object.values(LOGO_CONTENT_TYPES).map((t) => [t, binary])),
      headers: { 'Cache-Control': { description: 'public, max-age=31536000, immutable' }, 'X-Content-Type-Options': { description: 'nosniff' } },
    },
  },
});

/** The one authorization check (src/trpc.ts), as a procedure with this permission would run it. */
function authorize(ctx: Ctx, permission: Permission): void {
  authorizeActor(ctx, { permission });
}

/** The content of the request's file part; malformed multipart bodies are 400, not faults. */
async function readOneFile(req: FastifyRequest): Promise<Buffer> {
  try {
    const part = await req.file({ limits: { fileSize: MAX_LOGO_BYTES, files: 1, fields: 10, parts: 20 } });
    if (!part) throw badRequest({ file: 'No file in the request' });
    return await part.toBuffer();
  } catch (err) {
    if (err instanceof AppError) throw err;
    const e = err as { code?: string; statusCode?: number; message?: string };
    if (e.code === 'FST_REQ_FILE_TOO_LARGE') throw new AppError(413, 'Payload too large', { file: `At most ${MAX_LOGO_BYTES / 1024 / 1024} MB` });
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) throw err;
    throw badRequest({ file: `Malformed multipart/form-data body: ${e.message ?? 'unreadable'}` });
  }
}

const isLogoKind = (k: string): k is LogoKind => (LOGO_KINDS as readonly string[]).includes(k);

/** The upload route: registered in the scope that parses multipart/form-data (src/app.ts). */
export function registerUploads(app: FastifyInstance): void {
  app.post(colon(UPLOAD_PATH), async (req: FastifyRequest, reply: FastifyReply) => {
    const ctx = req.ctx;
    authorize(ctx, 'account:write');
    const { kind } = req.params as { kind: string };
    if (!isLogoKind(kind)) throw badRequest({ kind: `One of ${LOGO_KINDS.join(', ')}` });
    if (!req.isMultipart()) throw new AppError(415, 'Unsupported media type', 'Send multipart/form-data with one file field');
    const content = await readOneFile(req);
    const branding = await uploadLogo(ctx, kind, content);
    return reply.code(200).send(branding);
  });
}

export function register(app: FastifyInstance, deps: Deps): void {
  app.get(colon(MEDIA_PATH), async (req: FastifyRequest, reply: FastifyReply) => {
    const { org, file } = req.params as { org: string; file: string };
    const found = logoFile(deps, org, file);
    if (!found) throw notFound('File');
    let body: Buffer;
    try {
      body = await readFile(found.path);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') throw notFound('File');
      throw err;
    }
    return reply
      .header('content-type', found.contentType)
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'public, max-age=31536000, immutable')
      // Opened directly, an image gets no script, no plugins and no requests of its own.
      .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; sandbox")
      .send(body);
  });
}
