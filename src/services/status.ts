import { sql, type Kysely, type Updateable } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { ComponentKind, ComponentStatus, IncidentImpact, IncidentStatus, StatusComponentsTable } from '../../db/schema/status.js';
import type { Ctx, Deps } from '../context.js';
import { isUniqueViolation, ping } from '../db.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate } from '../pagination.js';

// The platform's status page: components and their checks, check samples rolled up per hour for
// uptime, incidents with their timelines. Platform-level: no organization scope.

export type { ComponentKind, ComponentStatus, IncidentImpact, IncidentStatus };

/** From best to worst; the index is the severity rank stored in `status_hourly.worst`. */
export const COMPONENT_STATUSES = ['operational', 'under_maintenance', 'degraded_performance', 'partial_outage', 'major_outage'] as const satisfies readonly ComponentStatus[];
export const INCIDENT_STATUSES = ['investigating', 'identified', 'monitoring', 'resolved'] as const satisfies readonly IncidentStatus[];
export const INCIDENT_IMPACTS = ['none', 'minor', 'major', 'critical'] as const satisfies readonly IncidentImpact[];

const severity = (s: ComponentStatus) => COMPONENT_STATUSES.indexOf(s);
/** The worst of some statuses; operational when there are none. */
export function worstStatus(statuses: Iterable<ComponentStatus>): ComponentStatus {
  let worst = 0;
  for (const s of statuses) worst = Math.max(worst, severity(s));
  return COMPONENT_STATUSES[worst];
}
const isGood = (s: ComponentStatus) => s === 'operational' || s === 'under_maintenance';

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;
/** Days of history the page and the uptime figures cover. */
export const UPTIME_DAYS = 90;
/** Resolved incidents stay on the HTML page this long. */
export const RESOLVED_SHOWN_DAYS = 14;

// ---------------------------------------------------------------------------------------------
// Checks

export interface CheckResult {
  status: ComponentStatus;
  /** Measured around the check when the check does not say. */
  latency_ms?: number | null;
  error?: string | null;
  /** Context that is not an error (e.g. "nothing configured"). */
  note?: string | null;
}

/** A built-in check: gets the process's dependencies, answers a status. Throwing means major outage. */
export type BuiltinCheck = (deps: Deps) => Promise<CheckResult>;

export const BUILTIN_NAMES = ['api_service', 'database', 'job_queue', 'email_transport', 'llm_providers'] as const;
export type BuiltinName = (typeof BUILTIN_NAMES)[number];

interface BuiltinDef { display_name: string; position: number; check: BuiltinCheck; timeoutMs: number }

/** Above these the component is degraded. */
export const THRESHOLDS = {
  databaseSlowMs: 250,
  eventLoopSlowMs: 200,
  /** A due job waiting longer than this: degraded; longer than `queueOutageMs`: partial outage. */
  queueWaitMs: 5 * 60 * 1000,
  queueOutageMs: 30 * 60 * 1000,
  /** Jobs that died in the last hour. */
  deadPerHour: 10,
};

const round2 = (n: number) => Math.round(n * 100) / 100;

async function apiServiceCheck(): Promise<CheckResult> {
  // This code running means the process answers; the event-loop delay says how quickly.
  const t0 = performance.now();
  await new Promise<void>((resolve) => setImmediate(resolve));
  const lag = round2(performance.now() - t0);
  if (lag > THRESHOLDS.eventLoopSlowMs) return { status: 'degraded_performance', latency_ms: lag, error: `Event loop delayed ${lag} ms (slow above ${THRESHOLDS.eventLoopSlowMs} ms)` };
  return { status: 'operational', latency_ms: lag, note: 'This process answers requests' };
}

async function databaseCheck(deps: Deps): Promise<CheckResult> {
  const t0 = performance.now();
  const ok = await ping(deps.db);
  const latency = round2(performance.now() - t0);
  if (!ok) return { status: 'major_outage', latency_ms: latency, error: 'The database did not answer' };
  if (latency > THRESHOLDS.databaseSlowMs) return { status: 'degraded_performance', latency_ms: latency, error: `The database answered in ${latency} ms (slow above ${THRESHOLDS.databaseSlowMs} ms)` };
  return { status: 'operational', latency_ms: latency, note: `${deps.db.dialect} answered` };
}

/** The statuses are literals so that the queue's partial indexes (one per status) serve these. */
async function jobQueueCheck(deps: Deps): Promise<CheckResult> {
  const db = deps.db.kysely;
  const now = new Date();
  const [due, dead] = await Promise.all([
    db.selectFrom('jobs').select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.min('run_at').as('oldest')])
      .where('status', '=', sql.lit('queued')).where('run_at', '<=', now.toISOString()).executeTakeFirst(),
    db.selectFrom('jobs').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('status', '=', sql.lit('dead')).where('updated_at', '>=', new Date(now.getTime() - HOUR_MS).toISOString()).executeTakeFirst(),
  ]);
  const dueCount = Number(due?.n ?? 0);
  const deadCount = Number(dead?.n ?? 0);
  if (dueCount === 0 && deadCount === 0) return { status: 'operational', note: 'Idle: no due jobs waiting, no dead jobs in the last hour' };
  const waitedMs = due?.oldest ? Math.max(0, now.getTime() - Date.parse(String(due.oldest))) : 0;
  const problems: string[] = [];
  let status: ComponentStatus = 'operational';
  if (waitedMs > THRESHOLDS.queueOutageMs) { status = 'partial_outage'; problems.push(`the oldest due job has waited ${Math.round(waitedMs / 60000)} min`); } else if (waitedMs > THRESHOLDS.queueWaitMs) { status = 'degraded_performance'; problems.push(`the oldest due job has waited ${Math.round(waitedMs / 60000)} min`); }
  if (deadCount >= THRESHOLDS.deadPerHour) { status = worstStatus([status, 'degraded_performance']); problems.push(`${deadCount} jobs died in the last hour`); }
  const summary = `${dueCount} due job(s) queued, oldest waiting ${Math.round(waitedMs / 1000)} s; ${deadCount} dead in the last hour`;
  return problems.length ? { status, error: `Job queue: ${problems.join('; ')}`, note: summary } : { status, note: summary };
}

const notConfigured = (what: string): BuiltinCheck => async () => ({ status: 'operational', note: `No ${what} is configured yet; nothing to check` });

const DEFAULT_BUILTIN_TIMEOUT_MS = 5000;
const builtins = new Map<BuiltinName, BuiltinDef>([
  ['api_service', { display_name: 'API Service', position: 0, check: apiServiceCheck, timeoutMs: DEFAULT_BUILTIN_TIMEOUT_MS }],
  ['database', { display_name: 'Database', position: 1, check: databaseCheck, timeoutMs: DEFAULT_BUILTIN_TIMEOUT_MS }],
  ['job_queue', { display_name: 'Job Queue', position: 2, check: jobQueueCheck, timeoutMs: DEFAULT_BUILTIN_TIMEOUT_MS }],
  ['email_transport', { display_name: 'E-mail Transport', position: 3, check: notConfigured('e-mail transport'), timeoutMs: DEFAULT_BUILTIN_TIMEOUT_MS }],
  ['llm_providers', { display_name: 'LLM Providers', position: 4, check: notConfigured('LLM provider'), timeoutMs: DEFAULT_BUILTIN_TIMEOUT_MS }],
]);

/**
 * Plugs a check into a built-in component (e.g. the e-mail transport once one is configured).
 * Returns a function that puts the previous check back.
 */
export function setBuiltinCheck(name: BuiltinName, check: BuiltinCheck, opts: { timeoutMs?: number } = {}): () => void {
  const def = builtins.get(name)!;
  const previous = { check: def.check, timeoutMs: def.timeoutMs };
  def.check = check;
  def.timeoutMs = opts.timeoutMs ?? DEFAULT_BUILTIN_TIMEOUT_MS;
  return () => { def.check = previous.check; def.timeoutMs = previous.timeoutMs; };
}

/** Runs `fn` with a time bound; a throw or a timeout is a major outage with the reason. */
async function bounded(fn: () => Promise<CheckResult>, timeoutMs: number): Promise<CheckResult & { latency_ms: number }> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => resolve({ status: 'major_outage', error: `The check did not finish within ${timeoutMs} ms` }), timeoutMs);
  });
  let result: CheckResult;
  try {
    result = await Promise.race([fn().catch((err: unknown) => ({ status: 'major_outage' as const, error: `The check failed: ${errorText(err)}` })), timeout]);
  } finally {
    clearTimeout(timer);
  }
  return { ...result, latency_ms: result.latency_ms ?? round2(performance.now() - t0) };
}

function errorText(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  const cause = e?.cause?.code ?? e?.cause?.message;
  return (cause ? `${e?.message ?? String(err)} (${cause})` : e?.message ?? String(err)).slice(0, 500);
}

/** A user-defined HTTP check: the expected status within the timeout; slow (over half the timeout) is degraded. */
export async function httpCheck(url: string, expectedStatus: number, timeoutMs: number): Promise<CheckResult> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  const t0 = performance.now();
  try {
    const res = await fetch(url, { signal: ctl.signal, redirect: 'follow', headers: { 'user-agent': 'Agentry status check', accept: '*/*' } });
    const latency = round2(performance.now() - t0);
    await res.body?.cancel().catch(() => undefined);
    if (res.status !== expectedStatus) return { status: 'major_outage', latency_ms: latency, error: `Expected HTTP ${expectedStatus}, got ${res.status}` };
    const slowMs = timeoutMs / 2;
    if (latency > slowMs) return { status: 'degraded_performance', latency_ms: latency, error: `Slow answer: ${latency} ms (slow above ${slowMs} ms)` };
    return { status: 'operational', latency_ms: latency };
  } catch (err) {
    const latency = round2(performance.now() - t0);
    if (ctl.signal.aborted) return { status: 'major_outage', latency_ms: latency, error: `No answer within ${timeoutMs} ms` };
    return { status: 'major_outage', latency_ms: latency, error: `Request failed: ${errorText(err)}` };
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Components

const COMPONENT_COLUMNS = [
  'id', 'name', 'display_name', 'kind', 'url', 'expected_status', 'timeout_ms', 'maintenance', 'current_status',
  'last_check_status', 'last_error', 'last_checked', 'position', 'created_at', 'updated_at',
] as const;
type ComponentRow = {
  id: string; name: string; display_name: string; kind: ComponentKind; url: string | null; expected_status: number | null;
  timeout_ms: number | null; maintenance: number; current_status: ComponentStatus; last_check_status: ComponentStatus | null;
  last_error: string | null; last_checked: string | null; position: number; created_at: string; updated_at: string;
};

const presentComponent = (r: ComponentRow) => ({
  id: r.id, name: r.name, display_name: r.display_name, kind: r.kind, url: r.url, expected_status: r.expected_status,
  timeout_ms: r.timeout_ms, current_status: r.current_status, under_maintenance: Number(r.maintenance) === 1,
  last_checked: r.last_checked, last_error: r.last_error, position: Number(r.position), created_at: r.created_at, updated_at: r.updated_at,
});

export const HTTP_DEFAULTS = { expected_status: 200, timeout_ms: 5000 };

const ensured = new WeakSet<Kysely<Database>>();

/** Creates the built-in components that do not exist yet (idempotent, safe to race). */
export async function ensureBuiltinComponents(deps: Deps): Promise<void> {
  const db = deps.db.kysely;
  if (ensured.has(db)) return;
  const now = nowIso();
  for (const [name, def] of builtins) {
    await db.insertInto('status_components').values({
      id: newId('cmp'), name, display_name: def.display_name, kind: 'builtin', url: null, expected_status: null, timeout_ms: null,
      last_check_status: null, last_error: null, last_checked: null, position: def.position, created_at: now, updated_at: now,
    }).onConflict((oc) => oc.column('name').doNothing()).execute();
  }
  ensured.add(db);
}

async function componentRows(db: Kysely<Database>): Promise<ComponentRow[]> {
  return (await db.selectFrom('status_components').select(COMPONENT_COLUMNS).orderBy('position').orderBy('id').execute()) as ComponentRow[];
}

async function componentRow(ctx: Ctx, id: string): Promise<ComponentRow> {
  const row = await ctx.deps.db.kysely.selectFrom('status_components').select(COMPONENT_COLUMNS).where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('Component');
  return row as ComponentRow;
}

export async function listComponents(ctx: Ctx) {
  await ensureBuiltinComponents(ctx.deps);
  const rows = await componentRows(ctx.deps.db.kysely);
  return { count: rows.length, next: null, previous: null, results: rows.map(presentComponent) };
}

export interface ComponentInput {
  name: string; display_name: string; url: string; expected_status?: number; timeout_ms?: number; position?: number;
}

const nameTaken = () => conflict({ name: 'A component with this name already exists' });

export async function createComponent(ctx: Ctx, input: ComponentInput) {
  await ensureBuiltinComponents(ctx.deps);
  const db = ctx.deps.db.kysely;
  const now = nowIso();
  const id = newId('cmp');
  try {
    await db.transaction().execute(async (trx) => {
      const taken = await trx.selectFrom('status_components').select('id').where('name', '=', input.name).executeTakeFirst();
      if (taken) throw nameTaken();
      let position = input.position;
      if (position === undefined) {
        const max = await trx.selectFrom('status_components').select((eb) => eb.fn.max('position').as('p')).executeTakeFirst();
        position = Number(max?.p ?? -1) + 1;
      }
      await trx.insertInto('status_components').values({
        id, name: input.name, display_name: input.display_name, kind: 'http', url: input.url,
        expected_status: input.expected_status ?? HTTP_DEFAULTS.expected_status, timeout_ms: input.timeout_ms ?? HTTP_DEFAULTS.timeout_ms,
        last_check_status: null, last_error: null, last_checked: null, position, created_at: now, updated_at: now,
      }).execute();
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  return presentComponent(await componentRow(ctx, id));
}

export interface ComponentPatch {
  name?: string; display_name?: string; url?: string; expected_status?: number; timeout_ms?: number; position?: number; under_maintenance?: boolean;
}

export async function updateComponent(ctx: Ctx, id: string, input: ComponentPatch) {
  const current = await componentRow(ctx, id);
  if (current.kind === 'builtin') {
    const refused: Record<string, string> = {};
    if (input.name !== undefined && input.name !== current.name) refused.name = 'Built-in components keep their name';
    for (const f of ['url', 'expected_status', 'timeout_ms'] as const) if (input[f] !== undefined) refused[f] = 'Built-in components have no HTTP check to configure';
    if (Object.keys(refused).length) throw badRequest(refused);
  }
  const { under_maintenance: maintenance, ...fields } = input;
  const set: Updateable<StatusComponentsTable> = { ...fields, updated_at: nowIso() };
  if (maintenance !== undefined) {
    set.maintenance = maintenance ? 1 : 0;
    // Leaving maintenance shows what the last check observed (operational before any check).
    set.current_status = maintenance ? 'under_maintenance' : (current.last_check_status ?? 'operational');
  }
  try {
    await ctx.deps.db.kysely.updateTable('status_components').set(set).where('id', '=', id).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  return presentComponent(await componentRow(ctx, id));
}

export async function deleteComponent(ctx: Ctx, id: string) {
  const current = await componentRow(ctx, id);
  if (current.kind === 'builtin') throw badRequest({ id: 'Built-in components cannot be deleted; set them under maintenance instead' }, 'Built-in component');
  // Samples, hourly rollups and incident links go with it (ON DELETE CASCADE).
  await ctx.deps.db.kysely.deleteFrom('status_components').where('id', '=', id).execute();
  return { id, deleted: true as const };
}

// ---------------------------------------------------------------------------------------------
// Samples and uptime

export interface SampleInput {
  component_id: string; status: ComponentStatus; latency_ms?: number | null; error?: string | null; note?: string | null;
  /** ISO-8601 UTC; now when omitted. */
  checked_at?: string;
}

/** Writes samples and their hourly rollups (one transaction). The scheduler and imports of history use it. */
export async function recordSamples(deps: Deps, samples: SampleInput[]): Promise<void> {
  if (!samples.length) return;
  await deps.db.kysely.transaction().execute((trx) => writeSamples(trx, samples));
}

async function writeSamples(trx: Kysely<Database>, samples: SampleInput[]): Promise<void> {
  const rows = samples.map((s) => ({
    id: newId('smp'), component_id: s.component_id, status: s.status, latency_ms: s.latency_ms ?? null,
    error: s.error ?? null, note: s.note ?? null, checked_at: s.checked_at ?? nowIso(),
  }));
  for (let i = 0; i < rows.length; i += 500) await trx.insertInto('status_samples').values(rows.slice(i, i + 500)).execute();
  // One rollup upsert per component and hour.
  const hours = new Map<string, { component_id: string; hour: string; total: number; good: number; worst: number }>();
  for (const r of rows) {
    const hour = r.checked_at.slice(0, 13);
    const key = `${r.component_id}|${hour}`;
    const h = hours.get(key) ?? { component_id: r.component_id, hour, total: 0, good: 0, worst: 0 };
    h.total++;
    if (isGood(r.status)) h.good++;
    h.worst = Math.max(h.worst, severity(r.status));
    hours.set(key, h);
  }
  for (const h of hours.values()) {
    await trx.insertInto('status_hourly').values(h).onConflict((oc) => oc.columns(['component_id', 'hour']).doUpdateSet({
      total: sql<number>`status_hourly.total + excluded.total`,
      good: sql<number>`status_hourly.good + excluded.good`,
      worst: sql<number>`case when excluded.worst > status_hourly.worst then excluded.worst else status_hourly.worst end`,
    })).execute();
  }
}

function checkComponent(deps: Deps, c: ComponentRow) {
  if (c.kind === 'http') {
    const timeoutMs = c.timeout_ms ?? HTTP_DEFAULTS.timeout_ms;
    // httpCheck aborts at its own timeout; the bound is a backstop.
    return bounded(() => httpCheck(c.url ?? '', c.expected_status ?? HTTP_DEFAULTS.expected_status, timeoutMs), timeoutMs + 1000);
  }
  const def = builtins.get(c.name as BuiltinName);
  if (!def) return bounded(async () => ({ status: 'operational', note: 'No check is defined for this built-in component' }), 1000);
  return bounded(() => def.check(deps), def.timeoutMs);
}

/** Runs every component's check now, in parallel and each time-bounded; records one sample each. */
export async function runStatusChecks(deps: Deps) {
  await ensureBuiltinComponents(deps);
  const db = deps.db.kysely;
  const components = await componentRows(db);
  const checked = await Promise.all(components.map(async (c) => {
    const result = await checkComponent(deps, c);
    return { component: c, result, checked_at: nowIso() };
  }));

  const recorded = await db.transaction().execute(async (trx) => {
    // Maintenance is read inside the transaction: an admin may have changed it while checks ran,
    // and a component deleted meanwhile gets no sample.
    const live = new Map((await trx.selectFrom('status_components').select(['id', 'maintenance'])
      .where('id', 'in', components.length ? components.map((c) => c.id) : ['']).execute()).map((r) => [r.id, Number(r.maintenance) === 1]));
    const out = [];
    const samples: SampleInput[] = [];
    for (const { component: c, result: r, checked_at } of checked) {
      if (!live.has(c.id)) continue;
      const status: ComponentStatus = live.get(c.id) ? 'under_maintenance' : r.status;
      const sample = { component_id: c.id, status, latency_ms: r.latency_ms, error: r.error ?? null, note: r.note ?? null, checked_at };
      samples.push(sample);
      await trx.updateTable('status_components').set({
        current_status: sql<ComponentStatus>`case when maintenance = 1 then 'under_maintenance' else ${r.status} end`,
        last_check_status: r.status, last_error: r.error ?? null, last_checked: checked_at,
      }).where('id', '=', c.id).execute();
      out.push({
        component_id: c.id, component: c.name, display_name: c.display_name, status, observed_status: r.status,
        latency_ms: sample.latency_ms, error: sample.error, note: sample.note, checked_at,
      });
    }
    await writeSamples(trx, samples);
    return out;
  });
  return { overall_status: worstStatus(recorded.map((r) => r.status)), checked_at: nowIso(), results: recorded };
}

/**
 * Deletes samples and hourly rollups older than the uptime window (90 days by default): for a
 * periodic job, so the samples table stays bounded. Returns how many samples were deleted.
 */
export async function pruneStatusSamples(deps: Deps, keepDays = UPTIME_DAYS + 1): Promise<number> {
  const cutoff = new Date(Date.now() - keepDays * DAY_MS).toISOString();
  const db = deps.db.kysely;
  const res = await db.deleteFrom('status_samples').where('checked_at', '<', cutoff).executeTakeFirst();
  await db.deleteFrom('status_hourly').where('hour', '<', cutoff.slice(0, 13)).execute();
  return Number(res.numDeletedRows ?? 0);
}

export type Window = '24h' | '7d' | '30d' | '90d';
const WINDOWS: Record<Window, number> = { '24h': DAY_MS, '7d': 7 * DAY_MS, '30d': 30 * DAY_MS, '90d': UPTIME_DAYS * DAY_MS };
type Counts = Record<Window, { total: number; good: number }>;

/** Share of good samples as a percentage, floored to 2 decimals (any failure shows below 100); 100 without samples. */
export function uptimePercentage(good: number, total: number): number {
  if (!total) return 100;
  return Math.floor((good * 10000) / total) / 100;
}

/** Samples and good samples per component over each window, from the hourly rollups (one aggregate query). */
async function uptimeCounts(db: Kysely<Database>, now: Date): Promise<Map<string, Counts>> {
  const since = (w: Window) => new Date(now.getTime() - WINDOWS[w]).toISOString().slice(0, 13);
  const sums = (w: Window) => [
    sql<number>`sum(case when hour >= ${since(w)} then total else 0 end)`.as(`t_${w}`),
    sql<number>`sum(case when hour >= ${since(w)} then good else 0 end)`.as(`g_${w}`),
  ];
  const rows = await db.selectFrom('status_hourly')
    .select(['component_id', ...sums('24h'), ...sums('7d'), ...sums('30d'), ...sums('90d')])
    .where('hour', '>=', since('90d'))
    .groupBy('component_id')
    .execute() as unknown as Record<string, string | number>[];
  const out = new Map<string, Counts>();
  for (const r of rows) {
    const c = {} as Counts;
    for (const w of Object.keys(WINDOWS) as Window[]) c[w] = { total: Number(r[`t_${w}`] ?? 0), good: Number(r[`g_${w}`] ?? 0) };
    out.set(String(r.component_id), c);
  }
  return out;
}

export interface DayBucket { date: string; status: ComponentStatus | null; uptime_percentage: number | null; samples: number }

/** The last 90 UTC days per component, oldest first: the worst status and the uptime of each day (null: no samples). */
async function dailyBuckets(db: Kysely<Database>, now: Date): Promise<(componentId: string) => DayBucket[]> {
  const days: string[] = [];
  for (let i = UPTIME_DAYS - 1; i >= 0; i--) days.push(new Date(now.getTime() - i * DAY_MS).toISOString().slice(0, 10));
  const day = sql<string>`substr(hour, 1, 10)`;
  const rows = await db.selectFrom('status_hourly')
    .select((eb) => ['component_id', day.as('day'), eb.fn.sum<number>('total').as('total'), eb.fn.sum<number>('good').as('good'), eb.fn.max('worst').as('worst')])
    .where('hour', '>=', `${days[0]}T00`)
    .groupBy(['component_id', day])
    .execute();
  const byComponent = new Map<string, Map<string, { total: number; good: number; worst: number }>>();
  for (const r of rows) {
    const m = byComponent.get(r.component_id) ?? new Map<string, { total: number; good: number; worst: number }>();
    m.set(String(r.day), { total: Number(r.total), good: Number(r.good), worst: Number(r.worst) });
    byComponent.set(r.component_id, m);
  }
  return (componentId) => {
    const m = byComponent.get(componentId);
    return days.map((date) => {
      const b = m?.get(date);
      return b ? { date, status: COMPONENT_STATUSES[b.worst] ?? 'major_outage', uptime_percentage: uptimePercentage(b.good, b.total), samples: b.total }
        : { date, status: null, uptime_percentage: null, samples: 0 };
    });
  };
}

// ---------------------------------------------------------------------------------------------
// Incidents

const INCIDENT_COLUMNS = ['id', 'title', 'status', 'impact', 'created_at', 'updated_at', 'resolved_at'] as const;
type IncidentRow = { id: string; title: string; status: IncidentStatus; impact: IncidentImpact; created_at: string; updated_at: string; resolved_at: string | null };

/** Incidents with their components and their updates (newest first), in three queries whatever their number. */
async function hydrateIncidents(db: Kysely<Database>, rows: IncidentRow[]) {
  if (!rows.length) return [];
  const ids = rows.map((r) => r.id);
  const [links, updates] = await Promise.all([
    db.selectFrom('status_incident_components as l').innerJoin('status_components as c', 'c.id', 'l.component_id')
      .select(['l.incident_id', 'c.id', 'c.name', 'c.display_name', 'c.current_status', 'c.position'])
      .where('l.incident_id', 'in', ids).orderBy('c.position').orderBy('c.id').execute(),
    db.selectFrom('status_incident_updates').select(['id', 'incident_id', 'status', 'message', 'created_at'])
      .where('incident_id', 'in', ids).orderBy('id', 'desc').execute(),
  ]);
  const group = <T extends { incident_id: string }>(items: T[]) => {
    const m = new Map<string, T[]>();
    for (const it of items) m.set(it.incident_id, [...(m.get(it.incident_id) ?? []), it]);
    return m;
  };
  const linksOf = group(links);
  const updatesOf = group(updates);
  return rows.map((r) => ({
    ...r,
    components: (linksOf.get(r.id) ?? []).map((l) => ({ id: l.id, name: l.name, display_name: l.display_name, current_status: l.current_status })),
    updates: (updatesOf.get(r.id) ?? []).map((u) => ({ id: u.id, status: u.status, message: u.message, created_at: u.created_at })),
  }));
}
export type Incident = Awaited<ReturnType<typeof hydrateIncidents>>[number];

export async function listIncidents(ctx: Ctx, input: { status?: IncidentStatus; limit?: number; page?: number; cursor?: string }) {
  let query = ctx.deps.db.kysely.selectFrom('status_incidents').select(INCIDENT_COLUMNS);
  if (input.status) query = query.where('status', '=', input.status);
  // Ids sort by creation time: id desc is newest first.
  const page = await paginate(ctx, { query, table: 'status_incidents', scope: 'platform', input: { page: input.page, cursor: input.cursor, page_size: input.limit ?? 50 } }, (r) => r as IncidentRow);
  return { ...page, results: await hydrateIncidents(ctx.deps.db.kysely, page.results) };
}

export async function getIncident(ctx: Ctx, id: string): Promise<Incident> {
  const row = await ctx.deps.db.kysely.selectFrom('status_incidents').select(INCIDENT_COLUMNS).where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('Incident');
  return (await hydrateIncidents(ctx.deps.db.kysely, [row as IncidentRow]))[0];
}

/** Unknown component ids are a 400 naming them. */
async function checkComponentIds(db: Kysely<Database>, ids: string[]): Promise<string[]> {
  const unique = [...new Set(ids)];
  if (!unique.length) return unique;
  const found = new Set((await db.selectFrom('status_components').select('id').where('id', 'in', unique).execute()).map((r) => r.id));
  const unknown = unique.filter((i) => !found.has(i));
  if (unknown.length) throw badRequest({ component_ids: `Unknown component ids: ${unknown.join(', ')}` });
  return unique;
}

export interface IncidentInput { title: string; status?: IncidentStatus; impact?: IncidentImpact; component_ids?: string[]; message: string }

export async function createIncident(ctx: Ctx, input: IncidentInput): Promise<Incident> {
  const db = ctx.deps.db.kysely;
  const id = newId('inc');
  const now = nowIso();
  const status = input.status ?? 'investigating';
  await db.transaction().execute(async (trx) => {
    const componentIds = await checkComponentIds(trx, input.component_ids ?? []);
    await trx.insertInto('status_incidents').values({
      id, title: input.title, status, impact: input.impact ?? 'minor', created_by: ctx.actor?.id ?? null,
      created_at: now, updated_at: now, resolved_at: status === 'resolved' ? now : null,
    }).execute();
    if (componentIds.length) await trx.insertInto('status_incident_components').values(componentIds.map((c) => ({ incident_id: id, component_id: c }))).execute();
    await trx.insertInto('status_incident_updates').values({ id: newId('inu'), incident_id: id, status, message: input.message, created_by: ctx.actor?.id ?? null, created_at: now }).execute();
  });
  ctx.deps.counts.invalidate('platform', 'status_incidents');
  return getIncident(ctx, id);
}

export async function updateIncident(ctx: Ctx, id: string, input: { title?: string; impact?: IncidentImpact; component_ids?: string[] }): Promise<Incident> {
  await getIncident(ctx, id);
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    const set: { title?: string; impact?: IncidentImpact; updated_at: string } = { updated_at: nowIso() };
    if (input.title !== undefined) set.title = input.title;
    if (input.impact !== undefined) set.impact = input.impact;
    if (input.component_ids !== undefined) {
      const componentIds = await checkComponentIds(trx, input.component_ids);
      await trx.deleteFrom('status_incident_components').where('incident_id', '=', id).execute();
      if (componentIds.length) await trx.insertInto('status_incident_components').values(componentIds.map((c) => ({ incident_id: id, component_id: c }))).execute();
    }
    await trx.updateTable('status_incidents').set(set).where('id', '=', id).execute();
  });
  return getIncident(ctx, id);
}

/** A timeline entry; its status becomes the incident's (resolving sets resolved_at, reopening clears it). */
export async function addIncidentUpdate(ctx: Ctx, id: string, input: { status: IncidentStatus; message: string }): Promise<Incident> {
  const current = await getIncident(ctx, id);
  const now = nowIso();
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    await trx.insertInto('status_incident_updates').values({ id: newId('inu'), incident_id: id, status: input.status, message: input.message, created_by: ctx.actor?.id ?? null, created_at: now }).execute();
    const resolvedAt = input.status === 'resolved' ? (current.status === 'resolved' ? current.resolved_at : now) : null;
    await trx.updateTable('status_incidents').set({ status: input.status, resolved_at: resolvedAt, updated_at: now }).where('id', '=', id).execute();
  });
  ctx.deps.counts.invalidate('platform', 'status_incidents');
  return getIncident(ctx, id);
}

async function openIncidents(db: Kysely<Database>) {
  const rows = await db.selectFrom('status_incidents').select(INCIDENT_COLUMNS).where('status', '!=', 'resolved').orderBy('id', 'desc').limit(100).execute();
  return hydrateIncidents(db, rows as IncidentRow[]);
}

// ---------------------------------------------------------------------------------------------
// Overview and the page

const percentages = (c: Counts | undefined) => Object.fromEntries((Object.keys(WINDOWS) as Window[]).map((w) => [w, uptimePercentage(c?.[w].good ?? 0, c?.[w].total ?? 0)])) as Record<Window, number>;

/** `GET /api/status/overview/`, in the documented shape. */
export async function statusOverview(ctx: Ctx) {
  await ensureBuiltinComponents(ctx.deps);
  const db = ctx.deps.db.kysely;
  const now = new Date();
  const [components, counts, incidents] = await Promise.all([componentRows(db), uptimeCounts(db, now), openIncidents(db)]);
  const overall = {} as Counts;
  for (const w of Object.keys(WINDOWS) as Window[]) {
    overall[w] = { total: 0, good: 0 };
    for (const c of components) { const k = counts.get(c.id)?.[w]; if (k) { overall[w].total += k.total; overall[w].good += k.good; } }
  }
  const lastChecked = components.map((c) => c.last_checked).filter((t): t is string => !!t).sort().pop();
  return {
    overall_status: worstStatus(components.map((c) => c.current_status)),
    components: components.map((c) => ({
      id: c.id, name: c.name, display_name: c.display_name, current_status: c.current_status,
      uptime_percentage: uptimePercentage(counts.get(c.id)?.['90d'].good ?? 0, counts.get(c.id)?.['90d'].total ?? 0),
      last_checked: c.last_checked,
    })),
    incidents,
    uptime_stats: {
      overall: percentages(overall),
      components: Object.fromEntries(components.map((c) => [c.name, percentages(counts.get(c.id))])),
    },
    last_updated: lastChecked ?? now.toISOString(),
  };
}

/** What the HTML page shows: components with 90 daily buckets, open incidents and those resolved in the last 14 days. */
export async function statusPageData(ctx: Ctx) {
  await ensureBuiltinComponents(ctx.deps);
  const db = ctx.deps.db.kysely;
  const now = new Date();
  const resolvedSince = new Date(now.getTime() - RESOLVED_SHOWN_DAYS * DAY_MS).toISOString();
  const [components, counts, days, open, resolvedRows] = await Promise.all([
    componentRows(db), uptimeCounts(db, now), dailyBuckets(db, now), openIncidents(db),
    db.selectFrom('status_incidents').select(INCIDENT_COLUMNS).where('status', '=', 'resolved').where('resolved_at', '>=', resolvedSince)
      .orderBy('resolved_at', 'desc').limit(100).execute(),
  ]);
  return {
    overall_status: worstStatus(components.map((c) => c.current_status)),
    components: components.map((c) => ({
      id: c.id, name: c.name, display_name: c.display_name, current_status: c.current_status, last_checked: c.last_checked,
      uptime_percentage: uptimePercentage(counts.get(c.id)?.['90d'].good ?? 0, counts.get(c.id)?.['90d'].total ?? 0),
      days: days(c.id),
    })),
    open_incidents: open,
    resolved_incidents: await hydrateIncidents(db, resolvedRows as IncidentRow[]),
    generated_at: now.toISOString(),
  };
}
