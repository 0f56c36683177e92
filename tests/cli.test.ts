import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { openDatabase, migrate } from '../src/db.js';
import { bootstrap } from '../src/services/bootstrap.js';
import { verifyPassword } from '../src/crypto.js';
import { enqueue, getJob } from '../src/engine/queue.js';

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

/** A port nobody listens on now: bound on port 0, then released. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface Daemon {
  child: ChildProcess;
  output(): string;
  /** Resolves with the stdout seen so far once it matches `pattern`; rejects if the process exits first. */
  waitFor(pattern: RegExp, ms: number): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const daemons = new Set<ChildProcess>();

/** Starts a long-running CLI command (`serve`, `worker`) as a child process. */
function daemon(args: string[], env: Record<string, string>): Daemon {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
    env: { ...process.env, DATA_DIR: dir, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  daemons.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => { stdout += b.toString(); });
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => { daemons.delete(child); resolve({ code, signal }); });
  });
  const output = () => `stdout:\n${stdout}\nstderr:\n${stderr}`;
  const waitFor = (pattern: RegExp, ms: number) => new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no ${pattern} within ${ms} ms\n${output()}`)); }, ms);
    const check = () => { if (pattern.test(stdout)) { cleanup(); resolve(stdout); } };
    const early = () => { cleanup(); reject(new Error(`exited before ${pattern}\n${output()}`)); };
    const cleanup = () => { clearTimeout(timer); child.stdout!.off('data', check); child.off('exit', early); };
    child.stdout!.on('data', check);
    child.once('exit', early);
    check();
  });
  return { child, output, waitFor, exited };
}

/** Sends SIGTERM and resolves with the exit, or with `null` if the process is still running after `ms`. */
async function terminate(d: Daemon, ms: number) {
  d.child.kill('SIGTERM');
  return Promise.race([d.exited, new Promise<null>((resolve) => setTimeout(() => resolve(null), ms))]);
}

/** The SQLite file was closed cleanly: its WAL is checkpointed and removed, and it passes integrity_check. */
function expectClosedCleanly(file: string) {
  expect(existsSync(`${file}-wal`), `${file}-wal left behind`).toBe(false);
  const raw = new BetterSqlite3(file);
  try {
    expect(raw.pragma('integrity_check', { simple: true })).toBe('ok');
  } finally {
    raw.close();
  }
}

// Each case starts one long-running tsx process (the whole app): tens of seconds on a busy machine.
describe('CLI serve and worker processes', { timeout: 120_000 }, () => {
  afterAll(() => {
    for (const child of daemons) child.kill('SIGKILL');
  });

  it('serve (WORKERS_IN_PROCESS=false) answers /api/health/ and exits 0 on SIGTERM, closing the database', async () => {
    const file = join(dir, 'serve.db');
    const port = await freePort();
    const d = daemon(['serve'], {
      DATABASE_URL: file, PORT: String(port), HOST: '127.0.0.1', WORKERS_IN_PROCESS: 'false', ADMIN_PASSWORD: 'serve test password',
    });
    try {
      const out = await d.waitFor(/Agentry listening on http:\/\/localhost:\d+ .*\n/, 60_000);
      expect(out).toContain(`Agentry listening on http://localhost:${port} (database: sqlite)`);
      expect(out).not.toContain('workers in-process');
      expect(out).toContain('Created platform admin "admin" password: from ADMIN_PASSWORD');

      const res = await fetch(`http://127.0.0.1:${port}/api/health/`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'healthy', checks: { database: { status: 'up' } } });

      const exit = await terminate(d, 10_000);
      expect(exit, d.output()).toEqual({ code: 0, signal: null });
    } finally {
      d.child.kill('SIGKILL');
    }
    expectClosedCleanly(file);
    // Without in-process workers nothing scheduled the recurring jobs.
    const raw = new BetterSqlite3(file);
    try {
      expect(raw.prepare('select count(*) as n from jobs').get()).toEqual({ n: 0 });
    } finally {
      raw.close();
    }
  });

  it('worker runs a queued job and its recurring jobs, then exits 0 on SIGTERM, closing the database', async () => {
    const file = join(dir, 'worker.db');
    const db = await openDatabase({ url: file });
    await migrate(db);
    // contacts.recheck is registered by the app's modules; with no contacts it checks nothing (no DNS).
    const jobId = await enqueue(db.kysely, { type: 'contacts.recheck', payload: { limit: 5 } });
    await db.close();

    const d = daemon(['worker'], { DATABASE_URL: file, WORKER_CONCURRENCY: '2' });
    try {
      const out = await d.waitFor(/Agentry worker \S+ running \(database: sqlite\)\n/, 60_000);
      expect(out).toMatch(new RegExp(`Agentry worker [^ ]+:${d.child.pid}:\\S+ running`));

      const recurring = ['status.checks', 'status.prune', 'outreach.check_domains', 'contacts.recheck_due'];
      const poll = await openDatabase({ url: file });
      try {
        const deadline = Date.now() + 30_000;
        const done = async () => {
          const job = await getJob(poll.kysely, jobId);
          const rows = await poll.kysely.selectFrom('jobs').select(['type', 'status', 'result', 'run_at'])
            .where('id', 'in', recurring.map((t) => `job_recurring_${t}`)).execute();
          return job?.status === 'succeeded' && rows.length === recurring.length && rows.every((r) => r.result !== null && r.status === 'queued');
        };
        while (!(await done())) {
          if (Date.now() > deadline) throw new Error(`jobs not run within 30 s\n${d.output()}`);
          await new Promise((r) => setTimeout(r, 200));
        }
        const job = await getJob(poll.kysely, jobId);
        expect(job).toMatchObject({ status: 'succeeded', attempts: 1, locked_by: null, last_error: null });
        expect(JSON.parse(job!.result!)).toEqual({ checked: 0, changed: 0, unknown: 0 });
        // A recurring job that ran is queued again for its next time, in the future.
        const rows = await poll.kysely.selectFrom('jobs').select(['type', 'run_at', 'attempts', 'locked_by'])
          .where('id', 'in', recurring.map((t) => `job_recurring_${t}`)).execute();
        for (const r of rows) {
          expect(r.locked_by, r.type).toBeNull();
          expect(Date.parse(r.run_at), r.type).toBeGreaterThan(Date.now());
        }
        // status.checks recorded its builtin components.
        const components = await poll.kysely.selectFrom('status_components').select('last_checked').execute();
        expect(components.length).toBeGreaterThan(0);
        expect(components.every((c) => c.last_checked !== null)).toBe(true);
      } finally {
        // The WAL is removed only when the last connection closes: this one first.
        await poll.close();
      }

      const exit = await terminate(d, 15_000);
      expect(exit, d.output()).toEqual({ code: 0, signal: null });
    } finally {
      d.child.kill('SIGKILL');
    }
    expectClosedCleanly(file);
  });
});
