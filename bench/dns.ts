/**
 * A local authoritative DNS server (dns2, real UDP wire format) for the benchmark's e-mail
 * domains, so that the app's e-mail analysis (MX lookups on every new address) gets real answers
 * quickly and the same ones every run, without the network. Unknown names are NXDOMAIN; a zone
 * without MX records answers NOERROR with no records (then the A lookup decides).
 */
import DNS from 'dns2';

type Zone = { MX?: { exchange: string; priority: number }[]; A?: string[] };
type Answer = DNS.Packet.Resource;

export async function startDns(zones: Map<string, Zone>): Promise<{ server: string; queries: () => number; close(): Promise<void> }> {
  const { Packet } = DNS;
  let queries = 0;
  const server = DNS.createServer({
    udp: true,
    handle: (request, send) => {
      queries++;
      const response = Packet.createResponseFromRequest(request);
      const [q] = request.questions;
      const zone = zones.get(q.name.toLowerCase().replace(/\.$/, ''));
      if (!zone) { response.header.rcode = 3; send(response); return; }
      const base = { name: q.name, class: Packet.CLASS.IN, ttl: 3600 };
      if (q.type === Packet.TYPE.MX) for (const mx of zone.MX ?? []) response.answers.push({ ...base, type: Packet.TYPE.MX, exchange: mx.exchange, priority: mx.priority } as unknown as Answer);
      if (q.type === Packet.TYPE.A) for (const a of zone.A ?? []) response.answers.push({ ...base, type: Packet.TYPE.A, address: a } as unknown as Answer);
      send(response);
    },
  });
  await server.listen({ udp: { port: 0, address: '127.0.0.1' } });
  const addr = server.addresses().udp as { port: number };
  return { server: `127.0.0.1:${addr.port}`, queries: () => queries, close: async () => { await server.close(); } };
}
