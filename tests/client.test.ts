import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import openapiTS, { astToString } from 'openapi-typescript';
import createFetchClient from 'openapi-fetch';
import pino from 'pino';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../src/app.js';
import { createClient, TRPCClientError, type AppRouter } from '../src/client.js';
import * as pkg from 'agentry';
import { createOrganization } from '../src/services/organizations.js';
import { createUser } from '../src/services/users.js';
import { freshDb, testConfig, TEST_PASSWORD } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));

// A hand-written subset of what openapi-typescript generates from openapi.json: enough to type the calls below.
type Json<T> = { content: { 'application/json': T } };
type ErrorBody = { error: string; details: string | Record<string, unknown> | unknown[] };
type Project = { id: string; name: string; description: string; status: 'active' | 'archived'; created_at: string };
interface paths {
  '/api/v1/admin/login': {
    post: {
      parameters: { query?: never; header?: never; path?: never; cookie?: never };
      requestBody: Json<{ username: string; password: string; otp?: string }>;
      responses: { 200: Json<{ token: string; access: string; refresh: string; token_type: 'Bearer'; user: { id: string; username: string; organization: { id: string } } }>; 401: Json<ErrorBody> };
    };
  };
  '/api/v1/api_keys': {
    post: {
      parameters: { query?: never; header?: { 'Idempotency-Key'?: string }; path?: never; cookie?: never };
      requestBody: Json<{ name: string; role?: string }>;
      responses: { 201: Json<{ id: string; name: string; prefix: string; role: string; key: string }>; 400: Json<ErrorBody>; 401: Json<ErrorBody> };
    };
  };
  '/api/v1/projects': {
    get: {
      parameters: { query?: { page?: number; page_size?: number; search?: string; status?: 'active' | 'archived' }; header?: never; path?: never; cookie?: never };
      requestBody?: never;
      responses: { 200: Json<{ count: number; next: string | null; previous: string | null; results: Project[] }>; 401: Json<ErrorBody> };
    };
    post: {
      parameters: { query?: never; header?: { 'Idempotency-Key'?: string }; path?: never; cookie?: never };
      requestBody: Json<{ name: string; description?: string }>;
      responses: { 201: Json<Project>; 400: Json<ErrorBody> };
    };
  };
}

let app: App;
let drop: () => Promise<void>;
let baseUrl: string;
let tmp: string;
const USERNAME = 'client_owner';

beforeAll(async () => {
  const fresh = await freshDb();
  drop = fresh.drop;
  app = await buildApp(testConfig(), { db: fresh.db, logger: pino({ level: 'silent' }) });
  const user = await createUser(fresh.db.kysely, { username: USERNAME, password: TEST_PASSWORD, email: 'client@example.test' });
  await createOrganization(fresh.db.kysely, { name: 'Client Org', ownerId: user.id });
  await app.fastify.listen({ port: 0, host: '127.0.0.1' });
  baseUrl = `http://127.0.0.1:${(app.fastify.server.address() as AddressInfo).port}`;
  tmp = mkdtempSync(join(tmpdir(), 'agentry-client-'));
});
afterAll(async () => {
  await app?.close();
  await drop?.();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('an SDK generated from openapi.json', () => {
  it('openapi-typescript turns openapi.json into types with the expected paths', async () => {
    const doc = JSON.parse(readFileSync(join(root, 'openapi.json'), 'utf8'));
    const text = astToString(await openapiTS(doc, { silent: true }));
    const file = join(tmp, 'agentry-api.d.ts');
    writeFileSync(file, text);
    const written = readFileSync(file, 'utf8');
    for (const p of ['/api/v1/admin/login', '/api/v1/api_keys', '/api/v1/projects', '/api/v1/projects/{id}', '/api/token/', '/api/health/']) {
      expect(written).toContain(`"${p}": {`);
    }
    expect(written).toMatch(/export interface paths/);
    expect(written).toMatch(/export interface operations/);
    expect(written).toContain('"projects.list": {');
    // The generated file is well-formed TypeScript.
    const out = ts.transpileModule(written, { reportDiagnostics: true, compilerOptions: { target: ts.ScriptTarget.ES2022 } });
    expect(out.diagnostics ?? []).toEqual([]);
  });

  it('openapi-fetch: log in, create an API key, list projects with the key', async () => {
    const anon = createFetchClient<paths>({ baseUrl });
    const bad = await anon.POST('/api/v1/admin/login', { body: { username: USERNAME, password: 'wrong password' } });
    expect(bad.response.status).toBe(401);
    expect(bad.error).toMatchObject({ error: expect.any(String), details: expect.anything() });

    const login = await anon.POST('/api/v1/admin/login', { body: { username: USERNAME, password: TEST_PASSWORD } });
    expect(login.response.status).toBe(200);
    expect(login.data?.token_type).toBe('Bearer');
    expect(login.data?.user.username).toBe(USERNAME);
    const jwt = login.data!.access;

    const asUser = createFetchClient<paths>({ baseUrl, headers: { authorization: `Bearer ${jwt}` } });
    const created = await asUser.POST('/api/v1/projects', { body: { name: 'From openapi-fetch', description: 'typed REST' } });
    expect(created.response.status).toBe(201);
    const key = await asUser.POST('/api/v1/api_keys', { body: { name: 'sdk key', role: 'viewer' } });
    expect(key.response.status).toBe(201);
    expect(key.data?.key).toMatch(new RegExp(`^${key.data!.prefix}`));

    const asKey = createFetchClient<paths>({ baseUrl, headers: { authorization: `Bearer ${key.data!.key}` } });
    const list = await asKey.GET('/api/v1/projects', { params: { query: { page_size: 10, search: 'openapi-fetch' } } });
    expect(list.response.status).toBe(200);
    expect(list.data?.count).toBe(1);
    expect(list.data?.results.map((p) => ({ id: p.id, name: p.name, status: p.status }))).toEqual([
      { id: created.data!.id, name: 'From openapi-fetch', status: 'active' },
    ]);
    expect(list.response.headers.get('x-ratelimit-limit')).toBeTruthy();

    const unauth = await anon.GET('/api/v1/projects');
    expect(unauth.response.status).toBe(401);
    expect(unauth.error?.error).toBeTypeOf('string');
  });
});

describe('the tRPC client from src/client.ts', () => {
  it('is the package entry', () => {
    expect(pkg.createClient).toBe(createClient);
    expect(pkg.TRPCClientError).toBe(TRPCClientError);
  });

  it('logs in, creates an API key and lists projects with it', async () => {
    const anon = createClient(baseUrl);
    const session = await anon.auth.login.mutate({ username: USERNAME, password: TEST_PASSWORD });
    expect(session.user.username).toBe(USERNAME);

    const asUser = createClient(`${baseUrl}/`, session.access);
    const project = await asUser.projects.create.mutate({ name: 'From tRPC', description: 'typed RPC' });
    expect(project.status).toBe('active');
    const key = await asUser.api_keys.create.mutate({ name: 'trpc key', role: 'viewer' });
    expect(key.key.startsWith(key.prefix)).toBe(true);

    // A token getter works too (clients that refresh their JWT).
    const asKey = createClient(baseUrl, () => key.key);
    const page = await asKey.projects.list.query({ search: 'From tRPC' });
    expect(page.count).toBe(1);
    expect(page.results[0]).toMatchObject({ id: project.id, name: 'From tRPC', description: 'typed RPC' });

    // Batched calls in one tick.
    const [all, one] = await Promise.all([asKey.projects.list.query({ page_size: 100 }), asKey.projects.get.query({ id: project.id })]);
    expect(all.results.map((p) => p.id)).toContain(project.id);
    expect(one.name).toBe('From tRPC');

    // The viewer key may not write.
    const denied = await asKey.projects.create.mutate({ name: 'nope' }).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(TRPCClientError);
    expect((denied as TRPCClientError<AppRouter>).data?.httpStatus).toBe(403);
  });

  it('without a token: 401 as a TRPCClientError with the {error, details} data', async () => {
    const err = await createClient(baseUrl).projects.list.query({}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TRPCClientError);
    const data = (err as TRPCClientError<AppRouter>).data;
    expect(data?.httpStatus).toBe(401);
    expect(data?.error).toBeTypeOf('string');
    expect(data).toHaveProperty('details');
    expect(data?.stack).toBeUndefined();
  });
});
