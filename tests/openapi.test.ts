import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import SwaggerParser from '@apidevtools/swagger-parser';
import type { OpenAPI } from 'openapi-types';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { appRouter } from '../routers/index.js';
import { restRoutes } from '../src/http/rest.js';
import { DOCS_ASSETS } from '../src/http/docs.js';
import { generateOpenApi, nonJsonOperations, type ExtraOperation } from '../src/openapi.js';
import { procedure, router } from '../src/trpc.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const committedPath = join(root, 'openapi.json');
const contractPath = join(root, '..', 'shared', 'contract-paths.txt');

type Doc = { openapi: string; paths: Record<string, Record<string, any>>; components: Record<string, Record<string, any>>; tags: { name: string }[] };
const METHODS = ['get', 'put', 'post', 'patch', 'delete', 'head'];
const colon = (p: string) => p.replace(/\{([^}]+)\}/g, ':$1');
const norm = (p: string) => p.replace(/\{[^}]+\}/g, '{}');

let env: TestEnv;
let doc: Doc;
beforeAll(async () => {
  env = await createTestEnv();
  doc = generateOpenApi(restRoutes(appRouter)) as unknown as Doc;
});
afterAll(async () => { await env.close(); });

function operations(d: Doc): { method: string; path: string; op: any }[] {
  const out: { method: string; path: string; op: any }[] = [];
  for (const [path, item] of Object.entries(d.paths)) for (const m of Object.keys(item)) if (METHODS.includes(m)) out.push({ method: m.toUpperCase(), path, op: item[m] });
  return out;
}

describe('openapi.json', () => {
  it('is what the routers produce now (drift check)', () => {
    const generated = JSON.stringify(generateOpenApi(restRoutes(appRouter)), null, 2) + '\n';
    const committed = existsSync(committedPath) ? readFileSync(committedPath, 'utf8') : '';
    if (committed !== generated) {
      expect.fail('openapi.json is out of date with the routers: run `npm run openapi` and commit openapi.json');
    }
  });

  it('is deterministic whatever order the routes come in', () => {
    const routes = restRoutes(appRouter);
    const a = JSON.stringify(generateOpenApi(routes));
    const b = JSON.stringify(generateOpenApi([...routes].reverse()));
    expect(b).toBe(a);
  });

  it('is a valid OpenAPI 3.1 document', async () => {
    expect(doc.openapi).toBe('3.1.0');
    await new SwaggerParser().validate(structuredClone(doc) as unknown as OpenAPI.Document);
  });

  it('documents every route of the route table with its method, and nothing that is not served', () => {
    const missing: string[] = [];
    for (const r of env.app.routes) {
      const op = doc.paths[r.path]?.[r.openapi.method.toLowerCase()];
      if (!op) missing.push(`${r.openapi.method} ${r.path}`);
      else expect(op['x-trpc-procedure']).toBe(r.procedurePath);
    }
    expect(missing).toEqual([]);
    const unserved = operations(doc).filter((o) => !env.app.fastify.hasRoute({ method: o.method as 'GET', url: colon(o.path) })).map((o) => `${o.method} ${o.path}`);
    expect(unserved).toEqual([]);
    expect(operations(doc).length).toBe(env.app.routes.length + nonJsonOperations.length);
  });

  it('has unique operation ids; aliases are suffixed', () => {
    const ids = operations(doc).map((o) => o.op.operationId as string);
    expect(new Set(ids).size).toBe(ids.length);
    const login = env.app.routes.find((r) => r.openapi.aliases?.length);
    expect(login).toBeDefined();
    expect(doc.paths[login!.openapi.path].post?.operationId ?? doc.paths[login!.openapi.path][login!.openapi.method.toLowerCase()].operationId).toBe(login!.procedurePath);
    const alias = doc.paths[login!.openapi.aliases![0]][login!.openapi.method.toLowerCase()];
    expect(alias.operationId).toBe(`${login!.procedurePath}_alias1`);
  });

  it('describes operations as the conventions say', () => {
    const list = doc.paths['/api/v1/projects'].get;
    const names = list.parameters.map((p: any) => `${p.in}:${p.name}`);
    expect(names).toEqual(expect.arrayContaining(['query:page', 'query:page_size', 'query:cursor']));
    const pageSize = list.parameters.find((p: any) => p.name === 'page_size');
    expect(pageSize.schema.type).toBe('integer');
    expect(pageSize.schema.maximum).toBe(100);
    expect(pageSize.description).toMatch(/Rows per page/);
    expect(list.security).toEqual([{ bearerAuth: [] }]);
    expect(Object.keys(list.responses)).toEqual(['200', '400', '401', '403', '429']);
    expect(list.responses['200'].content['application/json'].schema.properties.results.type).toBe('array');

    const create = doc.paths['/api/v1/projects'].post;
    expect(Object.keys(create.responses)).toEqual(['201', '400', '401', '403', '409', '429']);
    expect(create.requestBody.content['application/json'].schema.required).toEqual(['name']);
    expect(create.parameters).toEqual([{ $ref: '#/components/parameters/IdempotencyKey' }]);

    const update = doc.paths['/api/v1/projects/{id}'].patch;
    expect(update.parameters).toEqual([expect.objectContaining({ name: 'id', in: 'path', required: true })]);
    expect(update.requestBody.content['application/json'].schema.properties).not.toHaveProperty('id');
    expect(update.responses).toHaveProperty('404');

    const show = doc.paths['/api/v1/projects/{id}'].get;
    expect(show.parameters.filter((p: any) => p.in === 'query')).toEqual([]);

    const health = doc.paths['/api/health/'].get;
    expect(health.security).toBeUndefined();
    expect(Object.keys(health.responses)).toEqual(['200', '429', '503']);

    expect(doc.components.schemas.Error).toMatchObject({ type: 'object', required: ['error', 'details'] });
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    for (const status of ['BadRequest', 'Unauthorized', 'Forbidden', 'NotFound', 'TooManyRequests']) {
      expect(doc.components.responses[status].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Error' });
    }
  });

  it('documents the non-JSON routes with their content types', () => {
    expect(Object.keys(doc.paths['/metrics'].get.responses['200'].content)).toEqual(['text/plain']);
    expect(Object.keys(doc.paths['/docs'].get.responses['200'].content)).toEqual(['text/html']);
    expect(doc.paths['/openapi.json'].get.security).toBeUndefined();
  });
});

describe('documented FireGlue and DripPulse operations', () => {
  // The operations this part of the work serves: never skipped.
  const required = [
    'GET /api/health/', 'GET /health', 'GET /api/v1/health',
    'POST /api/token/', 'POST /api/token/refresh/',
    'POST /api/v1/admin/login', 'POST /api/v1/sessions/admin', 'POST /api/v1/auth/login', 'GET /api/v1/admin/verify',
    'GET /api/user/', 'PATCH /api/profile/',
    'GET /api/2fa/setup/', 'POST /api/2fa/enable/', 'POST /api/2fa/disable/',
    'GET /api/v1/api_keys', 'POST /api/v1/api_keys', 'GET /api/v1/api_keys/{id}', 'DELETE /api/v1/api_keys/{id}/revoke', 'GET /api/v1/api_keys/usage',
    'GET /api/v1/account', 'PATCH /api/v1/account', 'GET /api/v1/account/billing', 'PATCH /api/v1/account/billing',
    'GET /api/v1/projects', 'POST /api/v1/projects', 'GET /api/v1/projects/{id}', 'PATCH /api/v1/projects/{id}', 'DELETE /api/v1/projects/{id}',
    'GET /api/v1/team_members', 'POST /api/v1/team_members', 'GET /api/v1/team_members/{id}', 'PATCH /api/v1/team_members/{id}', 'DELETE /api/v1/team_members/{id}',
  ];
  const documented = () => new Set(operations(doc).map((o) => `${o.method} ${norm(o.path)}`));

  it('the operations of this issue are in openapi.json and served', () => {
    const have = documented();
    expect(required.filter((r) => !have.has(norm(r)))).toEqual([]);
    const unserved = required.filter((r) => { const [method, path] = r.split(' '); return !env.app.fastify.hasRoute({ method: method as 'GET', url: colon(path) }); });
    expect(unserved).toEqual([]);
  });

  it.skipIf(!existsSync(contractPath))('every documented operation the server serves is in openapi.json (routers not built yet are skipped)', () => {
    const contract = readFileSync(contractPath, 'utf8').split('\n').filter((l) => l.trim() && !l.startsWith('#'))
      .map((l) => { const [method, path] = l.trim().split(/\s+/); return { method, path }; });
    expect(contract.length).toBeGreaterThan(100);
    const have = documented();
    // The contract must agree with the list above.
    const inContract = new Set(contract.map((c) => `${c.method} ${norm(c.path)}`));
    expect(required.filter((r) => !inContract.has(norm(r)))).toEqual([]);
    const served = contract.filter((c) => env.app.fastify.hasRoute({ method: c.method as 'GET', url: colon(c.path) }));
    expect(served.length).toBeGreaterThanOrEqual(required.length);
    expect(served.filter((c) => !have.has(`${c.method} ${norm(c.path)}`)).map((c) => `${c.method} ${c.path}`)).toEqual([]);
  });
});

describe('GET /openapi.json and /docs', () => {
  it('serves the generated document', async () => {
    const res = await env.request('GET', '/openapi.json');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    expect(res.body).toEqual(JSON.parse(JSON.stringify(doc)));
    expect(res.headers['x-ratelimit-limit']).toBeDefined();
  });

  it('serves Swagger UI with its assets from this server', async () => {
    const res = await env.request('GET', '/docs');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/html/);
    expect(res.text).toContain('id="swagger-ui"');
    expect(res.text).not.toMatch(/https?:\/\//);
    const refs = [...res.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    expect(refs).toEqual(expect.arrayContaining(['docs/swagger-ui.css', 'docs/swagger-ui-bundle.js', 'docs/init.js']));
    for (const ref of refs) {
      const asset = await env.request('GET', `/${ref}`);
      expect(asset.status, ref).toBe(200);
      expect(asset.text.length, ref).toBeGreaterThan(100);
    }
    const bundle = await env.request('GET', '/docs/swagger-ui-bundle.js');
    expect(bundle.headers['content-type']).toMatch(/javascript/);
    expect(bundle.text).toContain('SwaggerUIBundle');
    const init = await env.request('GET', '/docs/init.js');
    expect(init.text).toContain('openapi.json');
    expect(Object.keys(DOCS_ASSETS)).toContain('swagger-ui.css');
  });

  it('redirects /docs/ to /docs', async () => {
    const res = await env.request('GET', '/docs/');
    expect(res.status).toBe(301);
    expect(new URL(String(res.headers.location), 'http://h/docs/').pathname).toBe('/docs');
  });

  it('answers 404 {error, details} for anything else under /docs/', async () => {
    for (const p of ['/docs/package.json', '/docs/..%2Fpackage.json', '/docs/index.html', '/docs/constructor']) {
      expectError(await env.request('GET', p), 404);
    }
  });
});

describe('the generator on a synthetic router', () => {
  interface Tree { name: string; children: Tree[] }
  const tree: z.ZodType<Tree> = z.lazy(() => z.object({ name: z.string(), children: z.array(tree) }));
  const color = z.enum(['red', 'blue']).meta({ id: 'SyntheticColor' });
  const pingMeta = { method: 'POST' as const, path: '/x/ping', tags: ['W'], summary: 'Ping', errors: [401, 503, 418] };
  const named = z.object({ label: z.string().describe('A label'), size: z.number().int().default(1) }).meta({ id: 'SyntheticWidget' });
  const r = router({
    widgets: router({
      list: procedure.meta({ permission: 'projects:read', openapi: { method: 'GET', path: '/x/widgets', tags: ['W'], summary: 'List' } })
        .input(z.object({ flag: z.boolean().optional().describe('A flag'), tags: z.array(z.string()).optional(), n: z.number() }))
        .output(z.object({ items: z.array(named) }))
        .query(() => ({ items: [] })),
      get: procedure.meta({ public: true, openapi: { method: 'GET', path: '/x/widgets/{widget_id}/', aliases: ['/x/w/{widget_id}'], tags: ['W'], summary: 'Show' } })
        .input(z.object({ widget_id: z.string().max(10) })).output(named)
        .query(() => ({ label: 'a', size: 1 })),
      put: procedure.meta({ permission: 'projects:write', openapi: { method: 'PUT', path: '/x/widgets/{widget_id}/', tags: ['W'], summary: 'Replace', successStatus: 204 } })
        .input(named.extend({ widget_id: z.string() })).output(z.void())
        .mutation(() => undefined),
      paint: procedure.meta({ permission: 'projects:write', openapi: { method: 'POST', path: '/x/paint', tags: ['W'], summary: 'Paint' } })
        .input(z.object({ color, widget: named })).output(z.object({ color }))
        .mutation(({ input }) => ({ color: input.color })),
      ping: procedure.meta({ public: true, openapi: pingMeta }).input(z.object({})).output(z.object({ ok: z.boolean() }))
        .mutation(() => ({ ok: true })),
      tree: procedure.meta({ permission: 'projects:write', openapi: { method: 'POST', path: '/x/trees', tags: ['W'], summary: 'Tree', successStatus: 202 } })
        .input(z.object({ root: tree })).output(tree)
        .mutation(() => ({ name: 'a', children: [] })),
    }),
  });
  const extra: ExtraOperation[] = [{
    method: 'GET', path: '/x/widgets/{widget_id}/download', operationId: 'widgets.download', tags: ['W'], summary: 'CSV',
    query: z.object({ format: z.enum(['csv', 'xlsx']).describe('Format') }),
    responses: { 200: { description: 'The file', content: { 'text/csv': { schema: { type: 'string' } } }, headers: { 'Content-Disposition': { description: 'attachment' } } } },
    errors: [422],
  }];
  const d = generateOpenApi(restRoutes(r), extra) as unknown as Doc;

  it('is valid', async () => {
    await new SwaggerParser().validate(structuredClone(d) as unknown as OpenAPI.Document);
  });

  it('turns input properties into typed query parameters', () => {
    const ps = d.paths['/x/widgets'].get.parameters;
    expect(ps.map((p: any) => [p.name, p.required, p.schema.type])).toEqual([['flag', false, 'boolean'], ['tags', false, 'array'], ['n', true, 'number']]);
    expect(ps[0].description).toBe('A flag');
  });

  it('takes path parameters out of the query and the body; 204 has no content', () => {
    const get = d.paths['/x/widgets/{widget_id}/'].get;
    expect(get.parameters).toEqual([{ name: 'widget_id', in: 'path', required: true, schema: { type: 'string', maxLength: 10 } }]);
    expect(get.security).toBeUndefined();
    expect(Object.keys(get.responses)).toEqual(['200', '400', '404', '429']);
    const put = d.paths['/x/widgets/{widget_id}/'].put;
    expect(put.responses['204'].content).toBeUndefined();
    expect(Object.keys(put.requestBody.content['application/json'].schema.properties).sort()).toEqual(['label', 'size']);
    expect(put.security).toEqual([{ bearerAuth: [] }]);
    expect(d.paths['/x/w/{widget_id}'].get.operationId).toBe('widgets.get_alias1');
  });

  it('hoists registered and recursive schemas into components', () => {
    expect(d.components.schemas.SyntheticWidget).toMatchObject({ type: 'object', required: ['label', 'size'] });
    expect(d.paths['/x/widgets/{widget_id}/'].get.responses['200'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/SyntheticWidget' });
    const text = JSON.stringify(d);
    expect(text).not.toContain('#/$defs/');
    expect(text).not.toContain('"$ref":"#"');
    expect(text).not.toContain('$schema');
    // Input and output forms of one registered schema: merged when equal, kept apart when not.
    expect(d.components.schemas.SyntheticColor).toEqual({ type: 'string', enum: ['red', 'blue'] });
    expect(d.components.schemas).not.toHaveProperty('SyntheticColorInput');
    expect(d.components.schemas.SyntheticWidgetInput).toMatchObject({ required: ['label'] });
    const paint = d.paths['/x/paint'].post.requestBody.content['application/json'].schema;
    expect(paint.properties).toEqual({ color: { $ref: '#/components/schemas/SyntheticColor' }, widget: { $ref: '#/components/schemas/SyntheticWidgetInput' } });
    expect(Object.keys(d.components.schemas).sort()).toEqual(['Error', 'SyntheticColor', 'SyntheticWidget', 'SyntheticWidgetInput', 'WidgetsTreeInput0', 'WidgetsTreeOutput']);
  });

  it('documents extra operations with their parameters and content types', () => {
    const op = d.paths['/x/widgets/{widget_id}/download'].get;
    expect(op.parameters.map((p: any) => `${p.in}:${p.name}`)).toEqual(['path:widget_id', 'query:format']);
    expect(Object.keys(op.responses['200'].content)).toEqual(['text/csv']);
    expect(Object.keys(op.responses)).toEqual(['200', '400', '401', '403', '404', '422', '429']);
    expect(op.responses['200'].headers['Content-Disposition']).toEqual({ description: 'attachment', schema: { type: 'string' } });
  });

  it('adds the error statuses a route declares', () => {
    const ping = d.paths['/x/ping'].post;
    expect(Object.keys(ping.responses)).toEqual(['200', '400', '401', '418', '429', '503']);
    expect(ping.responses['503']).toEqual({ $ref: '#/components/responses/ServiceUnavailable' });
    expect(ping.responses['418'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Error' });
    expect(ping.requestBody).toBeUndefined();
    expect(ping.security).toBeUndefined();
  });
});
