import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const orgRow = (id: string) => env.db.kysely.selectFrom('organizations').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

describe('GET /api/v1/account', () => {
  it('shows the caller\'s organization', async () => {
    const res = await env.request('GET', '/api/v1/account', { token: env.viewer.token });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      id: env.orgA, name: 'Org A', slug: 'org-a', plan: 'free', timezone: 'UTC', settings: {}, member_count: 5,
      created_at: expect.any(String), updated_at: expect.any(String),
    });
    expect(res.text).not.toContain('billing');
  });

  it('each organization sees its own; API keys too', async () => {
    const b = await env.request('GET', '/api/v1/account', { token: env.otherOwner.token });
    expect(b.body).toMatchObject({ id: env.orgB, name: 'Org B', member_count: 1 });
    const k = await env.request('GET', '/api/v1/account', { token: env.viewerKey });
    expect(k.body.id).toBe(env.orgA);
  });
});

describe('PATCH /api/v1/account', () => {
  it('updates name, slug, time zone (canonicalised) and settings', async () => {
    const res = await env.request('PATCH', '/api/v1/account', {
      token: env.admin.token, body: { name: 'Acme Inc', slug: 'acme', timezone: 'europe/paris', settings: { locale: 'fr', nested: { a: 1 } } },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: env.orgA, name: 'Acme Inc', slug: 'acme', timezone: 'Europe/Paris', settings: { locale: 'fr', nested: { a: 1 } }, plan: 'free' });
    const shown = await env.request('GET', '/api/v1/account', { token: env.member.token });
    expect(shown.body).toEqual(res.body);
    // a partial update keeps the rest; settings are replaced as a whole
    const partial = await env.request('PATCH', '/api/v1/account', { token: env.admin.token, body: { settings: { locale: 'de' } } });
    expect(partial.body).toMatchObject({ name: 'Acme Inc', timezone: 'Europe/Paris', settings: { locale: 'de' } });
    const audit = await env.db.kysely.selectFrom('audit_logs').select(['action', 'resource_type']).where('resource_id', '=', env.orgA).execute();
    expect(audit).toContainEqual({ action: 'account.update', resource_type: 'organization' });
  });

  it('400 naming the field for an unknown time zone, an offset, a bad slug, an empty name, non-object settings; nothing written', async () => {
    const before = await orgRow(env.orgA);
    const cases: [Record<string, unknown>, string][] = [
      [{ name: 'Changed', timezone: 'Mars/Olympus_Mons' }, 'timezone'],
      [{ name: 'Changed', timezone: '+01:00' }, 'timezone'],
      [{ name: 'Changed', timezone: '' }, 'timezone'],
      [{ name: 'Changed', slug: 'Not A Slug' }, 'slug'],
      [{ name: '' }, 'name'],
      [{ name: 'Changed', settings: ['a'] }, 'settings'],
      [{ name: 'Changed', settings: 'x' }, 'settings'],
    ];
    for (const [body, field] of cases) {
      const res = await env.request('PATCH', '/api/v1/account', { token: env.owner.token, body });
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body)).toHaveProperty(field);
    }
    expect(await orgRow(env.orgA)).toEqual(before);
  });

  it('the plan is read-only: 400 naming it, nothing written', async () => {
    const before = await orgRow(env.orgA);
    const res = await env.request('PATCH', '/api/v1/account', { token: env.owner.token, body: { name: 'Upgraded', plan: 'enterprise' } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('plan');
    expect(await orgRow(env.orgA)).toEqual(before);
  });

  it('409 for a slug another organization uses', async () => {
    const res = await env.request('PATCH', '/api/v1/account', { token: env.owner.token, body: { slug: 'org-b' } });
    expectError(res, 409);
    expect(res.body.details).toHaveProperty('slug');
    // keeping one's own slug is fine
    const own = (await orgRow(env.orgA)).slug;
    expect((await env.request('PATCH', '/api/v1/account', { token: env.owner.token, body: { slug: own } })).status).toBe(200);
  });

  it('403 for members and viewers', async () => {
    expectError(await env.request('PATCH', '/api/v1/account', { token: env.member.token, body: { name: 'x' } }), 403);
    expectError(await env.request('PATCH', '/api/v1/account', { token: env.viewerKey, body: { name: 'x' } }), 403);
  });
});

describe('/api/v1/account/billing', () => {
  it('starts empty, with the plan', async () => {
    const res = await env.request('GET', '/api/v1/account/billing', { token: env.otherOwner.token });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ billing_email: null, billing_name: null, billing_address: null, tax_id: null, plan: 'free', updated_at: expect.any(String) });
  });

  it('updates the billing fields; the address is stored as JSON text', async () => {
    const res = await env.request('PATCH', '/api/v1/account/billing', {
      token: env.admin.token,
      body: {
        billing_email: 'billing@acme.test', billing_name: 'Acme Inc', tax_id: 'FR12345678901',
        billing_address: { line1: '1 rue de la Paix', city: 'Paris', postal_code: '75002', country: 'fr' },
      },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      billing_email: 'billing@acme.test', billing_name: 'Acme Inc', tax_id: 'FR12345678901', plan: 'free',
      billing_address: { line1: '1 rue de la Paix', line2: null, city: 'Paris', state: null, postal_code: '75002', country: 'FR' },
    });
    const shown = await env.request('GET', '/api/v1/account/billing', { token: env.owner.token });
    expect(shown.body).toEqual(res.body);
    const row = await orgRow(env.orgA);
    expect(JSON.parse(row.billing_address!)).toEqual(res.body.billing_address);

    // partial update keeps other fields; null clears
    const cleared = await env.request('PATCH', '/api/v1/account/billing', { token: env.owner.token, body: { billing_address: null, tax_id: null } });
    expect(cleared.body).toMatchObject({ billing_email: 'billing@acme.test', billing_name: 'Acme Inc', billing_address: null, tax_id: null });
    expect((await orgRow(env.orgA)).billing_address).toBeNull();
  });

  it('400 naming the field for a bad e-mail, a bad country, a non-object address or the plan; nothing written', async () => {
    const before = await orgRow(env.orgA);
    const cases: [Record<string, unknown>, string][] = [
      [{ billing_name: 'Changed', billing_email: 'not-an-email' }, 'billing_email'],
      [{ billing_name: 'Changed', billing_address: { city: 'Paris', country: 'France' } }, 'billing_address.country'],
      [{ billing_name: 'Changed', billing_address: '1 rue de la Paix' }, 'billing_address'],
      [{ billing_name: 'Changed', billing_address: { line1: 5 } }, 'billing_address.line1'],
      [{ billing_name: 'Changed', plan: 'pro' }, 'plan'],
    ];
    for (const [body, field] of cases) {
      const res = await env.request('PATCH', '/api/v1/account/billing', { token: env.owner.token, body });
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body)).toHaveProperty([field]);
    }
    expect(await orgRow(env.orgA)).toEqual(before);
  });

  it('needs billing permissions: members cannot read it, viewers cannot change it', async () => {
    expectError(await env.request('GET', '/api/v1/account/billing', { token: env.member.token }), 403);
    expectError(await env.request('GET', '/api/v1/account/billing', { token: env.viewerKey }), 403);
    expectError(await env.request('PATCH', '/api/v1/account/billing', { token: env.member.token, body: { billing_name: 'x' } }), 403);
    expect((await env.request('GET', '/api/v1/account/billing', { token: env.adminKey })).status).toBe(200);
  });
});
