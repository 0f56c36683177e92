/**
 * Intermediate servers between raw (bench/raw.ts) and the app, to price each piece of the
 * request path by throughput rather than by profile: each step is raw Fastify (no logger, no
 * hooks but what the step adds) serving GET /api/v1/projects with one more piece of the app.
 * The step is chosen by LADDER_STEP. All steps answer the same body as raw and the app (the
 * runner checks this before measuring).
 *
 *   kysely     raw, but both queries (API key by hash, the page) built and run through Kysely on
 *              src/db.ts (its prepared-statement cache); count cached as raw does
 *   service    resolveActor (src/auth.ts) + listProjects (src/services/projects.ts: paginate,
 *              CountCache, links) called directly from the Fastify handler
 *   trpc-noout the REST facade (src/http/rest.ts registerRestRoutes) over a bench-local router
 *              whose list procedure is the real one without its output schema: tRPC middlewares
 *              (authorize, audit) + zod input validation
 *   trpc       the REST facade over the real appRouter: + zod output validation
 *   ratelimit  trpc + @fastify/rate-limit registered as src/app.ts registers it
 *
 * The last two steps are the app itself (bench/server.ts) at LOG_LEVEL=warn and info.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import pino from 'pino';
import { z } from 'zod';
import { appRouter } from '../routers/index.js';
import { ApiKeyUsage, jwtKeyOf, resolveActor } from '../src/auth.js';
import { loadConfig } from '../src/config.js';
import type { Ctx, Deps } from '../src/context.js';
import { SecretBox } from '../src/crypto.js';
import { openDatabase } from '../src/db.js';
import { AppError, toHttpError } from '../src/errors.js';
import { registerRestRoutes } from '../src/http/rest.js';
import { nowIso } from '../src/ids.js';
import { CountCache, pageParams } from '../src/pagination.js';
import { listProjects } from '../src/services/projects.js';
import { procedure, router } from '../src/trpc.js';
import { createHash } from 'node:crypto';
import { installProfiler } from './profiler.js';

export const LADDER_STEPS: { id: string; name: string; logLevel?: string; script?: string }[] = [
  { id: 'kysely', name: 'raw + Kysely for both queries' },
  { id: 'service', name: '+ resolveActor + listProjects/paginate' },
  { id: 'trpc-noout', name: '+ REST facade → tRPC procedure, no output schema' },
  { id: 'trpc', name: '+ zod output validation (real router)' },
  { id: 'ratelimit', name: '+ @fastify/rate-limit' },
  { id: 'app-warn', name: 'the app, LOG_LEVEL=warn (+ request ids, pino child loggers, onSend, metrics)', script: 'server.ts', logLevel: 'warn' },
  { id: 'app-info', name: 'the app, LOG_LEVEL=info (+ one log line per request)', script: 'server.ts', logLevel: 'info' },
];

async function serve(step: string): Promise<void> {
  const config = loadConfig();
  const db = await openDatabase({ url: config.databaseUrl });
  const usage = new ApiKeyUsage();
  const deps: Deps = { db, config, box: new SecretBox(config.secretsKey), log: pino({ level: 'warn' }), jwtKey: jwtKeyOf(config.jwtSecret), usage, counts: new CountCache() };
  usage.start(deps);
  const app: FastifyInstance = Fastify({ logger: false });
  app.setErrorHandler((err, _req, reply) => {
    const mapped = toHttpError(err);
    reply.code(mapped.status).send(mapped.body);
  });

  const ctxOf = async (req: { headers: { authorization?: string }; ip: string; protocol: string; host: string; url: string; id: string }): Promise<Ctx> => {
    const ctx: Ctx = { deps, actor: null, authError: null, requestId: req.id, ip: req.ip, baseUrl: `${req.protocol}://${req.host}`, url: req.url };
    try {
      ctx.actor = await resolveActor(deps, req.headers.authorization);
    } catch (err) {
      if (err instanceof AppError) ctx.authError = err;
      else throw err;
    }
    return ctx;
  };

  if (step === 'kysely') {
    const counts = new Map<string, { n: number; at: number }>();
    app.get('/api/v1/projects', async (req, reply) => {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
      if (!m) return reply.code(401).send({ error: 'Invalid token' });
      const key = await db.kysely.selectFrom('api_keys').select(['id', 'organization_id', 'role', 'expires_at', 'revoked_at'])
        .where('key_hash', '=', createHash('sha256').update(m[1]).digest('hex')).executeTakeFirst();
      if (!key || key.revoked_at || (key.expires_at && key.expires_at <= nowIso())) return reply.code(401).send({ error: 'Invalid token' });
      const q = req.query as Record<string, string | undefined>;
      const size = Number(q.page_size ?? 50);
      const org = key.organization_id;
      let rows = await db.kysely.selectFrom('projects').select(['id', 'name', 'description', 'status', 'settings', 'created_at', 'updated_at'])
        .where('organization_id', '=', org).orderBy('id', 'desc').limit(size + 1).offset(0).execute();
      const more = rows.length > size;
      if (more) rows = rows.slice(0, size);
      let c = counts.get(org);
      if (!c || Date.now() - c.at > 5000) {
        const r = await db.kysely.selectFrom('projects').select((eb) => eb.fn.countAll<number>().as('n')).where('organization_id', '=', org).executeTakeFirstOrThrow();
        c = { n: Number(r.n), at: Date.now() };
        counts.set(org, c);
      }
      const next = more ? (() => { const u = new URL(req.url, `${req.protocol}://${req.host}`); u.searchParams.delete('cursor'); u.searchParams.set('page', '2'); return u.toString(); })() : null;
      return { count: c.n, next, previous: null, results: rows.map((r) => ({ ...r, settings: JSON.parse(r.settings) as Record<string, unknown> })) };
    });
  } else if (step === 'service') {
    app.get('/api/v1/projects', async (req, reply) => {
      const ctx = await ctxOf(req);
      if (!ctx.actor) return reply.code(401).send({ error: 'Invalid token' });
      const q = req.query as Record<string, string | undefined>;
      return listProjects(ctx, { page_size: q.page_size === undefined ? undefined : Number(q.page_size) });
    });
  } else {
    app.decorateRequest('ctx', null as unknown as Ctx);
    app.addHook('onRequest', async (req) => { req.ctx = await ctxOf(req); });
    // Routes of a rate-limit class (health, public forms) get a limiter of their own in the app;
    // the list route has none, so here every class gets one built alike (or a no-op).
    type Limiters = Parameters<typeof registerRestRoutes>[2];
    const noop = async () => undefined;
    let limiters = new Proxy({}, { get: () => noop }) as Limiters;
    if (step === 'ratelimit') {
      await app.register(rateLimit, {
        global: true, hook: 'onRequest', max: config.rateLimitPerHour, timeWindow: 60 * 60 * 1000,
        keyGenerator: (req) => { const a = req.ctx?.actor; return a ? `${a.type}:${a.id}` : `ip:${req.ip}`; },
      });
      const made = new Map<string, ReturnType<typeof app.rateLimit>>();
      limiters = new Proxy({}, {
        get: (_t, cls: string) => {
          if (!made.has(cls)) made.set(cls, app.rateLimit({ max: config.rateLimitPerHour, timeWindow: 60 * 60 * 1000, groupId: cls }));
          return made.get(cls);
        },
      }) as Limiters;
    }
    if (step === 'trpc-noout') {
      const local = router({
        list: procedure
          .meta({ permission: 'projects:read', openapi: { method: 'GET', path: '/api/v1/projects', tags: ['Projects'], summary: 'List projects' } })
          .input(z.object({ ...pageParams, status: z.enum(['active', 'archived']).optional(), search: z.string().max(200).optional() }))
          .query(({ ctx, input }) => listProjects(ctx, input)),
      });
      registerRestRoutes(app, local, limiters, { validateResponses: false });
    } else if (step === 'trpc' || step === 'ratelimit') {
      registerRestRoutes(app, appRouter, limiters, { validateResponses: false });
    } else {
      throw new Error(`unknown LADDER_STEP ${step}`);
    }
  }

  installProfiler();
  await app.listen({ port: config.port, host: config.host });
  const stop = async () => { await app.close().catch(() => undefined); await usage.stop(); await db.close(); process.exit(0); };
  process.on('SIGTERM', () => { void stop(); });
  process.on('SIGINT', () => { void stop(); });
}

if (process.env.LADDER_STEP) await serve(process.env.LADDER_STEP);
