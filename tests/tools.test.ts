import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId, nowIso } from '../src/ids.js';
import { nameKey, normalizeEmail } from '../src/services/contacts.js';
import { createMemoryIn } from '../src/services/memories.js';
import { createSecret, updateSecret } from '../src/services/secrets.js';
import { executeTool, resolveTools, ToolError } from '../src/services/tools.js';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

// HTTP tools (/api/v1/tools) and the built-ins, against a local HTTP server that records what it
// receives. The main environment allow-lists 127.0.0.1 (OUTBOUND_ALLOWLIST); `strict` does not.

const BASE = '/api/v1/tools';

interface Recorded { method: string; path: string; headers: http.IncomingHttpHeaders; body: string }

let env: TestEnv;
let strict: TestEnv;
let server: http.Server;
let origin: string;
const requests: Recorded[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString('utf8'); });
    req.on('end', () => {
      const path = req.url ?? '/';
      requests.push({ method: req.method ?? '', path, headers: req.headers, body });
      const json = (status: number, value: unknown) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(value)); };
      if (path.startsWith('/slow')) { setTimeout(() => { if (!res.destroyed) json(200, { late: true }); }, 5_000).unref(); return; }
      if (path.startsWith('/fail')) return json(500, { error: 'boom' });
      if (path.startsWith('/limited')) return json(429, { error: 'slow down' });
      if (path.startsWith('/missing')) return json(404, { error: 'no such thing' });
      if (path.startsWith('/text')) { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('plain answer'); return; }
      if (path.startsWith('/big')) { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('x'.repeat(1024 * 1024 + 10)); return; }
      if (path.startsWith('/to-metadata')) { res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }); res.end(); return; }
      json(200, { method: req.method, path, body: body ? JSON.parse(body) : null });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  env = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
  strict = await createTestEnv();
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await env?.close();
  await strict?.close();
});

const create = (body: unknown, token = env.member.token, e = env) => e.request('POST', BASE, { token, body });
const count = async (e = env) => Number((await e.db.kysely.selectFrom('tools').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst())?.n ?? 0);
let seq = 0;
const uniq = (prefix: string) => `${prefix}_${++seq}`;
const objectSchema = (props: Record<string, unknown> = {}, required: string[] = []) => ({ type: 'object', properties: props, ...(required.length ? { required } : {}) });
const runTest = (id: string, input: unknown, token = env.member.token, e = env) => e.request('POST', `${BASE}/${id}/test`, { token, body: { input } });

describe('tools CRUD', () => {
  it('creates with defaults, shows, lists, updates and deletes', async () => {
    const res = await create({ name: 'lookup_order', url_template: 'https://api.example.com/orders/{{order_id}}', input_schema: objectSchema({ order_id: { type: 'string' } }, ['order_id']) });
    expect(res.status, res.text).toBe(201);
    expect(res.body).toMatchObject({
      name: 'lookup_order', description: '', kind: 'http', method: 'GET', headers: {}, timeout_ms: 10_000, enabled: true,
      url_template: 'https://api.example.com/orders/{{order_id}}',
    });
    expect(res.body.id).toMatch(/^tool_/);
    const id = res.body.id as string;

    expect((await env.request('GET', `${BASE}/${id}`, { token: env.viewer.token })).body).toEqual(res.body);
    const list = await env.request('GET', `${BASE}?search=LOOKUP_&page_size=10`, { token: env.viewerKey });
    expect(list.status).toBe(200);
    expect(list.body.results.map((t: { id: string }) => t.id)).toEqual([id]);
    expect(list.body.count).toBe(1);

    const patched = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { description: 'Finds an order', timeout_ms: 5000, enabled: false, method: 'POST' } });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body).toMatchObject({ description: 'Finds an order', timeout_ms: 5000, enabled: false, method: 'POST', name: 'lookup_order' });
    const disabled = await env.request('GET', `${BASE}?enabled=false`, { token: env.member.token });
    expect(disabled.body.results.map((t: { id: string }) => t.id)).toContain(id);

    const del = await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token });
    expect(del.status).toBe(204);
    expectError(await env.request('GET', `${BASE}/${id}`, { token: env.member.token }), 404);
    expectError(await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token }), 404);
  });

  it('keeps names unique per organization (409) and refuses built-in and invalid names', async () => {
    const body = { name: 'unique_tool', url_template: 'https://api.example.com/x' };
    expect((await create(body)).status).toBe(201);
    const dup = await create(body);
    expectError(dup, 409);
    expect(dup.body.details).toHaveProperty('name');
    expect((await create(body, env.otherOwner.token)).status).toBe(201);

    for (const name of ['memory_search', 'Contact_Lookup', '1starts_with_digit', 'has space', 'a'.repeat(65), 'dots.not.allowed', '']) {
      const res = await create({ name, url_template: 'https://api.example.com/x' });
      expectError(res, 400);
      expect(res.body.details, name).toHaveProperty('name');
    }
    const other = await create({ name: 'other_tool', url_template: 'https://api.example.com/x' });
    const rename = await env.request('PATCH', `${BASE}/${other.body.id}`, { token: env.member.token, body: { name: 'unique_tool' } });
    expectError(rename, 409);
  });

  it('refuses input schemas that do not compile or do not describe an object, storing nothing', async () => {
    const before = await count();
    const cases: unknown[] = [
      { type: 'string' },
      { properties: { a: { type: 'string' } } },
      { type: 'object', properties: { a: { type: 'strnig' } } },
      { type: 'object', properties: { a: { type: 'string', minLength: 'two' } } },
      { type: 'object', unknownKeyword: true },
      { type: 'object', properties: { a: { type: 'string', format: 'no-such-format' } } },
      { type: 'object', properties: { a: { $ref: '#/definitions/missing' } } },
      { type: 'object', properties: { a: { type: 'string', pattern: '(' } } },
    ];
    for (const input_schema of cases) {
      const res = await create({ name: uniq('schema'), url_template: 'https://api.example.com/x', input_schema });
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(input_schema)).toHaveProperty('input_schema');
    }
    const notObject = await create({ name: uniq('schema'), url_template: 'https://api.example.com/x', input_schema: ['type', 'object'] });
    expectError(notObject, 400);
    expect(notObject.body.details).toHaveProperty('input_schema');
    expect(await count()).toBe(before);
  });

  it('refuses bad URL templates: not http(s), unparsable, unknown placeholders, placeholders in the host', async () => {
    const before = await count();
    const schema = objectSchema({ id: { type: 'string' } });
    const cases = [
      'ftp://files.example.com/x', 'file:///etc/passwd', 'javascript:alert(1)', 'not a url', '/relative/path', 'https://', 'http://exa mple.com/',
      'https://api.example.com/items/{{undeclared}}', 'https://api.example.com/{{id}}/{{ other }}', 'https://{{id}}.example.com/', 'https://api.example.com:{{id}}/',
      'https://api.example.com/{{id', 'https://api.example.com/{{bad name}}', 'https://api.example.com/\r\nX: y',
    ];
    for (const url_template of cases) {
      const res = await create({ name: uniq('url'), url_template, input_schema: schema });
      expectError(res, 400);
      expect(res.body.details, url_template).toHaveProperty('url_template');
    }
    expect(await count()).toBe(before);
    expect((await create({ name: uniq('url'), url_template: 'https://api.example.com/items/{{ id }}?q={{id}}#{{id}}', input_schema: schema })).status).toBe(201);
  });

  it('refuses loopback, private and link-local hosts unless allow-listed', async () => {
    const hostile = [
      'http://127.0.0.1/admin', 'http://127.0.0.1:8080/', 'http://169.254.169.254/latest/meta-data/', 'http://[::1]/', 'http://10.0.0.5/x',
      'http://192.168.1.1/', 'http://172.16.0.1/', 'http://0.0.0.0/', 'http://localhost:3000/', 'http://api.localhost/', 'http://0x7f.1/',
      'http://2130706433/', 'http://[::ffff:127.0.0.1]/', 'http://[fe80::1]/', 'http://100.64.0.1/',
    ];
    const before = await count(strict);
    for (const url_template of hostile) {
      const res = await create({ name: uniq('ssrf'), url_template }, strict.owner.token, strict);
      expectError(res, 400);
      expect(res.body.details, url_template).toHaveProperty('url_template');
      expect(String(res.body.details.url_template)).toMatch(/not allowed/);
    }
    expect(await count(strict)).toBe(before);
    // The allow-list opens 127.0.0.1 only: the metadata address stays closed.
    expect((await create({ name: uniq('local'), url_template: 'http://127.0.0.1:9/x' })).status).toBe(201);
    const metadata = await create({ name: uniq('ssrf'), url_template: 'http://169.254.169.254/latest/meta-data/' });
    expectError(metadata, 400);
    expect(metadata.body.details).toHaveProperty('url_template');
  });

  it('refuses header injection and invalid header names, storing nothing', async () => {
    const before = await count();
    const cases: Record<string, unknown>[] = [
      { 'X-Api-Key': 'abc\r\nX-Injected: 1' },
      { 'X-Api-Key': 'abc\nX-Injected: 1' },
      { 'X-Api-Key': 'abc\rdef' },
      { 'X-Api-Key': 'a\u0007b' },
      { 'Bad Header': 'x' },
      { 'X-Injected:': 'x' },
      { 'X-Evil\r\nHost': 'x' },
      { '': 'x' },
      { Host: 'internal.example' },
      { 'Content-Length': '0' },
      { 'X-Value': 'Bearer {{token}}' },
      { 'X-Value': 42 },
    ];
    for (const headers of cases) {
      const res = await create({ name: uniq('hdr'), url_template: 'https://api.example.com/x', headers });
      expectError(res, 400);
      expect(Object.keys(res.body.details).some((k) => k.startsWith('headers')), JSON.stringify([headers, res.body.details])).toBe(true);
    }
    expect(await count()).toBe(before);
  });

  it('refuses references to secrets that do not exist', async () => {
    const before = await count();
    const inHeader = await create({ name: uniq('sec'), url_template: 'https://api.example.com/x', headers: { Authorization: 'Bearer {{secrets.NO_SUCH_SECRET}}' } });
    expectError(inHeader, 400);
    expect(inHeader.body.details.headers).toMatch(/NO_SUCH_SECRET/);
    const inUrl = await create({ name: uniq('sec'), url_template: 'https://api.example.com/x?key={{secrets.NOPE}}' });
    expectError(inUrl, 400);
    expect(inUrl.body.details.url_template).toMatch(/NOPE/);
    expect(await count()).toBe(before);
  });

  it('validates PATCH as a whole and changes nothing on failure', async () => {
    const t = await create({ name: uniq('patch'), url_template: 'https://api.example.com/items/{{id}}', input_schema: objectSchema({ id: { type: 'string' } }) });
    expect(t.status).toBe(201);
    // Dropping the variable the URL uses from the schema is refused.
    const dropped = await env.request('PATCH', `${BASE}/${t.body.id}`, { token: env.member.token, body: { input_schema: objectSchema({}) } });
    expectError(dropped, 400);
    expect(dropped.body.details).toHaveProperty('url_template');
    const hostile = await env.request('PATCH', `${BASE}/${t.body.id}`, { token: env.member.token, body: { url_template: 'http://169.254.169.254/' } });
    expectError(hostile, 400);
    const timeout = await env.request('PATCH', `${BASE}/${t.body.id}`, { token: env.member.token, body: { timeout_ms: 60_001 } });
    expectError(timeout, 400);
    expect(timeout.body.details).toHaveProperty('timeout_ms');
    expect((await env.request('GET', `${BASE}/${t.body.id}`, { token: env.member.token })).body).toEqual(t.body);
  });
});

describe('POST /api/v1/tools/{id}/test', () => {
  it('calls the tool: URL placeholders, query parameters for GET, secret headers resolved', async () => {
    await createSecret(env.ctxOf(env.owner), { name: 'CRM_TOKEN', value: 's3cret-value' });
    const t = await create({
      name: 'crm_get', url_template: `${origin}/echo/contacts/{{contact_id}}?fixed=1`,
      headers: { Authorization: 'Bearer {{secrets.CRM_TOKEN}}', 'X-Client': 'agentry-tests' },
      input_schema: objectSchema({ contact_id: { type: 'string' }, fields: { type: 'array', items: { type: 'string' } }, verbose: { type: 'boolean' } }, ['contact_id']),
    });
    expect(t.status, t.text).toBe(201);
    // Stored as given, never resolved.
    expect(t.body.headers.Authorization).toBe('Bearer {{secrets.CRM_TOKEN}}');

    requests.length = 0;
    const res = await runTest(t.body.id, { contact_id: 'a b/c', fields: ['name', 'email'], verbose: true });
    expect(res.status, res.text).toBe(200);
    expect(res.body.ok).toBe(true);
    expect(res.body.latency_ms).toBeGreaterThanOrEqual(0);
    expect(res.body).not.toHaveProperty('error');
    expect(requests).toHaveLength(1);
    const r = requests[0];
    expect(r.method).toBe('GET');
    expect(r.path).toBe('/echo/contacts/a%20b%2Fc?fixed=1&fields=name&fields=email&verbose=true');
    expect(r.headers.authorization).toBe('Bearer s3cret-value');
    expect(r.headers['x-client']).toBe('agentry-tests');
    expect(r.body).toBe('');
    expect(res.body.output).toEqual({ method: 'GET', path: r.path, body: null });
  });

  it('sends the remaining input as a JSON body for POST, and secrets in the URL', async () => {
    await createSecret(env.ctxOf(env.owner), { name: 'URL_KEY', value: 'k&y=1' });
    const t = await create({
      name: 'crm_post', method: 'POST', url_template: `${origin}/echo/notes/{{contact_id}}?key={{secrets.URL_KEY}}`,
      input_schema: objectSchema({ contact_id: { type: 'integer' }, note: { type: 'string' }, tags: { type: 'array' }, priority: { type: 'string', default: 'normal' } }, ['contact_id', 'note']),
    });
    expect(t.status, t.text).toBe(201);
    requests.length = 0;
    const res = await runTest(t.body.id, { contact_id: 42, note: 'Called, "interested"', tags: ['a'] });
    expect(res.body.ok, res.text).toBe(true);
    const r = requests[0];
    expect(r.method).toBe('POST');
    expect(r.path).toBe('/echo/notes/42?key=k%26y%3D1');
    expect(r.headers['content-type']).toBe('application/json');
    // Schema defaults are applied; the URL's variable is not repeated in the body.
    expect(JSON.parse(r.body)).toEqual({ note: 'Called, "interested"', tags: ['a'], priority: 'normal' });
  });

  it('answers 400 naming input when the input does not match the schema (nothing is sent)', async () => {
    const t = await create({ name: uniq('strict_input'), url_template: `${origin}/echo`, input_schema: { ...objectSchema({ n: { type: 'integer', minimum: 1 } }, ['n']), additionalProperties: false } });
    requests.length = 0;
    for (const input of [{}, { n: 0 }, { n: 'one' }, { n: 1, extra: true }]) {
      const res = await runTest(t.body.id, input);
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(input)).toHaveProperty('input');
    }
    const notObject = await env.request('POST', `${BASE}/${t.body.id}/test`, { token: env.member.token, body: { input: 'text' } });
    expectError(notObject, 400);
    expect(requests).toHaveLength(0);
  });

  it('returns text responses as text', async () => {
    const t = await create({ name: uniq('text'), url_template: `${origin}/text` });
    const res = await runTest(t.body.id, {});
    expect(res.body).toMatchObject({ ok: true, output: 'plain answer' });
  });

  it('reports failures as ok=false: 500 and 429 retryable, 404 not', async () => {
    const cases: [string, number, boolean][] = [['/fail', 500, true], ['/limited', 429, true], ['/missing', 404, false]];
    for (const [path, status, retryable] of cases) {
      const t = await create({ name: uniq('status'), url_template: `${origin}${path}` });
      const res = await runTest(t.body.id, {});
      expect(res.status, res.text).toBe(200);
      expect(res.body).toMatchObject({ ok: false, output: null, error: { code: 'http_error', status, retryable } });
      expect(res.body.error.message).toContain(String(status));
    }
  });

  it('times out after timeout_ms (retryable)', async () => {
    const t = await create({ name: uniq('slow'), url_template: `${origin}/slow`, timeout_ms: 300 });
    const res = await runTest(t.body.id, {});
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ ok: false, error: { code: 'timeout', retryable: true, status: null } });
  });

  it('bounds the response size', async () => {
    const t = await create({ name: uniq('big'), url_template: `${origin}/big` });
    const res = await runTest(t.body.id, {});
    expect(res.body).toMatchObject({ ok: false, error: { code: 'response_too_large', retryable: false } });
  });

  it('runs the SSRF guard again at call time: redirects and stored URLs are re-checked', async () => {
    const t = await create({ name: uniq('redirect'), url_template: `${origin}/to-metadata` });
    const res = await runTest(t.body.id, {});
    expect(res.body).toMatchObject({ ok: false, error: { code: 'forbidden_url', retryable: false } });
    expect(res.body.error.message).toMatch(/169\.254\.169\.254/);

    // A definition stored while 127.0.0.1 was allowed is refused where it is not.
    const now = nowIso();
    const id = newId('tool');
    await strict.db.kysely.insertInto('tools').values({ id, organization_id: strict.orgA, name: 'legacy', url_template: `${origin}/echo`, created_at: now, updated_at: now }).execute();
    requests.length = 0;
    const refused = await runTest(id, {}, strict.owner.token, strict);
    expect(refused.body).toMatchObject({ ok: false, error: { code: 'forbidden_url', retryable: false } });
    // A host name is resolved at call time and each address checked (localhost → loopback).
    const named = newId('tool');
    await strict.db.kysely.insertInto('tools').values({ id: named, organization_id: strict.orgA, name: 'by_name', url_template: `${origin.replace('127.0.0.1', 'localhost')}/echo`, created_at: now, updated_at: now }).execute();
    const byName = await runTest(named, {}, strict.owner.token, strict);
    expect(byName.body).toMatchObject({ ok: false, error: { code: 'forbidden_url', retryable: false } });
    expect(byName.body.error.message).toMatch(/localhost/);
    expect(requests).toHaveLength(0);
  });

  it('reports a secret deleted or made unsafe after creation clearly', async () => {
    const secret = await createSecret(env.ctxOf(env.owner), { name: 'TEMP_TOKEN', value: 'fine' });
    const t = await create({ name: uniq('temp'), url_template: `${origin}/echo`, headers: { 'X-Token': '{{secrets.TEMP_TOKEN}}' } });
    expect(t.status, t.text).toBe(201);
    await updateSecret(env.ctxOf(env.owner), secret.id, { value: 'line\r\nX-Injected: yes' });
    requests.length = 0;
    const injected = await runTest(t.body.id, {});
    expect(injected.body).toMatchObject({ ok: false, error: { code: 'invalid_header', retryable: false } });
    expect(requests).toHaveLength(0);
    await env.request('DELETE', `/api/v1/secrets/${secret.id}`, { token: env.owner.token });
    const missing = await runTest(t.body.id, {});
    expect(missing.body).toMatchObject({ ok: false, error: { code: 'missing_secret', retryable: false } });
    expect(missing.body.error.message).toMatch(/TEMP_TOKEN/);
  });

  it('runs disabled tools (a test before enabling)', async () => {
    const t = await create({ name: uniq('off'), url_template: `${origin}/text`, enabled: false });
    expect((await runTest(t.body.id, {})).body.ok).toBe(true);
  });
});

describe('resolveTools and executeTool', () => {
  it('resolves stored and built-in tools by name, refusing unknown and disabled names', async () => {
    const t = await create({ name: 'resolvable', description: 'Does a thing', url_template: `${origin}/echo`, timeout_ms: 2500, input_schema: objectSchema({ q: { type: 'string' } }) });
    const tools = await resolveTools(env.app.deps, env.orgA, ['resolvable', 'memory_search', 'contact_lookup', 'resolvable']);
    expect(tools.map((x) => [x.name, x.kind, x.id])).toEqual([['resolvable', 'http', t.body.id], ['memory_search', 'builtin', null], ['contact_lookup', 'builtin', null]]);
    expect(tools[0]).toMatchObject({ description: 'Does a thing', timeoutMs: 2500, inputSchema: objectSchema({ q: { type: 'string' } }) });
    expect(tools[1].inputSchema).toMatchObject({ type: 'object', required: ['query'] });

    // Built-ins exist in every organization; stored tools only in their own.
    expect((await resolveTools(env.app.deps, env.orgB, ['memory_search'])).length).toBe(1);
    const foreign = await resolveTools(env.app.deps, env.orgB, ['resolvable']).catch((e: unknown) => e);
    expect(foreign).toMatchObject({ status: 400, details: { tools_allowed: expect.stringContaining('resolvable') } });
    const unknown = await resolveTools(env.app.deps, env.orgA, ['nope', 'memory_search']).catch((e: unknown) => e);
    expect(unknown).toMatchObject({ status: 400, details: { tools_allowed: 'Unknown tool: nope' } });

    await create({ name: 'switched_off', url_template: `${origin}/echo`, enabled: false });
    const off = await resolveTools(env.app.deps, env.orgA, ['switched_off'], { field: 'tools' }).catch((e: unknown) => e);
    expect(off).toMatchObject({ status: 400, details: { tools: expect.stringContaining('switched_off') } });
    const offRun = await executeTool(env.app.deps, env.orgA, 'switched_off', {}).catch((e: unknown) => e);
    expect(offRun).toBeInstanceOf(ToolError);
    expect(offRun).toMatchObject({ code: 'tool_disabled', retryable: false });
  });

  it('throws ToolErrors with retryable set by kind of failure', async () => {
    const deps = env.app.deps;
    const fail = await create({ name: 'always_fails', url_template: `${origin}/fail` });
    expect(fail.status).toBe(201);
    const e500 = await executeTool(deps, env.orgA, 'always_fails', {}).catch((e: unknown) => e);
    expect(e500).toBeInstanceOf(ToolError);
    expect(e500).toMatchObject({ code: 'http_error', retryable: true, status: 500 });

    await create({ name: 'typed_input', url_template: `${origin}/echo`, input_schema: objectSchema({ n: { type: 'integer' } }, ['n']) });
    const bad = await executeTool(deps, env.orgA, 'typed_input', { n: 'x' }).catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: 'invalid_input', retryable: false });
    expect((bad as Error).message).toMatch(/\/n/);
    const ok = await executeTool(deps, env.orgA, 'typed_input', { n: 3 });
    expect(ok.output).toMatchObject({ method: 'GET', path: '/echo?n=3' });
    expect(ok.latencyMs).toBeGreaterThanOrEqual(0);

    expect(await executeTool(deps, env.orgA, 'no_such_tool', {}).catch((e: unknown) => e)).toMatchObject({ code: 'unknown_tool', retryable: false });
    // Another organization's tool is unknown here.
    expect(await executeTool(deps, env.orgB, 'typed_input', { n: 1 }).catch((e: unknown) => e)).toMatchObject({ code: 'unknown_tool' });

    const ac = new AbortController();
    await create({ name: 'cancellable', url_template: `${origin}/slow` });
    const pending = executeTool(deps, env.orgA, 'cancellable', {}, { signal: ac.signal }).catch((e: unknown) => e);
    setTimeout(() => ac.abort(), 50);
    expect(await pending).toMatchObject({ code: 'aborted', retryable: false });
  });

  it('memory_search searches the calling agent\'s memories and the shared ones', async () => {
    const deps = env.app.deps;
    const now = nowIso();
    const [agentA, agentB] = [newId('agt'), newId('agt')];
    for (const id of [agentA, agentB]) await env.db.kysely.insertInto('agents').values({ id, organization_id: env.orgA, name: id, created_at: now, updated_at: now }).execute();
    await createMemoryIn(deps, env.orgA, { agent_id: agentA, content: 'The customer Zorblax prefers meetings on Tuesday' });
    await createMemoryIn(deps, env.orgA, { agent_id: agentB, content: 'Zorblax asked agent B for a discount' });
    await createMemoryIn(deps, env.orgA, { content: 'Zorblax is a shared account' });
    await createMemoryIn(deps, env.orgB, { content: 'Zorblax in another organization' });

    const asA = await executeTool(deps, env.orgA, 'memory_search', { query: 'zorblax' }, { agentId: agentA });
    const contents = (asA.output as { results: { content: string }[] }).results.map((r) => r.content).sort();
    expect(contents).toEqual(['The customer Zorblax prefers meetings on Tuesday', 'Zorblax is a shared account']);
    const all = await executeTool(deps, env.orgA, 'memory_search', { query: 'zorblax', limit: 10 });
    expect((all.output as { results: unknown[] }).results).toHaveLength(3);
    expect(await executeTool(deps, env.orgA, 'memory_search', { limit: 3 }).catch((e: unknown) => e)).toMatchObject({ code: 'invalid_input' });
    expect(await executeTool(deps, env.orgA, 'memory_search', { query: 'x', limit: 500 }).catch((e: unknown) => e)).toMatchObject({ code: 'invalid_input' });
  });

  it('contact_lookup finds the organization\'s contacts by id, e-mail or name', async () => {
    const now = nowIso();
    const contact = (org: string, name: string, email: string, extra: Record<string, unknown> = {}) => ({
      id: newId('con'), organization_id: org, name, name_key: nameKey(name), email, email_normalized: normalizeEmail(email),
      company: 'Acme', title: 'CTO', lead_score: 80, created_at: now, updated_at: now, ...extra,
    });
    const ada = contact(env.orgA, 'Ada Lovelace', 'Ada@Example.com');
    const alan = contact(env.orgA, 'Alan Turing', 'alan@example.com', { lead_score: null });
    const foreign = contact(env.orgB, 'Ada Byron', 'ada.b@example.com');
    await env.db.kysely.insertInto('contacts').values([ada, alan, foreign]).execute();
    const deps = env.app.deps;
    const lookup = async (input: unknown) => ((await executeTool(deps, env.orgA, 'contact_lookup', input)).output as { contacts: { id: string }[] }).contacts;

    const byEmail = await lookup({ email: ' ada@EXAMPLE.com ' });
    expect(byEmail).toEqual([{ id: ada.id, name: 'Ada Lovelace', email: 'Ada@Example.com', company: 'Acme', title: 'CTO', lead_score: 80 }]);
    expect((await lookup({ id: alan.id }))[0]).toMatchObject({ id: alan.id, lead_score: null });
    expect((await lookup({ query: 'ada' })).map((c) => c.id)).toEqual([ada.id]);
    expect((await lookup({ query: 'a', limit: 1 }))).toHaveLength(1);
    expect(await lookup({ id: foreign.id })).toEqual([]);
    expect(await executeTool(deps, env.orgA, 'contact_lookup', {}).catch((e: unknown) => e)).toMatchObject({ code: 'invalid_input', retryable: false });
  });
});

describe('tools security', () => {
  it('401 without a token, 403 for viewers on writes, 404 for another organization\'s tool', async () => {
    const t = await create({ name: uniq('perm'), url_template: `${origin}/echo` });
    expectError(await env.request('GET', BASE), 401);
    expectError(await env.request('POST', `${BASE}/${t.body.id}/test`, { body: {} }), 401);
    expectError(await create({ name: uniq('viewer'), url_template: 'https://api.example.com/' }, env.viewer.token), 403);
    expectError(await env.request('PATCH', `${BASE}/${t.body.id}`, { token: env.viewerKey, body: { description: 'x' } }), 403);
    expectError(await env.request('DELETE', `${BASE}/${t.body.id}`, { token: env.viewer.token }), 403);
    expectError(await runTest(t.body.id, {}, env.viewer.token), 403);
    expect((await env.request('GET', `${BASE}/${t.body.id}`, { token: env.viewerKey })).status).toBe(200);

    const b = await create({ name: uniq('org_b'), url_template: `${origin}/echo` }, env.otherOwner.token);
    const url = `${BASE}/${b.body.id}`;
    expectError(await env.request('GET', url, { token: env.owner.token }), 404);
    expectError(await env.request('PATCH', url, { token: env.owner.token, body: { description: 'mine now' } }), 404);
    requests.length = 0;
    expectError(await env.request('POST', `${url}/test`, { token: env.owner.token, body: { input: {} } }), 404);
    expect(requests).toHaveLength(0);
    expectError(await env.request('DELETE', url, { token: env.owner.token }), 404);
    const listA = await env.request('GET', `${BASE}?page_size=100`, { token: env.owner.token });
    expect(listA.body.results.map((x: { id: string }) => x.id)).not.toContain(b.body.id);
    expect((await env.request('GET', url, { token: env.otherOwner.token })).body.description).toBe('');
  });
});
