import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.js';
import { badRequest } from '../errors.js';
import { documentOperation } from '../openapi.js';
import { assertRunExists, runEventStream } from '../services/runs.js';
import { authorizeActor, type Meta } from '../trpc.js';

/**
 * `GET /api/v1/runs/{id}/stream`: a run's events as Server-Sent Events. Every event after
 * `Last-Event-ID` (the header, or `?last_event_id=`) is sent first (`id: <seq>`, `event: <type>`,
 * `data: <json>`), then new ones as they are written, with `: ping` heartbeats, until the run's
 * terminal status event; then the stream ends. The run does not depend on anyone listening.
 * tRPC clients get the same through the `runs.stream` subscription.
 */

const PATH = '/api/v1/runs/{id}/stream';
const meta: Meta = { permission: 'agents:read' };
/** Heartbeat interval (proxies close idle connections). */
export const SSE_PING_MS = Number(process.env.SSE_PING_MS ?? 15_000);

const query = z.object({
  last_event_id: z.string().regex(/^\d{1,15}$/).optional().describe('Resume after this event id (the `Last-Event-ID` header wins)'),
});

documentOperation({
  method: 'GET', path: PATH, operationId: 'runs.stream', tags: ['Runs'],
  summary: 'Follow a run\'s events (Server-Sent Events)',
  description: 'Status changes (`status`), steps (`step`), LLM token deltas (`token`) and logs (`log`) as they happen. '
    + 'Each event has an `id` (its sequence number in the run); a client that reconnects with `Last-Event-ID` gets only what it missed. '
    + 'Heartbeats are `: ping` comments; the stream ends after the terminal status event (succeeded, failed, cancelled). '
    + 'Needs the `agents:read` permission. tRPC clients: the `runs.stream` subscription.',
  query,
  parameters: [
    { name: 'id', in: 'path', description: 'The run id' },
    { name: 'Last-Event-ID', in: 'header', description: 'Resume after this event id', schema: { type: 'string' } },
  ],
  responses: {
    200: {
      description: 'A stream of `id: <seq>`, `event: <status|step|token|log>`, `data: <JSON>` messages',
      content: { 'text/event-stream': { schema: { type: 'string' }, example: 'id: 3\nevent: status\ndata: {"status":"running"}\n\n' } },
    },
  },
});

function lastEventId(request: FastifyRequest): number {
  const header = request.headers['last-event-id'];
  const raw = typeof header === 'string' && header.trim() !== '' ? header.trim() : (request.query as { last_event_id?: unknown })?.last_event_id;
  if (raw === undefined || raw === null || raw === '') return 0;
  if (typeof raw !== 'string' || !/^\d{1,15}$/.test(raw)) throw badRequest({ last_event_id: 'An event id (a non-negative integer)' });
  return Number(raw);
}

async function stream(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const ctx = request.ctx;
  authorizeActor(ctx, meta);
  const { id } = request.params as { id: string };
  await assertRunExists(ctx, id);
  const after = lastEventId(request);

  reply.hijack();
  const res = reply.raw;
  const headers: Record<string, string | number | string[]> = {};
  for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) headers[k] = v as string | number | string[];
  // Hijacked: the app's onSend hook does not run, so X-RateLimit-Reset becomes a Unix time here.
  if (headers['x-ratelimit-reset'] !== undefined) headers['x-ratelimit-reset'] = Math.floor(Date.now() / 1000) + Number(headers['x-ratelimit-reset']);
  res.writeHead(200, {
    ...headers, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive', 'x-accel-buffering': 'no',
  });
  const ac = new AbortController();
  const onClose = () => ac.abort();
  res.on('close', onClose);
  const write = async (text: string) => {
    if (res.destroyed || res.writableEnded) return;
    if (!res.write(text)) await new Promise<void>((r) => { res.once('drain', r); res.once('close', r); });
  };
  const ping = setInterval(() => { void write(': ping\n\n'); }, SSE_PING_MS);
  try {
    await write('retry: 2000\n\n');
    for await (const e of runEventStream(ctx, id, after, ac.signal)) {
      await write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`);
      if (ac.signal.aborted) break;
    }
  } catch (err) {
    ctx.deps.log.error({ err, reqId: request.id, runId: id }, 'run stream failed');
  } finally {
    clearInterval(ping);
    res.off('close', onClose);
    if (!res.writableEnded) res.end();
  }
}

export function register(app: FastifyInstance, _deps: Deps): void {
  app.get(PATH.replace('{id}', ':id'), stream);
}
