import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const userRow = (id: string) => env.db.kysely.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

describe('GET /api/user/', () => {
  it('returns the signed-in user in the token\'s organization, without secrets', async () => {
    const res = await env.request('GET', '/api/user/', { token: env.admin.token });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      id: env.admin.userId, username: 'admin_a', email: 'admin_a@example.test', is_platform_admin: false,
      two_factor_enabled: false, has_mailgun_api_key: false, mailgun_domain: null,
      organization: { id: env.orgA, name: 'Org A', role: 'admin' },
    });
    expect(res.body).not.toHaveProperty('password_hash');
    expect(res.text).not.toMatch(/scrypt|password|totp_secret|"mailgun_api_key"/);
  });

  it('shows a platform admin as such', async () => {
    const res = await env.request('GET', '/api/user/', { token: env.platformAdmin.token });
    expect(res.status).toBe(200);
    expect(res.body.is_platform_admin).toBe(true);
  });

  it('401 without a token, 403 for an API key (no user behind it)', async () => {
    expectError(await env.request('GET', '/api/user/'), 401);
    expectError(await env.request('GET', '/api/user/', { token: env.adminKey }), 403);
  });
});

describe('PATCH /api/profile/', () => {
  it('updates names, e-mail and Mailgun settings; the API key is stored sealed and never returned', async () => {
    const key = 'key-0123456789abcdef0123456789abcdef';
    const res = await env.request('PATCH', '/api/profile/', {
      token: env.member.token,
      body: { first_name: ' Ada ', last_name: 'Lovelace', email: 'ada@example.test', mailgun_api_key: key, mailgun_domain: 'MG.Example.com' },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      id: env.member.userId, first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.test',
      mailgun_domain: 'mg.example.com', has_mailgun_api_key: true,
    });
    expect(res.text).not.toContain(key);
    expect(res.body).not.toHaveProperty('mailgun_api_key');

    const row = await userRow(env.member.userId);
    expect(row.mailgun_api_key_enc).not.toBeNull();
    expect(row.mailgun_api_key_enc).not.toContain(key);
    expect(env.app.deps.box.decrypt(row.mailgun_api_key_enc!)).toBe(key);

    const me = await env.request('GET', '/api/user/', { token: env.member.token });
    expect(me.body).toMatchObject({ first_name: 'Ada', has_mailgun_api_key: true, mailgun_domain: 'mg.example.com' });
    expect(me.text).not.toContain(key);

    // The audit trail records the change but not the key.
    const audit = await env.db.kysely.selectFrom('audit_logs').selectAll().where('actor_id', '=', env.member.userId).execute();
    expect(audit.some((a) => a.action === 'users.updateProfile' && a.resource_type === 'user' && a.resource_id === env.member.userId)).toBe(true);
    expect(JSON.stringify(audit)).not.toContain(key);
  });

  it('leaves omitted fields alone and clears the Mailgun key and domain with null', async () => {
    await env.request('PATCH', '/api/profile/', { token: env.viewer.token, body: { first_name: 'Vi', mailgun_api_key: 'secret-1', mailgun_domain: 'mg.viewer.test' } });
    const partial = await env.request('PATCH', '/api/profile/', { token: env.viewer.token, body: { last_name: 'Ewer' } });
    expect(partial.status).toBe(200);
    expect(partial.body).toMatchObject({ first_name: 'Vi', last_name: 'Ewer', has_mailgun_api_key: true, mailgun_domain: 'mg.viewer.test' });

    const cleared = await env.request('PATCH', '/api/profile/', { token: env.viewer.token, body: { mailgun_api_key: null, mailgun_domain: null } });
    expect(cleared.status).toBe(200);
    expect(cleared.body).toMatchObject({ first_name: 'Vi', has_mailgun_api_key: false, mailgun_domain: null });
    expect((await userRow(env.viewer.userId)).mailgun_api_key_enc).toBeNull();
  });

  it('an empty body changes nothing', async () => {
    const before = await env.request('GET', '/api/user/', { token: env.owner.token });
    const res = await env.request('PATCH', '/api/profile/', { token: env.owner.token, body: {} });
    expect(res.status).toBe(200);
    expect(res.body).toEqual(before.body);
  });

  it.each([
    [{ email: 'not-an-email' }, 'email'],
    [{ email: 'a@b' }, 'email'],
    [{ email: 42 }, 'email'],
    [{ first_name: 'x'.repeat(151) }, 'first_name'],
    [{ last_name: ['Doe'] }, 'last_name'],
    [{ mailgun_api_key: '' }, 'mailgun_api_key'],
    [{ mailgun_api_key: 12345 }, 'mailgun_api_key'],
    [{ mailgun_domain: 'not a domain' }, 'mailgun_domain'],
    [{ mailgun_domain: 'https://mg.example.com' }, 'mailgun_domain'],
    [{ mailgun_domain: 'mg.example.com/path' }, 'mailgun_domain'],
    [{ mailgun_domain: 'localhost' }, 'mailgun_domain'],
    [{ mailgun_domain: '-bad.example.com' }, 'mailgun_domain'],
    [{ mailgun_domain: `${'a'.repeat(64)}.example.com` }, 'mailgun_domain'],
    [{ mailgun_domain: '10.0.0.1' }, 'mailgun_domain'],
  ])('400 naming the field for %j, nothing written', async (body, field) => {
    const before = await userRow(env.admin.userId);
    const res = await env.request('PATCH', '/api/profile/', { token: env.admin.token, body: { first_name: 'Changed', ...body } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty(field);
    const after = await userRow(env.admin.userId);
    expect(after.first_name).toBe(before.first_name);
    expect(after.updated_at).toBe(before.updated_at);
  });

  it('400 for a body that is not a JSON object, or not JSON', async () => {
    expectError(await env.request('PATCH', '/api/profile/', { token: env.admin.token, body: ['first_name'] }), 400);
    expectError(await env.request('PATCH', '/api/profile/', { token: env.admin.token, payload: '{"first_name": ', headers: { 'content-type': 'application/json' } }), 400);
  });

  it('ignores fields a profile cannot change (no privilege escalation, no username or password change)', async () => {
    const res = await env.request('PATCH', '/api/profile/', {
      token: env.member.token,
      body: { is_platform_admin: true, username: 'root', password: 'hunter2hunter2', totp_enabled: true, id: env.owner.userId, organization: { role: 'owner' } },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: env.member.userId, username: 'member_a', is_platform_admin: false, two_factor_enabled: false, organization: { role: 'member' } });
    const row = await userRow(env.member.userId);
    expect(row).toMatchObject({ username: 'member_a', is_platform_admin: 0, totp_enabled: 0 });
    const owner = await userRow(env.owner.userId);
    expect(owner.username).toBe('owner_a');
  });

  it('changes only the caller\'s own profile', async () => {
    await env.request('PATCH', '/api/profile/', { token: env.otherOwner.token, body: { first_name: 'Bea' } });
    expect((await userRow(env.otherOwner.userId)).first_name).toBe('Bea');
    expect((await userRow(env.owner.userId)).first_name).not.toBe('Bea');
  });

  it('401 without a token, 403 for an API key', async () => {
    expectError(await env.request('PATCH', '/api/profile/', { body: { first_name: 'X' } }), 401);
    expectError(await env.request('PATCH', '/api/profile/', { token: env.adminKey, body: { first_name: 'X' } }), 403);
  });
});
