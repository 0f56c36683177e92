import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import ExcelJS from 'exceljs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { csvField, csvRecord, csvTuning } from '../src/http/contacts.js';
import { flagTuning, upsertContacts, type ApiRow } from '../src/services/contacts.js';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { startDnsServer, type TestDnsServer } from './dns-server.js';

let env: TestEnv;
let dns: TestDnsServer;

beforeAll(async () => {
  dns = await startDnsServer({
    'gw.test': { MX: [{ exchange: 'aspmx.l.google.com', priority: 1 }] },
    'm365.test': { MX: [{ exchange: 'corp.mail.protection.outlook.com', priority: 1 }] },
  });
  env = await createTestEnv({ dnsServers: [dns.server] });
  const r = await upsertContacts(env.app.deps, env.orgA, [
    { name: 'Anna Berlin', email: 'anna@gw.test', city: 'Berlin', tags: ['vip', 'beta'], custom_fields: { plan: 'pro' }, lead_score: '70' },
    { name: 'Bert Berlin', email: 'bert@m365.test', city: 'Berlin' },
    { name: 'Carla Köln', email: 'carla@gw.test', city: 'Köln' },
    { name: 'Zoë 山田 😀', email: 'zoe@gw.test', city: 'Tōkyō' },
    { email: 'noname@m365.test', city: 'Berlin' },
    {
      name: '=HYPERLINK("http://evil.test","click")', email: 'formula@gw.test', company: '+cmd|\' /C calc\'!A0', title: '-2+3',
      city: '@SUM(A1)', phone: '\t=1+1', source: '\r=1', tags: ['=tag'],
    },
  ]);
  expect(r.results.every((x) => x.id)).toBe(true);
  await env.request('POST', '/api/agents/', { token: env.otherOwner.token, body: { name: 'Other Org', email: 'other@gw.test', city: 'Berlin' } });
});
afterAll(async () => { await env?.close(); await dns?.close(); });

const download = (query: string, token: string | null = env.owner.token) => env.request('GET', `/api/agents/download/${query}`, { token: token ?? undefined });

async function xlsxRows(query: string) {
  const res = await env.app.fastify.inject({ method: 'GET', url: `/api/agents/download/${query}`, headers: { authorization: `Bearer ${env.owner.token}` } });
  expect(res.statusCode).toBe(200);
  expect(res.headers['content-type']).toBe('application/vnd.openxmlformats-officedocument.spreadsheetml.sheet');
  expect(res.headers['content-disposition']).toMatch(/^attachment; filename="contacts-\d{8}T\d{6}Z\.xlsx"$/);
  const wb = new ExcelJS.Workbook();
  await wb.xlsx.load(res.rawPayload as unknown as ArrayBuffer);
  const sheet = wb.worksheets[0];
  const rows: unknown[][] = [];
  sheet.eachRow((row) => { rows.push((row.values as unknown[]).slice(1)); });
  const [header, ...data] = rows;
  return data.map((r) => Object.fromEntries((header as string[]).map((h, i) => [h, r[i] ?? null])));
}

describe('GET /api/agents/download/', () => {
  it('CSV: every contact of the organization, newest first, with a file name', async () => {
    const res = await download('?format=csv');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(res.headers['content-disposition']).toMatch(/^attachment; filename="contacts-\d{8}T\d{6}Z\.csv"$/);
    expect(res.headers['x-ratelimit-limit']).toBeDefined();
    const rows = parse(res.text, { columns: true }) as Record<string, string>[];
    expect(rows.map((r) => r.email)).toEqual(['formula@gw.test', 'noname@m365.test', 'zoe@gw.test', 'carla@gw.test', 'bert@m365.test', 'anna@gw.test']);
    const anna = rows.find((r) => r.email === 'anna@gw.test')!;
    expect(anna).toMatchObject({
      name: 'Anna Berlin', city: 'Berlin', tags: 'vip; beta', custom_fields: '{"plan":"pro"}', lead_score: '70',
      unsubscribed: 'false', esp: 'google_workspace', esg: 'google', email_validity: 'valid', data_health_flags: '',
    });
    expect(anna.id).toMatch(/^ctc_/);
    expect(rows.find((r) => r.email === 'noname@m365.test')!.data_health_flags).toBe('missing_name');
  });

  it('CSV: the list filters apply', async () => {
    const rows = (q: string) => download(q).then((r) => (parse(r.text, { columns: true }) as Record<string, string>[]).map((x) => x.email).sort());
    expect(await rows('?format=csv&city=Berlin')).toEqual(['anna@gw.test', 'bert@m365.test', 'noname@m365.test']);
    expect(await rows('?format=csv&city=Berlin&esp=microsoft_365')).toEqual(['bert@m365.test', 'noname@m365.test']);
    expect(await rows('?format=csv&esg=microsoft&data_health_flags=missing_name')).toEqual(['noname@m365.test']);
    expect(await rows('?format=csv&email_validity=valid&search=carla')).toEqual(['carla@gw.test']);
    expect(await rows('?format=csv&city=Nowhere')).toEqual([]);
    // An empty export still has its header line.
    expect((await download('?format=csv&city=Nowhere')).text.split('\n')[0]).toMatch(/^id,name,email,/);
  });

  it('CSV: unicode survives and formula-like cells are escaped', async () => {
    // Stored values are trimmed, so a leading tab or CR can only come from older data: put one there.
    await env.db.kysely.updateTable('contacts').set({ phone: '\t=1+1', source: '\r=1' }).where('email_normalized', '=', 'formula@gw.test').execute();
    const rows = parse((await download('?format=csv')).text, { columns: true }) as Record<string, string>[];
    expect(rows.find((r) => r.email === 'zoe@gw.test')).toMatchObject({ name: 'Zoë 山田 😀', city: 'Tōkyō' });
    expect(rows.find((r) => r.email === 'carla@gw.test')!.name).toBe('Carla Köln');
    const f = rows.find((r) => r.email === 'formula@gw.test')!;
    expect(f).toMatchObject({
      name: '\'=HYPERLINK("http://evil.test","click")', company: '\'+cmd|\' /C calc\'!A0', title: '\'-2+3', city: '\'@SUM(A1)',
      phone: '\'\t=1+1', source: '\'\r=1', tags: '\'=tag',
    });
  });

  it('XLSX: parsed back with exceljs, filters applied, unicode and escaping kept', async () => {
    const all = await xlsxRows('?format=xlsx');
    expect(all).toHaveLength(6);
    expect(all.find((r) => r.email === 'zoe@gw.test')).toMatchObject({ name: 'Zoë 山田 😀', city: 'Tōkyō', esp: 'google_workspace' });
    expect(all.find((r) => r.email === 'formula@gw.test')).toMatchObject({ name: '\'=HYPERLINK("http://evil.test","click")', title: '\'-2+3', city: '\'@SUM(A1)' });
    expect(all.find((r) => r.email === 'anna@gw.test')).toMatchObject({ lead_score: 70, tags: 'vip; beta' });
    const berlinMs = await xlsxRows('?format=xlsx&city=Berlin&esg=microsoft');
    expect(berlinMs.map((r) => r.email).sort()).toEqual(['bert@m365.test', 'noname@m365.test']);
    expect(await xlsxRows('?format=xlsx&city=Nowhere')).toEqual([]);
  });

  it('streams more rows than one database batch', async () => {
    const n = 2345;
    const r = await upsertContacts(env.app.deps, env.orgA, Array.from({ length: n }, (_, i) => ({ name: `Bulk ${i}`, email: `bulk${i}@bulk.test`, city: 'Bulkville' })), { checkEmail: false });
    expect(r.created).toBe(n);
    const csv = parse((await download('?format=csv&city=Bulkville')).text, { columns: true }) as Record<string, string>[];
    expect(csv).toHaveLength(n);
    expect(new Set(csv.map((x) => x.id)).size).toBe(n);
    expect(csv[0].name).toBe(`Bulk ${n - 1}`);
    expect(csv[n - 1].name).toBe('Bulk 0');
    const xlsx = await xlsxRows('?format=xlsx&city=Bulkville');
    expect(xlsx).toHaveLength(n);
  }, 120_000); // 2,345 upserts: slow on PostgreSQL on a loaded machine, not a speed check

  it('CSV: the same bytes across many batch boundaries (an exact multiple of the batch too) and by either flag plan', async () => {
    // The contacts written in beforeAll (the bulk ones have no DNS answers: their analysis may still change).
    const query = '?format=csv&esg=google';
    const whole = (await download(query)).text;
    const flagged = (await download('?format=csv&data_health_flags=missing_name')).text;
    const lines = whole.split('\n').length - 2;
    expect(lines).toBe(4);
    const saved = { csv: { ...csvTuning }, flag: { ...flagTuning } };
    try {
      for (const batch of [1, 2, 3, lines, lines + 1]) {
        csvTuning.batch = batch;
        expect((await download(query)).text, `batch ${batch}`).toBe(whole);
      }
      csvTuning.batch = 1;
      expect((await download('?format=csv&data_health_flags=missing_name')).text).toBe(flagged);
      flagTuning.drive = false;
      expect((await download('?format=csv&data_health_flags=missing_name')).text).toBe(flagged);
    } finally {
      Object.assign(csvTuning, saved.csv);
      Object.assign(flagTuning, saved.flag);
    }
    expect((parse(flagged, { columns: true }) as Record<string, string>[]).map((r) => r.data_health_flags)).toEqual(expect.arrayContaining(['missing_name']));
  });

  it('CSV records are byte for byte what csv-stringify writes for the same cells', () => {
    const awkward = ['', 'plain', 'a,b', 'say "hi"', '"', '""', 'line\nbreak', 'cr\rhere', 'crlf\r\n', ' lead and trail ', 'Zoë 山田 😀', '=1+1', '-2', '+x', '@SUM(A1)', '\t=tab', '\r=cr', ',=', '\u2028', 'a;b'];
    for (const v of awkward) expect(csvField(v), JSON.stringify(v)).toBe(stringify([[v]]).slice(0, -1));
    const row = (over: Partial<ApiRow>): ApiRow => ({
      id: 'ctc_1', name: null, email: null, phone: null, company: null, title: null, city: null, state: null, country: null, tags: '[]',
      custom_fields: '{}', source: null, lead_score: null, lead_score_reasons: '[]', unsubscribed: 0, bounced: 0, esp: null, esg: null,
      email_validity: null, data_health_flags: '[]', email_checked_at: null, created_at: '2025-01-01T00:00:00.000Z', updated_at: '2025-01-02T00:00:00.000Z', ...over,
    });
    const rows = [
      row({}),
      ...awkward.map((v, i) => row({
        name: v, email: v, phone: v, company: v, title: v, city: v, state: v, country: v, source: v, tags: JSON.stringify([v, 'b,c']),
        custom_fields: JSON.stringify({ k: v }), lead_score: i, lead_score_reasons: JSON.stringify([v]), unsubscribed: 1, bounced: i % 2,
        esp: 'google_workspace', esg: 'google', email_validity: 'valid', data_health_flags: '["missing_name","bounced"]', email_checked_at: '2025-01-03T00:00:00.000Z',
      })),
    ];
    // What the export wrote before, through csv-stringify: the contact's cells, formula-escaped text, lists joined with '; '.
    const esc = (s: string | null) => (s === null ? '' : /^[=+\-@\t\r]/.test(s) ? `'${s}` : s);
    for (const r of rows) {
      const tags = JSON.parse(r.tags) as string[];
      const reasons = JSON.parse(r.lead_score_reasons) as unknown[];
      const custom = JSON.parse(r.custom_fields) as Record<string, unknown>;
      const cells = [
        r.id, esc(r.name), esc(r.email), esc(r.phone), esc(r.company), esc(r.title), esc(r.city), esc(r.state), esc(r.country),
        esc(tags.join('; ')), esc(Object.keys(custom).length ? JSON.stringify(custom) : ''), esc(r.source), r.lead_score ?? '',
        esc(reasons.length ? JSON.stringify(reasons) : ''), r.unsubscribed ? 'true' : 'false', r.bounced ? 'true' : 'false',
        r.esp ?? '', r.esg ?? '', r.email_validity ?? '', (JSON.parse(r.data_health_flags) as string[]).join('; '), r.email_checked_at ?? '', r.created_at, r.updated_at,
      ];
      expect(csvRecord(r)).toBe(stringify([cells]));
    }
  });

  it('400 naming the format or the filter', async () => {
    for (const [q, field] of [['', 'format'], ['?format=pdf', 'format'], ['?format=CSV', 'format'], ['?format=csv&esp=gmail', 'esp'], ['?format=xlsx&data_health_flags=nope', 'data_health_flags.0'], ['?format=csv&search=a%00', 'search']]) {
      const res = await download(q);
      expectError(res, 400);
      expect(Object.keys(res.body.details), q).toContain(field);
    }
  });

  it('401 without or with a bad token, 403 without contacts:read', async () => {
    expectError(await download('?format=csv', null), 401);
    expectError(await download('?format=csv', `${env.owner.token}x`), 401);
    const role = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: 'no contacts', permissions: ['projects:read'] } });
    const key = await env.request('POST', '/api/v1/api_keys', { token: env.owner.token, body: { name: 'limited', role: `custom:${role.body.id}` } });
    expect(key.status).toBe(201);
    expectError(await download('?format=csv', key.body.key), 403);
    expect((await download('?format=csv', env.viewer.token)).status).toBe(200);
    expect((await download('?format=xlsx', env.viewerKey)).status).toBe(200);
  });

  it("never includes another organization's contacts", async () => {
    const rows = parse((await download('?format=csv&city=Berlin')).text, { columns: true }) as Record<string, string>[];
    expect(rows.map((r) => r.email)).not.toContain('other@gw.test');
    const theirs = parse((await download('?format=csv', env.otherOwner.token)).text, { columns: true }) as Record<string, string>[];
    expect(theirs.map((r) => r.email)).toEqual(['other@gw.test']);
  });

  it('is audited', async () => {
    const rows = await env.db.kysely.selectFrom('audit_logs').select(['action', 'metadata']).where('organization_id', '=', env.orgA).where('action', '=', 'contacts.download').execute();
    expect(rows.length).toBeGreaterThan(0);
    expect(JSON.parse(rows[0].metadata)).toHaveProperty('format');
  });
});
