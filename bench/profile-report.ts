/**
 * Summarizes a V8 CPU profile (.cpuprofile) of a bench server: self time by module, the top
 * self-time functions, and time on the stack for the pieces of the request path, all in
 * microseconds of CPU per request (profile time / requests completed while profiling).
 *
 * Usage on its own: `npx tsx bench/profile-report.ts <file.cpuprofile> <requests> [<raw.cpuprofile> <requests>]`.
 */
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[]; hitCount?: number }
export interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

export interface Frame { fn: string; module: string; file: string; line: number }

/** The module a frame belongs to: a package name, a repo-relative file, `node core`, or a V8 pseudo-frame. */
export function moduleOf(cf: CallFrame): { module: string; file: string } {
  const url = cf.url;
  if (!url) {
    if (/^\(.*\)$/.test(cf.functionName)) return { module: cf.functionName, file: '' };
    return { module: '(native / V8 builtins)', file: '' };
  }
  if (url.startsWith('node:')) return { module: 'node core', file: url };
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = path.slice(nm + '/node_modules/'.length).split('/');
    const pkg = rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
    return { module: pkg, file: `${pkg}/${rest.slice(rest[0].startsWith('@') ? 2 : 1).join('/')}` };
  }
  const rel = relative(ROOT, path);
  return { module: rel.startsWith('..') ? path : rel, file: rel };
}

/** 1-based lines of src/app.ts where each hook's function starts (read from the source, so edits to app.ts do not break the report). */
function appHookLines(): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    const lines = readFileSync(resolve(ROOT, 'src/app.ts'), 'utf8').split('\n');
    lines.forEach((l, i) => {
      const m = /addHook\('(onRequest|onSend|onResponse)'/.exec(l);
      if (m && !(m[1] in out)) out[m[1]] = i + 1;
      if (/setErrorHandler\(/.test(l) && !('errorHandler' in out)) out.errorHandler = i + 1;
    });
  } catch { /* no source: hooks are not told apart */ }
  return out;
}
const HOOK = appHookLines();
const isHook = (f: Frame, name: string) => f.file === 'src/app.ts' && HOOK[name] !== undefined && f.line === HOOK[name];
const LOGGING = new Set(['pino', 'sonic-boom', 'pino-std-serializers', 'quick-format-unescaped', 'fast-redact', '@pinojs/redact', 'thread-stream', 'safe-stable-stringify', 'on-exit-leak-free', 'atomic-sleep']);
const FASTIFY = new Set(['fastify', 'find-my-way', 'fast-querystring', 'avvio', 'light-my-request', 'fast-json-stringify', '@fastify/error', 'abstract-logging', 'rfdc', 'proxy-addr', 'toad-cache', 'fast-decode-uri-component', 'process-warning', 'content-type', 'ipaddr.js', 'forwarded']);
const SQLITE_CALLS = /^(all|get|run|iterate)$/;
const isNative = (f: Frame) => f.module === '(native / V8 builtins)';

/**
 * Pieces of the request path, each a test on one frame; a sample counts toward a piece when any
 * frame of its stack passes the test ("time on the stack", so pieces nest and may overlap).
 * After an `await`, V8 shows the resumed async function on a fresh stack under the microtask
 * queue, so an async function's continuations count for it but not for its callers.
 */
export const PIECES: { label: string; test: (f: Frame) => boolean }[] = [
  { label: 'request id (genReqId → newId)', test: (f) => f.module === 'fastify' && f.fn === 'getGenReqId' },
  { label: 'onRequest hook (src/app.ts: ctx + resolveActor)', test: (f) => isHook(f, 'onRequest') },
  { label: 'resolveActor/resolveApiKey (src/auth.ts, incl. its query)', test: (f) => f.module === 'src/auth.ts' && /resolveActor|resolveApiKey|permissionsOf/.test(f.fn) },
  { label: 'raw: authenticate (bench/raw.ts, incl. its query)', test: (f) => f.module === 'bench/raw.ts' && f.fn === 'authenticate' },
  { label: 'rate limit (@fastify/rate-limit)', test: (f) => f.module === '@fastify/rate-limit' },
  { label: 'onSend hook (src/app.ts: x-ratelimit-reset)', test: (f) => isHook(f, 'onSend') },
  { label: 'onResponse hook (src/app.ts: metrics + log line)', test: (f) => isHook(f, 'onResponse') },
  { label: 'metrics (prom-client)', test: (f) => f.module === 'prom-client' || f.module === 'bintrees' },
  { label: 'logging (pino: child loggers, log line)', test: (f) => LOGGING.has(f.module) },
  { label: 'REST handler (src/http/rest.ts, all it calls)', test: (f) => f.module === 'src/http/rest.ts' },
  { label: 'tRPC procedure call + middlewares (@trpc/server)', test: (f) => f.module === '@trpc/server' },
  { label: 'zod (input + output validation)', test: (f) => f.module === 'zod' },
  { label: 'listProjects + paginate (services, pagination)', test: (f) => f.module === 'src/services/projects.ts' || f.module === 'src/pagination.ts' },
  { label: 'Kysely (builder, compile, driver; incl. SQLite calls)', test: (f) => f.module === 'kysely' || f.module === 'src/db.ts' },
  { label: 'raw: handler (bench/raw.ts, all it calls)', test: (f) => f.module === 'bench/raw.ts' },
  { label: 'SQLite statement calls (better-sqlite3 all/get/run)', test: (f) => isNative(f) && SQLITE_CALLS.test(f.fn) },
  { label: 'sha256 (node:crypto)', test: (f) => (f.module === 'node core' && /internal\/crypto\/hash/.test(f.file)) || (isNative(f) && /^(Hash|digest|update)$/.test(f.fn)) },
  { label: 'response JSON serialization (fastify serialize)', test: (f) => f.module === 'fastify' && f.fn === 'serialize' },
  { label: 'garbage collector', test: (f) => f.module === '(garbage collector)' },
];

/**
 * Exclusive attribution (sums to the busy time): each sample goes to one bucket. Native frames
 * (V8 builtins, C++ bindings) count for the nearest JavaScript caller's bucket, except SQLite
 * statement calls, which get their own bucket together with the self time of the frame that made
 * them: V8 charges much of the time spent in the binding (building row objects) to that caller.
 */
const sourceLines = new Map<string, string[]>();
function sourceLine(f: Frame): string {
  if (!f.file || f.module.startsWith('(') || f.file.includes('/node_modules/') || f.module === 'node core' || !/^(src|bench|routers)\//.test(f.file)) return '';
  let lines = sourceLines.get(f.file);
  if (!lines) {
    try { lines = readFileSync(resolve(ROOT, f.file), 'utf8').split('\n'); } catch { lines = []; }
    sourceLines.set(f.file, lines);
  }
  return lines[f.line - 1] ?? '';
}

function bucketOf(stack: Frame[], callsSqlite: boolean): string {
  const leaf = stack[0];
  if ((isNative(leaf) && SQLITE_CALLS.test(leaf.fn)) || callsSqlite) return 'SQLite statement calls (better-sqlite3; + caller self time)';
  if (leaf.module === '(garbage collector)' || leaf.module === '(idle)' || leaf.module === '(program)') return leaf.module;
  // Whole subtrees owned by one concern, wherever the leaf is (node:fs writes of the logger, …).
  for (const f of stack) {
    if (LOGGING.has(f.module)) return 'logging (pino: req.log child, log line, write)';
    if (f.module === 'prom-client' || f.module === 'bintrees') return 'metrics (prom-client)';
    if (f.module === 'fastify' && f.fn === 'getGenReqId') return 'request id (genReqId → newId, randomBytes)';
    if (f.module === 'node core' && /crypto\/hash/.test(f.file)) return 'sha256 of the API key (node:crypto)';
    if (f.module === 'fastify' && f.fn === 'serialize') return 'JSON serialization (fastify serialize → JSON.stringify)';
    if (sourceLine(f).includes('JSON.parse(r.settings)')) return 'row presentation (spread + JSON.parse of settings)';
  }
  for (const f of stack) {
    if (isNative(f) || f.module.startsWith('(') || f.module === 'node core') continue;
    if (f.module === '@fastify/rate-limit') return 'rate limit (@fastify/rate-limit)';
    if (FASTIFY.has(f.module)) return 'fastify (routing, hooks, reply, query string)';
    return f.module;
  }
  return 'node core (http, net, streams, microtask queue)';
}

export interface Report {
  totalMs: number;
  requests: number;
  usPerRequest: (ms: number) => number;
  /** Exclusive: each sample once, natives folded into their caller's module. */
  buckets: { module: string; ms: number }[];
  /** Self time of each frame's own module (natives apart). */
  byModule: { module: string; ms: number }[];
  topFunctions: { fn: string; where: string; ms: number }[];
  pieces: { label: string; ms: number }[];
}

export function profileReport(p: CpuProfile, requests: number): Report {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const frames = new Map<number, Frame>();
  for (const n of p.nodes) {
    const { module, file } = moduleOf(n.callFrame);
    frames.set(n.id, { fn: n.callFrame.functionName || '(anonymous)', module, file, line: n.callFrame.lineNumber + 1 });
  }
  // Time of each sample: the delta to the next sample (the last one gets the mean).
  const totalUs = p.endTime - p.startTime;
  const meanUs = totalUs / Math.max(1, p.samples.length);
  const selfUs = new Map<number, number>();
  const pieceUs = new Array<number>(PIECES.length).fill(0);
  const stackCache = new Map<number, boolean[]>();
  const callsSqlite = new Set<number>();
  for (const n of p.nodes) {
    for (const c of n.children ?? []) {
      const f = frames.get(c)!;
      if (isNative(f) && SQLITE_CALLS.test(f.fn)) callsSqlite.add(n.id);
    }
  }
  const bucketCache = new Map<number, string>();
  const bucket = (id: number): string => {
    let b = bucketCache.get(id);
    if (b) return b;
    const stack: Frame[] = [];
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) stack.push(frames.get(cur)!);
    b = bucketOf(stack, callsSqlite.has(id));
    bucketCache.set(id, b);
    return b;
  };
  const bucketUs = new Map<string, number>();
  const piecesOf = (id: number): boolean[] => {
    let hit = stackCache.get(id);
    if (hit) return hit;
    const up = parent.has(id) ? piecesOf(parent.get(id)!) : new Array<boolean>(PIECES.length).fill(false);
    const f = frames.get(id)!;
    hit = up.map((v, i) => v || PIECES[i].test(f));
    stackCache.set(id, hit);
    return hit;
  };
  for (let i = 0; i < p.samples.length; i++) {
    const dt = i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1] : meanUs;
    const id = p.samples[i];
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
    const b = bucket(id);
    bucketUs.set(b, (bucketUs.get(b) ?? 0) + dt);
    const on = piecesOf(id);
    for (let k = 0; k < PIECES.length; k++) if (on[k]) pieceUs[k] += dt;
  }
  const mods = new Map<string, number>();
  const fns = new Map<string, { fn: string; where: string; ms: number }>();
  for (const [id, us] of selfUs) {
    const f = frames.get(id)!;
    mods.set(f.module, (mods.get(f.module) ?? 0) + us / 1000);
    const where = f.file ? `${f.file}:${f.line}` : f.module;
    const key = `${f.fn}@${where}`;
    const e = fns.get(key) ?? { fn: f.fn, where, ms: 0 };
    e.ms += us / 1000;
    fns.set(key, e);
  }
  const totalMs = [...selfUs.values()].reduce((a, b) => a + b, 0) / 1000;
  return {
    totalMs,
    requests,
    usPerRequest: (ms) => (ms * 1000) / Math.max(1, requests),
    buckets: [...bucketUs].map(([module, us]) => ({ module, ms: us / 1000 })).sort((a, b) => b.ms - a.ms),
    byModule: [...mods].map(([module, ms]) => ({ module, ms })).sort((a, b) => b.ms - a.ms),
    topFunctions: [...fns.values()].sort((a, b) => b.ms - a.ms),
    pieces: PIECES.map((pc, i) => ({ label: pc.label, ms: pieceUs[i] / 1000 })),
  };
}

const f1 = (n: number) => n.toFixed(1);

function renderTable(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ') + ' |';
  const sep = '|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|';
  return [line(rows[0]), sep, ...rows.slice(1).map(line)].join('\n');
}

/** Text report: the app's profile beside raw's, in µs of CPU per request. */
export function compareReports(app: { name: string; rep: Report }, raw: { name: string; rep: Report }, top = 25): string {
  const out: string[] = [];
  const busy = (r: Report) => r.totalMs - (r.byModule.find((m) => m.module === '(idle)')?.ms ?? 0);
  out.push(`CPU per request (busy = profile time minus idle): ${app.name} ${f1(app.rep.usPerRequest(busy(app.rep)))} µs over ${app.rep.requests} requests; `
    + `${raw.name} ${f1(raw.rep.usPerRequest(busy(raw.rep)))} µs over ${raw.rep.requests} requests`);
  out.push('');
  out.push('Time on the stack per request, by piece of the request path (pieces nest; indented ones are inside the one above when called from it):');
  const pr = [['piece', 'app µs/req', 'raw µs/req', 'app − raw']];
  for (let i = 0; i < app.rep.pieces.length; i++) {
    const a = app.rep.usPerRequest(app.rep.pieces[i].ms);
    const b = raw.rep.usPerRequest(raw.rep.pieces[i].ms);
    if (a < 0.05 && b < 0.05) continue;
    pr.push([app.rep.pieces[i].label, f1(a), f1(b), f1(a - b)]);
  }
  out.push(renderTable(pr));
  out.push('');
  out.push('Where the CPU goes, exclusive (each sample once; native frames counted for their JavaScript caller):');
  const mods = new Set([...app.rep.buckets.map((m) => m.module), ...raw.rep.buckets.map((m) => m.module)]);
  const mr = [['bucket', 'app µs/req', 'raw µs/req', 'app − raw']];
  const get = (r: Report, m: string) => r.usPerRequest(r.buckets.find((x) => x.module === m)?.ms ?? 0);
  let ta = 0; let tb = 0;
  for (const m of [...mods].sort((x, y) => (get(app.rep, y) - get(raw.rep, y)) - (get(app.rep, x) - get(raw.rep, x)))) {
    if (m === '(idle)') continue;
    const a = get(app.rep, m); const b = get(raw.rep, m);
    ta += a; tb += b;
    if (a < 0.5 && b < 0.5) continue;
    mr.push([m, f1(a), f1(b), f1(a - b)]);
  }
  mr.push(['total busy', f1(ta), f1(tb), f1(ta - tb)]);
  out.push(renderTable(mr));
  for (const { name, rep } of [app, raw]) {
    out.push('');
    out.push(`Top self-time functions, ${name}:`);
    const fr = [['function', 'where', 'µs/req', '% busy']];
    for (const f of rep.topFunctions.filter((x) => x.fn !== '(idle)').slice(0, top)) {
      fr.push([f.fn, f.where, f1(rep.usPerRequest(f.ms)), f1((100 * f.ms) / busy(rep))]);
    }
    out.push(renderTable(fr.map((r) => [r[0].slice(0, 40), r[1].slice(-60), r[2], r[3]])));
  }
  return out.join('\n');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [a, an, b, bn] = process.argv.slice(2);
  const load = (f: string, n: string) => profileReport(JSON.parse(readFileSync(f, 'utf8')) as CpuProfile, Number(n));
  const appRep = { name: a, rep: load(a, an) };
  const rawRep = b ? { name: b, rep: load(b, bn) } : appRep;
  process.stdout.write(compareReports(appRep, rawRep) + '\n');
}
