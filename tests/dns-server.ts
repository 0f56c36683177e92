import DNS from 'dns2';

/**
 * A local authoritative DNS server for tests (dns2, real UDP wire format). Zones map a name to its
 * records; names listed in `silent` never get an answer (a timeout), those in `servfail` get
 * SERVFAIL; any other unknown name is NXDOMAIN.
 */
export interface Zone {
  MX?: { exchange: string; priority: number }[];
  TXT?: string[];
  A?: string[];
  AAAA?: string[];
  ttl?: number;
}

export interface TestDnsServer {
  address: string;
  port: number;
  /** `127.0.0.1:port`, for DNS_SERVERS. */
  server: string;
  zones: Map<string, Zone>;
  silent: Set<string>;
  servfail: Set<string>;
  /** Queries received, as `TYPE name`. */
  queries: string[];
  close(): Promise<void>;
}

const { Packet } = DNS;
const RCODE = { SERVFAIL: 2, NXDOMAIN: 3 };
type Answer = DNS.Packet.Resource;

export async function startDnsServer(zones: Record<string, Zone> = {}): Promise<TestDnsServer> {
  const state = {
    zones: new Map(Object.entries(zones).map(([k, v]) => [k.toLowerCase(), v])),
    silent: new Set<string>(),
    servfail: new Set<string>(),
    queries: [] as string[],
  };
  const typeName: Record<number, string> = { 1: 'A', 15: 'MX', 16: 'TXT', 28: 'AAAA', 5: 'CNAME' };
  const server = DNS.createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const [q] = request.questions;
      const name = q.name.toLowerCase();
      const type = typeName[q.type] ?? String(q.type);
      state.queries.push(`${type} ${name}`);
      if (state.silent.has(name)) return;
      if (state.servfail.has(name)) { response.header.rcode = RCODE.SERVFAIL; send(response); return; }
      const zone = state.zones.get(name);
      if (!zone) { response.header.rcode = RCODE.NXDOMAIN; send(response); return; }
      const ttl = zone.ttl ?? 300;
      const base = { name: q.name, class: Packet.CLASS.IN, ttl };
      if (type === 'MX') for (const mx of zone.MX ?? []) response.answers.push({ ...base, type: Packet.TYPE.MX, exchange: mx.exchange, priority: mx.priority } as unknown as Answer);
      if (type === 'TXT') for (const t of zone.TXT ?? []) response.answers.push({ ...base, type: Packet.TYPE.TXT, data: t.match(/.{1,255}/g) ?? [''] } as unknown as Answer);
      if (type === 'A') for (const a of zone.A ?? []) response.answers.push({ ...base, type: Packet.TYPE.A, address: a } as unknown as Answer);
      if (type === 'AAAA') for (const a of zone.AAAA ?? []) response.answers.push({ ...base, type: Packet.TYPE.AAAA, address: a } as unknown as Answer);
      send(response);
    },
  });
  await server.listen({ udp: { port: 0, address: '127.0.0.1' } });
  const addr = server.addresses().udp as { address: string; port: number };
  return {
    address: addr.address, port: addr.port, server: `127.0.0.1:${addr.port}`, ...state,
    close: async () => { await server.close(); },
  };
}
