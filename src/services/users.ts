import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { Ctx } from '../context.js';
import { hashPassword } from '../crypto.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';

export const USERNAME = /^[A-Za-z0-9_.@+-]{3,150}$/;

export interface NewUser {
  username: string; password: string; email?: string | null; first_name?: string; last_name?: string; is_platform_admin?: boolean;
}

/** Creates a user (password hashed). 409 when the username is taken. */
export async function createUser(db: Kysely<Database>, input: NewUser) {
  if (!USERNAME.test(input.username)) throw badRequest({ username: 'Use 3-150 letters, digits or _ . @ + -' });
  if (input.password.length < 8) throw badRequest({ password: 'At least 8 characters' });
  const taken = await db.selectFrom('users').select('id').where('username', '=', input.username).executeTakeFirst();
  if (taken) throw conflict({ username: 'This username is taken' });
  const now = nowIso();
  const user = {
    id: newId('usr'), username: input.username, email: input.email ?? null, password_hash: await hashPassword(input.password),
    first_name: input.first_name ?? '', last_name: input.last_name ?? '', is_platform_admin: input.is_platform_admin ? 1 : 0,
    totp_secret_enc: null, mailgun_api_key_enc: null, mailgun_domain: null, default_organization_id: null, last_login_at: null,
    created_at: now, updated_at: now,
  };
  await db.insertInto('users').values(user).execute();
  return user;
}

const USER_COLUMNS = ['id', 'username', 'email', 'first_name', 'last_name', 'is_platform_admin', 'is_active', 'totp_enabled', 'mailgun_domain', 'mailgun_api_key_enc', 'last_login_at', 'created_at', 'updated_at'] as const;

export async function getUserRow(ctx: Ctx, userId: string) {
  const row = await ctx.deps.db.kysely.selectFrom('users').select(USER_COLUMNS).where('id', '=', userId).executeTakeFirst();
  if (!row) throw notFound('User');
  return row;
}

/** A user as the API shows it, in one organization (never a password hash or a secret). */
export async function userPayload(ctx: Ctx, userId: string, organizationId: string) {
  const u = await getUserRow(ctx, userId);
  const org = await ctx.deps.db.kysely.selectFrom('organizations as o')
    .leftJoin('memberships as m', (j) => j.onRef('m.organization_id', '=', 'o.id').on('m.user_id', '=', userId))
    .select(['o.id', 'o.name', 'o.slug', 'm.role']).where('o.id', '=', organizationId).executeTakeFirstOrThrow();
  return {
    id: u.id, username: u.username, email: u.email, first_name: u.first_name, last_name: u.last_name,
    is_platform_admin: u.is_platform_admin === 1, two_factor_enabled: u.totp_enabled === 1,
    mailgun_domain: u.mailgun_domain, has_mailgun_api_key: u.mailgun_api_key_enc !== null,
    organization: { id: org.id, name: org.name, slug: org.slug, role: org.role ?? 'none' },
    last_login_at: u.last_login_at, created_at: u.created_at,
  };
}

/** The signed-in user. */
export function currentUser(ctx: Ctx) {
  return userPayload(ctx, ctx.actor!.userId!, ctx.actor!.organizationId);
}
