import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { AnyProcedure, AnyRouter } from '@trpc/server';
import { assertNoNul, badRequest } from '../errors.js';
import type { z as zod } from 'zod';
import { auditMutation, authorizeActor, baseMiddlewares, type Meta, type OpenApiMeta, type RateLimitClass } from '../trpc.js';
import { claimIdempotencyKey, completeIdempotencyKey, releaseIdempotencyKey } from '../services/idempotency.js';

export interface RestRoute {
  procedurePath: string;
  procedure: AnyProcedure;
  meta: Meta;
  openapi: OpenApiMeta;
  /** The path served: the documented one or one of its aliases. */
  path: string;
  input: zod.ZodType | undefined;
  output: zod.ZodType | undefined;
}

/** Every REST route the routers declare, aliases included: the route table. */
export function restRoutes(router: AnyRouter): RestRoute[] {
  const out: RestRoute[] = [];
  for (const [procedurePath, procedure] of Object.entries(router._def.procedures as Record<string, AnyProcedure>)) {
    const meta = procedure._def.meta as Meta | undefined;
    // Subscriptions stream: their documented path is served (and documented) by a non-JSON route
    // in src/http (Server-Sent Events), not by the JSON facade.
    if (!meta?.openapi || procedure._def.type === 'subscription') continue;
    const def = procedure._def as unknown as { inputs: zod.ZodType[]; output?: zod.ZodType };
    for (const path of [meta.openapi.path, ...(meta.openapi.aliases ?? [])]) {
      out.push({ procedurePath, procedure, meta, openapi: meta.openapi, path, input: def.inputs[0], output: def.output });
    }
  }
  return out;
}

type Coerce = (v: unknown) => unknown;

function unwrap(s: zod.ZodType): zod.ZodType {
  let cur = s as zod.ZodType & { _zod: { def: { type: string; innerType?: zod.ZodType; in?: zod.ZodType } } };
  for (;;) {
    const def = cur._zod.def;
    if (def.innerType && ['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional'].includes(def.type)) cur = def.innerType as typeof cur;
    else if (def.type === 'pipe' && def.in) cur = def.in as typeof cur;
    else return cur;
  }
}

function coercerFor(s: zod.ZodType): Coerce | null {
  const inner = unwrap(s) as zod.ZodType & { _zod: { def: { type: string; element?: zod.ZodType } } };
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
export function queryCoercion(input: zod.ZodType | undefined): (q: Record<string, unknown>) => Record<string, unknown> {
  const inner = input ? (unwrap(input) as zod.ZodType & { _zod: { def: { type: string; shape?: Record<string, zod.ZodType> } } }) : undefined;
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

type Resolver = (opts: { ctx: unknown; input: unknown; path: string; type: string; meta: Meta | undefined; signal: undefined }) => Promise<unknown>;

/**
 * The resolver of a procedure whose middleware chain is exactly the standard one (authorize,
 * audit, then input and output parsing): the facade can run those steps itself. Any other
 * procedure (extra middlewares) returns null and is called through tRPC.
 */
function directResolver(p: AnyProcedure): Resolver | null {
  const def = p._def as unknown as { middlewares: { _type?: string }[]; resolver?: Resolver };
  const mws = def.middlewares;
  if (!def.resolver || mws.length < baseMiddlewares.length + 1) return null;
  for (let i = 0; i < baseMiddlewares.length; i++) if (mws[i] !== baseMiddlewares[i]) return null;
  const rest = mws.slice(baseMiddlewares.length, -1);
  if (!rest.every((m) => m._type === 'input' || m._type === 'output')) return null;
  return def.resolver;
}

/**
 * The response body writer of a route. Services select named columns, so the body is what they
 * return, written with JSON.stringify (native, faster than a schema-compiled serializer on
 * string-heavy rows). With `validate` (tests, development) the body is first checked against the
 * zod output schema, and a field the schema does not declare is an error — so a leaking column
 * fails the tests instead of reaching clients.
 */
function responseWriter(output: zod.ZodType | undefined, validate: boolean): (value: unknown) => string {
  if (!output || !validate) return (v) => JSON.stringify(v);
  return (v) => {
    const text = JSON.stringify(v);
    const parsed = JSON.stringify(output.parse(v));
    if (parsed.length < text.length) throw new Error(`response has fields its output schema does not declare: ${text.slice(0, 300)}`);
    return text;
  };
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);

/**
 * Serves every procedure that declares `meta.openapi` as its own Fastify route, so the router's
 * radix tree matches paths (static segments win over parameters; trailing slashes are kept),
 * and calls the procedure directly with the request's context.
 */
export function registerRestRoutes(
  app: FastifyInstance, router: AnyRouter, limiters: Record<RateLimitClass, onRequestHookHandler>, opts: { validateResponses: boolean },
): RestRoute[] {
  const routes = restRoutes(router);
  for (const r of routes) {
    const { method, successStatus = 200 } = r.openapi;
    const hasBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
    const coerce = queryCoercion(r.input);
    const type = r.procedure._def.type as 'query' | 'mutation';
    const idempotent = method === 'POST' && (successStatus === 201 || successStatus === 202);
    const url = r.path.replace(/\{([^}]+)\}/g, ':$1');
    const resolver = directResolver(r.procedure);
    const write = responseWriter(r.output, opts.validateResponses);
    const inputSchema = r.input;
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
          if (resolver) {
            authorizeActor(ctx, r.meta);
            assertNoNul(input);
            const parsed = inputSchema ? inputSchema.parse(input) : undefined;
            out = await resolver({ ctx, input: parsed, path: r.procedurePath, type, meta: r.meta, signal: undefined });
            if (type === 'mutation') await auditMutation(ctx, r.meta, r.procedurePath, parsed, out);
          } else {
            out = await r.procedure({ path: r.procedurePath, getRawInput: async () => input, ctx, type, signal: undefined, batchIndex: 0 });
          }
        } catch (err) {
          if (claim) await releaseIdempotencyKey(ctx, claim);
          throw err;
        }
        const status = ctx.responseStatus ?? successStatus;
        reply.code(status);
        if (status === 204) {
          if (claim) await completeIdempotencyKey(ctx, claim, status, undefined);
          return reply.send();
        }
        const body = write(out);
        if (claim) await completeIdempotencyKey(ctx, claim, status, JSON.parse(body));
        return reply.header('content-type', 'application/json; charset=utf-8').send(body);
      },
    });
  }
  return routes;
}
