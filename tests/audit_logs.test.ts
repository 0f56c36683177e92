import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const list = (query = '', token = env.owner.token) => env.request('GET', `/api/v1/audit_logs${query}`, { token });

describe('GET /api/v1/audit_logs', () => {
  it('records a real mutation with its actor, action, resource and request id', async () => {
    const created = await env.request('POST', '/api/v1/projects', { token: env.admin.token, body: { name: 'Audited' }, headers: { 'x-request-id': 'req-audit-check-1' } });
    expect(created.status).toBe(201);
    const res = await list(`?resource_id=${created.body.id}`);
    expect(res.status).toBe(200);
    expect(res.body.count).toBe(1);
    const entry = res.body.results[0];
    expect(entry).toMatchObject({
      actor_type: 'user', actor_id: env.admin.userId, action: 'projects.create', resource_type: 'project',
      resource_id: created.body.id, request_id: 'req-audit-check-1', metadata: {},
    });
    expect(typeof entry.ip).toBe('string');
    expect(entry.id).toMatch(/^aud_/);
    expect(new Date(entry.created_at).toISOString()).toBe(entry.created_at);

    const one = await env.request('GET', `/api/v1/audit_logs/${entry.id}`, { token: env.owner.token });
    expect(one.status).toBe(200);
    expect(one.body).toEqual(entry);
  });

  it('records API-key mutations under the key', async () => {
    const keys = await env.request('GET', '/api/v1/api_keys', { token: env.owner.token });
    const keyId = keys.body.results.find((k: { name: string }) => k.name === 'admin key').id;
    const created = await env.request('POST', '/api/v1/projects', { token: env.adminKey, body: { name: 'By key' } });
    expect(created.status).toBe(201);
    const res = await list(`?actor_type=api_key&resource_id=${created.body.id}`);
    expect(res.body.results).toHaveLength(1);
    expect(res.body.results[0]).toMatchObject({ actor_type: 'api_key', actor_id: keyId, action: 'projects.create' });
    // An update and a delete are recorded too, under the same resource.
    await env.request('PATCH', `/api/v1/projects/${created.body.id}`, { token: env.adminKey, body: { name: 'Renamed' } });
    await env.request('DELETE', `/api/v1/projects/${created.body.id}`, { token: env.adminKey });
    const all = await list(`?resource_id=${created.body.id}`);
    expect(all.body.results.map((r: { action: string }) => r.action)).toEqual(['projects.delete', 'projects.update', 'projects.create']);
  });

  it('lists newest first and filters by actor, action and resource type', async () => {
    const first = await env.request('POST', '/api/v1/projects', { token: env.member.token, body: { name: 'First' } });
    const second = await env.request('POST', '/api/v1/projects', { token: env.member.token, body: { name: 'Second' } });
    const res = await list(`?actor_id=${env.member.userId}&action=projects.create&resource_type=project`);
    expect(res.status).toBe(200);
    expect(res.body.results.map((r: { resource_id: string }) => r.resource_id)).toEqual([second.body.id, first.body.id]);
    expect(res.body.results.every((r: { actor_id: string }) => r.actor_id === env.member.userId)).toBe(true);
    const none = await list('?action=no.such.action');
    expect(none.body).toMatchObject({ count: 0, results: [] });
  });

  it('filters by time range', async () => {
    const before = new Date(Date.now() - 1000).toISOString();
    const created = await env.request('POST', '/api/v1/projects', { token: env.admin.token, body: { name: 'Timed' } });
    const inRange = await list(`?resource_id=${created.body.id}&since=${encodeURIComponent(before)}&until=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
    expect(inRange.body.count).toBe(1);
    const future = await list(`?resource_id=${created.body.id}&since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
    expect(future.body.count).toBe(0);
    const past = await list(`?resource_id=${created.body.id}&until=${encodeURIComponent(before)}`);
    expect(past.body.count).toBe(0);
    // Offsets other than Z are accepted and compared as instants.
    const offset = await list(`?resource_id=${created.body.id}&since=${encodeURIComponent('2000-01-01T02:00:00+02:00')}`);
    expect(offset.body.count).toBe(1);
  });

  it('paginates', async () => {
    for (let i = 0; i < 3; i++) await env.request('POST', '/api/v1/projects', { token: env.owner.token, body: { name: `P${i}` } });
    const page1 = await list('?page_size=2');
    expect(page1.body.results).toHaveLength(2);
    expect(page1.body.next).toContain('page=2');
    const page2 = await env.request('GET', new URL(page1.body.next).pathname + new URL(page1.body.next).search, { token: env.owner.token });
    expect(page2.status).toBe(200);
    expect(page2.body.results[0].id < page1.body.results[1].id).toBe(true);
  });

  it('rejects invalid filters with 400 naming them', async () => {
    const badSince = await list('?since=yesterday');
    expectError(badSince, 400);
    expect(badSince.body.details).toHaveProperty('since');
    const badUntil = await list('?until=2024-13-45T00:00:00Z');
    expectError(badUntil, 400);
    expect(badUntil.body.details).toHaveProperty('until');
    const badType = await list('?actor_type=robot');
    expectError(badType, 400);
    expect(badType.body.details).toHaveProperty('actor_type');
    const reversed = await list(`?since=${encodeURIComponent('2025-01-02T00:00:00Z')}&until=${encodeURIComponent('2025-01-01T00:00:00Z')}`);
    expectError(reversed, 400);
    expect(reversed.body.details).toHaveProperty('since');
  });

  it("never shows another organization's rows", async () => {
    const foreign = await env.request('POST', '/api/v1/projects', { token: env.otherOwner.token, body: { name: 'B only' } });
    expect(foreign.status).toBe(201);
    const mine = await list(`?resource_id=${foreign.body.id}`);
    expect(mine.body.count).toBe(0);
    const theirs = await list(`?resource_id=${foreign.body.id}`, env.otherOwner.token);
    expect(theirs.body.count).toBe(1);
    const one = await env.request('GET', `/api/v1/audit_logs/${theirs.body.results[0].id}`, { token: env.owner.token });
    expectError(one, 404);
  });

  it('404 for an unknown id; 403 for roles without audit_logs:read', async () => {
    expectError(await env.request('GET', '/api/v1/audit_logs/aud_nope', { token: env.owner.token }), 404);
    expectError(await list('', env.member.token), 403);
    expectError(await list('', env.viewerKey), 403);
    expect((await list('', env.adminKey)).status).toBe(200);
  });
});
