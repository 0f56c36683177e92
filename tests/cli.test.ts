import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { openDatabase, migrate } from '../src/db.js';
import { bootstrap } from '../src/services/bootstrap.js';
import { verifyPassword } from '../src/crypto.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'agentry-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
      env: { ...process.env, DATA_DIR: dir, DATABASE_URL: join(dir, 'cli.db'), ...env }, timeout: 60_000,
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// Each case starts the CLI (a tsx process that loads the whole app) several times: minutes on a busy machine.
describe('CLI', { timeout: 180_000 }, () => {
  it('prints usage and exits 2 on bad arguments', async () => {
    const cases = [[], ['frobnicate'], ['create-user', '--username', 'x'], ['create-org'], ['migrate', '--nope']];
    const results = await Promise.all(cases.map((args) => cli(args)));
    results.forEach((r, i) => {
      expect(r.code, cases[i].join(' ')).toBe(2);
      expect(r.stderr).toContain('Usage: agentry <command>');
    });
  });

  it('migrates, creates an organization and users, and refuses a taken username', async () => {
    const m = await cli(['migrate']);
    expect(m.code).toBe(0);
    const org = await cli(['create-org', '--name', 'Acme Sales']);
    expect(org.code).toBe(0);
    const orgId = /\((org_[A-Z0-9]+)\)/.exec(org.stdout)?.[1];
    expect(orgId).toBeDefined();
    const user = await cli(['create-user', '--username', 'seller', '--password', 'long enough pw', '--org-id', orgId!, '--role', 'admin']);
    expect(user.code, user.stderr).toBe(0);
    const again = await cli(['create-user', '--username', 'seller', '--password', 'long enough pw']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('taken');
    const badRole = await cli(['create-user', '--username', 'other', '--password', 'long enough pw', '--org-id', orgId!, '--role', 'king']);
    expect(badRole.code).toBe(2);

    const db = await openDatabase({ url: join(dir, 'cli.db') });
    const row = await db.kysely.selectFrom('memberships as m').innerJoin('users as u', 'u.id', 'm.user_id').innerJoin('organizations as o', 'o.id', 'm.organization_id')
      .select(['m.role', 'o.name', 'u.password_hash']).where('u.username', '=', 'seller').executeTakeFirstOrThrow();
    expect(row).toMatchObject({ role: 'admin', name: 'Acme Sales' });
    expect(await verifyPassword('long enough pw', row.password_hash)).toBe(true);
    await db.close();
  });

  it('openapi --check fails on a stale file and passes on a fresh one', async () => {
    const out = join(dir, 'openapi.json');
    expect((await cli(['openapi', '--out', out])).code).toBe(0);
    expect((await cli(['openapi', '--out', out, '--check'])).code).toBe(0);
    const stale = join(dir, 'stale.json');
    writeFileSync(stale, '{}\n');
    const r = await cli(['openapi', '--out', stale, '--check']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('out of date');
  });
});

describe('first start', () => {
  it('generates JWT_SECRET and SECRETS_KEY once, mode 0600, and reuses them', () => {
    const data = join(dir, 'secrets');
    const a = loadConfig({ DATA_DIR: data });
    for (const f of ['jwt_secret', 'secrets_key']) {
      expect(existsSync(join(data, f))).toBe(true);
      expect(statSync(join(data, f)).mode & 0o777).toBe(0o600);
    }
    const b = loadConfig({ DATA_DIR: data });
    expect(b.jwtSecret).toBe(a.jwtSecret);
    expect(b.secretsKey.equals(a.secretsKey)).toBe(true);
    expect(a.secretsKey.length).toBe(32);
    expect(readFileSync(join(data, 'jwt_secret'), 'utf8').trim()).toBe(a.jwtSecret);
    const fromEnv = loadConfig({ DATA_DIR: data, JWT_SECRET: 'given', SECRETS_KEY: 'a passphrase' });
    expect(fromEnv.jwtSecret).toBe('given');
    expect(fromEnv.secretsKey.length).toBe(32);
  });

  it('rejects a bad numeric setting', () => {
    expect(() => loadConfig({ DATA_DIR: join(dir, 'secrets'), PORT: 'eighty' })).toThrow(/PORT/);
  });

  it('creates a platform admin with a generated password and a default organization, once', async () => {
    const db = await openDatabase({ url: ':memory:' });
    await migrate(db);
    const config = loadConfig({ DATA_DIR: join(dir, 'secrets') });
    const first = await bootstrap(db, config);
    expect(first?.username).toBe('admin');
    expect(first?.password?.length).toBeGreaterThanOrEqual(16);
    const admin = await db.kysely.selectFrom('users').selectAll().executeTakeFirstOrThrow();
    expect(admin.is_platform_admin).toBe(1);
    expect(await verifyPassword(first!.password!, admin.password_hash)).toBe(true);
    const m = await db.kysely.selectFrom('memberships').select(['role', 'organization_id']).where('user_id', '=', admin.id).execute();
    expect(m).toHaveLength(1);
    expect(m[0].role).toBe('owner');
    expect(await bootstrap(db, config)).toBeNull();
    await db.close();
  });

  it('uses ADMIN_USERNAME / ADMIN_PASSWORD when given, and prints no password', async () => {
    const db = await openDatabase({ url: ':memory:' });
    await migrate(db);
    const r = await bootstrap(db, loadConfig({ DATA_DIR: join(dir, 'secrets'), ADMIN_USERNAME: 'root_admin', ADMIN_PASSWORD: 'chosen password' }));
    expect(r).toEqual({ username: 'root_admin', password: null });
    const u = await db.kysely.selectFrom('users').selectAll().executeTakeFirstOrThrow();
    expect(await verifyPassword('chosen password', u.password_hash)).toBe(true);
    await db.close();
  });
});
