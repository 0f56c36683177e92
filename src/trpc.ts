import { initTRPC } from '@trpc/server';
import type { Ctx } from './context.js';
import { AppError, forbidden, toHttpError, unauthorized } from './errors.js';
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
  errorFormatter({ shape, error }) {
    const mapped = toHttpError(error);
    return { ...shape, message: mapped.body.error, data: { ...shape.data, stack: undefined, httpStatus: mapped.status, error: mapped.body.error, details: mapped.body.details } };
  },
});

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;

/** The one authorization check, driven by each procedure's meta. */
const authorize = t.middleware(({ ctx, meta, next }) => {
  if (meta?.public) return next();
  if (ctx.authError) throw ctx.authError;
  const actor = ctx.actor;
  if (!actor) throw unauthorized();
  if (meta?.platformAdmin && !actor.isPlatformAdmin) throw forbidden('Platform administrators only');
  if (meta?.userOnly && actor.type !== 'user') throw forbidden('This endpoint needs a signed-in user, not an API key');
  if (meta?.permission && !actor.permissions.has(meta.permission)) throw forbidden(`Your role lacks the "${meta.permission}" permission`);
  return next({ ctx: { ...ctx, actor } });
});

/** Every successful mutation leaves an audit row. */
const audit = t.middleware(async ({ ctx, meta, type, path, next, getRawInput }) => {
  const result = await next();
  if (type !== 'mutation' || meta?.audit === false || !result.ok || !ctx.actor) return result;
  const data = result.data as { id?: unknown } | undefined;
  const input = (await getRawInput().catch(() => undefined)) as { id?: unknown } | undefined;
  const resourceId = typeof data?.id === 'string' ? data.id : typeof input?.id === 'string' ? input.id : null;
  // Platform administration acts across organizations: its rows belong to none.
  await recordAudit(ctx, { action: path, resourceType: meta?.resource ?? path.split('.')[0], resourceId, ...(meta?.platformAdmin ? { organizationId: null } : {}) });
  return result;
});

/** The one procedure builder: authorization by meta, audit of mutations. */
export const procedure = t.procedure.use(authorize).use(audit);

export { AppError };
