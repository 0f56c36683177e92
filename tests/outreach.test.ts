import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { startDnsServer, type TestDnsServer, type Zone } from './dns-server.js';
import { checkAllDomains, recordEmailEvent, type EmailEventInput } from '../src/services/outreach.js';

// Queries to names the test server keeps silent time out after this long (read when the app's
// resolver is first made).

const KEY = 'MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB';
const mx = (d: string) => ({ MX: [{ exchange: `mx1.${d}`, priority: 10 }] });

/** MX, SPF (with one include), DKIM under `default`, DMARC p=reject: everything passes. */
function healthyZones(d: string, overrides: Record<string, Zone | null> = {}): Record<string, Zone> {
  const zones: Record<string, Zone | null> = {
    [d]: { ...mx(d), TXT: ['v=spf1 ip4:192.0.2.0/24 include:_spf.provider.test -all', 'google-site-verification=abc'] },
    [`default._domainkey.${d}`]: { TXT: [`v=DKIM1; k=rsa; p=${KEY}`] },
    [`_dmarc.${d}`]: { TXT: [`v=DMARC1; p=reject; rua=mailto:dmarc@${d}`] },
    ...overrides,
  };
  return Object.fromEntries(Object.entries(zones).filter((e): e is [string, Zone] => e[1] !== null));
}

let env: TestEnv;
let dns: TestDnsServer;
beforeAll(async () => {
  dns = await startDnsServer({
    '_spf.provider.test': { TXT: ['v=spf1 ip4:198.51.100.0/24 ~all'] },
    ...healthyZones('healthy.test'),
    ...healthyZones('healthy-b.test'),
    ...healthyZones('nodmarc.test', { '_dmarc.nodmarc.test': null }),
    ...healthyZones('badspf.test', { 'badspf.test': { ...mx('badspf.test'), TXT: ['v=spf1 +all'] }, '_dmarc.badspf.test': { TXT: ['v=DMARC1; p=quarantine'] } }),
    ...healthyZones('partial.test'),
    ...healthyZones('selector.test', { 'default._domainkey.selector.test': null, 's2._domainkey.selector.test': { TXT: [`v=DKIM1; p=${KEY}`] } }),
    ...healthyZones('rates.test'),
    // Changed between checks: no caching (TTL 0).
    ...healthyZones('flappy.test', { '_dmarc.flappy.test': { TXT: ['v=DMARC1; p=bogus'], ttl: 0 } }),
    ...healthyZones('periodic.test', { 'periodic.test': { ...mx('periodic.test'), TXT: ['v=spf1 ?all'], ttl: 0 } }),
  });
  for (const name of ['silent.test', 'default._domainkey.silent.test', '_dmarc.silent.test', '_dmarc.partial.test']) dns.silent.add(name);
  env = await createTestEnv({ dnsServers: [dns.server], dnsTimeoutMs: 300 });
});
afterAll(async () => { await env?.close(); await dns?.close(); });

const addDomain = (body: Record<string, unknown>, token = env.owner.token) => env.request('POST', '/api/outreach/domains/', { token, body });
const alertsOf = async (domainId: string, query = '') =>
  (await env.request('GET', `/api/outreach/health-alerts/?domain_id=${domainId}&page_size=100${query}`, { token: env.viewer.token })).body.results as Alert[];
interface Alert { id: string; domain_id: string; domain: string; kind: string; severity: string; message: string; detected_at: string; resolved: boolean; resolved_at: string | null }

function event(org: string, domain: string, type: EmailEventInput['type'], n: number, opts: Partial<EmailEventInput> & { prefix?: string; daysAgo?: number } = {}) {
  const { prefix = `${domain}-${type}`, daysAgo = 0, ...rest } = opts;
  return Promise.all(Array.from({ length: n }, (_, i) => recordEmailEvent(env.db.kysely, {
    organizationId: org, messageId: `${prefix}-${i}`, recipient: `r${i}@example.org`, sendingDomain: domain, type,
    occurredAt: new Date(Date.now() - daysAgo * 86_400_000 - 60_000), ...(type === 'bounced' ? { bounceType: 'hard' as const } : {}), ...rest,
  })));
}

describe('sending domains: checks on create', () => {
  it('a healthy domain: every check passes, score 100, no alert', async () => {
    const res = await addDomain({ domain: 'Healthy.TEST.' });
    expect(res.status).toBe(201);
    const d = res.body;
    expect(d.id).toMatch(/^sdm_/);
    expect(d).toMatchObject({
      domain: 'healthy.test', dkim_selector: 'default', status: 'healthy', health_score: 100,
      mx: { status: 'pass', hosts: ['mx1.healthy.test'] },
      spf: { status: 'pass', record: 'v=spf1 ip4:192.0.2.0/24 include:_spf.provider.test -all', all: '-all', lookups: 1 },
      dkim: { status: 'pass', selector: 'default', record: `v=DKIM1; k=rsa; p=${KEY}` },
      dmarc: { status: 'pass', policy: 'reject' },
      bounce_rate: 0, complaint_rate: 0, sent_last_30_days: 0,
    });
    for (const c of ['mx', 'spf', 'dkim', 'dmarc']) expect(typeof d[c].message).toBe('string');
    expect(Date.parse(d.last_checked_at)).not.toBeNaN();
    expect(await alertsOf(d.id)).toEqual([]);

    const shown = await env.request('GET', `/api/outreach/domains/${d.id}/`, { token: env.viewerKey });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(d);
  });

  it('missing DMARC: that check fails, score 75, unhealthy, a dmarc_missing alert with an event', async () => {
    const res = await addDomain({ domain: 'nodmarc.test' }, env.member.token);
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ status: 'unhealthy', health_score: 75, mx: { status: 'pass' }, spf: { status: 'pass' }, dkim: { status: 'pass' }, dmarc: { status: 'fail', policy: null, record: null } });
    const alerts = await alertsOf(res.body.id);
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ domain_id: res.body.id, domain: 'nodmarc.test', kind: 'dmarc_missing', severity: 'warning', resolved: false, resolved_at: null });
    expect(alerts[0].detected_at).toBe(res.body.last_checked_at);
    const events = await env.db.kysely.selectFrom('events').select(['organization_id', 'payload']).where('type', '=', 'outreach.alert_raised').execute();
    const mine = events.filter((e) => JSON.parse(e.payload).alert_id === alerts[0].id);
    expect(mine).toHaveLength(1);
    expect(mine[0].organization_id).toBe(env.orgA);
    expect(JSON.parse(mine[0].payload)).toMatchObject({ domain_id: res.body.id, domain: 'nodmarc.test', kind: 'dmarc_missing', severity: 'warning' });
  });

  it('a bad SPF (+all) fails with spf_invalid (critical)', async () => {
    const res = await addDomain({ domain: 'badspf.test' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ status: 'unhealthy', health_score: 75, spf: { status: 'fail', all: '+all', record: 'v=spf1 +all' }, dmarc: { status: 'pass', policy: 'quarantine' } });
    expect(res.body.spf.message).toMatch(/\+all/);
    expect((await alertsOf(res.body.id)).map((a) => [a.kind, a.severity])).toEqual([['spf_invalid', 'critical']]);
  });

  it('DNS that never answers: checks are unknown, not failed; no score, no alert', async () => {
    const res = await addDomain({ domain: 'silent.test' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ status: 'unknown', health_score: null, mx: { status: 'unknown' }, spf: { status: 'unknown' }, dkim: { status: 'unknown' }, dmarc: { status: 'unknown' } });
    expect(res.body.mx.message).toMatch(/unknown/);
    expect(await alertsOf(res.body.id)).toEqual([]);
  });

  it('one unanswered check is left out of the score instead of counting as failed', async () => {
    const res = await addDomain({ domain: 'partial.test' });
    expect(res.body).toMatchObject({ status: 'healthy', health_score: 100, dmarc: { status: 'unknown' }, spf: { status: 'pass' } });
    expect(await alertsOf(res.body.id)).toEqual([]);
  });

  it('rejects bad input with details and writes nothing; duplicates are 409', async () => {
    const before = (await env.request('GET', '/api/outreach/domains/', { token: env.owner.token })).body.count;
    for (const domain of ['not a domain', 'https://example.com', '192.0.2.1', 'localhost', '', '-bad.example.com', 'a..b.com', 'example.123', 'x'.repeat(64) + '.com', 42]) {
      const res = await addDomain({ domain });
      expectError(res, 400);
      expect(res.body.details, String(domain)).toHaveProperty('domain');
    }
    const missing = await addDomain({});
    expectError(missing, 400);
    expect(missing.body.details).toHaveProperty('domain');
    const badSelector = await addDomain({ domain: 'fresh.test', dkim_selector: 'bad selector!' });
    expectError(badSelector, 400);
    expect(badSelector.body.details).toHaveProperty('dkim_selector');
    const dup = await addDomain({ domain: 'HEALTHY.test' });
    expectError(dup, 409);
    expect(dup.body.details).toHaveProperty('domain');
    expect((await env.request('GET', '/api/outreach/domains/', { token: env.owner.token })).body.count).toBe(before);
  });

  it('the same domain may belong to two organizations', async () => {
    const res = await addDomain({ domain: 'nodmarc.test' }, env.otherOwner.token);
    expect(res.status).toBe(201);
    const listA = await env.request('GET', '/api/outreach/domains/?page_size=100', { token: env.owner.token });
    expect(listA.body.results.map((d: { id: string }) => d.id)).not.toContain(res.body.id);
  });
});

describe('sending domains: list, update, delete', () => {
  it('lists with filters and pages', async () => {
    const all = await env.request('GET', '/api/outreach/domains/?page_size=100', { token: env.viewer.token });
    expect(all.status).toBe(200);
    const names = all.body.results.map((d: { domain: string }) => d.domain);
    expect(names).toEqual(expect.arrayContaining(['healthy.test', 'nodmarc.test', 'badspf.test', 'silent.test']));
    const unhealthy = await env.request('GET', '/api/outreach/domains/?status=unhealthy&page_size=100', { token: env.viewer.token });
    expect(unhealthy.body.results.map((d: { domain: string }) => d.domain).sort()).toEqual(expect.arrayContaining(['badspf.test', 'nodmarc.test']));
    expect(unhealthy.body.results.every((d: { status: string }) => d.status === 'unhealthy')).toBe(true);
    const search = await env.request('GET', '/api/outreach/domains/?search=DMARC', { token: env.viewer.token });
    expect(search.body.results.map((d: { domain: string }) => d.domain)).toEqual(['nodmarc.test']);
    const page = await env.request('GET', '/api/outreach/domains/?page_size=1', { token: env.viewer.token });
    expect(page.body.results).toHaveLength(1);
    expect(page.body.count).toBe(all.body.count);
    expect(page.body.next).toMatch(/page=2/);
    expectError(await env.request('GET', '/api/outreach/domains/?status=great', { token: env.viewer.token }), 400);
  });

  it('changing the DKIM selector checks the new one at once; the domain cannot change', async () => {
    const created = (await addDomain({ domain: 'selector.test' })).body;
    expect(created.dkim).toMatchObject({ status: 'fail', selector: 'default' });
    expect((await alertsOf(created.id)).map((a) => a.kind)).toEqual(['dkim_missing']);

    const patched = await env.request('PATCH', `/api/outreach/domains/${created.id}/`, { token: env.member.token, body: { dkim_selector: 'S2' } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ dkim_selector: 's2', dkim: { status: 'pass', selector: 's2' }, status: 'healthy', health_score: 100 });
    expect((await alertsOf(created.id)).map((a) => [a.kind, a.resolved])).toEqual([['dkim_missing', true]]);

    const rename = await env.request('PATCH', `/api/outreach/domains/${created.id}/`, { token: env.member.token, body: { domain: 'other.test' } });
    expectError(rename, 400);
    expect(rename.body.details).toHaveProperty('domain');
    const badSel = await env.request('PATCH', `/api/outreach/domains/${created.id}/`, { token: env.member.token, body: { dkim_selector: '' } });
    expectError(badSel, 400);
    expect(badSel.body.details).toHaveProperty('dkim_selector');
    expect((await env.request('GET', `/api/outreach/domains/${created.id}/`, { token: env.member.token })).body.dkim_selector).toBe('s2');
  });

  it('deletes a domain with its alerts; 404 afterwards and for unknown ids', async () => {
    const created = (await addDomain({ domain: 'delete-me.test' })).body; // NXDOMAIN: every check fails
    expect(created).toMatchObject({ status: 'unhealthy', health_score: 0 });
    expect((await alertsOf(created.id)).length).toBe(4);
    const del = await env.request('DELETE', `/api/outreach/domains/${created.id}/`, { token: env.member.token });
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ id: created.id, deleted: true });
    expectError(await env.request('GET', `/api/outreach/domains/${created.id}/`, { token: env.member.token }), 404);
    expect(await alertsOf(created.id)).toEqual([]);
    for (const [method, path] of [['GET', ''], ['PATCH', ''], ['DELETE', ''], ['POST', 'check/']] as const) {
      expectError(await env.request(method, `/api/outreach/domains/sdm_missing/${path}`, { token: env.owner.token, body: method === 'PATCH' || method === 'POST' ? {} : undefined }), 404);
    }
  });

  it("another organization's domain is a 404 on every route", async () => {
    const theirs = (await env.request('GET', '/api/outreach/domains/?search=nodmarc.test', { token: env.otherOwner.token })).body.results[0];
    expect(theirs).toBeDefined();
    const theirAlerts = await env.request('GET', '/api/outreach/health-alerts/', { token: env.otherOwner.token });
    expect(theirAlerts.body.results.map((a: Alert) => a.domain_id)).toEqual([theirs.id]);
    for (const [method, path] of [['GET', ''], ['PATCH', ''], ['DELETE', ''], ['POST', 'check/']] as const) {
      expectError(await env.request(method, `/api/outreach/domains/${theirs.id}/${path}`, { token: env.owner.token, body: method === 'PATCH' || method === 'POST' ? { dkim_selector: 'x' } : undefined }), 404);
    }
    expect((await env.request('GET', `/api/outreach/domains/${theirs.id}/`, { token: env.otherOwner.token })).body.dkim_selector).toBe('default');
    expect(await alertsOf(theirs.id)).toEqual([]);
  });

  it('viewers read but do not write', async () => {
    expectError(await addDomain({ domain: 'viewer.test' }, env.viewer.token), 403);
    const some = (await env.request('GET', '/api/outreach/domains/', { token: env.viewer.token })).body.results[0];
    expectError(await env.request('POST', `/api/outreach/domains/${some.id}/check/`, { token: env.viewerKey, body: {} }), 403);
    expectError(await env.request('GET', '/api/outreach/domains/'), 401);
  });
});

describe('alerts across checks', () => {
  it('raises once, keeps one open alert while failing, resolves when the check recovers, raises anew after', async () => {
    const d = (await addDomain({ domain: 'flappy.test' })).body;
    expect(d.dmarc).toMatchObject({ status: 'fail', policy: null });
    const [first] = await alertsOf(d.id);
    expect(first).toMatchObject({ kind: 'dmarc_invalid', severity: 'warning', resolved: false });

    const again = await env.request('POST', `/api/outreach/domains/${d.id}/check/`, { token: env.member.token, body: {} });
    expect(again.status).toBe(200);
    expect((await alertsOf(d.id)).map((a) => a.id)).toEqual([first.id]);

    // DNS stops answering: unknown, the alert stays open.
    dns.silent.add('_dmarc.flappy.test');
    const unknown = (await env.request('POST', `/api/outreach/domains/${d.id}/check/`, { token: env.member.token, body: {} })).body;
    dns.silent.delete('_dmarc.flappy.test');
    expect(unknown).toMatchObject({ dmarc: { status: 'unknown' }, health_score: 100, status: 'healthy' });
    expect((await alertsOf(d.id)).map((a) => [a.id, a.resolved])).toEqual([[first.id, false]]);

    dns.zones.set('_dmarc.flappy.test', { TXT: ['v=DMARC1; p=reject'], ttl: 0 });
    const fixed = (await env.request('POST', `/api/outreach/domains/${d.id}/check/`, { token: env.member.token, body: {} })).body;
    expect(fixed).toMatchObject({ dmarc: { status: 'pass', policy: 'reject' }, status: 'healthy', health_score: 100 });
    const [resolved] = await alertsOf(d.id);
    expect(resolved).toMatchObject({ id: first.id, resolved: true, resolved_at: fixed.last_checked_at, detected_at: first.detected_at });

    dns.zones.set('_dmarc.flappy.test', { TXT: ['v=DMARC1; p=none'], ttl: 0 });
    const weak = (await env.request('POST', `/api/outreach/domains/${d.id}/check/`, { token: env.member.token, body: {} })).body;
    expect(weak).toMatchObject({ dmarc: { status: 'warn', policy: 'none' }, health_score: 88, status: 'healthy' });
    expect((await alertsOf(d.id, '&resolved=false'))).toEqual([]);

    dns.zones.set('_dmarc.flappy.test', { TXT: ['v=DMARC1; rua=mailto:x@flappy.test'], ttl: 0 });
    await env.request('POST', `/api/outreach/domains/${d.id}/check/`, { token: env.member.token, body: {} });
    const open = await alertsOf(d.id, '&resolved=false');
    expect(open).toHaveLength(1);
    expect(open[0].id).not.toBe(first.id);
    const raised = await env.db.kysely.selectFrom('events').select('payload').where('type', '=', 'outreach.alert_raised').execute();
    expect(raised.filter((e) => JSON.parse(e.payload).domain_id === d.id)).toHaveLength(2);
    const resolvedEvents = await env.db.kysely.selectFrom('events').select('payload').where('type', '=', 'outreach.alert_resolved').execute();
    expect(resolvedEvents.filter((e) => JSON.parse(e.payload).alert_id === first.id)).toHaveLength(1);
  });

  it('checkAllDomains re-checks every domain of every organization', async () => {
    const d = (await addDomain({ domain: 'periodic.test' })).body;
    expect(d.spf).toMatchObject({ status: 'warn', all: '?all' });
    expect((await addDomain({ domain: 'healthy-b.test' }, env.otherOwner.token)).status).toBe(201);
    dns.zones.set('periodic.test', { ...mx('periodic.test'), TXT: ['v=spf1 -all'], ttl: 0 });
    const result = await checkAllDomains(env.app.deps);
    const total = async (token: string) => (await env.request('GET', '/api/outreach/domains/', { token })).body.count as number;
    expect(result).toEqual({ checked: (await total(env.owner.token)) + (await total(env.otherOwner.token)), failed: 0 });
    const after = (await env.request('GET', `/api/outreach/domains/${d.id}/`, { token: env.owner.token })).body;
    expect(after).toMatchObject({ spf: { status: 'pass', all: '-all', lookups: 0 }, health_score: 100 });
  });
});

describe('bounce and complaint rates', () => {
  it('come from the last 30 days of the domain\'s events, lower the score and raise alerts', async () => {
    const org = env.orgA;
    await event(org, 'rates.test', 'sent', 200);
    await event(org, 'rates.test', 'bounced', 5, { prefix: 'rates.test-sent' }); // 2.5 %
    await event(org, 'rates.test', 'bounced', 1, { prefix: 'rates.test-sent', bounceType: 'soft' }); // same message again: counted once
    await event(org, 'rates.test', 'complained', 1, { prefix: 'rates.test-sent' }); // 0.5 %
    // Not counted: older than 30 days, another domain, another organization.
    await event(org, 'rates.test', 'bounced', 50, { prefix: 'old', daysAgo: 31 });
    await event(org, 'other.test', 'bounced', 50, { prefix: 'rates.test-sent' });
    await event(env.orgB, 'rates.test', 'complained', 50, { prefix: 'rates.test-sent' });

    const d = (await addDomain({ domain: 'rates.test' })).body;
    expect(d).toMatchObject({ sent_last_30_days: 200, bounce_rate: 2.5, complaint_rate: 0.5, health_score: 35, status: 'unhealthy' });
    const alerts = await alertsOf(d.id, '&ordering=severity');
    expect(alerts.map((a) => [a.kind, a.severity])).toEqual([['complaint_rate_high', 'critical'], ['bounce_rate_high', 'warning']]);
    expect(alerts[1].message).toMatch(/2\.5%/);

    // More sending dilutes the rates below both thresholds: the alerts resolve.
    await event(org, 'rates.test', 'sent', 800, { prefix: 'more' });
    const after = (await env.request('POST', `/api/outreach/domains/${d.id}/check/`, { token: env.owner.token, body: {} })).body;
    expect(after).toMatchObject({ sent_last_30_days: 1000, bounce_rate: 0.5, complaint_rate: 0.1, health_score: 100, status: 'healthy' });
    expect((await alertsOf(d.id)).every((a) => a.resolved)).toBe(true);
  });

  it('recordEmailEvent refuses malformed events', async () => {
    await expect(recordEmailEvent(env.db.kysely, { organizationId: env.orgA, messageId: 'm', recipient: 'a@b.c', sendingDomain: 'x.test', type: 'exploded' as 'sent' })).rejects.toMatchObject({ status: 400 });
    await expect(recordEmailEvent(env.db.kysely, { organizationId: env.orgA, messageId: 'm', recipient: 'a@b.c', sendingDomain: 'x.test', type: 'opened', bounceType: 'hard' })).rejects.toMatchObject({ status: 400 });
  });
});

describe('health alerts list', () => {
  it('filters by resolved and orders by detected_at or severity', async () => {
    const all = (await env.request('GET', '/api/outreach/health-alerts/?page_size=100', { token: env.viewer.token })).body;
    expect(all.count).toBe(all.results.length);
    const severities = new Set(all.results.map((a: Alert) => a.severity));
    expect(severities.has('critical') && severities.has('warning')).toBe(true);
    expect(all.results.some((a: Alert) => a.resolved) && all.results.some((a: Alert) => !a.resolved)).toBe(true);
    const theirs = (await env.request('GET', '/api/outreach/health-alerts/', { token: env.otherOwner.token })).body.results as Alert[];
    expect(theirs.length).toBeGreaterThan(0);
    expect(all.results.filter((a: Alert) => theirs.some((t) => t.id === a.id))).toEqual([]);

    // Default: newest first.
    const detected = all.results.map((a: Alert) => a.detected_at);
    expect(detected).toEqual([...detected].sort().reverse());
    const asc = (await env.request('GET', '/api/outreach/health-alerts/?page_size=100&ordering=detected_at', { token: env.viewer.token })).body.results.map((a: Alert) => a.detected_at);
    expect(asc).toEqual([...detected].sort());

    const rank = { critical: 1, warning: 2, info: 3 } as Record<string, number>;
    const bySeverity = (await env.request('GET', '/api/outreach/health-alerts/?page_size=100&ordering=severity', { token: env.viewer.token })).body.results.map((a: Alert) => rank[a.severity]);
    expect(bySeverity).toEqual([...bySeverity].sort((a: number, b: number) => a - b));
    expect(bySeverity[0]).toBe(1);
    const bySeverityDesc = (await env.request('GET', '/api/outreach/health-alerts/?page_size=100&ordering=-severity', { token: env.viewer.token })).body.results.map((a: Alert) => rank[a.severity]);
    expect(bySeverityDesc).toEqual([...bySeverity].reverse());

    const resolved = (await env.request('GET', '/api/outreach/health-alerts/?resolved=true&page_size=100', { token: env.viewer.token })).body;
    const open = (await env.request('GET', '/api/outreach/health-alerts/?resolved=false&page_size=100', { token: env.viewer.token })).body;
    expect(resolved.results.length).toBeGreaterThan(0);
    expect(open.results.length).toBeGreaterThan(0);
    expect(resolved.results.every((a: Alert) => a.resolved && a.resolved_at !== null)).toBe(true);
    expect(open.results.every((a: Alert) => !a.resolved && a.resolved_at === null)).toBe(true);
    expect(resolved.count + open.count).toBe(all.count);

    const paged = (await env.request('GET', '/api/outreach/health-alerts/?page_size=2&ordering=severity', { token: env.viewer.token })).body;
    expect(paged.results).toHaveLength(2);
    expect(paged.next).toMatch(/ordering=severity/);
  });

  it('refuses unknown orderings and non-boolean resolved', async () => {
    const badOrdering = await env.request('GET', '/api/outreach/health-alerts/?ordering=kind', { token: env.viewer.token });
    expectError(badOrdering, 400);
    expect(badOrdering.body.details).toHaveProperty('ordering');
    const badResolved = await env.request('GET', '/api/outreach/health-alerts/?resolved=maybe', { token: env.viewer.token });
    expectError(badResolved, 400);
    expect(badResolved.body.details).toHaveProperty('resolved');
  });
});

describe('health stats', () => {
  it('answers exactly the documented shape; zeros without domains', async () => {
    const res = await env.request('GET', '/api/outreach/health-stats/', { token: env.owner.token });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['avg_health_score', 'healthy_domains', 'total_domains', 'unhealthy_domains']);
    const list = (await env.request('GET', '/api/outreach/domains/?page_size=100', { token: env.owner.token })).body.results as { status: string; health_score: number | null }[];
    const scores = list.map((d) => d.health_score).filter((s): s is number => s !== null);
    expect(res.body).toEqual({
      total_domains: list.length,
      healthy_domains: list.filter((d) => d.status === 'healthy').length,
      unhealthy_domains: list.filter((d) => d.status === 'unhealthy').length,
      avg_health_score: Math.round((scores.reduce((a, b) => a + b, 0) / scores.length) * 10) / 10,
    });
  });

  it('counts, and averages to one decimal, in a fresh organization', async () => {
    const fresh = await createTestEnv({ dnsServers: [dns.server], dnsTimeoutMs: 300 });
    try {
      const stats = () => fresh.request('GET', '/api/outreach/health-stats/', { token: fresh.viewer.token }).then((r) => r.body);
      expect(await stats()).toEqual({ total_domains: 0, healthy_domains: 0, unhealthy_domains: 0, avg_health_score: 0 });
      for (const domain of ['healthy.test', 'nodmarc.test', 'badspf.test', 'silent.test']) {
        expect((await fresh.request('POST', '/api/outreach/domains/', { token: fresh.owner.token, body: { domain } })).status).toBe(201);
      }
      // 100, 75, 75 and one without a score (DNS silent): neither healthy nor unhealthy.
      expect(await stats()).toEqual({ total_domains: 4, healthy_domains: 1, unhealthy_domains: 2, avg_health_score: 83.3 });
      expect(await fresh.request('GET', '/api/outreach/health-stats/', { token: fresh.otherOwner.token }).then((r) => r.body))
        .toEqual({ total_domains: 0, healthy_domains: 0, unhealthy_domains: 0, avg_health_score: 0 });
    } finally {
      await fresh.close();
    }
  });
});

describe('dashboard stats', () => {
  it('counts messages per event type over the period, with rates of sent to one decimal', async () => {
    const org = env.orgA;
    const q = (query: string) => env.request('GET', `/api/outreach/dashboard/stats/?domain=dash.test${query}`, { token: env.viewer.token });
    const empty = await q('');
    expect(empty.status).toBe(200);
    expect(empty.body).toMatchObject({ period: '30d', sent: 0, delivered: 0, delivery_rate: 0, open_rate: 0, bounce_rate: 0 });

    await event(org, 'dash.test', 'sent', 3, { prefix: 'd' });
    await event(org, 'dash.test', 'delivered', 2, { prefix: 'd' });
    await event(org, 'dash.test', 'opened', 1, { prefix: 'd' });
    await event(org, 'dash.test', 'opened', 1, { prefix: 'd' }); // a second open of the same message
    await event(org, 'dash.test', 'clicked', 1, { prefix: 'd' });
    await event(org, 'dash.test', 'replied', 1, { prefix: 'd' });
    await event(org, 'dash.test', 'bounced', 1, { prefix: 'd', bounceType: 'soft' });
    await event(org, 'dash.test', 'complained', 1, { prefix: 'd' });
    await event(org, 'dash.test', 'unsubscribed', 1, { prefix: 'd' });
    await event(org, 'dash.test', 'sent', 2, { prefix: 'week', daysAgo: 3 });
    await event(org, 'dash.test', 'sent', 4, { prefix: 'month', daysAgo: 20 });
    await event(org, 'dash.test', 'sent', 8, { prefix: 'quarter', daysAgo: 60 });
    await event(org, 'dash.test', 'sent', 16, { prefix: 'ancient', daysAgo: 100 });
    await event(env.orgB, 'dash.test', 'sent', 32, { prefix: 'theirs' });

    const day = await q('&period=24h');
    expect(day.body).toEqual({
      period: '24h', since: expect.any(String),
      sent: 3, delivered: 2, opened: 1, clicked: 1, replied: 1, bounced: 1, complained: 1, unsubscribed: 1,
      delivery_rate: 66.7, open_rate: 33.3, click_rate: 33.3, reply_rate: 33.3, bounce_rate: 33.3, complaint_rate: 33.3, unsubscribe_rate: 33.3,
    });
    const since = Date.parse(day.body.since);
    expect(Math.abs(Date.now() - 86_400_000 - since)).toBeLessThan(60_000);
    expect((await q('&period=7d')).body).toMatchObject({ period: '7d', sent: 5, delivered: 2, delivery_rate: 40 });
    expect((await q('')).body).toMatchObject({ period: '30d', sent: 9, opened: 1, open_rate: 11.1 });
    expect((await q('&period=30d')).body.sent).toBe(9);
    expect((await q('&period=90d')).body).toMatchObject({ sent: 17, delivery_rate: 11.8 });

    // Without the domain filter the organization's other domains count too.
    const all = await env.request('GET', '/api/outreach/dashboard/stats/?period=24h', { token: env.viewer.token });
    expect(all.body.sent).toBeGreaterThan(3);
  });

  it('refuses unknown periods and bad domains', async () => {
    const bad = await env.request('GET', '/api/outreach/dashboard/stats/?period=1y', { token: env.viewer.token });
    expectError(bad, 400);
    expect(bad.body.details).toHaveProperty('period');
    const badDomain = await env.request('GET', '/api/outreach/dashboard/stats/?domain=not%20a%20domain', { token: env.viewer.token });
    expectError(badDomain, 400);
    expect(badDomain.body.details).toHaveProperty('domain');
    expectError(await env.request('GET', '/api/outreach/dashboard/stats/'), 401);
  });
});
