import type { Config } from '../config.js';
import { randomToken } from '../crypto.js';
import type { Db } from '../db.js';
import { createOrganization } from './organizations.js';
import { createUser } from './users.js';

/**
 * On first start of an empty database: a platform admin (ADMIN_USERNAME / ADMIN_PASSWORD, or a
 * generated password returned once to be printed) and a default organization it owns.
 */
export async function bootstrap(db: Db, config: Config): Promise<{ username: string; password: string | null } | null> {
  const any = await db.kysely.selectFrom('users').select('id').limit(1).executeTakeFirst();
  if (any) return null;
  const generated = config.adminPassword === undefined;
  const password = config.adminPassword ?? randomToken(18);
  const user = await createUser(db.kysely, { username: config.adminUsername, password, is_platform_admin: true });
  await createOrganization(db.kysely, { name: 'Default', ownerId: user.id });
  return { username: user.username, password: generated ? password : null };
}
