/**
 * The contacts benchmark (issue 3), run by `npm run bench` after the list benchmark: one
 * organization with a million contacts.
 *
 * 1. Seed (bench/contacts-seed.ts): a fresh SQLite file, the real migrations, 1,000,000 contacts
 *    as the service stores them (checked against a sample written through the service). With
 *    BENCH_REUSE=1 the seeded file of an earlier run is reused when its schema and seed code hash
 *    match; each run works on a copy (the import writes to it).
 * 2. Lists: GET /api/agents/ at depth 1, depth 1000 (reached by following `next` links), the last
 *    page (keyset link from the app; and the same page asked by `page=` number, which is OFFSET),
 *    and filtered by city, esp, email_validity, data_health_flags, search (two prefixes: one for
 *    each of the app's two SQLite plans): the app (bench/server.ts) vs raw better-sqlite3 behind
 *    raw Fastify (bench/contacts-raw.ts), same URL, byte-identical bodies checked first. A traced
 *    app (BENCH_SQL_TRACE) lists the SQL each request runs, cold and warm, to show how `count` is
 *    served.
 * 3. Export: GET /api/agents/download/?format=csv of all rows, app vs raw (`.iterate()` +
 *    csv-stringify over HTTP), rows/s, server CPU per row and the server's RSS growth (VmHWM after
 *    a reset of the peak, and samples of VmRSS); the bodies must be byte-identical. Then XLSX.
 * 4. Import: a generated CSV through `agentry import contacts FILE --org-id …` (src/cli/import.ts:
 *    data source, upload, run, job run inline) against the seeded database; rows/s and RSS.
 *
 * Servers and the importer are pinned to core 0, this process (autocannon, the HTTP clients and
 * the DNS server for the app's e-mail checks, bench/dns.ts) to core 1. The robust figure is CPU
 * per request from /proc (other sessions share the machine). A meter, not a gate: exits 0 unless
 * it cannot run or app and raw disagree.
 *
 * Environment:
 *   BENCH_CONTACTS       contacts to seed (default 1000000)
 *   BENCH_REUSE=1        reuse the seeded file of an earlier run when the hash matches
 *   BENCH_C_SECONDS      measured seconds per list run (default 4)
 *   BENCH_C_WARMUP       warm-up seconds before each list run (default 2)
 *   BENCH_C_CONNECTIONS  autocannon connections (default 50; 5 for the OFFSET page)
 *   BENCH_DEPTH          the deep page (default 1000)
 *   BENCH_XLSX_ROWS      about how many rows the XLSX export takes: a filter whose maintained
 *                        count is nearest (default 100000; 0 skips it; the whole set if larger)
 *   BENCH_IMPORT_ROWS    rows of the import file (default 200000; 0 skips the import)
 *   BENCH_IMPORT_TRACE=1 then import again with every SQL statement traced, and print where the
 *                        SQL time goes (bench/sql-trace-preload.ts)
 *   BENCH_SQL_DETAILS=1  print each list case's SQL statements (warm request)
 *   BENCH_C_ROUNDS       rounds of each list case and of the CSV export, app and raw alternated
 *                        (default 1); medians and the per-round ratios are reported
 *   BENCH_CASES          only these list cases, comma-separated ids: depth1, deep, last,
 *                        lastoffset, city, esp, validity, flag, search (all three) or search:<term>
 *   BENCH_SKIP=lists,export,import  skip sections
 *   BENCH_KEEP=1         keep the working copy and the import file in bench/.tmp/
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { once } from 'node:events';
import BetterSqlite3 from 'better-sqlite3';
import { CHUNK, ContactStream, streamChunk, world, zones, type World } from './contacts-data.js';
import { checkSeeded, seedContacts, seedIdentity, verifyAgainstService, type ContactsSeed } from './contacts-seed.js';
import { SEED_STREAM } from './contacts-rows.js';
import { startDns } from './dns.js';
import {
  CORES, ROOT, TMP, cpuSeconds, fmt, log, mb, measure, median, memory, num, pinLoadGenerator, pinnedCommand, pinningText,
  rssSampler, serverEnv, startServer, stopServer, table, track, type Run, type Server, type ServerSpec,
} from './lib.js';
import type { TracedQuery } from './sql-trace.js';

const N = Math.round(num('BENCH_CONTACTS', 1_000_000));
const REUSE = process.env.BENCH_REUSE === '1';
const SECONDS = num('BENCH_C_SECONDS', 4);
const WARMUP = num('BENCH_C_WARMUP', 2);
const CONNECTIONS = Math.round(num('BENCH_C_CONNECTIONS', 50));
const DEPTH = Math.round(num('BENCH_DEPTH', 1000));
const XLSX_ROWS = process.env.BENCH_XLSX_ROWS === '0' ? 0 : Math.round(num('BENCH_XLSX_ROWS', 100_000));
const IMPORT_ROWS = process.env.BENCH_IMPORT_ROWS === '0' ? 0 : Math.round(num('BENCH_IMPORT_ROWS', 200_000));
const SKIP = new Set((process.env.BENCH_SKIP ?? '').split(',').map((s) => s.trim()).filter(Boolean));
const KEEP = process.env.BENCH_KEEP === '1';
const ROUNDS = Math.round(num('BENCH_C_ROUNDS', 1));
const CASES = (process.env.BENCH_CASES ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const wanted = (id: string) => !CASES.length || CASES.some((c) => id === c || id.startsWith(`${c}:`));
const PAGE = 50;

const WORK = join(TMP, 'contacts-work.db');
const sec = (ms: number) => `${fmt(ms / 1000, 1)} s`;

// ---- HTTP helpers ------------------------------------------------------------------------------

async function getJson(url: string, key: string | null): Promise<{ status: number; text: string; body: ListBody }> {
  const res = await fetch(url, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const text = await res.text();
  return { status: res.status, text, body: (res.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) as ListBody : (null as unknown as ListBody) };
}
interface ListBody { count: number; next: string | null; previous: string | null; results: { id: string }[] }
const relative = (link: string) => { const u = new URL(link); return u.pathname + u.search; };

interface Download { status: number; bytes: number; lines: number; sha: string; ms: number; cpuS: number; rss: ReturnType<ReturnType<typeof rssSampler>['stop']>; tail: Buffer }

/** Streams a download to nowhere, counting bytes and newlines and hashing the body; the server's CPU and RSS around it. */
function download(s: Server, path: string, key: string): Promise<Download> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, s.url);
    const rss = rssSampler(s.child.pid);
    const cpu0 = cpuSeconds(s.child.pid);
    const t0 = performance.now();
    const req = request(url, { headers: { authorization: `Bearer ${key}` } }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      let lines = 0;
      let tail = Buffer.alloc(0);
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        hash.update(chunk);
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
        tail = Buffer.concat([tail, chunk.subarray(Math.max(0, chunk.length - 64))]).subarray(-64);
      });
      res.on('end', () => {
        const ms = performance.now() - t0;
        resolve({ status: res.statusCode ?? 0, bytes, lines, sha: hash.digest('hex'), ms, cpuS: cpuSeconds(s.child.pid) - cpu0, rss: rss.stop(), tail });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

// ---- scenarios ---------------------------------------------------------------------------------

interface Scenario { id: string; label: string; path: string; connections: number; expectRows: number; check?: (b: ListBody) => string | null }

async function buildScenarios(app: Server, key: string, seedFile: string, org: string): Promise<{ list: Scenario[]; notes: string[] }> {
  const db = new BetterSqlite3(seedFile, { readonly: true });
  const notes: string[] = [];
  try {
    const facet = (f: string, v: string) => Number(db.prepare('select count from contact_facets where organization_id = ? and facet = ? and value = ?').pluck().get(org, f, v) ?? 0);
    const total = facet('total', '');
    const base = `/api/agents/?page_size=${PAGE}`;
    const idAt = (offset: number) => db.prepare('select id from contacts where organization_id = ? order by id desc limit 1 offset ?').pluck().get(org, offset) as string;

    // Depth DEPTH: follow `next` links from page 1, as a client would.
    const t0 = performance.now();
    let url = app.url + base;
    for (let page = 1; page < DEPTH; page++) {
      const r = await getJson(url, key);
      if (r.status !== 200 || !r.body.next) throw new Error(`walking next links: page ${page} answered ${r.status} ${r.text.slice(0, 200)}`);
      url = r.body.next;
    }
    const deep = relative(url);
    notes.push(`page ${DEPTH}: reached by following ${DEPTH - 1} \`next\` links from page 1 (${sec(performance.now() - t0)}; pages 2–10 are page links, then keyset cursors): ${deep.slice(0, 90)}…`);

    // Last page: its keyset link is the `next` link of the page before, asked for once by number.
    const lastPage = Math.ceil(total / PAGE);
    const t1 = performance.now();
    const before = await getJson(`${app.url}${base}&page=${lastPage - 1}`, key);
    const beforeMs = performance.now() - t1;
    if (before.status !== 200 || !before.body.next) throw new Error(`page ${lastPage - 1} answered ${before.status} ${before.text.slice(0, 200)}`);
    const last = relative(before.body.next);
    notes.push(`last page (${fmt(lastPage)}): its keyset link is the \`next\` link of page ${fmt(lastPage - 1)}, asked for once by number (an OFFSET read, ${fmt(beforeMs)} ms)`);
    const lastRows = total - PAGE * (lastPage - 1);

    const city = 'Chicago';
    const firstIdCheck = (offset: number) => {
      const want = idAt(offset);
      return (b: ListBody) => (b.results[0]?.id === want ? null : `first id is not the ${fmt(offset + 1)}th newest`);
    };
    const lastFirst = idAt(PAGE * (lastPage - 1));
    const list: Scenario[] = [
      { id: 'depth1', label: 'depth 1', path: base, connections: CONNECTIONS, expectRows: PAGE, check: firstIdCheck(0) },
      { id: 'deep', label: `depth ${DEPTH} (cursor)`, path: deep, connections: CONNECTIONS, expectRows: PAGE, check: firstIdCheck((DEPTH - 1) * PAGE) },
      { id: 'last', label: `last page ${fmt(lastPage)} (cursor)`, path: last, connections: CONNECTIONS, expectRows: lastRows, check: (b) => (b.next === null && b.results[0]?.id === lastFirst ? null : 'not the last page') },
      { id: 'lastoffset', label: `last page by number (OFFSET ${fmt(PAGE * (lastPage - 1))})`, path: `${base}&page=${lastPage}`, connections: Math.min(CONNECTIONS, 5), expectRows: lastRows },
      { id: 'city', label: `city=${city} (${fmt(facet('city', city))})`, path: `${base}&city=${encodeURIComponent(city)}`, connections: CONNECTIONS, expectRows: PAGE },
      { id: 'esp', label: `esp=yahoo (${fmt(facet('esp', 'yahoo'))})`, path: `${base}&esp=yahoo`, connections: CONNECTIONS, expectRows: PAGE },
      { id: 'validity', label: `email_validity=risky (${fmt(facet('email_validity', 'risky'))})`, path: `${base}&email_validity=risky`, connections: CONNECTIONS, expectRows: PAGE },
      { id: 'flag', label: `data_health_flags=bounced (${fmt(facet('data_health_flag', 'bounced'))})`, path: `${base}&data_health_flags=bounced`, connections: CONNECTIONS, expectRows: PAGE },
    ];
    // Search prefixes: few matches and some thousands (the app reads the ids of the two prefix
    // ranges, then the page), and many (more than the app's probe of 20,000: it scans in id order
    // and stops after a page).
    const rangeCount = (t: string) => (db.prepare("select count(*) from contacts where organization_id = ? and ((name_key >= ? and name_key < ?) or (email_normalized >= ? and email_normalized < ?))")
      .pluck().get(org, t, `${t}\u{10FFFF}`, t, `${t}\u{10FFFF}`) as number);
    for (const term of ['maria gar', 'maria', 'ma']) {
      const n = rangeCount(term);
      list.push({ id: `search:${term}`, label: `search=${term} (${fmt(n)})`, path: `${base}&search=${encodeURIComponent(term)}`, connections: CONNECTIONS, expectRows: Math.min(PAGE, n) });
    }
    return { list: list.filter((sc) => wanted(sc.id)), notes };
  } finally {
    db.close();
  }
}

/** Both servers answer 200 with the same body (origin in links aside), the expected rows, newest first. */
async function sanity(app: Server, raw: Server, key: string, sc: Scenario): Promise<void> {
  const [a, b] = [await getJson(app.url + sc.path, key), await getJson(raw.url + sc.path, key)];
  if (a.status !== 200 || b.status !== 200) throw new Error(`${sc.label}: app ${a.status}, raw ${b.status}: ${a.text.slice(0, 300)} / ${b.text.slice(0, 300)}`);
  const ta = a.text.split(app.url).join('<origin>');
  const tb = b.text.split(raw.url).join('<origin>');
  if (ta !== tb) {
    let i = 0;
    while (i < ta.length && ta[i] === tb[i]) i++;
    throw new Error(`${sc.label}: app and raw bodies differ at ${i}: app …${ta.slice(Math.max(0, i - 80), i + 120)}… raw …${tb.slice(Math.max(0, i - 80), i + 120)}…`);
  }
  const ids = a.body.results.map((r) => r.id);
  if (ids.length !== sc.expectRows) throw new Error(`${sc.label}: ${ids.length} rows, expected ${sc.expectRows}`);
  if ([...ids].sort().reverse().join() !== ids.join()) throw new Error(`${sc.label}: rows not newest first`);
  const why = sc.check?.(a.body);
  if (why) throw new Error(`${sc.label}: ${why}`);
}

// ---- SQL audit -----------------------------------------------------------------------------------

function describeQueries(qs: TracedQuery[]): { n: number; ms: number; count: string; list: string } {
  const count: string[] = [];
  for (const q of qs) {
    const s = q.sql.toLowerCase();
    if (s.includes('contact_facets')) count.push(`maintained count (contact_facets, ${fmt(q.ms, 2)} ms)`);
    else if (/count\(\*\)/.test(s) && s.includes('contacts')) {
      const bounded = /limit \?\)|limit \d+\)/.test(s) || /limit \? \) as "p"|as "p"/.test(s);
      count.push(bounded ? `search probe: COUNT over ≤ 20,000 index entries (${fmt(q.ms, 2)} ms)` : `COUNT(*) of the filtered rows (${fmt(q.ms, 2)} ms)`);
    }
  }
  const short = (s: string) => s.replace(/\s+/g, ' ').replace(/"/g, '').slice(0, 60);
  return {
    n: qs.length, ms: qs.reduce((t, q) => t + q.ms, 0), count: count.join('; ') || '(count from the cache)',
    list: qs.map((q) => `${short(q.sql)}… ${q.rows >= 0 ? `${q.rows} rows ` : ''}${fmt(q.ms, 2)} ms`).join(' | '),
  };
}

// ---- import file ---------------------------------------------------------------------------------

/** A CSV of `rows` contacts: ~5 % existing e-mails of the seeded organization (updates), the rest new. */
function writeImportFile(w: World, file: string, rows: number): { updates: number; noEmail: number } {
  const out: string[] = ['Name,Email,Phone,Company,Title,City,State,Country,Tags,Source'];
  const q = (v: string | null) => (v === null ? '' : /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  // Existing addresses: the seed's first chunks, regenerated (the generator is deterministic).
  const existing: string[] = [];
  for (let c = 0; existing.length < rows * 0.05 && c * CHUNK < N; c++) {
    const s = streamChunk(w, SEED_STREAM, N, c);
    for (let i = 0; i < Math.min(CHUNK, N - c * CHUNK) && existing.length < rows * 0.05; i++) {
      const g = s.next(i);
      if (g.input.email && g.domain && i % 3 === 0) existing.push(g.input.email);
    }
  }
  const fresh = new ContactStream(w, 77, rows, 50_000_000);
  let updates = 0;
  let noEmail = 0;
  let e = 0;
  for (let i = 0; i < rows; i++) {
    const g = fresh.next(i);
    let email = g.input.email;
    if (i % 20 === 10 && e < existing.length) { email = existing[e++]; updates++; }
    if (!email) noEmail++;
    const x = g.input;
    out.push([x.name, email, x.phone, x.company, x.title, x.city, x.state, x.country, x.tags.join(', '), x.source].map(q).join(','));
  }
  writeFileSync(file, out.join('\n') + '\n');
  return { updates, noEmail };
}

interface ImportResult { ms: number; line: string; base: number; peak: number; rowsPerS: number | null }

async function runImport(file: string, org: string, dnsServer: string, trace = false): Promise<ImportResult & { stderr: string }> {
  const preload = trace ? ['--import', join(ROOT, 'bench/sql-trace-preload.ts')] : [];
  const [cmd, args] = pinnedCommand(['--import', 'tsx', ...preload, join(ROOT, 'src/main.ts'), 'import', 'contacts', file, '--org-id', org]);
  const t0 = performance.now();
  const child = track(spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, ...serverEnv(WORK), DNS_SERVERS: dnsServer, LOG_LEVEL: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  let out = '';
  let err = '';
  let base = NaN;
  let peak = 0;
  // `pinnedCommand` runs `taskset … node`: taskset execs node, so the pid is the importer's.
  const timer = setInterval(() => { const m = memory(child.pid); if (m.hwm > peak) peak = m.hwm; if (m.rss > peak) peak = m.rss; }, 100);
  child.stdout!.on('data', (d: Buffer) => {
    const s = d.toString();
    out += s;
    if (Number.isNaN(base) && s.includes('progress:')) base = memory(child.pid).rss;
  });
  child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-8000); });
  const [code] = (await once(child, 'exit')) as [number | null];
  clearInterval(timer);
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`import exited with ${code}:\n${err}\n${out.slice(-2000)}`);
  const line = out.split('\n').find((l) => l.startsWith('Imported')) ?? out.trim().split('\n').pop() ?? '';
  const m = /\(([\d.]+) rows\/s\)/.exec(line);
  return { ms, line, base, peak, rowsPerS: m ? Number(m[1]) : null, stderr: err };
}

/**
 * The run's working copy of the seeded file, flushed to disk: otherwise the first write that
 * syncs (the first commit that creates the WAL) pays for writing back the whole copy (~1 s).
 */
function copyWork(cache: string): void {
  for (const suffix of ['', '-wal', '-shm']) if (existsSync(WORK + suffix)) rmSync(WORK + suffix);
  copyFileSync(cache, WORK);
  const fd = openSync(WORK, 'r+');
  fsyncSync(fd);
  closeSync(fd);
}

// ---- main ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  mkdirSync(TMP, { recursive: true });
  log();
  log(`Agentry contacts benchmark (issue 3): ${fmt(N)} contacts in one organization`);
  log(`node ${process.version}; ${CORES} cores; pinning: ${pinningText()}`);
  const w = world();
  const dns = await startDns(zones(w));
  const summary: string[] = [];

  // 1. Seed ------------------------------------------------------------------------------------
  const identity = await seedIdentity(N);
  const cache = join(TMP, `contacts-${identity}.db`);
  const metaFile = `${cache}.json`;
  let seeded: ContactsSeed;
  const reused = REUSE && existsSync(cache) && existsSync(metaFile);
  if (reused) {
    seeded = JSON.parse(readFileSync(metaFile, 'utf8')) as ContactsSeed;
    log(`seed: reusing ${cache} (schema and seed code hash ${identity}; seeded earlier in ${sec(seeded.ms.total)})`);
  } else {
    log(`service check: ${await verifyAgainstService(w, dns.server)}`);
    // One cache at a time: seeded files of other schemas or seed code go (each is over a GB).
    for (const f of readdirSync(TMP)) if (/^contacts-[0-9a-f]{12}\.db/.test(f)) rmSync(join(TMP, f));
    process.stdout.write('seeding: ');
    let shown = 0;
    seeded = await seedContacts(cache, N, { onProgress: (d) => { if (d - shown >= N / 10 || d === N) { process.stdout.write(`${fmt((100 * d) / N)}% `); shown = d; } } });
    log();
    writeFileSync(metaFile, JSON.stringify(seeded, null, 1));
    log(`seeded ${fmt(N)} contacts in ${sec(seeded.ms.total)}: schema ${sec(seeded.ms.schema)}, rows ${sec(seeded.ms.rows)} (${seeded.workers} generator threads + 1 writer), `
      + `flag rows and facets ${sec(seeded.ms.flags)}, indexes ${sec(seeded.ms.indexes)}; ${mb(seeded.bytes)} → ${cache}`);
  }
  log(`seed check: ${checkSeeded(cache, seeded.org.id)}`);
  const f = seeded.facets;
  log(`skew: valid ${fmt(f['email_validity=valid'] ?? 0)}, risky ${fmt(f['email_validity=risky'] ?? 0)}, invalid ${fmt(f['email_validity=invalid'] ?? 0)}, unknown ${fmt(f['email_validity=unknown'] ?? 0)}; `
    + `google ${fmt(f['esg=google'] ?? 0)}, microsoft ${fmt(f['esg=microsoft'] ?? 0)}, yahoo ${fmt(f['esg=yahoo'] ?? 0)}, security gateways ${fmt(f['esg=security_gateway'] ?? 0)}; `
    + `${Object.keys(f).filter((k) => k.startsWith('city=')).length} cities; flag rows ${fmt(seeded.flagRows)}`);
  summary.push(`seed: ${fmt(N)} contacts in ${sec(seeded.ms.total)}${reused ? ' (in an earlier run: reused)' : ''}`);
  const t0 = performance.now();
  copyWork(cache);
  log(`working copy ${WORK} (${sec(performance.now() - t0)})`);
  const key = seeded.org.key;
  const org = seeded.org.id;

  pinLoadGenerator();
  const appEnv = { LOG_LEVEL: 'info', DNS_SERVERS: dns.server };
  const APP: ServerSpec = { name: 'app', script: 'server.ts', env: appEnv };
  const RAW: ServerSpec = { name: 'raw', script: 'contacts-raw.ts', env: {} };

  // 2. Lists -----------------------------------------------------------------------------------
  if (!SKIP.has('lists')) {
    log();
    log(`Lists: GET /api/agents/ with an API key, ${PAGE} per page; ${WARMUP} s warm-up + ${SECONDS} s measured per server and case, app and raw alternated`);
    const app = await startServer(APP, { dbPath: WORK });
    const raw = await startServer(RAW, { dbPath: WORK });
    const { list, notes } = await buildScenarios(app, key, WORK, org);
    for (const n of notes) log(`  ${n}`);
    for (const sc of list) await sanity(app, raw, key, sc);
    log(`  sanity: for all ${list.length} cases app and raw answer 200 with byte-identical bodies (origin in links aside), the expected rows newest first`);

    // How each request gets its count: a traced app, each case asked twice (cold, then warm).
    const traced = await startServer({ name: 'app (SQL trace)', script: 'server.ts', env: { ...appEnv, BENCH_SQL_TRACE: '1' } }, { dbPath: WORK });
    const auditRows = [['case', 'cold: statements', 'SQL ms', 'how count is served (cold)', 'warm: statements', 'SQL ms', 'warm count']];
    const details: string[] = [];
    // (The trace route is asked without a key, so that its own request adds no query.)
    const takeTrace = async () => describeQueries((await getJson(`${traced.url}/__bench/sql`, null)).body as unknown as TracedQuery[]);
    await takeTrace();
    for (const sc of list) {
      await getJson(traced.url + sc.path, key);
      const cold = await takeTrace();
      await getJson(traced.url + sc.path, key);
      const warm = await takeTrace();
      auditRows.push([sc.label, String(cold.n), fmt(cold.ms, 2), cold.count, String(warm.n), fmt(warm.ms, 2), warm.count]);
      details.push(`  ${sc.label} (warm): ${warm.list}`);
    }
    await stopServer(traced);
    log();
    log('SQL per request (traced app; first request of each case with an empty count cache, then again):');
    log(table(auditRows));
    if (process.env.BENCH_SQL_DETAILS === '1') for (const d of details) log(d);

    const rows = [['case', 'app req/s', 'raw req/s', 'req/s ratio', 'app CPU µs/req', 'raw CPU µs/req', 'CPU ratio raw/app', 'per-round CPU ratios', 'app p50/p99 ms', 'raw p50/p99 ms', 'target ≥ 0.5']];
    let k = 0;
    for (const sc of list) {
      const load = { connections: sc.connections, requests: [{ path: sc.path, headers: { authorization: `Bearer ${key}` } }] };
      const runs = { app: [] as Run[], raw: [] as Run[] };
      for (let round = 0; round < ROUNDS; round++) {
        for (const s of k++ % 2 ? [raw, app] : [app, raw]) runs[s.name as 'app' | 'raw'].push(await measure(s, load, { seconds: SECONDS, warmup: WARMUP }));
      }
      // Medians over the rounds (one round: that run).
      const mid = (xs: Run[], f: (r: Run) => number) => median(xs.map(f));
      const a = { rps: mid(runs.app, (x) => x.rps), cpuUs: mid(runs.app, (x) => x.cpuUs), p50: mid(runs.app, (x) => x.p50), p99: mid(runs.app, (x) => x.p99) };
      const r = { rps: mid(runs.raw, (x) => x.rps), cpuUs: mid(runs.raw, (x) => x.cpuUs), p50: mid(runs.raw, (x) => x.p50), p99: mid(runs.raw, (x) => x.p99) };
      const errs = (xs: Run[]) => xs.reduce((t, x) => t + x.non2xx + x.errors, 0);
      const bad = errs(runs.app) || errs(runs.raw) ? ` (non-2xx/errors: app ${errs(runs.app)}, raw ${errs(runs.raw)})` : '';
      const cpuRatio = r.cpuUs / a.cpuUs;
      const perRound = runs.app.map((x, i) => fmt(runs.raw[i].cpuUs / x.cpuUs, 2)).join(', ');
      rows.push([sc.label + bad, fmt(a.rps), fmt(r.rps), `${fmt(a.rps / r.rps, 2)}×`, fmt(a.cpuUs), fmt(r.cpuUs), `${fmt(cpuRatio, 2)}×`, perRound,
        `${fmt(a.p50)} / ${fmt(a.p99)}`, `${fmt(r.p50)} / ${fmt(r.p99)}`, cpuRatio >= 0.5 ? 'met' : 'NOT met']);
      log(`  ${sc.label}: app ${fmt(a.rps)} req/s, ${fmt(a.cpuUs)} µs CPU/req; raw ${fmt(r.rps)} req/s, ${fmt(r.cpuUs)} µs CPU/req → CPU ratio ${fmt(cpuRatio, 2)} (rounds: ${perRound})${bad}`);
      summary.push(`list ${sc.label}: CPU ratio raw/app ${fmt(cpuRatio, 2)} (${cpuRatio >= 0.5 ? 'met' : 'NOT met'}; rounds ${perRound}), req/s ratio ${fmt(a.rps / r.rps, 2)}; app ${fmt(a.cpuUs)} µs/req, p50 ${fmt(a.p50)} ms, p99 ${fmt(a.p99)} ms`);
    }
    await stopServer(app);
    await stopServer(raw);
    log();
    log(table(rows));
    log(`(connections: 50, 5 for the OFFSET page; ${ROUNDS} round${ROUNDS > 1 ? 's' : ''}, medians; the CPU ratio is the robust figure: the req/s ratio moves with the other load on the machine)`);
  }

  // 3. Export ----------------------------------------------------------------------------------
  if (!SKIP.has('export')) {
    log();
    log(`Export: GET /api/agents/download/?format=csv of all ${fmt(N)} rows, streamed to the bench (hashed, counted, discarded)`);
    const app = await startServer(APP, { dbPath: WORK });
    const raw = await startServer(RAW, { dbPath: WORK });
    // Not a target: raw code writing the way the app now writes (hand-formatted 500-record chunks,
    // no csv-stringify), to show what the app's own layers cost over it.
    const rawc = await startServer({ name: 'raw, chunks', script: 'contacts-raw.ts', env: { RAW_CSV_WRITER: 'chunks' } }, { dbPath: WORK });
    const path = '/api/agents/download/?format=csv';
    // A short export from the app first, so that it does not pay first-use costs in the measured one.
    await download(app, `${path}&city=Boston`, key);
    const servers = [app, raw, rawc];
    const got = new Map<Server, Download[]>(servers.map((s) => [s, []]));
    for (let round = 0; round < ROUNDS; round++) {
      // Rotated each round; the app first in the first round (its RSS baseline is a fresh process's).
      for (let i = 0; i < servers.length; i++) {
        const s = servers[(i + round) % servers.length];
        const d = await download(s, path, key);
        if (d.status !== 200) throw new Error(`${s.name} export answered ${d.status}`);
        if (d.lines !== N + 1) throw new Error(`${s.name} export has ${d.lines} lines for ${N} rows + header`);
        got.get(s)!.push(d);
      }
    }
    const all = [...got.values()].flat();
    const shas = new Set(all.map((d) => d.sha));
    if (shas.size !== 1) throw new Error(`the CSV exports differ (sha256 ${[...shas].join(' / ')}; bytes ${all.map((d) => d.bytes).join(' / ')})`);
    const rate = (d: Download) => N / (d.ms / 1000);
    const cpuPerRow = (d: Download) => (d.cpuS * 1e6) / N;
    const exportRows = [['server', 'round', 'rows/s', 'seconds', 'MB sent', 'CPU µs/row', 'RSS before', 'peak RSS', 'RSS growth', 'RSS after']];
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of servers) {
        const d = got.get(s)![round];
        exportRows.push([s.name, String(round + 1), fmt(rate(d)), fmt(d.ms / 1000, 1), fmt(d.bytes / 1048576, 0), fmt(cpuPerRow(d), 2), mb(d.rss.base), mb(d.rss.peak), mb(d.rss.growth), mb(d.rss.end)]);
      }
    }
    log(table(exportRows, 2));
    const A = got.get(app)!;
    const vs = (other: Download[]) => ({
      ratio: median(A.map(rate)) / median(other.map(rate)),
      cpuRatio: median(other.map(cpuPerRow)) / median(A.map(cpuPerRow)),
      perRound: A.map((d, i) => `${fmt(rate(d) / rate(other[i]), 2)}/${fmt(cpuPerRow(other[i]) / cpuPerRow(d), 2)}`).join(', '),
    });
    const { ratio, cpuRatio, perRound } = vs(got.get(raw)!);
    const same = vs(got.get(rawc)!);
    const growth = Math.max(...A.map((d) => d.rss.growth));
    log(`  bodies byte-identical (sha256 ${A[0].sha.slice(0, 16)}…, ${fmt(N)} rows + header, ${all.length} downloads); peak RSS ${A[0].rss.exactPeak ? 'from VmHWM after a reset of the peak (exact)' : 'from VmRSS samples every 50 ms'}`);
    log(`  app/raw rows/s (medians of ${ROUNDS}): ${fmt(ratio, 2)}× (target ≥ 0.7 → ${ratio >= 0.7 ? 'met' : 'NOT met'}); by CPU per row (raw/app): ${fmt(cpuRatio, 2)}× (${cpuRatio >= 0.7 ? 'met' : 'NOT met'}); `
      + `per round rows/s / CPU: ${perRound}; app RSS growth, largest of the rounds: ${mb(growth)} (target < 64 MB → ${growth < 64 * 1048576 ? 'met' : 'NOT met'})`);
    log(`  app/"raw, chunks" (same way of writing, no target): rows/s ${fmt(same.ratio, 2)}×, CPU ${fmt(same.cpuRatio, 2)}×; per round ${same.perRound}`);
    summary.push(`CSV export: app ${fmt(median(A.map(rate)))} rows/s, raw ${fmt(median(got.get(raw)!.map(rate)))} rows/s → ${fmt(ratio, 2)}× (${ratio >= 0.7 ? 'met' : 'NOT met'}); CPU/row ratio ${fmt(cpuRatio, 2)}× (${cpuRatio >= 0.7 ? 'met' : 'NOT met'}); rounds ${perRound}; app RSS growth ${mb(growth)} (${growth < 64 * 1048576 ? 'met' : 'NOT met'}); vs "raw, chunks" ${fmt(same.ratio, 2)}× / CPU ${fmt(same.cpuRatio, 2)}×`);
    await stopServer(rawc);
    await stopServer(raw);

    if (XLSX_ROWS) {
      // The whole set, or a filter whose maintained count is nearest the wanted size.
      let xpath = '/api/agents/download/?format=xlsx';
      let xrows = N;
      let what = 'all rows';
      if (XLSX_ROWS < N) {
        const db = new BetterSqlite3(WORK, { readonly: true });
        const best = db.prepare("select facet, value, count from contact_facets where organization_id = ? and facet in ('city', 'esp', 'email_validity') order by abs(count - ?) limit 1").get(org, XLSX_ROWS) as { facet: string; value: string; count: number };
        db.close();
        xpath += `&${best.facet}=${encodeURIComponent(best.value)}`;
        xrows = best.count;
        what = `${best.facet}=${best.value}`;
      }
      const x = await download(app, xpath, key);
      const eocd = x.tail.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
      if (x.status !== 200 || eocd === -1) throw new Error(`XLSX export answered ${x.status} or is not a complete zip`);
      log(`  XLSX (${what}, ${fmt(xrows)} rows): ${fmt(xrows / (x.ms / 1000))} rows/s, ${fmt(x.ms / 1000, 1)} s, ${mb(x.bytes)}, CPU ${fmt((x.cpuS * 1e6) / xrows, 1)} µs/row, RSS growth ${mb(x.rss.growth)} (peak ${mb(x.rss.peak)}); a complete zip`);
      summary.push(`XLSX export (${what}, ${fmt(xrows)} rows): ${fmt(xrows / (x.ms / 1000))} rows/s, RSS growth ${mb(x.rss.growth)}`);
    }
    await stopServer(app);
  }

  // 4. Import ----------------------------------------------------------------------------------
  if (!SKIP.has('import') && IMPORT_ROWS) {
    log();
    const file = join(TMP, 'contacts-import.csv');
    const made = writeImportFile(w, file, IMPORT_ROWS);
    log(`Import: ${fmt(IMPORT_ROWS)}-row CSV (${mb(statSync(file).size)}; ${fmt(made.updates)} e-mails already in the organization, ${fmt(made.noEmail)} rows without an e-mail) `
      + `through \`agentry import contacts FILE --org-id …\` (node --import tsx src/main.ts, what \`npm run cli\` runs), DNS from the bench server`);
    const before = new BetterSqlite3(WORK, { readonly: true });
    const count0 = before.prepare('select count(*) from contacts where organization_id = ?').pluck().get(org) as number;
    before.close();
    const r = await runImport(file, org, dns.server);
    const after = new BetterSqlite3(WORK, { readonly: true });
    const count1 = after.prepare('select count(*) from contacts where organization_id = ?').pluck().get(org) as number;
    const facetTotal = after.prepare("select count from contact_facets where organization_id = ? and facet = 'total' and value = ''").pluck().get(org) as number;
    after.close();
    log(`  ${r.line}`);
    log(`  wall time ${sec(r.ms)} including start-up → ${fmt(IMPORT_ROWS / (r.ms / 1000))} rows/s end to end; importer RSS ${mb(r.base)} when the run started, peak ${mb(r.peak)} → growth ${mb(r.peak - r.base)}`);
    log(`  contacts ${fmt(count0)} → ${fmt(count1)}; maintained total ${fmt(facetTotal)} (${facetTotal === count1 ? 'agrees' : 'DISAGREES'})`);
    if (process.env.BENCH_IMPORT_TRACE === '1') {
      // Again with every SQL statement traced (slower; not the measured run), into a fresh copy.
      copyWork(cache);
      const t = await runImport(file, org, dns.server, true);
      log(`  traced import (${t.line.replace(/^.*errors /, '')}):`);
      for (const l of t.stderr.slice(t.stderr.indexOf('SQL time')).trim().split('\n')) log(`    ${l}`);
    }
    summary.push(`import ${fmt(IMPORT_ROWS)} rows: ${r.rowsPerS === null ? '?' : fmt(r.rowsPerS)} rows/s (run), ${fmt(IMPORT_ROWS / (r.ms / 1000))} rows/s end to end; RSS growth ${mb(r.peak - r.base)} (peak ${mb(r.peak)})`);
    if (!KEEP) rmSync(file);
  }

  await dns.close();
  log();
  log('Summary (issue 3):');
  for (const s of summary) log(`  ${s}`);
  if (!KEEP) for (const suffix of ['', '-wal', '-shm']) if (existsSync(WORK + suffix)) rmSync(WORK + suffix);
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`contacts bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
