import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { AnyProcedure, AnyRouter } from '@trpc/server';
import type { z } from 'zod';
import { badRequest } from '../errors.js';
import type { Meta, OpenApiMeta, RateLimitClass } from '../trpc.js';
import { claimIdempotencyKey, completeIdempotencyKey, releaseIdempotencyKey } from '../services/idempotency.js';

export interface RestRoute {
  procedurePath: string;
  procedure: AnyProcedure;
  meta: Meta;
  openapi: OpenApiMeta;
  /** The path served: the documented one or one of its aliases. */
  path: string;
  input: z.ZodType | undefined;
  output: z.ZodType | undefined;
}

/** Every REST route the routers declare, aliases included: the route table. */
export function restRoutes(router: AnyRouter): RestRoute[] {
  const out: RestRoute[] = [];
  for (const [procedurePath, procedure] of Object.entries(router._def.procedures as Record<string, AnyProcedure>)) {
    const meta = procedure._def.meta as Meta | undefined;
    if (!meta?.openapi) continue;
    const def = procedure._def as unknown as { inputs: z.ZodType[]; output?: z.ZodType };
    for (const path of [meta.openapi.path, ...(meta.openapi.aliases ?? [])]) {
      out.push({ procedurePath, procedure, meta, openapi: meta.openapi, path, input: def.inputs[0], output: def.output });
    }
  }
  return out;
}

type Coerce = (v: unknown) => unknown;

function unwrap(s: z.ZodType): z.ZodType {
  let cur = s as z.ZodType & { _zod: { def: { type: string; innerType?: z.ZodType; in?: z.ZodType } } };
  for (;;) {
    const def = cur._zod.def;
    if (def.innerType && ['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional'].includes(def.type)) cur = def.innerType as typeof cur;
    else if (def.type === 'pipe' && def.in) cur = def.in as typeof cur;
    else return cur;
  }
}

function coercerFor(s: z.ZodType): Coerce | null {
  const inner = unwrap(s) as z.ZodType & { _zod: { def: { type: string; element?: z.ZodType } } };
  switch (inner._zod.def.type) {
    case 'number': case 'int': case 'bigint':
      return (v) => (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v);
    case 'boolean':
      return (v) => (v === 'true' || v === '1' ? true : v === 'false' || v === '0' ? false : v);
    case 'array': {
      const el = inner._zod.def.element ? coercerFor(inner._zod.def.element) : null;
      return (v) => {
        const arr = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',').filter((x) => x !== '') : [v];
        return el ? arr.map(el) : arr;
      };
    }
    default:
      return (v) => (Array.isArray(v) ? v[v.length - 1] : v);
  }
}

/**
 * Query strings carry strings: numbers, booleans and lists are converted here, by the input
 * schema's declared types, before the procedure validates. The schema itself stays strict, so
 * `/trpc` callers still send real numbers and booleans.
 */
export function queryCoercion(input: z.ZodType | undefined): (q: Record<string, unknown>) => Record<string, unknown> {
  const inner = input ? (unwrap(input) as z.ZodType & { _zod: { def: { type: string; shape?: Record<string, z.ZodType> } } }) : undefined;
  const shape = inner?._zod.def.type === 'object' ? inner._zod.def.shape ?? {} : {};
  const coercers = new Map<string, Coerce>();
  for (const [k, s] of Object.entries(shape)) { const c = coercerFor(s); if (c) coercers.set(k, c); }
  return (q) => {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(q)) {
      if (v === '' ) continue;
      const c = coercers.get(k);
      out[k] = c ? c(v) : v;
    }
    return out;
  };
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);

/**
 * Serves every procedure that declares `meta.openapi` as its own Fastify route, so the router's
 * radix tree matches paths (static segments win over parameters; trailing slashes are kept),
 * and calls the procedure directly with the request's context.
 */
export function registerRestRoutes(app: FastifyInstance, router: AnyRouter, limiters: Record<RateLimitClass, onRequestHookHandler>): RestRoute[] {
  const routes = restRoutes(router);
  for (const r of routes) {
    const { method, successStatus = 200 } = r.openapi;
    const hasBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
    const coerce = queryCoercion(r.input);
    const type = r.procedure._def.type as 'query' | 'mutation';
    const idempotent = method === 'POST' && (successStatus === 201 || successStatus === 202);
    const url = r.path.replace(/\{([^}]+)\}/g, ':$1');
    // Standard routes share the global limiter (one hourly budget per actor); each other class
    // has one limiter of its own, shared by its routes.
    const limits = r.meta.rateLimit ? { config: { rateLimit: false as const, procedurePath: r.procedurePath }, onRequest: limiters[r.meta.rateLimit] } : { config: { procedurePath: r.procedurePath } };

    app.route({
      method,
      url,
      ...limits,
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        const params = req.params as Record<string, string>;
        let input: Record<string, unknown> | undefined;
        if (r.input) {
          if (hasBody) {
            const body = req.body ?? {};
            if (!isPlainObject(body)) throw badRequest({ _: 'The request body must be a JSON object' });
            input = { ...coerce(req.query as Record<string, unknown>), ...body, ...params };
          } else {
            input = { ...coerce(req.query as Record<string, unknown>), ...params };
          }
        }
        const ctx = req.ctx;
        const idemKey = idempotent ? req.headers['idempotency-key'] : undefined;
        let claim: { scope: string; key: string } | null = null;
        if (typeof idemKey === 'string' && idemKey.length > 0) {
          if (idemKey.length > 255) throw badRequest({ 'Idempotency-Key': 'At most 255 characters' });
          const c = await claimIdempotencyKey(ctx, `${method} ${r.path}`, idemKey, { input, params });
          if (c.kind === 'replay') {
            reply.header('idempotent-replayed', 'true').code(c.status);
            return c.status === 204 ? reply.send() : reply.send(c.body);
          }
          claim = c;
        }
        let out: unknown;
        try {
          out = await r.procedure({ path: r.procedurePath, getRawInput: async () => input, ctx, type, signal: undefined, batchIndex: 0 });
        } catch (err) {
          if (claim) await releaseIdempotencyKey(ctx, claim);
          throw err;
        }
        if (claim) await completeIdempotencyKey(ctx, claim, successStatus, out);
        const status = ctx.responseStatus ?? successStatus;
        reply.code(status);
        return status === 204 ? reply.send() : reply.send(out);
      },
    });
  }
  return routes;
}
