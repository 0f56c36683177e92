import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { createSecret, findSecretRefs, resolveSecretRefs } from '../src/services/secrets.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const VALUE = 'sk-live-very-secret-value-0123456789';
const storedRow = (id: string) => env.db.kysely.selectFrom('secrets').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const secretCount = async () => Number((await env.db.kysely.selectFrom('secrets').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

describe('v1/secrets', () => {
  let id: string;

  it('creates a secret: 201, value never returned, stored as ciphertext', async () => {
    const res = await env.request('POST', '/api/v1/secrets', { token: env.admin.token, body: { name: 'STRIPE_KEY', description: 'Stripe', value: VALUE } });
    expect(res.status).toBe(201);
    expect(Object.keys(res.body).sort()).toEqual(['created_at', 'created_by', 'description', 'id', 'name', 'updated_at']);
    expect(res.body).toMatchObject({ name: 'STRIPE_KEY', description: 'Stripe', created_by: env.admin.userId });
    expect(res.text).not.toContain(VALUE);
    id = res.body.id;

    const row = await storedRow(id);
    expect(row.organization_id).toBe(env.orgA);
    expect(row.value_enc).not.toContain(VALUE);
    expect(row.value_enc).toMatch(/^v1\./);
    expect(env.app.deps.box.decrypt(row.value_enc)).toBe(VALUE);
  });

  it('shows and lists without the value', async () => {
    const one = await env.request('GET', `/api/v1/secrets/${id}`, { token: env.member.token });
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id, name: 'STRIPE_KEY' });
    expect(one.text).not.toContain(VALUE);
    const all = await env.request('GET', '/api/v1/secrets', { token: env.owner.token });
    expect(all.status).toBe(200);
    expect(all.body.results.map((s: { id: string }) => s.id)).toContain(id);
    expect(all.text).not.toContain(VALUE);
    const searched = await env.request('GET', '/api/v1/secrets?search=stripe', { token: env.owner.token });
    expect(searched.body.results.map((s: { id: string }) => s.id)).toEqual([id]);
    const none = await env.request('GET', '/api/v1/secrets?search=_', { token: env.owner.token });
    expect(none.body.results.map((s: { id: string }) => s.id)).toEqual([id]);
    const literal = await env.request('GET', '/api/v1/secrets?search=%25', { token: env.owner.token });
    expect(literal.body.count).toBe(0);
  });

  it('rejects bad input with 400 naming the field, writing nothing', async () => {
    const before = await secretCount();
    for (const [body, field] of [
      [{ name: 'lower_case', value: 'x' }, 'name'],
      [{ name: '1STARTS_WITH_DIGIT', value: 'x' }, 'name'],
      [{ name: 'A'.repeat(65), value: 'x' }, 'name'],
      [{ name: 'NO_VALUE' }, 'value'],
      [{ name: 'EMPTY_VALUE', value: '' }, 'value'],
      [{ value: 'x' }, 'name'],
    ] as const) {
      const res = await env.request('POST', '/api/v1/secrets', { token: env.admin.token, body });
      expectError(res, 400);
      expect(res.body.details).toHaveProperty(field);
    }
    expect(await secretCount()).toBe(before);
  });

  it('409 for a name taken in the organization; the same name is free in another organization', async () => {
    const dup = await env.request('POST', '/api/v1/secrets', { token: env.admin.token, body: { name: 'STRIPE_KEY', value: 'other' } });
    expectError(dup, 409);
    expect(dup.body.details).toHaveProperty('name');
    const b = await env.request('POST', '/api/v1/secrets', { token: env.otherOwner.token, body: { name: 'STRIPE_KEY', value: 'b-value' } });
    expect(b.status).toBe(201);
  });

  it('PATCH rotates the value and renames; 409 on a taken name', async () => {
    const before = await storedRow(id);
    const res = await env.request('PATCH', `/api/v1/secrets/${id}`, { token: env.admin.token, body: { value: 'rotated-value-42', description: 'rotated' } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id, name: 'STRIPE_KEY', description: 'rotated' });
    expect(res.text).not.toContain('rotated-value-42');
    const after = await storedRow(id);
    expect(after.value_enc).not.toBe(before.value_enc);
    expect(env.app.deps.box.decrypt(after.value_enc)).toBe('rotated-value-42');

    const other = await env.request('POST', '/api/v1/secrets', { token: env.admin.token, body: { name: 'OTHER_ONE', value: 'o' } });
    const clash = await env.request('PATCH', `/api/v1/secrets/${other.body.id}`, { token: env.admin.token, body: { name: 'STRIPE_KEY' } });
    expectError(clash, 409);
    const renamed = await env.request('PATCH', `/api/v1/secrets/${other.body.id}`, { token: env.admin.token, body: { name: 'RENAMED_ONE' } });
    expect(renamed.body.name).toBe('RENAMED_ONE');
    const bad = await env.request('PATCH', `/api/v1/secrets/${other.body.id}`, { token: env.admin.token, body: { name: 'bad name' } });
    expectError(bad, 400);
    expect(bad.body.details).toHaveProperty('name');
    expect(env.app.deps.box.decrypt((await storedRow(other.body.id)).value_enc)).toBe('o');
  });

  it('the audit trail names the secret but never holds its value', async () => {
    const logs = await env.request('GET', `/api/v1/audit_logs?resource_id=${id}`, { token: env.owner.token });
    expect(logs.body.results.map((r: { action: string }) => r.action)).toEqual(['secrets.update', 'secrets.create']);
    const rows = await env.db.kysely.selectFrom('audit_logs').select('metadata').execute();
    expect(JSON.stringify(rows)).not.toContain(VALUE);
  });

  it('member reads but cannot write; viewer cannot read', async () => {
    expectError(await env.request('POST', '/api/v1/secrets', { token: env.member.token, body: { name: 'M', value: 'x' } }), 403);
    expectError(await env.request('GET', '/api/v1/secrets', { token: env.viewer.token }), 403);
  });

  it('deletes', async () => {
    const res = await env.request('DELETE', `/api/v1/secrets/${id}`, { token: env.admin.token });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id, deleted: true });
    expectError(await env.request('GET', `/api/v1/secrets/${id}`, { token: env.admin.token }), 404);
    expectError(await env.request('DELETE', `/api/v1/secrets/${id}`, { token: env.admin.token }), 404);
  });
});

describe('resolveSecretRefs', () => {
  beforeAll(async () => {
    await createSecret(env.ctxOf(env.owner), { name: 'API_TOKEN', value: 'a-token' });
    await createSecret(env.ctxOf(env.owner), { name: 'HOST', value: 'api.example.test' });
    await createSecret(env.ctxOf(env.otherOwner), { name: 'API_TOKEN', value: 'b-token' });
    await createSecret(env.ctxOf(env.otherOwner), { name: 'B_ONLY', value: 'b-only' });
  });

  it("replaces references with the caller's organization's values", async () => {
    const text = 'https://{{secrets.HOST}}/x?t={{secrets.API_TOKEN}}&again={{ secrets.API_TOKEN }}';
    expect(await resolveSecretRefs(env.ctxOf(env.owner), text)).toBe('https://api.example.test/x?t=a-token&again=a-token');
    expect(await resolveSecretRefs(env.ctxOf(env.otherOwner), 'Bearer {{secrets.API_TOKEN}}')).toBe('Bearer b-token');
  });

  it('leaves text without references alone', async () => {
    expect(await resolveSecretRefs(env.ctxOf(env.owner), 'plain {{other.THING}} {secrets.API_TOKEN}')).toBe('plain {{other.THING}} {secrets.API_TOKEN}');
    expect(findSecretRefs('{{secrets.A}} {{secrets.B}} {{secrets.A}}')).toEqual(['A', 'B']);
  });

  it("unknown names → 400 naming them; another organization's secret is never used", async () => {
    await expect(resolveSecretRefs(env.ctxOf(env.owner), '{{secrets.B_ONLY}} {{secrets.API_TOKEN}} {{secrets.NOPE}}'))
      .rejects.toMatchObject({ status: 400, details: { secrets: expect.stringMatching(/B_ONLY, NOPE$/) } });
    await expect(resolveSecretRefs(env.ctxOf(env.owner), '{{secrets.NOPE}}', { field: 'url' }))
      .rejects.toMatchObject({ status: 400, details: { url: expect.stringContaining('NOPE') } });
  });
});
