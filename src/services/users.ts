import type { Kysely, Updateable } from 'kysely';
import type { Database, UsersTable } from '../../db/schema.js';
import type { Ctx } from '../context.js';
import { normalizeHostname } from './outreach_checks.js';
import { hashPassword } from '../crypto.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';

export const USERNAME = /^[A-Za-z0-9_.@+-]{3,150}$/;

/**
 * A DNS hostname for a sending domain: at least two dot-separated labels of letters, digits and
 * hyphens (no leading or trailing hyphen, at most 63 characters each), an alphabetic top-level
 * label, at most 253 characters. No scheme, port, path or IP address.
 */

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

export interface ProfileInput {
  first_name?: string;
  last_name?: string;
  email?: string | null;
  /** Write-only: sealed with the secret box; `null` clears it. */
  mailgun_api_key?: string | null;
  mailgun_domain?: string | null;
}

/**
 * Updates the signed-in user's own profile. Only the given fields change; the Mailgun API key is
 * stored encrypted and never returned (the payload only says whether one is set).
 */
export async function updateProfile(ctx: Ctx, input: ProfileInput) {
  const userId = ctx.actor!.userId!;
  const mailgunDomain = input.mailgun_domain == null ? input.mailgun_domain : normalizeHostname(input.mailgun_domain);
  if (mailgunDomain === null && input.mailgun_domain != null) {
    throw badRequest({ mailgun_domain: 'Must be a domain name such as mg.example.com' });
  }
  const set: Updateable<UsersTable> = {};
  if (input.first_name !== undefined) set.first_name = input.first_name;
  if (input.last_name !== undefined) set.last_name = input.last_name;
  if (input.email !== undefined) set.email = input.email;
  if (input.mailgun_api_key !== undefined) set.mailgun_api_key_enc = input.mailgun_api_key === null ? null : ctx.deps.box.encrypt(input.mailgun_api_key);
  if (mailgunDomain !== undefined) set.mailgun_domain = mailgunDomain;
  if (Object.keys(set).length > 0) {
    await ctx.deps.db.kysely.updateTable('users').set({ ...set, updated_at: nowIso() }).where('id', '=', userId).execute();
  }
  return currentUser(ctx);
}

/** A user's Mailgun credentials, decrypted, for sending on their behalf; null when not configured. */
export async function mailgunCredentials(ctx: Ctx, userId: string): Promise<{ api_key: string; domain: string } | null> {
  const row = await ctx.deps.db.kysely.selectFrom('users').select(['mailgun_api_key_enc', 'mailgun_domain'])
    .where('id', '=', userId).executeTakeFirst();
  if (!row?.mailgun_api_key_enc || !row.mailgun_domain) return null;
  return { api_key: ctx.deps.box.decrypt(row.mailgun_api_key_enc), domain: row.mailgun_domain };
}
