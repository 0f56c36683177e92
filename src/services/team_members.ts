import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import { splitRole } from '../auth.js';
import type { Ctx } from '../context.js';
import { containsText, isUniqueViolation } from '../db.js';
import { badRequest, conflict, forbidden, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';
import { ROLE_RANK, isBuiltinRole } from '../permissions.js';
import { assertAssignableRole, lockOrganization } from './roles.js';
import { createUser } from './users.js';

const COLUMNS = [
  'm.id as id', 'm.role as role', 'm.role_id as role_id', 'm.created_at as created_at', 'm.updated_at as updated_at',
  'u.id as user_id', 'u.username as username', 'u.email as email', 'u.first_name as first_name', 'u.last_name as last_name',
  'r.name as role_name',
] as const;
type Row = {
  id: string; role: string; role_id: string | null; created_at: string; updated_at: string;
  user_id: string; username: string; email: string | null; first_name: string; last_name: string; role_name: string | null;
};

function present(r: Row) {
  return {
    id: r.id,
    user: { id: r.user_id, username: r.username, email: r.email, first_name: r.first_name, last_name: r.last_name },
    role: r.role,
    custom_role: r.role_id && r.role_name !== null ? { id: r.role_id, name: r.role_name } : null,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}

function baseQuery(db: Kysely<Database>, org: string) {
  return db.selectFrom('memberships as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .leftJoin('roles as r', (j) => j.onRef('r.id', '=', 'm.role_id').onRef('r.organization_id', '=', 'm.organization_id'))
    .select(COLUMNS)
    .where('m.organization_id', '=', org);
}


export function listTeamMembers(ctx: Ctx, input: PageInput & { role?: string; search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = baseQuery(ctx.deps.db.kysely, org);
  if (input.role) query = query.where('m.role', '=', input.role);
  if (input.search) {
    const text = input.search;
    query = query.where((eb) => eb.or(['u.username', 'u.email', 'u.first_name', 'u.last_name'].map((c) => containsText(c, text))));
  }
  return paginate(ctx, { query, table: 'memberships', scope: org, input, idColumn: 'm.id' }, present);
}

export async function getTeamMember(ctx: Ctx, id: string) {
  const row = await baseQuery(ctx.deps.db.kysely, ctx.actor!.organizationId).where('m.id', '=', id).executeTakeFirst();
  if (!row) throw notFound('Team member');
  return present(row);
}

/**
 * The actor may only change or remove a member whose current role it could grant itself, so that
 * nobody demotes or removes someone who outranks them.
 */
async function assertCanManage(ctx: Ctx, currentRole: string): Promise<void> {
  const actor = ctx.actor!;
  if (isBuiltinRole(currentRole)) {
    const mine = isBuiltinRole(actor.role) ? ROLE_RANK[actor.role] : -1;
    if (ROLE_RANK[currentRole] > mine) throw forbidden(`You cannot change a member with the "${currentRole}" role`);
    return;
  }
  const { roleId } = splitRole(currentRole);
  if (!roleId) return;
  const row = await ctx.deps.db.kysely.selectFrom('roles').select('permissions')
    .where('id', '=', roleId).where('organization_id', '=', actor.organizationId).executeTakeFirst();
  if (!row) return;
  const missing = (JSON.parse(row.permissions) as string[]).filter((p) => !actor.permissions.has(p));
  if (missing.length) throw forbidden(`You cannot change a member who holds permissions you do not: ${missing.join(', ')}`);
}

/** Inside the locked transaction: the custom role still exists (a concurrent delete may have removed it). */
async function assertRoleStillExists(trx: Kysely<Database>, org: string, roleId: string | null): Promise<void> {
  if (!roleId) return;
  const row = await trx.selectFrom('roles').select('id').where('id', '=', roleId).where('organization_id', '=', org).executeTakeFirst();
  if (!row) throw badRequest({ role: 'No such custom role in this organization' });
}

/** 409 when the organization would be left without an owner. Runs inside the locked transaction. */
async function assertAnotherOwner(trx: Kysely<Database>, org: string, membershipId: string, what: string): Promise<void> {
  const other = await trx.selectFrom('memberships').select('id')
    .where('organization_id', '=', org).where('role', '=', 'owner').where('id', '!=', membershipId)
    .limit(1).executeTakeFirst();
  if (!other) throw conflict({ role: `This is the organization's last owner: make someone else an owner before you ${what}` }, 'Last owner');
}

export interface NewTeamMember {
  user_id?: string; username?: string; password?: string; email?: string; first_name?: string; last_name?: string; role?: string;
}

/**
 * Adds an existing user (by `user_id` or `username`) or creates a new user (`username` + `password`)
 * and the membership, in one transaction.
 */
export async function createTeamMember(ctx: Ctx, input: NewTeamMember) {
  const org = ctx.actor!.organizationId;
  const db = ctx.deps.db.kysely;
  const role = input.role ?? 'member';
  const creating = input.password !== undefined;

  if (input.user_id !== undefined && input.username !== undefined) {
    throw badRequest({ user_id: 'Give either user_id or username, not both' });
  }
  if (input.user_id === undefined && input.username === undefined) {
    throw badRequest({ user_id: 'Give user_id or username of an existing user, or username and password to create one' });
  }
  if (creating && input.user_id !== undefined) throw badRequest({ password: 'Only when creating a new user (with username)' });
  if (!creating) {
    const stray = (['email', 'first_name', 'last_name'] as const).filter((k) => input[k] !== undefined);
    if (stray.length) throw badRequest(Object.fromEntries(stray.map((k) => [k, 'Only when creating a new user (with username and password)'])));
  }
  await assertAssignableRole(ctx, role);
  const { roleId } = splitRole(role);

  let userId: string | undefined;
  if (!creating) {
    let q = db.selectFrom('users').select('id');
    q = input.user_id !== undefined ? q.where('id', '=', input.user_id) : q.where('username', '=', input.username!);
    const user = await q.executeTakeFirst();
    if (!user) {
      throw badRequest(input.user_id !== undefined
        ? { user_id: 'No such user' }
        : { username: 'No such user; give a password as well to create a new user' });
    }
    userId = user.id;
    const existing = await db.selectFrom('memberships').select('id').where('organization_id', '=', org).where('user_id', '=', userId).executeTakeFirst();
    if (existing) throw conflict({ user: 'This user is already a member of the organization', team_member_id: existing.id }, 'Already a member');
  }

  const id = newId('mem');
  try {
    await db.transaction().execute(async (trx) => {
      await lockOrganization(ctx, trx, org);
      await assertRoleStillExists(trx, org, roleId);
      if (creating) {
        const user = await createUser(trx, {
          username: input.username!, password: input.password!, email: input.email ?? null, first_name: input.first_name, last_name: input.last_name,
        });
        userId = user.id;
      }
      const now = nowIso();
      await trx.insertInto('memberships').values({ id, organization_id: org, user_id: userId!, role, role_id: roleId, created_at: now, updated_at: now }).execute();
      await trx.updateTable('users').set({ default_organization_id: org }).where('id', '=', userId!).where('default_organization_id', 'is', null).execute();
    });
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    if (creating) throw conflict({ username: 'This username is taken' });
    throw conflict({ user: 'This user is already a member of the organization' }, 'Already a member');
  }
  ctx.deps.counts.invalidate(org, 'memberships');
  return getTeamMember(ctx, id);
}

/** Changes a member's role (same rules as granting it); the last owner cannot be demoted. */
export async function updateTeamMember(ctx: Ctx, id: string, input: { role?: string }) {
  const org = ctx.actor!.organizationId;
  const current = await getTeamMember(ctx, id);
  if (input.role === undefined || input.role === current.role) return current;
  const role = input.role;
  await assertCanManage(ctx, current.role);
  await assertAssignableRole(ctx, role);
  const { roleId } = splitRole(role);
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    await lockOrganization(ctx, trx, org);
    const row = await trx.selectFrom('memberships').select('role').where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
    if (!row) throw notFound('Team member');
    await assertRoleStillExists(trx, org, roleId);
    if (row.role === 'owner' && role !== 'owner') await assertAnotherOwner(trx, org, id, 'change their role');
    await trx.updateTable('memberships').set({ role, role_id: roleId, updated_at: nowIso() })
      .where('id', '=', id).where('organization_id', '=', org).execute();
  });
  return getTeamMember(ctx, id);
}

/**
 * Removes a member: the membership goes and the user's sessions in this organization end (their
 * access tokens stop working here at once; refresh tokens too). The last owner cannot be removed.
 */
export async function deleteTeamMember(ctx: Ctx, id: string) {
  const org = ctx.actor!.organizationId;
  const current = await getTeamMember(ctx, id);
  await assertCanManage(ctx, current.role);
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    await lockOrganization(ctx, trx, org);
    const row = await trx.selectFrom('memberships').select(['role', 'user_id']).where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
    if (!row) throw notFound('Team member');
    if (row.role === 'owner') await assertAnotherOwner(trx, org, id, 'remove them');
    await trx.deleteFrom('memberships').where('id', '=', id).where('organization_id', '=', org).execute();
    await trx.updateTable('sessions').set({ revoked_at: nowIso(), revoked_reason: 'removed_from_organization' })
      .where('user_id', '=', row.user_id).where('organization_id', '=', org).where('revoked_at', 'is', null).execute();
    await trx.updateTable('users').set({ default_organization_id: null })
      .where('id', '=', row.user_id).where('default_organization_id', '=', org).execute();
  });
  ctx.deps.counts.invalidate(org, 'memberships');
  return { id, deleted: true as const };
}
