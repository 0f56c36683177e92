import type { Kysely, Updateable } from 'kysely';
import type { Database, UsersTable } from '../../db/schema.js';
import type { Ctx } from '../context.js';
import { hashPassword } from '../crypto.js';
import { containsText } from '../db.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';
import { isBuiltinRole } from '../permissions.js';
import { createOrganization } from './organizations.js';
import { createUser } from './users.js';

// Platform administration: acts across organizations, so nothing here is scoped by the actor's
// organization. Only platform admins reach these functions (meta.platformAdmin).

/** Count-cache scope for platform-wide lists. */
const PLATFORM = 'platform';


// ---------------------------------------------------------------------------------------------
// Organizations

type OrgRow = { id: string; name: string; slug: string; plan: string; member_count: number | string | bigint | null; created_at: string; updated_at: string };
const presentOrg = (r: OrgRow) => ({ ...r, member_count: Number(r.member_count ?? 0) });

function orgQuery(db: Kysely<Database>) {
  return db.selectFrom('organizations as o').select((eb) => [
    'o.id', 'o.name', 'o.slug', 'o.plan', 'o.created_at', 'o.updated_at',
    eb.selectFrom('memberships as m').select((e) => e.fn.countAll().as('n')).whereRef('m.organization_id', '=', 'o.id').as('member_count'),
  ]);
}

export function listOrganizations(ctx: Ctx, input: PageInput & { search?: string }) {
  let query = orgQuery(ctx.deps.db.kysely);
  if (input.search) { const s = input.search; query = query.where((eb) => eb.or([containsText('o.name', s), containsText('o.slug', s)])); }
  return paginate(ctx, { query, table: 'organizations', scope: PLATFORM, input, idColumn: 'o.id' }, presentOrg);
}

export async function getOrganization(ctx: Ctx, id: string) {
  const row = await orgQuery(ctx.deps.db.kysely).where('o.id', '=', id).executeTakeFirst();
  if (!row) throw notFound('Organization');
  return presentOrg(row);
}

/** An organization, optionally with an existing user as its owner. */
export async function adminCreateOrganization(ctx: Ctx, input: { name: string; owner_user_id?: string }) {
  const org = await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    if (input.owner_user_id) {
      const owner = await trx.selectFrom('users').select('id').where('id', '=', input.owner_user_id).executeTakeFirst();
      if (!owner) throw badRequest({ owner_user_id: 'No such user' });
    }
    return createOrganization(trx, { name: input.name, ownerId: input.owner_user_id });
  });
  ctx.deps.counts.invalidate(PLATFORM, 'organizations');
  return getOrganization(ctx, org.id);
}

// ---------------------------------------------------------------------------------------------
// Users

const USER_COLUMNS = ['id', 'username', 'email', 'first_name', 'last_name', 'is_active', 'is_platform_admin', 'totp_enabled', 'last_login_at', 'created_at', 'updated_at'] as const;
type UserRow = {
  id: string; username: string; email: string | null; first_name: string; last_name: string; is_active: number; is_platform_admin: number;
  totp_enabled: number; last_login_at: string | null; created_at: string; updated_at: string;
};
interface UserMembership { id: string; name: string; slug: string; role: string }

function presentUser(r: UserRow, organizations: UserMembership[]) {
  const { totp_enabled, is_active, is_platform_admin, ...rest } = r;
  return { ...rest, is_active: is_active === 1, is_platform_admin: is_platform_admin === 1, two_factor_enabled: totp_enabled === 1, organizations };
}

async function membershipsOf(db: Kysely<Database>, userIds: string[]): Promise<Map<string, UserMembership[]>> {
  const out = new Map<string, UserMembership[]>();
  if (userIds.length === 0) return out;
  const rows = await db.selectFrom('memberships as m').innerJoin('organizations as o', 'o.id', 'm.organization_id')
    .select(['m.user_id', 'o.id', 'o.name', 'o.slug', 'm.role'])
    .where('m.user_id', 'in', userIds).orderBy('m.created_at').orderBy('m.id').execute();
  for (const { user_id, ...m } of rows) {
    const list = out.get(user_id) ?? [];
    list.push(m);
    out.set(user_id, list);
  }
  return out;
}

export async function listUsers(ctx: Ctx, input: PageInput & { search?: string }) {
  const db = ctx.deps.db.kysely;
  let query = db.selectFrom('users').select(USER_COLUMNS);
  if (input.search) {
    const s = input.search;
    query = query.where((eb) => eb.or([containsText('username', s), containsText('email', s), containsText('first_name', s), containsText('last_name', s)]));
  }
  const page = await paginate(ctx, { query, table: 'users', scope: PLATFORM, input }, (r) => r);
  const orgs = await membershipsOf(db, page.results.map((r) => r.id));
  return { ...page, results: page.results.map((r) => presentUser(r, orgs.get(r.id) ?? [])) };
}

export async function getUser(ctx: Ctx, id: string) {
  const db = ctx.deps.db.kysely;
  const row = await db.selectFrom('users').select(USER_COLUMNS).where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('User');
  return presentUser(row, (await membershipsOf(db, [id])).get(id) ?? []);
}

export interface AdminNewUser {
  username: string; password: string; email?: string | null; first_name?: string; last_name?: string; is_platform_admin?: boolean;
  organization_id?: string; role?: string;
}

/** A user, and with `organization_id` a membership (default role member), in one transaction. */
export async function adminCreateUser(ctx: Ctx, input: AdminNewUser) {
  const { organization_id: orgId, role: roleIn, ...fields } = input;
  if (roleIn !== undefined && !orgId) throw badRequest({ role: 'Give organization_id too: a role is held in an organization' });
  const role = roleIn ?? 'member';
  const user = await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    let roleId: string | null = null;
    if (orgId) {
      const org = await trx.selectFrom('organizations').select('id').where('id', '=', orgId).executeTakeFirst();
      if (!org) throw badRequest({ organization_id: 'No such organization' });
      if (!isBuiltinRole(role)) {
        roleId = role.startsWith('custom:') ? role.slice(7) : null;
        const custom = roleId ? await trx.selectFrom('roles').select('id').where('id', '=', roleId).where('organization_id', '=', orgId).executeTakeFirst() : undefined;
        if (!custom) throw badRequest({ role: 'Use owner, admin, member, viewer or custom:<id of a role of that organization>' });
      }
    }
    const u = await createUser(trx, fields);
    if (orgId) {
      const now = nowIso();
      await trx.insertInto('memberships').values({ id: newId('mem'), organization_id: orgId, user_id: u.id, role, role_id: roleId, created_at: now, updated_at: now }).execute();
      await trx.updateTable('users').set({ default_organization_id: orgId }).where('id', '=', u.id).execute();
    }
    return u;
  });
  ctx.deps.counts.invalidate(PLATFORM, 'users');
  if (orgId) ctx.deps.counts.invalidate(orgId, 'memberships');
  return getUser(ctx, user.id);
}

export interface AdminUserPatch {
  first_name?: string; last_name?: string; email?: string | null; is_active?: boolean; is_platform_admin?: boolean; password?: string;
}

/**
 * Changes a user. Deactivating a user or resetting their password ends their sessions. Platform
 * admins cannot deactivate themselves or drop their own platform-admin flag (409).
 */
export async function adminUpdateUser(ctx: Ctx, id: string, input: AdminUserPatch) {
  const db = ctx.deps.db.kysely;
  const current = await getUser(ctx, id);
  if (id === ctx.actor!.userId) {
    if (input.is_active === false) throw conflict({ is_active: 'You cannot deactivate yourself' });
    if (input.is_platform_admin === false) throw conflict({ is_platform_admin: 'You cannot remove your own platform-admin flag' });
  }
  if (input.password !== undefined && input.password.length < 8) throw badRequest({ password: 'At least 8 characters' });
  const now = nowIso();
  const set: Updateable<UsersTable> = { updated_at: now };
  if (input.first_name !== undefined) set.first_name = input.first_name;
  if (input.last_name !== undefined) set.last_name = input.last_name;
  if (input.email !== undefined) set.email = input.email;
  if (input.is_active !== undefined) set.is_active = input.is_active ? 1 : 0;
  if (input.is_platform_admin !== undefined) set.is_platform_admin = input.is_platform_admin ? 1 : 0;
  if (input.password !== undefined) set.password_hash = await hashPassword(input.password);
  const endSessions = (input.is_active === false && current.is_active) ? 'deactivated' : input.password !== undefined ? 'password_reset' : null;
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('users').set(set).where('id', '=', id).execute();
    if (endSessions) {
      await trx.updateTable('sessions').set({ revoked_at: now, revoked_reason: endSessions })
        .where('user_id', '=', id).where('revoked_at', 'is', null).execute();
    }
  });
  return getUser(ctx, id);
}

// ---------------------------------------------------------------------------------------------
// Stats

export async function platformStats(ctx: Ctx) {
  await ctx.deps.usage.flush();
  const db = ctx.deps.db.kysely;
  const now = nowIso();
  const today = now.slice(0, 10);
  const dayAgo = new Date(Date.now() - 86400_000).toISOString();
  const n = (r: { n: number | string | bigint | null } | undefined) => Number(r?.n ?? 0);
  const [organizations, users, activeUsers, sessions, keys, projects, audit, requests] = await Promise.all([
    db.selectFrom('organizations').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst(),
    db.selectFrom('users').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst(),
    db.selectFrom('users').select((eb) => eb.fn.countAll().as('n')).where('is_active', '=', 1).executeTakeFirst(),
    db.selectFrom('sessions').select((eb) => eb.fn.countAll().as('n')).where('revoked_at', 'is', null).where('expires_at', '>', now).executeTakeFirst(),
    db.selectFrom('api_keys').select((eb) => eb.fn.countAll().as('n')).where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)])).executeTakeFirst(),
    db.selectFrom('projects').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst(),
    db.selectFrom('audit_logs').select((eb) => eb.fn.countAll().as('n')).where('created_at', '>=', dayAgo).executeTakeFirst(),
    db.selectFrom('api_key_usage').select((eb) => eb.fn.sum<number | string | null>('requests').as('n')).where('day', '=', today).executeTakeFirst(),
  ]);
  return {
    organizations: n(organizations), users: n(users), active_users: n(activeUsers), active_sessions: n(sessions),
    active_api_keys: n(keys), projects: n(projects), audit_events_24h: n(audit), api_requests_today: n(requests),
    generated_at: now,
  };
}
