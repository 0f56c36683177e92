import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue, runUntilIdle } from '../src/engine/queue.js';
import { flagTuning, recheckContacts, RECHECK_JOB, searchTuning, upsertContacts } from '../src/services/contacts.js';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { startDnsServer, type TestDnsServer } from './dns-server.js';

let env: TestEnv;
let dns: TestDnsServer;

const mx = (exchange: string) => ({ MX: [{ exchange, priority: 10 }] });

beforeAll(async () => {
  dns = await startDnsServer({
    'gw.test': mx('aspmx.l.google.com'),
    'm365.test': mx('corp.mail.protection.outlook.com'),
    'yahoo.test': mx('mta7.am0.yahoodns.net'),
    'gate.test': mx('eu-smtp-inbound-1.mimecast.com'),
    'own.test': mx('mail.own.test'),
    'nomx.test': { TXT: ['v=spf1 -all'] },
    'mailinator.com': mx('mail.mailinator.com'),
  });
  dns.silent.add('slow.test');
  env = await createTestEnv({ dnsServers: [dns.server] });
});
afterAll(async () => { await env?.close(); await dns?.close(); });

const post = (body: unknown, token = env.owner.token) => env.request('POST', '/api/agents/', { token, body });
const list = (query = '', token = env.owner.token) => env.request('GET', `/api/agents/${query}`, { token });
const uniq = () => Math.random().toString(36).slice(2, 10);

async function create(body: Record<string, unknown>) {
  const res = await post(body);
  if (res.status !== 201) throw new Error(`create failed: ${res.status} ${res.text}`);
  return res.body;
}

describe('POST /api/agents/', () => {
  it('creates a contact and derives validity, ESP, ESG and flags from DNS', async () => {
    const res = await post({
      name: 'Ada Lovelace', email: 'Ada.Lovelace@GW.test', phone: '+44 20 7946 0000', company: 'Analytical', title: 'Engineer',
      city: 'London', state: 'LDN', country: 'UK', tags: ['vip', 'vip', 'math'], custom_fields: { plan: 'pro', seats: 3, trial: false },
      source: 'manual', lead_score: 87, lead_score_reasons: ['opened 3 e-mails'],
    });
    expect(res.status).toBe(201);
    const c = res.body;
    expect(c.id).toMatch(/^ctc_[0-9A-Z]{26}$/);
    expect(c).toMatchObject({
      name: 'Ada Lovelace', email: 'Ada.Lovelace@GW.test', city: 'London', tags: ['vip', 'math'],
      custom_fields: { plan: 'pro', seats: 3, trial: false }, lead_score: 87, lead_score_reasons: ['opened 3 e-mails'],
      unsubscribed: false, bounced: false, email_validity: 'valid', esp: 'google_workspace', esg: 'google', data_health_flags: [],
    });
    expect(c.email_checked_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(c.created_at).toBe(c.updated_at);
    const got = await env.request('GET', `/api/agents/${c.id}/`, { token: env.viewer.token });
    expect(got.status).toBe(200);
    expect(got.body).toEqual(c);
  });

  it.each([
    ['x@m365.test', 'valid', 'microsoft_365', 'microsoft', []],
    ['x@yahoo.test', 'valid', 'yahoo', 'yahoo', []],
    ['x@gate.test', 'valid', 'mimecast', 'security_gateway', []],
    ['x@own.test', 'valid', 'self_hosted', 'other', []],
    ['x@nomx.test', 'invalid', null, null, ['invalid_email', 'no_mx']],
    ['x@nowhere.test', 'invalid', null, null, ['invalid_email', 'no_mx']],
    ['info@gw.test', 'risky', 'google_workspace', 'google', ['role_account']],
    ['x@mailinator.com', 'risky', 'self_hosted', 'other', ['disposable_domain']],
  ])('%s → %s, %s, %s, %j', async (email, validity, esp, esg, flags) => {
    const c = await create({ name: 'Someone', email: email.replace('x@', `x${uniq()}@`).replace('info@', 'info@') });
    expect(c).toMatchObject({ email_validity: validity, esp, esg, data_health_flags: flags });
  });

  it('stores a malformed e-mail and flags it invalid_email (not a 400)', async () => {
    const c = await create({ name: 'Bad Address', email: 'not an e-mail' });
    expect(c).toMatchObject({ email: 'not an e-mail', email_validity: 'invalid', esp: null, esg: null, data_health_flags: ['invalid_email'] });
  });

  it('keeps unicode names and finds them by their unaccented prefix', async () => {
    const name = `Zoë Ñúñez-山田 ${uniq()} 😀`;
    const c = await create({ name, email: `zoe.${uniq()}@gw.test` });
    expect(c.name).toBe(name);
    expect((await env.request('GET', `/api/agents/${c.id}/`, { token: env.owner.token })).body.name).toBe(name);
    for (const term of ['zoe nunez', 'ZOË Ñ', name]) {
      const found = await list(`?search=${encodeURIComponent(term)}`);
      expect(found.status).toBe(200);
      expect(found.body.results.map((r: any) => r.id), term).toContain(c.id);
    }
  });

  it('flags missing_name and missing_email', async () => {
    expect((await create({ email: `anon${uniq()}@gw.test` })).data_health_flags).toEqual(['missing_name']);
    const noEmail = await create({ name: 'Phone Only', phone: '555' });
    expect(noEmail).toMatchObject({ email: null, email_validity: null, esp: null, data_health_flags: ['missing_email'] });
  });

  it('a slow DNS gives unknown (fixed later by the re-check), not a failed request', async () => {
    const c = await create({ name: 'Slow', email: `slow${uniq()}@slow.test` });
    expect(c).toMatchObject({ email_validity: 'unknown', esp: null, email_checked_at: null, data_health_flags: [] });
  });

  it('409 on an e-mail another contact has, in any case; nothing written', async () => {
    const email = `dup${uniq()}@gw.test`;
    await create({ name: 'First', email });
    const before = (await list(`?search=${email}`)).body.count;
    for (const variant of [email, email.toUpperCase(), `  ${email}  `]) {
      const res = await post({ name: 'Second', email: variant });
      expectError(res, 409);
      expect(res.body.details).toHaveProperty('email');
    }
    expect((await list(`?search=${email}`)).body.count).toBe(before);
  });

  it('concurrent creates of one e-mail: one 201, the others 409', async () => {
    const email = `race${uniq()}@gw.test`;
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => post({ name: `Racer ${i}`, email: i % 2 ? email.toUpperCase() : email })));
    expect(results.map((r) => r.status).sort()).toEqual([201, 409, 409, 409, 409, 409]);
    expect((await list(`?search=${email}`)).body.count).toBe(1);
  });

  it('400 naming the fields: wrong types, limits, empty contacts, NUL characters; nothing written', async () => {
    const before = (await list()).body.count;
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ name: 'A', email: 123 }, 'email'],
      [{ name: { first: 'A' } }, 'name'],
      [{ name: 'A', lead_score: 101 }, 'lead_score'],
      [{ name: 'A', lead_score: 2.5 }, 'lead_score'],
      [{ name: 'A', tags: 'vip' }, 'tags'],
      [{ name: 'A', tags: [''] }, 'tags.0'],
      [{ name: 'A', unsubscribed: 'yes' }, 'unsubscribed'],
      [{ name: 'x'.repeat(201) }, 'name'],
      [{ name: 'A', email: `${'a'.repeat(315)}@gw.test` }, 'email'],
      [{ name: 'A', city: 'c'.repeat(101) }, 'city'],
      [{ name: 'A', tags: Array.from({ length: 51 }, (_, i) => `t${i}`) }, 'tags'],
      [{ name: 'A', tags: ['t'.repeat(51)] }, 'tags.0'],
      [{ name: 'A', custom_fields: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 1])) }, 'custom_fields'],
      [{ name: 'A', custom_fields: { k: 'v'.repeat(2001) } }, 'custom_fields.k'],
      [{ name: 'A', custom_fields: { nested: { a: 1 } } }, 'custom_fields.nested'],
      [{ name: 'A', custom_fields: ['x'] }, 'custom_fields'],
      [{ name: 'A', lead_score_reasons: ['r'.repeat(501)] }, 'lead_score_reasons.0'],
      [{ name: 'A\u0000B' }, 'name'],
      [{}, 'name'],
      [{ name: '   ', email: '' }, 'email'],
    ];
    for (const [body, field] of cases) {
      const res = await post(body);
      expectError(res, 400);
      expect(Object.keys(res.body.details), JSON.stringify(body).slice(0, 80)).toContain(field);
    }
    const huge = await env.request('POST', '/api/agents/', { token: env.owner.token, payload: JSON.stringify({ name: 'A', company: 'x'.repeat(2 * 1024 * 1024) }), headers: { 'content-type': 'application/json' } });
    expect(huge.status).toBe(413);
    expect(typeof huge.body.error).toBe('string');
    const notObject = await env.request('POST', '/api/agents/', { token: env.owner.token, body: ['a'] });
    expectError(notObject, 400);
    expect((await list()).body.count).toBe(before);
  });

  it('viewers cannot create; members can', async () => {
    expectError(await post({ name: 'V' }, env.viewer.token), 403);
    expect((await post({ name: 'M' }, env.member.token)).status).toBe(201);
    expectError(await post({ name: 'V' }, env.viewerKey), 403);
  });
});

describe('GET|PATCH|DELETE /api/agents/{id}/', () => {
  it('PATCH changes only the given fields; null clears; derived fields follow', async () => {
    const c = await create({ name: 'Patch Me', email: `patch${uniq()}@gw.test`, city: 'Paris', tags: ['a'], custom_fields: { x: 1 } });
    const res = await env.request('PATCH', `/api/agents/${c.id}/`, { token: env.member.token, body: { city: null, tags: ['b', 'c'], bounced: true, unsubscribed: true } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      name: 'Patch Me', email: c.email, city: null, tags: ['b', 'c'], custom_fields: { x: 1 }, bounced: true, unsubscribed: true,
      email_validity: 'valid', esp: 'google_workspace', data_health_flags: ['bounced', 'unsubscribed'],
    });
    expect(res.body.updated_at >= c.updated_at).toBe(true);
    expect(res.body.created_at).toBe(c.created_at);

    const moved = await env.request('PATCH', `/api/agents/${c.id}/`, { token: env.owner.token, body: { email: `moved${uniq()}@m365.test`, bounced: false, name: null } });
    expect(moved.body).toMatchObject({ esp: 'microsoft_365', esg: 'microsoft', data_health_flags: ['missing_name', 'unsubscribed'] });

    expectError(await env.request('PATCH', `/api/agents/${c.id}/`, { token: env.owner.token, body: { lead_score: -1 } }), 400);
    const cleared = await env.request('PATCH', `/api/agents/${c.id}/`, { token: env.owner.token, body: { email: null } });
    expectError(cleared, 400); // neither a name nor an e-mail would be left
    expect((await env.request('GET', `/api/agents/${c.id}/`, { token: env.owner.token })).body.email).toBe(moved.body.email);
  });

  it('PATCH to an e-mail another contact has → 409', async () => {
    const a = await create({ name: 'A', email: `a${uniq()}@gw.test` });
    const b = await create({ name: 'B', email: `b${uniq()}@gw.test` });
    const res = await env.request('PATCH', `/api/agents/${b.id}/`, { token: env.owner.token, body: { email: a.email.toUpperCase() } });
    expectError(res, 409);
    expect(res.body.details).toHaveProperty('email');
    // Its own e-mail in another case is fine.
    const same = await env.request('PATCH', `/api/agents/${b.id}/`, { token: env.owner.token, body: { email: b.email.toUpperCase() } });
    expect(same.status).toBe(200);
    expect(same.body.email).toBe(b.email.toUpperCase());
  });

  it('DELETE → 204, then 404; viewers get 403', async () => {
    const c = await create({ name: 'Delete Me' });
    expectError(await env.request('DELETE', `/api/agents/${c.id}/`, { token: env.viewer.token }), 403);
    const res = await env.request('DELETE', `/api/agents/${c.id}/`, { token: env.owner.token });
    expect(res.status).toBe(204);
    expect(res.text).toBe('');
    expectError(await env.request('GET', `/api/agents/${c.id}/`, { token: env.owner.token }), 404);
    expectError(await env.request('DELETE', `/api/agents/${c.id}/`, { token: env.owner.token }), 404);
    expectError(await env.request('PATCH', `/api/agents/${c.id}/`, { token: env.owner.token, body: { name: 'x' } }), 404);
  });

  it("another organization's contact is a 404 everywhere and never listed", async () => {
    const other = await env.request('POST', '/api/agents/', { token: env.otherOwner.token, body: { name: 'Org B person', email: `b${uniq()}@gw.test`, city: 'Oslo-B' } });
    expect(other.status).toBe(201);
    for (const [m, body] of [['GET', undefined], ['PATCH', { name: 'x' }], ['DELETE', undefined]] as const) {
      const res = await env.request(m, `/api/agents/${other.body.id}/`, { token: env.owner.token, body });
      expectError(res, 404);
    }
    expect((await list('?search=org%20b')).body.count).toBe(0);
    expect((await list('?city=Oslo-B')).body.count).toBe(0);
    expect((await env.request('GET', '/api/cities/?page_size=1000', { token: env.owner.token })).body.results.map((r: any) => r.value)).not.toContain('Oslo-B');
    // The same e-mail may exist in two organizations.
    expect((await post({ name: 'Same mail', email: other.body.email })).status).toBe(201);
    expect((await env.request('GET', `/api/agents/${other.body.id}/`, { token: env.otherOwner.token })).body.name).toBe('Org B person');
  });

  it('unknown ids are 404 with the error body', async () => {
    expectError(await env.request('GET', '/api/agents/ctc_nope/', { token: env.owner.token }), 404);
    expectError(await env.request('GET', '/api/agents/ctc%00x/', { token: env.owner.token }), 400);
  });
});

describe('duplicate_email', () => {
  it('flags e-mails equal once dots and +tags are ignored, and unflags when the group shrinks', async () => {
    const u = uniq();
    const a = await create({ name: 'A', email: `john.doe.${u}+news@gw.test` });
    expect(a.data_health_flags).toEqual([]);
    const b = await create({ name: 'B', email: `johndoe${u}@gw.test` });
    expect(b.data_health_flags).toEqual(['duplicate_email']);
    const get = async (id: string) => (await env.request('GET', `/api/agents/${id}/`, { token: env.owner.token })).body;
    expect((await get(a.id)).data_health_flags).toEqual(['duplicate_email']);
    const c = await create({ name: 'C', email: `JOHN.DOE${u}+x@GW.test` });
    expect(c.data_health_flags).toEqual(['duplicate_email']);
    const flagged = await list(`?data_health_flags=duplicate_email&search=john`);
    expect(flagged.body.results.map((r: any) => r.id)).toEqual(expect.arrayContaining([a.id, b.id, c.id]));

    // C leaves the group (new address): A and B stay duplicates.
    await env.request('PATCH', `/api/agents/${c.id}/`, { token: env.owner.token, body: { email: `other${u}@gw.test` } });
    expect((await get(c.id)).data_health_flags).toEqual([]);
    expect((await get(a.id)).data_health_flags).toEqual(['duplicate_email']);
    // B is deleted: A is alone again.
    await env.request('DELETE', `/api/agents/${b.id}/`, { token: env.owner.token });
    expect((await get(a.id)).data_health_flags).toEqual([]);
  });
});

describe('GET /api/agents/ (list, filters, search, pagination)', () => {
  let ids: Record<string, string>;
  const tag = uniq();
  beforeAll(async () => {
    const mk = async (key: string, body: Record<string, unknown>) => [key, (await create({ ...body, source: tag })).id] as const;
    ids = Object.fromEntries(await Promise.all([
      mk('berlinGoogle', { name: `Berta ${tag}`, email: `berta.${tag}@gw.test`, city: `Berlin-${tag}` }),
      mk('berlinMs', { name: `Bruno ${tag}`, email: `bruno.${tag}@m365.test`, city: `Berlin-${tag}` }),
      mk('rome', { name: `Romy ${tag}`, email: `romy.${tag}@gate.test`, city: `Rome-${tag}` }),
      mk('role', { name: `Info ${tag}`, email: `info+${tag}@yahoo.test`, city: `Rome-${tag}` }),
      mk('nomx', { email: `ghost.${tag}@nomx.test`, city: `Rome-${tag}` }),
    ]));
  });
  const idsOf = (res: { body: any }) => res.body.results.map((r: any) => r.id).sort();

  it('is a DRF envelope, newest first', async () => {
    const res = await list();
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['count', 'next', 'previous', 'results']);
    const created = res.body.results.map((r: any) => r.created_at);
    expect(created).toEqual([...created].sort().reverse());
  });

  it('filters by city, esp, esg, email_validity and data_health_flags', async () => {
    expect(idsOf(await list(`?city=Berlin-${tag}`))).toEqual([ids.berlinGoogle, ids.berlinMs].sort());
    expect(idsOf(await list(`?city=Berlin-${tag}&esp=google_workspace`))).toEqual([ids.berlinGoogle]);
    expect(idsOf(await list(`?city=Rome-${tag}&esg=security_gateway`))).toEqual([ids.rome]);
    expect(idsOf(await list(`?city=Rome-${tag}&esp=yahoo`))).toEqual([ids.role]);
    expect(idsOf(await list(`?city=Rome-${tag}&email_validity=risky`))).toEqual([ids.role]);
    expect(idsOf(await list(`?city=Rome-${tag}&email_validity=invalid`))).toEqual([ids.nomx]);
    expect(idsOf(await list(`?city=Rome-${tag}&data_health_flags=no_mx`))).toEqual([ids.nomx]);
    // Several flags: contacts having all of them.
    expect(idsOf(await list(`?city=Rome-${tag}&data_health_flags=no_mx,missing_name`))).toEqual([ids.nomx]);
    expect(idsOf(await list(`?city=Rome-${tag}&data_health_flags=no_mx&data_health_flags=missing_name`))).toEqual([ids.nomx]);
    expect(idsOf(await list(`?city=Rome-${tag}&data_health_flags=no_mx,role_account`))).toEqual([]);
    expect(idsOf(await list(`?city=Rome-${tag}&data_health_flags=role_account`))).toEqual([ids.role]);
    const counted = await list(`?city=Rome-${tag}`);
    expect(counted.body.count).toBe(3);
    expect((await list(`?city=Nowhere-${tag}`)).body).toEqual({ count: 0, next: null, previous: null, results: [] });
  });

  it('filters alone count exactly (maintained counts)', async () => {
    const all = (await list('?page_size=100')).body;
    const byEsp = (await list('?esp=google_workspace&page_size=100')).body;
    expect(byEsp.count).toBe(byEsp.results.length);
    expect(byEsp.count).toBe(all.results.filter((r: any) => r.esp === 'google_workspace').length);
    const flagged = (await list('?data_health_flags=missing_name&page_size=100')).body;
    expect(flagged.count).toBe(all.results.filter((r: any) => r.data_health_flags.includes('missing_name')).length);
    expect(all.count).toBe(all.results.length);
  });

  it('search: prefix of the name or of the e-mail, any case', async () => {
    expect(idsOf(await list(`?search=berta%20${tag}`))).toEqual([ids.berlinGoogle]);
    expect(idsOf(await list(`?search=BERTA.${tag}@`))).toEqual([ids.berlinGoogle]);
    expect(idsOf(await list(`?search=ghost.${tag}`))).toEqual([ids.nomx]);
    expect(idsOf(await list(`?search=info%2B${tag}`))).toEqual([ids.role]);
    expect(idsOf(await list(`?search=b&city=Berlin-${tag}`))).toEqual([ids.berlinGoogle, ids.berlinMs].sort());
    expect(idsOf(await list(`?search=bruno&esp=google_workspace&city=Berlin-${tag}`))).toEqual([]);
    expect((await list(`?search=zzzz-${tag}`)).body.count).toBe(0);
    // Not a substring search: the middle of a name does not match.
    expect(idsOf(await list(`?search=${tag}`))).toEqual([]);
  });

  it('the flag filter gives the same pages by every plan (flag key driving, flagged ids looked up, contacts probed)', async () => {
    const queries = [`?city=Rome-${tag}&data_health_flags=no_mx`, `?data_health_flags=no_mx,missing_name`, `?data_health_flags=role_account&page_size=1`,
      `?data_health_flags=bounced`, `?data_health_flags=missing_name&esg=other`, `?data_health_flags=missing_name,no_mx&city=Rome-${tag}`];
    const pages = () => Promise.all(queries.map(async (q) => { const r = await list(q); return { ids: idsOf(r), count: r.body.count, next: r.body.next }; }));
    const driven = await pages();
    const saved = { ...flagTuning };
    try {
      flagTuning.drive = false;
      expect(await pages()).toEqual(driven);
      flagTuning.inListMax = -1;
      expect(await pages()).toEqual(driven);
    } finally {
      Object.assign(flagTuning, saved);
    }
    expect(driven[0].ids).toEqual([ids.nomx]);
    expect(driven[1].ids).toEqual([ids.nomx]);
  });

  it('a flag-driven list pages by numbers, then cursors, forwards and backwards, as the other plans do', async () => {
    const src = `fl${uniq()}`;
    const r = await upsertContacts(env.app.deps, env.orgA, Array.from({ length: 24 }, (_, i) => ({
      name: `Flagged ${i}`, email: `flagged${i}.${src}@example.test`, source: src, city: `Flags-${src}`, bounced: i % 2 === 0, unsubscribed: i % 3 === 0,
    })), { checkEmail: false });
    expect(r.created).toBe(24);
    const follow = async (link: string) => { const u = new URL(link); return (await env.request('GET', u.pathname + u.search, { token: env.owner.token })).body; };
    /** Every id from page 1 by `next` links, then back from the last page by `previous` links. */
    const walk = async (q: string) => {
      let page = (await list(q)).body;
      const forward: string[] = page.results.map((x: any) => x.id);
      const links: string[] = [];
      while (page.next) { links.push(new URL(page.next).searchParams.has('cursor') ? 'cursor' : 'page'); page = await follow(page.next); forward.push(...page.results.map((x: any) => x.id)); }
      const backward: string[] = [];
      while (page.previous) { page = await follow(page.previous); backward.unshift(...page.results.map((x: any) => x.id)); }
      return { count: (await list(q)).body.count, forward, backward, links };
    };
    const queries = ['?data_health_flags=bounced&page_size=1', '?data_health_flags=bounced,unsubscribed&page_size=1', `?data_health_flags=bounced&city=Flags-${src}&page_size=2`];
    const driven = await Promise.all(queries.map(walk));
    const saved = { ...flagTuning };
    try {
      flagTuning.drive = false;
      expect(await Promise.all(queries.map(walk))).toEqual(driven);
    } finally {
      Object.assign(flagTuning, saved);
    }
    for (const w of driven) {
      expect(w.forward).toEqual([...w.forward].sort().reverse());
      expect(w.forward.length).toBe(w.count);
    }
    expect(driven[0].links).toContain('cursor');
    // The page ending where the backward walk started is the last one, so the two walks agree up to it.
    expect(driven[0].backward).toEqual(driven[0].forward.slice(0, driven[0].backward.length));
    const mine = (await list(`?city=Flags-${src}&page_size=100`)).body.results;
    expect(driven[2].forward).toEqual(mine.filter((x: any) => x.bounced).map((x: any) => x.id));
  });

  it('search gives the same answers by either plan (ids from the ranges, or an id-ordered scan)', async () => {
    const queries = [`?search=berta%20${tag}`, `?search=BERTA.${tag}@`, `?search=b&city=Berlin-${tag}`, `?search=ghost.${tag}&data_health_flags=no_mx`, `?search=zzzz-${tag}`];
    const byRanges = await Promise.all(queries.map(async (q) => ({ ids: idsOf(await list(q)), count: (await list(q)).body.count })));
    const saved = searchTuning.probe;
    searchTuning.probe = 1;
    try {
      for (const [i, q] of queries.entries()) {
        const res = await list(q);
        expect({ ids: idsOf(res), count: res.body.count }, q).toEqual(byRanges[i]);
      }
    } finally {
      searchTuning.probe = saved;
    }
  });

  it('400 naming bad filter values', async () => {
    for (const [q, field] of [
      ['?esp=gmail', 'esp'], ['?esg=nope', 'esg'], ['?email_validity=maybe', 'email_validity'],
      ['?data_health_flags=bogus', 'data_health_flags.0'], ['?data_health_flags=no_mx,bogus', 'data_health_flags.1'],
      ['?page=0', 'page'], ['?page_size=101', 'page_size'], ['?page=abc', 'page'], ['?search=' + 'x'.repeat(201), 'search'],
      ['?search=a%00b', 'search'], ['?cursor=***', 'cursor'],
    ]) {
      const res = await list(q);
      expectError(res, 400);
      expect(Object.keys(res.body.details), q.slice(0, 60)).toContain(field);
    }
  });

  it('pages with page numbers, then keyset cursors; next/previous are absolute URLs', async () => {
    const src = `pg${uniq()}`;
    const r = await upsertContacts(env.app.deps, env.orgA, Array.from({ length: 13 }, (_, i) => ({ name: `Pager ${i}`, email: `pager${i}.${src}@example.test`, source: src, city: `Pages-${src}` })), { checkEmail: false });
    expect(r.created).toBe(13);
    const first = await list(`?city=Pages-${src}&page_size=5`);
    expect(first.body.count).toBe(13);
    expect(first.body.previous).toBeNull();
    expect(first.body.next).toMatch(/^http:\/\/[^/]+\/api\/agents\/\?.*page=2/);
    const second = await env.request('GET', new URL(first.body.next).pathname + new URL(first.body.next).search, { token: env.owner.token });
    expect(second.body.previous).toMatch(/page=1/);
    const seen = [...first.body.results, ...second.body.results].map((x: any) => x.id);
    expect(new Set(seen).size).toBe(10);
    // Deep pages hand out cursors.
    const deep = await list(`?city=Pages-${src}&page_size=1&page=10`);
    expect(deep.body.next).toContain('cursor=');
    const walked: string[] = deep.body.results.map((x: any) => x.id);
    let next = deep.body.next;
    while (next) {
      const u = new URL(next);
      const res = await env.request('GET', u.pathname + u.search, { token: env.owner.token });
      walked.push(...res.body.results.map((x: any) => x.id));
      next = res.body.next;
    }
    expect(walked).toHaveLength(4);
    const everything = (await list(`?city=Pages-${src}&page_size=100`)).body.results.map((x: any) => x.id);
    expect(walked).toEqual(everything.slice(9));
  });

  it('401 without a token, 403 for a role without contacts:read', async () => {
    expectError(await env.request('GET', '/api/agents/'), 401);
    const role = await env.request('POST', '/api/v1/roles', { token: env.owner.token, body: { name: `no-contacts-${uniq()}`, permissions: ['projects:read'] } });
    expect(role.status).toBe(201);
    const key = await env.request('POST', '/api/v1/api_keys', { token: env.owner.token, body: { name: 'limited', role: `custom:${role.body.id}` } });
    expect(key.status).toBe(201);
    expectError(await env.request('GET', '/api/agents/', { token: key.body.key }), 403);
    expectError(await env.request('GET', '/api/cities/', { token: key.body.key }), 403);
    expect((await env.request('GET', '/api/agents/', { token: env.viewerKey })).status).toBe(200);
  });
});

describe('filter options', () => {
  const paths = ['/api/cities/', '/api/esps/', '/api/esgs/', '/api/email-validity-options/', '/api/data-health-flags/'];
  const options = async (path: string, token = env.owner.token) => {
    const res = await env.request('GET', path, { token });
    expect(res.status, path).toBe(200);
    return res.body as { count: number; next: string | null; previous: string | null; results: { value: string; count: number }[] };
  };
  const countOf = async (path: string, value: string) => (await options(`${path}?page_size=1000`)).results.find((r) => r.value === value)?.count ?? 0;

  it('all five share one shape: a DRF envelope of {value, count}', async () => {
    for (const p of paths) {
      const body = await options(p, env.viewer.token);
      expect(Object.keys(body).sort()).toEqual(['count', 'next', 'previous', 'results']);
      for (const r of body.results) {
        expect(Object.keys(r).sort()).toEqual(['count', 'value']);
        expect(typeof r.value).toBe('string');
        expect(Number.isInteger(r.count)).toBe(true);
      }
      const counts = body.results.map((r) => r.count);
      expect(counts).toEqual([...counts].sort((a, b) => b - a));
    }
  });

  it('closed vocabularies list every value, zeros included', async () => {
    expect((await options('/api/email-validity-options/')).results.map((r) => r.value).sort()).toEqual(['catch_all', 'invalid', 'risky', 'unknown', 'valid']);
    expect((await options('/api/esgs/')).results.map((r) => r.value).sort()).toEqual(['google', 'microsoft', 'other', 'security_gateway', 'yahoo']);
    expect((await options('/api/data-health-flags/')).results.map((r) => r.value)).toEqual(expect.arrayContaining(['missing_name', 'invalid_email', 'disposable_domain', 'role_account', 'duplicate_email', 'no_mx', 'bounced', 'unsubscribed', 'stale']));
    expect((await options('/api/esps/')).results.map((r) => r.value)).toEqual(expect.arrayContaining(['google_workspace', 'microsoft_365', 'yahoo', 'zoho', 'proton', 'amazon_ses', 'mimecast', 'proofpoint', 'self_hosted', 'other']));
    expect(await countOf('/api/email-validity-options/', 'catch_all')).toBe(0);
  });

  it('counts follow creates, updates and deletes', async () => {
    const city = `Counted-${uniq()}`;
    const before = {
      google: await countOf('/api/esps/', 'google_workspace'), ms: await countOf('/api/esgs/', 'microsoft'),
      valid: await countOf('/api/email-validity-options/', 'valid'), bounced: await countOf('/api/data-health-flags/', 'bounced'),
    };
    const a = await create({ name: 'Count A', email: `ca${uniq()}@gw.test`, city });
    const b = await create({ name: 'Count B', email: `cb${uniq()}@gw.test`, city, bounced: true });
    expect(await countOf('/api/cities/', city)).toBe(2);
    expect(await countOf('/api/esps/', 'google_workspace')).toBe(before.google + 2);
    expect(await countOf('/api/email-validity-options/', 'valid')).toBe(before.valid + 2);
    expect(await countOf('/api/data-health-flags/', 'bounced')).toBe(before.bounced + 1);

    await env.request('PATCH', `/api/agents/${b.id}/`, { token: env.owner.token, body: { email: `cb${uniq()}@m365.test`, bounced: false, city: `${city}-2` } });
    expect(await countOf('/api/cities/', city)).toBe(1);
    expect(await countOf('/api/cities/', `${city}-2`)).toBe(1);
    expect(await countOf('/api/esps/', 'google_workspace')).toBe(before.google + 1);
    expect(await countOf('/api/esgs/', 'microsoft')).toBe(before.ms + 1);
    expect(await countOf('/api/data-health-flags/', 'bounced')).toBe(before.bounced);

    await env.request('DELETE', `/api/agents/${a.id}/`, { token: env.owner.token });
    await env.request('DELETE', `/api/agents/${b.id}/`, { token: env.owner.token });
    const cities = (await options('/api/cities/?page_size=1000')).results.map((r) => r.value);
    expect(cities).not.toContain(city);
    expect(cities).not.toContain(`${city}-2`);
    expect(await countOf('/api/esps/', 'google_workspace')).toBe(before.google);
    expect(await countOf('/api/email-validity-options/', 'valid')).toBe(before.valid);
  });

  it('the list count of a single filter equals its option count', async () => {
    for (const [path, param] of [['/api/esps/', 'esp'], ['/api/esgs/', 'esg'], ['/api/email-validity-options/', 'email_validity'], ['/api/data-health-flags/', 'data_health_flags'], ['/api/cities/', 'city']]) {
      for (const o of (await options(`${path}?page_size=1000`)).results) {
        const l = await list(`?${param}=${encodeURIComponent(o.value)}&page_size=100`);
        expect(l.body.count, `${param}=${o.value}`).toBe(o.count);
        if (o.count <= 100) expect(l.body.results.length, `${param}=${o.value}`).toBe(o.count);
      }
    }
  });

  it('pages the values', async () => {
    const u = uniq();
    await create({ name: 'P1', city: `Paged-${u}-a` });
    await create({ name: 'P2', city: `Paged-${u}-b` });
    const first = await options('/api/cities/?page_size=1');
    expect(first.count).toBeGreaterThanOrEqual(2);
    expect(first.results).toHaveLength(1);
    expect(first.next).toMatch(/^http:\/\/[^/]+\/api\/cities\/\?page_size=1&page=2$/);
    const u2 = new URL(first.next!);
    const second = await options(u2.pathname + u2.search);
    expect(second.previous).toMatch(/page=1/);
    expect(second.results[0].value).not.toBe(first.results[0].value);
    expectError(await env.request('GET', '/api/esps/?page_size=1001', { token: env.owner.token }), 400);
    expectError(await env.request('GET', '/api/esps/?page=0', { token: env.owner.token }), 400);
  });
});

describe('upsertContacts', () => {
  it('creates and updates by e-mail in batches, reports bad rows and writes the rest', async () => {
    const u = uniq();
    const res = await upsertContacts(env.app.deps, env.orgA, [
      { name: 'Up One', email: `up1.${u}@gw.test`, lead_score: '85', unsubscribed: 'true', tags: 'a, b; c', city: '' },
      { name: 'No Mail' },
      { name: 'Up Two', email: `up2.${u}@gw.test`, lead_score: 'high' },
      { name: 'Up Three', email: `up3.${u}@m365.test`, custom_fields: { crm_id: '42' } },
      { name: 'Up One Again', email: `UP1.${u}@GW.TEST`, company: 'Acme' },
      'not an object',
      { name: 'x'.repeat(300), email: `up4.${u}@gw.test` },
    ], { batchSize: 2 });
    expect(res.created).toBe(2);
    expect(res.updated).toBe(1);
    expect(res.results.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(res.results[1].error).toMatch(/^email: /);
    expect(res.results[2].error).toMatch(/^lead_score: /);
    expect(res.results[5].error).toBeTruthy();
    expect(res.results[6].error).toMatch(/^name: /);
    expect(res.results[0].id).toBe(res.results[4].id);
    const one = (await env.request('GET', `/api/agents/${res.results[0].id}/`, { token: env.owner.token })).body;
    expect(one).toMatchObject({
      name: 'Up One Again', email: `UP1.${u}@GW.TEST`, company: 'Acme', lead_score: 85, unsubscribed: true, tags: ['a', 'b', 'c'],
      city: null, email_validity: 'valid', esp: 'google_workspace', data_health_flags: ['unsubscribed'],
    });
    const three = (await env.request('GET', `/api/agents/${res.results[3].id}/`, { token: env.owner.token })).body;
    expect(three).toMatchObject({ esp: 'microsoft_365', custom_fields: { crm_id: '42' } });
    expect((await list(`?search=up2.${u}`)).body.count).toBe(0);

    const again = await upsertContacts(env.app.deps, env.orgA, [{ email: `up3.${u}@m365.test`, title: 'CTO' }]);
    expect(again).toMatchObject({ created: 0, updated: 1, results: [{ index: 0, id: res.results[3].id }] });
    const updated = (await env.request('GET', `/api/agents/${res.results[3].id}/`, { token: env.owner.token })).body;
    expect(updated).toMatchObject({ name: 'Up Three', title: 'CTO', custom_fields: { crm_id: '42' } });
  });

  it('one batch touching a contact twice around a duplicate keeps flags and counts right', async () => {
    const u = uniq();
    const flagCount = async () => (await env.request('GET', '/api/data-health-flags/', { token: env.owner.token })).body.results.find((r: any) => r.value === 'duplicate_email').count;
    const before = await flagCount();
    const res = await upsertContacts(env.app.deps, env.orgA, [
      { name: 'Twin A', email: `twin.${u}@gw.test` },
      { name: 'Twin B', email: `twin${u}+b@gw.test` },
      { email: `twin.${u}@gw.test`, title: 'again' },
    ]);
    expect(res.results.map((r) => r.error)).toEqual([undefined, undefined, undefined]);
    expect(res).toMatchObject({ created: 2, updated: 1 });
    const a = (await env.request('GET', `/api/agents/${res.results[0].id}/`, { token: env.owner.token })).body;
    expect(a).toMatchObject({ title: 'again', data_health_flags: ['duplicate_email'] });
    expect(await flagCount()).toBe(before + 2);
    expect((await list('?data_health_flags=duplicate_email&page_size=100')).body.count).toBe(before + 2);
  });
});

describe('re-check', () => {
  it('settles unknown contacts once DNS answers, keeps known results when it does not, and flags stale ones', async () => {
    const u = uniq();
    const domain = `later${u}.test`;
    dns.servfail.add(domain);
    const c = await create({ name: 'Later', email: `x@${domain}` });
    expect(c.email_validity).toBe('unknown');
    expect((await list('?email_validity=unknown&page_size=100')).body.results.map((r: any) => r.id)).toContain(c.id);

    dns.servfail.delete(domain);
    dns.zones.set(domain, { ...mx('aspmx.l.google.com'), ttl: 0 }); // not cached: each check asks again
    const r = await recheckContacts(env.app.deps, { organizationId: env.orgA, limit: 1000, timeoutMs: 500 });
    expect(r.checked).toBeGreaterThanOrEqual(1);
    const after = (await env.request('GET', `/api/agents/${c.id}/`, { token: env.owner.token })).body;
    expect(after).toMatchObject({ email_validity: 'valid', esp: 'google_workspace', data_health_flags: [] });
    expect(after.email_checked_at).not.toBeNull();

    // Checked 200 days ago, and now the DNS does not answer: still valid, but stale.
    const old = new Date(Date.now() - 200 * 86_400_000).toISOString();
    await env.db.kysely.updateTable('contacts').set({ email_checked_at: old }).where('id', '=', c.id).execute();
    dns.servfail.add(domain);
    const r2 = await recheckContacts(env.app.deps, { organizationId: env.orgA, limit: 1000, timeoutMs: 500 });
    expect(r2.checked).toBeGreaterThanOrEqual(1);
    const stale = (await env.request('GET', `/api/agents/${c.id}/`, { token: env.owner.token })).body;
    expect(stale).toMatchObject({ email_validity: 'valid', esp: 'google_workspace', email_checked_at: old, data_health_flags: ['stale'] });
    expect((await list('?data_health_flags=stale')).body.results.map((x: any) => x.id)).toContain(c.id);

    // The job type runs the same re-check.
    dns.servfail.delete(domain);
    await enqueue(env.db.kysely, { type: RECHECK_JOB, payload: { organization_id: env.orgA, limit: 1000 } });
    expect(await runUntilIdle(env.app.deps, { types: [RECHECK_JOB] })).toBe(1);
    const fresh = (await env.request('GET', `/api/agents/${c.id}/`, { token: env.owner.token })).body;
    expect(fresh.data_health_flags).toEqual([]);
    expect(fresh.email_checked_at > old).toBe(true);
    const job = await env.db.kysely.selectFrom('jobs').select(['status', 'result']).where('type', '=', RECHECK_JOB).executeTakeFirstOrThrow();
    expect(job.status).toBe('succeeded');
  });
});
