import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsResolver } from '../src/integrations/dns.js';
import { startDnsServer, type TestDnsServer } from './dns-server.js';

let dns: TestDnsServer;
beforeAll(async () => {
  dns = await startDnsServer({
    'example.test': { MX: [{ exchange: 'mx2.example.test', priority: 20 }, { exchange: 'mx1.example.test', priority: 10 }], TXT: ['v=spf1 include:_spf.example.test ~all', 'x'.repeat(300)], A: ['192.0.2.10'], ttl: 1 },
    'nomx.test': { A: ['192.0.2.11'] },
  });
  dns.silent.add('slow.test');
  dns.servfail.add('broken.test');
});
afterAll(async () => { await dns.close(); });

describe('DnsResolver against a local DNS server', () => {
  it('resolves MX sorted by priority, TXT joined, addresses', async () => {
    const r = new DnsResolver({ servers: [dns.server] });
    expect(await r.mx('example.test')).toEqual({ status: 'ok', records: [{ exchange: 'mx1.example.test', priority: 10 }, { exchange: 'mx2.example.test', priority: 20 }] });
    const txt = await r.txt('example.test');
    expect(txt.status === 'ok' && txt.records).toEqual(['v=spf1 include:_spf.example.test ~all', 'x'.repeat(300)]);
    expect(await r.addresses('example.test')).toEqual({ status: 'ok', records: ['192.0.2.10'] });
  });

  it('tells "does not exist" and "no records" apart from failures', async () => {
    const r = new DnsResolver({ servers: [dns.server], timeoutMs: 300 });
    expect(await r.mx('missing.test')).toEqual({ status: 'nxdomain' });
    expect(await r.mx('nomx.test')).toEqual({ status: 'nodata' });
    expect((await r.mx('slow.test')).status).toBe('error');
    expect((await r.mx('broken.test')).status).toBe('error');
    expect((await new DnsResolver({ servers: ['127.0.0.1:9'], timeoutMs: 300 }).mx('example.test')).status).toBe('error');
  });

  it('caches answers for their TTL and shares concurrent lookups', async () => {
    const r = new DnsResolver({ servers: [dns.server] });
    await Promise.all([r.mx('example.test'), r.mx('example.test'), r.mx('EXAMPLE.test.')]);
    expect(r.queries).toBe(1);
    await r.mx('example.test');
    expect(r.queries).toBe(1);
    await new Promise((res) => setTimeout(res, 1100)); // the zone's TTL is one second
    await r.mx('example.test');
    expect(r.queries).toBe(2);
  });

  it('does not cache failures', async () => {
    const r = new DnsResolver({ servers: [dns.server], timeoutMs: 200 });
    await r.mx('slow.test');
    await r.mx('slow.test');
    expect(r.queries).toBe(2);
  });
});
