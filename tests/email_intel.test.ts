import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsResolver } from '../src/integrations/dns.js';
import { analyzeEmail, espOf, isDisposableDomain, isRoleAccount, parseEmail } from '../src/services/email_intel.js';
import { startDnsServer, type TestDnsServer } from './dns-server.js';

// One zone per case, served by a real (local) DNS server, read through the real resolver.
let dns: TestDnsServer;
let resolver: DnsResolver;

const mx = (exchange: string, priority = 10) => ({ MX: [{ exchange, priority }] });

beforeAll(async () => {
  dns = await startDnsServer({
    'gw.test': { MX: [{ exchange: 'alt1.aspmx.l.google.com', priority: 5 }, { exchange: 'aspmx.l.google.com', priority: 1 }] },
    'googlemail-mx.test': mx('gmail-smtp-in.l.googlemail.com'),
    'm365.test': mx('m365-test.mail.protection.outlook.com'),
    'outlook-consumer.test': mx('olc.protection.outlook.com'),
    'yahoo.test': mx('mta5.am0.yahoodns.net'),
    'zoho.test': mx('mx.zoho.eu'),
    'zoho-in.test': mx('mx2.zoho.in'),
    'proton.test': mx('mail.protonmail.ch'),
    'ses.test': mx('inbound-smtp.eu-west-1.amazonaws.com'),
    'mimecast.test': mx('eu-smtp-inbound-1.mimecast.com'),
    'proofpoint.test': mx('mx0a-001.pphosted.com'),
    'fastmail.test': mx('in1-smtp.messagingengine.com'),
    'icloud.test': mx('mx01.mail.icloud.com'),
    'selfhosted.test': mx('mail.selfhosted.test'),
    'elsewhere.test': mx('mx.some-isp.example'),
    'implicit.test': { A: ['192.0.2.10'] },
    'implicit6.test': { AAAA: ['2001:db8::10'] },
    'nomail.test': { TXT: ['v=spf1 -all'] },
    'nullmx.test': mx('.', 0),
    'xn--mller-kva.test': mx('aspmx.l.google.com'),
    'mailinator.com': mx('mail.mailinator.com'),
    'roles.test': mx('aspmx.l.google.com'),
  });
  dns.silent.add('silent.test');
  dns.servfail.add('broken.test');
  resolver = new DnsResolver({ servers: [dns.server], timeoutMs: 400 });
});
afterAll(async () => { await dns.close(); });

describe('syntax (RFC 5322 addr-spec, practical subset)', () => {
  it.each([
    'a@b.co', 'first.last@example.com', "o'brien+tag@example.co.uk", 'x!#$%&*/=?^_`{|}~-@example.org',
    'ünïcode@example.com', 'user@müller.de', 'user@EXAMPLE.COM', `${'a'.repeat(64)}@example.com`,
    `a@${'b'.repeat(63)}.com`,
  ])('accepts %s', (e) => { expect(parseEmail(e)).not.toBeNull(); });

  it.each([
    '', 'plain', '@example.com', 'user@', 'a@@b.com', 'a@b', '.a@b.com', 'a.@b.com', 'a..b@c.com', 'a b@c.com',
    '"quoted"@example.com', 'user@[192.0.2.1]', 'user@-bad.com', 'user@bad-.com', 'user@exa_mple.com', 'user@example.123',
    `${'a'.repeat(65)}@example.com`, `a@${'b'.repeat(64)}.com`, `${'a'.repeat(60)}@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.com`,
    'a,b@c.com', 'a(b)@c.com', 'a<b>@c.com', 'a@b..com',
  ])('rejects %j', (e) => { expect(parseEmail(e)).toBeNull(); });

  it('converts IDN domains to punycode and lower-cases them', () => {
    expect(parseEmail('Jo@Müller.TEST')).toEqual({ local: 'Jo', domain: 'xn--mller-kva.test' });
  });
});

describe('lists', () => {
  it('disposable domains, including subdomains of listed ones', () => {
    expect(isDisposableDomain('mailinator.com')).toBe(true);
    expect(isDisposableDomain('eu.mailinator.com')).toBe(true);
    expect(isDisposableDomain('gmail.com')).toBe(false);
    expect(isDisposableDomain('example.com')).toBe(false);
  });
  it('role accounts, case-insensitive, ignoring +tags', () => {
    for (const r of ['info', 'Sales', 'support', 'admin', 'contact', 'hello', 'team', 'office', 'billing', 'noreply', 'no-reply', 'postmaster', 'abuse', 'webmaster', 'INFO+x']) {
      expect(isRoleAccount(r), r).toBe(true);
    }
    for (const r of ['jane', 'information', 'salesman', 'john.admin']) expect(isRoleAccount(r), r).toBe(false);
  });
  it('ESP rules on MX host names', () => {
    expect(espOf('aspmx.l.google.com', 'x.test')).toBe('google_workspace');
    expect(espOf('ASPMX.L.GOOGLE.COM.', 'x.test')).toBe('google_workspace');
    expect(espOf('mx1.hotmail.com', 'x.test')).toBe('microsoft_365');
    expect(espOf('us-smtp-inbound-1.mimecast.com', 'x.test')).toBe('mimecast');
    expect(espOf('mx1.barracudanetworks.com', 'x.test')).toBe('barracuda');
    expect(espOf('mx.example.co.uk', 'sales.example.co.uk')).toBe('self_hosted');
    expect(espOf('mx.other.co.uk', 'example.co.uk')).toBe('other');
    expect(espOf('notgoogle.com', 'x.test')).toBe('other');
    expect(espOf('inbound-smtp.amazonaws.com.evil.test', 'x.test')).toBe('other');
  });
});

describe('analyzeEmail against DNS', () => {
  const cases: Array<[string, string, string | null, string | null, string[]]> = [
    // email, validity, esp, esg, flags
    ['jane@gw.test', 'valid', 'google_workspace', 'google', []],
    ['jane@googlemail-mx.test', 'valid', 'google_workspace', 'google', []],
    ['jane@m365.test', 'valid', 'microsoft_365', 'microsoft', []],
    ['jane@outlook-consumer.test', 'valid', 'microsoft_365', 'microsoft', []],
    ['jane@yahoo.test', 'valid', 'yahoo', 'yahoo', []],
    ['jane@zoho.test', 'valid', 'zoho', 'other', []],
    ['jane@zoho-in.test', 'valid', 'zoho', 'other', []],
    ['jane@proton.test', 'valid', 'proton', 'other', []],
    ['jane@ses.test', 'valid', 'amazon_ses', 'other', []],
    ['jane@mimecast.test', 'valid', 'mimecast', 'security_gateway', []],
    ['jane@proofpoint.test', 'valid', 'proofpoint', 'security_gateway', []],
    ['jane@fastmail.test', 'valid', 'fastmail', 'other', []],
    ['jane@icloud.test', 'valid', 'icloud', 'other', []],
    ['jane@selfhosted.test', 'valid', 'self_hosted', 'other', []],
    ['jane@elsewhere.test', 'valid', 'other', 'other', []],
    ['jane@implicit.test', 'valid', 'self_hosted', 'other', []],
    ['jane@implicit6.test', 'valid', 'self_hosted', 'other', []],
    ['jane@nomail.test', 'invalid', null, null, ['invalid_email', 'no_mx']],
    ['jane@nullmx.test', 'invalid', null, null, ['invalid_email', 'no_mx']],
    ['jane@does-not-exist.test', 'invalid', null, null, ['invalid_email', 'no_mx']],
    ['jane@müller.test', 'valid', 'google_workspace', 'google', []],
    ['info@roles.test', 'risky', 'google_workspace', 'google', ['role_account']],
    ['someone@mailinator.com', 'risky', 'self_hosted', 'other', ['disposable_domain']],
    ['noreply@mailinator.com', 'risky', 'self_hosted', 'other', ['disposable_domain', 'role_account']],
    ['not an email', 'invalid', null, null, ['invalid_email']],
    ['jane@silent.test', 'unknown', null, null, []],
    ['jane@broken.test', 'unknown', null, null, []],
    ['sales@silent.test', 'unknown', null, null, ['role_account']],
  ];
  it.each(cases)('%s → %s / %s / %s %j', async (email, validity, esp, esg, flags) => {
    const r = await analyzeEmail(resolver, email);
    expect(r).toEqual({ email_validity: validity, esp, esg, flags });
  });

  it('no DNS query for a malformed address', async () => {
    const before = dns.queries.length;
    await analyzeEmail(resolver, 'a..b@gw.test');
    expect(dns.queries.length).toBe(before);
  });

  it('a time bound shorter than the lookup answers unknown, never a guess', async () => {
    const slow = new DnsResolver({ servers: [dns.server], timeoutMs: 5000 });
    dns.silent.add('slow.test');
    const r = await analyzeEmail(slow, 'jane@slow.test', { timeoutMs: 50 });
    expect(r.email_validity).toBe('unknown');
    expect(r.esp).toBeNull();
  });

  it('without a resolver, a well-formed address is unknown', async () => {
    expect(await analyzeEmail(null, 'jane@gw.test')).toEqual({ email_validity: 'unknown', esp: null, esg: null, flags: [] });
    expect((await analyzeEmail(null, 'bad@')).email_validity).toBe('invalid');
  });
});
