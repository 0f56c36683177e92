import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { newId, nowIso } from '../src/ids.js';
import { pruneStatusSamples, recordSamples, setBuiltinCheck, type SampleInput } from '../src/services/status.js';

let env: TestEnv;
let server: Server;
let base: string;
const pending = new Set<NodeJS.Timeout>();

beforeAll(async () => {
  env = await createTestEnv();
  // The outside world for HTTP checks.
  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const delay = Number(url.searchParams.get('delay') ?? 0);
    const answer = () => {
      if (url.pathname === '/ok') res.writeHead(200).end('ok');
      else if (url.pathname === '/down') res.writeHead(503).end('down');
      else if (url.pathname === '/empty') res.writeHead(204).end();
      else res.writeHead(404).end();
    };
    if (delay) { const t = setTimeout(() => { pending.delete(t); answer(); }, delay); pending.add(t); } else answer();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const t of pending) clearTimeout(t);
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await env.close();
});

const BUILTINS = ['api_service', 'database', 'job_queue', 'email_transport', 'llm_providers'];
type Result = { component: string; component_id: string; status: string; observed_status: string; latency_ms: number | null; error: string | null; note: string | null; checked_at: string };

const admin = () => env.platformAdmin.token;
const healthCheck = async () => {
  const res = await env.request('GET', '/api/status/health-check/');
  expect(res.status, res.text).toBe(200);
  return res.body as { overall_status: string; checked_at: string; results: Result[] };
};
const resultOf = (body: { results: Result[] }, name: string) => {
  const r = body.results.find((x) => x.component === name);
  if (!r) throw new Error(`no result for ${name}: ${JSON.stringify(body.results.map((x) => x.component))}`);
  return r;
};
const overview = async () => {
  const res = await env.request('GET', '/api/status/overview/');
  expect(res.status, res.text).toBe(200);
  return res.body;
};
const componentId = async (name: string): Promise<string> => (await overview()).components.find((c: { name: string }) => c.name === name).id;
const addHttp = async (body: Record<string, unknown>) => {
  const res = await env.request('POST', '/api/status/components/', { token: admin(), body });
  expect(res.status, res.text).toBe(201);
  return res.body;
};
const removeComponent = async (id: string) => { expect((await env.request('DELETE', `/api/status/components/${id}/`, { token: admin() })).status).toBe(200); };

describe('built-in components and the health check', () => {
  it('the overview lists the built-in components before any check, in the documented shape', async () => {
    const body = await overview();
    expect(Object.keys(body).sort()).toEqual(['components', 'incidents', 'last_updated', 'overall_status', 'uptime_stats']);
    expect(body.overall_status).toBe('operational');
    expect(body.components.map((c: { name: string }) => c.name)).toEqual(BUILTINS);
    for (const c of body.components) {
      expect(Object.keys(c).sort()).toEqual(['current_status', 'display_name', 'id', 'last_checked', 'name', 'uptime_percentage']);
      expect(c).toMatchObject({ current_status: 'operational', uptime_percentage: 100, last_checked: null });
    }
    expect(body.components[0].display_name).toBe('API Service');
    expect(body.incidents).toEqual([]);
    expect(body.uptime_stats.overall).toEqual({ '24h': 100, '7d': 100, '30d': 100, '90d': 100 });
    expect(Object.keys(body.uptime_stats.components).sort()).toEqual([...BUILTINS].sort());
    expect(new Date(body.last_updated).toISOString()).toBe(body.last_updated);
  });

  it('runs every check without a token, records a sample per component and updates the overview', async () => {
    const res = await env.request('GET', '/api/status/health-check/');
    expect(res.status).toBe(200);
    expect(res.headers['x-ratelimit-limit']).toBeDefined();
    const body = res.body as { overall_status: string; results: Result[] };
    expect(body.overall_status).toBe('operational');
    expect(body.results.map((r) => r.component)).toEqual(BUILTINS);
    for (const r of body.results) {
      expect(r.status, `${r.component}: ${r.error}`).toBe('operational');
      expect(r.error).toBeNull();
      expect(typeof r.latency_ms).toBe('number');
    }
    expect(resultOf(body, 'email_transport').note).toMatch(/no e-mail transport is configured/i);
    expect(resultOf(body, 'llm_providers').note).toMatch(/no llm provider is configured/i);
    expect(resultOf(body, 'job_queue').note).toMatch(/idle/i);

    const after = await overview();
    for (const c of after.components) {
      const r = resultOf(body, c.name);
      expect(c.last_checked).toBe(r.checked_at);
      expect(c.uptime_percentage).toBe(100);
    }
    expect(after.last_updated >= body.results[0].checked_at).toBe(true);
  });

  it('creates the built-in components once, however many checks run at the same time', async () => {
    await Promise.all([healthCheck(), healthCheck(), healthCheck()]);
    const list = await env.request('GET', '/api/status/components/', { token: admin() });
    expect(list.status).toBe(200);
    const builtins = list.body.results.filter((c: { kind: string }) => c.kind === 'builtin');
    expect(builtins.map((c: { name: string }) => c.name)).toEqual(BUILTINS);
  });

  it('job_queue: degraded when due jobs wait long, partial outage when very long, degraded when dead jobs pile up', async () => {
    const db = env.db.kysely;
    const job = (over: { status: 'queued' | 'dead'; run_at: string; updated_at?: string }) => {
      const now = nowIso();
      return { id: newId('job'), organization_id: null, type: 'test.status', payload: '{}', priority: 0, attempts: 0, max_attempts: 5, concurrency_key: null,
        concurrency_limit: null, locked_by: null, locked_until: null, last_error: null, result: null, created_at: now, finished_at: null, updated_at: now, ...over };
    };
    const ago = (min: number) => new Date(Date.now() - min * 60_000).toISOString();
    // A job due in the future does not count.
    await db.insertInto('jobs').values(job({ status: 'queued', run_at: new Date(Date.now() + 3600_000).toISOString() })).execute();
    expect(resultOf(await healthCheck(), 'job_queue').status).toBe('operational');

    const waiting = job({ status: 'queued', run_at: ago(10) });
    await db.insertInto('jobs').values(waiting).execute();
    const degraded = resultOf(await healthCheck(), 'job_queue');
    expect(degraded.status).toBe('degraded_performance');
    expect(degraded.error).toMatch(/waited 10 min/);

    await db.updateTable('jobs').set({ run_at: ago(45) }).where('id', '=', waiting.id).execute();
    expect(resultOf(await healthCheck(), 'job_queue').status).toBe('partial_outage');
    await db.deleteFrom('jobs').where('type', '=', 'test.status').execute();

    await db.insertInto('jobs').values(Array.from({ length: 10 }, () => job({ status: 'dead', run_at: ago(30), updated_at: ago(20) }))).execute();
    const dead = resultOf(await healthCheck(), 'job_queue');
    expect(dead.status).toBe('degraded_performance');
    expect(dead.error).toMatch(/10 jobs died/);
    // Dead jobs older than an hour no longer count.
    await db.updateTable('jobs').set({ updated_at: ago(90) }).where('type', '=', 'test.status').execute();
    expect(resultOf(await healthCheck(), 'job_queue').status).toBe('operational');
    await db.deleteFrom('jobs').where('type', '=', 'test.status').execute();
  });

  it('built-in checks are pluggable and time-bounded: a hanging or failing check is a major outage with its reason', async () => {
    const restoreHang = setBuiltinCheck('llm_providers', () => new Promise(() => undefined), { timeoutMs: 150 });
    const restoreFail = setBuiltinCheck('email_transport', async () => { throw new Error('SMTP refused the login'); });
    try {
      const body = await healthCheck();
      expect(resultOf(body, 'llm_providers')).toMatchObject({ status: 'major_outage', error: expect.stringMatching(/did not finish within 150 ms/) });
      expect(resultOf(body, 'email_transport')).toMatchObject({ status: 'major_outage', error: expect.stringMatching(/SMTP refused the login/) });
      expect(resultOf(body, 'database').status).toBe('operational');
      expect(body.overall_status).toBe('major_outage');
      const ov = await overview();
      expect(ov.overall_status).toBe('major_outage');
      expect(ov.components.find((c: { name: string }) => c.name === 'llm_providers').current_status).toBe('major_outage');
    } finally {
      restoreHang();
      restoreFail();
    }
    const plugged = setBuiltinCheck('email_transport', async () => ({ status: 'degraded_performance', error: 'Slow SMTP handshake' }));
    try {
      expect(resultOf(await healthCheck(), 'email_transport')).toMatchObject({ status: 'degraded_performance', error: 'Slow SMTP handshake' });
    } finally {
      plugged();
    }
    const back = await healthCheck();
    expect(back.overall_status).toBe('operational');
    expect((await overview()).overall_status).toBe('operational');
  });
});

describe('HTTP check components', () => {
  it('platform admins add a check; it reports operational, wrong status, timeout, slow and unreachable', async () => {
    const ok = await addHttp({ name: 'website', display_name: 'Website', url: `${base}/ok` });
    expect(ok).toMatchObject({ name: 'website', display_name: 'Website', kind: 'http', url: `${base}/ok`, expected_status: 200, timeout_ms: 5000, current_status: 'operational', under_maintenance: false, last_checked: null });
    expect(ok.id).toMatch(/^cmp_/);
    expect(ok.position).toBeGreaterThan(4);
    const down = await addHttp({ name: 'billing-api', display_name: 'Billing API', url: `${base}/down` });
    const empty = await addHttp({ name: 'cdn', display_name: 'CDN', url: `${base}/empty`, expected_status: 204 });
    const hanging = await addHttp({ name: 'search', display_name: 'Search', url: `${base}/ok?delay=3000`, timeout_ms: 200 });
    const slow = await addHttp({ name: 'reports', display_name: 'Reports', url: `${base}/ok?delay=1100`, timeout_ms: 2000 });
    const closed = await addHttp({ name: 'closed-port', display_name: 'Closed port', url: 'http://127.0.0.1:9/' });
    try {
      const body = await healthCheck();
      expect(resultOf(body, 'website')).toMatchObject({ status: 'operational', error: null });
      expect(resultOf(body, 'billing-api')).toMatchObject({ status: 'major_outage', error: 'Expected HTTP 200, got 503' });
      expect(resultOf(body, 'cdn')).toMatchObject({ status: 'operational', error: null });
      expect(resultOf(body, 'search')).toMatchObject({ status: 'major_outage', error: 'No answer within 200 ms' });
      expect(resultOf(body, 'reports')).toMatchObject({ status: 'degraded_performance', error: expect.stringMatching(/^Slow answer/) });
      expect(resultOf(body, 'closed-port')).toMatchObject({ status: 'major_outage', error: expect.stringMatching(/^Request failed/) });
      expect(body.overall_status).toBe('major_outage');

      const list = (await env.request('GET', '/api/status/components/', { token: admin() })).body.results;
      const billing = list.find((c: { id: string }) => c.id === down.id);
      expect(billing).toMatchObject({ current_status: 'major_outage', last_error: 'Expected HTTP 200, got 503' });
      expect(billing.last_checked).toBe(resultOf(body, 'billing-api').checked_at);

      const ov = await overview();
      expect(ov.overall_status).toBe('major_outage');
      expect(ov.components.find((c: { id: string }) => c.id === down.id)).toMatchObject({ current_status: 'major_outage', uptime_percentage: 0 });
      expect(ov.components.find((c: { id: string }) => c.id === ok.id)).toMatchObject({ current_status: 'operational', uptime_percentage: 100 });
      expect(ov.uptime_stats.components['billing-api']).toEqual({ '24h': 0, '7d': 0, '30d': 0, '90d': 0 });
    } finally {
      for (const c of [ok, down, empty, hanging, slow, closed]) await removeComponent(c.id);
    }
    expect((await healthCheck()).overall_status).toBe('operational');
  });

  it('updates a check and deletes it with its samples; built-ins keep their name and check and cannot be deleted', async () => {
    const c = await addHttp({ name: 'docs-site', display_name: 'Docs', url: `${base}/down`, position: 50 });
    expect(resultOf(await healthCheck(), 'docs-site').status).toBe('major_outage');
    const patched = await env.request('PATCH', `/api/status/components/${c.id}/`, { token: admin(), body: { url: `${base}/ok`, display_name: 'Documentation', name: 'docs', timeout_ms: 3000 } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ id: c.id, name: 'docs', display_name: 'Documentation', url: `${base}/ok`, timeout_ms: 3000, position: 50 });
    expect(resultOf(await healthCheck(), 'docs').status).toBe('operational');

    const dbId = await componentId('database');
    const refused = await env.request('PATCH', `/api/status/components/${dbId}/`, { token: admin(), body: { url: `${base}/ok`, name: 'db', timeout_ms: 1000 } });
    expectError(refused, 400);
    expect(Object.keys(refused.body.details).sort()).toEqual(['name', 'timeout_ms', 'url']);
    const renamed = await env.request('PATCH', `/api/status/components/${dbId}/`, { token: admin(), body: { display_name: 'Primary database' } });
    expect(renamed.body).toMatchObject({ name: 'database', display_name: 'Primary database', kind: 'builtin', url: null });
    expect((await env.request('PATCH', `/api/status/components/${dbId}/`, { token: admin(), body: { display_name: 'Database' } })).status).toBe(200);
    const noDelete = await env.request('DELETE', `/api/status/components/${dbId}/`, { token: admin() });
    expectError(noDelete, 400);
    expect(noDelete.body.details).toHaveProperty('id');

    const deleted = await env.request('DELETE', `/api/status/components/${c.id}/`, { token: admin() });
    expect(deleted.body).toEqual({ id: c.id, deleted: true });
    await expect(env.db.kysely.selectFrom('status_samples').select('id').where('component_id', '=', c.id).execute()).resolves.toEqual([]);
    expect((await overview()).components.map((x: { id: string }) => x.id)).not.toContain(c.id);
    expectError(await env.request('DELETE', `/api/status/components/${c.id}/`, { token: admin() }), 404);
    expectError(await env.request('PATCH', `/api/status/components/${c.id}/`, { token: admin(), body: { display_name: 'x' } }), 404);
    expect((await healthCheck()).results.map((r) => r.component)).not.toContain('docs');
  });

  it('rejects bad component input with the fields named, and writes nothing', async () => {
    const count = async () => (await env.request('GET', '/api/status/components/', { token: admin() })).body.count;
    const before = await count();
    const cases: [Record<string, unknown>, string][] = [
      [{ name: 'Not A Slug', display_name: 'x', url: `${base}/ok` }, 'name'],
      [{ name: 'x', display_name: '  ', url: `${base}/ok` }, 'display_name'],
      [{ name: 'x', display_name: 'x', url: 'ftp://example.com/' }, 'url'],
      [{ name: 'x', display_name: 'x', url: 'javascript:alert(1)' }, 'url'],
      [{ name: 'x', display_name: 'x' }, 'url'],
      [{ name: 'x', display_name: 'x', url: `${base}/ok`, kind: 'builtin' }, 'kind'],
      [{ name: 'x', display_name: 'x', url: `${base}/ok`, expected_status: 700 }, 'expected_status'],
      [{ name: 'x', display_name: 'x', url: `${base}/ok`, timeout_ms: 10 }, 'timeout_ms'],
      [{ name: 'x', display_name: 'x', url: `${base}/ok`, timeout_ms: 60_000 }, 'timeout_ms'],
    ];
    for (const [body, field] of cases) {
      const res = await env.request('POST', '/api/status/components/', { token: admin(), body });
      expectError(res, 400);
      expect(res.body.details, JSON.stringify(body)).toHaveProperty(field);
    }
    const taken = await env.request('POST', '/api/status/components/', { token: admin(), body: { name: 'database', display_name: 'Another DB', url: `${base}/ok` } });
    expectError(taken, 409);
    expect(taken.body.details).toHaveProperty('name');
    expect(await count()).toBe(before);

    const a = await addHttp({ name: 'uniq-a', display_name: 'A', url: `${base}/ok` });
    const clash = await env.request('PATCH', `/api/status/components/${a.id}/`, { token: admin(), body: { name: 'job_queue' } });
    expectError(clash, 409);
    expect(clash.body.details).toHaveProperty('name');
    const badPatch = await env.request('PATCH', `/api/status/components/${a.id}/`, { token: admin(), body: { url: 'not a url', under_maintenance: 'yes' } });
    expectError(badPatch, 400);
    expect(Object.keys(badPatch.body.details).sort()).toEqual(['under_maintenance', 'url']);
    const list = (await env.request('GET', '/api/status/components/', { token: admin() })).body.results;
    expect(list.find((c: { id: string }) => c.id === a.id)).toMatchObject({ name: 'uniq-a', url: `${base}/ok`, under_maintenance: false });
    await removeComponent(a.id);
  });

  it('only platform admins manage components; the list is theirs too', async () => {
    for (const token of [env.owner.token, env.adminKey]) {
      expectError(await env.request('POST', '/api/status/components/', { token, body: { name: 'nope', display_name: 'Nope', url: `${base}/ok` } }), 403);
      expectError(await env.request('GET', '/api/status/components/', { token }), 403);
    }
    expectError(await env.request('POST', '/api/status/components/', { body: { name: 'nope', display_name: 'Nope', url: `${base}/ok` } }), 401);
    const c = await addHttp({ name: 'audited', display_name: 'Audited', url: `${base}/ok` });
    const audit = await env.request('GET', '/api/v1/audit_logs?platform=true&resource_type=status_component', { token: admin() });
    expect(audit.status).toBe(200);
    expect(audit.body.results.map((e: { resource_id: string }) => e.resource_id)).toContain(c.id);
    await removeComponent(c.id);
  });
});

describe('maintenance', () => {
  it('a component under maintenance shows so, keeps its uptime, and returns to what its check sees', async () => {
    const dbId = await componentId('database');
    const on = await env.request('PATCH', `/api/status/components/${dbId}/`, { token: admin(), body: { under_maintenance: true } });
    expect(on.status).toBe(200);
    expect(on.body).toMatchObject({ under_maintenance: true, current_status: 'under_maintenance' });
    let ov = await overview();
    expect(ov.components.find((c: { id: string }) => c.id === dbId).current_status).toBe('under_maintenance');
    expect(ov.overall_status).toBe('under_maintenance');

    const checked = resultOf(await healthCheck(), 'database');
    expect(checked).toMatchObject({ status: 'under_maintenance', observed_status: 'operational' });
    ov = await overview();
    expect(ov.components.find((c: { id: string }) => c.id === dbId)).toMatchObject({ current_status: 'under_maintenance', uptime_percentage: 100 });

    const off = await env.request('PATCH', `/api/status/components/${dbId}/`, { token: admin(), body: { under_maintenance: false } });
    expect(off.body).toMatchObject({ under_maintenance: false, current_status: 'operational' });
    expect((await overview()).overall_status).toBe('operational');
  });

  it('an HTTP check that fails under maintenance stays under maintenance, and shows its outage once maintenance ends', async () => {
    const c = await addHttp({ name: 'maint-http', display_name: 'Maint', url: `${base}/down` });
    await env.request('PATCH', `/api/status/components/${c.id}/`, { token: admin(), body: { under_maintenance: true } });
    const r = resultOf(await healthCheck(), 'maint-http');
    expect(r).toMatchObject({ status: 'under_maintenance', observed_status: 'major_outage', error: 'Expected HTTP 200, got 503' });
    const off = await env.request('PATCH', `/api/status/components/${c.id}/`, { token: admin(), body: { under_maintenance: false } });
    expect(off.body.current_status).toBe('major_outage');
    await removeComponent(c.id);
  });
});

describe('uptime', () => {
  it('is the share of operational or maintenance samples per window, from the recorded samples, and 100 without samples', async () => {
    const c = await addHttp({ name: 'uptime-probe', display_name: 'Uptime probe', url: `${base}/ok` });
    const at = (days: number, minutes = 0) => new Date(Date.now() - days * 86400_000 - minutes * 60_000).toISOString();
    const samples: SampleInput[] = [];
    const add = (n: number, status: SampleInput['status'], when: string) => { for (let i = 0; i < n; i++) samples.push({ component_id: c.id, status, checked_at: when }); };
    // Last 24 hours: 3 operational, 1 under maintenance, 1 major outage → 80%.
    add(3, 'operational', at(0, 5));
    add(1, 'under_maintenance', at(0, 30));
    add(1, 'major_outage', at(0, 60));
    // Three days ago: 4 operational, 1 degraded → 7d: 11 of 14... (computed below).
    add(4, 'operational', at(3));
    add(1, 'degraded_performance', at(3));
    // Twenty days ago: 5 partial outage.
    add(5, 'partial_outage', at(20));
    // Sixty days ago: 10 operational.
    add(10, 'operational', at(60));
    // A hundred days ago: outside every window.
    add(50, 'major_outage', at(100));
    await recordSamples(env.app.deps, samples);

    const pct = (good: number, total: number) => Math.floor((good * 10000) / total) / 100;
    const ov = await overview();
    expect(ov.uptime_stats.components['uptime-probe']).toEqual({
      '24h': pct(4, 5), '7d': pct(8, 10), '30d': pct(8, 15), '90d': pct(18, 25),
    });
    expect(ov.components.find((x: { id: string }) => x.id === c.id).uptime_percentage).toBe(pct(18, 25));
    expect(ov.uptime_stats.overall['90d']).toBeLessThan(100);
    // Pruning drops what is older than the window and changes no figure.
    expect(await pruneStatusSamples(env.app.deps)).toBeGreaterThanOrEqual(50);
    expect((await overview()).uptime_stats.components['uptime-probe']).toEqual(ov.uptime_stats.components['uptime-probe']);
    // A component without samples: 100.
    const fresh = await addHttp({ name: 'no-samples', display_name: 'No samples', url: `${base}/ok` });
    const again = await overview();
    expect(again.uptime_stats.components['no-samples']).toEqual({ '24h': 100, '7d': 100, '30d': 100, '90d': 100 });
    expect(again.components.find((x: { id: string }) => x.id === fresh.id).uptime_percentage).toBe(100);
    await removeComponent(c.id);
    await removeComponent(fresh.id);
  });

  it('floors to two decimals, so one failure in many samples still shows below 100, and stays correct with many samples', async () => {
    const c = await addHttp({ name: 'many-samples', display_name: 'Many samples', url: `${base}/ok` });
    const samples: SampleInput[] = [];
    const start = Date.now() - 6 * 86400_000;
    for (let i = 0; i < 8000; i++) samples.push({ component_id: c.id, status: 'operational', checked_at: new Date(start + i * 60_000).toISOString() });
    samples.push({ component_id: c.id, status: 'major_outage', checked_at: new Date(start).toISOString() });
    await recordSamples(env.app.deps, samples);
    const ov = await overview();
    expect(ov.uptime_stats.components['many-samples']['90d']).toBe(99.98);
    expect(ov.components.find((x: { id: string }) => x.id === c.id).uptime_percentage).toBe(99.98);
    // Rolled up per hour: the aggregate reads one row per component and hour, not one per sample.
    const rollups = await env.db.kysely.selectFrom('status_hourly').select((eb) => eb.fn.countAll<number>().as('n')).where('component_id', '=', c.id).executeTakeFirstOrThrow();
    expect(Number(rollups.n)).toBeLessThanOrEqual(6 * 24 + 2);
    await removeComponent(c.id);
  });
});

describe('incidents', () => {
  const create = async (body: Record<string, unknown>) => {
    const res = await env.request('POST', '/api/status/incidents/', { token: admin(), body });
    expect(res.status, res.text).toBe(201);
    return res.body;
  };
  const incidentCount = async () => Number((await env.db.kysely.selectFrom('status_incidents').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);

  it('platform admins open an incident; anyone reads it with its timeline', async () => {
    const dbId = await componentId('database');
    const apiId = await componentId('api_service');
    const inc = await create({ title: 'Elevated error rates', impact: 'major', component_ids: [dbId, apiId, dbId], message: 'We are looking into it.' });
    expect(inc).toMatchObject({ title: 'Elevated error rates', status: 'investigating', impact: 'major', resolved_at: null });
    expect(inc.id).toMatch(/^inc_/);
    expect(inc.components.map((c: { name: string }) => c.name)).toEqual(['api_service', 'database']);
    expect(inc.updates).toHaveLength(1);
    expect(inc.updates[0]).toMatchObject({ status: 'investigating', message: 'We are looking into it.' });

    const shown = await env.request('GET', `/api/status/incidents/${inc.id}/`);
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(inc);
    expect((await overview()).incidents.map((i: { id: string }) => i.id)).toContain(inc.id);

    const defaults = await create({ title: 'Defaults', message: 'm' });
    expect(defaults).toMatchObject({ status: 'investigating', impact: 'minor', components: [] });
  });

  it('updates move the incident through its statuses; resolving sets resolved_at and takes it off the overview', async () => {
    const inc = await create({ title: 'Slow queue', message: 'Jobs are delayed.' });
    const identified = await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { status: 'identified', message: 'A stuck worker.' } });
    expect(identified.status).toBe(201);
    expect(identified.body.status).toBe('identified');
    const monitoring = await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { status: 'monitoring', message: 'Restarted; watching.' } });
    expect(monitoring.body.updates.map((u: { status: string }) => u.status)).toEqual(['monitoring', 'identified', 'investigating']);
    const resolved = await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { status: 'resolved', message: 'All clear.' } });
    expect(resolved.body.status).toBe('resolved');
    expect(resolved.body.resolved_at).toBe(resolved.body.updates[0].created_at);
    expect(resolved.body.updates[0]).toMatchObject({ status: 'resolved', message: 'All clear.' });
    expect((await overview()).incidents.map((i: { id: string }) => i.id)).not.toContain(inc.id);

    // Reopening clears resolved_at.
    const reopened = await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { status: 'investigating', message: 'It is back.' } });
    expect(reopened.body).toMatchObject({ status: 'investigating', resolved_at: null });
    expect((await overview()).incidents.map((i: { id: string }) => i.id)).toContain(inc.id);
    await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { status: 'resolved', message: 'Fixed.' } });
  });

  it('changes title, impact and components; unknown component ids are a 400 that changes nothing', async () => {
    const jobsId = await componentId('job_queue');
    const inc = await create({ title: 'Original', message: 'm', component_ids: [jobsId] });
    const patched = await env.request('PATCH', `/api/status/incidents/${inc.id}/`, { token: admin(), body: { title: 'Renamed', impact: 'critical', component_ids: [] } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ id: inc.id, title: 'Renamed', impact: 'critical', components: [], status: 'investigating' });
    expect(patched.body.updates).toHaveLength(1);

    const bad = await env.request('PATCH', `/api/status/incidents/${inc.id}/`, { token: admin(), body: { title: 'Half written?', component_ids: [jobsId, 'cmp_nope'] } });
    expectError(bad, 400);
    expect(bad.body.details.component_ids).toMatch(/cmp_nope/);
    expect((await env.request('GET', `/api/status/incidents/${inc.id}/`)).body).toMatchObject({ title: 'Renamed', components: [] });

    const before = await incidentCount();
    const badCreate = await env.request('POST', '/api/status/incidents/', { token: admin(), body: { title: 'Ghost', message: 'm', component_ids: ['cmp_ghost'] } });
    expectError(badCreate, 400);
    expect(badCreate.body.details).toHaveProperty('component_ids');
    expect(await incidentCount()).toBe(before);
  });

  it('rejects bad incident input with the fields named', async () => {
    const before = await incidentCount();
    const cases: [string, string, Record<string, unknown>, string[]][] = [
      ['POST', '/api/status/incidents/', { message: 'm' }, ['title']],
      ['POST', '/api/status/incidents/', { title: 't' }, ['message']],
      ['POST', '/api/status/incidents/', { title: 't', message: 'm', status: 'exploded', impact: 'huge' }, ['impact', 'status']],
      ['POST', '/api/status/incidents/', { title: 't', message: 'm', component_ids: 'cmp_1' }, ['component_ids']],
    ];
    for (const [method, url, body, fields] of cases) {
      const res = await env.request(method, url, { token: admin(), body });
      expectError(res, 400);
      expect(Object.keys(res.body.details).sort(), JSON.stringify(body)).toEqual(fields);
    }
    expect(await incidentCount()).toBe(before);
    const inc = await create({ title: 'For updates', message: 'm' });
    const noStatus = await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { message: 'x' } });
    expectError(noStatus, 400);
    expect(noStatus.body.details).toHaveProperty('status');
    const emptyMsg = await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { status: 'monitoring', message: '   ' } });
    expectError(emptyMsg, 400);
    expect(emptyMsg.body.details).toHaveProperty('message');
    expect((await env.request('GET', `/api/status/incidents/${inc.id}/`)).body.updates).toHaveLength(1);

    expectError(await env.request('GET', '/api/status/incidents/inc_missing/'), 404);
    expectError(await env.request('PATCH', '/api/status/incidents/inc_missing/', { token: admin(), body: { title: 'x' } }), 404);
    expectError(await env.request('POST', '/api/status/incidents/inc_missing/updates/', { token: admin(), body: { status: 'resolved', message: 'x' } }), 404);
  });

  it('lists newest first, filters by status, and takes a limit of 1 to 100 (default 50)', async () => {
    const a = await create({ title: 'List A', message: 'm' });
    const b = await create({ title: 'List B', message: 'm', status: 'monitoring' });
    const all = await env.request('GET', '/api/status/incidents/');
    expect(all.status).toBe(200);
    expect(Object.keys(all.body).sort()).toEqual(['count', 'next', 'previous', 'results']);
    const ids = all.body.results.map((i: { id: string }) => i.id);
    expect(ids.indexOf(b.id)).toBeLessThan(ids.indexOf(a.id));
    expect(ids.indexOf(b.id)).toBe(0);
    expect(all.body.results[0].updates).toHaveLength(1);
    expect(all.body.count).toBe(ids.length);

    const monitoring = await env.request('GET', '/api/status/incidents/?status=monitoring');
    expect(monitoring.body.results.map((i: { id: string }) => i.id)).toEqual([b.id]);
    const resolved = await env.request('GET', '/api/status/incidents/?status=resolved');
    expect(resolved.body.results.length).toBeGreaterThan(0);
    expect(resolved.body.results.every((i: { status: string }) => i.status === 'resolved')).toBe(true);

    const one = await env.request('GET', '/api/status/incidents/?limit=1');
    expect(one.body.results.map((i: { id: string }) => i.id)).toEqual([b.id]);
    expect(one.body.next).toMatch(/limit=1/);
    const next = await env.request('GET', new URL(one.body.next).pathname + new URL(one.body.next).search);
    expect(next.body.results.map((i: { id: string }) => i.id)).toEqual([a.id]);

    // More than 50 incidents: the default limit is 50, 100 is the most.
    const have = all.body.count;
    for (let i = have; i < 55; i++) await create({ title: `Bulk ${i}`, message: 'm' });
    expect((await env.request('GET', '/api/status/incidents/')).body.results).toHaveLength(50);
    expect((await env.request('GET', '/api/status/incidents/?limit=100')).body.results.length).toBeGreaterThanOrEqual(55);

    for (const q of ['limit=0', 'limit=101', 'limit=abc', 'limit=1.5']) {
      const res = await env.request('GET', `/api/status/incidents/?${q}`);
      expectError(res, 400);
      expect(res.body.details, q).toHaveProperty('limit');
    }
    const badStatus = await env.request('GET', '/api/status/incidents/?status=ongoing');
    expectError(badStatus, 400);
    expect(badStatus.body.details).toHaveProperty('status');
  });

  it('honours Idempotency-Key when opening an incident', async () => {
    const before = await incidentCount();
    const send = (title: string) => env.request('POST', '/api/status/incidents/', { token: admin(), headers: { 'idempotency-key': 'status-incident-1' }, body: { title, message: 'm' } });
    const first = await send('Only once');
    const again = await send('Only once');
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(again.body.id).toBe(first.body.id);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expectError(await send('Something else'), 409);
    expect(await incidentCount()).toBe(before + 1);
  });

  it('only platform admins open and update incidents', async () => {
    const inc = await create({ title: 'Guarded', message: 'm' });
    for (const token of [env.owner.token, env.admin.token, env.adminKey]) {
      expectError(await env.request('POST', '/api/status/incidents/', { token, body: { title: 'x', message: 'm' } }), 403);
      expectError(await env.request('PATCH', `/api/status/incidents/${inc.id}/`, { token, body: { title: 'x' } }), 403);
      expectError(await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token, body: { status: 'resolved', message: 'm' } }), 403);
    }
    expectError(await env.request('POST', '/api/status/incidents/', { body: { title: 'x', message: 'm' } }), 401);
    expect((await env.request('GET', `/api/status/incidents/${inc.id}/`)).body.title).toBe('Guarded');
  });
});

describe('GET /status (HTML)', () => {
  it('serves the page with every user-defined text escaped and no script', async () => {
    const c = await addHttp({ name: 'html-probe', display_name: '<img src=x onerror=alert(1)> "Probe"', url: `${base}/ok` });
    const inc = await create('<script>alert("pwned")</script> & more', 'Line one\n<b>not bold</b>');
    const res = await env.request('GET', '/status');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(String(res.headers['content-security-policy'])).toMatch(/default-src 'none'/);
    expect(res.text).not.toMatch(/<script/i);
    expect(res.text).not.toContain('<img src=x');
    expect(res.text).not.toContain('<b>not bold</b>');
    expect(res.text).toContain('&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; more');
    expect(res.text).toContain('&lt;img src=x onerror=alert(1)&gt; &quot;Probe&quot;');
    expect(res.text).toContain('&lt;b&gt;not bold&lt;/b&gt;');
    expect(res.text).toContain(`data-incident-id="${inc.id}"`);
    await env.request('POST', `/api/status/incidents/${inc.id}/updates/`, { token: admin(), body: { status: 'resolved', message: 'ok' } });
    await removeComponent(c.id);

    async function create(title: string, message: string) {
      const r = await env.request('POST', '/api/status/incidents/', { token: admin(), body: { title, message } });
      expect(r.status).toBe(201);
      return r.body;
    }
  });

  it('draws 90 daily segments per component, coloured by the day\'s worst status', async () => {
    const c = await addHttp({ name: 'bars', display_name: 'Bars', url: `${base}/ok` });
    const day = (n: number) => new Date(Date.now() - n * 86400_000).toISOString();
    await recordSamples(env.app.deps, [
      { component_id: c.id, status: 'operational', checked_at: day(2) },
      { component_id: c.id, status: 'major_outage', checked_at: day(2) },
      { component_id: c.id, status: 'operational', checked_at: day(1) },
    ]);
    const res = await env.request('GET', '/status');
    const block = res.text.split('data-component="bars"')[1].split('</li>')[0];
    const segs = [...block.matchAll(/<span class="seg s-([a-z_]+)" title="([^"]*)"/g)].map((m) => ({ cls: m[1], title: m[2] }));
    expect(segs).toHaveLength(90);
    expect(segs[87]).toEqual({ cls: 'major_outage', title: `${day(2).slice(0, 10)}: 50% uptime, major outage at worst` });
    expect(segs[88]).toEqual({ cls: 'operational', title: `${day(1).slice(0, 10)}: 100% uptime, operational at worst` });
    expect(segs[0]).toEqual({ cls: 'nodata', title: `${day(89).slice(0, 10)}: no data` });
    await removeComponent(c.id);
  });

  it('is documented as text/html', async () => {
    const doc = (await env.request('GET', '/openapi.json')).body;
    expect(Object.keys(doc.paths['/status'].get.responses['200'].content)).toEqual(['text/html']);
    expect(doc.paths['/status'].get.security).toBeUndefined();
  });
});

describe('rate limits', () => {
  it('the health check has the health budget; the overview the standard one', async () => {
    const limited = await createTestEnv({ rateLimitHealthPerHour: 2 });
    try {
      const first = await limited.request('GET', '/api/status/health-check/');
      expect(first.status).toBe(200);
      expect(first.headers['x-ratelimit-limit']).toBe('2');
      expect((await limited.request('GET', '/api/status/health-check/')).status).toBe(200);
      const refused = await limited.request('GET', '/api/status/health-check/');
      expectError(refused, 429);
      expect(refused.headers['retry-after']).toBeDefined();
      const ov = await limited.request('GET', '/api/status/overview/');
      expect(ov.status).toBe(200);
      expect(ov.headers['x-ratelimit-limit']).not.toBe('2');
    } finally {
      await limited.close();
    }
  });
});
