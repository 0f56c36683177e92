import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import { newId, nowIso } from '../ids.js';

export function slugify(name: string): string {
  return name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 48) || 'org';
}

/** Creates an organization with a unique slug; with `ownerId`, that user becomes its owner. */
export async function createOrganization(db: Kysely<Database>, input: { name: string; ownerId?: string }) {
  const base = slugify(input.name);
  let slug = base;
  for (let i = 2; await db.selectFrom('organizations').select('id').where('slug', '=', slug).executeTakeFirst(); i++) slug = `${base}-${i}`;
  const now = nowIso();
  const org = { id: newId('org'), name: input.name, slug, created_at: now, updated_at: now };
  await db.insertInto('organizations').values(org).execute();
  if (input.ownerId) {
    await db.insertInto('memberships').values({ id: newId('mem'), organization_id: org.id, user_id: input.ownerId, role: 'owner', role_id: null, created_at: now, updated_at: now }).execute();
    await db.updateTable('users').set({ default_organization_id: org.id }).where('id', '=', input.ownerId).where('default_organization_id', 'is', null).execute();
  }
  return org;
}
