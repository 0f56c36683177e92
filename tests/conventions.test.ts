import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import pino from 'pino';
import { z } from 'zod';
import { buildApp, type App } from '../src/app.js';
import { queryCoercion } from '../src/http/rest.js';
import { createProject } from '../src/services/projects.js';
import { createTestEnv, expectError, testConfig, TEST_PASSWORD, type Res, type TestEnv } from './helpers.js';

// The cross-cutting conventions (DESIGN.md § Conventions), checked through HTTP.

/** Every error body seen in this file, checked at the end for shape and for stack traces. */
const errorBodies: { where: string; status: number; text: string }[] = [];
function expectErr(res: Res, status: number, where: string): void {
  expectError(res, status);
  errorBodies.push({ where, status, text: res.text });
}

const path = (url: string) => { const u = new URL(url); return u.pathname + u.search; };

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env?.close(); });

describe('errors', () => {
  it('a zod failure is a 400 whose details name the field', async () => {
    const res = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 42, status: 'nope' } });
    expectErr(res, 400, 'zod body');
    expect(Object.keys(res.body.details)).toEqual(expect.arrayContaining(['name', 'status']));
    const q = await env.request('GET', '/api/v1/projects?page=abc', { token: env.owner.token });
    expectErr(q, 400, 'zod query');
    expect(q.body.details).toHaveProperty('page');
  });

  it('an unknown route is a 404 {error, details}', async () => {
    const res = await env.request('GET', '/api/v1/no_such_thing', { token: env.owner.token });
    expectErr(res, 404, 'unknown route');
    expect(res.body.details).toContain('/api/v1/no_such_thing');
    expectErr(await env.request('GET', '/api/v1/projects/x/y/z'), 404, 'unknown nested route');
  });

  it('a known path with another method is a 405 with Allow', async () => {
    const res = await env.request('PUT', '/api/v1/projects', { token: env.owner.token, body: {} });
    expectErr(res, 405, 'wrong method');
    expect(String(res.headers.allow).split(/,\s*/).sort()).toEqual(['GET', 'POST']);
    const item = await env.request('POST', '/api/v1/projects/prj_1', { token: env.owner.token, body: {} });
    expectErr(item, 405, 'wrong method on item');
    expect(String(item.headers.allow).split(/,\s*/).sort()).toEqual(['DELETE', 'GET', 'PATCH']);
  });

  it('malformed JSON is a 400', async () => {
    const res = await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: '{"name": "x",', headers: { 'content-type': 'application/json' } });
    expectErr(res, 400, 'malformed JSON');
  });

  it('a JSON array or scalar body is a 400', async () => {
    const res = await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: '["x"]', headers: { 'content-type': 'application/json' } });
    expectErr(res, 400, 'array body');
  });

  it('an unsupported media type (text/plain on a JSON POST) is a 415', async () => {
    const plain = await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: 'name=x', headers: { 'content-type': 'text/plain' } });
    expectErr(plain, 415, 'text/plain');
    const xml = await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: '<name>x</name>', headers: { 'content-type': 'application/xml' } });
    expectErr(xml, 415, 'xml');
    // multipart/form-data is parsed only on the routes that take files.
    const form = '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n';
    const multipart = await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: form, headers: { 'content-type': 'multipart/form-data; boundary=b' } });
    expectErr(multipart, 415, 'multipart');
    expect((await env.request('GET', '/api/v1/projects?search=x', { token: env.owner.token })).body.count).toBe(0);
  });

  it('an empty POST body is accepted as {}', async () => {
    // Validated as {}: the field error names `name`, not the body.
    const empty = await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: '', headers: { 'content-type': 'application/json' } });
    expectErr(empty, 400, 'empty body');
    expect(Object.keys(empty.body.details)).toEqual(['name']);
    // A procedure with nothing required answers normally, with or without a content type.
    for (const headers of [{ 'content-type': 'application/json' }, {} as Record<string, string>]) {
      const login = await env.request('POST', '/api/token/', { body: { username: 'viewer_a', password: TEST_PASSWORD } });
      expect(login.status).toBe(200);
      const res = await env.request('POST', '/api/v1/auth/logout', { token: login.body.access, payload: '', headers });
      expect(res.status, res.text).toBe(200);
      expect(res.body).toEqual({ success: true });
    }
  });
});

describe('body limit', () => {
  let small: TestEnv;
  beforeAll(async () => { small = await createTestEnv({ bodyLimit: 1024 }); });
  afterAll(async () => { await small?.close(); });

  it('a body over the limit is a 413', async () => {
    const res = await small.request('POST', '/api/v1/projects', { token: small.owner.token, body: { name: 'big', description: 'x'.repeat(2000) } });
    expectErr(res, 413, 'body limit');
    const ok = await small.request('POST', '/api/v1/projects', { token: small.owner.token, body: { name: 'small' } });
    expect(ok.status).toBe(201);
  });
});

describe('rate limits', () => {
  it('every response carries X-RateLimit-Limit/Remaining/Reset, 404s included', async () => {
    const now = Math.floor(Date.now() / 1000);
    const responses = [
      await env.request('GET', '/api/v1/projects', { token: env.owner.token }),
      await env.request('GET', '/api/v1/projects/prj_nope', { token: env.owner.token }),
      await env.request('GET', '/api/v1/nowhere', { token: env.owner.token }),
      await env.request('GET', '/api/v1/projects'),
      await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: {} }),
      await env.request('GET', '/api/health/'),
    ];
    expect(responses.map((r) => r.status)).toEqual([200, 404, 404, 401, 400, 200]);
    for (const r of responses) {
      expect(Number(r.headers['x-ratelimit-limit']), r.text).toBeGreaterThan(0);
      expect(Number.isInteger(Number(r.headers['x-ratelimit-remaining']))).toBe(true);
      const reset = Number(r.headers['x-ratelimit-reset']);
      expect(reset).toBeGreaterThanOrEqual(now);
      expect(reset).toBeLessThanOrEqual(now + 3600 + 5);
    }
  });

  it('responses refused before the handler (bad JSON, too large, wrong media type) carry them too', async () => {
    const responses = [
      await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: '{', headers: { 'content-type': 'application/json' } }),
      await env.request('POST', '/api/v1/projects', { token: env.owner.token, payload: '<a/>', headers: { 'content-type': 'application/xml' } }),
    ];
    for (const r of responses) expect(r.headers['x-ratelimit-limit'], `${r.status} ${r.text}`).toBeDefined();
  });

  describe('with a low limit', () => {
    let low: TestEnv;
    beforeAll(async () => { low = await createTestEnv({ rateLimitPerHour: 3, rateLimitHealthPerHour: 5 }); });
    afterAll(async () => { await low?.close(); });

    it('after the limit: 429 with Retry-After and {error, details}; counted per actor', async () => {
      const remaining: number[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await low.request('GET', '/api/v1/projects', { token: low.owner.token });
        expect(r.status).toBe(200);
        expect(r.headers['x-ratelimit-limit']).toBe('3');
        remaining.push(Number(r.headers['x-ratelimit-remaining']));
      }
      expect(remaining).toEqual([2, 1, 0]);
      const over = await low.request('GET', '/api/v1/projects', { token: low.owner.token });
      expectErr(over, 429, 'rate limited');
      const retry = Number(over.headers['retry-after']);
      expect(retry).toBeGreaterThan(0);
      expect(retry).toBeLessThanOrEqual(3600);
      expect(over.headers['x-ratelimit-remaining']).toBe('0');
      // Another user's token still passes, and so does an API key of the same organization.
      expect((await low.request('GET', '/api/v1/projects', { token: low.member.token })).status).toBe(200);
      expect((await low.request('GET', '/api/v1/projects', { token: low.viewerKey })).status).toBe(200);
    });

    it('anonymous requests are counted per IP', async () => {
      const from = (ip: string) => low.app.fastify.inject({ method: 'POST', url: '/api/token/', remoteAddress: ip, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ username: 'nobody', password: 'wrong password' }) });
      for (let i = 0; i < 3; i++) expect((await from('10.1.1.1')).statusCode).toBe(401);
      const over = await from('10.1.1.1');
      expect(over.statusCode).toBe(429);
      expect(over.headers['retry-after']).toBeDefined();
      expect((await from('10.2.2.2')).statusCode).toBe(401);
    });

    it('the health routes use their own limit', async () => {
      // The owner is over the standard limit (first test); health still answers, up to its own limit.
      for (let i = 0; i < 5; i++) {
        const r = await low.request('GET', '/api/health/', { token: low.owner.token });
        expect(r.status).toBe(200);
        expect(r.headers['x-ratelimit-limit']).toBe('5');
      }
      expectErr(await low.request('GET', '/api/health/', { token: low.owner.token }), 429, 'health limit');
    });

    it('the standard limit is one budget per actor across the standard endpoints', async () => {
      for (let i = 0; i < 3; i++) expect((await low.request('GET', '/api/v1/projects', { token: low.admin.token })).status).toBe(200);
      // Another standard endpoint draws on the same hourly budget.
      const other = await low.request('GET', '/api/v1/api_keys', { token: low.admin.token });
      expect(other.status, 'GET /api/v1/api_keys after 3 requests on /api/v1/projects').toBe(429);
      expect(other.headers['x-ratelimit-remaining']).toBe('0');
    });
  });
});

describe('idempotency', () => {
  const countNamed = async (name: string) => (await env.db.kysely.selectFrom('projects').select('id').where('name', '=', name).execute()).length;

  it('same key and body → the first response replayed; other body → 409; other actor → independent', async () => {
    const headers = { 'idempotency-key': 'conv-idem-1' };
    const first = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'Idem project' }, headers });
    expect(first.status).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const again = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'Idem project' }, headers });
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(await countNamed('Idem project')).toBe(1);

    const other = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'Other idem project' }, headers });
    expectErr(other, 409, 'idempotency conflict');
    expect(await countNamed('Other idem project')).toBe(0);

    const otherActor = await env.request('POST', '/api/v1/projects', { token: env.admin.token, body: { name: 'Idem project' }, headers });
    expect(otherActor.status).toBe(201);
    expect(otherActor.headers['idempotent-replayed']).toBeUndefined();
    expect(otherActor.body.id).not.toBe(first.body.id);
    expect(await countNamed('Idem project')).toBe(2);
  });

  it('a failed request frees its key for a corrected retry', async () => {
    const headers = { 'idempotency-key': 'conv-idem-2' };
    expectErr(await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: '' }, headers }), 400, 'idempotent invalid');
    const fixed = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'Fixed idem' }, headers });
    expect(fixed.status).toBe(201);
  });
});

describe('pagination', () => {
  const N = 27;
  const url = (q: string) => `/api/v1/projects?search=walk-row&${q}`;
  beforeAll(async () => {
    const ctx = env.ctxOf(env.owner);
    for (let i = 0; i < N; i++) await createProject(ctx, { name: `walk-row-${String(i).padStart(2, '0')}` });
  });

  it('page_size is bounded', async () => {
    for (const size of ['0', '101', '-1']) {
      const res = await env.request('GET', url(`page_size=${size}`), { token: env.owner.token });
      expectErr(res, 400, `page_size=${size}`);
      expect(res.body.details).toHaveProperty('page_size');
    }
    expect((await env.request('GET', url('page_size=100'), { token: env.owner.token })).status).toBe(200);
  });

  it('count, and absolute next/previous links that keep the other query parameters', async () => {
    const p1 = await env.request('GET', url('page_size=5'), { token: env.owner.token });
    expect(p1.status).toBe(200);
    expect(p1.body.count).toBe(N);
    expect(p1.body.results).toHaveLength(5);
    expect(p1.body.previous).toBeNull();
    const next = new URL(p1.body.next);
    expect(next.protocol).toMatch(/^https?:$/);
    expect(next.pathname).toBe('/api/v1/projects');
    expect(next.searchParams.get('search')).toBe('walk-row');
    expect(next.searchParams.get('page_size')).toBe('5');
    expect(next.searchParams.get('page')).toBe('2');
    const p2 = await env.request('GET', path(p1.body.next), { token: env.owner.token });
    expect(new URL(p2.body.previous).searchParams.get('page')).toBe('1');
    expect(new URL(p2.body.previous).searchParams.get('search')).toBe('walk-row');
  });

  it('walking past page 10 switches to cursor links; forward and back visit every row once, in order', async () => {
    const all = await env.request('GET', url('page_size=100'), { token: env.owner.token });
    const order: string[] = all.body.results.map((r: { id: string }) => r.id);
    expect(order).toHaveLength(N);

    const forward: string[] = [];
    let link: string | null = url('page_size=2');
    let pages = 0;
    let last: Res | undefined;
    while (link) {
      const res: Res = await env.request('GET', link.startsWith('http') ? path(link) : link, { token: env.owner.token });
      expect(res.status, res.text).toBe(200);
      expect(res.body.count).toBe(N);
      pages++;
      forward.push(...res.body.results.map((r: { id: string }) => r.id));
      const next: string | null = res.body.next;
      if (next) {
        const q = new URL(next).searchParams;
        expect(q.get('search')).toBe('walk-row');
        if (pages < 10) { expect(q.get('page')).toBe(String(pages + 1)); expect(q.has('cursor')).toBe(false); }
        else { expect(q.has('cursor')).toBe(true); expect(q.has('page')).toBe(false); }
      }
      last = res;
      link = next;
      if (pages > 50) throw new Error('runaway walk');
    }
    expect(pages).toBe(Math.ceil(N / 2));
    expect(forward).toEqual(order);

    const back: string[] = [...last!.body.results.map((r: { id: string }) => r.id)];
    link = last!.body.previous;
    while (link) {
      const res: Res = await env.request('GET', path(link), { token: env.owner.token });
      expect(res.status, res.text).toBe(200);
      back.unshift(...res.body.results.map((r: { id: string }) => r.id));
      link = res.body.previous;
      if (back.length > 3 * N) throw new Error('runaway walk');
    }
    expect(back).toEqual(order);
  });

  it('a bad cursor is a 400', async () => {
    for (const cursor of ['not-a-cursor', Buffer.from('{"x":1}').toString('base64url')]) {
      const res = await env.request('GET', url(`cursor=${cursor}`), { token: env.owner.token });
      expectErr(res, 400, 'bad cursor');
      expect(res.body.details).toHaveProperty('cursor');
    }
  });
});

describe('audit, request ids, metrics', () => {
  it('a mutation leaves an audit row with actor, action, resource and request id', async () => {
    const res = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'Audited' }, headers: { 'x-request-id': 'conv-audit-1' } });
    expect(res.status).toBe(201);
    const rows = await env.db.kysely.selectFrom('audit_logs').selectAll().where('request_id', '=', 'conv-audit-1').execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      action: 'projects.create', resource_type: 'project', resource_id: res.body.id,
      actor_type: 'user', actor_id: env.owner.userId, organization_id: env.orgA,
    });
    expect(rows[0].created_at).toBeTruthy();
  });

  it('X-Request-Id is echoed when given and generated when not', async () => {
    const given = await env.request('GET', '/api/health/', { headers: { 'x-request-id': 'client-req-42' } });
    expect(given.headers['x-request-id']).toBe('client-req-42');
    const generated = await env.request('GET', '/api/health/');
    const id = String(generated.headers['x-request-id']);
    expect(id.length).toBeGreaterThan(8);
    const another = await env.request('GET', '/api/v1/nowhere');
    expect(another.headers['x-request-id']).toBeTruthy();
    expect(another.headers['x-request-id']).not.toBe(id);
    // Not a usable id (spaces, too long): replaced.
    const bad = await env.request('GET', '/api/health/', { headers: { 'x-request-id': 'has spaces' } });
    expect(bad.headers['x-request-id']).not.toBe('has spaces');
  });

  it('/metrics exposes http_requests_total with a route label', async () => {
    await env.request('GET', '/api/v1/projects', { token: env.owner.token });
    const res = await env.request('GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/plain/);
    expect(res.text).toMatch(/^http_requests_total\{[^}]*route="\/api\/v1\/projects"[^}]*\} \d+/m);
    expect(res.text).toMatch(/http_requests_total\{[^}]*status="404"/);
  });
});

describe('queryCoercion', () => {
  const coerce = queryCoercion(z.object({
    flag: z.boolean().optional(),
    strict: z.boolean().default(false),
    n: z.number().int().optional(),
    x: z.number().optional(),
    ids: z.array(z.string()).optional(),
    nums: z.array(z.number()).optional(),
    s: z.string().optional(),
  }));

  it('booleans: "false" → false, "true" → true', () => {
    expect(coerce({ flag: 'false' })).toEqual({ flag: false });
    expect(coerce({ flag: 'true' })).toEqual({ flag: true });
    expect(coerce({ strict: '0', flag: '1' })).toEqual({ strict: false, flag: true });
    expect(coerce({ flag: 'maybe' })).toEqual({ flag: 'maybe' });
  });

  it('numbers', () => {
    expect(coerce({ n: '42', x: '-1.5' })).toEqual({ n: 42, x: -1.5 });
    expect(coerce({ n: 'abc' })).toEqual({ n: 'abc' });
    expect(coerce({ n: ' ' })).toEqual({ n: ' ' });
  });

  it('arrays: repeated keys or comma lists, elements coerced', () => {
    expect(coerce({ ids: ['a', 'b'] })).toEqual({ ids: ['a', 'b'] });
    expect(coerce({ ids: 'a,b,,c' })).toEqual({ ids: ['a', 'b', 'c'] });
    expect(coerce({ ids: 'a' })).toEqual({ ids: ['a'] });
    expect(coerce({ nums: '1,2' })).toEqual({ nums: [1, 2] });
    expect(coerce({ nums: ['3', '4'] })).toEqual({ nums: [3, 4] });
  });

  it('strings: empty values are dropped, a repeated scalar keeps its last value, unknown keys pass through', () => {
    expect(coerce({ s: '' })).toEqual({});
    expect(coerce({ s: ['a', 'b'] })).toEqual({ s: 'b' });
    expect(coerce({ other: '1' })).toEqual({ other: '1' });
  });

  it('without an input schema everything passes through', () => {
    expect(queryCoercion(undefined)({ a: '1' })).toEqual({ a: '1' });
  });

  it('through HTTP: a boolean-like and a number query reach the procedure typed', async () => {
    const res = await env.request('GET', '/api/v1/projects?page_size=3&page=1', { token: env.owner.token });
    expect(res.status).toBe(200);
    expect(res.body.results.length).toBeLessThanOrEqual(3);
  });
});

// Two API processes against one Redis share one counter (skipped when no Redis is reachable).
const REDIS_URL = 'redis://127.0.0.1:6379';
async function redisReachable(): Promise<boolean> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 500, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  r.on('error', () => undefined);
  try { await r.connect(); return (await r.ping()) === 'PONG'; } catch { return false; } finally { r.disconnect(); }
}
const redisUp = await redisReachable();

describe.skipIf(!redisUp)('rate limits shared through Redis', () => {
  let one: TestEnv;
  let two: App;
  beforeAll(async () => {
    one = await createTestEnv({ redisUrl: REDIS_URL, rateLimitPerHour: 3 });
    two = await buildApp(testConfig({ redisUrl: REDIS_URL, rateLimitPerHour: 3 }), { db: one.db, logger: pino({ level: 'silent' }) });
  });
  afterAll(async () => {
    const r = new Redis(REDIS_URL);
    try {
      const keys = await r.keys(`agentry-rl:*${one?.owner.userId}*`);
      if (keys.length) await r.del(...keys);
    } finally { r.disconnect(); }
    await two?.close();
    await one?.close();
  });

  it('two app instances count one actor against one limit', async () => {
    const viaTwo = async () => {
      const res = await two.fastify.inject({ method: 'GET', url: '/api/v1/projects', headers: { authorization: `Bearer ${one.owner.token}` } });
      return { status: res.statusCode, remaining: res.headers['x-ratelimit-remaining'] };
    };
    const a = await one.request('GET', '/api/v1/projects', { token: one.owner.token });
    expect([a.status, a.headers['x-ratelimit-remaining']]).toEqual([200, '2']);
    expect(await viaTwo()).toEqual({ status: 200, remaining: '1' });
    const c = await one.request('GET', '/api/v1/projects', { token: one.owner.token });
    expect([c.status, c.headers['x-ratelimit-remaining']]).toEqual([200, '0']);
    expect((await viaTwo()).status).toBe(429);
    expectErr(await one.request('GET', '/api/v1/projects', { token: one.owner.token }), 429, 'redis shared limit');
  });
});

describe('error bodies', () => {
  it('every error body seen above is exactly {error, details}, without a stack trace', () => {
    expect(errorBodies.length).toBeGreaterThan(15);
    for (const e of errorBodies) {
      const body = JSON.parse(e.text);
      expect(Object.keys(body).sort(), `${e.where}: ${e.text}`).toEqual(['details', 'error']);
      expect(typeof body.error).toBe('string');
      expect(typeof body.details === 'string' || (typeof body.details === 'object' && body.details !== null), e.where).toBe(true);
      expect(e.text, e.where).not.toMatch(/\bstack\b|\n\s+at |\.ts:\d+/);
    }
  });
});

describe('NUL characters', () => {
  it('are a 400 naming the field, in a path id, a query and a body, over REST and /trpc', async () => {
    const path = await env.request('GET', '/api/v1/projects/prj_a%00b', { token: env.owner.token });
    expectError(path, 400);
    expect(path.body.details).toHaveProperty('id');
    const query = await env.request('GET', '/api/v1/projects?search=a%00b', { token: env.owner.token });
    expectError(query, 400);
    expect(query.body.details).toHaveProperty('search');
    const body = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'a\u0000b', settings: { 'k\u0000': 1 } } });
    expectError(body, 400);
    const nested = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'ok', settings: { deep: ['x', 'y\u0000'] } } });
    expectError(nested, 400);
    expect(nested.body.details).toHaveProperty(['settings.deep.1']);
    const trpc = await env.request('POST', '/trpc/projects.create', { token: env.owner.token, body: { name: 'a\u0000b' } });
    expect(trpc.status).toBe(400);
    const unauthenticated = await env.request('GET', '/api/v1/projects?search=a%00b');
    expectError(unauthenticated, 401);
  });
});
