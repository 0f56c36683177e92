import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, openDatabase } from '../src/db.js';
import { runUntilIdle } from '../src/engine/queue.js';
import { uploadPath } from '../src/services/data_sources.js';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

/** Closes an environment and removes the files its organizations uploaded. */
async function closeEnv(e: TestEnv) {
  for (const org of [e.orgA, e.orgB]) rmSync(join(e.app.deps.config.dataDir, 'imports', org), { recursive: true, force: true });
  await e.close();
}

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await closeEnv(env); });

/** A multipart/form-data body with one file field. */
function multipart(content: string | Buffer, filename = 'contacts.csv', field = 'file') {
  const boundary = `----agentry${randomBytes(8).toString('hex')}`;
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${filename}"\r\nContent-Type: text/csv\r\n\r\n`;
  return {
    payload: Buffer.concat([Buffer.from(head), Buffer.isBuffer(content) ? content : Buffer.from(content), Buffer.from(`\r\n--${boundary}--\r\n`)]),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  };
}

async function createSource(e: TestEnv, body: Record<string, unknown> = {}, token = e.owner.token) {
  const res = await e.request('POST', '/api/v1/data_sources', { token, body: { name: 'Leads', type: 'csv_upload', ...body } });
  expect(res.status, res.text).toBe(201);
  return res.body as { id: string; [k: string]: unknown };
}

async function upload(e: TestEnv, id: string, content: string | Buffer, opts: { token?: string; filename?: string } = {}) {
  const mp = multipart(content, opts.filename);
  return e.request('POST', `/api/v1/data_sources/${id}/upload`, { token: opts.token ?? e.owner.token, payload: mp.payload, headers: mp.headers });
}

async function startAndRun(e: TestEnv, body: Record<string, unknown>) {
  const start = await e.request('POST', '/api/v1/data_source_runs', { token: e.owner.token, body });
  expect(start.status, start.text).toBe(202);
  expect(start.body.status).toBe('queued');
  await runUntilIdle(e.app.deps);
  const res = await e.request('GET', `/api/v1/data_source_runs/${start.body.id}`, { token: e.owner.token });
  expect(res.status).toBe(200);
  return res.body;
}

async function contactByEmail(e: TestEnv, org: string, email: string) {
  return e.db.kysely.selectFrom('contacts').selectAll().where('organization_id', '=', org).where('email_normalized', '=', email.toLowerCase()).executeTakeFirst();
}

const SAMPLE = [
  'Full Name,E-mail,Company Name,City,Job Title,Tags,Notes',
  'Ada Lovelace,ada@example.com,Analytical Engines,London,Mathematician,"vip, math",first',
  'Grace Hopper,grace@example.com,US Navy,Arlington,Rear Admiral,navy,second',
  'Alan Turing,alan@example.com,Bletchley Park,Wilmslow,Cryptanalyst,,third',
].join('\n') + '\n';

describe('data sources: CRUD', () => {
  it('creates, lists, shows, updates and deletes', async () => {
    const created = await createSource(env, { name: 'Trade show', field_mapping: { 'E-mail': 'email', Notes: 'custom_fields.notes' }, options: { delimiter: ';' } });
    expect(created).toMatchObject({
      name: 'Trade show', type: 'csv_upload', url: null, field_mapping: { 'E-mail': 'email', Notes: 'custom_fields.notes' },
      options: { delimiter: ';', has_header: true }, file_name: null, file_size: null, row_estimate: null, last_run: null,
    });
    expect(created.id).toMatch(/^dsrc_[0-9A-Z]{26}$/);
    expect(created.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const list = await env.request('GET', '/api/v1/data_sources?type=csv_upload&search=trade', { token: env.viewer.token });
    expect(list.status).toBe(200);
    expect(list.body.results.map((r: { id: string }) => r.id)).toContain(created.id);
    expect(list.body).toHaveProperty('count');

    const patched = await env.request('PATCH', `/api/v1/data_sources/${created.id}`, { token: env.member.token, body: { name: 'Trade show 2025', options: { has_header: false }, field_mapping: { column_2: 'email' } } });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body).toMatchObject({ name: 'Trade show 2025', options: { delimiter: ';', has_header: false }, field_mapping: { column_2: 'email' } });

    const shown = await env.request('GET', `/api/v1/data_sources/${created.id}`, { token: env.viewer.token });
    expect(shown.body.name).toBe('Trade show 2025');

    const del = await env.request('DELETE', `/api/v1/data_sources/${created.id}`, { token: env.owner.token });
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ id: created.id, deleted: true });
    expectError(await env.request('GET', `/api/v1/data_sources/${created.id}`, { token: env.owner.token }), 404);
  });

  it('refuses bad input with details naming the field, writing nothing', async () => {
    const before = await env.db.kysely.selectFrom('data_sources').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    const cases: [Record<string, unknown>, string][] = [
      [{ name: 'x', type: 'csv_upload', field_mapping: { Email: 'email', Foo: 'favourite_colour' } }, 'field_mapping.Foo'],
      [{ name: 'x', type: 'csv_upload', field_mapping: { Email: 'custom_fields.' } }, 'field_mapping.Email'],
      [{ name: 'x', type: 'csv_upload', url: 'https://example.com/a.csv' }, 'url'],
      [{ name: 'x', type: 'csv_url' }, 'url'],
      [{ name: 'x', type: 'csv_url', url: 'http://127.0.0.1/a.csv' }, 'url'],
      [{ name: 'x', type: 'csv_url', url: 'file:///etc/passwd' }, 'url'],
      [{ name: 'x', type: 'csv_url', url: 'not a url' }, 'url'],
      [{ name: 'x', type: 'csv_upload', options: { delimiter: ';;' } }, 'options.delimiter'],
      [{ name: 'x', type: 'csv_upload', options: { delimiter: '"' } }, 'options.delimiter'],
      [{ name: 'x', type: 'excel' }, 'type'],
      [{ name: '', type: 'csv_upload' }, 'name'],
      [{ name: 'x', type: 'csv_upload', colour: 'red' }, '_'],
    ];
    for (const [body, field] of cases) {
      const res = await env.request('POST', '/api/v1/data_sources', { token: env.owner.token, body });
      expectError(res, 400);
      if (field === '_') expect(JSON.stringify(res.body.details)).toContain('colour');
      else expect(Object.keys(res.body.details), JSON.stringify(body)).toContain(field);
    }
    const after = await env.db.kysely.selectFrom('data_sources').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));

    const src = await createSource(env);
    const bad = await env.request('PATCH', `/api/v1/data_sources/${src.id}`, { token: env.owner.token, body: { name: 'renamed', field_mapping: { a: 'nope' } } });
    expectError(bad, 400);
    expect(bad.body.details).toHaveProperty(['field_mapping.a']);
    expect((await env.request('GET', `/api/v1/data_sources/${src.id}`, { token: env.owner.token })).body.name).toBe('Leads');
    expectError(await env.request('PATCH', `/api/v1/data_sources/${src.id}`, { token: env.owner.token, body: { url: 'https://example.com/x.csv' } }), 400);
  });

  it("answers 404 for another organization's data source and run", async () => {
    const theirs = await createSource(env, {}, env.otherOwner.token);
    expect((await upload(env, theirs.id, SAMPLE, { token: env.otherOwner.token })).status).toBe(200);
    const run = await env.request('POST', '/api/v1/data_source_runs', { token: env.otherOwner.token, body: { data_source_id: theirs.id } });
    expect(run.status).toBe(202);
    for (const [method, url, body] of [
      ['GET', `/api/v1/data_sources/${theirs.id}`, undefined],
      ['PATCH', `/api/v1/data_sources/${theirs.id}`, { name: 'mine now' }],
      ['DELETE', `/api/v1/data_sources/${theirs.id}`, undefined],
      ['POST', `/api/v1/data_sources/${theirs.id}/preview`, {}],
      ['POST', '/api/v1/data_source_runs', { data_source_id: theirs.id }],
      ['GET', `/api/v1/data_source_runs/${run.body.id}`, undefined],
    ] as const) {
      expectError(await env.request(method, url, { token: env.owner.token, body }), 404);
    }
    expectError(await upload(env, theirs.id, SAMPLE), 404);
    const list = await env.request('GET', `/api/v1/data_source_runs?data_source_id=${theirs.id}`, { token: env.owner.token });
    expect(list.body.results).toEqual([]);
    // Their source is untouched.
    expect((await env.request('GET', `/api/v1/data_sources/${theirs.id}`, { token: env.otherOwner.token })).body.name).toBe('Leads');
  });
});

describe('data sources: uploads', () => {
  it('streams the file to the data directory and reports its name, size and row estimate', async () => {
    const src = await createSource(env);
    const res = await upload(env, src.id, SAMPLE, { filename: '../../etc/leads.csv' });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ id: src.id, file_name: 'leads.csv', file_size: Buffer.byteLength(SAMPLE), row_estimate: 3 });
    expect(res.body.uploaded_at).toBeTruthy();
    const path = uploadPath(env.app.deps, env.orgA, src.id);
    expect(readFileSync(path, 'utf8')).toBe(SAMPLE);
    const audit = await env.db.kysely.selectFrom('audit_logs').select(['action', 'resource_id']).where('action', '=', 'data_sources.upload').where('resource_id', '=', src.id).execute();
    expect(audit).toHaveLength(1);
  });

  it('refuses what is not a CSV file, keeping the previous file', async () => {
    const src = await createSource(env);
    expect((await upload(env, src.id, SAMPLE)).status).toBe(200);
    const xlsx = Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), randomBytes(2000)]);
    const r1 = await upload(env, src.id, xlsx, { filename: 'leads.xlsx' });
    expectError(r1, 400);
    expect(r1.body.details.file).toMatch(/xlsx|ZIP/);
    const bin = await upload(env, src.id, Buffer.concat([Buffer.from('name,email\n'), Buffer.alloc(100, 0), randomBytes(20000)]));
    expectError(bin, 400);
    expect(bin.body.details.file).toMatch(/binary/);
    expectError(await upload(env, src.id, ''), 400);
    expect(readFileSync(uploadPath(env.app.deps, env.orgA, src.id), 'utf8')).toBe(SAMPLE);
    const shown = await env.request('GET', `/api/v1/data_sources/${src.id}`, { token: env.owner.token });
    expect(shown.body.file_size).toBe(Buffer.byteLength(SAMPLE));
  });

  it('needs multipart with a file, a csv_upload source, contacts:write and a token', async () => {
    const src = await createSource(env);
    const json = await env.request('POST', `/api/v1/data_sources/${src.id}/upload`, { token: env.owner.token, body: { file: 'a,b' } });
    expectError(json, 415);
    const boundary = 'xyz123';
    const noFile = await env.request('POST', `/api/v1/data_sources/${src.id}/upload`, {
      token: env.owner.token, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      payload: `--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--${boundary}--\r\n`,
    });
    expectError(noFile, 400);
    expect(noFile.body.details).toHaveProperty('file');
    expectError(await upload(env, src.id, SAMPLE, { token: env.viewer.token }), 403);
    expectError(await upload(env, src.id, SAMPLE, { token: env.viewerKey }), 403);
    expectError(await upload(env, src.id, SAMPLE, { token: '' }), 401);
    expectError(await upload(env, 'dsrc_00000000000000000000000000', SAMPLE), 404);
    expect((await upload(env, src.id, SAMPLE, { token: env.adminKey })).status).toBe(200);
    expect((await upload(env, src.id, SAMPLE, { token: env.member.token })).status).toBe(200);
  });

  it('answers 413 past the upload limit and keeps nothing of it', async () => {
    const small = await createTestEnv({ uploadLimitBytes: 1000 });
    try {
      const src = await createSource(small);
      const big = 'name,email\n' + Array.from({ length: 100 }, (_, i) => `Person ${i},p${i}@example.com`).join('\n');
      const res = await upload(small, src.id, big);
      expectError(res, 413);
      expect(existsSync(uploadPath(small.app.deps, small.orgA, src.id))).toBe(false);
      expect((await small.request('GET', `/api/v1/data_sources/${src.id}`, { token: small.owner.token })).body.uploaded_at).toBeNull();
    } finally {
      await closeEnv(small);
    }
  });
});

describe('data sources: preview', () => {
  it('shows the first rows, the columns and a proposed mapping, reading only the start', async () => {
    const src = await createSource(env);
    const rows = Array.from({ length: 50 }, (_, i) => `Person ${i},person${i}@example.com,Acme ${i},Paris,CEO,,n`);
    const res0 = await upload(env, src.id, [SAMPLE.split('\n')[0], ...rows].join('\n'));
    expect(res0.body.row_estimate).toBe(50);
    const res = await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.viewer.token, body: {} });
    expect(res.status, res.text).toBe(200);
    expect(res.body.columns).toEqual(['Full Name', 'E-mail', 'Company Name', 'City', 'Job Title', 'Tags', 'Notes']);
    expect(res.body.delimiter).toBe(',');
    expect(res.body.rows).toHaveLength(20);
    expect(res.body.rows[0]).toEqual({ row_number: 2, values: ['Person 0', 'person0@example.com', 'Acme 0', 'Paris', 'CEO', '', 'n'] });
    expect(res.body.proposed_field_mapping).toEqual({ 'Full Name': 'name', 'E-mail': 'email', 'Company Name': 'company', City: 'city', 'Job Title': 'title', Tags: 'tags' });
    expect(res.body.field_mapping).toEqual(res.body.proposed_field_mapping);
    expect(res.body.unmapped_columns).toEqual(['Notes']);
    expect(res.body.errors).toEqual([]);
    expect(res.body.contacts[0]).toEqual({ row_number: 2, status: 'import', error: null, contact: { name: 'Person 0', email: 'person0@example.com', company: 'Acme 0', city: 'Paris', title: 'CEO' } });
    expect(res.body.row_estimate).toBe(50);

    const limited = await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: { limit: 3, field_mapping: { 'E-mail': 'email', Notes: 'custom_fields.note' } } });
    expect(limited.body.rows).toHaveLength(3);
    expect(limited.body.contacts[1].contact).toEqual({ email: 'person1@example.com', custom_fields: { note: 'n' } });
    expectError(await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: { field_mapping: { x: 'bogus' } } }), 400);
    expectError(await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: { limit: 500 } }), 400);
  });

  it('matches header names loosely: E-mail, Email Address, First + Last Name, Company Name', async () => {
    const src = await createSource(env);
    await upload(env, src.id, 'Last Name;First Name;Email Address;Phone Number;Organisation;Country;Lead Source;Province\nHopper;Grace;grace@example.com;555;Navy;US;fair;VA\n');
    const res = await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: {} });
    expect(res.body.delimiter).toBe(';');
    expect(res.body.proposed_field_mapping).toEqual({
      'First Name': 'name', 'Last Name': 'name', 'Email Address': 'email', 'Phone Number': 'phone', Organisation: 'company', Country: 'country', 'Lead Source': 'source', Province: 'state',
    });
    expect(res.body.contacts[0].contact).toMatchObject({ name: 'Grace Hopper', email: 'grace@example.com', phone: '555' });
  });

  it('answers with per-row errors for malformed CSV', async () => {
    const src = await createSource(env);
    const csv = [
      'name,email,city',
      'Ok One,one@example.com,Oslo',
      'Too,many,cells,here',
      'Short@example.com',
      'Bad "quote,mid@example.com,Rome',
      '"Unclosed,open@example.com,Lima',
      'Ok Two,two@example.com,Kyiv',
    ].join('\n');
    await upload(env, src.id, csv);
    const res = await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: {} });
    expect(res.status, res.text).toBe(200);
    const byRow = Object.fromEntries(res.body.errors.map((e: { row_number: number; message: string }) => [e.row_number, e.message]));
    expect(byRow[3]).toMatch(/Expected 3 columns, found 4/);
    expect(byRow[4]).toMatch(/Expected 3 columns, found 1/);
    expect(byRow[6]).toMatch(/quote/i);
    expect(res.body.contacts.find((c: { row_number: number }) => c.row_number === 5).contact).toEqual({ name: 'Bad "quote', email: 'mid@example.com', city: 'Rome' });
    // The line after the unbalanced quote is read again on its own.
    expect(res.body.rows.at(-1)).toEqual({ row_number: 7, values: ['Ok Two', 'two@example.com', 'Kyiv'] });
  });

  it('needs a file, and refuses unknown data sources', async () => {
    const src = await createSource(env);
    const res = await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: {} });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('file');
    expectError(await env.request('POST', '/api/v1/data_sources/dsrc_nope/preview', { token: env.owner.token, body: {} }), 404);
  });
});

describe('data source runs', () => {
  it('imports an upload: preview, run, contacts exist; a second import updates by e-mail', async () => {
    const src = await createSource(env, { name: 'Pioneers' });
    await upload(env, src.id, SAMPLE);
    const preview = await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: {} });
    const mapping = { ...preview.body.proposed_field_mapping, Notes: 'custom_fields.notes' };
    const run = await startAndRun(env, { data_source_id: src.id, field_mapping: mapping });
    expect(run).toMatchObject({
      data_source_id: src.id, status: 'succeeded', progress: 100, rows_processed: 3, rows_total: 3, created_count: 3, updated_count: 0,
      skipped_count: 0, error_count: 0, errors: [], failure_reason: null, field_mapping: mapping, bytes_read: Buffer.byteLength(SAMPLE), bytes_total: Buffer.byteLength(SAMPLE),
    });
    expect(run.started_at).toBeTruthy();
    expect(run.finished_at >= run.started_at).toBe(true);
    const listed = await env.request('GET', '/api/agents/?search=ada@example', { token: env.viewer.token });
    expect(listed.status, listed.text).toBe(200);
    expect(listed.body.results.map((c: { email: string }) => c.email)).toEqual(['ada@example.com']);
    const ada = await contactByEmail(env, env.orgA, 'ada@example.com');
    expect(ada).toMatchObject({ name: 'Ada Lovelace', company: 'Analytical Engines', city: 'London', title: 'Mathematician' });
    expect(JSON.parse(ada!.tags)).toEqual(['vip', 'math']);
    expect(JSON.parse(ada!.custom_fields)).toEqual({ notes: 'first' });

    const shown = await env.request('GET', `/api/v1/data_sources/${src.id}`, { token: env.owner.token });
    expect(shown.body.last_run).toMatchObject({ id: run.id, status: 'succeeded' });

    // Second import: same e-mails (one in another case), new values.
    await upload(env, src.id, 'Full Name,E-mail,Company Name\nAda King,ADA@example.com,Babbage & Co\nNew Person,new@example.com,Newco\n');
    const second = await startAndRun(env, { data_source_id: src.id });
    expect(second).toMatchObject({ status: 'succeeded', created_count: 1, updated_count: 1, error_count: 0 });
    expect(await contactByEmail(env, env.orgA, 'ada@example.com')).toMatchObject({ name: 'Ada King', company: 'Babbage & Co' });
    const all = await env.db.kysely.selectFrom('contacts').select('id').where('organization_id', '=', env.orgA).where('email_normalized', '=', 'ada@example.com').execute();
    expect(all).toHaveLength(1);
  });

  it('reports bad rows one by one and imports the rest (huge cells, formulas, quotes, column counts)', async () => {
    const src = await createSource(env);
    const huge = 'x'.repeat(70 * 1024);
    const csv = [
      'name,email,company',
      'Good One,good1@example.com,"=HYPERLINK(""http://evil.example"",""click"")"',
      'No Email,,Nowhere',
      `${'N'.repeat(250)},long-name@example.com,Nowhere`,
      'Wrong,count',
      ',,',
      `Huge,huge@example.com,${huge}`,
      '"Broken quote,broken@example.com,Nowhere',
      'Good Two,good2@example.com,+1-555-formula',
      '@SUM(A1),good3@example.com,-2+3',
    ].join('\r\n');
    await upload(env, src.id, csv);
    const run = await startAndRun(env, { data_source_id: src.id });
    expect(run).toMatchObject({ status: 'succeeded', rows_processed: 9, created_count: 3, skipped_count: 1, error_count: 5, errors_stored: 5 });
    const byRow = Object.fromEntries(run.errors.map((e: { row_number: number; message: string; raw: string }) => [e.row_number, e]));
    expect(Object.keys(byRow).map(Number).sort((a, b) => a - b)).toEqual([3, 4, 5, 7, 8]);
    expect(byRow[3].message).toMatch(/No e-mail/);
    expect(byRow[3].raw).toBe('No Email,,Nowhere');
    expect(byRow[4].message).toMatch(/^name: /);
    expect(byRow[4].raw).toMatch(/^N{250},long-name@example\.com,Nowhere$/);
    expect(byRow[5].message).toMatch(/Expected 3 columns, found 2/);
    expect(byRow[7].message).toMatch(/larger than 64 KB/);
    expect(byRow[7].raw.length).toBeLessThanOrEqual(500);
    expect(byRow[8].message).toMatch(/quote/i);
    // Formula-looking cells are stored as the text they are.
    expect((await contactByEmail(env, env.orgA, 'good1@example.com'))!.company).toBe('=HYPERLINK("http://evil.example","click")');
    expect((await contactByEmail(env, env.orgA, 'good2@example.com'))!.company).toBe('+1-555-formula');
    expect((await contactByEmail(env, env.orgA, 'good3@example.com'))).toMatchObject({ name: '@SUM(A1)', company: '-2+3' });
    expect(await contactByEmail(env, env.orgA, 'huge@example.com')).toBeUndefined();
  });

  it('keeps the first 1000 errors, counts them all, and pages through them', async () => {
    const src = await createSource(env);
    const lines = ['name,email'];
    for (let i = 0; i < 1200; i++) lines.push(`Bad ${i},`);
    lines.push('Fine,fine@example.com');
    await upload(env, src.id, lines.join('\n'));
    const run = await startAndRun(env, { data_source_id: src.id });
    expect(run).toMatchObject({ status: 'succeeded', rows_processed: 1201, created_count: 1, error_count: 1200, errors_stored: 1000 });
    expect(run.errors).toHaveLength(100);
    expect(run.errors[0]).toMatchObject({ row_number: 2, raw: 'Bad 0,', message: 'No e-mail address: contacts are matched by e-mail' });
    const page = await env.request('GET', `/api/v1/data_source_runs/${run.id}?errors_offset=990&errors_limit=50`, { token: env.viewer.token });
    expect(page.body.errors).toHaveLength(10);
    expect(page.body.errors[9].row_number).toBe(1001);
    const none = await env.request('GET', `/api/v1/data_source_runs/${run.id}?errors_limit=0`, { token: env.owner.token });
    expect(none.body.errors).toEqual([]);
    expectError(await env.request('GET', `/api/v1/data_source_runs/${run.id}?errors_limit=5000`, { token: env.owner.token }), 400);
  });

  it('imports a 20 000-row file with the right counts', { timeout: 180_000 }, async () => {
    const src = await createSource(env, { name: 'Big' });
    const lines = ['email,name,city,tags'];
    for (let i = 0; i < 20_000; i++) lines.push(`user${i}@bulk.example.com,User ${i},City ${i % 50},"t${i % 3},all"`);
    const body = lines.join('\n') + '\n';
    const up = await upload(env, src.id, body);
    expect(up.body.row_estimate).toBe(20_000);
    const run = await startAndRun(env, { data_source_id: src.id });
    expect(run).toMatchObject({ status: 'succeeded', rows_processed: 20_000, rows_total: 20_000, created_count: 20_000, updated_count: 0, error_count: 0, skipped_count: 0, progress: 100, bytes_read: Buffer.byteLength(body) });
    const n = await env.db.kysely.selectFrom('contacts').select((eb) => eb.fn.countAll().as('n')).where('organization_id', '=', env.orgA).where('email_normalized', 'like', '%@bulk.example.com').executeTakeFirstOrThrow();
    expect(Number(n.n)).toBe(20_000);
    expect(await contactByEmail(env, env.orgA, 'user19999@bulk.example.com')).toMatchObject({ name: 'User 19999', city: 'City 49' });
  });

  it('reads files without a header, by column_N', async () => {
    const src = await createSource(env, { options: { has_header: false } });
    await upload(env, src.id, 'Zed One\tzed1@example.com\nZed Two\tzed2@example.com\n');
    const preview = await env.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: env.owner.token, body: {} });
    expect(preview.body).toMatchObject({ delimiter: '\t', columns: ['column_1', 'column_2'], proposed_field_mapping: { column_2: 'email' } });
    const run = await startAndRun(env, { data_source_id: src.id, field_mapping: { column_1: 'name', column_2: 'email' } });
    expect(run).toMatchObject({ status: 'succeeded', rows_processed: 2, created_count: 2, options: { delimiter: '\t', has_header: false } });
    expect(await contactByEmail(env, env.orgA, 'zed2@example.com')).toMatchObject({ name: 'Zed Two' });
  });

  it('recovers from a quote that is never closed: the line is reported, the rows after it are imported', async () => {
    const src = await createSource(env);
    const pad = 'p'.repeat(180);
    const lines = ['email,name,notes', 'runaway@example.com,"Runaway,never closed'];
    for (let i = 0; i < 6000; i++) lines.push(`after${i}@example.com,After ${i},${pad}`);
    await upload(env, src.id, lines.join('\n') + '\n');
    const run = await startAndRun(env, { data_source_id: src.id, field_mapping: { email: 'email', name: 'name' } });
    expect(run).toMatchObject({ status: 'succeeded', rows_processed: 6001, created_count: 6000, error_count: 1 });
    expect(run.errors[0]).toMatchObject({ row_number: 2, raw: 'runaway@example.com,"Runaway,never closed' });
    expect(run.errors[0].message).toMatch(/quote/i);
    expect(await contactByEmail(env, env.orgA, 'after0@example.com')).toMatchObject({ name: 'After 0' });
    expect(await contactByEmail(env, env.orgA, 'runaway@example.com')).toBeUndefined();
  }, 120_000);

  it('refuses runs that cannot start, writing nothing', async () => {
    const src = await createSource(env);
    await upload(env, src.id, SAMPLE);
    const noFile = await createSource(env);
    const cases: [Record<string, unknown>, number, string | null][] = [
      [{}, 400, 'data_source_id'],
      [{ data_source_id: 'dsrc_00000000000000000000000000' }, 404, null],
      [{ data_source_id: noFile.id }, 400, 'data_source_id'],
      [{ data_source_id: src.id, field_mapping: { 'E-mail': 'email', City: 'planet' } }, 400, 'field_mapping.City'],
      [{ data_source_id: src.id, field_mapping: { 'E-mail': 'email', Mobile: 'phone' } }, 400, 'field_mapping.Mobile'],
      [{ data_source_id: src.id, field_mapping: { 'Full Name': 'name' } }, 400, 'field_mapping'],
    ];
    const before = await env.db.kysely.selectFrom('data_source_runs').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    for (const [body, status, field] of cases) {
      const res = await env.request('POST', '/api/v1/data_source_runs', { token: env.owner.token, body });
      expectError(res, status);
      if (field) expect(Object.keys(res.body.details), JSON.stringify(body)).toContain(field);
    }
    const after = await env.db.kysely.selectFrom('data_source_runs').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));
    expectError(await env.request('POST', '/api/v1/data_source_runs', { token: env.viewer.token, body: { data_source_id: src.id } }), 403);
    expectError(await env.request('GET', '/api/v1/data_source_runs/dsr_nope', { token: env.owner.token }), 404);
  });

  it('queues one job per run, one import per data source at a time, and lists runs', async () => {
    const src = await createSource(env);
    await upload(env, src.id, SAMPLE);
    const a = await env.request('POST', '/api/v1/data_source_runs', { token: env.owner.token, body: { data_source_id: src.id } });
    const b = await env.request('POST', '/api/v1/data_source_runs', { token: env.owner.token, body: { data_source_id: src.id } });
    const jobs = await env.db.kysely.selectFrom('jobs').select(['type', 'concurrency_key', 'concurrency_limit', 'payload', 'organization_id'])
      .where('concurrency_key', '=', `data_source:${src.id}`).execute();
    expect(jobs).toHaveLength(2);
    expect(jobs.every((j) => j.type === 'data_source.import' && j.concurrency_limit === 1 && j.organization_id === env.orgA)).toBe(true);
    const list = await env.request('GET', `/api/v1/data_source_runs?data_source_id=${src.id}&status=queued`, { token: env.viewer.token });
    expect(list.body.results.map((r: { id: string }) => r.id)).toEqual([b.body.id, a.body.id]);
    await runUntilIdle(env.app.deps);
    for (const r of [a, b]) {
      expect((await env.request('GET', `/api/v1/data_source_runs/${r.body.id}`, { token: env.owner.token })).body.status).toBe('succeeded');
    }
  });

  it('deleting a data source removes its runs and file; a queued run then does nothing', async () => {
    const src = await createSource(env);
    await upload(env, src.id, SAMPLE);
    const run = await env.request('POST', '/api/v1/data_source_runs', { token: env.owner.token, body: { data_source_id: src.id } });
    expect((await env.request('DELETE', `/api/v1/data_sources/${src.id}`, { token: env.owner.token })).status).toBe(200);
    expect(existsSync(uploadPath(env.app.deps, env.orgA, src.id))).toBe(false);
    expectError(await env.request('GET', `/api/v1/data_source_runs/${run.body.id}`, { token: env.owner.token }), 404);
    await runUntilIdle(env.app.deps);
    const job = await env.db.kysely.selectFrom('jobs').select(['status']).where('id', '=', (await env.db.kysely.selectFrom('jobs').select('id').where('payload', 'like', `%${run.body.id}%`).executeTakeFirstOrThrow()).id).executeTakeFirstOrThrow();
    expect(job.status).toBe('succeeded');
  });
});

describe('data sources from a URL', () => {
  let server: Server;
  let base: string;
  const hits: string[] = [];
  const CSV = 'Email,Name\nurl1@example.com,Url One\nurl2@example.com,Url Two\n';
  beforeAll(async () => {
    server = createServer((req, res) => {
      hits.push(req.url ?? '');
      if (req.url === '/contacts.csv') { res.writeHead(200, { 'content-type': 'text/csv', 'content-length': Buffer.byteLength(CSV) }); res.end(CSV); return; }
      if (req.url === '/to-metadata') { res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }); res.end(); return; }
      if (req.url === '/binary') { res.writeHead(200, { 'content-type': 'application/pdf' }); res.end(Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(10000)])); return; }
      res.writeHead(404); res.end('no');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => { await new Promise((r) => server.close(r)); });

  it('refuses a local URL unless it is allowlisted', async () => {
    const res = await env.request('POST', '/api/v1/data_sources', { token: env.owner.token, body: { name: 'Local', type: 'csv_url', url: `${base}/contacts.csv` } });
    expectError(res, 400);
    expect(res.body.details.url).toMatch(/loopback/);
    expect(hits).toEqual([]);
  });

  it('imports from an allowlisted local server; refuses redirects to private addresses and non-CSV content', async () => {
    const local = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
    try {
      const src = await createSource(local, { type: 'csv_url', url: `${base}/contacts.csv` });
      expect(src).toMatchObject({ type: 'csv_url', url: `${base}/contacts.csv`, row_estimate: null });
      const preview = await local.request('POST', `/api/v1/data_sources/${src.id}/preview`, { token: local.owner.token, body: {} });
      expect(preview.status, preview.text).toBe(200);
      expect(preview.body).toMatchObject({ columns: ['Email', 'Name'], proposed_field_mapping: { Email: 'email', Name: 'name' } });
      const run = await startAndRun(local, { data_source_id: src.id });
      expect(run).toMatchObject({ status: 'succeeded', rows_processed: 2, created_count: 2, bytes_total: CSV.length, progress: 100 });
      expect(await contactByEmail(local, local.orgA, 'url2@example.com')).toMatchObject({ name: 'Url Two' });

      const redirect = await createSource(local, { type: 'csv_url', url: `${base}/to-metadata` });
      const rp = await local.request('POST', `/api/v1/data_sources/${redirect.id}/preview`, { token: local.owner.token, body: {} });
      expectError(rp, 400);
      expect(rp.body.details.url).toMatch(/169\.254\.169\.254/);
      const failed = await startAndRun(local, { data_source_id: redirect.id, field_mapping: { Email: 'email' } });
      expect(failed.status).toBe('failed');
      expect(failed.failure_reason).toMatch(/169\.254\.169\.254/);
      expect(failed.finished_at).toBeTruthy();

      const pdf = await createSource(local, { type: 'csv_url', url: `${base}/binary` });
      const pp = await local.request('POST', `/api/v1/data_sources/${pdf.id}/preview`, { token: local.owner.token, body: {} });
      expectError(pp, 400);
      expect(pp.body.details.url).toMatch(/PDF/);
      const pr = await startAndRun(local, { data_source_id: pdf.id, field_mapping: { Email: 'email' } });
      expect(pr).toMatchObject({ status: 'failed', rows_processed: 0 });
      expect(pr.failure_reason).toMatch(/PDF/);

      const missing = await createSource(local, { type: 'csv_url', url: `${base}/gone.csv` });
      const mp = await local.request('POST', `/api/v1/data_sources/${missing.id}/preview`, { token: local.owner.token, body: {} });
      expectError(mp, 400);
      expect(mp.body.details.url).toMatch(/404/);
      const mr = await startAndRun(local, { data_source_id: missing.id, field_mapping: { Email: 'email' } });
      expect(mr).toMatchObject({ status: 'failed', created_count: 0 });
      expect(mr.failure_reason).toMatch(/404/);

      // Changing the URL goes through the guard too.
      const patched = await local.request('PATCH', `/api/v1/data_sources/${src.id}`, { token: local.owner.token, body: { url: 'http://10.1.2.3/x.csv' } });
      expectError(patched, 400);
      expect(patched.body.details.url).toMatch(/private/);
    } finally {
      await closeEnv(local);
    }
  });
});

describe('CLI: import contacts', { timeout: 180_000 }, () => {
  const run = promisify(execFile);
  const dir = mkdtempSync(join(tmpdir(), 'agentry-import-'));
  const dbPath = join(dir, 'cli.db');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  async function cli(args: string[]) {
    try {
      const r = await run(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], { env: { ...process.env, DATA_DIR: dir, DATABASE_URL: dbPath }, timeout: 120_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  it('exits 2 with the usage on bad arguments or a missing file', async () => {
    const file = join(dir, 'x.csv');
    writeFileSync(file, 'email\na@example.com\n');
    const cases = [
      ['import'], ['import', 'deals', file, '--org-id', 'org_x'], ['import', 'contacts', '--org-id', 'org_x'], ['import', 'contacts', file],
      ['import', 'contacts', join(dir, 'missing.csv'), '--org-id', 'org_x'], ['import', 'contacts', file, '--org-id', 'org_x', '--mapping', '{nope'],
      ['import', 'contacts', file, '--org-id', 'org_x', '--mapping', '{"email":"shoe_size"}'], ['import', 'contacts', file, '--org-id', 'org_x', '--delimiter', '::'],
      ['import', 'contacts', file, '--org-id', 'org_x', '--frobnicate'], ['import', 'contacts', file, '--org-id', 'org_missing'],
    ];
    const results = await Promise.all(cases.map((args) => cli(args)));
    results.forEach((r, i) => {
      expect(r.code, cases[i].join(' ')).toBe(2);
      expect(r.stderr, cases[i].join(' ')).toContain('Usage: agentry <command>');
    });
    expect(results[4].stderr).toContain('No such file');
    expect(results[6].stderr).toContain('shoe_size');
  }, 120_000);

  it('imports a file through a data source and a run, printing progress lines and a summary', async () => {
    const org = await cli(['create-org', '--name', 'Importers']);
    const orgId = /\((org_[A-Z0-9]+)\)/.exec(org.stdout)![1];
    const file = join(dir, 'people.csv');
    const lines = ['Email Address;Full Name;Town'];
    for (let i = 0; i < 1500; i++) lines.push(`cli${i}@example.com;Cli ${i};Town ${i % 7}`);
    lines.push(';Broken;Nowhere');
    writeFileSync(file, lines.join('\n') + '\n');
    const r = await cli(['import', 'contacts', file, '--org-id', orgId, '--mapping', '{"Email Address":"email","Full Name":"name","Town":"city"}']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^progress: /m);
    expect(r.stdout).toContain('1501 rows, 1500 created, 0 updated, 0 skipped, 1 errors');
    expect(r.stdout).toMatch(/row 1502: No e-mail address/);

    const db = await openDatabase({ url: dbPath });
    try {
      await migrate(db);
      const n = await db.kysely.selectFrom('contacts').select((eb) => eb.fn.countAll().as('n')).where('organization_id', '=', orgId).executeTakeFirstOrThrow();
      expect(Number(n.n)).toBe(1500);
      const c = await db.kysely.selectFrom('contacts').select(['name', 'city']).where('email_normalized', '=', 'cli42@example.com').executeTakeFirstOrThrow();
      expect(c).toEqual({ name: 'Cli 42', city: 'Town 0' });
      const sources = await db.kysely.selectFrom('data_sources').select(['name', 'type', 'file_name']).where('organization_id', '=', orgId).execute();
      expect(sources).toEqual([{ name: 'Import of people.csv', type: 'csv_upload', file_name: 'people.csv' }]);
    } finally {
      await db.close();
    }

    const again = await cli(['import', 'contacts', file, '--org-id', orgId, '--delimiter', 'semicolon']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('1501 rows, 0 created, 1500 updated');
  }, 180_000);
});
