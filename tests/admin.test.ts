import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, TEST_PASSWORD, type TestEnv } from './helpers.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const asAdmin = (method: string, url: string, body?: unknown) => env.request(method, url, { token: env.platformAdmin.token, body });
const login = (username: string, password: string) => env.request('POST', '/api/token/', { body: { username, password } });
const countRows = async (table: 'users' | 'organizations' | 'memberships') =>
  Number((await env.db.kysely.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

describe('platform administration is for platform admins only', () => {
  it('403 for an organization owner and for API keys', async () => {
    for (const token of [env.owner.token, env.adminKey]) {
      expectError(await env.request('GET', '/api/v1/admin/stats', { token }), 403);
      expectError(await env.request('GET', '/api/v1/admin/users', { token }), 403);
      expectError(await env.request('POST', '/api/v1/admin/organizations', { token, body: { name: 'Nope' } }), 403);
      expectError(await env.request('PATCH', `/api/v1/admin/users/${env.owner.userId}`, { token, body: { first_name: 'X' } }), 403);
    }
    expect(await env.db.kysely.selectFrom('organizations').select('id').where('name', '=', 'Nope').executeTakeFirst()).toBeUndefined();
  });
});

describe('v1/admin/organizations', () => {
  it('lists every organization with member counts, and searches', async () => {
    const res = await asAdmin('GET', '/api/v1/admin/organizations');
    expect(res.status).toBe(200);
    const byId = new Map(res.body.results.map((o: { id: string }) => [o.id, o]));
    expect(byId.get(env.orgA)).toMatchObject({ name: 'Org A', member_count: 5 });
    expect(byId.get(env.orgB)).toMatchObject({ name: 'Org B', member_count: 1 });
    const searched = await asAdmin('GET', '/api/v1/admin/organizations?search=ORG%20b');
    expect(searched.body.results.map((o: { id: string }) => o.id)).toEqual([env.orgB]);
    const paged = await asAdmin('GET', '/api/v1/admin/organizations?page_size=1');
    expect(paged.body.results).toHaveLength(1);
    expect(paged.body.next).toContain('page=2');
  });

  it('creates an organization with an owner', async () => {
    const res = await asAdmin('POST', '/api/v1/admin/organizations', { name: 'Acme Corp', owner_user_id: env.member.userId });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: 'Acme Corp', slug: 'acme-corp', member_count: 1 });
    const users = await asAdmin('GET', `/api/v1/admin/users?search=${env.member.username}`);
    expect(users.body.results[0].organizations).toEqual(expect.arrayContaining([{ id: res.body.id, name: 'Acme Corp', slug: 'acme-corp', role: 'owner' }]));
    const login1 = await env.request('POST', '/api/token/', { body: { username: env.member.username, password: TEST_PASSWORD, organization_id: res.body.id } });
    expect(login1.status).toBe(200);
    const listed = await asAdmin('GET', '/api/v1/admin/organizations?search=acme');
    expect(listed.body.results.map((o: { id: string }) => o.id)).toEqual([res.body.id]);
    const withoutOwner = await asAdmin('POST', '/api/v1/admin/organizations', { name: 'Acme Corp' });
    expect(withoutOwner.status).toBe(201);
    expect(withoutOwner.body).toMatchObject({ slug: 'acme-corp-2', member_count: 0 });
  });

  it('400 for bad input, writing nothing', async () => {
    const orgs = await countRows('organizations');
    const noName = await asAdmin('POST', '/api/v1/admin/organizations', { name: '  ' });
    expectError(noName, 400);
    expect(noName.body.details).toHaveProperty('name');
    const noUser = await asAdmin('POST', '/api/v1/admin/organizations', { name: 'Ghost Owned', owner_user_id: 'usr_missing' });
    expectError(noUser, 400);
    expect(noUser.body.details).toHaveProperty('owner_user_id');
    expect(await countRows('organizations')).toBe(orgs);
  });
});

describe('v1/admin/users', () => {
  it('lists every user across organizations, and searches', async () => {
    const res = await asAdmin('GET', '/api/v1/admin/users?page_size=100');
    expect(res.status).toBe(200);
    const names = res.body.results.map((u: { username: string }) => u.username);
    expect(names).toEqual(expect.arrayContaining(['owner_a', 'owner_b', 'platform_admin']));
    expect(res.text).not.toContain('password');
    expect(res.text).not.toContain('scrypt');
    const b = await asAdmin('GET', '/api/v1/admin/users?search=OWNER_B');
    expect(b.body.results).toHaveLength(1);
    expect(b.body.results[0]).toMatchObject({
      id: env.otherOwner.userId, username: 'owner_b', is_active: true, is_platform_admin: false, two_factor_enabled: false,
      organizations: [{ id: env.orgB, name: 'Org B', slug: 'org-b', role: 'owner' }],
    });
    const byEmail = await asAdmin('GET', '/api/v1/admin/users?search=viewer_a@example');
    expect(byEmail.body.results.map((u: { username: string }) => u.username)).toEqual(['viewer_a']);
  });

  it('creates a user in an organization with a role, who can then log in and act there', async () => {
    const res = await asAdmin('POST', '/api/v1/admin/users', {
      username: 'new_b_admin', password: 'a long password', email: 'nb@example.test', first_name: 'New', last_name: 'Admin',
      organization_id: env.orgB, role: 'admin',
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      username: 'new_b_admin', email: 'nb@example.test', first_name: 'New', is_active: true, is_platform_admin: false,
      organizations: [{ id: env.orgB, role: 'admin' }],
    });
    expect(res.text).not.toContain('a long password');
    const tokens = await login('new_b_admin', 'a long password');
    expect(tokens.status).toBe(200);
    const projects = await env.request('POST', '/api/v1/projects', { token: tokens.body.access, body: { name: 'made by new admin' } });
    expect(projects.status).toBe(201);
    const mine = await env.request('GET', `/api/v1/projects/${projects.body.id}`, { token: env.otherOwner.token });
    expect(mine.status).toBe(200);

    const plain = await asAdmin('POST', '/api/v1/admin/users', { username: 'loner', password: 'a long password' });
    expect(plain.status).toBe(201);
    expect(plain.body.organizations).toEqual([]);
  });

  it('rejects bad input in one transaction: no user, no membership', async () => {
    const users = await countRows('users');
    const members = await countRows('memberships');
    const cases: [Record<string, unknown>, string, number][] = [
      [{ username: 'x', password: 'a long password' }, 'username', 400],
      [{ username: 'short_pw', password: 'short' }, 'password', 400],
      [{ username: 'bad_email', password: 'a long password', email: 'not-an-email' }, 'email', 400],
      [{ username: 'no_org', password: 'a long password', organization_id: 'org_missing' }, 'organization_id', 400],
      [{ username: 'role_only', password: 'a long password', role: 'admin' }, 'role', 400],
      [{ username: 'bad_role', password: 'a long password', organization_id: env.orgA, role: 'emperor' }, 'role', 400],
      [{ username: 'custom_elsewhere', password: 'a long password', organization_id: env.orgA, role: 'custom:rol_missing' }, 'role', 400],
      [{ username: 'owner_a', password: 'a long password', organization_id: env.orgB }, 'username', 409],
    ];
    for (const [body, field, status] of cases) {
      const res = await asAdmin('POST', '/api/v1/admin/users', body);
      expectError(res, status);
      expect(res.body.details).toHaveProperty(field);
    }
    expect(await countRows('users')).toBe(users);
    expect(await countRows('memberships')).toBe(members);
  });
});

describe('PATCH v1/admin/users/{id}', () => {
  it('changes names and e-mail', async () => {
    const res = await asAdmin('PATCH', `/api/v1/admin/users/${env.viewer.userId}`, { first_name: 'Vera', last_name: 'Viewer', email: 'vera@example.test' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: env.viewer.userId, first_name: 'Vera', last_name: 'Viewer', email: 'vera@example.test' });
    const cleared = await asAdmin('PATCH', `/api/v1/admin/users/${env.viewer.userId}`, { email: null });
    expect(cleared.body.email).toBeNull();
    const bad = await asAdmin('PATCH', `/api/v1/admin/users/${env.viewer.userId}`, { email: 'nope', password: 'short' });
    expectError(bad, 400);
    expect(bad.body.details).toHaveProperty('email');
    expect(bad.body.details).toHaveProperty('password');
  });

  it('deactivating a user makes their existing access token stop working', async () => {
    const before = await env.request('GET', '/api/v1/projects', { token: env.viewer.token });
    expect(before.status).toBe(200);
    const res = await asAdmin('PATCH', `/api/v1/admin/users/${env.viewer.userId}`, { is_active: false });
    expect(res.status).toBe(200);
    expect(res.body.is_active).toBe(false);
    expectError(await env.request('GET', '/api/v1/projects', { token: env.viewer.token }), 401);
    expectError(await login('viewer_a', TEST_PASSWORD), 401);
    // Reactivation lets them log in again, but the sessions ended by deactivation stay ended.
    const again = await asAdmin('PATCH', `/api/v1/admin/users/${env.viewer.userId}`, { is_active: true });
    expect(again.body.is_active).toBe(true);
    expectError(await env.request('GET', '/api/v1/projects', { token: env.viewer.token }), 401);
    const fresh = await login('viewer_a', TEST_PASSWORD);
    expect(fresh.status).toBe(200);
    expect((await env.request('GET', '/api/v1/projects', { token: fresh.body.access })).status).toBe(200);
  });

  it('resets a password: the old one stops working, sessions end', async () => {
    const tokens = await login('admin_a', TEST_PASSWORD);
    expect(tokens.status).toBe(200);
    const res = await asAdmin('PATCH', `/api/v1/admin/users/${env.admin.userId}`, { password: 'brand new password' });
    expect(res.status).toBe(200);
    expect(res.text).not.toContain('brand new password');
    expectError(await login('admin_a', TEST_PASSWORD), 401);
    expect((await login('admin_a', 'brand new password')).status).toBe(200);
    expectError(await env.request('GET', '/api/v1/projects', { token: tokens.body.access }), 401);
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh: tokens.body.refresh } }), 401);
  });

  it('grants and removes the platform-admin flag', async () => {
    expectError(await env.request('GET', '/api/v1/admin/stats', { token: env.owner.token }), 403);
    const res = await asAdmin('PATCH', `/api/v1/admin/users/${env.owner.userId}`, { is_platform_admin: true });
    expect(res.body.is_platform_admin).toBe(true);
    expect((await env.request('GET', '/api/v1/admin/stats', { token: env.owner.token })).status).toBe(200);
    await asAdmin('PATCH', `/api/v1/admin/users/${env.owner.userId}`, { is_platform_admin: false });
    expectError(await env.request('GET', '/api/v1/admin/stats', { token: env.owner.token }), 403);
  });

  it('409 when a platform admin would deactivate or demote themselves; nothing changes', async () => {
    const self = `/api/v1/admin/users/${env.platformAdmin.userId}`;
    const off = await asAdmin('PATCH', self, { is_active: false, first_name: 'Changed' });
    expectError(off, 409);
    expect(off.body.details).toHaveProperty('is_active');
    const demote = await asAdmin('PATCH', self, { is_platform_admin: false });
    expectError(demote, 409);
    expect(demote.body.details).toHaveProperty('is_platform_admin');
    const row = await env.db.kysely.selectFrom('users').select(['is_active', 'is_platform_admin', 'first_name']).where('id', '=', env.platformAdmin.userId).executeTakeFirstOrThrow();
    expect(row).toEqual({ is_active: 1, is_platform_admin: 1, first_name: '' });
    // Harmless self-edits are fine.
    expect((await asAdmin('PATCH', self, { first_name: 'Pat', is_active: true })).status).toBe(200);
    expect((await env.request('GET', '/api/v1/admin/stats', { token: env.platformAdmin.token })).status).toBe(200);
  });

  it('404 for an unknown user', async () => {
    expectError(await asAdmin('PATCH', '/api/v1/admin/users/usr_missing', { first_name: 'X' }), 404);
  });

  it('is audited under the user, as a platform entry that no organization sees', async () => {
    const logs = await env.request('GET', `/api/v1/audit_logs?platform=true&resource_type=user&resource_id=${env.viewer.userId}`, { token: env.platformAdmin.token });
    expect(logs.body.results.length).toBeGreaterThan(0);
    expect(logs.body.results[0]).toMatchObject({ actor_id: env.platformAdmin.userId, action: 'admin.updateUser' });
    const orgView = await env.request('GET', `/api/v1/audit_logs?resource_type=user&resource_id=${env.viewer.userId}`, { token: env.platformAdmin.token });
    expect(orgView.body.results).toEqual([]);
    expectError(await env.request('GET', '/api/v1/audit_logs?platform=true', { token: env.owner.token }), 403);
    const rows = await env.db.kysely.selectFrom('audit_logs').select('metadata').execute();
    expect(JSON.stringify(rows)).not.toContain('brand new password');
  });
});

describe('GET v1/admin/stats', () => {
  it('counts the platform', async () => {
    const stats = async () => (await asAdmin('GET', '/api/v1/admin/stats')).body;
    const s0 = await stats();
    expect(s0).toMatchObject({
      organizations: await countRows('organizations'), users: await countRows('users'),
    });
    expect(s0.active_users).toBe(s0.users);
    expect(s0.active_api_keys).toBe(2);
    expect(s0.active_sessions).toBeGreaterThan(0);
    expect(s0.audit_events_24h).toBeGreaterThan(0);
    expect(new Date(s0.generated_at).toISOString()).toBe(s0.generated_at);

    await env.request('POST', '/api/v1/projects', { token: env.adminKey, body: { name: 'counted' } });
    await env.request('GET', '/api/v1/projects', { token: env.viewerKey });
    await asAdmin('PATCH', `/api/v1/admin/users/${env.member.userId}`, { is_active: false });
    const key = await env.request('POST', '/api/v1/api_keys', { token: env.owner.token, body: { name: 'to revoke' } });
    await env.request('DELETE', `/api/v1/api_keys/${key.body.id}/revoke`, { token: env.owner.token });

    const s1 = await stats();
    expect(s1.projects).toBe(s0.projects + 1);
    expect(s1.api_requests_today).toBe(s0.api_requests_today + 2);
    expect(s1.active_users).toBe(s0.active_users - 1);
    expect(s1.users).toBe(s0.users);
    expect(s1.active_api_keys).toBe(2);
    expect(s1.active_sessions).toBeLessThan(s0.active_sessions);
    expect(s1.audit_events_24h).toBeGreaterThanOrEqual(s0.audit_events_24h + 4);
  });
});
