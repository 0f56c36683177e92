import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsResolver } from '../src/integrations/dns.js';
import { checkDkim, checkDmarc, checkMx, checkSpf, healthScore, normalizeHostname, normalizeSelector, runDomainChecks, type DomainChecks } from '../src/services/outreach_checks.js';
import { startDnsServer, type TestDnsServer } from './dns-server.js';

// The record parsing of the checks, against a local DNS server (the HTTP flow is in outreach.test.ts).
let dns: TestDnsServer;
let r: DnsResolver;
const later = () => Date.now() + 5000;
const includes = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `include:${prefix}${i}.test`).join(' ');

beforeAll(async () => {
  const zones: Record<string, { TXT?: string[]; MX?: { exchange: string; priority: number }[] }> = {
    'two-spf.test': { TXT: ['v=spf1 -all', 'v=spf1 ~all'] },
    'neutral.test': { TXT: ['v=spf1 ip4:192.0.2.1 ?all'] },
    'noall.test': { TXT: ['v=spf1 mx a'] },
    'typo.test': { TXT: ['v=spf1 ip4:999.1.1.1 -all'] },
    'unknownmech.test': { TXT: ['v=spf1 includ:x.test -all'] },
    'deep.test': { TXT: [`v=spf1 ${includes(3, 'lvl')} -all`] },
    'broken-include.test': { TXT: ['v=spf1 include:nospf.test -all'] },
    'redirect.test': { TXT: ['v=spf1 redirect=_spf.redirect.test'] },
    'redirect-slow.test': { TXT: ['v=spf1 redirect=slow.test'] },
    '_spf.redirect.test': { TXT: ['v=spf1 mx ~all'] },
    'loop.test': { TXT: ['v=spf1 include:loop.test -all'] },
    'ip6.test': { TXT: ['v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/24 mx:mail.ip6.test/24 exists:%{i}.x.test include:%{l}.x.test ~all'] },
    'nospf.test': { TXT: ['just text'] },
    'nullmx.test': { MX: [{ exchange: '.', priority: 0 }] },
    'nomx.test': { TXT: ['hello'] },
    'revoked._domainkey.d.test': { TXT: ['v=DKIM1; k=rsa; p='] },
    'nov._domainkey.d.test': { TXT: ['k=rsa; p=QUJDRA=='] },
    'badv._domainkey.d.test': { TXT: ['k=rsa; v=DKIM1; p=QUJDRA=='] },
    'testing._domainkey.d.test': { TXT: ['v=DKIM1; t=y; p=QUJDRA=='] },
    'garbage._domainkey.d.test': { TXT: ['v=DKIM1; p=not base64!'] },
    'other._domainkey.d.test': { TXT: ['some verification token'] },
    'ok._domainkey.d.test': { TXT: ['v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo='] },
    '_dmarc.none.test': { TXT: ['v=DMARC1; p=none; rua=mailto:r@none.test'] },
    '_dmarc.two.test': { TXT: ['v=DMARC1; p=reject', 'v=DMARC1; p=none'] },
    '_dmarc.nop.test': { TXT: ['v=DMARC1; rua=mailto:r@nop.test'] },
    '_dmarc.badp.test': { TXT: ['v=DMARC1; p=block'] },
    '_dmarc.pct.test': { TXT: ['v=DMARC1;p=quarantine;pct=25'] },
    '_dmarc.notfirst.test': { TXT: ['p=reject; v=DMARC1'] },
  };
  // 3 includes, each with 4 includes of its own: 3 + 12 = 15 lookups.
  for (let i = 0; i < 3; i++) {
    zones[`lvl${i}.test`] = { TXT: [`v=spf1 ${includes(4, `leaf${i}-`)} ~all`] };
    for (let j = 0; j < 4; j++) zones[`leaf${i}-${j}.test`] = { TXT: ['v=spf1 ip4:192.0.2.1 -all'] };
  }
  dns = await startDnsServer(zones);
  dns.silent.add('slow.test');
  dns.servfail.add('_dmarc.servfail.test');
  r = new DnsResolver({ servers: [dns.server], timeoutMs: 300 });
});
afterAll(async () => { await dns.close(); });

describe('SPF', () => {
  it('fails on several records, bad terms, includes without SPF, loops and more than 10 lookups', async () => {
    expect(await checkSpf(r, 'two-spf.test', later())).toMatchObject({ result: { status: 'fail' }, failKind: 'spf_invalid' });
    const typo = await checkSpf(r, 'typo.test', later());
    expect(typo).toMatchObject({ result: { status: 'fail', message: expect.stringContaining('ip4:999.1.1.1') }, failKind: 'spf_invalid' });
    expect((await checkSpf(r, 'unknownmech.test', later())).result.status).toBe('fail');
    const deep = await checkSpf(r, 'deep.test', later());
    expect(deep).toMatchObject({ result: { status: 'fail', lookups: 15 }, failKind: 'spf_invalid' });
    expect(deep.result.message).toMatch(/15 DNS lookups.*limit is 10/);
    expect(await checkSpf(r, 'broken-include.test', later())).toMatchObject({ result: { status: 'fail', message: expect.stringContaining('nospf.test') }, failKind: 'spf_invalid' });
    expect((await checkSpf(r, 'loop.test', later())).result).toMatchObject({ status: 'fail', message: expect.stringContaining('loop') });
  });

  it('is missing when no TXT record starts with v=spf1', async () => {
    expect(await checkSpf(r, 'nospf.test', later())).toMatchObject({ result: { status: 'fail', record: null }, failKind: 'spf_missing' });
    expect(await checkSpf(r, 'missing.test', later())).toMatchObject({ result: { status: 'fail' }, failKind: 'spf_missing' });
  });

  it('warns on ?all and on no all; follows redirect= for the policy; counts lookups', async () => {
    expect(await checkSpf(r, 'neutral.test', later())).toMatchObject({ result: { status: 'warn', all: '?all', lookups: 0 } });
    expect((await checkSpf(r, 'neutral.test', later())).failKind).toBeUndefined();
    expect((await checkSpf(r, 'noall.test', later())).result).toMatchObject({ status: 'warn', all: null, lookups: 2 });
    expect((await checkSpf(r, 'redirect.test', later())).result).toMatchObject({ status: 'pass', all: '~all', lookups: 2 });
    const ip6 = await checkSpf(r, 'ip6.test', later());
    expect(ip6.result).toMatchObject({ status: 'pass', all: '~all', lookups: 3 });
    expect(ip6.result.message).toMatch(/at least/); // the macro name is counted, not followed
  });

  it('is unknown when DNS does not answer', async () => {
    expect(await checkSpf(r, 'slow.test', later())).toMatchObject({ result: { status: 'unknown', lookups: null } });
    expect((await checkSpf(r, 'slow.test', later())).failKind).toBeUndefined();
    // The record answers, but the one its policy is delegated to does not.
    expect(await checkSpf(r, 'redirect-slow.test', later())).toMatchObject({ result: { status: 'unknown', record: 'v=spf1 redirect=slow.test' } });
  });
});

describe('DKIM', () => {
  it('needs a non-empty base64 p= and v=DKIM1 first', async () => {
    expect(await checkDkim(r, 'd.test', 'ok')).toMatchObject({ result: { status: 'pass', selector: 'ok' } });
    expect(await checkDkim(r, 'd.test', 'revoked')).toMatchObject({ result: { status: 'fail', message: expect.stringContaining('revoked') }, failKind: 'dkim_invalid' });
    expect(await checkDkim(r, 'd.test', 'badv')).toMatchObject({ failKind: 'dkim_invalid' });
    expect(await checkDkim(r, 'd.test', 'garbage')).toMatchObject({ failKind: 'dkim_invalid' });
    expect(await checkDkim(r, 'd.test', 'other')).toMatchObject({ result: { status: 'fail' }, failKind: 'dkim_missing' });
    expect(await checkDkim(r, 'd.test', 'absent')).toMatchObject({ result: { status: 'fail', record: null }, failKind: 'dkim_missing' });
    expect((await checkDkim(r, 'd.test', 'nov')).result).toMatchObject({ status: 'warn', message: expect.stringContaining('v=DKIM1') });
    expect((await checkDkim(r, 'd.test', 'testing')).result).toMatchObject({ status: 'warn', message: expect.stringContaining('t=y') });
    expect((await checkDkim(r, 'slow.test', 'default')).result.status).toBe('fail'); // the selector name itself does not exist
  });
});

describe('DMARC', () => {
  it('reads the policy: none warns, quarantine/reject pass, anything else fails', async () => {
    expect(await checkDmarc(r, 'none.test')).toMatchObject({ result: { status: 'warn', policy: 'none' } });
    expect(await checkDmarc(r, 'pct.test')).toMatchObject({ result: { status: 'pass', policy: 'quarantine', message: expect.stringContaining('25%') } });
    expect(await checkDmarc(r, 'two.test')).toMatchObject({ result: { status: 'fail' }, failKind: 'dmarc_invalid' });
    expect(await checkDmarc(r, 'nop.test')).toMatchObject({ result: { status: 'fail', policy: null }, failKind: 'dmarc_invalid' });
    expect(await checkDmarc(r, 'badp.test')).toMatchObject({ failKind: 'dmarc_invalid' });
    expect(await checkDmarc(r, 'notfirst.test')).toMatchObject({ failKind: 'dmarc_missing' });
    expect(await checkDmarc(r, 'absent.test')).toMatchObject({ failKind: 'dmarc_missing' });
    expect(await checkDmarc(r, 'servfail.test')).toMatchObject({ result: { status: 'unknown' } });
  });
});

describe('MX', () => {
  it('fails on no MX and on a null MX', async () => {
    expect(await checkMx(r, 'nullmx.test')).toMatchObject({ result: { status: 'fail', hosts: [] }, failKind: 'mx_missing' });
    expect(await checkMx(r, 'nomx.test')).toMatchObject({ result: { status: 'fail' }, failKind: 'mx_missing' });
    expect((await checkMx(r, 'slow.test')).result.status).toBe('unknown');
  });
});

describe('bounds, names and score', () => {
  it('a check still waiting at the deadline is unknown', async () => {
    const slow = { mx: () => new Promise<never>(() => undefined), txt: () => new Promise<never>(() => undefined) };
    const out = await runDomainChecks(slow, 'x.test', 'default', Date.now() + 100);
    expect([out.mx, out.spf, out.dkim, out.dmarc].map((o) => o.result.status)).toEqual(['unknown', 'unknown', 'unknown', 'unknown']);
  });

  it('normalizes hostnames and selectors', () => {
    expect(normalizeHostname(' Mail.Example.COM. ')).toBe('mail.example.com');
    expect(normalizeHostname('bücher.example')).toBe('xn--bcher-kva.example');
    for (const bad of ['example', '1.2.3.4', '::1', 'a_b.example.com', 'user@example.com', 'example.com/path', 'ex ample.com', 'example.-com']) expect(normalizeHostname(bad), bad).toBeNull();
    expect(normalizeSelector('Google')).toBe('google');
    expect(normalizeSelector('s1._x')).toBe('s1._x');
    expect(normalizeSelector('a b')).toBeNull();
  });

  it('scores 25 per check (warn half), leaves unknown out, subtracts rate penalties', () => {
    const c = (mx: string, spf: string, dkim: string, dmarc: string) => ({ mx: { status: mx }, spf: { status: spf }, dkim: { status: dkim }, dmarc: { status: dmarc } }) as unknown as DomainChecks;
    const none = { bounce: 0, complaint: 0 };
    expect(healthScore(c('pass', 'pass', 'pass', 'pass'), none)).toBe(100);
    expect(healthScore(c('pass', 'warn', 'pass', 'fail'), none)).toBe(63);
    expect(healthScore(c('unknown', 'pass', 'pass', 'fail'), none)).toBe(67);
    expect(healthScore(c('unknown', 'unknown', 'unknown', 'unknown'), none)).toBeNull();
    expect(healthScore(c('pass', 'pass', 'pass', 'pass'), { bounce: 2, complaint: 0.1 })).toBe(100); // at the thresholds: no penalty
    expect(healthScore(c('pass', 'pass', 'pass', 'pass'), { bounce: 2.01, complaint: 0 })).toBe(75);
    expect(healthScore(c('pass', 'pass', 'pass', 'pass'), { bounce: 6, complaint: 0.5 })).toBe(20);
    expect(healthScore(c('fail', 'fail', 'pass', 'pass'), { bounce: 6, complaint: 0.5 })).toBe(0);
  });
});
