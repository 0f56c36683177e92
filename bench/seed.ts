/**
 * Seeds a fresh SQLite file for the list benchmark: organizations, one admin API key each, and
 * projects spread round-robin over them (so each organization's rows interleave in id order,
 * as they would in production). Projects are inserted with plain prepared statements in large
 * transactions, after the schema has been created by the real migrations.
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { generateApiKey } from '../src/auth.js';
import { migrate, openDatabase, type Db } from '../src/db.js';
import { newId, nowIso } from '../src/ids.js';
import { createOrganization } from '../src/services/organizations.js';

export interface Seeded {
  path: string;
  orgs: { id: string; name: string; key: string; projects: number }[];
  projects: number;
  ms: number;
}

/** An organization (the service's createOrganization) with one `admin` API key; the key in clear. */
export async function addOrganization(db: Db, name: string): Promise<{ id: string; name: string; key: string }> {
  const org = await createOrganization(db.kysely, { name });
  const { key, prefix, hash } = generateApiKey();
  await db.kysely.insertInto('api_keys').values({
    id: newId('key'), organization_id: org.id, name: 'bench', prefix, key_hash: hash, role: 'admin',
    created_by: null, expires_at: null, last_used_at: null, revoked_at: null, created_at: nowIso(),
  }).execute();
  return { id: org.id, name: org.name, key };
}

const STATUSES = ['active', 'active', 'active', 'archived'] as const;
const COLORS = ['red', 'green', 'blue', 'amber', 'violet'];

export async function seed(path: string, opts: { projects?: number; organizations?: number; batch?: number } = {}): Promise<Seeded> {
  const total = opts.projects ?? 100_000;
  const nOrgs = opts.organizations ?? 10;
  const batch = opts.batch ?? 20_000;
  const t0 = performance.now();

  mkdirSync(dirname(path), { recursive: true });
  for (const suffix of ['', '-wal', '-shm', '-journal']) if (existsSync(path + suffix)) rmSync(path + suffix);

  const db = await openDatabase({ url: path });
  await migrate(db);
  const orgs: Seeded['orgs'] = [];
  for (let i = 0; i < nOrgs; i++) {
    const org = await addOrganization(db, `Bench organization ${i + 1}`);
    orgs.push({ ...org, projects: 0 });
  }
  await db.close();

  const raw = new BetterSqlite3(path);
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  raw.pragma('foreign_keys = ON');
  const insert = raw.prepare(
    'insert into projects (id, organization_id, name, description, status, settings, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const insertMany = raw.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const o = i % nOrgs;
      const now = nowIso();
      const settings = JSON.stringify({ color: COLORS[i % COLORS.length], tier: i % 3, notify: i % 2 === 0, tags: ['bench', `t${i % 7}`] });
      insert.run(
        newId('prj'), orgs[o].id, `Project ${i + 1}`,
        `Seeded project number ${i + 1} for the list benchmark; a description of realistic length.`,
        STATUSES[i % STATUSES.length], settings, now, now,
      );
      orgs[o].projects++;
    }
  });
  for (let from = 0; from < total; from += batch) insertMany(from, Math.min(total, from + batch));
  raw.pragma('wal_checkpoint(TRUNCATE)');
  raw.close();
  return { path, orgs, projects: total, ms: performance.now() - t0 };
}
