import type { Ctx } from '../context.js';
import { ACCESS_TTL_SECONDS, signAccessToken } from '../auth.js';
import { DUMMY_PASSWORD_HASH, randomToken, sha256Hex, verifyPassword } from '../crypto.js';
import { AppError, badRequest, unauthorized } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { recordAudit } from './audit.js';
import { consumeOtp } from './two_factor.js';
import { currentUser } from './users.js';

export const REFRESH_TTL_DAYS = 30;
const REFRESH_PREFIX = 'rt_';

export interface LoginInput { username: string; password: string; otp?: string; organization_id?: string }
export interface TokenPair { access: string; refresh: string }

const invalidCredentials = () => unauthorized('Invalid username or password', 'Invalid credentials');

async function issueRefresh(ctx: Ctx, sessionId: string): Promise<string> {
  const token = REFRESH_PREFIX + randomToken(32);
  await ctx.deps.db.kysely.insertInto('refresh_tokens').values({ id: newId('rft'), session_id: sessionId, token_hash: sha256Hex(token), created_at: nowIso(), used_at: null }).execute();
  return token;
}

/** Password (and, when enabled, TOTP) login: a new session with an access and a refresh token. */
export async function login(ctx: Ctx, input: LoginInput): Promise<TokenPair & { userId: string; organizationId: string }> {
  const db = ctx.deps.db.kysely;
  const user = await db.selectFrom('users')
    .select(['id', 'password_hash', 'is_active', 'totp_enabled', 'totp_secret_enc', 'totp_last_counter', 'default_organization_id'])
    .where('username', '=', input.username).executeTakeFirst();
  const passwordOk = await verifyPassword(input.password, user?.password_hash ?? DUMMY_PASSWORD_HASH);
  if (!user || !passwordOk) throw invalidCredentials();
  if (!user.is_active) throw unauthorized('This account is deactivated', 'Account disabled');
  if (user.totp_enabled) {
    if (!input.otp) throw new AppError(401, 'OTP required', { otp: 'Two-factor authentication is enabled: an OTP code is required' });
    if (!(await consumeOtp(ctx, user, input.otp))) throw new AppError(401, 'Invalid OTP', { otp: 'The OTP code is invalid or was already used' });
  }
  const memberships = await db.selectFrom('memberships').select(['organization_id']).where('user_id', '=', user.id).orderBy('created_at').execute();
  let organizationId: string | undefined;
  if (input.organization_id) {
    organizationId = memberships.find((m) => m.organization_id === input.organization_id)?.organization_id;
    if (!organizationId) throw badRequest({ organization_id: 'You are not a member of this organization' });
  } else {
    organizationId = memberships.find((m) => m.organization_id === user.default_organization_id)?.organization_id ?? memberships[0]?.organization_id;
  }
  if (!organizationId) throw unauthorized('This user belongs to no organization', 'No organization');

  const now = new Date();
  const sessionId = newId('ses');
  await db.insertInto('sessions').values({
    id: sessionId, user_id: user.id, organization_id: organizationId, created_at: now.toISOString(),
    expires_at: new Date(now.getTime() + REFRESH_TTL_DAYS * 86400_000).toISOString(), revoked_at: null, revoked_reason: null,
  }).execute();
  await db.updateTable('users').set({ last_login_at: now.toISOString() }).where('id', '=', user.id).execute();
  const refresh = await issueRefresh(ctx, sessionId);
  const access = await signAccessToken(ctx.deps, { userId: user.id, organizationId, sessionId });
  await recordAudit(ctx, { action: 'auth.login', resourceType: 'session', resourceId: sessionId, organizationId, actor: { type: 'user', id: user.id } });
  return { access, refresh, userId: user.id, organizationId };
}

/** Rotates a refresh token. A token presented twice revokes its whole session (family). */
export async function refresh(ctx: Ctx, token: string): Promise<TokenPair> {
  const db = ctx.deps.db.kysely;
  const invalid = () => unauthorized('The refresh token is invalid or expired', 'Invalid token');
  if (!token.startsWith(REFRESH_PREFIX)) throw invalid();
  const row = await db.selectFrom('refresh_tokens as r').innerJoin('sessions as s', 's.id', 'r.session_id')
    .select(['r.id', 'r.used_at', 's.id as session_id', 's.user_id', 's.organization_id', 's.revoked_at', 's.expires_at'])
    .where('r.token_hash', '=', sha256Hex(token)).executeTakeFirst();
  if (!row || row.revoked_at || row.expires_at <= nowIso()) throw invalid();
  const now = nowIso();
  const marked = row.used_at ? 0 : Number((await db.updateTable('refresh_tokens').set({ used_at: now }).where('id', '=', row.id).where('used_at', 'is', null).executeTakeFirst()).numUpdatedRows);
  if (marked !== 1) {
    await db.updateTable('sessions').set({ revoked_at: now, revoked_reason: 'refresh_token_reuse' }).where('id', '=', row.session_id).execute();
    await recordAudit(ctx, { action: 'auth.refresh_reuse', resourceType: 'session', resourceId: row.session_id, organizationId: row.organization_id, actor: { type: 'user', id: row.user_id } });
    throw unauthorized('This refresh token was already used; the session has been revoked', 'Invalid token');
  }
  const user = await db.selectFrom('users').select(['is_active']).where('id', '=', row.user_id).executeTakeFirst();
  if (!user?.is_active) throw invalid();
  return {
    access: await signAccessToken(ctx.deps, { userId: row.user_id, organizationId: row.organization_id, sessionId: row.session_id }),
    refresh: await issueRefresh(ctx, row.session_id),
  };
}

/** Ends the caller's session, and the session of a refresh token if one is given. */
export async function logout(ctx: Ctx, input: { refresh?: string }): Promise<{ success: true }> {
  const db = ctx.deps.db.kysely;
  const sessions: string[] = [];
  if (ctx.actor?.sessionId) sessions.push(ctx.actor.sessionId);
  if (input.refresh) {
    const row = await db.selectFrom('refresh_tokens').select('session_id').where('token_hash', '=', sha256Hex(input.refresh)).executeTakeFirst();
    if (row) sessions.push(row.session_id);
  }
  if (sessions.length === 0) {
    if (ctx.authError) throw ctx.authError;
    throw unauthorized('Provide an access token or a refresh token to end a session');
  }
  await db.updateTable('sessions').set({ revoked_at: nowIso(), revoked_reason: 'logout' }).where('id', 'in', sessions).where('revoked_at', 'is', null).execute();
  if (ctx.actor) await recordAudit(ctx, { action: 'auth.logout', resourceType: 'session', resourceId: sessions[0] });
  return { success: true };
}

/** What a token stands for. */
export async function verifyToken(ctx: Ctx) {
  const a = ctx.actor!;
  return {
    valid: true as const,
    actor_type: a.type,
    organization_id: a.organizationId,
    role: a.role,
    permissions: [...a.permissions].sort(),
    user: a.type === 'user' ? await currentUser(ctx) : null,
  };
}

export { ACCESS_TTL_SECONDS };
