import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, TEST_PASSWORD, type TestEnv } from './helpers.js';
import { PERMISSIONS, permissionsOfBuiltin } from '../src/permissions.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

let n = 0;
const uniq = (p: string) => `${p} ${++n}`;

async function makeRole(permissions: string[], name = uniq('role')) {
  const res = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name, permissions } });
  expect(res.status).toBe(201);
  return res.body as { id: string; name: string; permissions: string[]; assign_as: string };
}

/** An API key of organization A holding `role`. */
async function keyWithRole(role: string) {
  const res = await env.request('POST', '/api/v1/api_keys', { token: env.owner.token, body: { name: uniq('key'), role } });
  expect(res.status).toBe(201);
  return res.body as { id: string; key: string };
}

describe('GET /api/v1/permissions', () => {
  it('lists the catalog and the built-in roles with their permissions', async () => {
    const res = await env.request('GET', '/api/v1/permissions', { token: env.viewer.token });
    expect(res.status).toBe(200);
    expect(res.body.permissions).toHaveLength(PERMISSIONS.length);
    expect(res.body.permissions).toContainEqual({ name: 'projects:read', description: expect.any(String) });
    expect(res.body.roles.map((r: { name: string }) => r.name)).toEqual(['owner', 'admin', 'member', 'viewer']);
    const viewer = res.body.roles.find((r: { name: string }) => r.name === 'viewer');
    expect(new Set(viewer.permissions)).toEqual(permissionsOfBuiltin('viewer'));
    expect(viewer.permissions).not.toContain('billing:read');
    const owner = res.body.roles.find((r: { name: string }) => r.name === 'owner');
    expect(owner.permissions).toHaveLength(PERMISSIONS.length);
  });

  it('needs a token', async () => {
    expectError(await env.request('GET', '/api/v1/permissions'), 401);
  });
});

describe('custom roles CRUD', () => {
  it('creates, shows, lists, updates and deletes a role', async () => {
    const created = await env.request('POST', '/api/v1/roles', {
      token: env.admin.token,
      body: { name: 'Support', description: 'Reads contacts', permissions: ['contacts:read', 'projects:read', 'contacts:read'] },
    });
    expect(created.status).toBe(201);
    const role = created.body;
    expect(role).toMatchObject({ name: 'Support', description: 'Reads contacts', assign_as: `custom:${role.id}` });
    // de-duplicated, in catalog order
    expect(role.permissions).toEqual(['projects:read', 'contacts:read']);
    expect(role.id).toMatch(/^rol_/);

    const shown = await env.request('GET', `/api/v1/roles/${role.id}`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(role);

    const list = await env.request('GET', '/api/v1/roles?search=Supp', { token: env.member.token });
    expect(list.status).toBe(200);
    expect(list.body.results.map((r: { id: string }) => r.id)).toEqual([role.id]);
    expect(list.body.count).toBe(1);

    const updated = await env.request('PATCH', `/api/v1/roles/${role.id}`, {
      token: env.admin.token, body: { name: 'Support team', permissions: ['contacts:write', 'contacts:read'] },
    });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ id: role.id, name: 'Support team', description: 'Reads contacts', permissions: ['contacts:read', 'contacts:write'] });

    const del = await env.request('DELETE', `/api/v1/roles/${role.id}`, { token: env.admin.token });
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ id: role.id, deleted: true });
    expectError(await env.request('GET', `/api/v1/roles/${role.id}`, { token: env.admin.token }), 404);

    const audit = await env.db.kysely.selectFrom('audit_logs').select(['action']).where('resource_id', '=', role.id).orderBy('id').execute();
    expect(audit.map((a) => a.action)).toEqual(['roles.create', 'roles.update', 'roles.delete']);
  });

  it('400 naming unknown permissions, writes nothing', async () => {
    const name = uniq('bad perms');
    const res = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name, permissions: ['projects:read', 'foo:bar', 'rockets:launch'] } });
    expectError(res, 400);
    expect(res.body.details.permissions).toContain('foo:bar');
    expect(res.body.details.permissions).toContain('rockets:launch');
    expect(res.body.details.permissions).not.toContain('projects:read');
    const row = await env.db.kysely.selectFrom('roles').select('id').where('name', '=', name).executeTakeFirst();
    expect(row).toBeUndefined();
  });

  it('400 on malformed input, naming the field', async () => {
    let res = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: '', permissions: [] } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('name');
    res = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: uniq('x'), permissions: 'projects:read' } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('permissions');
    res = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: uniq('x') } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('permissions');
    res = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'Admin', permissions: [] } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('name');
  });

  it('409 for a name already used in the organization (any case); the same name is fine in another organization', async () => {
    const r = await makeRole(['projects:read'], 'Analyst');
    let res = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'analyst', permissions: [] } });
    expectError(res, 409);
    expect(res.body.details).toHaveProperty('name');
    const other = await makeRole([], uniq('other'));
    res = await env.request('PATCH', `/api/v1/roles/${other.id}`, { token: env.owner.token, body: { name: 'Analyst' } });
    expectError(res, 409);
    res = await env.request('POST', '/api/v1/roles', { token: env.otherOwner.token, body: { name: 'Analyst', permissions: [] } });
    expect(res.status).toBe(201);
    // renaming a role to its own name is no conflict
    res = await env.request('PATCH', `/api/v1/roles/${r.id}`, { token: env.owner.token, body: { name: 'Analyst', description: 'd' } });
    expect(res.status).toBe(200);
  });

  it('PATCH with unknown permissions is a 400 and changes nothing', async () => {
    const r = await makeRole(['projects:read']);
    const res = await env.request('PATCH', `/api/v1/roles/${r.id}`, { token: env.owner.token, body: { name: uniq('renamed'), permissions: ['nope:read'] } });
    expectError(res, 400);
    expect(res.body.details.permissions).toContain('nope:read');
    const shown = await env.request('GET', `/api/v1/roles/${r.id}`, { token: env.owner.token });
    expect(shown.body).toMatchObject({ name: r.name, permissions: ['projects:read'] });
  });

  it('404 for an unknown id and for another organization\'s role', async () => {
    expectError(await env.request('GET', '/api/v1/roles/rol_nope', { token: env.owner.token }), 404);
    const foreign = await env.request('POST', '/api/v1/roles', { token: env.otherOwner.token, body: { name: uniq('b'), permissions: [] } });
    for (const [m, body] of [['GET', undefined], ['PATCH', { name: 'x' }], ['DELETE', undefined]] as const) {
      expectError(await env.request(m, `/api/v1/roles/${foreign.body.id}`, { token: env.owner.token, body }), 404);
    }
    const list = await env.request('GET', '/api/v1/roles?page_size=100', { token: env.owner.token });
    expect(list.body.results.map((r: { id: string }) => r.id)).not.toContain(foreign.body.id);
  });

  it('viewers and members cannot write roles', async () => {
    expectError(await env.request('POST', '/api/v1/roles', { token: env.member.token, body: { name: uniq('m'), permissions: [] } }), 403);
    expectError(await env.request('POST', '/api/v1/roles', { token: env.viewerKey, body: { name: uniq('m'), permissions: [] } }), 403);
  });
});

describe('granting only what one holds', () => {
  it('403 when creating or widening a role with permissions the actor lacks', async () => {
    const manager = await makeRole(['roles:read', 'roles:write', 'projects:read']);
    const { key } = await keyWithRole(manager.assign_as);

    let res = await env.request('POST', '/api/v1/roles', { token: key, body: { name: uniq('wide'), permissions: ['projects:read', 'projects:write', 'secrets:read'] } });
    expectError(res, 403);
    expect(res.body.details).toContain('projects:write');
    expect(res.body.details).toContain('secrets:read');

    res = await env.request('POST', '/api/v1/roles', { token: key, body: { name: uniq('narrow'), permissions: ['projects:read'] } });
    expect(res.status).toBe(201);

    // A role that already has projects:write may be edited without re-granting it, but not widened.
    const existing = await makeRole(['projects:read', 'projects:write']);
    res = await env.request('PATCH', `/api/v1/roles/${existing.id}`, { token: key, body: { description: 'edited', permissions: ['projects:write'] } });
    expect(res.status).toBe(200);
    expect(res.body.permissions).toEqual(['projects:write']);
    res = await env.request('PATCH', `/api/v1/roles/${existing.id}`, { token: key, body: { permissions: ['projects:write', 'billing:write'] } });
    expectError(res, 403);
    expect(res.body.details).toContain('billing:write');
  });

  it('a role change applies to its holders at once', async () => {
    const r = await makeRole(['projects:read']);
    const { key } = await keyWithRole(r.assign_as);
    expect((await env.request('GET', '/api/v1/projects', { token: key })).status).toBe(200);
    expectError(await env.request('POST', '/api/v1/projects', { token: key, body: { name: 'p' } }), 403);
    await env.request('PATCH', `/api/v1/roles/${r.id}`, { token: env.owner.token, body: { permissions: ['projects:read', 'projects:write'] } });
    expect((await env.request('POST', '/api/v1/projects', { token: key, body: { name: 'p' } })).status).toBe(201);
  });
});

describe('deleting a role that is held', () => {
  it('409 saying how many members and API keys hold it; deletable once nobody does', async () => {
    const r = await makeRole(['projects:read']);
    const username = `held_${Date.now()}`;
    const member = await env.request('POST', '/api/v1/team_members', { token: env.owner.token, body: { username, password: TEST_PASSWORD, role: r.assign_as } });
    expect(member.status).toBe(201);
    const k1 = await keyWithRole(r.assign_as);
    const k2 = await keyWithRole(r.assign_as);

    let res = await env.request('DELETE', `/api/v1/roles/${r.id}`, { token: env.owner.token });
    expectError(res, 409);
    expect(res.body.details).toMatchObject({ members: 1, api_keys: 2 });
    expect(res.body.details.role).toContain('1 team member and 2 API keys');

    // a revoked key no longer holds it
    await env.request('DELETE', `/api/v1/api_keys/${k2.id}/revoke`, { token: env.owner.token });
    res = await env.request('DELETE', `/api/v1/roles/${r.id}`, { token: env.owner.token });
    expectError(res, 409);
    expect(res.body.details).toMatchObject({ members: 1, api_keys: 1 });

    await env.request('DELETE', `/api/v1/api_keys/${k1.id}/revoke`, { token: env.owner.token });
    await env.request('PATCH', `/api/v1/team_members/${member.body.id}`, { token: env.owner.token, body: { role: 'viewer' } });
    res = await env.request('DELETE', `/api/v1/roles/${r.id}`, { token: env.owner.token });
    expect(res.status).toBe(200);
    expect(await env.db.kysely.selectFrom('roles').select('id').where('id', '=', r.id).executeTakeFirst()).toBeUndefined();
  });
});
