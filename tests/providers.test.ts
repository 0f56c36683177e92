import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { startFakeLlm, type FakeLlm } from './support/llm-server.js';
import { BUILTIN_PRICES } from '../src/services/providers.js';

let env: TestEnv;
let fake: FakeLlm;
beforeAll(async () => {
  env = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake?.close();
  await env?.close();
});

const BASE = '/api/v1/providers';
const KEY = 'sk-test-0123456789abcdef';
const create = (body: unknown, token = env.member.token) => env.request('POST', BASE, { token, body });
const list = async (token = env.owner.token) => (await env.request('GET', `${BASE}?page_size=100`, { token })).body;
let seq = 0;
const uniq = (p: string) => `${p} ${++seq}`;

describe('providers CRUD', () => {
  it('creates, shows, lists, patches and deletes; the key is never returned', async () => {
    const created = await create({ name: 'OpenAI main', type: 'openai', api_key: KEY, base_url: fake.openaiBaseUrl });
    expect(created.status).toBe(201);
    expect(Object.keys(created.body).sort()).toEqual(['api_key_hint', 'base_url', 'created_at', 'default_model', 'has_api_key', 'header_names', 'id', 'is_default', 'name', 'type', 'updated_at']);
    expect(created.body).toMatchObject({ name: 'OpenAI main', type: 'openai', base_url: fake.openaiBaseUrl, default_model: 'gpt-4o-mini', has_api_key: true, api_key_hint: '…cdef', header_names: [] });
    expect(created.body.id).toMatch(/^prv_/);
    expect(created.text).not.toContain(KEY);
    const id = created.body.id as string;

    // Stored encrypted.
    const row = await env.db.kysely.selectFrom('llm_providers').select('api_key_enc').where('id', '=', id).executeTakeFirstOrThrow();
    expect(row.api_key_enc).not.toContain(KEY);
    expect(env.app.deps.box.decrypt(row.api_key_enc!)).toBe(KEY);

    const shown = await env.request('GET', `${BASE}/${id}`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(created.body);
    const listed = await env.request('GET', BASE, { token: env.viewerKey });
    expect(listed.status).toBe(200);
    expect(listed.body.results.find((p: { id: string }) => p.id === id)).toEqual(created.body);
    expect(listed.text).not.toContain(KEY);

    const patched = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { name: 'OpenAI renamed', default_model: 'gpt-4o', api_key: 'sk-other-key-9876543210', headers: { 'OpenAI-Organization': 'org-x' } } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ id, name: 'OpenAI renamed', default_model: 'gpt-4o', has_api_key: true, api_key_hint: '…3210', header_names: ['OpenAI-Organization'], created_at: created.body.created_at });
    expect(patched.text).not.toContain('sk-other-key');
    expect(patched.text).not.toContain('org-x');

    // Audited, without the key.
    const audits = await env.db.kysely.selectFrom('audit_logs').select(['action', 'resource_type', 'metadata']).where('resource_id', '=', id).execute();
    expect(audits.map((a) => a.action).sort()).toEqual(['providers.create', 'providers.update']);
    expect(audits.every((a) => a.resource_type === 'llm_provider')).toBe(true);
    expect(JSON.stringify(audits)).not.toContain('sk-');

    const deleted = await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token });
    expect(deleted.status).toBe(204);
    expect(deleted.text).toBe('');
    expectError(await env.request('GET', `${BASE}/${id}`, { token: env.member.token }), 404);
    expectError(await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token }), 404);
    expectError(await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { name: 'x' } }), 404);
    // The model prices went with it.
    expect(await env.db.kysely.selectFrom('llm_models').select('id').where('provider_id', '=', id).execute()).toEqual([]);
  });

  it('creates each type: defaults per type, openai_compatible without a key', async () => {
    const anthropic = await create({ name: uniq('Claude'), type: 'anthropic', api_key: 'sk-ant-0123456789' });
    expect(anthropic.status).toBe(201);
    expect(anthropic.body).toMatchObject({ type: 'anthropic', base_url: null, default_model: 'claude-haiku-4-5' });
    const local = await create({ name: uniq('Local'), type: 'openai_compatible', base_url: 'http://llm.example.test/v1', default_model: 'llama3.1:8b' });
    expect(local.status).toBe(201);
    expect(local.body).toMatchObject({ type: 'openai_compatible', has_api_key: false, api_key_hint: null, default_model: 'llama3.1:8b' });
    // A short key has no hint.
    const short = await create({ name: uniq('Short'), type: 'openai', api_key: 'sk-short' });
    expect(short.body).toMatchObject({ has_api_key: true, api_key_hint: null });
  });

  it('validates: openai_compatible needs a base URL and a model, types, keys, unknown fields, URLs', async () => {
    const before = (await list()).count;
    const noUrl = await create({ name: 'x', type: 'openai_compatible', default_model: 'm' });
    expectError(noUrl, 400);
    expect(noUrl.body.details).toHaveProperty('base_url');
    const noModel = await create({ name: 'x', type: 'openai_compatible', base_url: 'http://llm.example.test/v1' });
    expectError(noModel, 400);
    expect(noModel.body.details).toHaveProperty('default_model');
    const badType = await create({ name: 'x', type: 'cohere', api_key: KEY });
    expectError(badType, 400);
    expect(badType.body.details).toHaveProperty('type');
    const noKey = await create({ name: 'x', type: 'openai' });
    expectError(noKey, 400);
    expect(noKey.body.details).toHaveProperty('api_key');
    const unknown = await create({ name: 'x', type: 'openai', api_key: KEY, api_key_enc: 'x', organization_id: env.orgB });
    expectError(unknown, 400);
    expect(JSON.stringify(unknown.body.details)).toMatch(/api_key_enc|organization_id|Unrecognized/);
    const ftp = await create({ name: 'x', type: 'openai_compatible', base_url: 'ftp://llm.example.test/', default_model: 'm' });
    expectError(ftp, 400);
    expect(ftp.body.details).toHaveProperty('base_url');
    const notUrl = await create({ name: 'x', type: 'openai_compatible', base_url: 'not a url', default_model: 'm' });
    expect(notUrl.body.details).toHaveProperty('base_url');
    const noName = await create({ type: 'openai', api_key: KEY });
    expect(noName.body.details).toHaveProperty('name');
    const badHeader = await create({ name: 'x', type: 'openai', api_key: KEY, headers: { 'X-A': 'one\r\nInjected: yes' } });
    expectError(badHeader, 400);
    expect(JSON.stringify(badHeader.body.details)).toContain('headers');
    const badModel = await create({ name: 'x', type: 'openai', api_key: KEY, default_model: 'gpt 4' });
    expect(badModel.body.details).toHaveProperty('default_model');
    expect((await list()).count).toBe(before);

    const p = await create({ name: uniq('Patch me'), type: 'openai_compatible', base_url: 'http://llm.example.test/v1', default_model: 'm' });
    const typeChange = await env.request('PATCH', `${BASE}/${p.body.id}`, { token: env.member.token, body: { type: 'openai' } });
    expectError(typeChange, 400);
    const dropUrl = await env.request('PATCH', `${BASE}/${p.body.id}`, { token: env.member.token, body: { base_url: null } });
    expectError(dropUrl, 400);
    expect(dropUrl.body.details).toHaveProperty('base_url');
    const o = await create({ name: uniq('Keyed'), type: 'openai', api_key: KEY });
    const dropKey = await env.request('PATCH', `${BASE}/${o.body.id}`, { token: env.member.token, body: { api_key: null } });
    expectError(dropKey, 400);
    expect(dropKey.body.details).toHaveProperty('api_key');
    // openai_compatible may drop its key.
    const keyed = await env.request('PATCH', `${BASE}/${p.body.id}`, { token: env.member.token, body: { api_key: 'local-key-0123456789' } });
    expect(keyed.body.has_api_key).toBe(true);
    const unkeyed = await env.request('PATCH', `${BASE}/${p.body.id}`, { token: env.member.token, body: { api_key: null } });
    expect(unkeyed.body).toMatchObject({ has_api_key: false, api_key_hint: null });
  });

  it('keeps names unique per organization (409), on create and on rename', async () => {
    const name = uniq('Unique');
    expect((await create({ name, type: 'openai', api_key: KEY })).status).toBe(201);
    const dup = await create({ name, type: 'anthropic', api_key: KEY });
    expectError(dup, 409);
    expect(dup.body.details).toHaveProperty('name');
    expect((await create({ name, type: 'openai', api_key: KEY }, env.otherOwner.token)).status).toBe(201);
    const other = await create({ name: uniq('Other'), type: 'openai', api_key: KEY });
    expectError(await env.request('PATCH', `${BASE}/${other.body.id}`, { token: env.member.token, body: { name } }), 409);
  });

  it('one default per organization: the first is the default, setting another clears it', async () => {
    // A fresh organization: its first provider becomes the default.
    const b1 = await create({ name: uniq('B first'), type: 'openai', api_key: KEY }, env.otherOwner.token);
    const defaultsB = async () => (await list(env.otherOwner.token)).results.filter((p: { is_default: boolean }) => p.is_default).map((p: { id: string }) => p.id);
    // Org B may already have providers from earlier tests: only one default in any case.
    expect((await defaultsB()).length).toBe(1);

    const a1 = await create({ name: uniq('A default'), type: 'openai', api_key: KEY, is_default: true });
    expect(a1.body.is_default).toBe(true);
    const a2 = await create({ name: uniq('A not default'), type: 'openai', api_key: KEY, is_default: false });
    expect(a2.body.is_default).toBe(false);
    const defaultsA = async () => (await list()).results.filter((p: { is_default: boolean }) => p.is_default).map((p: { id: string }) => p.id);
    expect(await defaultsA()).toEqual([a1.body.id]);

    const made = await env.request('PATCH', `${BASE}/${a2.body.id}`, { token: env.member.token, body: { is_default: true } });
    expect(made.body.is_default).toBe(true);
    expect(await defaultsA()).toEqual([a2.body.id]);
    const a3 = await create({ name: uniq('A new default'), type: 'anthropic', api_key: KEY, is_default: true });
    expect(await defaultsA()).toEqual([a3.body.id]);
    // Organization B is untouched.
    expect((await defaultsB()).length).toBe(1);
    expect(b1.status).toBe(201);

    const unset = await env.request('PATCH', `${BASE}/${a3.body.id}`, { token: env.member.token, body: { is_default: false } });
    expect(unset.body.is_default).toBe(false);
    expect(await defaultsA()).toEqual([]);
    // With no default, the next provider becomes the default.
    const a4 = await create({ name: uniq('A next'), type: 'openai', api_key: KEY });
    expect(a4.body.is_default).toBe(true);
  });

  it('filters the list by type', async () => {
    await create({ name: uniq('Typed'), type: 'anthropic', api_key: KEY });
    const res = await env.request('GET', `${BASE}?type=anthropic&page_size=100`, { token: env.viewer.token });
    expect(res.status).toBe(200);
    expect(res.body.results.length).toBeGreaterThan(0);
    expect(res.body.results.every((p: { type: string }) => p.type === 'anthropic')).toBe(true);
    expectError(await env.request('GET', `${BASE}?type=nope`, { token: env.viewer.token }), 400);
  });

  it('viewers read but do not write; another organization gets 404', async () => {
    const p = await create({ name: uniq('Secured'), type: 'openai', api_key: KEY });
    expectError(await create({ name: 'x', type: 'openai', api_key: KEY }, env.viewer.token), 403);
    expectError(await env.request('PATCH', `${BASE}/${p.body.id}`, { token: env.viewer.token, body: { name: 'y' } }), 403);
    expectError(await env.request('POST', `${BASE}/${p.body.id}/test`, { token: env.viewer.token }), 403);
    expectError(await env.request('PUT', `${BASE}/${p.body.id}/models/gpt-4o`, { token: env.viewerKey, body: { input_price_per_million: 1, output_price_per_million: 1 } }), 403);
    expectError(await env.request('GET', `${BASE}/${p.body.id}`), 401);
    for (const [method, path] of [['GET', ''], ['PATCH', ''], ['DELETE', ''], ['POST', '/test'], ['GET', '/models'], ['PUT', '/models/gpt-4o'], ['DELETE', '/models/gpt-4o']] as const) {
      const body = method === 'PUT' ? { input_price_per_million: 1, output_price_per_million: 1 } : method === 'PATCH' ? { name: 'stolen' } : undefined;
      expectError(await env.request(method, `${BASE}/${p.body.id}${path}`, { token: env.otherOwner.token, body }), 404);
    }
    expect((await env.request('GET', `${BASE}/${p.body.id}`, { token: env.member.token })).body.name).toBe(p.body.name);
  });
});

describe('models and prices', () => {
  it('seeds public prices for openai and anthropic, nothing for openai_compatible', async () => {
    const o = await create({ name: uniq('Seeded'), type: 'openai', api_key: KEY });
    const models = await env.request('GET', `${BASE}/${o.body.id}/models?page_size=100`, { token: env.viewer.token });
    expect(models.status).toBe(200);
    expect(models.body.count).toBe(Object.keys(BUILTIN_PRICES.openai).length);
    const names = models.body.results.map((m: { name: string }) => m.name);
    expect(names).toEqual([...names].sort());
    expect(models.body.results.find((m: { name: string }) => m.name === 'gpt-4o-mini')).toMatchObject({ provider_id: o.body.id, input_price_per_million: 0.15, output_price_per_million: 0.6 });

    const a = await create({ name: uniq('Seeded'), type: 'anthropic', api_key: KEY });
    const am = await env.request('GET', `${BASE}/${a.body.id}/models?page_size=100`, { token: env.viewer.token });
    expect(am.body.results.find((m: { name: string }) => m.name === 'claude-3-5-haiku-latest')).toMatchObject({ input_price_per_million: 0.8, output_price_per_million: 4 });

    const c = await create({ name: uniq('Seeded'), type: 'openai_compatible', base_url: 'http://llm.example.test/v1', default_model: 'm' });
    const cm = await env.request('GET', `${BASE}/${c.body.id}/models`, { token: env.viewer.token });
    expect(cm.body).toEqual({ count: 0, next: null, previous: null, results: [] });
  });

  it('edits prices with PUT (upsert) and deletes models; names with dots, colons and slashes', async () => {
    const c = await create({ name: uniq('Priced'), type: 'openai_compatible', base_url: 'http://llm.example.test/v1', default_model: 'llama3.1:8b' });
    const path = (m: string) => `${BASE}/${c.body.id}/models/${encodeURIComponent(m)}`;
    for (const name of ['gpt-4o-mini', 'claude-3-5-haiku-latest', 'llama3.1:8b', 'meta-llama/Llama-3.3-70B-Instruct']) {
      const put = await env.request('PUT', path(name), { token: env.member.token, body: { input_price_per_million: 0.5, output_price_per_million: 1.5 } });
      expect(put.status).toBe(200);
      expect(put.body).toMatchObject({ name, provider_id: c.body.id, input_price_per_million: 0.5, output_price_per_million: 1.5 });
    }
    const again = await env.request('PUT', path('llama3.1:8b'), { token: env.member.token, body: { input_price_per_million: 0, output_price_per_million: 2.25 } });
    expect(again.body).toMatchObject({ name: 'llama3.1:8b', input_price_per_million: 0, output_price_per_million: 2.25 });
    const listed = await env.request('GET', `${BASE}/${c.body.id}/models`, { token: env.viewer.token });
    expect(listed.body.count).toBe(4);
    expect(listed.body.results.map((m: { name: string }) => m.name)).toEqual(['claude-3-5-haiku-latest', 'gpt-4o-mini', 'llama3.1:8b', 'meta-llama/Llama-3.3-70B-Instruct']);
    expect(listed.body.results[2]).toMatchObject({ input_price_per_million: 0, output_price_per_million: 2.25 });

    const bad = await env.request('PUT', path('gpt-4o'), { token: env.member.token, body: { input_price_per_million: -1 } });
    expectError(bad, 400);
    expect(bad.body.details).toHaveProperty('input_price_per_million');
    expect(bad.body.details).toHaveProperty('output_price_per_million');
    const str = await env.request('PUT', path('gpt-4o'), { token: env.member.token, body: { input_price_per_million: 'free', output_price_per_million: 1 } });
    expect(str.body.details).toHaveProperty('input_price_per_million');
    expectError(await env.request('PUT', `${BASE}/prv_missing/models/gpt-4o`, { token: env.member.token, body: {} }), 404);

    const del = await env.request('DELETE', path('meta-llama/Llama-3.3-70B-Instruct'), { token: env.member.token });
    expect(del.status).toBe(204);
    expectError(await env.request('DELETE', path('meta-llama/Llama-3.3-70B-Instruct'), { token: env.member.token }), 404);
    expect((await env.request('GET', `${BASE}/${c.body.id}/models`, { token: env.viewer.token })).body.count).toBe(3);
    expectError(await env.request('GET', `${BASE}/prv_missing/models`, { token: env.viewer.token }), 404);
  });
});

describe('POST /providers/{id}/test', () => {
  const test = (id: string, body?: unknown) => env.request('POST', `${BASE}/${id}/test`, { token: env.member.token, body });

  it('succeeds against the fake server for each type', async () => {
    const o = await create({ name: uniq('T openai'), type: 'openai', api_key: KEY, base_url: fake.openaiBaseUrl });
    fake.push({ text: 'ok', usage: { input: 12, output: 1 } });
    const res = await test(o.body.id);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ ok: true, provider_id: o.body.id, model: 'gpt-4o-mini', text: 'ok', usage: { input_tokens: 12, output_tokens: 1 } });
    expect(res.body.cost).toBeCloseTo((12 * 0.15 + 1 * 0.6) / 1e6, 12);
    expect(typeof res.body.latency_ms).toBe('number');
    const req = fake.requests[fake.requests.length - 1];
    expect(req.path).toBe('/v1/chat/completions');
    expect(req.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(req.body.model).toBe('gpt-4o-mini');

    const a = await create({ name: uniq('T anthropic'), type: 'anthropic', api_key: 'sk-ant-test-0123456789', base_url: fake.anthropicBaseUrl });
    fake.push({ text: 'ok' });
    const ares = await test(a.body.id, { model: 'claude-3-5-haiku-latest' });
    expect(ares.status).toBe(200);
    expect(ares.body).toMatchObject({ ok: true, model: 'claude-3-5-haiku-latest', text: 'ok', usage: { input_tokens: 10, output_tokens: 5 } });
    const areq = fake.requests[fake.requests.length - 1];
    expect(areq.path).toBe('/v1/messages');
    expect(areq.headers['x-api-key']).toBe('sk-ant-test-0123456789');

    const c = await create({ name: uniq('T compat'), type: 'openai_compatible', base_url: fake.openaiBaseUrl, default_model: 'llama3.1:8b', headers: { 'X-Gateway': 'g1' } });
    fake.push({ text: 'ok' });
    const cres = await test(c.body.id);
    expect(cres.status).toBe(200);
    expect(cres.body).toMatchObject({ ok: true, model: 'llama3.1:8b', cost: 0 });
    const creq = fake.requests[fake.requests.length - 1];
    expect(creq.headers.authorization).toBeUndefined();
    expect(creq.headers['x-gateway']).toBe('g1');
  });

  it('answers 422 with the provider message for a refused key, a server error, an unknown model', async () => {
    const o = await create({ name: uniq('T fail'), type: 'openai', api_key: KEY, base_url: fake.openaiBaseUrl });
    fake.push({ status: 401 });
    const unauthorized = await test(o.body.id);
    expectError(unauthorized, 422);
    expect(unauthorized.body.details).toMatchObject({ code: 'auth_failed', provider_status: 401, retryable: false });
    expect(unauthorized.body.details.message).toContain('Incorrect API key');
    expect(unauthorized.text).not.toContain(KEY);

    fake.push({ status: 500 });
    const server = await test(o.body.id);
    expectError(server, 422);
    expect(server.body.details).toMatchObject({ code: 'server_error', provider_status: 500, retryable: true });

    fake.push({ status: 404 });
    const model = await test(o.body.id, { model: 'unknown-model' });
    expectError(model, 422);
    expect(model.body.details).toMatchObject({ code: 'model_not_found', provider_status: 404 });
    expect(model.body.details.message).toContain('does not exist');

    const a = await create({ name: uniq('T fail anthropic'), type: 'anthropic', api_key: KEY, base_url: fake.anthropicBaseUrl });
    fake.push({ status: 401 });
    const aunauth = await test(a.body.id);
    expectError(aunauth, 422);
    expect(aunauth.body.details).toMatchObject({ code: 'auth_failed', provider_status: 401, message: 'invalid x-api-key' });
  });

  it('answers 422 for an unreachable base URL', async () => {
    // A port nothing listens on: a local server closed just now.
    const gone = await startFakeLlm();
    const url = gone.openaiBaseUrl;
    await gone.close();
    const o = await create({ name: uniq('T unreachable'), type: 'openai_compatible', base_url: url, default_model: 'm' });
    const res = await test(o.body.id);
    expectError(res, 422);
    expect(res.body.details).toMatchObject({ code: 'network', provider_status: null, retryable: true });
    expect(res.body.details.message).toMatch(/connect/i);
  });

  it('answers 422 when the SSRF guard refuses the base URL (no allow-list)', async () => {
    const strict = await createTestEnv();
    try {
      const p = await strict.request('POST', BASE, { token: strict.member.token, body: { name: 'Local', type: 'openai_compatible', base_url: fake.openaiBaseUrl, default_model: 'm' } });
      expect(p.status).toBe(201);
      const before = fake.requests.length;
      const res = await strict.request('POST', `${BASE}/${p.body.id}/test`, { token: strict.member.token });
      expectError(res, 422);
      expect(res.body.details).toMatchObject({ code: 'forbidden_url', provider_status: null, retryable: false });
      expect(res.body.details.message).toContain('loopback');
      expect(fake.requests.length).toBe(before);
      const meta = await strict.request('POST', BASE, { token: strict.member.token, body: { name: 'Meta', type: 'openai', api_key: KEY, base_url: 'http://169.254.169.254/v1' } });
      const metaRes = await strict.request('POST', `${BASE}/${meta.body.id}/test`, { token: strict.member.token });
      expectError(metaRes, 422);
      expect(metaRes.body.details.message).toContain('link-local');
    } finally {
      await strict.close();
    }
  });

  it('is 404 for an unknown provider and 400 for unknown fields', async () => {
    expectError(await test('prv_missing'), 404);
    const o = await create({ name: uniq('T fields'), type: 'openai', api_key: KEY, base_url: fake.openaiBaseUrl });
    expectError(await test(o.body.id, { prompt: 'x' }), 400);
  });
});
