import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { sql } from 'kysely';
import type { Actor, Deps } from './context.js';
import { prepared } from './db.js';
import { randomToken, sha256Hex } from './crypto.js';
import { unauthorized } from './errors.js';
import { nowIso } from './ids.js';
import { isBuiltinRole, permissionsOfBuiltin } from './permissions.js';

export const JWT_ISSUER = 'agentry';
export const JWT_AUDIENCE = 'agentry-api';
export const ACCESS_TTL_SECONDS = 15 * 60;
export const API_KEY_PREFIX = 'agk_';

export function jwtKeyOf(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

export async function signAccessToken(deps: Pick<Deps, 'jwtKey'>, claims: { userId: string; organizationId: string; sessionId: string }): Promise<string> {
  return new SignJWT({ org: claims.organizationId, sid: claims.sessionId, typ: 'access' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.userId)
    .setIssuer(JWT_ISSUER)
    .setAudience(JWT_AUDIENCE)
    .setIssuedAt()
    .setJti(randomToken(12))
    .setExpirationTime(`${ACCESS_TTL_SECONDS}s`)
    .sign(deps.jwtKey);
}

/** A new organization API key: the full key (shown once), its display prefix and the stored hash. */
export function generateApiKey(): { key: string; prefix: string; hash: string } {
  const key = API_KEY_PREFIX + randomToken(30);
  return { key, prefix: key.slice(0, 12), hash: sha256Hex(key) };
}

/** The permissions of a role: a built-in one's at once, a custom one's (`roleId`) from its row. */
function permissionsOf(deps: Deps, organizationId: string, role: string, roleId: string | null): ReadonlySet<string> | Promise<ReadonlySet<string>> {
  if (roleId) return customRolePermissions(deps, organizationId, roleId);
  return isBuiltinRole(role) ? permissionsOfBuiltin(role) : new Set();
}

async function customRolePermissions(deps: Deps, organizationId: string, roleId: string): Promise<ReadonlySet<string>> {
  const row = await deps.db.kysely.selectFrom('roles').select('permissions')
    .where('id', '=', roleId).where('organization_id', '=', organizationId).executeTakeFirst();
  return new Set(row ? JSON.parse(row.permissions) as string[] : []);
}

/** The role stored on a key or membership: a built-in name, or `custom:<role id>`. */
export function splitRole(role: string): { role: string; roleId: string | null } {
  return role.startsWith('custom:') ? { role, roleId: role.slice(7) } : { role, roleId: null };
}

/**
 * The one auth path: a Bearer token that is either a JWT access token or an organization API key,
 * resolved to an actor. Throws a 401 AppError naming what is wrong with the token.
 */
export async function resolveActor(deps: Deps, authorization: string | undefined): Promise<Actor | null> {
  if (!authorization) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (!m) throw unauthorized('The Authorization header must be "Bearer <token>"', 'Invalid token');
  const token = m[1];
  if (token.startsWith(API_KEY_PREFIX)) return resolveApiKey(deps, token);
  return resolveJwt(deps, token);
}

const apiKeyByHash = prepared((k) => k.selectFrom('api_keys')
  .select(['id', 'organization_id', 'role', 'expires_at', 'revoked_at'])
  .where('key_hash', '=', ''));

const sessionActor = prepared((k) => k.selectFrom('sessions as s')
  .innerJoin('users as u', 'u.id', 's.user_id')
  .leftJoin('memberships as m', (j) => j.onRef('m.user_id', '=', 'u.id').onRef('m.organization_id', '=', 's.organization_id'))
  .select(['s.revoked_at', 'u.is_active', 'u.is_platform_admin', 'm.role', 'm.role_id'])
  .where('s.id', '=', '').where('s.user_id', '=', '').where('s.organization_id', '=', ''));

async function resolveApiKey(deps: Deps, key: string): Promise<Actor> {
  const [row] = await apiKeyByHash(deps.db, [sha256Hex(key)]);
  if (!row) throw unauthorized('The API key is not valid', 'Invalid token');
  if (row.revoked_at) throw unauthorized('The API key has been revoked', 'Invalid token');
  if (row.expires_at && row.expires_at <= nowIso()) throw unauthorized('The API key has expired', 'Invalid token');
  const { role, roleId } = splitRole(row.role);
  deps.usage.record(row.id);
  return {
    type: 'api_key', id: row.id, userId: null, organizationId: row.organization_id, role,
    permissions: await permissionsOf(deps, row.organization_id, role, roleId), isPlatformAdmin: false, sessionId: null,
  };
}

async function resolveJwt(deps: Deps, token: string): Promise<Actor> {
  let payload;
  try {
    ({ payload } = await jwtVerify(token, deps.jwtKey, { issuer: JWT_ISSUER, audience: JWT_AUDIENCE, algorithms: ['HS256'] }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw unauthorized('The access token has expired', 'Invalid token');
    throw unauthorized('The access token is not valid', 'Invalid token');
  }
  if (payload.typ !== 'access' || typeof payload.sub !== 'string' || typeof payload.org !== 'string' || typeof payload.sid !== 'string') {
    throw unauthorized('The access token is not valid', 'Invalid token');
  }
  const [row] = await sessionActor(deps.db, [payload.sid, payload.sub, payload.org]);
  if (!row || row.revoked_at) throw unauthorized('The session has ended; log in again', 'Invalid token');
  if (!row.is_active) throw unauthorized('The user is deactivated', 'Invalid token');
  if (!row.role) throw unauthorized('The user is no longer a member of this organization', 'Invalid token');
  return {
    type: 'user', id: payload.sub, userId: payload.sub, organizationId: payload.org, role: row.role,
    permissions: await permissionsOf(deps, payload.org, row.role, row.role_id),
    isPlatformAdmin: row.is_platform_admin === 1, sessionId: payload.sid,
  };
}

/**
 * Per-key, per-day request counts and last-used times, counted in memory and written in one
 * batch every few seconds (and on close), so that authenticating a request never writes.
 */
export class ApiKeyUsage {
  private pending = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private deps: Pick<Deps, 'db'> | null = null;

  start(deps: Pick<Deps, 'db'>, everyMs = 5000): void {
    this.deps = deps;
    this.timer = setInterval(() => { void this.flush().catch(() => undefined); }, everyMs);
    this.timer.unref();
  }

  record(keyId: string): void {
    this.pending.set(keyId, (this.pending.get(keyId) ?? 0) + 1);
  }

  async flush(): Promise<void> {
    if (!this.deps || this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    const now = nowIso();
    const day = now.slice(0, 10);
    const db = this.deps.db.kysely;
    await db.transaction().execute(async (trx) => {
      for (const [keyId, n] of batch) {
        await trx.insertInto('api_key_usage').values({ api_key_id: keyId, day, requests: n })
          .onConflict((oc) => oc.columns(['api_key_id', 'day']).doUpdateSet({ requests: sql`api_key_usage.requests + ${n}` }))
          .execute();
        await trx.updateTable('api_keys').set({ last_used_at: now }).where('id', '=', keyId).execute();
      }
    });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush().catch(() => undefined);
  }
}
