import { lookup as dnsLookup } from 'node:dns/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import type { Config } from '../config.js';
import { AppError, badRequest } from '../errors.js';

/**
 * The one guard for requests the server makes on a user's behalf (URL imports, HTTP tools,
 * webhooks): only http and https, and never to loopback, private, link-local (the cloud metadata
 * address included), unspecified, multicast, carrier-grade NAT or otherwise reserved addresses —
 * in IPv4, IPv6 and the IPv6 forms that embed an IPv4 address — unless `OUTBOUND_ALLOWLIST` names
 * the host or a range holding the address.
 *
 * `fetchOutbound` connects to the very address that was checked (the check's DNS answer is handed
 * to the socket, so a second resolution cannot swap in another address), keeps connections alive
 * per vetted address, re-checks every redirect, follows at most three, and is bounded in time.
 */

export type OutboundConfig = Pick<Config, 'outboundAllowlist'>;

export interface ResolvedAddress { address: string; family: 4 | 6 }
/** Resolves a host name to all its addresses (node's dns.lookup with all: true by default). */
export type Resolver = (host: string) => Promise<ResolvedAddress[]>;

export interface CheckOptions {
  /** The field named in the 400's details (default `url`). */
  field?: string;
  /** Replaces DNS resolution (tests). */
  resolve?: Resolver;
}

export interface VettedUrl {
  url: URL;
  /** The host as a socket wants it (IPv6 without brackets). */
  host: string;
  /** Every address the host resolved to, all of them allowed. */
  addresses: ResolvedAddress[];
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** 16 bytes for IPv6, 4 for IPv4; null when not an IP address. */
export function parseIp(text: string): Uint8Array | null {
  const s = text.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const v = isIP(s);
  if (v === 4) return Uint8Array.from(s.split('.').map(Number));
  if (v !== 6) return null;
  let head = s;
  let tail: number[] = [];
  const dotted = /:(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const b = dotted[1].split('.').map(Number);
    tail = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
    head = s.slice(0, dotted.index + 1);
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const [l, r] = head.includes('::') ? head.split('::') : [head, undefined];
  const left = l ? l.split(':').map((h) => parseInt(h, 16)) : [];
  const right = r ? r.split(':').map((h) => parseInt(h, 16)) : [];
  const fill = r === undefined ? [] : new Array(8 - left.length - right.length - tail.length).fill(0);
  const words = [...left, ...fill, ...right, ...tail];
  const out = new Uint8Array(16);
  words.forEach((w, i) => { out[i * 2] = w >> 8; out[i * 2 + 1] = w & 255; });
  return out;
}

interface Cidr { bytes: Uint8Array; prefix: number }

function cidr(text: string): Cidr {
  const [addr, bits] = text.split('/');
  const bytes = parseIp(addr);
  const prefix = bits === undefined ? (bytes?.length ?? 0) * 8 : Number(bits);
  if (!bytes || !Number.isInteger(prefix) || prefix < 0 || prefix > bytes.length * 8 || !/^\d*$/.test(bits ?? '')) throw new Error(`invalid address range "${text}"`);
  return { bytes, prefix };
}

function inCidr(ip: Uint8Array, range: Cidr): boolean {
  if (ip.length !== range.bytes.length) return false;
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip[i] & mask) !== (range.bytes[i] & mask)) return false;
  }
  return true;
}

const V4_RULES: [string, string][] = [
  ['0.0.0.0/8', 'an unspecified ("this network") address'],
  ['10.0.0.0/8', 'a private address'],
  ['100.64.0.0/10', 'a carrier-grade NAT address'],
  ['127.0.0.0/8', 'a loopback address'],
  ['169.254.0.0/16', 'a link-local address (cloud metadata lives here)'],
  ['172.16.0.0/12', 'a private address'],
  ['192.0.0.0/24', 'a reserved address'],
  ['192.0.2.0/24', 'a documentation address'],
  ['192.168.0.0/16', 'a private address'],
  ['198.18.0.0/15', 'a reserved (benchmarking) address'],
  ['198.51.100.0/24', 'a documentation address'],
  ['203.0.113.0/24', 'a documentation address'],
  ['224.0.0.0/4', 'a multicast address'],
  ['240.0.0.0/4', 'a reserved or broadcast address'],
];
const V6_RULES: [string, string][] = [
  ['::/128', 'an unspecified address'],
  ['::1/128', 'a loopback address'],
  ['64:ff9b:1::/48', 'a private (local NAT64) address'],
  ['100::/64', 'a discard-only address'],
  ['2001:db8::/32', 'a documentation address'],
  ['fc00::/7', 'a private (unique local) address'],
  ['fe80::/10', 'a link-local address'],
  ['fec0::/10', 'a private (site-local) address'],
  ['ff00::/8', 'a multicast address'],
];
const v4Rules = V4_RULES.map(([r, why]) => ({ range: cidr(r), why }));
const v6Rules = V6_RULES.map(([r, why]) => ({ range: cidr(r), why }));
// IPv6 forms that carry an IPv4 address: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
// NAT64 (64:ff9b::a.b.c.d) in their last 32 bits, and 6to4 (2002:AABB:CCDD::) in bits 16–48.
const MAPPED = cidr('::ffff:0:0/96');
const COMPATIBLE = cidr('::/96');
const NAT64 = cidr('64:ff9b::/96');
const SIXTOFOUR = cidr('2002::/16');

/** The IPv4 address an IPv6 address embeds, if it is one of the forms above. */
function embeddedV4(ip: Uint8Array): Uint8Array | null {
  if (ip.length !== 16) return null;
  if (inCidr(ip, MAPPED) || inCidr(ip, COMPATIBLE) || inCidr(ip, NAT64)) return ip.slice(12, 16);
  if (inCidr(ip, SIXTOFOUR)) return ip.slice(2, 6);
  return null;
}

const v4Text = (b: Uint8Array) => [...b].join('.');

/**
 * Why an address must not be reached (`"a loopback address"`…), or null for a public one. IPv6
 * addresses that embed an IPv4 address are judged by that address too.
 */
export function forbiddenReason(address: string): string | null {
  const ip = parseIp(address);
  if (!ip) return 'not an IP address';
  if (ip.length === 4) return v4Rules.find((r) => inCidr(ip, r.range))?.why ?? null;
  const v4 = embeddedV4(ip);
  if (v4 && !(inCidr(ip, COMPATIBLE) && (ip[15] <= 1 && ip.slice(12, 15).every((b) => b === 0)))) {
    const why = v4Rules.find((r) => inCidr(v4, r.range))?.why;
    if (why) return `${why} (${v4Text(v4)}, in an IPv6 form)`;
    if (inCidr(ip, MAPPED)) return null;
  }
  return v6Rules.find((r) => inCidr(ip, r.range))?.why ?? null;
}

// ---------------------------------------------------------------------------------------------
// The allowlist

interface Allowlist { hosts: Set<string>; suffixes: string[]; ranges: Cidr[] }

const normalizeHost = (h: string) => h.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');

const allowlistCache = new WeakMap<string[], Allowlist>();
function allowlistOf(config: OutboundConfig): Allowlist {
  const entries = config.outboundAllowlist ?? [];
  const cached = allowlistCache.get(entries);
  if (cached) return cached;
  const list: Allowlist = { hosts: new Set(), suffixes: [], ranges: [] };
  for (const raw of entries) {
    const e = raw.trim();
    if (!e) continue;
    if (e.includes('/') || parseIp(e)) list.ranges.push(cidr(e.replace(/^\[|\]$/g, '')));
    else if (e.startsWith('*.')) list.suffixes.push(normalizeHost(e.slice(1)));
    else list.hosts.add(normalizeHost(e));
  }
  allowlistCache.set(entries, list);
  return list;
}

function hostAllowed(list: Allowlist, host: string): boolean {
  const h = normalizeHost(host);
  return list.hosts.has(h) || list.suffixes.some((s) => h.endsWith(s));
}

function addressAllowed(list: Allowlist, address: string): boolean {
  const ip = parseIp(address);
  if (!ip) return false;
  const v4 = ip.length === 16 && inCidr(ip, MAPPED) ? ip.slice(12, 16) : null;
  return list.ranges.some((r) => inCidr(ip, r) || (v4 !== null && inCidr(v4, r)));
}

// ---------------------------------------------------------------------------------------------
// The check

export const systemResolver: Resolver = async (host) => {
  const found = await dnsLookup(host, { all: true, verbatim: true });
  return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

/**
 * Checks that `url` may be fetched: http or https, and every address its host resolves to is
 * public or allowlisted. Returns the parsed URL and the vetted addresses; throws a 400
 * `{error, details: {url: why}}` otherwise.
 */
export async function assertOutboundUrl(url: string | URL, config: OutboundConfig, opts: CheckOptions = {}): Promise<VettedUrl> {
  const field = opts.field ?? 'url';
  const refuse = (why: string) => badRequest({ [field]: why }, 'URL not allowed');
  let u: URL;
  try {
    u = typeof url === 'string' ? new URL(url) : new URL(url.href);
  } catch {
    throw badRequest({ [field]: 'Not a valid absolute URL' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw refuse(`Only http and https URLs are allowed, not ${u.protocol.replace(/:$/, '')}`);
  // The WHATWG parser has already turned decimal, octal and hex IPv4 spellings
  // (http://2130706433/, http://0177.0.0.1/, http://0x7f.1/) into dotted quads.
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (!host) throw badRequest({ [field]: 'The URL has no host' });
  const list = allowlistOf(config);
  const trustedHost = hostAllowed(list, host);

  let addresses: ResolvedAddress[];
  const literal = isIP(host);
  if (literal) {
    addresses = [{ address: host, family: literal === 6 ? 6 : 4 }];
  } else {
    try {
      addresses = await (opts.resolve ?? systemResolver)(host);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw badRequest({ [field]: code === 'ENOTFOUND' || code === 'ENODATA' ? `The host "${host}" does not resolve` : `The host "${host}" could not be resolved (${code ?? (err as Error).message})` }, 'URL not allowed');
    }
    if (!addresses.length) throw badRequest({ [field]: `The host "${host}" does not resolve` }, 'URL not allowed');
  }
  if (!trustedHost) {
    for (const a of addresses) {
      const why = forbiddenReason(a.address);
      if (why && !addressAllowed(list, a.address)) {
        throw refuse(literal ? `${host} is ${why}: not allowed` : `"${host}" resolves to ${a.address}, ${why}: not allowed`);
      }
    }
  }
  return { url: u, host, addresses };
}

// ---------------------------------------------------------------------------------------------
// Fetching

export interface OutboundInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer | Uint8Array;
  /** Until the response headers arrive, per hop (default 10 s). */
  timeoutMs?: number;
  /** Longest silence while the body streams (default 30 s). */
  idleTimeoutMs?: number;
  /** Redirects followed, each re-checked (default and maximum 3). */
  maxRedirects?: number;
  signal?: AbortSignal;
  /** The field named in 400 details (default `url`). */
  field?: string;
  /** Replaces DNS resolution (tests). */
  resolve?: Resolver;
}

export interface OutboundResponse {
  status: number;
  statusText: string;
  ok: boolean;
  headers: Headers;
  /** The final URL, after redirects. */
  url: string;
  redirects: number;
  /** The body as a stream (destroy it when not reading it to the end). */
  body: Readable;
  /** The body read to the end, at most `maxBytes` (default 10 MiB). */
  buffer(maxBytes?: number): Promise<Buffer>;
  text(maxBytes?: number): Promise<string>;
  json(maxBytes?: number): Promise<unknown>;
}

/** The request could not be completed (connection, TLS, timeout, too many redirects): 502. */
export class OutboundFailure extends AppError {
  constructor(field: string, why: string) {
    super(502, 'Could not fetch the URL', { [field]: why });
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 3;

function pinnedLookup(address: ResolvedAddress): LookupFunction {
  return ((_host: string, options: { all?: boolean }, cb: (...args: unknown[]) => void) => {
    if (options?.all) cb(null, [{ address: address.address, family: address.family }]);
    else cb(null, address.address, address.family);
  }) as unknown as LookupFunction;
}

/**
 * Keep-alive pools, as node's global agent has them (LIFO, idle sockets closed after 5 s), with
 * one pool per host, port and vetted address: a socket is only ever reused for the address it
 * was opened to, which was checked when it was opened.
 */
interface PinnedOptions { pinnedAddress?: string }
class PinnedHttpAgent extends http.Agent {
  override getName(options: http.ClientRequestArgs & PinnedOptions = {}): string { return `${super.getName(options)}:${options.pinnedAddress ?? ''}`; }
}
class PinnedHttpsAgent extends https.Agent {
  override getName(options: https.RequestOptions & PinnedOptions = {}): string { return `${super.getName(options)}:${options.pinnedAddress ?? ''}`; }
}
const AGENT_OPTIONS = { keepAlive: true, scheduling: 'lifo', timeout: 5000 } as const;
const agents = { http: new PinnedHttpAgent(AGENT_OPTIONS), https: new PinnedHttpsAgent(AGENT_OPTIONS) };

function headersOf(res: IncomingMessage): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(res.headers)) {
    if (Array.isArray(v)) v.forEach((x) => h.append(k, x));
    else if (v !== undefined) h.set(k, v);
  }
  return h;
}

/** One request to a vetted address; resolves with the response head. */
function requestOnce(target: VettedUrl, init: OutboundInit, method: string, headers: Record<string, string>, body: Buffer | undefined, field: string): Promise<IncomingMessage> {
  const { url } = target;
  const lib = url.protocol === 'https:' ? https : http;
  const timeoutMs = init.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err: Error | null, res?: IncomingMessage) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      init.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err); else resolve(res!);
    };
    const req = lib.request(<http.RequestOptions & PinnedOptions>{
      protocol: url.protocol,
      host: target.host,
      port: url.port || (url.protocol === 'https:' ? 443 : 80),
      path: `${url.pathname}${url.search}`,
      method,
      headers: { host: url.host, 'user-agent': 'Agentry', ...headers, ...(body ? { 'content-length': String(body.length) } : {}) },
      auth: url.username ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` : undefined,
      lookup: pinnedLookup(target.addresses[0]),
      agent: url.protocol === 'https:' ? agents.https : agents.http,
      pinnedAddress: target.addresses[0].address,
      ...(url.protocol === 'https:' && !isIP(target.host) ? { servername: target.host } : {}),
    });
    const timer = setTimeout(() => {
      req.destroy();
      done(new OutboundFailure(field, `No response within ${Math.round(timeoutMs / 100) / 10} s`));
    }, timeoutMs);
    const onAbort = () => {
      req.destroy();
      done(init.signal!.reason instanceof Error ? init.signal!.reason : new Error('aborted'));
    };
    req.on('response', (res) => done(null, res));
    req.on('error', (err) => {
      const code = (err as { code?: string }).code;
      done(new OutboundFailure(field, `Could not connect to ${url.host}: ${code ?? err.message}`));
    });
    if (init.signal?.aborted) { onAbort(); return; }
    init.signal?.addEventListener('abort', onAbort, { once: true });
    req.end(body);
  });
}

async function readAll(body: Readable, maxBytes: number, field: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += (chunk as Buffer).length;
    if (n > maxBytes) {
      body.destroy();
      throw new OutboundFailure(field, `The response is larger than ${maxBytes} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Fetches `url` through the guard: each hop is checked (`assertOutboundUrl`) and connected to
 * the address that was checked. Refusals are 400s naming the field; network failures, timeouts
 * and too many redirects are 502s (`OutboundFailure`). Any HTTP status is returned as is.
 */
export async function fetchOutbound(url: string | URL, config: OutboundConfig, init: OutboundInit = {}): Promise<OutboundResponse> {
  const field = init.field ?? 'url';
  const maxRedirects = Math.min(init.maxRedirects ?? MAX_REDIRECTS, MAX_REDIRECTS);
  let method = (init.method ?? 'GET').toUpperCase();
  let headers: Record<string, string> = { ...(init.headers ?? {}) };
  let body = init.body === undefined ? undefined : Buffer.from(init.body as Uint8Array);
  let current: URL | string = url;
  for (let redirects = 0; ; redirects++) {
    let target: VettedUrl;
    try {
      target = await assertOutboundUrl(current, config, { field, resolve: init.resolve });
    } catch (err) {
      if (redirects > 0 && err instanceof AppError && typeof err.details === 'object' && !Array.isArray(err.details)) {
        const why = (err.details as Record<string, unknown>)[field];
        throw badRequest({ [field]: `Redirected to ${String(current)}, which is refused: ${String(why)}` }, err.message);
      }
      throw err;
    }
    const res = await requestOnce(target, init, method, headers, body, field);
    const location = res.headers.location;
    if (REDIRECTS.has(res.statusCode ?? 0) && location) {
      res.resume();
      if (redirects >= maxRedirects) throw new OutboundFailure(field, `More than ${maxRedirects} redirects`);
      let next: URL;
      try { next = new URL(location, target.url); } catch { throw new OutboundFailure(field, `Redirected to an invalid URL: ${location.slice(0, 200)}`); }
      if (res.statusCode === 303 || ((res.statusCode === 301 || res.statusCode === 302) && method === 'POST')) {
        method = method === 'HEAD' ? 'HEAD' : 'GET';
        body = undefined;
        headers = Object.fromEntries(Object.entries(headers).filter(([k]) => !/^content-/i.test(k)));
      }
      if (next.origin !== target.url.origin) {
        headers = Object.fromEntries(Object.entries(headers).filter(([k]) => !/^(authorization|cookie|proxy-authorization)$/i.test(k)));
      }
      current = next;
      continue;
    }
    const idle = init.idleTimeoutMs ?? 30_000;
    res.setTimeout(idle, () => res.destroy(new OutboundFailure(field, `The response stalled for ${Math.round(idle / 100) / 10} s`)));
    if (init.signal) {
      const signal = init.signal;
      const onAbort = () => res.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      res.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    const status = res.statusCode ?? 0;
    return {
      status, statusText: res.statusMessage ?? '', ok: status >= 200 && status < 300, headers: headersOf(res),
      url: target.url.href, redirects, body: res,
      buffer: (maxBytes = 10 * 1024 * 1024) => readAll(res, maxBytes, field),
      text: async (maxBytes) => (await readAll(res, maxBytes ?? 10 * 1024 * 1024, field)).toString('utf8'),
      json: async (maxBytes) => JSON.parse((await readAll(res, maxBytes ?? 10 * 1024 * 1024, field)).toString('utf8')),
    };
  }
}
