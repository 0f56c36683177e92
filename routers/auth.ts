import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { ACCESS_TTL_SECONDS, login, logout, refresh, verifyToken } from '../src/services/auth.js';
import { userPayload } from '../src/services/users.js';

const credentials = z.object({
  username: z.string().min(1).max(150),
  password: z.string().min(1).max(1024),
  otp: z.string().max(12).optional().describe('TOTP code, required once 2FA is enabled'),
  organization_id: z.string().max(64).optional().describe('Organization to act in (default: the user\'s default)'),
});
const pair = z.object({ access: z.string(), refresh: z.string() });
const userOut = z.object({
  id: z.string(), username: z.string(), email: z.string().nullable(), first_name: z.string(), last_name: z.string(),
  is_platform_admin: z.boolean(), two_factor_enabled: z.boolean(), mailgun_domain: z.string().nullable(), has_mailgun_api_key: z.boolean(),
  organization: z.object({ id: z.string(), name: z.string(), slug: z.string(), role: z.string() }),
  last_login_at: z.string().nullable(), created_at: z.string(),
});
export { userOut };
const session = z.object({
  token: z.string().describe('The access token (same as `access`)'),
  access: z.string(), refresh: z.string(), token_type: z.literal('Bearer'), expires_in: z.number().int(), user: userOut,
});

export const authRouter = router({
  token: procedure
    .meta({ public: true, audit: false, openapi: { method: 'POST', path: '/api/token/', tags: ['Auth'], summary: 'Obtain an access and a refresh token', errors: [401] } })
    .input(credentials).output(pair)
    .mutation(async ({ ctx, input }) => {
      const r = await login(ctx, input);
      return { access: r.access, refresh: r.refresh };
    }),
  tokenRefresh: procedure
    .meta({ public: true, audit: false, openapi: { method: 'POST', path: '/api/token/refresh/', tags: ['Auth'], summary: 'Rotate a refresh token', errors: [401] } })
    .input(z.object({ refresh: z.string().min(1).max(512) })).output(pair)
    .mutation(({ ctx, input }) => refresh(ctx, input.refresh)),
  login: procedure
    .meta({
      public: true, audit: false,
      openapi: { method: 'POST', path: '/api/v1/admin/login', aliases: ['/api/v1/sessions/admin', '/api/v1/auth/login'], tags: ['Auth'], summary: 'Log in: JWT and user payload', errors: [401] },
    })
    .input(credentials).output(session)
    .mutation(async ({ ctx, input }) => {
      const r = await login(ctx, input);
      const user = await userPayload(ctx, r.userId, r.organizationId);
      return { token: r.access, access: r.access, refresh: r.refresh, token_type: 'Bearer' as const, expires_in: ACCESS_TTL_SECONDS, user };
    }),
  refresh: procedure
    .meta({ public: true, audit: false, openapi: { method: 'POST', path: '/api/v1/auth/refresh', tags: ['Auth'], summary: 'Rotate a refresh token', errors: [401] } })
    .input(z.object({ refresh: z.string().min(1).max(512) }))
    .output(pair.extend({ token_type: z.literal('Bearer'), expires_in: z.number().int() }))
    .mutation(async ({ ctx, input }) => ({ ...(await refresh(ctx, input.refresh)), token_type: 'Bearer' as const, expires_in: ACCESS_TTL_SECONDS })),
  logout: procedure
    .meta({ public: true, audit: false, openapi: { method: 'POST', path: '/api/v1/auth/logout', tags: ['Auth'], summary: 'End the session of the access token and/or of a refresh token', errors: [401] } })
    .input(z.object({ refresh: z.string().max(512).optional() }))
    .output(z.object({ success: z.boolean() }))
    .mutation(({ ctx, input }) => logout(ctx, input)),
  verify: procedure
    .meta({ openapi: { method: 'GET', path: '/api/v1/admin/verify', tags: ['Auth'], summary: 'Validate the Bearer token and describe its actor' } })
    .input(z.object({}))
    .output(z.object({
      valid: z.literal(true), actor_type: z.enum(['user', 'api_key']), organization_id: z.string(), role: z.string(),
      permissions: z.array(z.string()), user: userOut.nullable(),
    }))
    .query(({ ctx }) => verifyToken(ctx)),
});
