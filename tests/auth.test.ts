import { SignJWT, decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId, nowIso } from '../src/ids.js';
import { createUser } from '../src/services/users.js';
import { createTestEnv, expectError, TEST_PASSWORD, type TestEnv } from './helpers.js';

const TEST_SECRET = 'test-jwt-secret-0123456789abcdef0123456789';
const key = (s: string) => new TextEncoder().encode(s);
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const PROTECTED = '/api/v1/projects';
const get = (token: string) => env.request('GET', PROTECTED, { token });
const withHeader = (authorization: string) => env.request('GET', PROTECTED, { headers: { authorization } });
const login = (body: Record<string, unknown>, path = '/api/token/') => env.request('POST', path, { body });

let seq = 0;
/** A user of its own (so that deactivating or removing it disturbs no other test). */
async function newUser(org = env.orgA, role = 'member'): Promise<{ id: string; username: string }> {
  const username = `auth_user_${++seq}`;
  const { id } = await createUser(env.db.kysely, { username, password: TEST_PASSWORD });
  const now = nowIso();
  await env.db.kysely.insertInto('memberships').values({ id: newId('mem'), organization_id: org, user_id: id, role, role_id: null, created_at: now, updated_at: now }).execute();
  return { id, username };
}

/** The real claims of a valid access token, to forge variants of it. */
function claimsOf(token: string) {
  const c = decodeJwt(token);
  return { sub: c.sub as string, org: c.org as string, sid: c.sid as string };
}

function sign(claims: Record<string, unknown>, opts: { secret?: string; alg?: string; iss?: string; aud?: string; exp?: number | string; iat?: number; nbf?: number } = {}) {
  const jwt = new SignJWT({ typ: 'access', ...claims })
    .setProtectedHeader({ alg: opts.alg ?? 'HS256', typ: 'JWT' })
    .setIssuer(opts.iss ?? 'agentry').setAudience(opts.aud ?? 'agentry-api')
    .setIssuedAt(opts.iat).setExpirationTime(opts.exp ?? '10m');
  if (opts.nbf !== undefined) jwt.setNotBefore(opts.nbf);
  return jwt.sign(key(opts.secret ?? TEST_SECRET));
}

describe('login paths', () => {
  it('POST /api/token/ → exactly {access, refresh}; the access token works', async () => {
    const res = await login({ username: 'owner_a', password: TEST_PASSWORD });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['access', 'refresh']);
    expect(res.body.access.split('.')).toHaveLength(3);
    expect(res.body.refresh).not.toBe(res.body.access);
    expect((await get(res.body.access)).status).toBe(200);
  });

  it.each(['/api/v1/admin/login', '/api/v1/sessions/admin', '/api/v1/auth/login'])('POST %s → JWT and user payload', async (path) => {
    const res = await login({ username: 'admin_a', password: TEST_PASSWORD }, path);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ token_type: 'Bearer', expires_in: 900 });
    expect(res.body.token).toBe(res.body.access);
    expect(typeof res.body.refresh).toBe('string');
    expect(res.body.user).toMatchObject({ id: env.admin.userId, username: 'admin_a', organization: { id: env.orgA, role: 'admin' }, two_factor_enabled: false });
    expect(res.body.user.last_login_at).not.toBeNull();
    expect(res.text).not.toMatch(/password|scrypt/);
    expect((await get(res.body.token)).status).toBe(200);
  });

  it('wrong password and unknown user both → 401 with the same body (no user enumeration)', async () => {
    const wrong = await login({ username: 'owner_a', password: 'not the password' });
    const unknown = await login({ username: 'nobody_here', password: TEST_PASSWORD });
    expectError(wrong, 401);
    expectError(unknown, 401);
    expect(unknown.body).toEqual(wrong.body);
    for (const path of ['/api/v1/admin/login', '/api/v1/auth/login']) {
      expectError(await login({ username: 'owner_a', password: 'nope' }, path), 401);
      expectError(await login({ username: 'nobody_here', password: 'nope' }, path), 401);
    }
  });

  it('injection-shaped credentials are just wrong credentials', async () => {
    expectError(await login({ username: "owner_a' OR '1'='1", password: "' OR '1'='1" }), 401);
    expectError(await login({ username: 'owner_a', password: "' OR 1=1 --" }), 401);
  });

  it.each([
    [{ password: TEST_PASSWORD }, 'username'],
    [{ username: 'owner_a' }, 'password'],
    [{ username: 'owner_a', password: 12345678 }, 'password'],
    [{ username: ['owner_a'], password: TEST_PASSWORD }, 'username'],
    [{ username: 'owner_a', password: '' }, 'password'],
    [{ username: 'owner_a', password: 'x'.repeat(2000) }, 'password'],
    [{ username: 'owner_a', password: TEST_PASSWORD, otp: 123456 }, 'otp'],
  ])('400 naming the field for %j', async (body, field) => {
    const res = await login(body);
    expectError(res, 400);
    expect(res.body.details).toHaveProperty(field);
  });

  it('400 for a body that is not a JSON object, or not JSON', async () => {
    expectError(await env.request('POST', '/api/token/', { body: ['owner_a', TEST_PASSWORD] }), 400);
    expectError(await env.request('POST', '/api/token/', { payload: '{"username":', headers: { 'content-type': 'application/json' } }), 400);
  });

  it('a deactivated user cannot log in, and their existing tokens stop working', async () => {
    const u = await newUser();
    const ok = await login({ username: u.username, password: TEST_PASSWORD });
    expect(ok.status).toBe(200);
    await env.db.kysely.updateTable('users').set({ is_active: 0 }).where('id', '=', u.id).execute();
    expectError(await login({ username: u.username, password: TEST_PASSWORD }), 401);
    expectError(await get(ok.body.access), 401);
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh: ok.body.refresh } }), 401);
  });

  it('a user removed from the organization loses access with their old token', async () => {
    const u = await newUser();
    const ok = await login({ username: u.username, password: TEST_PASSWORD });
    await env.db.kysely.deleteFrom('memberships').where('user_id', '=', u.id).execute();
    expectError(await get(ok.body.access), 401);
  });

  it('organization_id picks one of the user\'s organizations; another organization → 400', async () => {
    const u = await newUser(env.orgA);
    const now = nowIso();
    await env.db.kysely.insertInto('memberships').values({ id: newId('mem'), organization_id: env.orgB, user_id: u.id, role: 'viewer', role_id: null, created_at: now, updated_at: now }).execute();
    const inB = await login({ username: u.username, password: TEST_PASSWORD, organization_id: env.orgB }, '/api/v1/auth/login');
    expect(inB.status).toBe(200);
    expect(inB.body.user.organization).toMatchObject({ id: env.orgB, role: 'viewer' });
    const verify = await env.request('GET', '/api/v1/admin/verify', { token: inB.body.token });
    expect(verify.body).toMatchObject({ organization_id: env.orgB, role: 'viewer' });

    const res = await login({ username: 'member_a', password: TEST_PASSWORD, organization_id: env.orgB });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('organization_id');
  });
});

describe('refresh rotation', () => {
  it.each([['/api/token/refresh/'], ['/api/v1/auth/refresh']])('%s rotates; reusing an old token revokes the whole session', async (path) => {
    const first = await login({ username: 'member_a', password: TEST_PASSWORD });
    const r1 = first.body.refresh;

    const second = await env.request('POST', path, { body: { refresh: r1 } });
    expect(second.status).toBe(200);
    if (path === '/api/token/refresh/') expect(Object.keys(second.body).sort()).toEqual(['access', 'refresh']);
    else expect(second.body).toMatchObject({ token_type: 'Bearer', expires_in: 900 });
    const r2 = second.body.refresh;
    expect(r2).not.toBe(r1);
    expect((await get(second.body.access)).status).toBe(200);

    // The old refresh token now fails, and that reuse revokes the family…
    expectError(await env.request('POST', path, { body: { refresh: r1 } }), 401);
    // …so the newest refresh token fails too,
    expectError(await env.request('POST', path, { body: { refresh: r2 } }), 401);
    // and so do the access tokens of that session.
    expectError(await get(second.body.access), 401);
    expectError(await get(first.body.access), 401);

    // Other sessions of the same user are untouched.
    expect((await get(env.member.token)).status).toBe(200);
  });

  it('a chain of rotations keeps working while each token is used once', async () => {
    let r = (await login({ username: 'viewer_a', password: TEST_PASSWORD })).body.refresh;
    for (let i = 0; i < 3; i++) {
      const res = await env.request('POST', '/api/v1/auth/refresh', { body: { refresh: r } });
      expect(res.status).toBe(200);
      expect((await get(res.body.access)).status).toBe(200);
      r = res.body.refresh;
    }
  });

  it('garbage, an access token, or a missing field as the refresh token → 401/400', async () => {
    const access = (await login({ username: 'viewer_a', password: TEST_PASSWORD })).body.access;
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh: 'rt_not-a-real-token' } }), 401);
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh: access } }), 401);
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh: env.adminKey } }), 401);
    const missing = await env.request('POST', '/api/token/refresh/', { body: {} });
    expectError(missing, 400);
    expect(missing.body.details).toHaveProperty('refresh');
  });

  it('an expired session cannot be refreshed', async () => {
    const res = await login({ username: 'viewer_a', password: TEST_PASSWORD });
    const { sid } = claimsOf(res.body.access);
    await env.db.kysely.updateTable('sessions').set({ expires_at: new Date(Date.now() - 1000).toISOString() }).where('id', '=', sid).execute();
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh: res.body.refresh } }), 401);
  });
});

describe('logout and verify', () => {
  it('POST /api/v1/auth/logout ends the session: its access and refresh tokens then fail', async () => {
    const s = await login({ username: 'admin_a', password: TEST_PASSWORD });
    const res = await env.request('POST', '/api/v1/auth/logout', { token: s.body.access });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ success: true });
    const after = await get(s.body.access);
    expectError(after, 401);
    expectError(await env.request('POST', '/api/token/refresh/', { body: { refresh: s.body.refresh } }), 401);
    expect((await get(env.admin.token)).status).toBe(200);
  });

  it('logout with only a refresh token ends that session', async () => {
    const s = await login({ username: 'admin_a', password: TEST_PASSWORD });
    expect((await env.request('POST', '/api/v1/auth/logout', { body: { refresh: s.body.refresh } })).status).toBe(200);
    expectError(await get(s.body.access), 401);
  });

  it('logout with nothing, or with a bad token → 401', async () => {
    expectError(await env.request('POST', '/api/v1/auth/logout', { body: {} }), 401);
    expectError(await env.request('POST', '/api/v1/auth/logout', { body: { refresh: 'rt_unknown' } }), 401);
    expectError(await env.request('POST', '/api/v1/auth/logout', { token: 'not.a.jwt', body: {} }), 401);
  });

  it('GET /api/v1/admin/verify describes a user token', async () => {
    const res = await env.request('GET', '/api/v1/admin/verify', { token: env.owner.token });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ valid: true, actor_type: 'user', organization_id: env.orgA, role: 'owner', user: { username: 'owner_a' } });
    expect(res.body.permissions).toContain('projects:write');
  });

  it('GET /api/v1/admin/verify describes an API key', async () => {
    const res = await env.request('GET', '/api/v1/admin/verify', { token: env.viewerKey });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ valid: true, actor_type: 'api_key', organization_id: env.orgA, role: 'viewer', user: null });
    expect(res.body.permissions).toContain('projects:read');
    expect(res.body.permissions).not.toContain('projects:write');
  });

  it('GET /api/v1/admin/verify → 401 without or with an ended token', async () => {
    expectError(await env.request('GET', '/api/v1/admin/verify'), 401);
    const s = await login({ username: 'admin_a', password: TEST_PASSWORD });
    await env.request('POST', '/api/v1/auth/logout', { token: s.body.access });
    expectError(await env.request('GET', '/api/v1/admin/verify', { token: s.body.access }), 401);
  });
});

describe('hostile tokens on a protected route → 401 {error, details}', () => {
  it('the genuine token works (control)', async () => {
    expect((await get(env.owner.token)).status).toBe(200);
  });

  const now = () => Math.floor(Date.now() / 1000);
  const cases: [string, () => Promise<string>][] = [
    ['alg "none" with the right claims', async () => {
      const c = claimsOf(env.owner.token);
      return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...c, typ: 'access', iss: 'agentry', aud: 'agentry-api', iat: now(), exp: now() + 600 })}.`;
    }],
    ['alg "none" with the genuine signature kept', async () => {
      const [, payload, sig] = env.owner.token.split('.');
      return `${b64({ alg: 'none', typ: 'JWT' })}.${payload}.${sig}`;
    }],
    ['HS256 signed with another secret', async () => sign(claimsOf(env.owner.token), { secret: 'another-secret-0123456789abcdef0123456789' })],
    ['the right secret, a wrong issuer', async () => sign(claimsOf(env.owner.token), { iss: 'someone-else' })],
    ['the right secret, a wrong audience', async () => sign(claimsOf(env.owner.token), { aud: 'another-api' })],
    ['the right secret, expired', async () => sign(claimsOf(env.owner.token), { iat: now() - 3600, exp: now() - 60 })],
    ['the right secret, not valid yet', async () => sign(claimsOf(env.owner.token), { nbf: now() + 3600 })],
    ['the right secret, HS512 instead of HS256', async () => sign(claimsOf(env.owner.token), { alg: 'HS512' })],
    ['the right secret, typ "refresh"', async () => sign({ ...claimsOf(env.owner.token), typ: 'refresh' })],
    ['the right secret, no session id', async () => { const { sub, org } = claimsOf(env.owner.token); return sign({ sub, org }); }],
    ['the right secret, an unknown session', async () => sign({ ...claimsOf(env.owner.token), sid: 'ses_00000000000000000000000000' })],
    ['the right secret, another user on the owner\'s session', async () => sign({ ...claimsOf(env.owner.token), sub: env.viewer.userId })],
    ['the right secret, another organization on the owner\'s session', async () => sign({ ...claimsOf(env.owner.token), org: env.orgB })],
    ['the payload altered, signature kept', async () => {
      const [h, p, s] = env.viewer.token.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
      return `${h}.${b64({ ...claims, sub: env.owner.userId })}.${s}`;
    }],
    ['a refresh token used as an access token', async () => (await login({ username: 'owner_a', password: TEST_PASSWORD })).body.refresh],
    ['a random agk_ string', async () => `agk_${'x'.repeat(40)}`],
    ['an API key with one character changed', async () => env.viewerKey.slice(0, -1) + (env.viewerKey.endsWith('A') ? 'B' : 'A')],
    ['a random string', async () => 'hello'],
  ];
  it.each(cases)('%s', async (_name, make) => {
    const res = await get(await make());
    expectError(res, 401);
    expect(res.text).not.toMatch(/"results"|stack/);
  });

  it.each([['Token x'], ['Bearer'], ['Bearer '], ['Basic b3duZXJfYTpwYXNz'], ['Bearer a b'], ['JWT abc.def.ghi']])('malformed Authorization header %j', async (h) => {
    expectError(await withHeader(h), 401);
  });

  it('the owner token with an unexpected scheme is refused, not silently accepted', async () => {
    expectError(await withHeader(`Token ${env.owner.token}`), 401);
    expectError(await withHeader(`${env.owner.token}`), 401);
  });

  it('a revoked API key', async () => {
    const created = await env.request('POST', '/api/v1/api_keys', { token: env.owner.token, body: { name: 'to revoke', role: 'viewer' } });
    expect((await get(created.body.key)).status).toBe(200);
    expect((await env.request('DELETE', `/api/v1/api_keys/${created.body.id}/revoke`, { token: env.owner.token })).status).toBe(200);
    const res = await get(created.body.key);
    expectError(res, 401);
    expect(JSON.stringify(res.body.details)).toMatch(/revoked/i);
  });

  it('an expired API key', async () => {
    const created = await env.request('POST', '/api/v1/api_keys', { token: env.owner.token, body: { name: 'to expire', role: 'viewer' } });
    expect((await get(created.body.key)).status).toBe(200);
    await env.db.kysely.updateTable('api_keys').set({ expires_at: new Date(Date.now() - 1000).toISOString() }).where('id', '=', created.body.id).execute();
    const res = await get(created.body.key);
    expectError(res, 401);
    expect(JSON.stringify(res.body.details)).toMatch(/expired/i);
  });

  it('a hostile token is refused even on a public route that accepts a token (logout)', async () => {
    const forged = await sign(claimsOf(env.owner.token), { secret: 'another-secret-0123456789abcdef0123456789' });
    expectError(await env.request('POST', '/api/v1/auth/logout', { token: forged, body: {} }), 401);
    // …and the genuine session it imitated is not ended.
    expect((await get(env.owner.token)).status).toBe(200);
  });
});
