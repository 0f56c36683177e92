import { generate } from 'otplib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newId, nowIso } from '../src/ids.js';
import { createUser } from '../src/services/users.js';
import { createTestEnv, expectError, TEST_PASSWORD, type TestEnv } from './helpers.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

/** Each test gets its own user (an owner of organization A), signed in through POST /api/token/. */
let me: { userId: string; username: string; token: string };
let seq = 0;
beforeEach(async () => {
  const username = `tfa_user_${++seq}`;
  const db = env.db.kysely;
  const { id } = await createUser(db, { username, password: TEST_PASSWORD });
  const now = nowIso();
  await db.insertInto('memberships').values({ id: newId('mem'), organization_id: env.orgA, user_id: id, role: 'owner', role_id: null, created_at: now, updated_at: now }).execute();
  const res = await env.request('POST', '/api/token/', { body: { username, password: TEST_PASSWORD } });
  expect(res.status).toBe(200);
  me = { userId: id, username, token: res.body.access };
});

/**
 * A real TOTP code `steps` periods from now. The server accepts the previous, current and next
 * period, so codes for the current and the next period are valid whenever they are checked.
 */
const codeAt = (secret: string, steps = 0) => generate({ secret, epoch: Math.floor(Date.now() / 1000) + steps * 30 });

/** A 6-digit code that is valid in no period near now. */
async function wrongCode(secret: string): Promise<string> {
  const near = new Set(await Promise.all([-2, -1, 0, 1, 2, 3].map((s) => codeAt(secret, s))));
  for (let n = 0; ; n++) {
    const c = String((Number(await codeAt(secret)) + 1 + n) % 1_000_000).padStart(6, '0');
    if (!near.has(c)) return c;
  }
}

const userRow = (id: string) => env.db.kysely.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const setup = (token = me.token) => env.request('GET', '/api/2fa/setup/', { token });
const enable = (otp: string, token = me.token) => env.request('POST', '/api/2fa/enable/', { token, body: { otp } });
const disable = (password: string, token = me.token) => env.request('POST', '/api/2fa/disable/', { token, body: { password } });
const login = (body: Record<string, unknown>, path = '/api/token/') => env.request('POST', path, { body: { username: me.username, password: TEST_PASSWORD, ...body } });

async function enabledSecret(): Promise<{ secret: string; used: string }> {
  const s = await setup();
  const used = await codeAt(s.body.secret);
  const res = await enable(used);
  expect(res.status).toBe(200);
  return { secret: s.body.secret, used };
}

describe('GET /api/2fa/setup/', () => {
  it('returns a PNG QR code, the secret and its otpauth URI; stores the secret sealed and pending', async () => {
    const res = await setup();
    expect(res.status).toBe(200);
    const { qr_code, secret, otpauth_url } = res.body;
    expect(secret).toMatch(/^[A-Z2-7]{16,}=*$/);
    expect(otpauth_url).toMatch(/^otpauth:\/\/totp\//);
    const uri = new URL(otpauth_url);
    expect(uri.searchParams.get('secret')).toBe(secret);
    expect(uri.searchParams.get('issuer')).toBe('Agentry');
    expect(decodeURIComponent(uri.pathname)).toContain(me.username);
    expect(qr_code).toMatch(/^data:image\/png;base64,/);
    const png = Buffer.from(qr_code.slice('data:image/png;base64,'.length), 'base64');
    expect(png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);

    const row = await userRow(me.userId);
    expect(row.totp_enabled).toBe(0);
    expect(row.totp_secret_enc).not.toBeNull();
    expect(row.totp_secret_enc).not.toContain(secret);
    expect(env.app.deps.box.decrypt(row.totp_secret_enc!)).toBe(secret);

    // Pending is not enabled: the user still shows 2FA off and logs in without a code.
    expect((await env.request('GET', '/api/user/', { token: me.token })).body.two_factor_enabled).toBe(false);
    expect((await login({})).status).toBe(200);
  });

  it('a second setup replaces the pending secret: codes of the first one no longer enable', async () => {
    const first = (await setup()).body.secret as string;
    let second = (await setup()).body.secret as string;
    while ((await codeAt(first)) === (await codeAt(second))) second = (await setup()).body.secret;
    const res = await enable(await codeAt(first));
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('otp');
    expect((await enable(await codeAt(second))).status).toBe(200);
  });

  it('409 while 2FA is enabled, and the enabled secret is kept', async () => {
    await enabledSecret();
    const before = (await userRow(me.userId)).totp_secret_enc;
    const res = await setup();
    expectError(res, 409);
    expect(res.text).not.toContain('data:image');
    expect((await userRow(me.userId)).totp_secret_enc).toBe(before);
  });
});

describe('POST /api/2fa/enable/', () => {
  it('enables with a code from the pending secret', async () => {
    const s = await setup();
    const res = await enable(await codeAt(s.body.secret));
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ success: true, two_factor_enabled: true });
    expect((await userRow(me.userId)).totp_enabled).toBe(1);
    expect((await env.request('GET', '/api/user/', { token: me.token })).body.two_factor_enabled).toBe(true);
  });

  it('400 with details.otp for a wrong code; 2FA stays off', async () => {
    const s = await setup();
    const res = await enable(await wrongCode(s.body.secret));
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('otp');
    expect((await userRow(me.userId)).totp_enabled).toBe(0);
  });

  it.each([['abcdef'], ['12345'], ['1234567'], [''], ['12 34 56']])('400 with details.otp for the malformed code %j', async (otp) => {
    await setup();
    const res = await enable(otp);
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('otp');
  });

  it('400 with details.otp when otp is missing or not a string', async () => {
    await setup();
    for (const body of [{}, { otp: 123456 }, { otp: null }]) {
      const res = await env.request('POST', '/api/2fa/enable/', { token: me.token, body });
      expectError(res, 400);
      expect(res.body.details).toHaveProperty('otp');
    }
  });

  it('400 without a pending setup', async () => {
    const res = await enable('123456');
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('two_factor');
    expect((await userRow(me.userId)).totp_enabled).toBe(0);
  });

  it('409 when already enabled', async () => {
    const { secret } = await enabledSecret();
    expectError(await enable(await codeAt(secret, 1)), 409);
  });
});

describe('login with 2FA enabled', () => {
  it('requires an OTP, accepts a valid one once, and refuses its replay', async () => {
    const { secret, used } = await enabledSecret();

    const missing = await login({});
    expectError(missing, 401);
    expect(missing.body.details.otp).toMatch(/required/i);

    const wrong = await login({ otp: await wrongCode(secret) });
    expectError(wrong, 401);
    expect(wrong.body.details).toHaveProperty('otp');

    // The code that enabled 2FA was already used.
    expectError(await login({ otp: used }), 401);

    const next = await codeAt(secret, 1);
    const ok = await login({ otp: next });
    expect(ok.status).toBe(200);
    expect(Object.keys(ok.body).sort()).toEqual(['access', 'refresh']);
    expect((await env.request('GET', '/api/user/', { token: ok.body.access })).body.two_factor_enabled).toBe(true);

    // Replay of a code that just logged in.
    const replay = await login({ otp: next });
    expectError(replay, 401);
    expect(replay.body.details).toHaveProperty('otp');
  });

  it('applies on every login path', async () => {
    await enabledSecret();
    for (const path of ['/api/v1/admin/login', '/api/v1/sessions/admin', '/api/v1/auth/login']) {
      const res = await login({}, path);
      expectError(res, 401);
      expect(res.body.details).toHaveProperty('otp');
      expect(res.text).not.toMatch(/"(access|token)"/);
    }
  });

  it('a wrong password fails as a wrong password, even with a valid code', async () => {
    const { secret } = await enabledSecret();
    const res = await env.request('POST', '/api/token/', { body: { username: me.username, password: 'wrong password', otp: await codeAt(secret, 1) } });
    expectError(res, 401);
    expect(res.body.details).not.toHaveProperty('otp');
    // The code was not consumed by the failed attempt.
    expect((await login({ otp: await codeAt(secret, 1) })).status).toBe(200);
  });
});

describe('POST /api/2fa/disable/', () => {
  it('400 with details.password for a wrong password; 2FA stays on', async () => {
    await enabledSecret();
    const res = await disable('not my password');
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('password');
    expect((await userRow(me.userId)).totp_enabled).toBe(1);
    expectError(await login({}), 401);
  });

  it('400 with details.password when the password is missing', async () => {
    await enabledSecret();
    const res = await env.request('POST', '/api/2fa/disable/', { token: me.token, body: {} });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('password');
  });

  it('disables with the password: secret and flag cleared, login needs no code, and 2FA can be set up again', async () => {
    await enabledSecret();
    const res = await disable(TEST_PASSWORD);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ success: true, two_factor_enabled: false });
    const row = await userRow(me.userId);
    expect(row).toMatchObject({ totp_enabled: 0, totp_secret_enc: null });
    expect((await login({})).status).toBe(200);

    // A new secret can be enabled right away (its codes are not blocked by the old secret's).
    const again = await setup();
    expect(again.status).toBe(200);
    expect((await enable(await codeAt(again.body.secret))).status).toBe(200);
  });

  it('abandons a pending setup', async () => {
    await setup();
    expect((await disable(TEST_PASSWORD)).status).toBe(200);
    expect((await userRow(me.userId)).totp_secret_enc).toBeNull();
    expectError(await enable('123456'), 400);
  });

  it('400 when 2FA is not enabled', async () => {
    const res = await disable(TEST_PASSWORD);
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('two_factor');
  });
});

describe('2FA endpoints need a signed-in user', () => {
  it('401 without a token, 403 for an API key, and nothing changes', async () => {
    expectError(await env.request('GET', '/api/2fa/setup/'), 401);
    expectError(await env.request('GET', '/api/2fa/setup/', { token: env.adminKey }), 403);
    expectError(await env.request('POST', '/api/2fa/enable/', { token: env.adminKey, body: { otp: '123456' } }), 403);
    expectError(await env.request('POST', '/api/2fa/disable/', { token: env.adminKey, body: { password: TEST_PASSWORD } }), 403);
    expect((await userRow(me.userId)).totp_secret_enc).toBeNull();
  });

  it('each user has their own secret: enabling 2FA for one does not affect another', async () => {
    await enabledSecret();
    expect((await env.request('POST', '/api/token/', { body: { username: 'admin_a', password: TEST_PASSWORD } })).status).toBe(200);
    expect((await userRow(env.admin.userId)).totp_enabled).toBe(0);
  });
});
