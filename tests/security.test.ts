import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { crossOrgExempt, crossOrgFixtures } from './fixtures/index.js';
import { permissionsOfBuiltin } from '../src/permissions.js';

// The security trio for every REST route, built from the route table so that no route is missed:
// 401 without a token, 403 below its role, 404 for another organization's id.
let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const fill = (path: string, id = 'zzz_00000000000000000000000000') => path.replace(/\{[^}]+\}/g, id);

describe('security sweep over the route table', () => {
  it('has routes', () => { expect(env.app.routes.length).toBeGreaterThan(10); });

  it('401 without a token on every non-public route', async () => {
    const failures: string[] = [];
    for (const r of env.app.routes) {
      if (r.meta.public) continue;
      const res = await env.request(r.openapi.method, fill(r.path), { body: ['GET', 'DELETE'].includes(r.openapi.method) ? undefined : {} });
      if (res.status !== 401 || typeof res.body?.error !== 'string') failures.push(`${r.openapi.method} ${r.path} → ${res.status}`);
    }
    expect(failures).toEqual([]);
  });

  it('401 with a forged token on every non-public route', async () => {
    const forged = env.owner.token.slice(0, -4) + (env.owner.token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const failures: string[] = [];
    for (const r of env.app.routes) {
      if (r.meta.public) continue;
      const res = await env.request(r.openapi.method, fill(r.path), { token: forged, body: ['GET', 'DELETE'].includes(r.openapi.method) ? undefined : {} });
      if (res.status !== 401) failures.push(`${r.openapi.method} ${r.path} → ${res.status}`);
    }
    expect(failures).toEqual([]);
  });

  it('403 below the role: viewers on write routes, members on admin routes, non-admins on platform routes, API keys on user-only routes', async () => {
    const failures: string[] = [];
    const checks: { who: string; token: string; perms: ReadonlySet<string>; isKey?: boolean }[] = [
      { who: 'viewer', token: env.viewer.token, perms: permissionsOfBuiltin('viewer') },
      { who: 'member', token: env.member.token, perms: permissionsOfBuiltin('member') },
      { who: 'viewer key', token: env.viewerKey, perms: permissionsOfBuiltin('viewer'), isKey: true },
    ];
    let checked = 0;
    for (const r of env.app.routes) {
      if (r.meta.public) continue;
      for (const c of checks) {
        const denied = (r.meta.permission && !c.perms.has(r.meta.permission)) || r.meta.platformAdmin || (c.isKey && r.meta.userOnly);
        if (!denied) continue;
        checked++;
        const res = await env.request(r.openapi.method, fill(r.path), { token: c.token, body: ['GET', 'DELETE'].includes(r.openapi.method) ? undefined : {} });
        if (res.status !== 403) failures.push(`${c.who}: ${r.openapi.method} ${r.path} → ${res.status}`);
      }
    }
    expect(checked).toBeGreaterThan(5);
    expect(failures).toEqual([]);
  });

  it('every non-public route declares what it needs', () => {
    const undeclared = env.app.routes.filter((r) => !r.meta.public && !r.meta.permission && !r.meta.platformAdmin && !r.meta.userOnly)
      .map((r) => `${r.openapi.method} ${r.path}`);
    // Routes any signed-in actor may use (their own token/session) are listed here explicitly.
    expect(undeclared.sort()).toEqual(['GET /api/v1/admin/verify']);
  });

  it('has a cross-organization fixture exactly for the routers with id routes', () => {
    const withIds = new Set(env.app.routes.filter((r) => !r.meta.public && /\{[^}]+\}/.test(r.path)).map((r) => r.procedurePath.split('.')[0]));
    expect(Object.keys(crossOrgFixtures).filter((k) => !withIds.has(k))).toEqual([]);
  });

  it("404 for another organization's id on every id route", async () => {
    const failures: string[] = [];
    let checked = 0;
    for (const r of env.app.routes) {
      if (r.meta.public || !/\{[^}]+\}/.test(r.path)) continue;
      const domain = r.procedurePath.split('.')[0];
      if (crossOrgExempt.has(domain)) continue;
      const make = crossOrgFixtures[domain];
      if (!make) { failures.push(`no cross-organization fixture for router "${domain}" (${r.openapi.method} ${r.path})`); continue; }
      const foreignId = await make(env);
      const res = await env.request(r.openapi.method, fill(r.path, foreignId), { token: env.owner.token, body: ['GET', 'DELETE'].includes(r.openapi.method) ? undefined : {} });
      checked++;
      if (res.status !== 404) failures.push(`${r.openapi.method} ${r.path} → ${res.status} ${res.text.slice(0, 120)}`);
      else expectError(res, 404);
    }
    expect(failures).toEqual([]);
    expect(checked).toBeGreaterThan(0);
  });
});
