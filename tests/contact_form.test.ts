import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const URL = '/api/contact-form/';
const documented = { name: 'John Doe', email: 'john@example.com', company: 'Acme Corp', inquiry_type: 'support', subject: 'Need Help', message: 'I need assistance with...' };
const submissions = () => env.db.kysely.selectFrom('contact_form_submissions').selectAll().execute();
const events = () => env.db.kysely.selectFrom('events').selectAll().where('type', '=', 'contact_form.submitted').execute();

describe('contact form', () => {
  it('accepts the documented body without a token: 201 {id, status}, stored with the IP, one event without an organization', async () => {
    const res = await env.request('POST', URL, { body: documented, headers: { 'user-agent': 'FormTest/1.0' } });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ id: expect.stringMatching(/^cfs_/), status: 'received' });

    const row = (await submissions()).find((s) => s.id === res.body.id);
    expect(row).toMatchObject({ ...documented, ip: '127.0.0.1' });
    expect(row!.created_at).toMatch(/Z$/);

    const evts = (await events()).filter((e) => JSON.parse(e.payload).submission_id === res.body.id);
    expect(evts).toHaveLength(1);
    expect(evts[0].organization_id).toBeNull();
    expect(JSON.parse(evts[0].payload)).toMatchObject({ ...documented, submission_id: res.body.id });
  });

  it('takes company as optional and every inquiry type of the list', async () => {
    for (const inquiry_type of ['support', 'sales', 'billing', 'partnership', 'feedback', 'other']) {
      const { company: _company, ...rest } = documented;
      const res = await env.request('POST', URL, { body: { ...rest, inquiry_type } });
      expect(res.status, inquiry_type).toBe(201);
      expect((await submissions()).find((s) => s.id === res.body.id)).toMatchObject({ inquiry_type, company: null });
    }
  });

  it('answers a filled honeypot exactly like a real submission, storing and emitting nothing', async () => {
    const [rowsBefore, eventsBefore] = [(await submissions()).length, (await events()).length];
    const res = await env.request('POST', URL, { body: { ...documented, website: 'https://spam.example' } });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ id: expect.stringMatching(/^cfs_/), status: 'received' });
    expect((await submissions()).length).toBe(rowsBefore);
    expect((await events()).length).toBe(eventsBefore);
    // An empty honeypot is a person.
    expect((await env.request('POST', URL, { body: { ...documented, website: '' } })).status).toBe(201);
    expect((await submissions()).length).toBe(rowsBefore + 1);
  });

  it('rejects bad input naming the fields, storing and emitting nothing', async () => {
    const [rowsBefore, eventsBefore] = [(await submissions()).length, (await events()).length];
    const cases: [Record<string, unknown>, string][] = [
      [{ ...documented, email: 'not-an-email' }, 'email'],
      [{ ...documented, inquiry_type: 'complaint' }, 'inquiry_type'],
      [{ ...documented, name: '   ' }, 'name'],
      [{ ...documented, subject: 's'.repeat(201) }, 'subject'],
      [{ ...documented, message: 'm'.repeat(5001) }, 'message'],
      [{ ...documented, company: 'c'.repeat(201) }, 'company'],
      [{ ...documented, name: ['John'] }, 'name'],
    ];
    for (const [body, field] of cases) {
      const res = await env.request('POST', URL, { body });
      expectError(res, 400);
      expect(Object.keys(res.body.details), field).toEqual([field]);
    }
    const empty = await env.request('POST', URL, { body: {} });
    expectError(empty, 400);
    expect(Object.keys(empty.body.details).sort()).toEqual(['email', 'inquiry_type', 'message', 'name', 'subject']);
    expectError(await env.request('POST', URL, { payload: 'name=John', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415);
    expect((await submissions()).length).toBe(rowsBefore);
    expect((await events()).length).toBe(eventsBefore);
  });

  it('lets platform admins list (filtered by inquiry type, newest first) and show submissions', async () => {
    const sales = await env.request('POST', URL, { body: { ...documented, inquiry_type: 'sales', subject: 'Pricing' } });
    const list = await env.request('GET', '/api/contact-form/submissions/?inquiry_type=sales', { token: env.platformAdmin.token });
    expect(list.status).toBe(200);
    expect(list.body.count).toBeGreaterThanOrEqual(2);
    expect(list.body.results.every((s: { inquiry_type: string }) => s.inquiry_type === 'sales')).toBe(true);
    expect(list.body.results[0]).toMatchObject({ id: sales.body.id, subject: 'Pricing', ip: '127.0.0.1' });
    expect(Object.keys(list.body.results[0]).sort()).toEqual(['company', 'created_at', 'email', 'id', 'inquiry_type', 'ip', 'message', 'name', 'subject', 'user_agent']);

    const all = await env.request('GET', '/api/contact-form/submissions/?page_size=2', { token: env.platformAdmin.token });
    expect(all.body.results).toHaveLength(2);
    expect(all.body.next).toMatch(/page=2/);

    const one = await env.request('GET', `/api/contact-form/submissions/${sales.body.id}/`, { token: env.platformAdmin.token });
    expect(one.status).toBe(200);
    expect(one.body).toEqual(list.body.results[0]);
    expectError(await env.request('GET', '/api/contact-form/submissions/cfs_missing/', { token: env.platformAdmin.token }), 404);
    expectError(await env.request('GET', '/api/contact-form/submissions/?inquiry_type=complaint', { token: env.platformAdmin.token }), 400);
  });

  it('stores the User-Agent header with the submission', async () => {
    const res = await env.request('POST', URL, { body: documented, headers: { 'user-agent': 'FormTest/1.0 (+https://example.com)' } });
    expect(res.status).toBe(201);
    expect((await submissions()).find((s) => s.id === res.body.id)?.user_agent).toBe('FormTest/1.0 (+https://example.com)');
    const long = await env.request('POST', URL, { body: documented, headers: { 'user-agent': 'x'.repeat(2000) } });
    expect((await submissions()).find((s) => s.id === long.body.id)?.user_agent).toHaveLength(512);
  });

  it('keeps submissions from everyone but platform admins', async () => {
    const s = await env.request('POST', URL, { body: documented });
    for (const token of [env.owner.token, env.admin.token, env.otherOwner.token, env.adminKey]) {
      expectError(await env.request('GET', '/api/contact-form/submissions/', { token }), 403);
      expectError(await env.request('GET', `/api/contact-form/submissions/${s.body.id}/`, { token }), 403);
    }
    expectError(await env.request('GET', '/api/contact-form/submissions/'), 401);
  });
});

describe('contact form rate limit (per IP)', () => {
  let limited: TestEnv;
  beforeAll(async () => { limited = await createTestEnv({ rateLimitPublicFormPerHour: 2 }); });
  afterAll(async () => { await limited.close(); });

  const post = (remoteAddress: string, body: unknown = documented, headers: Record<string, string> = {}) =>
    limited.app.fastify.inject({ method: 'POST', url: URL, remoteAddress, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(body) });

  it('refuses the third post of an hour from one IP with 429 {error, details}; other IPs go on', async () => {
    expect((await post('10.0.0.1')).statusCode).toBe(201);
    // Honeypot posts count too.
    expect((await post('10.0.0.1', { ...documented, website: 'x' })).statusCode).toBe(201);
    const third = await post('10.0.0.1');
    expect(third.statusCode).toBe(429);
    const body = third.json();
    expect(typeof body.error).toBe('string');
    expect(body).toHaveProperty('details');
    expect(third.headers['retry-after']).toBeDefined();
    expect(third.headers['x-ratelimit-limit']).toBe('2');

    // A forged X-Forwarded-For does not reset the count (no proxy is trusted by default).
    expect((await post('10.0.0.1', documented, { 'x-forwarded-for': '203.0.113.9' })).statusCode).toBe(429);
    expect((await post('10.0.0.2')).statusCode).toBe(201);

    const stored = await limited.db.kysely.selectFrom('contact_form_submissions').select('ip').execute();
    expect(stored.map((s) => s.ip).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
  });
});
