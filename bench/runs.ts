/**
 * The runs benchmark (issue 4), the third `npm run bench` run: runs of a three-step agent with no
 * LLM, each step an HTTP tool call to a local server, executed by the real engine (src/engine/runs.ts
 * on the job queue, the in-process Worker, durable step records, run events, the tool executor with
 * its SSRF guard), versus a raw better-sqlite3 claim-and-complete loop doing the same work in the
 * same process: claim a job (one UPDATE … RETURNING), three times call the tool server and insert
 * the step's result, mark the job done.
 *
 * Both sides: a fresh SQLite file (WAL, synchronous NORMAL, the same checkpoint threshold, as src/db.ts), the same tool server
 * (a child process answering `{"ok":true,"n":…}` on keep-alive HTTP), the same concurrency (the
 * Worker's default, 4 jobs at a time), all runs enqueued first, then the clock runs until the last
 * one is done. Reported: steps per second of each, app/raw (target ≥ 0.5), in alternated rounds, and
 * the CPU this process spent per step on each side (less at the mercy of a noisy machine).
 *
 * Then enqueue-to-start latency: with the Worker idle and waiting, runs are started one at a time
 * (`startRun`, as `POST /api/v1/agents/{id}/execute` does) and the time from the call to the first
 * line of the run's body is recorded: p50 and p99.
 *
 * Environment: BENCH_RUNS (runs per round, default 1000), BENCH_ROUNDS (3), BENCH_LATENCY_RUNS (300),
 * BENCH_CONCURRENCY (4).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import BetterSqlite3 from 'better-sqlite3';
import pino from 'pino';
import { buildApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { Ctx } from '../src/context.js';
import { migrate, openDatabase, WAL_AUTOCHECKPOINT_PAGES } from '../src/db.js';
import { Worker } from '../src/engine/queue.js';
import { defineRunKind, startRun, TERMINAL_STATUSES } from '../src/engine/runs.js';
import { newId } from '../src/ids.js';
import { PERMISSIONS } from '../src/permissions.js';
import { createOrganization } from '../src/services/organizations.js';
import { createAgent } from '../src/services/agents.js';
import { createTool, executeTool } from '../src/services/tools.js';
import { TMP, fmt, log, median, num, serverEnv, table, track } from './lib.js';

const RUNS = Math.round(num('BENCH_RUNS', 1000));
const ROUNDS = Math.round(num('BENCH_ROUNDS', 3));
const LATENCY_RUNS = Math.round(num('BENCH_LATENCY_RUNS', 300));
const CONCURRENCY = Math.round(num('BENCH_CONCURRENCY', 4));
const STEPS = 3;
const DIR = join(TMP, 'runs');

// ---- the tool server ---------------------------------------------------------------------------

const TOOL_SERVER = `
const http = require('node:http');
let n = 0;
const s = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => { n++; res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify({ ok: true, n })); });
});
s.keepAliveTimeout = 60000;
s.listen(0, '127.0.0.1', () => process.stdout.write(String(s.address().port) + '\\n'));
`;

async function startToolServer(): Promise<string> {
  const child = track(spawn(process.execPath, ['-e', TOOL_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', (code) => reject(new Error(`tool server exited (${code})`)));
  });
  return `http://127.0.0.1:${port}/ping`;
}

// ---- raw: better-sqlite3 claim-and-complete ---------------------------------------------------

interface Round { rate: number; cpuUs: number }

/** CPU of this process (user + system), in microseconds. */
const cpuNow = () => { const c = process.cpuUsage(); return c.user + c.system; };

async function rawRound(url: string, runs: number): Promise<Round> {
  const path = join(DIR, `raw-${newId('x')}.db`);
  const db = new BetterSqlite3(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
  db.exec(`
    create table raw_jobs (id text primary key, status text not null, run_at text not null, locked_by text, locked_until text,
      attempts integer not null default 0, payload text not null, result text, updated_at text);
    create index raw_jobs_due on raw_jobs (status, run_at);
    create table raw_steps (id text primary key, run_id text not null, seq integer not null, output text, latency_ms integer, created_at text not null,
      unique (run_id, seq));`);
  const insert = db.prepare('insert into raw_jobs (id, status, run_at, payload) values (?, ?, ?, ?)');
  const now = new Date().toISOString();
  db.transaction(() => { for (let i = 0; i < runs; i++) insert.run(newId('job'), 'queued', now, JSON.stringify({ i })); })();
  const claim = db.prepare(`update raw_jobs set status = 'running', locked_by = ?, locked_until = ?, attempts = attempts + 1, updated_at = ?
    where id = (select id from raw_jobs where status = 'queued' and run_at <= ? order by run_at limit 1) returning id, payload`);
  const step = db.prepare('insert into raw_steps (id, run_id, seq, output, latency_ms, created_at) values (?, ?, ?, ?, ?, ?)');
  const done = db.prepare(`update raw_jobs set status = 'succeeded', result = ?, locked_by = null, locked_until = null, updated_at = ? where id = ?`);
  const t0 = performance.now();
  const c0 = cpuNow();
  const loop = async (worker: string) => {
    for (;;) {
      const at = new Date();
      const job = claim.get(worker, new Date(at.getTime() + 30_000).toISOString(), at.toISOString(), at.toISOString()) as { id: string; payload: string } | undefined;
      if (!job) return;
      const outputs: unknown[] = [];
      for (let seq = 0; seq < STEPS; seq++) {
        const s = performance.now();
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ step: seq }) });
        const output = await res.json();
        outputs.push(output);
        step.run(newId('stp'), job.id, seq, JSON.stringify(output), Math.round(performance.now() - s), new Date().toISOString());
      }
      done.run(JSON.stringify(outputs), new Date().toISOString(), job.id);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => loop(`raw:${i}`)));
  const seconds = (performance.now() - t0) / 1000;
  const cpuUs = cpuNow() - c0;
  const steps = (db.prepare('select count(*) as n from raw_steps').get() as { n: number }).n;
  db.close();
  rmSync(path, { force: true });
  rmSync(`${path}-wal`, { force: true });
  rmSync(`${path}-shm`, { force: true });
  if (steps !== runs * STEPS) throw new Error(`raw recorded ${steps} steps, expected ${runs * STEPS}`);
  return { rate: steps / seconds, cpuUs: cpuUs / steps };
}

// ---- the app: the real engine ------------------------------------------------------------------

const KIND = 'bench.three_step';
const bodyStarted = new Map<string, number>();

defineRunKind(KIND, async (rc) => {
  if (!bodyStarted.has(rc.run.id)) bodyStarted.set(rc.run.id, performance.now());
  const outputs: unknown[] = [];
  for (let seq = 0; seq < STEPS; seq++) {
    outputs.push(await rc.step('tool', 'ping', { step: seq }, async ({ signal }) =>
      ({ output: (await executeTool(rc.deps, rc.run.organization_id, 'ping', { step: seq }, { agentId: rc.run.agent_id, signal })).output })));
  }
  return { outputs };
});

interface AppSide { app: App; ctx: Ctx; agentId: string; path: string }

async function openApp(url: string): Promise<AppSide> {
  const path = join(DIR, `app-${newId('x')}.db`);
  const config = { ...loadConfig({ ...process.env, ...serverEnv(path), DATA_DIR: DIR, LOG_LEVEL: 'warn', OUTBOUND_ALLOWLIST: '127.0.0.1' }), inProcessWorkers: false };
  const db = await openDatabase({ url: path });
  await migrate(db);
  const app = await buildApp(config, { db, logger: pino({ level: 'warn' }) });
  const org = await createOrganization(db.kysely, { name: 'Bench' });
  const ctx: Ctx = {
    deps: app.deps, authError: null, requestId: 'bench', ip: '127.0.0.1', baseUrl: 'http://localhost', url: '/',
    actor: {
      type: 'user', id: 'bench', userId: null, organizationId: org.id, role: 'owner',
      permissions: new Set(PERMISSIONS.map((p) => p.name)), isPlatformAdmin: false, sessionId: null,
    },
  };
  await createTool(ctx, { name: 'ping', description: 'Answers ok', method: 'POST', url_template: url, input_schema: { type: 'object', properties: { step: { type: 'integer' } }, required: ['step'] } });
  const agent = await createAgent(ctx, { name: 'three-step', execution_policy: { max_steps: STEPS, tools_allowed: ['ping'] } });
  return { app, ctx, agentId: agent.id, path };
}

async function closeApp(side: AppSide): Promise<void> {
  await side.app.close();
  for (const suffix of ['', '-wal', '-shm']) rmSync(side.path + suffix, { force: true });
}

const start = (side: AppSide) => startRun(side.app.deps, {
  organizationId: side.ctx.actor!.organizationId, agentId: side.agentId, kind: KIND, trigger: 'execute', input: {}, policy: { max_steps: STEPS },
});

async function waitAllDone(side: AppSide, expected: number): Promise<void> {
  const db = side.app.deps.db.kysely;
  for (;;) {
    const row = await db.selectFrom('runs').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('status', 'in', [...TERMINAL_STATUSES]).executeTakeFirstOrThrow();
    if (Number(row.n) >= expected) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function appRound(url: string, runs: number): Promise<Round> {
  const side = await openApp(url);
  try {
    for (let i = 0; i < runs; i++) await start(side);
    const worker = new Worker(side.app.deps, { concurrency: CONCURRENCY, types: ['runs.execute'] });
    const t0 = performance.now();
    const c0 = cpuNow();
    await worker.start();
    await waitAllDone(side, runs);
    const seconds = (performance.now() - t0) / 1000;
    const cpuUs = cpuNow() - c0;
    await worker.stop();
    const db = side.app.deps.db.kysely;
    const ok = await db.selectFrom('runs').select((eb) => eb.fn.countAll<number>().as('n')).where('status', '=', 'succeeded').executeTakeFirstOrThrow();
    const steps = await db.selectFrom('run_steps').select((eb) => eb.fn.countAll<number>().as('n')).where('status', '=', 'succeeded').executeTakeFirstOrThrow();
    if (Number(ok.n) !== runs || Number(steps.n) !== runs * STEPS) {
      const failed = await db.selectFrom('runs').select(['status', 'error']).where('status', '<>', 'succeeded').limit(3).execute();
      throw new Error(`app: ${ok.n}/${runs} runs succeeded, ${steps.n} steps; e.g. ${JSON.stringify(failed)}`);
    }
    return { rate: Number(steps.n) / seconds, cpuUs: cpuUs / Number(steps.n) };
  } finally {
    await closeApp(side);
  }
}

async function latency(url: string, runs: number): Promise<{ p50: number; p99: number; max: number }> {
  const side = await openApp(url);
  const worker = new Worker(side.app.deps, { concurrency: CONCURRENCY, types: ['runs.execute'] });
  await worker.start();
  const samples: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const run = await start(side);
      while (!bodyStarted.has(run.id)) await new Promise((r) => setImmediate(r));
      samples.push(bodyStarted.get(run.id)! - t0);
      await waitAllDone(side, i + 1);
    }
  } finally {
    await worker.stop();
    await closeApp(side);
  }
  samples.sort((a, b) => a - b);
  const q = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))];
  return { p50: q(0.5), p99: q(0.99), max: samples[samples.length - 1] };
}

// ---- main --------------------------------------------------------------------------------------

async function main(): Promise<void> {
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  const url = await startToolServer();
  log(`# Runs benchmark (issue 4): ${RUNS} runs × ${STEPS} HTTP-tool steps per round, concurrency ${CONCURRENCY}, ${ROUNDS} rounds`);
  // Warm-up: JIT, connection pools, the tool server.
  await rawRound(url, Math.min(100, RUNS));
  await appRound(url, Math.min(100, RUNS));
  const raw: Round[] = [];
  const app: Round[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) { raw.push(await rawRound(url, RUNS)); app.push(await appRound(url, RUNS)); } else { app.push(await appRound(url, RUNS)); raw.push(await rawRound(url, RUNS)); }
    log(`round ${r + 1}: raw ${fmt(raw[r].rate)} steps/s (${fmt(raw[r].cpuUs)} µs CPU/step), app ${fmt(app[r].rate)} steps/s (${fmt(app[r].cpuUs)} µs CPU/step), app/raw ${fmt(app[r].rate / raw[r].rate, 2)}`);
  }
  const rate = (xs: Round[]) => median(xs.map((x) => x.rate));
  const cpu = (xs: Round[]) => median(xs.map((x) => x.cpuUs));
  log();
  log(table([
    ['', 'steps/s (median)', 'µs CPU per step (median)', 'per-round app/raw'],
    ['raw better-sqlite3 loop', fmt(rate(raw)), fmt(cpu(raw)), ''],
    ['app (engine + Worker)', fmt(rate(app)), fmt(cpu(app)), app.map((a, i) => fmt(a.rate / raw[i].rate, 2)).join(' ')],
  ]));
  log(`app/raw (medians): ${fmt(rate(app) / rate(raw), 2)} by steps/s (target ≥ 0.5); ${fmt(cpu(raw) / cpu(app), 2)} by CPU per step`);
  const l = await latency(url, LATENCY_RUNS);
  log();
  log(`enqueue-to-start (startRun → the body's first line, in-process Worker, ${LATENCY_RUNS} runs one at a time): p50 ${fmt(l.p50, 2)} ms, p99 ${fmt(l.p99, 2)} ms, max ${fmt(l.max, 2)} ms`);
  rmSync(DIR, { recursive: true, force: true });
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
