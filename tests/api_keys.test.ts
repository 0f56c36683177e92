import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../src/crypto.js';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const create = (body: Record<string, unknown>, token = env.owner.token, headers?: Record<string, string>) =>
  env.request('POST', '/api/v1/api_keys', { token, body, headers });
const keyCount = async () => Number((await env.db.kysely.selectFrom('api_keys').select((e) => e.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const future = (ms = 86400_000) => new Date(Date.now() + ms).toISOString();

describe('create', () => {
  it('201 with the full key once; the key works at once', async () => {
    const res = await create({ name: 'CI', role: 'member' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: 'CI', role: 'member', status: 'active', created_by: env.owner.userId, expires_at: null, revoked_at: null, last_used_at: null });
    expect(res.body.id).toMatch(/^key_/);
    expect(res.body.key).toMatch(/^agk_[A-Za-z0-9_-]{30,}$/);
    expect(res.body.prefix).toBe(res.body.key.slice(0, 12));
    expect(res.body).not.toHaveProperty('key_hash');
    // Stored as a hash only.
    const row = await env.db.kysely.selectFrom('api_keys').selectAll().where('id', '=', res.body.id).executeTakeFirstOrThrow();
    expect(row.key_hash).toBe(sha256Hex(res.body.key));
    expect(JSON.stringify(row)).not.toContain(res.body.key);
    expect((await env.request('GET', '/api/v1/projects', { token: res.body.key })).status).toBe(200);
  });

  it('defaults to the member role and accepts a future expiry', async () => {
    const exp = future();
    const res = await create({ name: 'default role', expires_at: exp });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ role: 'member', expires_at: exp, status: 'active' });
  });

  it('list and show never contain the key or its hash', async () => {
    const { body: created } = await create({ name: 'secretive', role: 'viewer' });
    const hash = sha256Hex(created.key);
    const list = await env.request('GET', '/api/v1/api_keys?page_size=100', { token: env.owner.token });
    expect(list.status).toBe(200);
    const mine = list.body.results.find((k: { id: string }) => k.id === created.id);
    expect(mine).toMatchObject({ name: 'secretive', prefix: created.prefix, role: 'viewer', status: 'active' });
    for (const k of list.body.results) { expect(k).not.toHaveProperty('key'); expect(k).not.toHaveProperty('key_hash'); }
    expect(list.text).not.toContain(created.key);
    expect(list.text).not.toContain(hash);

    const show = await env.request('GET', `/api/v1/api_keys/${created.id}`, { token: env.owner.token });
    expect(show.status).toBe(200);
    expect(show.body).toMatchObject({ id: created.id, name: 'secretive', prefix: created.prefix });
    expect(show.body).not.toHaveProperty('key');
    expect(show.text).not.toContain(created.key);
    expect(show.text).not.toContain(hash);
  });

  it('the audit log records the creation without the key', async () => {
    const { body: created } = await create({ name: 'audited' });
    const rows = await env.db.kysely.selectFrom('audit_logs').selectAll().where('resource_id', '=', created.id).execute();
    expect(rows.map((r) => r.action)).toContain('api_keys.create');
    expect(JSON.stringify(rows)).not.toContain(created.key);
  });

  it('an admin can create admin keys but not owner keys; nobody creates owner keys', async () => {
    expect((await create({ name: 'admin made', role: 'admin' }, env.admin.token)).status).toBe(201);
    const before = await keyCount();
    expectError(await create({ name: 'too high', role: 'owner' }, env.admin.token), 403);
    expectError(await create({ name: 'owner key', role: 'owner' }, env.owner.token), 403);
    expect(await keyCount()).toBe(before);
  });

  it('members and viewers cannot create keys at all; nothing is written', async () => {
    const before = await keyCount();
    expectError(await create({ name: 'member key', role: 'viewer' }, env.member.token), 403);
    expectError(await create({ name: 'viewer key', role: 'viewer' }, env.viewer.token), 403);
    expectError(await create({ name: 'from a viewer key', role: 'viewer' }, env.viewerKey), 403);
    expect(await keyCount()).toBe(before);
  });

  it('an admin-scoped key can mint keys up to admin, never owner', async () => {
    const ok = await create({ name: 'minted by key', role: 'viewer' }, env.adminKey);
    expect(ok.status).toBe(201);
    expectError(await create({ name: 'escalate', role: 'owner' }, env.adminKey), 403);
  });

  it.each([['superuser'], ['custom:rol_does_not_exist'], ['custom:'], ['OWNER'], ['']])('400 naming role for the unknown role %j', async (role) => {
    const before = await keyCount();
    const res = await create({ name: 'bad role', role });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('role');
    expect(await keyCount()).toBe(before);
  });

  it('a custom role of this organization scopes the key to its permissions', async () => {
    const role = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'project readers', permissions: ['projects:read'] } });
    expect(role.status).toBe(201);
    const res = await create({ name: 'custom', role: role.body.assign_as });
    expect(res.status).toBe(201);
    expect(res.body.role).toBe(role.body.assign_as);
    expect((await env.request('GET', '/api/v1/projects', { token: res.body.key })).status).toBe(200);
    expectError(await env.request('GET', '/api/v1/api_keys', { token: res.body.key }), 403);
    expectError(await env.request('POST', '/api/v1/projects', { token: res.body.key, body: { name: 'nope' } }), 403);
  });

  it('another organization\'s custom role → 400', async () => {
    const roleB = await env.request('POST', '/api/v1/roles', { token: env.otherOwner.token, body: { name: 'b role', permissions: ['projects:read'] } });
    expect(roleB.status).toBe(201);
    const res = await create({ name: 'foreign role', role: roleB.body.assign_as });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('role');
  });

  it('a key with a custom role cannot mint a key with permissions it lacks', async () => {
    const minter = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'key minter', permissions: ['api_keys:read', 'api_keys:write', 'projects:read'] } });
    const wider = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'secret readers', permissions: ['secrets:read'] } });
    const minterKey = (await create({ name: 'minter', role: minter.body.assign_as })).body.key;
    expectError(await create({ name: 'wider', role: wider.body.assign_as }, minterKey), 403);
    expectError(await create({ name: 'builtin', role: 'viewer' }, minterKey), 403);
    expect((await create({ name: 'same', role: minter.body.assign_as }, minterKey)).status).toBe(201);
  });

  it.each([
    [{ role: 'viewer' }, 'name'],
    [{ name: '   ' }, 'name'],
    [{ name: 'x'.repeat(101) }, 'name'],
    [{ name: 42 }, 'name'],
    [{ name: 'k', role: 7 }, 'role'],
    [{ name: 'k', expires_at: 'tomorrow' }, 'expires_at'],
    [{ name: 'k', expires_at: '2030-02-30T00:00:00Z' }, 'expires_at'],
    [{ name: 'k', expires_at: 1893456000 }, 'expires_at'],
  ])('400 naming the field for %j', async (body, field) => {
    const before = await keyCount();
    const res = await create(body);
    expectError(res, 400);
    expect(res.body.details).toHaveProperty(field);
    expect(await keyCount()).toBe(before);
  });

  it('expires_at in the past → 400', async () => {
    const before = await keyCount();
    const res = await create({ name: 'stale', expires_at: new Date(Date.now() - 60_000).toISOString() });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('expires_at');
    expect(await keyCount()).toBe(before);
  });

  it('expires_at in the past written with a time-zone offset → 400', async () => {
    // 13 hours ago, written in UTC+14: as text it reads later than now, as a time it is past.
    const past = new Date(Date.now() - 13 * 3600_000);
    const expiresAt = `${new Date(past.getTime() + 14 * 3600_000).toISOString().slice(0, 19)}+14:00`;
    expect(new Date(expiresAt).getTime()).toBeLessThan(Date.now());
    const before = await keyCount();
    const res = await create({ name: 'stale offset', expires_at: expiresAt });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('expires_at');
    expect(await keyCount()).toBe(before);
  });

  it('an Idempotency-Key replay returns the same key, and the stored response does not hold the key in clear', async () => {
    const headers = { 'idempotency-key': 'create-key-once' };
    const first = await create({ name: 'idempotent' }, env.owner.token, headers);
    const again = await create({ name: 'idempotent' }, env.owner.token, headers);
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(again.body.id).toBe(first.body.id);
    const stored = await env.db.kysely.selectFrom('idempotency_keys').selectAll().where('key', '=', 'create-key-once').execute();
    expect(stored).toHaveLength(1);
    expect(JSON.stringify(stored)).not.toContain(first.body.key);
  });
});

describe('revoke', () => {
  it('revokes: status revoked, the key then gets 401; revoking again is harmless', async () => {
    const { body: k } = await create({ name: 'short lived', role: 'viewer' });
    expect((await env.request('GET', '/api/v1/projects', { token: k.key })).status).toBe(200);
    const res = await env.request('DELETE', `/api/v1/api_keys/${k.id}/revoke`, { token: env.owner.token });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: k.id, status: 'revoked' });
    expect(res.body.revoked_at).not.toBeNull();
    expect(res.body).not.toHaveProperty('key');
    expectError(await env.request('GET', '/api/v1/projects', { token: k.key }), 401);
    const again = await env.request('DELETE', `/api/v1/api_keys/${k.id}/revoke`, { token: env.owner.token });
    expect(again.status).toBe(200);
    expect(again.body.revoked_at).toBe(res.body.revoked_at);
    expect((await env.request('GET', `/api/v1/api_keys/${k.id}`, { token: env.owner.token })).body.status).toBe('revoked');
  });

  it('a key can be revoked by an admin, not by a member or a viewer key', async () => {
    const { body: k } = await create({ name: 'admin revokes' });
    expectError(await env.request('DELETE', `/api/v1/api_keys/${k.id}/revoke`, { token: env.member.token }), 403);
    expectError(await env.request('DELETE', `/api/v1/api_keys/${k.id}/revoke`, { token: env.viewerKey }), 403);
    expect((await env.request('GET', '/api/v1/projects', { token: k.key })).status).toBe(200);
    expect((await env.request('DELETE', `/api/v1/api_keys/${k.id}/revoke`, { token: env.admin.token })).status).toBe(200);
    expectError(await env.request('GET', '/api/v1/projects', { token: k.key }), 401);
  });

  it('an expired key shows as expired and gets 401', async () => {
    const { body: k } = await create({ name: 'expiring', expires_at: future(60_000) });
    await env.db.kysely.updateTable('api_keys').set({ expires_at: new Date(Date.now() - 1000).toISOString() }).where('id', '=', k.id).execute();
    expect((await env.request('GET', `/api/v1/api_keys/${k.id}`, { token: env.owner.token })).body.status).toBe('expired');
    expectError(await env.request('GET', '/api/v1/projects', { token: k.key }), 401);
  });
});

describe('usage', () => {
  it('counts requests per key per day', async () => {
    const dayBefore = new Date().toISOString().slice(0, 10);
    const { body: k } = await create({ name: 'counted', role: 'viewer' });
    for (let i = 0; i < 3; i++) expect((await env.request('GET', '/api/v1/projects', { token: k.key })).status).toBe(200);
    // A refused request with the key (viewer cannot write) still counts as a request.
    expectError(await env.request('POST', '/api/v1/projects', { token: k.key, body: { name: 'x' } }), 403);

    const res = await env.request('GET', `/api/v1/api_keys/usage?api_key_id=${k.id}`, { token: env.owner.token });
    const dayAfter = new Date().toISOString().slice(0, 10);
    expect(res.status).toBe(200);
    expect(res.body.total_requests).toBe(4);
    expect(res.body.results).toHaveLength(1);
    expect(res.body.results[0]).toMatchObject({ api_key_id: k.id, name: 'counted', prefix: k.prefix, requests: 4 });
    expect([dayBefore, dayAfter]).toContain(res.body.results[0].day);

    // All keys of the organization, this one among them; and last_used_at is now set.
    const all = await env.request('GET', '/api/v1/api_keys/usage?days=7', { token: env.owner.token });
    expect(all.body.results.some((r: { api_key_id: string; requests: number }) => r.api_key_id === k.id && r.requests === 4)).toBe(true);
    expect((await env.request('GET', `/api/v1/api_keys/${k.id}`, { token: env.owner.token })).body.last_used_at).not.toBeNull();
  });

  it('shows nothing of another organization\'s keys', async () => {
    const { body: kb } = await create({ name: 'b counted' }, env.otherOwner.token);
    await env.request('GET', '/api/v1/projects', { token: kb.key });
    const res = await env.request('GET', `/api/v1/api_keys/usage?api_key_id=${kb.id}`, { token: env.owner.token });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ total_requests: 0, results: [] });
    const all = await env.request('GET', '/api/v1/api_keys/usage', { token: env.owner.token });
    expect(all.text).not.toContain(kb.id);
  });

  it.each([['days=0'], ['days=367'], ['days=abc']])('400 for %s', async (q) => {
    const res = await env.request('GET', `/api/v1/api_keys/usage?${q}`, { token: env.owner.token });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('days');
  });
});

describe('show and 404', () => {
  it('404 for an unknown id, on show and revoke', async () => {
    expectError(await env.request('GET', '/api/v1/api_keys/key_00000000000000000000000000', { token: env.owner.token }), 404);
    expectError(await env.request('DELETE', '/api/v1/api_keys/key_00000000000000000000000000/revoke', { token: env.owner.token }), 404);
  });

  it('404 for another organization\'s key, which stays active', async () => {
    const { body: kb } = await create({ name: 'b only' }, env.otherOwner.token);
    expectError(await env.request('GET', `/api/v1/api_keys/${kb.id}`, { token: env.owner.token }), 404);
    expectError(await env.request('DELETE', `/api/v1/api_keys/${kb.id}/revoke`, { token: env.owner.token }), 404);
    expect((await env.request('GET', '/api/v1/projects', { token: kb.key })).status).toBe(200);
    const list = await env.request('GET', '/api/v1/api_keys?page_size=100', { token: env.owner.token });
    expect(list.text).not.toContain(kb.id);
  });
});

describe('a viewer-scoped key', () => {
  it('can read but not write', async () => {
    expect((await env.request('GET', '/api/v1/projects', { token: env.viewerKey })).status).toBe(200);
    expect((await env.request('GET', '/api/v1/api_keys', { token: env.viewerKey })).status).toBe(200);
    expectError(await env.request('POST', '/api/v1/projects', { token: env.viewerKey, body: { name: 'nope' } }), 403);
    expectError(await env.request('POST', '/api/v1/api_keys', { token: env.viewerKey, body: { name: 'nope' } }), 403);
  });

  it('cannot act as a user (profile, 2FA)', async () => {
    expectError(await env.request('GET', '/api/user/', { token: env.viewerKey }), 403);
    expectError(await env.request('PATCH', '/api/profile/', { token: env.viewerKey, body: { first_name: 'x' } }), 403);
  });
});
