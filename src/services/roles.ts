import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { Ctx } from '../context.js';
import { containsText, isUniqueViolation } from '../db.js';
import { badRequest, conflict, forbidden, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';
import { BUILTIN_ROLES, PERMISSIONS, PERMISSION_NAMES, ROLE_RANK, isBuiltinRole, permissionsOfBuiltin } from '../permissions.js';

/**
 * A role the actor may hand out (to a member or an API key): a built-in role no higher than the
 * actor's own, or `custom:<id>` of a custom role of this organization whose permissions the actor
 * holds itself.
 */
export async function assertAssignableRole(ctx: Ctx, role: string): Promise<void> {
  const actor = ctx.actor!;
  if (isBuiltinRole(role)) {
    const mine = isBuiltinRole(actor.role) ? ROLE_RANK[actor.role] : -1;
    if (ROLE_RANK[role] > mine) throw forbidden(`You cannot grant the "${role}" role`);
    return;
  }
  if (!role.startsWith('custom:')) throw badRequest({ role: 'Use owner, admin, member, viewer or custom:<role id>' });
  const row = await ctx.deps.db.kysely.selectFrom('roles').select('permissions')
    .where('id', '=', role.slice(7)).where('organization_id', '=', actor.organizationId).executeTakeFirst();
  if (!row) throw badRequest({ role: 'No such custom role in this organization' });
  const missing = (JSON.parse(row.permissions) as string[]).filter((p) => !actor.permissions.has(p));
  if (missing.length) throw forbidden(`You cannot grant permissions you do not hold: ${missing.join(', ')}`);
}

/**
 * Serializes changes to who holds which role in one organization, for the length of a transaction.
 * PostgreSQL: a row lock on the organization. SQLite: every write already runs one at a time.
 */
export async function lockOrganization(ctx: Ctx, trx: Kysely<Database>, organizationId: string): Promise<void> {
  if (ctx.deps.db.dialect !== 'postgres') return;
  await trx.selectFrom('organizations').select('id').where('id', '=', organizationId).forUpdate().execute();
}

const COLUMNS = ['id', 'name', 'description', 'permissions', 'created_at', 'updated_at'] as const;
type Row = { id: string; name: string; description: string; permissions: string; created_at: string; updated_at: string };

const present = (r: Row) => ({ ...r, permissions: JSON.parse(r.permissions) as string[], assign_as: `custom:${r.id}` });

const CATALOG_ORDER = new Map(PERMISSIONS.map((p, i) => [p.name as string, i]));

/** Validates a permission list against the catalog: unique, in catalog order. 400 naming unknown ones. */
function normalizePermissions(list: string[]): string[] {
  const unknown = [...new Set(list.filter((p) => !PERMISSION_NAMES.has(p)))];
  if (unknown.length) {
    throw badRequest({ permissions: `Unknown permission${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')} (see GET /api/v1/permissions)` });
  }
  return [...new Set(list)].sort((a, b) => CATALOG_ORDER.get(a)! - CATALOG_ORDER.get(b)!);
}

/** 403 when the actor would grant permissions it does not hold itself. */
function assertHolds(ctx: Ctx, granted: string[]): void {
  const missing = granted.filter((p) => !ctx.actor!.permissions.has(p));
  if (missing.length) throw forbidden(`You cannot grant permissions you do not hold: ${missing.join(', ')}`);
}

async function assertNameFree(ctx: Ctx, name: string, exceptId?: string): Promise<void> {
  if (isBuiltinRole(name.toLowerCase())) throw badRequest({ name: `"${name}" is the name of a built-in role` });
  let q = ctx.deps.db.kysely.selectFrom('roles').select('id')
    .where('organization_id', '=', ctx.actor!.organizationId)
    .where((eb) => eb(eb.fn('lower', ['name']), '=', name.toLowerCase()));
  if (exceptId) q = q.where('id', '!=', exceptId);
  if (await q.executeTakeFirst()) throw conflict({ name: `A role named "${name}" already exists` });
}

export function listRoles(ctx: Ctx, input: PageInput & { search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('roles').select(COLUMNS).where('organization_id', '=', org);
  if (input.search) query = query.where(containsText('name', input.search));
  return paginate(ctx, { query, table: 'roles', scope: org, input }, present);
}

export async function getRole(ctx: Ctx, id: string) {
  const row = await ctx.deps.db.kysely.selectFrom('roles').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Role');
  return present(row);
}

export interface RoleInput { name: string; description?: string; permissions: string[] }

export async function createRole(ctx: Ctx, input: RoleInput) {
  const org = ctx.actor!.organizationId;
  const permissions = normalizePermissions(input.permissions);
  assertHolds(ctx, permissions);
  await assertNameFree(ctx, input.name);
  const now = nowIso();
  const id = newId('rol');
  try {
    await ctx.deps.db.kysely.insertInto('roles').values({
      id, organization_id: org, name: input.name, description: input.description ?? '', permissions: JSON.stringify(permissions),
      created_at: now, updated_at: now,
    }).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict({ name: `A role named "${input.name}" already exists` });
    throw err;
  }
  ctx.deps.counts.invalidate(org, 'roles');
  return getRole(ctx, id);
}

export async function updateRole(ctx: Ctx, id: string, input: Partial<RoleInput>) {
  const current = await getRole(ctx, id);
  const set: { name?: string; description?: string; permissions?: string; updated_at: string } = { updated_at: nowIso() };
  if (input.permissions !== undefined) {
    const permissions = normalizePermissions(input.permissions);
    // Only what the change adds is a grant: keeping a permission the role already had is not.
    assertHolds(ctx, permissions.filter((p) => !current.permissions.includes(p)));
    set.permissions = JSON.stringify(permissions);
  }
  if (input.name !== undefined && input.name !== current.name) {
    await assertNameFree(ctx, input.name, id);
    set.name = input.name;
  }
  if (input.description !== undefined) set.description = input.description;
  try {
    await ctx.deps.db.kysely.updateTable('roles').set(set)
      .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict({ name: `A role named "${input.name}" already exists` });
    throw err;
  }
  return getRole(ctx, id);
}

/** Deletes a custom role that nobody holds any more; 409 with the counts otherwise. */
export async function deleteRole(ctx: Ctx, id: string) {
  const org = ctx.actor!.organizationId;
  await getRole(ctx, id);
  const ref = `custom:${id}`;
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    await lockOrganization(ctx, trx, org);
    const members = await trx.selectFrom('memberships').select((eb) => eb.fn.countAll().as('n'))
      .where('organization_id', '=', org).where((eb) => eb.or([eb('role_id', '=', id), eb('role', '=', ref)]))
      .executeTakeFirstOrThrow();
    const keys = await trx.selectFrom('api_keys').select((eb) => eb.fn.countAll().as('n'))
      .where('organization_id', '=', org).where('role', '=', ref).where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', nowIso())]))
      .executeTakeFirstOrThrow();
    const m = Number(members.n);
    const k = Number(keys.n);
    if (m > 0 || k > 0) {
      const parts = [m ? `${m} team member${m > 1 ? 's' : ''}` : '', k ? `${k} API key${k > 1 ? 's' : ''}` : ''].filter(Boolean);
      throw conflict({ role: `Still held by ${parts.join(' and ')}; give them another role first`, members: m, api_keys: k }, 'Role in use');
    }
    await trx.deleteFrom('roles').where('id', '=', id).where('organization_id', '=', org).execute();
  });
  ctx.deps.counts.invalidate(org, 'roles');
  return { id, deleted: true as const };
}

const BUILTIN_DESCRIPTIONS: Record<(typeof BUILTIN_ROLES)[number], string> = {
  owner: 'Everything, including granting the owner role; every organization keeps at least one owner',
  admin: 'Everything except granting the owner role',
  member: 'Reads everything but the audit log and billing; creates and changes the working resources',
  viewer: 'Reads everything but the audit log, secrets and billing; changes nothing',
};

/** The fixed permission catalog and the built-in roles. */
export function permissionCatalog() {
  return {
    permissions: PERMISSIONS.map((p) => ({ name: p.name as string, description: p.description })),
    roles: BUILTIN_ROLES.map((name) => ({
      name, description: BUILTIN_DESCRIPTIONS[name],
      permissions: PERMISSIONS.map((p) => p.name as string).filter((p) => permissionsOfBuiltin(name).has(p)),
    })),
  };
}
