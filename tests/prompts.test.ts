import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { startFakeLlm, type FakeLlm } from './support/llm-server.js';
import { createProvider, upsertModel } from '../src/services/providers.js';
import { createBudget } from '../src/services/budgets.js';
import { createPrompt, renderPrompt } from '../src/services/prompts.js';
import { newId, nowIso } from '../src/ids.js';

let env: TestEnv;
let llm: FakeLlm;
beforeAll(async () => {
  env = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
  llm = await startFakeLlm();
});
afterAll(async () => { await env?.close(); await llm?.close(); });

const BASE = '/api/v1/prompts';
const create = (body: unknown, token = env.member.token) => env.request('POST', BASE, { token, body });
const addVersion = (id: string, body: unknown, token = env.member.token) => env.request('POST', `${BASE}/${id}/versions`, { token, body });
const setLabels = (id: string, version: number | string, labels: string[], token = env.member.token) =>
  env.request('PATCH', `${BASE}/${id}/versions/${version}`, { token, body: { labels } });
const show = (id: string, query = '') => env.request('GET', `${BASE}/${id}${query}`, { token: env.viewer.token });
const test = (id: string, body: unknown, token = env.member.token) => env.request('POST', `${BASE}/${id}/test`, { token, body });

describe('prompts', () => {
  it('creates with a first version, shows, lists, renames and deletes', async () => {
    const created = await create({ name: 'Greeting', description: 'Says hello', template: 'Hello {{ name }} from {{ company.name }}!{% for p in products %} {{ p }}{% endfor %}' });
    expect(created.status, created.text).toBe(201);
    const p = created.body;
    expect(p).toMatchObject({ name: 'Greeting', description: 'Says hello', versions_count: 1, labels: {}, labeled_versions: [] });
    expect(p.id).toMatch(/^prm_/);
    expect(p.latest_version).toEqual({
      id: expect.stringMatching(/^pver_/), prompt_id: p.id, version: 1,
      template: 'Hello {{ name }} from {{ company.name }}!{% for p in products %} {{ p }}{% endfor %}',
      variables: ['name', 'company', 'products'], model_settings: null, labels: [], created_by: env.member.userId, created_at: expect.any(String),
    });
    expect(p).not.toHaveProperty('resolved_version');

    const empty = await create({ name: 'Empty prompt' });
    expect(empty.status).toBe(201);
    expect(empty.body).toMatchObject({ versions_count: 0, latest_version: null });

    expect((await show(p.id)).body).toEqual(p);
    const listed = await env.request('GET', `${BASE}?search=greet`, { token: env.viewerKey });
    expect(listed.status).toBe(200);
    expect(listed.body.results).toEqual([{ id: p.id, name: 'Greeting', description: 'Says hello', latest_version: 1, created_at: p.created_at, updated_at: p.updated_at }]);
    const all = await env.request('GET', BASE, { token: env.viewer.token });
    expect(all.body.results.find((x: { id: string }) => x.id === empty.body.id)).toMatchObject({ latest_version: null });

    const renamed = await env.request('PATCH', `${BASE}/${p.id}`, { token: env.member.token, body: { name: 'Greeting v2', description: '' } });
    expect(renamed.status, renamed.text).toBe(200);
    expect(renamed.body).toMatchObject({ id: p.id, name: 'Greeting v2', description: '', versions_count: 1 });

    const dup = await create({ name: 'Greeting v2' });
    expectError(dup, 409);
    expect(dup.body.details).toHaveProperty('name');
    expectError(await env.request('PATCH', `${BASE}/${empty.body.id}`, { token: env.member.token, body: { name: 'Greeting v2' } }), 409);
    expect((await create({ name: 'Greeting v2' }, env.otherOwner.token)).status).toBe(201);

    const deleted = await env.request('DELETE', `${BASE}/${p.id}`, { token: env.member.token });
    expect(deleted.status).toBe(204);
    expectError(await show(p.id), 404);
    expectError(await env.request('GET', `${BASE}/${p.id}/versions`, { token: env.viewer.token }), 404);
    const orphans = await env.db.kysely.selectFrom('prompt_versions').select('id').where('prompt_id', '=', p.id).execute();
    expect(orphans).toEqual([]);
  });

  it('numbers versions 1, 2, 3 per prompt and lists them newest first', async () => {
    const p = (await create({ name: 'Numbered', template: 'v1 {{ a }}' })).body;
    const other = (await create({ name: 'Numbered other', template: 'x' })).body;
    const v2 = await addVersion(p.id, { template: 'v2 {{ a }} {{ b }}', variables: ['a', 'b', 'c'], model_settings: { model: 'gpt-test', temperature: 0.2 } });
    expect(v2.status, v2.text).toBe(201);
    expect(v2.body).toMatchObject({ prompt_id: p.id, version: 2, variables: ['a', 'b', 'c'], model_settings: { model: 'gpt-test', temperature: 0.2 }, labels: [] });
    const results = await Promise.all([addVersion(p.id, { template: 'v3' }), addVersion(p.id, { template: 'v4' })]);
    expect(results.map((r) => r.status)).toEqual([201, 201]);
    expect(results.map((r) => r.body.version).sort()).toEqual([3, 4]);
    expect((await addVersion(other.id, { template: 'y' })).body.version).toBe(2);

    const list = await env.request('GET', `${BASE}/${p.id}/versions?page_size=3`, { token: env.viewer.token });
    expect(list.status, list.text).toBe(200);
    expect(list.body.count).toBe(4);
    expect(list.body.results.map((v: { version: number }) => v.version)).toEqual([4, 3, 2]);
    expect(list.body.next).toMatch(/page=2/);

    const one = await env.request('GET', `${BASE}/${p.id}/versions/2`, { token: env.viewer.token });
    expect(one.body).toEqual(v2.body);
    expectError(await env.request('GET', `${BASE}/${p.id}/versions/9`, { token: env.viewer.token }), 404);
    expectError(await env.request('GET', `${BASE}/${p.id}/versions/abc`, { token: env.viewer.token }), 400);
    expect((await show(p.id)).body).toMatchObject({ versions_count: 4, latest_version: { version: 4 } });
  });

  it('moves labels between versions atomically, one version per label', async () => {
    const p = (await create({ name: 'Labelled', template: 'one', labels: ['production'] })).body;
    expect(p.labels).toEqual({ production: 1 });
    await addVersion(p.id, { template: 'two', labels: ['staging'] });
    const v3 = await addVersion(p.id, { template: 'three', labels: ['production', 'canary', 'canary'] });
    expect(v3.body.labels).toEqual(['canary', 'production']);
    let shown = (await show(p.id)).body;
    expect(shown.labels).toEqual({ production: 3, canary: 3, staging: 2 });
    expect(shown.labeled_versions.map((v: { version: number; labels: string[] }) => [v.version, v.labels])).toEqual([[3, ['canary', 'production']], [2, ['staging']]]);

    // Roll production back to version 1; version 3 keeps canary.
    const moved = await setLabels(p.id, 1, ['production']);
    expect(moved.status, moved.text).toBe(200);
    expect(moved.body).toMatchObject({ version: 1, labels: ['production'] });
    shown = (await show(p.id)).body;
    expect(shown.labels).toEqual({ production: 1, canary: 3, staging: 2 });
    const resolved = await show(p.id, '?label=production');
    expect(resolved.body.resolved_version).toMatchObject({ version: 1, template: 'one' });
    expect((await show(p.id, '?version=2')).body.resolved_version).toMatchObject({ version: 2, labels: ['staging'] });
    expectError(await show(p.id, '?label=nobody'), 404);
    expectError(await show(p.id, '?label=Bad Label'), 400);
    const filtered = await env.request('GET', `${BASE}/${p.id}/versions?label=canary`, { token: env.viewer.token });
    expect(filtered.body.results.map((v: { version: number }) => v.version)).toEqual([3]);

    // Concurrent moves of one label: it ends on exactly one version.
    await Promise.all([setLabels(p.id, 2, ['staging', 'production']), setLabels(p.id, 3, ['production']), setLabels(p.id, 1, ['production'])]);
    const rows = await env.db.kysely.selectFrom('prompt_versions').select(['version', 'labels']).where('prompt_id', '=', p.id).execute();
    expect(rows.filter((r) => (JSON.parse(r.labels) as string[]).includes('production')).length).toBe(1);

    // Clearing a version's labels; a label that is not well-formed is refused and nothing moves.
    expect((await setLabels(p.id, 3, [])).body.labels).toEqual([]);
    const before = (await show(p.id)).body.labels;
    const bad = await setLabels(p.id, 1, ['production', 'UPPER']);
    expectError(bad, 400);
    expect(bad.body.details).toHaveProperty(['labels.1']);
    expect((await show(p.id)).body.labels).toEqual(before);
    expectError(await setLabels(p.id, 7, ['production']), 404);
  });

  it('refuses templates that do not parse, naming the line, and other bad input', async () => {
    const broken = await create({ name: 'Broken', template: 'line one\n{% if x %}never closed' });
    expectError(broken, 400);
    expect(broken.body.details.template).toMatch(/^line 2: .*not closed/);
    expect((await env.request('GET', `${BASE}?search=Broken`, { token: env.viewer.token })).body.count).toBe(0);
    const filter = await create({ name: 'Broken', template: '{{ x | shout }}' });
    expect(filter.body.details.template).toMatch(/^line 1: .*undefined filter: shout/);
    const include = await create({ name: 'Broken', template: '{% include "package.json" %}' });
    expect(include.body.details.template).toMatch(/^line 1: .*include/);

    const p = (await create({ name: 'Valid', template: 'ok' })).body;
    const badVersion = await addVersion(p.id, { template: 'a\nb\n{{ unclosed' });
    expectError(badVersion, 400);
    expect(badVersion.body.details.template).toMatch(/^line 3: /);
    for (const [body, field] of [
      [{}, 'template'],
      [{ template: '' }, 'template'],
      [{ template: 'x', variables: ['bad name'] }, 'variables.0'],
      [{ template: 'x', model_settings: { temperature: 3 } }, 'model_settings.temperature'],
      [{ template: 'x', model_settings: { provider_id: 'prv_missing' } }, 'model_settings.provider_id'],
      [{ template: 'x', model_settings: { unknown: 1 } }, 'model_settings'],
      [{ template: 'x', labels: ['Production'] }, 'labels.0'],
    ] as [unknown, string][]) {
      const res = await addVersion(p.id, body);
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body)).toHaveProperty([field]);
    }
    expect((await create({ name: 'x', labels: ['production'] })).body.details).toHaveProperty('template');
    expect((await create({ name: '  ', template: 'x' })).body.details).toHaveProperty('name');
    expect((await show(p.id)).body.versions_count).toBe(1);
  });
});

describe('prompt test', () => {
  it('renders the production version by default, else the latest, as plain text', async () => {
    const p = (await create({ name: 'Render me', template: 'v1: {{ name }}' })).body;
    await addVersion(p.id, { template: 'v2: {{ name }} <b>{{ html }}</b> {% if vip %}VIP{% endif %}{{ nickname | default: "friend" }}' });
    const latest = await test(p.id, { variables: { name: 'Ann & Bob', html: '<i>x</i>' } });
    expect(latest.status, latest.text).toBe(200);
    expect(latest.body).toEqual({ rendered: 'v2: Ann & Bob <b><i>x</i></b> friend', variables: ['name', 'html', 'vip', 'nickname'], version: 2, labels: [] });
    await setLabels(p.id, 1, ['production']);
    expect((await test(p.id, { variables: { name: 'Ann' } })).body).toMatchObject({ rendered: 'v1: Ann', version: 1, labels: ['production'] });
    expect((await test(p.id, { variables: { name: 'Ann', html: 'h' }, version: 2 })).body).toMatchObject({ rendered: 'v2: Ann <b>h</b> friend', version: 2 });
    await setLabels(p.id, 2, ['staging']);
    expect((await test(p.id, { variables: { name: 'Ann', html: 'h', vip: true }, label: 'staging' })).body.rendered).toBe('v2: Ann <b>h</b> VIPfriend');
    expectError(await test(p.id, { variables: {}, label: 'canary' }), 404);
    expectError(await test(p.id, { variables: {}, version: 5 }), 404);
    const noVersions = (await create({ name: 'No versions' })).body;
    const none = await test(noVersions.id, {});
    expectError(none, 400);
    expect(none.body.details).toHaveProperty('version');
    // A viewer may look, not test (a test may spend).
    expectError(await test(p.id, {}, env.viewer.token), 403);
  });

  it('names every missing variable, and a rendering error with its line', async () => {
    const p = (await create({ name: 'Strict', template: 'Hi {{ first }} {{ last }}\nat {{ company.name }} in {{ company.city }}\n{% for x in items %}{{ x.title }}{% endfor %}' })).body;
    const missing = await test(p.id, { variables: { first: 'Ann', company: { city: 'Oslo' } } });
    expectError(missing, 400);
    expect(missing.body.error).toBe('Missing variables');
    expect(missing.body.details.missing).toEqual(['last', 'company.name', 'items']);
    expect(missing.body.details.variables).toBe('Missing variables: last, company.name, items');
    const ok = await test(p.id, { variables: { first: 'Ann', last: 'Lee', company: { name: 'Acme', city: 'Oslo' }, items: [{ title: 'a' }, { title: 'b' }] } });
    expect(ok.body.rendered).toBe('Hi Ann Lee\nat Acme in Oslo\nab');
    const field = await test(p.id, { variables: { first: 'Ann', last: 'Lee', company: { name: 'Acme', city: 'Oslo' }, items: [{ title: 'a' }, {}] } });
    expectError(field, 400);
    expect(field.body.details.missing).toEqual(['x.title']);

    // Past the engine's bounds (here: memory) is a rendering error too.
    const runtime = (await create({ name: 'Runtime error', template: 'a\n{% for i in (1..20000000) %}x{% endfor %}' })).body;
    const divided = await test(runtime.id, { variables: {} });
    expectError(divided, 400);
    expect(divided.body.details.template).toMatch(/^line 2: /);
    await expect(renderPrompt('{{ a.b.c }} {{ d }}', { a: {} })).rejects.toMatchObject({ status: 400, details: { missing: ['a.b', 'd'] } });
  });

  it('runs the rendered prompt on a provider when asked', async () => {
    const ctx = env.ctxOf(env.owner);
    const provider = await createProvider(ctx, { name: 'fake openai', type: 'openai', base_url: llm.openaiBaseUrl, api_key: 'sk-test-0123456789abcdef', default_model: 'test-model' });
    await upsertModel(ctx, provider.id, 'test-model', { input_price_per_million: 1, output_price_per_million: 2 });
    const p = (await create({ name: 'Run me', template: 'Say hi to {{ name }}', model_settings: { provider_id: provider.id, temperature: 0.5 } })).body;

    llm.push({ text: 'Hi Ann!', usage: { input: 10, output: 5 } });
    const before = llm.requests.length;
    const res = await test(p.id, { variables: { name: 'Ann' }, run: {} });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ rendered: 'Say hi to Ann', version: 1 });
    expect(res.body.output).toEqual({
      text: 'Hi Ann!', usage: { input_tokens: 10, output_tokens: 5 }, cost: expect.closeTo(0.00002, 12), provider_id: provider.id, model: 'test-model',
      latency_ms: expect.any(Number), finish_reason: 'stop',
    });
    const sent = llm.requests.slice(before);
    expect(sent.length).toBe(1);
    expect(sent[0].body).toMatchObject({ model: 'test-model', temperature: 0.5 });
    expect(JSON.stringify(sent[0].body.messages)).toContain('Say hi to Ann');

    // `run` overrides the version's settings.
    llm.push({ text: 'other' });
    const other = await test(p.id, { variables: { name: 'Ann' }, run: { model: 'another-model', temperature: 0 } });
    expect(other.body.output).toMatchObject({ text: 'other', model: 'another-model', cost: 0 });
    expect(llm.requests[llm.requests.length - 1].body).toMatchObject({ model: 'another-model', temperature: 0 });

    // Missing variables stop before any call.
    const n = llm.requests.length;
    expectError(await test(p.id, { variables: {}, run: {} }), 400);
    expect(llm.requests.length).toBe(n);

    // Provider failures: a 5xx is a 502, a refused key a 400, an unknown provider a 400 — with the provider's message.
    llm.push({ status: 500 });
    const failed = await test(p.id, { variables: { name: 'Ann' }, run: {} });
    expectError(failed, 502);
    expect(failed.body.details).toMatchObject({ provider_status: 500 });
    llm.push({ status: 401 });
    const refused = await test(p.id, { variables: { name: 'Ann' }, run: {} });
    expectError(refused, 400);
    expect(refused.body.details.run).toMatch(/API key/i);
    const unknown = await test(p.id, { variables: { name: 'Ann' }, run: { provider_id: 'prv_missing' } });
    expectError(unknown, 400);
    expect(unknown.body.details.run).toMatch(/not found/);

    // The organization's budgets apply to test runs.
    const budget = await createBudget(ctx, { name: 'Tiny', scope: 'organization', limit_usd: 0.001, period: 'daily' });
    const runId = newId('run');
    const now = nowIso();
    await env.db.kysely.insertInto('runs').values({ id: runId, organization_id: env.orgA, kind: 'agent', created_at: now, updated_at: now }).execute();
    await env.db.kysely.insertInto('run_steps').values({ id: newId('stp'), run_id: runId, organization_id: env.orgA, seq: 0, type: 'llm', name: 'x', status: 'succeeded', cost: 0.001, created_at: now }).execute();
    const m = llm.requests.length;
    const blocked = await test(p.id, { variables: { name: 'Ann' }, run: {} });
    expectError(blocked, 402);
    expect(blocked.body).toMatchObject({ error: 'budget_exceeded', details: { budget_id: budget.id } });
    expect(llm.requests.length).toBe(m);
  });
});

describe('prompts security', () => {
  it('401 without a token, 403 for viewers on writes, 404 for another organization\'s prompt', async () => {
    const p = (await create({ name: 'Secure prompt', template: 'x' })).body;
    const routes: [string, string][] = [
      ['GET', BASE], ['POST', BASE], ['GET', `${BASE}/${p.id}`], ['PATCH', `${BASE}/${p.id}`], ['DELETE', `${BASE}/${p.id}`],
      ['GET', `${BASE}/${p.id}/versions`], ['POST', `${BASE}/${p.id}/versions`], ['GET', `${BASE}/${p.id}/versions/1`],
      ['PATCH', `${BASE}/${p.id}/versions/1`], ['POST', `${BASE}/${p.id}/test`],
    ];
    for (const [method, url] of routes) expectError(await env.request(method, url, { body: method === 'GET' || method === 'DELETE' ? undefined : {} }), 401);
    for (const token of [env.viewer.token, env.viewerKey]) {
      expectError(await create({ name: 'v', template: 'x' }, token), 403);
      expectError(await env.request('PATCH', `${BASE}/${p.id}`, { token, body: { name: 'v' } }), 403);
      expectError(await env.request('DELETE', `${BASE}/${p.id}`, { token }), 403);
      expectError(await addVersion(p.id, { template: 'v' }, token), 403);
      expectError(await setLabels(p.id, 1, ['production'], token), 403);
      expectError(await test(p.id, {}, token), 403);
    }
    const foreign = await createPrompt(env.ctxOf(env.otherOwner), { name: 'Foreign', template: 'secret {{ x }}', labels: ['production'] });
    const fid = foreign.id;
    for (const [method, url, body] of [
      ['GET', `${BASE}/${fid}`, undefined], ['GET', `${BASE}/${fid}?label=production`, undefined], ['PATCH', `${BASE}/${fid}`, { name: 'mine' }],
      ['DELETE', `${BASE}/${fid}`, undefined], ['GET', `${BASE}/${fid}/versions`, undefined], ['POST', `${BASE}/${fid}/versions`, { template: 'x' }],
      ['POST', `${BASE}/${fid}/versions`, {}], ['GET', `${BASE}/${fid}/versions/1`, undefined], ['PATCH', `${BASE}/${fid}/versions/1`, { labels: [] }],
      ['PATCH', `${BASE}/${fid}/versions/x`, {}], ['POST', `${BASE}/${fid}/test`, { variables: { x: 1 } }],
    ] as [string, string, unknown][]) {
      const res = await env.request(method, url, { token: env.owner.token, body });
      expectError(res, 404);
      expect(res.text).not.toContain('secret');
    }
    expect((await env.request('GET', BASE, { token: env.owner.token })).body.results.map((x: { id: string }) => x.id)).not.toContain(fid);
    const still = await env.request('GET', `${BASE}/${fid}`, { token: env.otherOwner.token });
    expect(still.body).toMatchObject({ name: 'Foreign', versions_count: 1, labels: { production: 1 } });
  });
});
