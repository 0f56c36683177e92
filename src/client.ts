/**
 * The package entry: a typed tRPC client for Agentry.
 *
 *   import { createClient } from 'agentry';
 *   const api = createClient('http://localhost:8000', token);
 *   const page = await api.projects.list.query({ page_size: 20 });
 *
 * Only types come from the server code, so importing this module loads no server code.
 */
import { createTRPCClient, httpBatchLink } from '@trpc/client';
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
  return createTRPCClient<AppRouter>({
    links: [
      httpBatchLink({
        url,
        // Batched GETs carry their inputs in the URL: keep it within what proxies accept.
        maxURLLength: 2000,
        ...(options.fetch ? { fetch: options.fetch } : {}),
        async headers() {
          const t = typeof token === 'function' ? await token() : token;
          return { ...(options.headers ?? {}), ...(t ? { authorization: `Bearer ${t}` } : {}) };
        },
      }),
    ],
  });
}

export type AgentryClient = ReturnType<typeof createClient>;
