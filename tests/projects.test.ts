import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { paginate } from '../src/pagination.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

describe('projects', () => {
  it('creates, shows, lists, updates and deletes', async () => {
    const created = await env.request('POST', '/api/v1/projects', { token: env.member.token, body: { name: 'Spring campaign', description: 'Q2', settings: { tone: 'warm' } } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'Spring campaign', description: 'Q2', status: 'active', settings: { tone: 'warm' } });
    expect(created.body.id).toMatch(/^prj_/);

    const shown = await env.request('GET', `/api/v1/projects/${created.body.id}`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(created.body);

    const listed = await env.request('GET', '/api/v1/projects', { token: env.viewerKey });
    expect(listed.status).toBe(200);
    expect(listed.body.results.map((p: { id: string }) => p.id)).toContain(created.body.id);

    const updated = await env.request('PATCH', `/api/v1/projects/${created.body.id}`, { token: env.member.token, body: { status: 'archived', name: 'Spring' } });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ name: 'Spring', status: 'archived', description: 'Q2' });
    expect(updated.body.updated_at >= created.body.updated_at).toBe(true);

    const filtered = await env.request('GET', '/api/v1/projects?status=archived', { token: env.member.token });
    expect(filtered.body.results.map((p: { id: string }) => p.id)).toEqual([created.body.id]);

    const deleted = await env.request('DELETE', `/api/v1/projects/${created.body.id}`, { token: env.member.token });
    expect(deleted.status).toBe(200);
    expect(deleted.body).toEqual({ id: created.body.id, deleted: true });
    expectError(await env.request('GET', `/api/v1/projects/${created.body.id}`, { token: env.member.token }), 404);
  });

  it('searches names case-insensitively, with wildcards taken literally', async () => {
    for (const name of ['Alpha launch', 'alphabet soup', '100% done', 'Beta']) {
      expect((await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name } })).status).toBe(201);
    }
    const alpha = await env.request('GET', '/api/v1/projects?search=ALPHA', { token: env.owner.token });
    expect(alpha.body.results.map((p: { name: string }) => p.name).sort()).toEqual(['Alpha launch', 'alphabet soup']);
    const percent = await env.request('GET', '/api/v1/projects?search=%25', { token: env.owner.token });
    expect(percent.body.results.map((p: { name: string }) => p.name)).toEqual(['100% done']);
  });

  it('every combination of filters, page by page: the same rows as one big page (each shape of the compiled list query)', async () => {
    const ctx = env.ctxOf(env.admin);
    for (let i = 0; i < 7; i++) {
      const res = await env.request('POST', '/api/v1/projects', { token: env.admin.token, body: { name: `Combo ${i % 2 ? 'red' : 'blue'} ${i}`, status: i % 3 ? 'active' : 'archived' } });
      expect(res.status).toBe(201);
    }
    const ids = async (q: string) => {
      const out: string[] = [];
      for (let page = 1; ; page++) {
        const res = await env.request('GET', `/api/v1/projects?page_size=2&page=${page}${q}`, { token: env.viewerKey });
        expect(res.status).toBe(200);
        out.push(...res.body.results.map((p: { id: string }) => p.id));
        if (!res.body.next) return { ids: out, count: res.body.count as number };
      }
    };
    const all = (await env.request('GET', '/api/v1/projects?page_size=100', { token: env.admin.token })).body.results as { id: string; name: string; status: string }[];
    for (const [q, keep] of [
      ['', () => true],
      ['&status=archived', (p) => p.status === 'archived'],
      ['&search=combo%20red', (p) => p.name.toLowerCase().includes('combo red')],
      ['&status=active&search=COMBO', (p) => p.status === 'active' && p.name.toLowerCase().includes('combo')],
    ] as [string, (p: { name: string; status: string }) => boolean][]) {
      const want = all.filter(keep).map((p) => p.id);
      expect(want.length, q).toBeGreaterThan(0);
      // Twice: the second walk runs the compiled queries the first one cached.
      for (let i = 0; i < 2; i++) expect(await ids(q), q).toEqual({ ids: want, count: want.length });
    }
    // A list whose declared parameters disagree with its query is refused where responses are checked (tests, development).
    const query = () => ctx.deps.db.kysely.selectFrom('projects').select(['id']).where('organization_id', '=', env.orgA);
    await expect(paginate(ctx, { query, prepared: { shape: 'mismatch', params: [env.orgB] }, table: 'projects', scope: env.orgA, input: {}, countKey: 'mismatch' }, (r) => r))
      .rejects.toThrow(/do not match/);
    const right = await paginate(ctx, { query, prepared: { shape: 'match', params: [env.orgA] }, table: 'projects', scope: env.orgA, input: { page_size: 100 }, countKey: 'match' }, (r) => r.id);
    expect(right.results).toEqual(all.map((p) => p.id));
  });

  it('rejects bad input without writing', async () => {
    const before = (await env.request('GET', '/api/v1/projects', { token: env.owner.token })).body.count;
    const empty = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: '   ' } });
    expectError(empty, 400);
    expect(empty.body.details).toHaveProperty('name');
    const badStatus = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: 'x', status: 'deleted' } });
    expectError(badStatus, 400);
    expect(badStatus.body.details).toHaveProperty('status');
    const missing = await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: {} });
    expectError(missing, 400);
    expect(missing.body.details).toHaveProperty('name');
    expect((await env.request('GET', '/api/v1/projects', { token: env.owner.token })).body.count).toBe(before);
    expectError(await env.request('PATCH', '/api/v1/projects/prj_missing', { token: env.owner.token, body: { name: 'x' } }), 404);
    expectError(await env.request('DELETE', '/api/v1/projects/prj_missing', { token: env.owner.token }), 404);
  });

  it("keeps each organization's projects to itself", async () => {
    const b = await env.request('POST', '/api/v1/projects', { token: env.otherOwner.token, body: { name: 'B only' } });
    const listA = await env.request('GET', '/api/v1/projects?page_size=100', { token: env.owner.token });
    expect(listA.body.results.map((p: { id: string }) => p.id)).not.toContain(b.body.id);
    expectError(await env.request('PATCH', `/api/v1/projects/${b.body.id}`, { token: env.owner.token, body: { name: 'taken' } }), 404);
    const still = await env.request('GET', `/api/v1/projects/${b.body.id}`, { token: env.otherOwner.token });
    expect(still.body.name).toBe('B only');
  });
});
