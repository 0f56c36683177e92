import { createServer, Server, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../src/errors.js';
import { assertOutboundUrl, fetchOutbound, forbiddenReason, type Resolver } from '../src/integrations/outbound.js';

const none = { outboundAllowlist: [] as string[] };

async function refusal(p: Promise<unknown>): Promise<{ status: number; details: Record<string, string> }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AppError) return { status: err.status, details: err.details as Record<string, string> };
    throw err;
  }
  throw new Error('expected a refusal, got an answer');
}

/** A resolver answering from a table, counting its calls (no real DNS). */
function fakeDns(table: Record<string, string[]>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const fn = (async (host: string) => {
    calls.push(host);
    const addrs = table[host];
    if (!addrs) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
    return addrs.map((address) => ({ address, family: address.includes(':') ? 6 as const : 4 as const }));
  }) as Resolver & { calls: string[] };
  fn.calls = calls;
  return fn;
}

describe('forbiddenReason', () => {
  it('classifies special-purpose addresses, IPv4 and IPv6, and IPv6 forms embedding IPv4', () => {
    const refused: Record<string, RegExp> = {
      '127.0.0.1': /loopback/, '127.255.0.9': /loopback/, '::1': /loopback/,
      '10.0.0.1': /private/, '172.16.0.1': /private/, '172.31.255.255': /private/, '192.168.1.1': /private/, 'fd12:3456::1': /private/, 'fc00::1': /private/,
      '169.254.169.254': /link-local/, 'fe80::1': /link-local/, 'fe80::1%eth0': /link-local/,
      '0.0.0.0': /unspecified/, '::': /unspecified/, '0.1.2.3': /unspecified/,
      '224.0.0.1': /multicast/, '239.255.255.250': /multicast/, 'ff02::1': /multicast/,
      '100.64.0.1': /carrier-grade/, '100.127.255.254': /carrier-grade/,
      '255.255.255.255': /broadcast/, '192.0.2.5': /documentation/, '2001:db8::1': /documentation/,
      '::ffff:127.0.0.1': /loopback.*IPv6 form/, '::ffff:7f00:1': /loopback/, '::ffff:a9fe:a9fe': /link-local/, '::ffff:10.0.0.1': /private/,
      '::127.0.0.1': /loopback/, '64:ff9b::a9fe:a9fe': /link-local/, '2002:7f00:1::': /loopback/, '2002:c0a8:101::1': /private/,
    };
    for (const [ip, why] of Object.entries(refused)) expect(forbiddenReason(ip), ip).toMatch(why);
    for (const ip of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1']) {
      expect(forbiddenReason(ip), ip).toBeNull();
    }
  });
});

describe('assertOutboundUrl', () => {
  it('refuses loopback, private, link-local, unspecified and their disguises with a 400 naming the field', async () => {
    const urls = [
      'http://127.0.0.1/', 'http://localhost:8000/admin', 'http://[::1]/', 'http://169.254.169.254/latest/meta-data/', 'http://0.0.0.0:22/',
      'http://10.1.2.3/', 'http://192.168.0.1/', 'http://172.20.0.5/', 'http://100.64.0.7/', 'http://[::ffff:127.0.0.1]/', 'http://[::ffff:7f00:1]/',
      'http://2130706433/', 'http://0177.0.0.1/', 'http://0x7f.0.0.1/', 'http://0x7f000001/', 'http://127.1/', 'http://017700000001/',
      'http://[fe80::1]/', 'http://[fd00::1]/', 'http://[::]/', 'https://[64:ff9b::a9fe:a9fe]/', 'http://user:pw@127.0.0.1/', 'http://LOCALHOST/',
    ];
    for (const url of urls) {
      const r = await refusal(assertOutboundUrl(url, none));
      expect(r.status, url).toBe(400);
      expect(Object.keys(r.details), url).toEqual(['url']);
      expect(r.details.url, url).toMatch(/not allowed/);
    }
    // A trailing dot resolves (to loopback) or not, depending on the system: refused either way.
    expect((await refusal(assertOutboundUrl('http://localhost./', none))).status).toBe(400);
    const custom = await refusal(assertOutboundUrl('http://10.0.0.1/', none, { field: 'endpoint' }));
    expect(Object.keys(custom.details)).toEqual(['endpoint']);
  });

  it('allows http and https only, and real URLs only', async () => {
    for (const url of ['ftp://example.com/a.csv', 'file:///etc/passwd', 'gopher://example.com/', 'javascript:alert(1)', 'data:text/csv,a,b', 'ws://example.com/']) {
      const r = await refusal(assertOutboundUrl(url, none));
      expect(r.status, url).toBe(400);
      expect(r.details.url, url).toMatch(/Only http and https/);
    }
    for (const url of ['not a url', '/relative/path', 'http://', '']) expect((await refusal(assertOutboundUrl(url, none))).status, url).toBe(400);
  });

  it('judges every address a name resolves to', async () => {
    const dns = fakeDns({ 'public.test': ['93.184.216.34'], 'evil.test': ['10.0.0.5'], 'mixed.test': ['93.184.216.34', '127.0.0.1'], 'six.test': ['::ffff:169.254.169.254'] });
    const ok = await assertOutboundUrl('https://public.test/a.csv', none, { resolve: dns });
    expect(ok.addresses).toEqual([{ address: '93.184.216.34', family: 4 }]);
    expect((await refusal(assertOutboundUrl('http://evil.test/', none, { resolve: dns }))).details.url).toMatch(/"evil.test" resolves to 10.0.0.5, a private address/);
    expect((await refusal(assertOutboundUrl('http://mixed.test/', none, { resolve: dns }))).details.url).toMatch(/127.0.0.1/);
    expect((await refusal(assertOutboundUrl('http://six.test/', none, { resolve: dns }))).details.url).toMatch(/link-local/);
    expect((await refusal(assertOutboundUrl('http://nowhere.test/', none, { resolve: dns }))).details.url).toMatch(/does not resolve/);
    // Literal public addresses need no DNS.
    expect((await assertOutboundUrl('http://8.8.8.8/x', none, { resolve: dns })).addresses).toEqual([{ address: '8.8.8.8', family: 4 }]);
  });

  it('lets the allowlist open hosts and ranges, and nothing else', async () => {
    const dns = fakeDns({ 'intranet.test': ['10.9.8.7'], 'files.corp.test': ['192.168.5.5'], 'other.test': ['192.168.9.9'] });
    const config = { outboundAllowlist: ['localhost', '10.0.0.0/8', '*.corp.test', '127.0.0.1', 'fd00::/8'] };
    await expect(assertOutboundUrl('http://localhost:3000/', config)).resolves.toBeTruthy();
    await expect(assertOutboundUrl('http://127.0.0.1:3000/', config)).resolves.toBeTruthy();
    await expect(assertOutboundUrl('http://[::ffff:127.0.0.1]:3000/', config)).resolves.toBeTruthy();
    await expect(assertOutboundUrl('http://10.200.0.1/', config)).resolves.toBeTruthy();
    await expect(assertOutboundUrl('http://intranet.test/', config, { resolve: dns })).resolves.toBeTruthy();
    await expect(assertOutboundUrl('http://files.corp.test/', config, { resolve: dns })).resolves.toBeTruthy();
    await expect(assertOutboundUrl('http://[fd00::5]/', config)).resolves.toBeTruthy();
    expect((await refusal(assertOutboundUrl('http://other.test/', config, { resolve: dns }))).status).toBe(400);
    expect((await refusal(assertOutboundUrl('http://127.0.0.2/', config))).status).toBe(400);
    expect((await refusal(assertOutboundUrl('http://169.254.169.254/', config))).status).toBe(400);
    expect((await refusal(assertOutboundUrl('http://192.168.1.1/', config))).status).toBe(400);
    // The scheme rule holds even for allowlisted hosts.
    expect((await refusal(assertOutboundUrl('ftp://localhost/', config))).status).toBe(400);
  });
});

describe('fetchOutbound', () => {
  let server: Server;
  let port: number;
  let seen: IncomingMessage[] = [];
  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
    '/hello': (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('hello'); },
    '/echo': (req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify({ host: req.headers.host, auth: req.headers.authorization ?? null, method: req.method })); },
    '/to-private': (_req, res) => { res.writeHead(302, { location: 'http://10.0.0.1/secret' }); res.end(); },
    '/to-metadata': (_req, res) => { res.writeHead(301, { location: 'http://169.254.169.254/latest/meta-data/iam' }); res.end(); },
    '/to-ipv6-loopback': (_req, res) => { res.writeHead(307, { location: `http://[::1]:${port}/hello` }); res.end(); },
    '/r1': (_req, res) => { res.writeHead(302, { location: '/r2' }); res.end(); },
    '/r2': (_req, res) => { res.writeHead(302, { location: '/r3' }); res.end(); },
    '/r3': (_req, res) => { res.writeHead(302, { location: '/hello' }); res.end(); },
    '/r0': (_req, res) => { res.writeHead(302, { location: '/r1' }); res.end(); },
    '/see-other': (_req, res) => { res.writeHead(303, { location: '/echo' }); res.end(); },
    '/cross-origin': (_req, res) => { res.writeHead(302, { location: `http://localhost:${port}/echo` }); res.end(); },
    '/slow': () => { /* never answers */ },
    '/big': (_req, res) => { res.writeHead(200); res.end('x'.repeat(5000)); },
  };
  beforeAll(async () => {
    server = createServer((req, res) => { seen.push(req); (routes[req.url ?? ''] ?? ((_q, r) => { r.writeHead(404); r.end(); }))(req, res); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const allow = { outboundAllowlist: ['127.0.0.1'] };

  it('refuses a local server unless it is allowlisted, before connecting', async () => {
    seen = [];
    const r = await refusal(fetchOutbound(`http://127.0.0.1:${port}/hello`, none));
    expect(r.status).toBe(400);
    expect(seen).toHaveLength(0);
    const res = await fetchOutbound(`http://127.0.0.1:${port}/hello`, allow);
    expect(res.status).toBe(200);
    expect(res.ok).toBe(true);
    expect(res.headers.get('content-type')).toBe('text/plain');
    expect(await res.text()).toBe('hello');
  });

  it('connects to the address it checked, keeping the Host header (no second resolution)', async () => {
    // The system resolver does not know this name: only the checked answer can be used.
    const dns = fakeDns({ 'pinned.test': ['127.0.0.1'] });
    const res = await fetchOutbound(`http://pinned.test:${port}/echo`, { outboundAllowlist: ['127.0.0.0/8'] }, { resolve: dns });
    expect(await res.json()).toEqual({ host: `pinned.test:${port}`, auth: null, method: 'GET' });
    expect(dns.calls).toEqual(['pinned.test']);
  });

  it('re-checks every redirect: a redirect to a private or metadata address is refused', async () => {
    for (const path of ['/to-private', '/to-metadata', '/to-ipv6-loopback']) {
      const r = await refusal(fetchOutbound(`http://127.0.0.1:${port}${path}`, allow));
      expect(r.status, path).toBe(400);
      expect(r.details.url, path).toMatch(/^Redirected to .* refused/);
    }
  });

  it('follows at most three redirects', async () => {
    const three = await fetchOutbound(`http://127.0.0.1:${port}/r1`, allow);
    expect(three.redirects).toBe(3);
    expect(three.url).toBe(`http://127.0.0.1:${port}/hello`);
    expect(await three.text()).toBe('hello');
    const four = await refusal(fetchOutbound(`http://127.0.0.1:${port}/r0`, allow));
    expect(four.status).toBe(502);
    expect(four.details.url).toMatch(/More than 3 redirects/);
    const none0 = await refusal(fetchOutbound(`http://127.0.0.1:${port}/r3`, allow, { maxRedirects: 0 }));
    expect(none0.status).toBe(502);
  });

  it('turns POST into GET on 303 and drops credentials across origins', async () => {
    const posted = await fetchOutbound(`http://127.0.0.1:${port}/see-other`, allow, { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json', authorization: 'Bearer s3cret' } });
    expect(await posted.json()).toMatchObject({ method: 'GET', auth: 'Bearer s3cret' });
    const crossed = await fetchOutbound(`http://127.0.0.1:${port}/cross-origin`, { outboundAllowlist: ['127.0.0.1', 'localhost', '::1'] }, { headers: { authorization: 'Bearer s3cret' } });
    expect(await crossed.json()).toMatchObject({ host: `localhost:${port}`, auth: null });
  });

  it('times out, reports connection failures as 502, and bounds bodies read whole', async () => {
    const slow = await refusal(fetchOutbound(`http://127.0.0.1:${port}/slow`, allow, { timeoutMs: 200 }));
    expect(slow.status).toBe(502);
    expect(slow.details.url).toMatch(/No response within/);
    const closed = new Server();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = await refusal(fetchOutbound(`http://127.0.0.1:${deadPort}/`, allow));
    expect(refused.status).toBe(502);
    expect(refused.details.url).toMatch(/ECONNREFUSED/);
    const big = await fetchOutbound(`http://127.0.0.1:${port}/big`, allow);
    expect((await refusal(big.text(1000))).status).toBe(502);
    const missing = await fetchOutbound(`http://127.0.0.1:${port}/nope`, allow);
    expect(missing.status).toBe(404);
    expect(missing.ok).toBe(false);
    missing.body.destroy();
  });

  it('stops when the caller aborts', async () => {
    const controller = new AbortController();
    const p = fetchOutbound(`http://127.0.0.1:${port}/slow`, allow, { signal: controller.signal, timeoutMs: 10_000 });
    controller.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
  });
});

describe('fetchOutbound: kept-alive connections', () => {
  const listen = (s: Server, port: number, host: string) => new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(port, host, () => resolve()); });
  const close = (s: Server) => { s.closeAllConnections(); return new Promise((r) => s.close(r)); };

  it('reuses a connection for one host and vetted address, and never for another address of the same name', async () => {
    const connections: string[] = [];
    const handler = (req: IncomingMessage, res: ServerResponse) => { res.writeHead(200); res.end(req.socket.localAddress); };
    const a = createServer(handler).on('connection', (s) => connections.push(s.localAddress!));
    await listen(a, 0, '127.0.0.1');
    const port = (a.address() as AddressInfo).port;
    const b = createServer(handler).on('connection', (s) => connections.push(s.localAddress!));
    await listen(b, port, '127.0.0.2');
    try {
      const allow = { outboundAllowlist: ['127.0.0.0/8'] };
      const get = async (address: string) => {
        const res = await fetchOutbound(`http://svc.test:${port}/`, allow, { resolve: fakeDns({ 'svc.test': [address] }) });
        const body = await res.text();
        await new Promise((r) => setImmediate(r));
        return body;
      };
      for (let i = 0; i < 3; i++) expect(await get('127.0.0.1')).toBe('127.0.0.1');
      expect(connections).toEqual(['127.0.0.1']);
      // The name now resolves elsewhere: the open connection to the old address is not used for it.
      expect(await get('127.0.0.2')).toBe('127.0.0.2');
      expect(await get('127.0.0.1')).toBe('127.0.0.1');
      expect(connections).toEqual(['127.0.0.1', '127.0.0.2']);
    } finally {
      await close(a);
      await close(b);
    }
  });
});
