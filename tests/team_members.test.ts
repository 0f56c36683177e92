import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, TEST_PASSWORD, type Principal, type TestEnv } from './helpers.js';
import type { AppError } from '../src/errors.js';
import { updateTeamMember } from '../src/services/team_members.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

let n = 0;
const uname = (p: string) => `${p}_${++n}`;

async function login(username: string, password = TEST_PASSWORD, organization_id?: string) {
  const res = await env.request('POST', '/api/token/', { body: { username, password, ...(organization_id ? { organization_id } : {}) } });
  expect(res.status).toBe(200);
  return res.body as { access: string; refresh: string };
}

async function membershipOf(who: Principal, token = who.token): Promise<string> {
  const res = await env.request('GET', `/api/v1/team_members?search=${who.username}`, { token });
  const m = res.body.results.find((r: { user: { id: string } }) => r.user.id === who.userId);
  return m.id;
}

async function addUser(body: Record<string, unknown>, token = env.owner.token) {
  return env.request('POST', '/api/v1/team_members', { token, body });
}

const userRow = (username: string) => env.db.kysely.selectFrom('users').select('id').where('username', '=', username).executeTakeFirst();

describe('listing and showing', () => {
  it('lists the organization\'s members with the users\' public fields only', async () => {
    const res = await env.request('GET', '/api/v1/team_members', { token: env.viewer.token });
    expect(res.status).toBe(200);
    expect(res.body.count).toBe(5);
    const usernames = res.body.results.map((r: { user: { username: string } }) => r.user.username).sort();
    expect(usernames).toEqual(['admin_a', 'member_a', 'owner_a', 'platform_admin', 'viewer_a']);
    const admin = res.body.results.find((r: { user: { username: string } }) => r.user.username === 'admin_a');
    expect(admin).toEqual({
      id: expect.stringMatching(/^mem_/), role: 'admin', custom_role: null, created_at: expect.any(String), updated_at: expect.any(String),
      user: { id: env.admin.userId, username: 'admin_a', email: 'admin_a@example.test', first_name: '', last_name: '' },
    });
    expect(res.text).not.toContain('password');
    expect(res.text).not.toContain('owner_b');
  });

  it('filters by role and by search', async () => {
    const byRole = await env.request('GET', '/api/v1/team_members?role=owner', { token: env.member.token });
    expect(byRole.body.results.map((r: { user: { username: string } }) => r.user.username).sort()).toEqual(['owner_a', 'platform_admin']);
    const bySearch = await env.request('GET', '/api/v1/team_members?search=viewer', { token: env.member.token });
    expect(bySearch.body.results.map((r: { user: { username: string } }) => r.user.username)).toEqual(['viewer_a']);
    expect(bySearch.body.count).toBe(1);
  });

  it('pages', async () => {
    const p1 = await env.request('GET', '/api/v1/team_members?page_size=2', { token: env.viewer.token });
    expect(p1.body.results).toHaveLength(2);
    expect(p1.body.next).toContain('page=2');
    const p2 = await env.request('GET', '/api/v1/team_members?page_size=2&page=2', { token: env.viewer.token });
    const ids = [...p1.body.results, ...p2.body.results].map((r: { id: string }) => r.id);
    expect(new Set(ids).size).toBe(4);
  });

  it('shows one member; 404 for an unknown id and for another organization\'s member', async () => {
    const id = await membershipOf(env.member);
    const res = await env.request('GET', `/api/v1/team_members/${id}`, { token: env.viewer.token });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id, role: 'member', user: { id: env.member.userId, username: 'member_a' } });
    expectError(await env.request('GET', '/api/v1/team_members/mem_nope', { token: env.owner.token }), 404);
    const foreign = await membershipOf(env.otherOwner);
    for (const [m, body] of [['GET', undefined], ['PATCH', { role: 'viewer' }], ['DELETE', undefined]] as const) {
      expectError(await env.request(m, `/api/v1/team_members/${foreign}`, { token: env.owner.token, body }), 404);
    }
  });
});

describe('adding members', () => {
  it('creates a new user and the membership; the new user can log in and act in the organization', async () => {
    const username = uname('newbie');
    const res = await addUser({ username, password: TEST_PASSWORD, email: `${username}@example.test`, first_name: 'New', last_name: 'Bie' }, env.admin.token);
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ role: 'member', custom_role: null, user: { username, email: `${username}@example.test`, first_name: 'New', last_name: 'Bie' } });
    expect(res.body.id).toMatch(/^mem_/);
    const shown = await env.request('GET', `/api/v1/team_members/${res.body.id}`, { token: env.owner.token });
    expect(shown.body).toEqual(res.body);
    const { access } = await login(username);
    expect((await env.request('GET', '/api/v1/projects', { token: access })).status).toBe(200);
    const verify = await env.request('GET', '/api/v1/admin/verify', { token: access });
    expect(verify.body).toMatchObject({ organization_id: env.orgA, role: 'member' });
  });

  it('adds an existing user by username or by user_id, with a role', async () => {
    const username = uname('elsewhere');
    await addUser({ username, password: TEST_PASSWORD }, env.otherOwner.token);
    const user = await userRow(username);

    const byName = await addUser({ username, role: 'viewer' });
    expect(byName.status).toBe(201);
    expect(byName.body).toMatchObject({ role: 'viewer', user: { id: user!.id, username } });
    // the user's password is untouched and they can now pick organization A
    const { access } = await login(username, TEST_PASSWORD, env.orgA);
    expect((await env.request('GET', '/api/v1/account', { token: access })).body.id).toBe(env.orgA);

    const other = uname('byid');
    await addUser({ username: other, password: TEST_PASSWORD }, env.otherOwner.token);
    const otherUser = await userRow(other);
    const byId = await addUser({ user_id: otherUser!.id, role: 'admin' }, env.admin.token);
    expect(byId.status).toBe(201);
    expect(byId.body).toMatchObject({ role: 'admin', user: { id: otherUser!.id } });
  });

  it('409 when the user is already a member', async () => {
    let res = await addUser({ username: 'member_a' });
    expectError(res, 409);
    res = await addUser({ user_id: env.viewer.userId, role: 'admin' });
    expectError(res, 409);
    const count = await env.db.kysely.selectFrom('memberships').select((eb) => eb.fn.countAll().as('n'))
      .where('organization_id', '=', env.orgA).where('user_id', '=', env.viewer.userId).executeTakeFirstOrThrow();
    expect(Number(count.n)).toBe(1);
  });

  it('409 when a new user\'s username is taken', async () => {
    const res = await addUser({ username: 'owner_b', password: TEST_PASSWORD });
    expectError(res, 409);
    expect(res.body.details).toHaveProperty('username');
  });

  it('400 naming the field for bad input, and nothing is written', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{}, 'user_id'],
      [{ role: 'member' }, 'user_id'],
      [{ user_id: env.member.userId, username: 'member_a' }, 'user_id'],
      [{ user_id: 'usr_nope' }, 'user_id'],
      [{ username: 'nobody_here' }, 'username'],
      [{ username: 'member_a', email: 'x@example.test' }, 'email'],
      [{ user_id: env.otherOwner.userId, password: TEST_PASSWORD }, 'password'],
      [{ username: 'shortpw_user', password: 'short' }, 'password'],
      [{ username: 'bad name!', password: TEST_PASSWORD }, 'username'],
      [{ username: 'bad_email_user', password: TEST_PASSWORD, email: 'not-an-email' }, 'email'],
      [{ username: 'bad_role_user', password: TEST_PASSWORD, role: 'superuser' }, 'role'],
      [{ username: 'bad_custom_user', password: TEST_PASSWORD, role: 'custom:rol_nope' }, 'role'],
      [{ username: 'number_role_user', password: TEST_PASSWORD, role: 5 }, 'role'],
    ];
    for (const [body, field] of cases) {
      const res = await addUser(body);
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body)).toHaveProperty(field);
    }
    for (const u of ['shortpw_user', 'bad name!', 'bad_email_user', 'bad_role_user', 'bad_custom_user', 'number_role_user', 'nobody_here']) {
      expect(await userRow(u)).toBeUndefined();
    }
    const res = await env.request('GET', '/api/v1/team_members', { token: env.owner.token });
    expect(res.body.count).toBe(5 + n);
  });

  it('403 for a role above the actor\'s own, and no user is created', async () => {
    const username = uname('would_be_owner');
    const res = await addUser({ username, password: TEST_PASSWORD, role: 'owner' }, env.admin.token);
    expectError(res, 403);
    expect(await userRow(username)).toBeUndefined();
    expect((await addUser({ username, password: TEST_PASSWORD, role: 'owner' }, env.owner.token)).status).toBe(201);
  });

  it('members and viewers cannot add members', async () => {
    expectError(await addUser({ username: uname('x'), password: TEST_PASSWORD }, env.member.token), 403);
    expectError(await addUser({ username: uname('x'), password: TEST_PASSWORD }, env.viewerKey), 403);
  });
});

describe('custom roles on members', () => {
  it('a member holding a custom role gets exactly its permissions', async () => {
    const role = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'Project reader', permissions: ['projects:read'] } });
    expect(role.status).toBe(201);
    const username = uname('reader');
    const member = await addUser({ username, password: TEST_PASSWORD, role: `custom:${role.body.id}` });
    expect(member.status).toBe(201);
    expect(member.body).toMatchObject({ role: `custom:${role.body.id}`, custom_role: { id: role.body.id, name: 'Project reader' } });
    const stored = await env.db.kysely.selectFrom('memberships').select(['role', 'role_id']).where('id', '=', member.body.id).executeTakeFirstOrThrow();
    expect(stored).toEqual({ role: `custom:${role.body.id}`, role_id: role.body.id });

    const { access } = await login(username);
    const verify = await env.request('GET', '/api/v1/admin/verify', { token: access });
    expect(verify.body.permissions).toEqual(['projects:read']);
    expect((await env.request('GET', '/api/v1/projects', { token: access })).status).toBe(200);
    expectError(await env.request('POST', '/api/v1/projects', { token: access, body: { name: 'nope' } }), 403);
    expectError(await env.request('GET', '/api/v1/team_members', { token: access }), 403);
    expectError(await env.request('GET', '/api/v1/account', { token: access }), 403);
  });

  it('a custom role cannot be handed out by someone lacking its permissions', async () => {
    const wide = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'Wide', permissions: ['projects:write', 'billing:write'] } });
    const manager = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'Team manager', permissions: ['team:read', 'team:write', 'projects:write'] } });
    const key = await env.request('POST', '/api/v1/api_keys', { token: env.owner.token, body: { name: 'team key', role: `custom:${manager.body.id}` } });
    const username = uname('wide');
    const res = await addUser({ username, password: TEST_PASSWORD, role: `custom:${wide.body.id}` }, key.body.key);
    expectError(res, 403);
    expect(res.body.details).toContain('billing:write');
    expect(await userRow(username)).toBeUndefined();
  });

  it('PATCH moves a member to and from a custom role', async () => {
    const role = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'Switcher', permissions: ['contacts:read'] } });
    const m = await addUser({ username: uname('switch'), password: TEST_PASSWORD });
    let res = await env.request('PATCH', `/api/v1/team_members/${m.body.id}`, { token: env.admin.token, body: { role: `custom:${role.body.id}` } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ role: `custom:${role.body.id}`, custom_role: { id: role.body.id, name: 'Switcher' } });
    res = await env.request('PATCH', `/api/v1/team_members/${m.body.id}`, { token: env.admin.token, body: { role: 'viewer' } });
    expect(res.body).toMatchObject({ role: 'viewer', custom_role: null });
    const stored = await env.db.kysely.selectFrom('memberships').select(['role', 'role_id']).where('id', '=', m.body.id).executeTakeFirstOrThrow();
    expect(stored).toEqual({ role: 'viewer', role_id: null });
  });
});

describe('changing roles', () => {
  it('changes a role; the new permissions apply to the member\'s token at once', async () => {
    const username = uname('promote');
    const m = await addUser({ username, password: TEST_PASSWORD, role: 'viewer' });
    const { access } = await login(username);
    expectError(await env.request('POST', '/api/v1/projects', { token: access, body: { name: 'p' } }), 403);
    const res = await env.request('PATCH', `/api/v1/team_members/${m.body.id}`, { token: env.admin.token, body: { role: 'member' } });
    expect(res.status).toBe(200);
    expect(res.body.role).toBe('member');
    expect((await env.request('POST', '/api/v1/projects', { token: access, body: { name: 'p' } })).status).toBe(201);
  });

  it('400 for an unknown role, 403 above the actor\'s own, 403 changing someone who outranks the actor', async () => {
    const id = await membershipOf(env.member);
    let res = await env.request('PATCH', `/api/v1/team_members/${id}`, { token: env.admin.token, body: { role: 'king' } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('role');
    res = await env.request('PATCH', `/api/v1/team_members/${id}`, { token: env.admin.token, body: { role: 'owner' } });
    expectError(res, 403);
    const ownerId = await membershipOf(env.owner);
    res = await env.request('PATCH', `/api/v1/team_members/${ownerId}`, { token: env.admin.token, body: { role: 'viewer' } });
    expectError(res, 403);
    expectError(await env.request('DELETE', `/api/v1/team_members/${ownerId}`, { token: env.admin.token }), 403);
    const shown = await env.request('GET', `/api/v1/team_members/${ownerId}`, { token: env.admin.token });
    expect(shown.body.role).toBe('owner');
    expect((await env.request('GET', `/api/v1/team_members/${id}`, { token: env.admin.token })).body.role).toBe('member');
  });
});

describe('the last owner', () => {
  it('cannot be demoted or removed; can once another owner exists', async () => {
    // Organization B has a single owner.
    const ownerB = await membershipOf(env.otherOwner, env.otherOwner.token);
    let res = await env.request('PATCH', `/api/v1/team_members/${ownerB}`, { token: env.otherOwner.token, body: { role: 'admin' } });
    expectError(res, 409);
    expect(res.body.details).toHaveProperty('role');
    res = await env.request('DELETE', `/api/v1/team_members/${ownerB}`, { token: env.otherOwner.token });
    expectError(res, 409);
    expect((await env.request('GET', `/api/v1/team_members/${ownerB}`, { token: env.otherOwner.token })).body.role).toBe('owner');

    // With a second owner, the first may step down, and then the second is the last one.
    const second = await addUser({ username: uname('second_owner'), password: TEST_PASSWORD, role: 'owner' }, env.otherOwner.token);
    expect(second.status).toBe(201);
    res = await env.request('PATCH', `/api/v1/team_members/${ownerB}`, { token: env.otherOwner.token, body: { role: 'admin' } });
    expect(res.status).toBe(200);
    expect(res.body.role).toBe('admin');
    // now an admin: cannot touch the remaining owner
    expectError(await env.request('DELETE', `/api/v1/team_members/${second.body.id}`, { token: env.otherOwner.token }), 403);
  });

  it('in organization A, the other owners can be removed, and then the remaining one cannot go', async () => {
    const me = await membershipOf(env.owner);
    const owners = await env.request('GET', '/api/v1/team_members?role=owner', { token: env.owner.token });
    const others = owners.body.results.map((r: { id: string }) => r.id).filter((id: string) => id !== me);
    expect(others.length).toBeGreaterThan(0);
    for (const id of others) expect((await env.request('DELETE', `/api/v1/team_members/${id}`, { token: env.owner.token })).status).toBe(200);
    expectError(await env.request('DELETE', `/api/v1/team_members/${me}`, { token: env.owner.token }), 409);
    expectError(await env.request('PATCH', `/api/v1/team_members/${me}`, { token: env.owner.token, body: { role: 'viewer' } }), 409);
  });
});

describe('the last owner under concurrent changes', () => {
  it('both owners demoted at once: one succeeds, one gets 409, one owner remains', async () => {
    const env2 = await createTestEnv();
    try {
      const owners = (await env2.request('GET', '/api/v1/team_members?role=owner', { token: env2.owner.token })).body.results as { id: string }[];
      expect(owners).toHaveLength(2);
      // Called through the service with a fixed actor, so that the first change cannot demote the
      // second request's actor before it is authenticated.
      const ctx = env2.ctxOf(env2.owner);
      const results = await Promise.allSettled(owners.map((o) => updateTeamMember(ctx, o.id, { role: 'admin' })));
      expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
      const failure = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect((failure.reason as AppError).status).toBe(409);
      const left = await env2.request('GET', '/api/v1/team_members?role=owner', { token: env2.adminKey });
      expect(left.body.results).toHaveLength(1);
    } finally {
      await env2.close();
    }
  });
});

describe('removing members', () => {
  it('removes a member; their access and refresh tokens stop working for the organization', async () => {
    const username = uname('leaver');
    const m = await addUser({ username, password: TEST_PASSWORD });
    const { access, refresh } = await login(username);
    expect((await env.request('GET', '/api/v1/projects', { token: access })).status).toBe(200);

    const res = await env.request('DELETE', `/api/v1/team_members/${m.body.id}`, { token: env.admin.token });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id: m.body.id, deleted: true });
    expectError(await env.request('GET', `/api/v1/team_members/${m.body.id}`, { token: env.admin.token }), 404);

    expectError(await env.request('GET', '/api/v1/projects', { token: access }), 401);
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh } }), 401);
    // the user still exists, but belongs to no organization any more
    expect(await userRow(username)).toBeDefined();
    expectError(await env.request('POST', '/api/token/', { body: { username, password: TEST_PASSWORD } }), 401);
  });

  it('the test fixture member token stops working once removed', async () => {
    const id = await membershipOf(env.member);
    expect((await env.request('GET', '/api/v1/projects', { token: env.member.token })).status).toBe(200);
    expect((await env.request('DELETE', `/api/v1/team_members/${id}`, { token: env.owner.token })).status).toBe(200);
    const res = await env.request('GET', '/api/v1/projects', { token: env.member.token });
    expectError(res, 401);
    const audit = await env.db.kysely.selectFrom('audit_logs').select(['action', 'resource_type', 'actor_id'])
      .where('resource_id', '=', id).executeTakeFirstOrThrow();
    expect(audit).toEqual({ action: 'team_members.delete', resource_type: 'team_member', actor_id: env.owner.userId });
  });
});
