/**
 * Shared pieces of the benchmarks (bench/run.ts: the projects list, issue 2; bench/contacts.ts:
 * contacts at a million rows, issue 3): environment knobs, child-process servers pinned to core 0,
 * CPU seconds and memory of a process from /proc, autocannon runs, and table formatting.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, '..');
export const TMP = join(HERE, '.tmp');

/** A positive number from the environment, or the default. */
export function num(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return n;
}

export const log = (s = '') => process.stdout.write(s + '\n');

// ---- child processes -------------------------------------------------------------------------

const children = new Set<ChildProcess>();
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
export function killChildren(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid) {
      try { process.kill(c.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
  children.clear();
}
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => { killChildren(); process.exit(130); });
}

export const CORES = availableParallelism();
export const pinning = (() => {
  if (process.platform !== 'linux' || CORES < 2) return false;
  return spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0;
})();

/** This process (the load generator: autocannon, all its threads) on core 1; servers go to core 0. */
export function pinLoadGenerator(): void {
  if (!pinning) return;
  const r = spawnSync('taskset', ['-a', '-pc', '1', String(process.pid)], { stdio: 'ignore' });
  if (r.status !== 0) process.stderr.write('warning: could not pin the load generator to core 1\n');
}
export const pinningText = () => (pinning ? 'servers on core 0, load generator on core 1 (taskset)' : 'none (taskset unavailable or < 2 cores)');

/** `node args…`, pinned to core 0 when pinning is on. */
export function pinnedCommand(nodeArgs: string[]): [string, string[]] {
  return pinning ? ['taskset', ['-c', '0', process.execPath, ...nodeArgs]] : [process.execPath, nodeArgs];
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export interface Server { name: string; url: string; child: ChildProcess; stderr: () => string; profOut?: string }
export interface ServerSpec { name: string; script: string; env: Record<string, string> }

/** The environment every bench server gets (the app's configuration; the raw servers read DATABASE_URL). */
export function serverEnv(dbPath: string): Record<string, string> {
  return {
    DATABASE_URL: dbPath, DATA_DIR: join(TMP, 'data'),
    JWT_SECRET: 'bench-jwt-secret-0123456789abcdef0123456789', SECRETS_KEY: Buffer.alloc(32, 7).toString('base64url'),
    RATE_LIMIT_PER_HOUR: '1000000000', RATE_LIMIT_HEALTH_PER_HOUR: '1000000000', NODE_ENV: 'production',
  };
}

/** Starts `bench/<script>` as a child process (pinned to core 0) and waits until it answers HTTP. */
export async function startServer(spec: ServerSpec, opts: { dbPath: string; profOut?: string }): Promise<Server> {
  const port = await freePort();
  const devnull = openSync('/dev/null', 'w');
  const [cmd, args] = pinnedCommand(['--import', 'tsx', join(HERE, spec.script)]);
  const child = track(spawn(cmd, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      HOST: '127.0.0.1', PORT: String(port),
      ...serverEnv(opts.dbPath),
      ...spec.env,
      ...(opts.profOut ? { BENCH_PROF_OUT: opts.profOut } : {}),
    },
    // Request logs go to /dev/null; stderr is kept for errors.
    stdio: ['ignore', devnull, 'pipe'],
  }));
  closeSync(devnull);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000); });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${spec.name} exited during start-up:\n${err}`);
    try {
      await fetch(url + '/');
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`${spec.name} did not start listening within 60 s:\n${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { name: spec.name, url, child, stderr: () => err, profOut: opts.profOut };
}

export async function stopServer(s: Server): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) { children.delete(s.child); return; }
  const exited = new Promise<void>((r) => s.child.once('exit', () => r()));
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
  children.delete(s.child);
}

// ---- /proc -------------------------------------------------------------------------------------

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** CPU seconds (user + system, all threads) a process has used so far, from /proc; NaN elsewhere. */
export function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** VmRSS and VmHWM (peak RSS) of a process in bytes, from /proc/<pid>/status; NaN elsewhere. */
export function memory(pid: number | undefined): { rss: number; hwm: number } {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

/** Resets the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0); false when not allowed. */
export function resetPeakRss(pid: number | undefined): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Samples a process's RSS every `everyMs` until stopped: the baseline at start, the peak seen
 * (max of the samples and of VmHWM after a reset), the growth peak − baseline.
 */
export function rssSampler(pid: number | undefined, everyMs = 50) {
  const exactPeak = resetPeakRss(pid);
  const base = memory(pid).rss;
  let peak = base;
  const timer = setInterval(() => { const m = memory(pid).rss; if (m > peak) peak = m; }, everyMs);
  return {
    /** `end`: RSS when stopped (after a sawtooth of garbage collections it tells retained memory from headroom). */
    stop(): { base: number; peak: number; growth: number; end: number; exactPeak: boolean } {
      clearInterval(timer);
      const m = memory(pid);
      if (m.rss > peak) peak = m.rss;
      if (exactPeak && m.hwm > peak) peak = m.hwm;
      return { base, peak, growth: peak - base, end: m.rss, exactPeak };
    },
  };
}

// ---- load --------------------------------------------------------------------------------------

export interface Run { rps: number; p50: number; p99: number; non2xx: number; errors: number; total: number; cpuUs: number }

export interface LoadSpec {
  connections: number;
  /** Requests each connection cycles through. */
  requests: { path: string; headers: Record<string, string> }[];
}

export function cannon(url: string, seconds: number, load: LoadSpec): Promise<autocannon.Result> {
  return new Promise((res, rej) => {
    autocannon({
      url,
      connections: load.connections,
      duration: seconds,
      requests: load.requests.map((r) => ({ method: 'GET' as const, path: r.path, headers: r.headers })),
    }, (err, result) => (err ? rej(err) : res(result)));
  });
}

/** A warm-up run, then a measured one with the server's CPU time taken around it. */
export async function measure(s: Server, load: LoadSpec, opts: { seconds: number; warmup: number }): Promise<Run> {
  await cannon(s.url, opts.warmup, load);
  if (s.profOut) s.child.kill('SIGUSR2');
  const cpu0 = cpuSeconds(s.child.pid);
  const r = await cannon(s.url, opts.seconds, load);
  const cpu1 = cpuSeconds(s.child.pid);
  if (s.profOut) s.child.kill('SIGUSR2');
  const ok = r['2xx'];
  return {
    rps: ok / r.duration, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors, total: r.requests.total,
    cpuUs: ((cpu1 - cpu0) * 1e6) / Math.max(1, r.requests.total),
  };
}

/**
 * Several servers loaded at the same time, on the same core, each by its own load: every one is
 * measured under the same contention at the same moments, so their CPU per request compares
 * even when the machine's speed drifts between sequential runs.
 */
export async function measureTogether(servers: Server[], load: LoadSpec, opts: { seconds: number; warmup: number }): Promise<Run[]> {
  await Promise.all(servers.map((s) => cannon(s.url, opts.warmup, load)));
  const cpu0 = servers.map((s) => cpuSeconds(s.child.pid));
  const results = await Promise.all(servers.map((s) => cannon(s.url, opts.seconds, load)));
  const cpu1 = servers.map((s) => cpuSeconds(s.child.pid));
  return results.map((r, i) => ({
    rps: r['2xx'] / r.duration, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors, total: r.requests.total,
    cpuUs: ((cpu1[i] - cpu0[i]) * 1e6) / Math.max(1, r.requests.total),
  }));
}

// ---- report ------------------------------------------------------------------------------------

export const median = (xs: number[]) => {
  const s = [...xs].sort((p, q) => p - q);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
export const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
export const pad = (s: string, n: number, right = false) => (right ? s.padStart(n) : s.padEnd(n));
export const mb = (bytes: number) => `${fmt(bytes / 1048576, 1)} MB`;

/** A Markdown table; columns from `rightFrom` on are right-aligned. */
export function table(rows: string[][], rightFrom = 1): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => pad(c, widths[i], i >= rightFrom)).join(' | ') + ' |';
  const sep = '|' + widths.map((w, i) => (i >= rightFrom ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|';
  return [line(rows[0]), sep, ...rows.slice(1).map(line)].join('\n');
}
