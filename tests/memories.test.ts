import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId, nowIso } from '../src/ids.js';
import { searchMemories, searchTerms } from '../src/services/memories.js';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

// Memories (/api/v1/memories): CRUD, and ranked full-text search through the engine's index
// (SQLite FTS5 / PostgreSQL to_tsvector), scoped by organization, agent and namespace.

const BASE = '/api/v1/memories';

let env: TestEnv;
let agentA: string;
let agentB: string;
let agentOtherOrg: string;

beforeAll(async () => {
  env = await createTestEnv();
  const now = nowIso();
  [agentA, agentB, agentOtherOrg] = [newId('agt'), newId('agt'), newId('agt')];
  await env.db.kysely.insertInto('agents').values([
    { id: agentA, organization_id: env.orgA, name: 'Agent A', created_at: now, updated_at: now },
    { id: agentB, organization_id: env.orgA, name: 'Agent B', created_at: now, updated_at: now },
    { id: agentOtherOrg, organization_id: env.orgB, name: 'Agent of B', created_at: now, updated_at: now },
  ]).execute();
});
afterAll(async () => { await env?.close(); });

const create = (body: unknown, token = env.member.token) => env.request('POST', BASE, { token, body });
const search = (body: unknown, token = env.member.token) => env.request('POST', `${BASE}/search`, { token, body });
const count = async () => Number((await env.db.kysely.selectFrom('memories').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst())?.n ?? 0);
const contents = (res: { body: { results: { content: string }[] } }) => res.body.results.map((r) => r.content);

describe('memories CRUD', () => {
  it('creates with defaults, shows, updates and deletes', async () => {
    const res = await create({ content: 'The buyer at Initech is Peter' });
    expect(res.status, res.text).toBe(201);
    expect(res.body).toMatchObject({ content: 'The buyer at Initech is Peter', agent_id: null, namespace: 'default', metadata: {} });
    expect(res.body.id).toMatch(/^mem_/);
    const id = res.body.id as string;
    expect((await env.request('GET', `${BASE}/${id}`, { token: env.viewer.token })).body).toEqual(res.body);

    const patched = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { content: 'The buyer at Initech is Samir', namespace: 'accounts', agent_id: agentA, metadata: { source: 'call', n: 2 } } });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body).toMatchObject({ content: 'The buyer at Initech is Samir', namespace: 'accounts', agent_id: agentA, metadata: { source: 'call', n: 2 } });
    const unshared = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { agent_id: null } });
    expect(unshared.body.agent_id).toBeNull();

    expect((await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token })).status).toBe(204);
    expectError(await env.request('GET', `${BASE}/${id}`, { token: env.member.token }), 404);
    expectError(await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { content: 'x' } }), 404);
    expectError(await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token }), 404);
  });

  it('validates the body, naming the field, storing nothing', async () => {
    const before = await count();
    const cases: [unknown, string][] = [
      [{}, 'content'],
      [{ content: '   ' }, 'content'],
      [{ content: 'x'.repeat(20_001) }, 'content'],
      [{ content: 'x', namespace: '' }, 'namespace'],
      [{ content: 'x', metadata: 'text' }, 'metadata'],
      [{ content: 'x', metadata: [1, 2] }, 'metadata'],
      [{ content: 'x', metadata: { big: 'y'.repeat(20_000) } }, 'metadata'],
      [{ content: 'x', agent_id: 'agt_missing' }, 'agent_id'],
      // Another organization's agent is unknown here.
      [{ content: 'x', agent_id: agentOtherOrg }, 'agent_id'],
    ];
    for (const [body, field] of cases) {
      const res = await create(body);
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body).slice(0, 100)).toHaveProperty(field);
    }
    expect(await count()).toBe(before);
  });

  it('lists newest first, filtered by agent and namespace', async () => {
    const a1 = await create({ content: 'list one', agent_id: agentA, namespace: 'listing' });
    const a2 = await create({ content: 'list two', agent_id: agentA, namespace: 'other-ns' });
    const b1 = await create({ content: 'list three', agent_id: agentB, namespace: 'listing' });
    const ids = (res: { body: { results: { id: string }[] } }) => res.body.results.map((r) => r.id);
    const byAgent = await env.request('GET', `${BASE}?agent_id=${agentA}&page_size=100`, { token: env.viewerKey });
    expect(byAgent.status, byAgent.text).toBe(200);
    expect(ids(byAgent)).toEqual([a2.body.id, a1.body.id]);
    expect(byAgent.body.count).toBe(2);
    expect(ids(await env.request('GET', `${BASE}?namespace=listing`, { token: env.member.token }))).toEqual([b1.body.id, a1.body.id]);
    expect(ids(await env.request('GET', `${BASE}?namespace=listing&agent_id=${agentB}`, { token: env.member.token }))).toEqual([b1.body.id]);
    const paged = await env.request('GET', `${BASE}?namespace=listing&page_size=1`, { token: env.member.token });
    expect(paged.body.count).toBe(2);
    expect(paged.body.next).toMatch(/page=2/);
  });

  it('deletes an agent\'s memories with the agent', async () => {
    const now = nowIso();
    const gone = newId('agt');
    await env.db.kysely.insertInto('agents').values({ id: gone, organization_id: env.orgA, name: 'Short-lived', created_at: now, updated_at: now }).execute();
    const m = await create({ content: 'ephemeral quokka note', agent_id: gone });
    expect(m.status).toBe(201);
    await env.db.kysely.deleteFrom('agents').where('id', '=', gone).execute();
    expectError(await env.request('GET', `${BASE}/${m.body.id}`, { token: env.member.token }), 404);
    expect(contents(await search({ query: 'quokka' }))).toEqual([]);
  });
});

describe('memories search', () => {
  beforeAll(async () => {
    for (const body of [
      { content: 'Invoice 1042 for Globex is overdue; the overdue invoice must be paid by Friday', namespace: 'billing' },
      { content: 'Globex sent an invoice question last week', namespace: 'billing' },
      { content: 'Globex likes golf and long lunches', namespace: 'personal' },
      { content: 'Agent A notes: Globex renewal is risky', agent_id: agentA, namespace: 'billing' },
      { content: 'Agent B notes: Globex renewal looks fine', agent_id: agentB, namespace: 'billing' },
      { content: 'The prospects were running several pilots', namespace: 'stemming' },
    ]) expect((await create(body)).status).toBe(201);
    expect((await create({ content: 'Globex overdue invoice of another organization', namespace: 'billing' }, env.otherOwner.token)).status).toBe(201);
  });

  it('ranks more relevant memories first, with scores', async () => {
    const res = await search({ query: 'overdue invoice', namespace: 'billing' });
    expect(res.status, res.text).toBe(200);
    expect(contents(res)).toEqual([
      'Invoice 1042 for Globex is overdue; the overdue invoice must be paid by Friday',
      'Globex sent an invoice question last week',
    ]);
    const [first, second] = res.body.results;
    expect(first.score).toBeGreaterThan(second.score);
    expect(Object.keys(first).sort()).toEqual(['agent_id', 'content', 'id', 'metadata', 'namespace', 'score']);
  });

  it('uses the full-text index: English stemming, not substring matching', async () => {
    // "run" finds "running" and "pilot" finds "pilots" (stems); "lobex", inside "Globex", finds
    // nothing (whole words only: no substring scan).
    expect(contents(await search({ query: 'run pilot' }))).toEqual(['The prospects were running several pilots']);
    expect(contents(await search({ query: 'lobex' }))).toEqual([]);
  });

  it('scopes by namespace and agent (own and shared memories), and limits', async () => {
    expect(contents(await search({ query: 'globex', namespace: 'personal' }))).toEqual(['Globex likes golf and long lunches']);
    const asA = contents(await search({ query: 'renewal', agent_id: agentA }));
    expect(asA).toEqual(['Agent A notes: Globex renewal is risky']);
    const asAWithShared = contents(await search({ query: 'globex', agent_id: agentA, limit: 50 }));
    expect(asAWithShared).toHaveLength(4);
    expect(asAWithShared).not.toContain('Agent B notes: Globex renewal looks fine');
    expect(contents(await search({ query: 'globex', agent_id: agentA, include_shared: false }))).toEqual(['Agent A notes: Globex renewal is risky']);
    const sharedOnly = contents(await search({ query: 'renewal', agent_id: null }));
    expect(sharedOnly).toEqual([]);
    expect(contents(await search({ query: 'globex', limit: 2 }))).toHaveLength(2);
    expect(contents(await search({ query: 'globex', limit: 50 }))).toHaveLength(5);
  });

  it('never shows another organization\'s memories', async () => {
    const res = await search({ query: 'globex overdue invoice another organization', limit: 50 });
    expect(contents(res)).not.toContain('Globex overdue invoice of another organization');
    const b = await search({ query: 'globex', limit: 50 }, env.otherOwner.token);
    expect(contents(b)).toEqual(['Globex overdue invoice of another organization']);
    // Direct service calls are scoped the same way.
    expect((await searchMemories(env.app.deps, env.orgB, { query: 'golf' }))).toEqual([]);
  });

  it('treats query syntax as plain words: quotes, *, AND, -, NEAR, colons never fail', async () => {
    const hostile = [
      '"', '""', '"globex', 'glob*', '*', 'AND', 'globex AND', 'OR NOT', '-globex', 'globex -golf', 'NEAR(globex golf)', 'content:globex',
      '(globex', 'globex)', '^globex', "o'brien", '\\', '{}', '!', '&|!<->', 'golf:*', '🙂 globex', 'ünïcödé', '%_', '\u0001',
    ];
    for (const query of hostile) {
      const res = await search({ query });
      expect(res.status, `${query}: ${res.text}`).toBe(200);
      expect(Array.isArray(res.body.results)).toBe(true);
    }
    expect(contents(await search({ query: '"golf"' }))).toEqual(['Globex likes golf and long lunches']);
    expect(contents(await search({ query: 'golf -lunches' }))).toEqual(['Globex likes golf and long lunches']);
    expect(contents(await search({ query: 'golf*' }))).toEqual(['Globex likes golf and long lunches']);
    expect(contents(await search({ query: '!!!' }))).toEqual([]);
    expect(searchTerms('Globex AND "golf" -x*')).toEqual(['globex', 'and', 'golf', 'x']);
  });

  it('keeps the index in step with updates and deletes', async () => {
    const m = await create({ content: 'The zeppelin project is on hold' });
    expect(contents(await search({ query: 'zeppelin' }))).toEqual(['The zeppelin project is on hold']);
    await env.request('PATCH', `${BASE}/${m.body.id}`, { token: env.member.token, body: { content: 'The airship project restarted' } });
    expect(contents(await search({ query: 'zeppelin' }))).toEqual([]);
    expect(contents(await search({ query: 'airship' }))).toEqual(['The airship project restarted']);
    // Changing other fields leaves the content indexed.
    await env.request('PATCH', `${BASE}/${m.body.id}`, { token: env.member.token, body: { namespace: 'projects', metadata: { a: 1 } } });
    expect((await search({ query: 'airship' })).body.results[0]).toMatchObject({ namespace: 'projects', metadata: { a: 1 } });
    await env.request('DELETE', `${BASE}/${m.body.id}`, { token: env.member.token });
    expect(contents(await search({ query: 'airship' }))).toEqual([]);
  });

  it('validates the search body', async () => {
    for (const [body, field] of [
      [{}, 'query'], [{ query: '' }, 'query'], [{ query: 'x'.repeat(1001) }, 'query'], [{ query: 'x', limit: 0 }, 'limit'],
      [{ query: 'x', limit: 51 }, 'limit'], [{ query: 'x', limit: 1.5 }, 'limit'], [{ query: 42 }, 'query'],
    ] as [unknown, string][]) {
      const res = await search(body);
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body).slice(0, 80)).toHaveProperty(field);
    }
  });
});

describe('memories security', () => {
  it('401 without a token, 403 for viewers on writes (viewers may search), 404 for another organization\'s memory', async () => {
    const m = await create({ content: 'perm check' });
    expectError(await env.request('GET', BASE), 401);
    expectError(await env.request('POST', `${BASE}/search`, { body: { query: 'x' } }), 401);
    expectError(await create({ content: 'viewer' }, env.viewer.token), 403);
    expectError(await env.request('PATCH', `${BASE}/${m.body.id}`, { token: env.viewerKey, body: { content: 'x' } }), 403);
    expectError(await env.request('DELETE', `${BASE}/${m.body.id}`, { token: env.viewer.token }), 403);
    expect((await search({ query: 'perm' }, env.viewer.token)).status).toBe(200);

    const b = await create({ content: 'secret of org b' }, env.otherOwner.token);
    const url = `${BASE}/${b.body.id}`;
    expectError(await env.request('GET', url, { token: env.owner.token }), 404);
    expectError(await env.request('PATCH', url, { token: env.owner.token, body: { content: 'mine' } }), 404);
    expectError(await env.request('DELETE', url, { token: env.owner.token }), 404);
    const listA = await env.request('GET', `${BASE}?page_size=100`, { token: env.owner.token });
    expect(listA.body.results.map((x: { id: string }) => x.id)).not.toContain(b.body.id);
    expect((await env.request('GET', url, { token: env.otherOwner.token })).body.content).toBe('secret of org b');
  });
});
