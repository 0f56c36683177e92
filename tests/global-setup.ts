import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * On PostgreSQL every test file migrates a schema of its own. Dropping one while another file
 * migrates breaks the other's migrator, which reads the catalog of every schema, so the schemas
 * are dropped here, once the whole run is over. They share a prefix unique to this run, so that
 * two runs against one server leave each other alone.
 */
export default async function setup(): Promise<(() => Promise<void>) | void> {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) return;
  const prefix = `t_${randomBytes(3).toString('hex')}_`;
  // Workers are forked after this runs and inherit the environment.
  process.env.TEST_SCHEMA_PREFIX = prefix;
  return async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const { rows } = await c.query<{ nspname: string }>(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", [prefix],
      );
      for (const { nspname } of rows) await c.query(`DROP SCHEMA IF EXISTS ${nspname} CASCADE`);
    } finally {
      await c.end();
    }
  };
}
