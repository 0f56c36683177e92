import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { renderTemplate, TemplateError } from '../src/services/email_templates.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const BASE = '/api/email-templates/';
const create = (body: unknown, token = env.member.token) => env.request('POST', BASE, { token, body });
const count = async () => (await env.request('GET', BASE, { token: env.owner.token })).body.count as number;

describe('e-mail templates', () => {
  it('creates with the documented body, shows, lists, replaces and deletes', async () => {
    const body = { name: 'Welcome Email', subject: 'Welcome to FireGlue', html_content: '<p>Welcome to our platform!</p>', text_content: 'Welcome to our platform!' };
    const created = await create(body);
    expect(created.status).toBe(201);
    expect(Object.keys(created.body).sort()).toEqual(['created_at', 'html_content', 'id', 'name', 'subject', 'text_content', 'text_content_generated', 'updated_at']);
    expect(created.body).toMatchObject({ ...body, text_content_generated: false });
    expect(created.body.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    const id = created.body.id as string;

    const shown = await env.request('GET', `${BASE}${id}/`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(created.body);

    const listed = await env.request('GET', BASE, { token: env.viewerKey });
    expect(listed.status).toBe(200);
    expect(listed.body).toMatchObject({ previous: null });
    expect(listed.body.results.find((t: { id: string }) => t.id === id)).toEqual(created.body);

    const replacement = { name: 'Updated Welcome Email', subject: 'Welcome to FireGlue', html_content: '<p>Welcome to our platform!</p>', text_content: 'Welcome to our platform!' };
    const replaced = await env.request('PUT', `${BASE}${id}/`, { token: env.member.token, body: replacement });
    expect(replaced.status).toBe(200);
    expect(replaced.body).toMatchObject({ id, ...replacement, text_content_generated: false, created_at: created.body.created_at });
    expect(replaced.body.updated_at >= created.body.updated_at).toBe(true);

    const deleted = await env.request('DELETE', `${BASE}${id}/`, { token: env.member.token });
    expect(deleted.status).toBe(204);
    expect(deleted.text).toBe('');
    expectError(await env.request('GET', `${BASE}${id}/`, { token: env.member.token }), 404);
    expectError(await env.request('DELETE', `${BASE}${id}/`, { token: env.member.token }), 404);
  });

  it('generates text_content from the HTML when it is missing or empty, and again on a PUT without it', async () => {
    const html = '<h1>Hello {{ contact.first_name }}</h1><p>Thanks for joining <b>{{ organization.name }}</b>.</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>';
    const missing = await create({ name: 'Generated 1', subject: 'Hi', html_content: html });
    expect(missing.status).toBe(201);
    expect(missing.body.text_content_generated).toBe(true);
    expect(missing.body.text_content).toContain('Hello {{ contact.first_name }}');
    expect(missing.body.text_content).toContain('Thanks for joining {{ organization.name }}.');
    expect(missing.body.text_content).toContain('Unsubscribe [{{ unsubscribe_url }}]');
    expect(missing.body.text_content).not.toContain('<');

    const empty = await create({ name: 'Generated 2', subject: 'Hi', html_content: '<p>Plain</p>', text_content: '' });
    expect(empty.body).toMatchObject({ text_content: 'Plain', text_content_generated: true });
    const nulled = await create({ name: 'Generated 3', subject: 'Hi', html_content: '<p>Plain</p>', text_content: null });
    expect(nulled.body).toMatchObject({ text_content: 'Plain', text_content_generated: true });

    const own = await env.request('PUT', `${BASE}${missing.body.id}/`, { token: env.member.token, body: { name: 'Generated 1', subject: 'Hi', html_content: html, text_content: 'My own text' } });
    expect(own.body).toMatchObject({ text_content: 'My own text', text_content_generated: false });
    const again = await env.request('PUT', `${BASE}${missing.body.id}/`, { token: env.member.token, body: { name: 'Generated 1', subject: 'Hi', html_content: '<p>New body</p>' } });
    expect(again.body).toMatchObject({ text_content: 'New body', text_content_generated: true });
  });

  it('rejects Liquid syntax errors naming the field and the line, writing nothing', async () => {
    const before = await count();
    const html = await create({ name: 'Broken', subject: 'Hi', html_content: '<p>one</p>\n<p>two</p>\n{% if contact.first_name %}never closed' });
    expectError(html, 400);
    expect(html.body.details).toEqual({ html_content: expect.stringMatching(/^line 3: .*not closed/) });

    const several = await create({ name: 'Broken', subject: 'Hi {{ contact.name | shout }}', html_content: '<p>ok</p>', text_content: 'a\n{{ contact.name' });
    expectError(several, 400);
    expect(several.body.details.subject).toMatch(/^line 1: .*undefined filter: shout/);
    expect(several.body.details.text_content).toMatch(/^line 2: .*not closed/);
    expect(several.body.details).not.toHaveProperty('html_content');

    // No file system behind templates: include, render and layout are not tags here.
    const include = await create({ name: 'Broken', subject: 'Hi', html_content: '{% include "package.json" %}' });
    expectError(include, 400);
    expect(include.body.details.html_content).toMatch(/^line 1: .*include/);
    expect(await count()).toBe(before);
  });

  it('validates the body: required fields, one-line subject, sizes', async () => {
    const before = await count();
    const missing = await create({ subject: 'Hi' });
    expectError(missing, 400);
    expect(missing.body.details).toHaveProperty('name');
    expect(missing.body.details).toHaveProperty('html_content');
    const blankName = await create({ name: '  ', subject: 'Hi', html_content: '<p>x</p>' });
    expect(blankName.body.details).toHaveProperty('name');
    const twoLines = await create({ name: 'x', subject: 'Hi\r\nBcc: someone@example.com', html_content: '<p>x</p>' });
    expectError(twoLines, 400);
    expect(twoLines.body.details).toHaveProperty('subject');
    const wrongType = await create({ name: 'x', subject: 'Hi', html_content: 42 });
    expectError(wrongType, 400);
    expect(wrongType.body.details).toHaveProperty('html_content');
    const huge = await create({ name: 'x', subject: 'Hi', html_content: 'x'.repeat(500_001) });
    expectError(huge, 400);
    expect(huge.body.details).toHaveProperty('html_content');
    expect(await count()).toBe(before);
  });

  it('keeps names unique per organization (409), on create and on rename', async () => {
    const a = await create({ name: 'Unique name', subject: 'Hi', html_content: '<p>a</p>' });
    expect(a.status).toBe(201);
    const dup = await create({ name: 'Unique name', subject: 'Hi', html_content: '<p>b</p>' });
    expectError(dup, 409);
    expect(dup.body.details).toHaveProperty('name');
    // Another organization may use the same name.
    expect((await create({ name: 'Unique name', subject: 'Hi', html_content: '<p>b</p>' }, env.otherOwner.token)).status).toBe(201);

    const b = await create({ name: 'Other name', subject: 'Hi', html_content: '<p>b</p>' });
    const rename = await env.request('PUT', `${BASE}${b.body.id}/`, { token: env.member.token, body: { name: 'Unique name', subject: 'Hi', html_content: '<p>b</p>' } });
    expectError(rename, 409);
    expect((await env.request('GET', `${BASE}${b.body.id}/`, { token: env.member.token })).body.name).toBe('Other name');
  });

  it('PUT is a full replacement: 404 for an unknown id first, then 400 for an incomplete body, nothing changed', async () => {
    expectError(await env.request('PUT', `${BASE}etp_missing/`, { token: env.member.token, body: {} }), 404);
    expectError(await env.request('PUT', `${BASE}etp_missing/`, { token: env.member.token, body: { name: 'x', subject: 'x', html_content: '<p>x</p>' } }), 404);
    const t = await create({ name: 'Replace me', subject: 'Hi', html_content: '<p>x</p>', text_content: 'x' });
    const partial = await env.request('PUT', `${BASE}${t.body.id}/`, { token: env.member.token, body: { name: 'Only a name' } });
    expectError(partial, 400);
    expect(partial.body.details).toHaveProperty('subject');
    expect(partial.body.details).toHaveProperty('html_content');
    const broken = await env.request('PUT', `${BASE}${t.body.id}/`, { token: env.member.token, body: { name: 'Replace me', subject: 'Hi', html_content: '<p>{{ x | nope }}</p>' } });
    expectError(broken, 400);
    expect(broken.body.details.html_content).toMatch(/^line 1: /);
    expect((await env.request('GET', `${BASE}${t.body.id}/`, { token: env.member.token })).body).toEqual(t.body);
  });

  it('previews with sample data: HTML output escaped, subject and text not', async () => {
    const t = await create({
      name: 'Preview me',
      subject: 'Hello {{ contact.first_name }} from {{ organization.name }}',
      html_content: '<p>Hi {{ contact.name }} ({{ contact.email }}) of {{ contact.company }} in {{ contact.city }}</p>\n<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    });
    const sample = await env.request('POST', `${BASE}${t.body.id}/preview/`, { token: env.viewer.token });
    expect(sample.status).toBe(200);
    expect(Object.keys(sample.body).sort()).toEqual(['html_content', 'subject', 'text_content']);
    expect(sample.body.subject).toBe('Hello Jane from Org A');
    expect(sample.body.html_content).toMatch(/^<p>Hi Jane Doe \(jane\.doe@example\.com\) of Acme Corp in Springfield<\/p>\n<a href="http[^"]+unsubscribe[^"]*">Unsubscribe<\/a>$/);
    expect(sample.body.text_content).toContain('Hi Jane Doe (jane.doe@example.com) of Acme Corp in Springfield');
    expect(sample.body.text_content).not.toContain('{{');

    const data = { contact: { first_name: 'Bob <3', name: '<b>Bob</b>', email: 'b@example.com', company: 'A&B', city: 'X' }, organization: { name: 'Org' }, unsubscribe_url: 'https://u.example/x?a=1&b=2' };
    const given = await env.request('POST', `${BASE}${t.body.id}/preview/`, { token: env.viewer.token, body: { data } });
    expect(given.status).toBe(200);
    expect(given.body.subject).toBe('Hello Bob <3 from Org');
    expect(given.body.html_content).toContain('Hi &lt;b&gt;Bob&lt;/b&gt; (b@example.com) of A&amp;B in X');
    expect(given.body.html_content).toContain('href="https://u.example/x?a=1&amp;b=2"');
    // The generated text is made from the rendered HTML, so it reads the values as given.
    expect(given.body.text_content).toContain('Hi <b>Bob</b> (b@example.com) of A&B in X');

    const own = await create({ name: 'Preview own text', subject: 'S', html_content: '<p>{{ contact.name }}</p>', text_content: 'Dear {{ contact.name }},\n{{ contact.name | upcase }}' });
    const ownPreview = await env.request('POST', `${BASE}${own.body.id}/preview/`, { token: env.member.token, body: { data: { contact: { name: 'A<b' } } } });
    expect(ownPreview.body).toEqual({ subject: 'S', html_content: '<p>A&lt;b</p>', text_content: 'Dear A<b,\nA<B' });
  });

  it('answers 400 for rendering errors in a preview, naming the field and the line', async () => {
    const t = await create({ name: 'Strict', subject: 'Hi {{ contact.first_name }}', html_content: '<p>ok</p>\n<p>{{ contact.nickname }}</p>', text_content: '{% if contact.vip %}VIP{% endif %}{{ contact.first_name | default: "friend" }}' });
    expect(t.status).toBe(201);
    const res = await env.request('POST', `${BASE}${t.body.id}/preview/`, { token: env.member.token });
    expectError(res, 400);
    expect(res.body.details).toEqual({ html_content: expect.stringMatching(/^line 2: undefined variable: contact\.nickname/) });

    const subjectToo = await env.request('POST', `${BASE}${t.body.id}/preview/`, { token: env.member.token, body: { data: { contact: {} } } });
    expectError(subjectToo, 400);
    expect(subjectToo.body.details.subject).toMatch(/^line 1: undefined variable: contact\.first_name/);
    expect(subjectToo.body.details.html_content).toMatch(/^line 2: /);
    // Optional values may be tested with if / default without an error.
    expect(subjectToo.body.details).not.toHaveProperty('text_content');

    const ok = await env.request('POST', `${BASE}${t.body.id}/preview/`, { token: env.member.token, body: { data: { contact: { first_name: 'Al', nickname: 'Ally' } } } });
    expect(ok.status).toBe(200);
    expect(ok.body.text_content).toBe('Al');

    const badData = await env.request('POST', `${BASE}${t.body.id}/preview/`, { token: env.member.token, body: { data: 'nope' } });
    expectError(badData, 400);
    expect(badData.body.details).toHaveProperty('data');
    expectError(await env.request('POST', `${BASE}etp_missing/preview/`, { token: env.member.token }), 404);
  });

  it('bounds what a template may cost to render (400, not a hang or a 500)', async () => {
    const t = await create({ name: 'Expensive', subject: 'x', html_content: '{% for i in (1..100000000) %}{{ i }}{% endfor %}' });
    expect(t.status).toBe(201);
    const res = await env.request('POST', `${BASE}${t.body.id}/preview/`, { token: env.member.token });
    expectError(res, 400);
    expect(res.body.details.html_content).toMatch(/^line 1: /);
  });

  it('lists page by page and filters by name', async () => {
    for (const name of ['Page A', 'Page B', 'Page C']) await create({ name, subject: 'x', html_content: '<p>x</p>' });
    const first = await env.request('GET', `${BASE}?page_size=2&search=page `, { token: env.member.token });
    expect(first.body.count).toBe(3);
    expect(first.body.results.map((t: { name: string }) => t.name)).toEqual(['Page C', 'Page B']);
    expect(first.body.next).toMatch(/^http:\/\/[^/]+\/api\/email-templates\/\?.*page=2/);
    const second = await env.request('GET', new URL(first.body.next).pathname + new URL(first.body.next).search, { token: env.member.token });
    expect(second.body.results.map((t: { name: string }) => t.name)).toEqual(['Page A']);
  });

  it("keeps each organization's templates to itself (404, never 403)", async () => {
    const b = await create({ name: 'B secret', subject: 'x', html_content: '<p>x</p>' }, env.otherOwner.token);
    const listA = await env.request('GET', `${BASE}?page_size=100`, { token: env.owner.token });
    expect(listA.body.results.map((t: { id: string }) => t.id)).not.toContain(b.body.id);
    const url = `${BASE}${b.body.id}/`;
    expectError(await env.request('GET', url, { token: env.owner.token }), 404);
    expectError(await env.request('PUT', url, { token: env.owner.token, body: { name: 'taken', subject: 'x', html_content: '<p>x</p>' } }), 404);
    expectError(await env.request('POST', `${url}preview/`, { token: env.owner.token }), 404);
    expectError(await env.request('DELETE', url, { token: env.owner.token }), 404);
    expect((await env.request('GET', url, { token: env.otherOwner.token })).body.name).toBe('B secret');
  });

  it('needs outreach:write to change templates; viewers read', async () => {
    const t = await create({ name: 'Perm', subject: 'x', html_content: '<p>x</p>' });
    expectError(await create({ name: 'Viewer', subject: 'x', html_content: '<p>x</p>' }, env.viewer.token), 403);
    expectError(await env.request('PUT', `${BASE}${t.body.id}/`, { token: env.viewerKey, body: { name: 'x', subject: 'x', html_content: 'x' } }), 403);
    expectError(await env.request('DELETE', `${BASE}${t.body.id}/`, { token: env.viewer.token }), 403);
    expectError(await env.request('GET', BASE), 401);
    expect((await env.request('GET', `${BASE}${t.body.id}/`, { token: env.viewerKey })).status).toBe(200);
  });
});

describe('renderTemplate (used by deliveries)', () => {
  it('renders the three parts and flattens the subject to one line', async () => {
    const out = await renderTemplate({ subject: '{{ a }}\n{{ b }}', html_content: '<p>{{ a }}</p>', text_content: '{{ a }}!' }, { a: 'x<y', b: 'z' });
    expect(out).toEqual({ subject: 'x<y z', html_content: '<p>x&lt;y</p>', text_content: 'x<y!' });
  });

  it('escapes HTML output once, also where the template asks for | escape; | raw is not escaped', async () => {
    const out = await renderTemplate({ subject: 's', html_content: '{{ a }}|{{ a | escape }}|{{ a | escape_once }}|{{ a | raw }}' }, { a: '<i>&' });
    expect(out.html_content).toBe('&lt;i&gt;&amp;|&lt;i&gt;&amp;|&lt;i&gt;&amp;|<i>&');
  });

  it('throws a TemplateError whose details name the field and line', async () => {
    const err = await renderTemplate({ subject: 's', html_content: 'a\nb\n{{ missing }}' }, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TemplateError);
    expect((err as TemplateError).status).toBe(400);
    expect((err as TemplateError).details).toEqual({ html_content: 'line 3: undefined variable: missing' });
  });
});
