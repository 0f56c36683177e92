import type { Ctx } from '../context.js';
import { badRequest, forbidden } from '../errors.js';
import { ROLE_RANK, isBuiltinRole } from '../permissions.js';

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
