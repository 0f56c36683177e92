import { getServers } from 'node:dns';
import DNS from 'dns2';

/**
 * The one DNS resolver: real queries (UDP, falling back to TCP for truncated answers) to the
 * servers in DNS_SERVERS or the system's, bounded in time, answers cached for their TTL.
 * A failure to get an answer is reported as such (`error`), never guessed into "no records".
 */

export type RecordType = 'A' | 'AAAA' | 'MX' | 'TXT' | 'CNAME';
export interface MxRecord { exchange: string; priority: number }
export type DnsRecord = { type: 'MX'; exchange: string; priority: number } | { type: 'TXT'; text: string } | { type: 'A' | 'AAAA'; address: string } | { type: 'CNAME'; target: string };

export type DnsResult<T> =
  | { status: 'ok'; records: T[] }
  /** The name does not exist. */
  | { status: 'nxdomain' }
  /** The name exists but has no records of this type. */
  | { status: 'nodata' }
  /** No usable answer (timeout, SERVFAIL, refused, unreachable): unknown, not negative. */
  | { status: 'error'; error: string };

export interface ResolverOptions {
  /** `host` or `host:port`; the system's servers when empty. */
  servers?: string[];
  /** Per query, all servers included. */
  timeoutMs?: number;
  /** Cache size (entries). */
  maxEntries?: number;
  /** How long "does not exist" and "no records" answers are kept (seconds). */
  negativeTtl?: number;
}

interface Entry { result: DnsResult<DnsRecord>; expires: number }

const TYPE_CODE: Record<RecordType, number> = { A: 1, CNAME: 5, MX: 15, TXT: 16, AAAA: 28 };

function parseServer(s: string): { host: string; port: number } {
  const m = /^\[(.+)\](?::(\d+))?$/.exec(s) ?? /^([^:]+)(?::(\d+))?$/.exec(s);
  if (m) return { host: m[1], port: m[2] ? Number(m[2]) : 53 };
  return { host: s, port: 53 }; // a bare IPv6 address
}

export class DnsResolver {
  private cache = new Map<string, Entry>();
  private inflight = new Map<string, Promise<DnsResult<DnsRecord>>>();
  /** A fresh view asks the servers every time (its answers still refill the shared cache). */
  private bypassCache = false;
  private readonly servers: { host: string; port: number }[];
  private readonly timeoutMs: number;
  private readonly maxEntries: number;
  private readonly negativeTtl: number;
  /** Queries sent (not answered from the cache): for tests and metrics. */
  queries = 0;

  constructor(opts: ResolverOptions = {}) {
    const servers = opts.servers?.length ? opts.servers : getServers();
    this.servers = servers.map(parseServer);
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.negativeTtl = opts.negativeTtl ?? 300;
  }

  async resolve(name: string, type: RecordType): Promise<DnsResult<DnsRecord>> {
    const key = `${type} ${name.toLowerCase().replace(/\.$/, '')}`;
    if (!this.bypassCache) {
      const hit = this.cache.get(key);
      if (hit && hit.expires > Date.now()) return hit.result;
      const pending = this.inflight.get(key);
      if (pending) return pending;
    }
    const p = this.query(name, type)
      .then((r) => { this.store(key, r.result, r.ttl); return r.result; })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  /**
   * The same resolver without reading the cache: for checks a person just asked for (a record
   * added a minute ago must be seen now, not after the negative TTL).
   */
  fresh(): DnsResolver {
    const view = Object.create(this) as DnsResolver;
    view.bypassCache = true;
    return view;
  }

  async mx(domain: string): Promise<DnsResult<MxRecord>> {
    const r = await this.resolve(domain, 'MX');
    if (r.status !== 'ok') return r;
    const records = r.records.flatMap((x) => (x.type === 'MX' ? [{ exchange: x.exchange.toLowerCase().replace(/\.$/, ''), priority: x.priority }] : []))
      .sort((a, b) => a.priority - b.priority);
    return records.length ? { status: 'ok', records } : { status: 'nodata' };
  }

  async txt(name: string): Promise<DnsResult<string>> {
    const r = await this.resolve(name, 'TXT');
    if (r.status !== 'ok') return r;
    const records = r.records.flatMap((x) => (x.type === 'TXT' ? [x.text] : []));
    return records.length ? { status: 'ok', records } : { status: 'nodata' };
  }

  async addresses(name: string): Promise<DnsResult<string>> {
    const [a, aaaa] = await Promise.all([this.resolve(name, 'A'), this.resolve(name, 'AAAA')]);
    const records = [a, aaaa].flatMap((r) => (r.status === 'ok' ? r.records.flatMap((x) => (x.type === 'A' || x.type === 'AAAA' ? [x.address] : [])) : []));
    if (records.length) return { status: 'ok', records };
    if (a.status === 'error' && aaaa.status === 'error') return a;
    if (a.status === 'nxdomain' || aaaa.status === 'nxdomain') return { status: 'nxdomain' };
    if (a.status === 'error') return a;
    return { status: 'nodata' };
  }

  private store(key: string, result: DnsResult<DnsRecord>, ttl: number): void {
    if (result.status === 'error' || ttl <= 0) return;
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(key, { result, expires: Date.now() + ttl * 1000 });
  }

  private async query(name: string, type: RecordType): Promise<{ result: DnsResult<DnsRecord>; ttl: number }> {
    const deadline = Date.now() + this.timeoutMs;
    let lastError = 'no DNS servers configured';
    for (const server of this.servers) {
      const left = deadline - Date.now();
      if (left <= 0) { lastError = `timed out after ${this.timeoutMs} ms`; break; }
      this.queries++;
      try {
        const client = DNS.UDPClient({ dns: server.host, port: server.port, timeout: left, retryOverTCP: true });
        const res = await client(name, type);
        const rcode = res.header.rcode;
        if (rcode === 3) return { result: { status: 'nxdomain' }, ttl: this.negativeTtl };
        if (rcode !== 0) { lastError = `DNS server ${server.host} answered rcode ${rcode}`; continue; }
        const code = TYPE_CODE[type];
        const answers = (res.answers as unknown as Array<Record<string, unknown>>).filter((a) => a.type === code);
        if (!answers.length) return { result: { status: 'nodata' }, ttl: this.negativeTtl };
        const ttl = Math.min(...answers.map((a) => Number(a.ttl ?? 0)));
        return { result: { status: 'ok', records: answers.map((a) => toRecord(type, a)) }, ttl };
      } catch (err) {
        lastError = (err as Error).message || String(err);
      }
    }
    return { result: { status: 'error', error: lastError }, ttl: 0 };
  }
}

function toRecord(type: RecordType, a: Record<string, unknown>): DnsRecord {
  switch (type) {
    case 'MX': return { type, exchange: String(a.exchange), priority: Number(a.priority) };
    case 'TXT': return { type, text: Array.isArray(a.data) ? (a.data as string[]).join('') : String(a.data) };
    case 'CNAME': return { type, target: String(a.domain) };
    default: return { type, address: String(a.address) };
  }
}

const resolvers = new WeakMap<object, DnsResolver>();

/** The process's resolver for a configuration (one per app). */
export function resolverFor(config: { dnsServers: string[]; dnsTimeoutMs: number; dnsNegativeTtl: number }): DnsResolver {
  let r = resolvers.get(config);
  if (!r) {
    r = new DnsResolver({ servers: config.dnsServers, timeoutMs: config.dnsTimeoutMs, negativeTtl: config.dnsNegativeTtl });
    resolvers.set(config, r);
  }
  return r;
}
