import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import { fastifyTRPCPlugin, type FastifyTRPCPluginOptions } from '@trpc/server/adapters/fastify';
import FindMyWay from 'find-my-way';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Counter, Histogram, Registry } from 'prom-client';
import { appRouter, type AppRouter } from '../routers/index.js';
import { ApiKeyUsage, jwtKeyOf, resolveActor } from './auth.js';
import type { Config } from './config.js';
import type { Ctx, Deps } from './context.js';
import { SecretBox } from './crypto.js';
import { migrate, openDatabase, type Db } from './db.js';
import { AppError, toHttpError } from './errors.js';
import { CountCache } from './pagination.js';
import { registerRestRoutes, type RestRoute } from './http/rest.js';
import { registerDocsRoutes } from './http/docs.js';
import { registerHttpRoutes, registerUploadRoutes } from './http/index.js';
import { purgeExpiredIdempotencyKeys } from './services/idempotency.js';
import './engine/schedules.js';

declare module 'fastify' {
  interface FastifyRequest { ctx: Ctx }
  interface FastifyContextConfig { procedurePath?: string }
}

export interface BuildOptions {
  /** An already open, migrated database (tests); otherwise `config.databaseUrl` is opened and migrated. */
  db?: Db;
  /** A pino logger (tests pass a silent one). */
  logger?: pino.Logger;
}

export interface App {
  fastify: FastifyInstance;
  deps: Deps;
  routes: RestRoute[];
  close(): Promise<void>;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Request ids: a random per-process prefix and a counter (unique, cheap; no randomness per request). */
const requestIdPrefix = `req_${randomBytes(8).toString('base64url').replace(/[-_]/g, 'x')}`;
let requestCounter = 0;
const nextRequestId = () => `${requestIdPrefix}.${(++requestCounter).toString(36)}`;

export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<App> {
  // Logs go to stdout through a buffer flushed at least once a second (and on exit): one request
  // line no longer costs a write system call.
  let logFlush: NodeJS.Timeout | null = null;
  let log = opts.logger;
  if (!log) {
    const dest = pino.destination({ dest: 1, sync: false, minLength: 4096 });
    logFlush = setInterval(() => dest.flush(), 1000);
    logFlush.unref();
    log = pino({ level: config.logLevel }, dest);
  }
  const ownsDb = !opts.db;
  const db = opts.db ?? (await openDatabase({ url: config.databaseUrl }));
  if (ownsDb) await migrate(db);

  const usage = new ApiKeyUsage();
  const deps: Deps = { db, config, box: new SecretBox(config.secretsKey), log, jwtKey: jwtKeyOf(config.jwtSecret), usage, counts: new CountCache() };
  usage.start(deps);

  // Fastify gets no logger (no child logger per request): the app logs through `log`, one line
  // per request in onResponse below, with the request id.
  const logRequests = log.isLevelEnabled('info');
  const fastify: FastifyInstance = Fastify({
    logger: false,
    bodyLimit: config.bodyLimit,
    trustProxy: config.trustProxy,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : nextRequestId();
    },
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
  });

  // Bodies are JSON (the non-JSON routes add their own parsers): anything else is a 415.
  fastify.removeContentTypeParser('text/plain');
  // An empty JSON body is an empty object, so POSTs with nothing to say need not send `{}`.
  const defaultJson = fastify.getDefaultJsonParser('error', 'ignore');
  fastify.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, {});
    defaultJson(req, text, done);
  });

  // Metrics.
  const registry = new Registry();
  const requests = new Counter({ name: 'http_requests_total', help: 'HTTP requests', labelNames: ['method', 'route', 'status'] as const, registers: [registry] });
  const latency = new Histogram({
    name: 'http_request_duration_seconds', help: 'HTTP request latency', labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry],
  });

  // Every request gets its context; a presented token is resolved once, here.
  fastify.decorateRequest('ctx', null as unknown as Ctx);
  fastify.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
    const ctx: Ctx = {
      deps, actor: null, authError: null, requestId: req.id, ip: req.ip,
      userAgent: typeof req.headers['user-agent'] === 'string' ? req.headers['user-agent'].slice(0, 512) : null,
      baseUrl: config.publicUrl ?? `${req.protocol}://${req.host}`, url: req.url,
    };
    req.ctx = ctx;
    try {
      ctx.actor = await resolveActor(deps, req.headers.authorization);
    } catch (err) {
      if (err instanceof AppError) ctx.authError = err;
      else throw err;
    }
  });

  let redis: Redis | undefined;
  if (config.redisUrl) redis = new Redis(config.redisUrl, { connectTimeout: 2000, maxRetriesPerRequest: 2, enableOfflineQueue: true, lazyConnect: false });
  await fastify.register(rateLimit, {
    global: true,
    // onRequest, after the hook above has resolved the actor: requests refused while parsing
    // (bad JSON, too large, wrong media type) are counted and carry the headers too.
    hook: 'onRequest',
    max: config.rateLimitPerHour,
    timeWindow: 60 * 60 * 1000,
    ...(redis ? { redis, nameSpace: 'agentry-rl:' } : {}),
    keyGenerator: (req) => {
      const a = req.ctx?.actor;
      return a ? `${a.type}:${a.id}` : `ip:${req.ip}`;
    },
    errorResponseBuilder: (_req, c) => {
      const err = new AppError(429, 'Rate limit exceeded', `At most ${c.max} requests per hour; retry in ${Math.ceil(c.ttl / 1000)} seconds`);
      return err;
    },
  });

  // The hooks below do no I/O: callback style, so that no promise is made for them per request.
  fastify.addHook('onSend', (_req, reply, payload, done) => {
    // X-RateLimit-Reset is a Unix time, as documented (the plugin sends seconds to go).
    const reset = reply.getHeader('x-ratelimit-reset');
    if (reset !== undefined) reply.header('x-ratelimit-reset', Math.floor(Date.now() / 1000) + Number(reset));
    done(null, payload);
  });

  // Label-bound metric children, one per method/route(/status), instead of hashing labels per request.
  const seriesCache = new Map<string, { count: { inc(): void }; time: { observe(v: number): void } }>();
  fastify.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const key = `${req.method} ${route} ${reply.statusCode}`;
    let series = seriesCache.get(key);
    if (!series) {
      series = { count: requests.labels(req.method, route, String(reply.statusCode)), time: latency.labels(req.method, route) };
      if (seriesCache.size < 5000) seriesCache.set(key, series);
    }
    series.count.inc();
    series.time.observe(reply.elapsedTime / 1000);
    if (logRequests) log.info({ reqId: req.id, method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 100) / 100 }, 'request');
    done();
  });

  fastify.setErrorHandler((err, req, reply) => {
    const mapped = toHttpError(err);
    if (mapped.fault) log.error({ err, reqId: req.id }, 'request failed');
    if (mapped.status === 429 && !reply.getHeader('retry-after')) reply.header('retry-after', 60);
    reply.code(mapped.status).send(mapped.body);
  });

  // Unknown path → 404; known path, other method → 405 with Allow.
  const known = FindMyWay({ ignoreTrailingSlash: false });
  const methodsByRoute = new Map<string, Set<string>>();
  fastify.addHook('onRoute', (r) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    for (const m of methods) {
      if (m === 'HEAD' || m === 'OPTIONS') continue;
      const set = methodsByRoute.get(r.url) ?? new Set<string>();
      if (set.size === 0) {
        methodsByRoute.set(r.url, set);
        try { known.on('GET', r.url, () => undefined, { url: r.url }); } catch { /* wildcard routes */ }
      }
      set.add(m);
    }
  });
  fastify.setNotFoundHandler({ preHandler: fastify.rateLimit() }, (req, reply) => {
    const path = req.url.split('?')[0];
    const found = known.find('GET', path);
    const allowed = found ? methodsByRoute.get((found.store as { url: string }).url) : undefined;
    if (allowed && !allowed.has(req.method)) {
      reply.header('allow', [...allowed].join(', ')).code(405).send({ error: 'Method not allowed', details: `${req.method} is not supported on ${path}; use ${[...allowed].join(', ')}` });
      return;
    }
    reply.code(404).send({ error: 'Not found', details: `No route for ${req.method} ${path}` });
  });

  const hour = 60 * 60 * 1000;
  const routes = registerRestRoutes(fastify, appRouter, {
    health: fastify.rateLimit({ max: config.rateLimitHealthPerHour, timeWindow: hour, groupId: 'health' }),
    public_form: fastify.rateLimit({ max: config.rateLimitPublicFormPerHour, timeWindow: hour, groupId: 'public_form', keyGenerator: (req) => `ip:${req.ip}` }),
  }, { validateResponses: config.validateResponses });

  const trpcOptions: FastifyTRPCPluginOptions<AppRouter>['trpcOptions'] = {
    router: appRouter,
    createContext: ({ req }) => req.ctx,
    onError: ({ error, req }) => {
      if (toHttpError(error).fault) log.error({ err: error, reqId: req.id }, 'trpc procedure failed');
    },
  };
  await fastify.register(fastifyTRPCPlugin, { prefix: '/trpc', trpcOptions });

  fastify.get('/metrics', { config: { rateLimit: false } }, async (_req, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });

  registerDocsRoutes(fastify);
  registerHttpRoutes(fastify, deps);
  // multipart/form-data only in the scope of the routes that take files (they stream them with
  // request.file()): the plugin adds two hooks and a listener to every request it sees, and
  // elsewhere a multipart body is a 415 like any other non-JSON body.
  await fastify.register(async (uploads) => {
    await uploads.register(multipart, { limits: { fileSize: config.uploadLimitBytes, files: 1, fields: 50 } });
    registerUploadRoutes(uploads);
  });

  const maintenance = setInterval(() => { void purgeExpiredIdempotencyKeys({ deps }).catch(() => undefined); }, 60 * 60 * 1000);
  maintenance.unref();

  return {
    fastify, deps, routes,
    async close() {
      clearInterval(maintenance);
      if (logFlush) { clearInterval(logFlush); log.flush(); }
      await fastify.close();
      await usage.stop();
      if (redis) redis.disconnect();
      if (ownsDb) await db.close();
    },
  };
}
