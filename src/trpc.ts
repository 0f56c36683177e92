import { initTRPC } from '@trpc/server';
import type { Actor, Ctx } from './context.js';
import { assertNoNul, forbidden, toHttpError, unauthorized } from './errors.js';
import type { Permission } from './permissions.js';
import { recordAudit } from './services/audit.js';

export type RateLimitClass = 'health' | 'public_form';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface OpenApiMeta {
  method: HttpMethod;
  /** The documented path, `{param}` style, exactly (trailing slash included where documented). */
  path: string;
  /** Other documented paths served by the same procedure. */
  aliases?: string[];
  tags: string[];
  summary: string;
  description?: string;
  /** 200 by default; 201 for creates, 202 for asynchronous starts, 204 for empty answers. */
  successStatus?: 200 | 201 | 202 | 204;
  /** Error statuses the route can answer beyond those the generator infers (401 on bad credentials, 409, 503…). */
  errors?: number[];
}

export interface Meta {
  openapi?: OpenApiMeta;
  /** No token needed (health, login, public forms). Everything else needs an actor. */
  public?: boolean;
  /** The permission the actor's role must grant. */
  permission?: Permission;
  /** Only platform admins. */
  platformAdmin?: boolean;
  /** Only a signed-in user (not an API key): profile, 2FA, password. */
  userOnly?: boolean;
  /**
   * Rate-limit class, when not the standard per-actor budget: `health` (100/hour per actor by
   * default) or `public_form` (public form posts, counted per IP).
   */
  rateLimit?: RateLimitClass;
  /** Resource type written to the audit log for mutations. */
  resource?: string;
  /** Mutations are audited unless this is false (the service then audits what matters itself). */
  audit?: false;
}

const t = initTRPC.context<Ctx>().meta<Meta>().create({
  // Subscriptions over SSE (httpSubscriptionLink): heartbeats keep proxies from closing idle streams.
  sse: { ping: { enabled: true, intervalMs: 15_000 } },
  errorFormatter({ shape, error }) {
    const mapped = toHttpError(error);
    return { ...shape, message: mapped.body.error, data: { ...shape.data, stack: undefined, httpStatus: mapped.status, error: mapped.body.error, details: mapped.body.details } };
  },
});

export const router = t.router;

/** The one authorization check, driven by a procedure's meta; returns the actor (or null for public routes). */
export function authorizeActor(ctx: Ctx, meta: Meta | undefined): Actor | null {
  if (meta?.public) return ctx.actor;
  if (ctx.authError) throw ctx.authError;
  const actor = ctx.actor;
  if (!actor) throw unauthorized();
  if (meta?.platformAdmin && !actor.isPlatformAdmin) throw forbidden('Platform administrators only');
  if (meta?.userOnly && actor.type !== 'user') throw forbidden('This endpoint needs a signed-in user, not an API key');
  if (meta?.permission && !actor.permissions.has(meta.permission)) throw forbidden(`Your role lacks the "${meta.permission}" permission`);
  return actor;
}

/** The audit row of a successful mutation. */
export async function auditMutation(ctx: Ctx, meta: Meta | undefined, path: string, input: unknown, output: unknown): Promise<void> {
  if (meta?.audit === false || !ctx.actor) return;
  const data = output as { id?: unknown } | undefined;
  const inp = input as { id?: unknown } | undefined;
  const resourceId = typeof data?.id === 'string' ? data.id : typeof inp?.id === 'string' ? inp.id : null;
  // Platform administration acts across organizations: its rows belong to none.
  await recordAudit(ctx, { action: path, resourceType: meta?.resource ?? path.split('.')[0], resourceId, ...(meta?.platformAdmin ? { organizationId: null } : {}) });
}

const authorize = t.middleware(async ({ ctx, meta, next, getRawInput }) => {
  authorizeActor(ctx, meta);
  assertNoNul(await getRawInput());
  return next();
});

/** Every successful mutation leaves an audit row. */
const audit = t.middleware(async ({ ctx, meta, type, path, next, getRawInput }) => {
  const result = await next();
  if (type !== 'mutation' || !result.ok) return result;
  await auditMutation(ctx, meta, path, await getRawInput().catch(() => undefined), result.data);
  return result;
});

/** The one procedure builder: authorization by meta, audit of mutations. */
export const procedure = t.procedure.use(authorize).use(audit);

/**
 * The middlewares every procedure built from `procedure` starts with. The REST facade runs the
 * same steps itself (authorizeActor, input parse, resolver, auditMutation) for procedures whose
 * chain is exactly these plus input/output parsing, and calls any other procedure through tRPC.
 */
export const baseMiddlewares: readonly unknown[] = (procedure as unknown as { _def: { middlewares: unknown[] } })._def.middlewares;

