/**
 * The list benchmark (issue 2), the first of the two `npm run bench` runs (bench/contacts.ts is the
 * second): GET /api/v1/projects?page_size=50 with an organization API key, served by the
 * real app (child process, bench/server.ts) versus raw Fastify + better-sqlite3 doing the same
 * work (child process, bench/raw.ts), on 100,000 seeded projects over 10 organizations.
 *
 * Servers are pinned to core 0 and this process (the load generator) to core 1 when `taskset`
 * exists and there are two cores. Variants run in alternation, several rounds, and the medians
 * are compared, so the ratio app/raw is measured under the same machine noise. The bench is a
 * meter, not a gate: it exits 0 whatever the ratio (1 only if it could not run or the two
 * servers disagree about the rows).
 *
 * Environment:
 *   BENCH_SECONDS      measured seconds per run (default 10)
 *   BENCH_WARMUP       warm-up seconds before each measured run (default 3)
 *   BENCH_ROUNDS       rounds; each round runs every variant once (default 3)
 *   BENCH_CONNECTIONS  autocannon connections (default 50)
 *   BENCH_PROJECTS     projects to seed (default 100000)
 *   BENCH_PROFILE=1    afterwards, profile one measured run of the app and of raw (V8 sampling
 *                      profiler) and print where the time goes (see bench/profile-report.ts)
 *   BENCH_PROFILE_ONLY=1  skip the measured rounds and only profile
 *   BENCH_SIDE_BY_SIDE=0  skip the side-by-side rounds (the app and raw loaded at the same time on
 *                      the same core; on by default)
 *   BENCH_KEEP=1       keep the seeded database and profiles in bench/.tmp/
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { seed, type Seeded } from './seed.js';
import { profileReport, compareReports } from './profile-report.js';
import {
  CORES, TMP, fmt, killChildren, log, measure as measureOn, measureTogether, median, num, pad, pinLoadGenerator, pinningText, startServer as start,
  stopServer, table, type LoadSpec, type Run, type Server, type ServerSpec,
} from './lib.js';

const DB_PATH = join(TMP, 'bench.db');
const PATH = '/api/v1/projects?page_size=50';

const SECONDS = num('BENCH_SECONDS', 10);
const WARMUP = num('BENCH_WARMUP', 3);
const ROUNDS = Math.round(num('BENCH_ROUNDS', 3));
const CONNECTIONS = Math.round(num('BENCH_CONNECTIONS', 50));
const PROJECTS = Math.round(num('BENCH_PROJECTS', 100_000));
const PROFILE = process.env.BENCH_PROFILE === '1' || process.env.BENCH_PROFILE_ONLY === '1';
const PROFILE_ONLY = process.env.BENCH_PROFILE_ONLY === '1';
const TOGETHER = process.env.BENCH_SIDE_BY_SIDE !== '0' && !PROFILE_ONLY;
const KEEP = process.env.BENCH_KEEP === '1';

const startServer = (spec: ServerSpec, opts: { profOut?: string } = {}) => start(spec, { dbPath: DB_PATH, ...opts });

/** Each connection cycles through the organizations' keys. */
const loadOf = (keys: string[]): LoadSpec => ({
  connections: CONNECTIONS, requests: keys.map((k) => ({ path: PATH, headers: { authorization: `Bearer ${k}` } })),
});
const measure = (s: Server, keys: string[], seconds = SECONDS): Promise<Run> => measureOn(s, loadOf(keys), { seconds, warmup: WARMUP });

// ---- sanity ----------------------------------------------------------------------------------

async function sanity(a: Server, b: Server, seeded: Seeded): Promise<string> {
  let identical = 0;
  for (const org of seeded.orgs) {
    const get = async (s: Server) => {
      const res = await fetch(s.url + PATH, { headers: { authorization: `Bearer ${org.key}` } });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`${s.name} answered ${res.status} for ${org.name}: ${text.slice(0, 300)}`);
      // Links carry the server's own origin (host:port): compare bodies without it.
      return { text: text.split(s.url).join('<origin>'), body: JSON.parse(text) as { count: number; next: string | null; previous: string | null; results: { id: string }[] } };
    };
    const [x, y] = [await get(a), await get(b)];
    const ids = (r: typeof x) => r.body.results.map((p) => p.id).join(',');
    if (x.body.results.length !== 50) throw new Error(`${a.name} returned ${x.body.results.length} rows, not 50`);
    if (ids(x) !== ids(y)) throw new Error(`${a.name} and ${b.name} disagree about the rows of ${org.name}`);
    if (x.body.count !== org.projects || y.body.count !== org.projects) throw new Error(`count mismatch for ${org.name}: ${x.body.count} / ${y.body.count} / seeded ${org.projects}`);
    if (!x.body.results.every((p) => p.id.startsWith('prj_')) || [...x.body.results].map((p) => p.id).sort().reverse().join(',') !== ids(x)) {
      throw new Error(`${a.name} rows are not ordered by id desc`);
    }
    if (x.text === y.text) identical++;
  }
  return `${seeded.orgs.length} keys: same 50 ids in the same order (id desc) from both; counts match the seed; `
    + `response bodies byte-identical (origin in links aside) for ${identical}/${seeded.orgs.length}`;
}

// ---- main ------------------------------------------------------------------------------------

const APP_INFO: ServerSpec = { name: 'app (LOG_LEVEL=info)', script: 'server.ts', env: { LOG_LEVEL: 'info' } };
const APP_WARN: ServerSpec = { name: 'app (LOG_LEVEL=warn)', script: 'server.ts', env: { LOG_LEVEL: 'warn' } };
const RAW: ServerSpec = { name: 'raw fastify+better-sqlite3', script: 'raw.ts', env: {} };
/** Informational: raw reading rows as the app does (arrays + object literals), to price the app's overhead alone. */
const RAW_ARRAYS: ServerSpec = { name: 'raw, rows read as arrays', script: 'raw.ts', env: { RAW_ROWS: 'arrays' } };

async function main(): Promise<void> {
  mkdirSync(TMP, { recursive: true });
  pinLoadGenerator();
  log(`Agentry list benchmark: GET ${PATH}, API key auth, ${CONNECTIONS} connections`);
  log(`node ${process.version}; ${CORES} cores; pinning: ${pinningText()}`);
  log(`runs: ${WARMUP} s warm-up + ${SECONDS} s measured, ${ROUNDS} round(s), variants alternated`);

  const seeded = await seed(DB_PATH, { projects: PROJECTS });
  log(`seeded ${fmt(seeded.projects)} projects over ${seeded.orgs.length} organizations (${seeded.orgs.map((o) => o.projects).join('/')}), one admin API key each, in ${fmt(seeded.ms / 1000, 1)} s → ${DB_PATH}`);
  const keys = seeded.orgs.map((o) => o.key);

  if (!PROFILE_ONLY) {
    const specs = [APP_INFO, APP_WARN, RAW, RAW_ARRAYS];
    const servers = new Map<ServerSpec, Server>();
    for (const spec of specs) servers.set(spec, await startServer(spec));
    log(`sanity (app vs raw): ${await sanity(servers.get(APP_INFO)!, servers.get(RAW)!, seeded)}`);
    log(`sanity (app vs raw, rows read as arrays): ${await sanity(servers.get(APP_INFO)!, servers.get(RAW_ARRAYS)!, seeded)}`);
    log();

    const runs = new Map<ServerSpec, Run[]>(specs.map((s) => [s, []]));
    const perRound: { info: number; warn: number }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate the order each round so no variant always runs first or last.
      const order = specs.map((_, i) => specs[(i + round) % specs.length]);
      const got = new Map<ServerSpec, Run>();
      for (const spec of order) {
        const r = await measure(servers.get(spec)!, keys);
        got.set(spec, r);
        runs.get(spec)!.push(r);
        const bad = r.non2xx || r.errors ? `  (non-2xx ${r.non2xx}, errors ${r.errors})` : '';
        log(`round ${round + 1}/${ROUNDS}  ${pad(spec.name, 28)} ${pad(fmt(r.rps), 7, true)} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms  server CPU ${fmt(r.cpuUs)} µs/req${bad}`);
      }
      const raw = got.get(RAW)!.rps;
      perRound.push({ info: got.get(APP_INFO)!.rps / raw, warn: got.get(APP_WARN)!.rps / raw });
    }
    for (const s of servers.values()) await stopServer(s);

    const rawMed = median(runs.get(RAW)!.map((r) => r.rps));
    const rawCpu = median(runs.get(RAW)!.map((r) => r.cpuUs));
    const rows = [['server', 'median req/s', 'p50 ms', 'p99 ms', 'req/s vs raw', 'CPU µs/req', 'raw CPU ÷ this', 'runs (req/s)']];
    for (const spec of specs) {
      const rs = runs.get(spec)!;
      const m = median(rs.map((r) => r.rps));
      const cpu = median(rs.map((r) => r.cpuUs));
      rows.push([spec.name, fmt(m), fmt(median(rs.map((r) => r.p50)), 1), fmt(median(rs.map((r) => r.p99)), 1), `${fmt(m / rawMed, 3)}×`,
        fmt(cpu), `${fmt(rawCpu / cpu, 3)}×`, rs.map((r) => fmt(r.rps)).join(' / ')]);
    }
    log();
    log(table(rows));
    log();
    const infoRatio = median(runs.get(APP_INFO)!.map((r) => r.rps)) / rawMed;
    const warnRatio = median(runs.get(APP_WARN)!.map((r) => r.rps)) / rawMed;
    log(`ratio app/raw (median req/s): ${fmt(infoRatio, 3)} with request logging (LOG_LEVEL=info), ${fmt(warnRatio, 3)} without (LOG_LEVEL=warn); target ≥ 0.90 → ${infoRatio >= 0.9 ? 'met' : 'NOT met'}`);
    log(`ratio app/raw per round (paired): info ${perRound.map((p) => fmt(p.info, 3)).join(', ')}; warn ${perRound.map((p) => fmt(p.warn, 3)).join(', ')}`);
    const cpuInfo = median(runs.get(APP_INFO)!.map((r) => r.cpuUs));
    const cpuWarn = median(runs.get(APP_WARN)!.map((r) => r.cpuUs));
    log(`server CPU per request (user+system, all threads, /proc): app ${fmt(cpuInfo)} µs with request logging, ${fmt(cpuWarn)} µs without; raw ${fmt(rawCpu)} µs`);
    log(`→ CPU-based ratio raw/app (the req/s ratio on an otherwise idle core; robust to other load on the machine): `
      + `${fmt(rawCpu / cpuInfo, 3)} with request logging, ${fmt(rawCpu / cpuWarn, 3)} without`);
    const arraysMed = median(runs.get(RAW_ARRAYS)!.map((r) => r.rps));
    const arraysCpu = median(runs.get(RAW_ARRAYS)!.map((r) => r.cpuUs));
    log(`against raw reading rows as arrays (as src/db.ts does; informational, the app's overhead alone): req/s ratio ${fmt(median(runs.get(APP_INFO)!.map((r) => r.rps)) / arraysMed, 3)}, `
      + `CPU ratio ${fmt(arraysCpu / cpuInfo, 3)} (with request logging); raw arrays ÷ raw objects, by CPU: ${fmt(rawCpu / arraysCpu, 3)}`);
    log(`request logging (one info line per request) costs ${fmt(cpuInfo - cpuWarn)} µs of CPU per request (${fmt((100 * (cpuInfo - cpuWarn)) / cpuInfo, 1)} % of the app's)`);
    if (Math.abs(infoRatio - rawCpu / cpuInfo) > 0.1) {
      log('note: the req/s and CPU ratios differ by more than 0.1: other load on the machine varied between runs; trust the CPU figures more');
    }
  }

  if (TOGETHER) {
    // The app and raw side by side: loaded at the same time on the same core, so the machine's
    // drift between sequential runs (raw's own CPU per request has moved by 25 % between runs)
    // hits both alike. Sharing the core's caches costs the bigger process more, so this ratio
    // tends to sit a little below the sequential one.
    const specs = [APP_INFO, RAW];
    const servers = [];
    for (const spec of specs) servers.push(await startServer(spec));
    const each = Math.max(1, Math.round(CONNECTIONS / specs.length));
    log();
    log(`Side by side: ${specs.map((s) => s.name).join(' and ')} loaded at the same time on the same core, ${each} connections each, ${ROUNDS} round(s) of ${SECONDS} s`);
    const ratios: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Each server gets half the core: the first warm-up is twice as long.
      const rs = await measureTogether(servers, { ...loadOf(keys), connections: each }, { seconds: SECONDS, warmup: round === 0 ? 2 * WARMUP : 1 });
      ratios.push(rs[1].cpuUs / rs[0].cpuUs);
      const bad = rs.some((r) => r.non2xx || r.errors) ? '  (non-2xx or errors!)' : '';
      log(`round ${round + 1}/${ROUNDS}  ${specs.map((sp, i) => `${sp.name} ${fmt(rs[i].rps)} req/s, ${fmt(rs[i].cpuUs)} µs/req`).join('; ')}${bad}`);
    }
    for (const srv of servers) await stopServer(srv);
    log(`→ CPU ratio raw/app, paired per round: ${ratios.map((r) => fmt(r, 3)).join(', ')} (median ${fmt(median(ratios), 3)}; target ≥ 0.90 → ${median(ratios) >= 0.9 ? 'met' : 'NOT met'})`);
  }

  if (PROFILE) {
    log();
    log(`Profiles: one ${SECONDS} s measured run each, V8 sampling profiler started after the warm-up`);
    const reports = [];
    for (const spec of [APP_INFO, RAW]) {
      const out = join(TMP, `${spec.script.replace('.ts', '')}-${spec.env.LOG_LEVEL ?? 'raw'}.cpuprofile`);
      for (const f of [out, `${out}.done`]) if (existsSync(f)) rmSync(f);
      const s = await startServer(spec, { profOut: out });
      const r = await measure(s, keys);
      const deadline = Date.now() + 30_000;
      while (!existsSync(`${out}.done`) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
      await stopServer(s);
      if (!existsSync(`${out}.done`)) throw new Error(`no profile written by ${spec.name}:\n${s.stderr()}`);
      const rep = profileReport(JSON.parse(readFileSync(out, 'utf8')), r.total);
      reports.push({ name: spec.name, rep, run: r });
      log(`  ${spec.name}: ${fmt(r.rps)} req/s while profiled; profile → ${out}`);
    }
    log();
    log(compareReports(reports[0], reports[1]));
  }

  if (!KEEP) {
    for (const suffix of ['', '-wal', '-shm']) if (existsSync(DB_PATH + suffix)) rmSync(DB_PATH + suffix);
  }
}

main().then(() => { killChildren(); process.exit(0); }, (err) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
  killChildren();
  process.exit(1);
});
