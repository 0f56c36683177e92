/**
 * The package entry: a typed tRPC client for Agentry.
 *
 *   import { createClient } from 'agentry';
 *   const api = createClient('http://localhost:8000', token);
 *   const page = await api.projects.list.query({ page_size: 20 });
 *
 * Only types come from the server code, so importing this module loads no server code.
 */
import { createTRPCClient, httpBatchLink, httpSubscriptionLink, splitLink } from '@trpc/client';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import type { AppRouter } from '../routers/index.js';

export type { AppRouter };
/** Input types of every procedure: `RouterInputs['projects']['create']`. */
export type RouterInputs = inferRouterInputs<AppRouter>;
/** Output types of every procedure: `RouterOutputs['projects']['list']`. */
export type RouterOutputs = inferRouterOutputs<AppRouter>;
export { TRPCClientError } from '@trpc/client';

/** A token, or a function returning the current one (for clients that refresh their JWT). */
export type TokenSource = string | undefined | (() => string | undefined | Promise<string | undefined>);

export interface ClientOptions {
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /** A fetch implementation (defaults to the global one). */
  fetch?: typeof fetch;
}

/**
 * A tRPC client for the Agentry server at `baseUrl` (its origin, e.g. `http://localhost:8000`),
 * calling `${baseUrl}/trpc`. With a token (a JWT access token or an API key), every request
 * carries `Authorization: Bearer <token>`.
 */
export function createClient(baseUrl: string, token?: TokenSource, options: ClientOptions = {}) {
  const url = `${baseUrl.replace(/\/+$/, '')}/trpc`;
  const headers = async () => {
    const t = typeof token === 'function' ? await token() : token;
    return { ...(options.headers ?? {}), ...(t ? { authorization: `Bearer ${t}` } : {}) };
  };
  return createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === 'subscription',
        // Subscriptions (runs.stream) over Server-Sent Events, resumed with Last-Event-ID.
        true: httpSubscriptionLink({ url, EventSource: FetchEventSource, eventSourceOptions: async () => ({ headers: await headers(), fetch: options.fetch }) }),
        false: httpBatchLink({
          url,
          // Batched GETs carry their inputs in the URL: keep it within what proxies accept.
          maxURLLength: 2000,
          ...(options.fetch ? { fetch: options.fetch } : {}),
          headers,
        }),
      }),
    ],
  });
}

export interface SseMessage { id?: string; event?: string; data?: string }

/** Parses Server-Sent Events text (complete messages, separated by a blank line); comments are skipped. */
export function parseSse(text: string): SseMessage[] {
  const out: SseMessage[] = [];
  for (const block of text.replace(/\r\n?/g, '\n').split('\n\n')) {
    const m: SseMessage = {};
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const k = i < 0 ? line : line.slice(0, i);
      const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (k === 'id' || k === 'event') m[k] = v;
      else if (k === 'data') m.data = m.data === undefined ? v : `${m.data}\n${v}`;
    }
    if (m.id !== undefined || m.event !== undefined || m.data !== undefined) out.push(m);
  }
  return out;
}

type Listener = (e: { data?: string; lastEventId?: string }) => void;

/**
 * An EventSource over fetch that can send request headers (a browser's EventSource cannot, and
 * Node 20 has none): what createClient hands to tRPC's httpSubscriptionLink. It makes one
 * connection; tRPC reconnects (with the last event id) when it ends.
 */
export class FetchEventSource {
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSED = 2;
  readyState = 0;
  readonly url: string;
  readonly withCredentials = false;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly abort = new AbortController();

  constructor(url: string | URL, init?: { headers?: Record<string, string>; fetch?: typeof fetch }) {
    this.url = String(url);
    void this.read(init?.fetch ?? fetch, init?.headers ?? {});
  }

  private async read(fetchImpl: typeof fetch, headers: Record<string, string>): Promise<void> {
    try {
      const res = await fetchImpl(this.url, { headers: { accept: 'text/event-stream', ...headers }, signal: this.abort.signal });
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      this.readyState = this.OPEN;
      this.emit('open', {});
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const [m] = parseSse(buf.slice(0, i + 2));
          buf = buf.slice(i + 2);
          if (m) this.emit(m.event ?? 'message', { data: m.data ?? '', lastEventId: m.id });
        }
      }
    } catch {
      // Reported as an error below, unless closed on purpose.
    }
    if (this.readyState !== this.CLOSED) {
      this.readyState = this.CLOSED;
      this.emit('error', {});
    }
  }

  private emit(type: string, e: { data?: string; lastEventId?: string }): void {
    for (const l of this.listeners.get(type) ?? []) l(e);
  }

  addEventListener(type: string, l: Listener): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(l);
  }

  removeEventListener(type: string, l: Listener): void {
    this.listeners.get(type)?.delete(l);
  }

  close(): void {
    this.readyState = this.CLOSED;
    this.abort.abort();
  }
}

export type AgentryClient = ReturnType<typeof createClient>;
