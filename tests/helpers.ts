import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import pg from 'pg';
import { buildApp, type App } from '../src/app.js';
import { signAccessToken } from '../src/auth.js';
import type { Config } from '../src/config.js';
import { migrate, openDatabase, type Db } from '../src/db.js';
import { newId, nowIso } from '../src/ids.js';
import { createOrganization } from '../src/services/organizations.js';
import { createUser } from '../src/services/users.js';
import { createApiKey } from '../src/services/api_keys.js';
import type { Ctx } from '../src/context.js';
import { PERMISSIONS } from '../src/permissions.js';

export const TEST_PASSWORD = 'correct horse battery';

export function testConfig(overrides: Partial<Config> = {}): Config {
  return {
    port: 0, host: '127.0.0.1', dataDir: join(tmpdir(), 'agentry-test'), databaseUrl: ':memory:',
    jwtSecret: 'test-jwt-secret-0123456789abcdef0123456789', secretsKey: Buffer.alloc(32, 7),
    adminUsername: 'admin', adminPassword: undefined, redisUrl: undefined,
    rateLimitPerHour: 100_000, rateLimitHealthPerHour: 100_000, rateLimitPublicFormPerHour: 100_000, logLevel: 'silent', bodyLimit: 1024 * 1024,
    trustProxy: false, publicUrl: undefined, inProcessWorkers: false, orgConcurrency: 0, dnsServers: [], dnsTimeoutMs: 2000, dnsNegativeTtl: 60, uploadLimitBytes: 64 * 1024 * 1024, outboundAllowlist: [], validateResponses: true, version: '0.1.0',
    ...overrides,
  };
}

/**
 * A fresh migrated database for one test file: a new schema on the PostgreSQL server named by
 * TEST_DATABASE_URL, else SQLite in memory — or, with `shared`, in a temporary file, so that
 * another process (a worker a test kills) can open it too: `url` and `schema` say where.
 */
export async function freshDb(opts: { shared?: boolean } = {}): Promise<{ db: Db; url: string; schema: string; drop(): Promise<void> }> {
  const url = process.env.TEST_DATABASE_URL;
  if (url) {
    // The run's prefix comes from tests/global-setup.ts, which drops these schemas at the end.
    const prefix = process.env.TEST_SCHEMA_PREFIX;
    const schema = `${prefix ?? 't_'}${randomBytes(6).toString('hex')}`;
    const db = await openDatabase({ url, schema });
    const drop = async () => {
      await db.close();
      if (prefix) return;
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    };
    try {
      await migrate(db);
    } catch (err) {
      await drop();
      throw err;
    }
    return { db, url, schema, drop };
  }
  const dir = opts.shared ? mkdtempSync(join(tmpdir(), 'agentry-test-')) : null;
  const file = dir ? join(dir, 'test.db') : ':memory:';
  const db = await openDatabase({ url: file });
  await migrate(db);
  return {
    db, url: file, schema: '',
    drop: async () => {
      await db.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Principal { userId: string; username: string; token: string; organizationId: string }

export interface TestEnv {
  app: App;
  db: Db;
  orgA: string;
  orgB: string;
  owner: Principal; admin: Principal; member: Principal; viewer: Principal;
  /** Owner of organization B: for "another organization's id" checks. */
  otherOwner: Principal;
  /** A platform admin (member of organization A as owner). */
  platformAdmin: Principal;
  /** A viewer-scoped API key of organization A. */
  viewerKey: string;
  /** An admin-scoped API key of organization A. */
  adminKey: string;
  request(method: string, url: string, opts?: { token?: string; body?: unknown; headers?: Record<string, string>; payload?: string | Buffer }): Promise<Res>;
  /** A request context acting as `who`, for calling services directly in fixtures. */
  ctxOf(who: Principal): Ctx;
  close(): Promise<void>;
}

export interface Res { status: number; body: any; headers: Record<string, string | string[] | undefined>; text: string }

async function principal(env: { app: App }, org: string, username: string, role: string, opts: { platformAdmin?: boolean } = {}): Promise<Principal> {
  const db = env.app.deps.db.kysely;
  const userId = (await createUser(db, { username, password: TEST_PASSWORD, email: `${username}@example.test`, is_platform_admin: opts.platformAdmin })).id;
  const now = nowIso();
  await db.insertInto('memberships').values({ id: newId('mem'), organization_id: org, user_id: userId, role, role_id: null, created_at: now, updated_at: now }).execute();
  await db.updateTable('users').set({ default_organization_id: org }).where('id', '=', userId).execute();
  const sessionId = newId('ses');
  await db.insertInto('sessions').values({ id: sessionId, user_id: userId, organization_id: org, created_at: now, expires_at: new Date(Date.now() + 86400_000).toISOString(), revoked_at: null, revoked_reason: null }).execute();
  const token = await signAccessToken(env.app.deps, { userId, organizationId: org, sessionId });
  return { userId, username, token, organizationId: org };
}

export async function createTestEnv(configOverrides: Partial<Config> = {}): Promise<TestEnv> {
  const { db, drop } = await freshDb();
  const app = await buildApp(testConfig(configOverrides), { db, logger: pino({ level: 'silent' }) });
  const orgA = (await createOrganization(db.kysely, { name: 'Org A' })).id;
  const orgB = (await createOrganization(db.kysely, { name: 'Org B' })).id;
  const env = { app } as TestEnv;
  const [owner, admin, member, viewer, otherOwner, platformAdmin] = await Promise.all([
    principal(env, orgA, 'owner_a', 'owner'),
    principal(env, orgA, 'admin_a', 'admin'),
    principal(env, orgA, 'member_a', 'member'),
    principal(env, orgA, 'viewer_a', 'viewer'),
    principal(env, orgB, 'owner_b', 'owner'),
    principal(env, orgA, 'platform_admin', 'owner', { platformAdmin: true }),
  ]);
  const ctxOf = (who: Principal): Ctx => ({
    deps: app.deps, authError: null, requestId: 'test', ip: '127.0.0.1', baseUrl: 'http://localhost', url: '/',
    actor: {
      type: 'user', id: who.userId, userId: who.userId, organizationId: who.organizationId, role: 'owner',
      permissions: new Set(PERMISSIONS.map((p) => p.name)), isPlatformAdmin: false, sessionId: null,
    },
  });
  const viewerKey = (await createApiKey(ctxOf(owner), { name: 'viewer key', role: 'viewer' })).key;
  const adminKey = (await createApiKey(ctxOf(owner), { name: 'admin key', role: 'admin' })).key;
  Object.assign(env, {
    db, orgA, orgB, owner, admin, member, viewer, otherOwner, platformAdmin, viewerKey, adminKey, ctxOf,
    async request(method: string, url: string, opts: { token?: string; body?: unknown; headers?: Record<string, string>; payload?: string | Buffer } = {}) {
      const headers: Record<string, string> = { ...(opts.headers ?? {}) };
      if (opts.token) headers.authorization = `Bearer ${opts.token}`;
      let payload: string | Buffer | undefined = opts.payload;
      if (opts.body !== undefined) { payload = JSON.stringify(opts.body); headers['content-type'] ??= 'application/json'; }
      const res = await app.fastify.inject({ method: method as 'GET', url, headers, payload });
      let body: unknown;
      try { body = res.body ? JSON.parse(res.body) : undefined; } catch { body = undefined; }
      return { status: res.statusCode, body, headers: res.headers as Res['headers'], text: res.body };
    },
    async close() { await app.close(); await drop(); },
  });
  return env;
}


/** Asserts the `{error, details}` error body. */
export function expectError(res: Res, status: number): void {
  if (res.status !== status) throw new Error(`expected ${status}, got ${res.status}: ${res.text}`);
  if (typeof res.body?.error !== 'string' || !('details' in res.body)) throw new Error(`not an {error, details} body: ${res.text}`);
}
