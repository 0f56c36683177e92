/**
 * In-process CPU profiling for the bench servers, so a profile covers exactly one measured run
 * (not start-up or warm-up): when BENCH_PROF_OUT is set, the first SIGUSR2 starts V8's sampling
 * profiler and the next one stops it and writes the profile to that path (then `<path>.done`).
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { findSourceMap } from 'node:module';

interface Node { callFrame: { url: string; lineNumber: number; columnNumber: number } }

/**
 * tsx compiles each TypeScript file to one long line; map every frame's position back to the
 * TypeScript source (tsx enables source maps), so the report can tell functions apart by line.
 */
function mapToSources(profile: { nodes: Node[] }): void {
  const cache = new Map<string, ReturnType<typeof findSourceMap>>();
  for (const n of profile.nodes) {
    const { url } = n.callFrame;
    if (!url.startsWith('file://') || url.includes('/node_modules/')) continue;
    if (!cache.has(url)) {
      let sm: ReturnType<typeof findSourceMap>;
      try { sm = findSourceMap(url); } catch { sm = undefined; }
      cache.set(url, sm);
    }
    const sm = cache.get(url);
    if (!sm || n.callFrame.lineNumber < 0) continue;
    const e = sm.findEntry(n.callFrame.lineNumber, n.callFrame.columnNumber) as { originalLine?: number; originalColumn?: number };
    if (typeof e.originalLine === 'number') {
      n.callFrame.lineNumber = e.originalLine;
      n.callFrame.columnNumber = e.originalColumn ?? 0;
    }
  }
}

export function installProfiler(): void {
  const out = process.env.BENCH_PROF_OUT;
  if (!out) return;
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) => new Promise<any>((resolve, reject) =>
    session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));
  let running = false;
  void post('Profiler.enable').then(() => post('Profiler.setSamplingInterval', { interval: Number(process.env.BENCH_PROF_INTERVAL_US ?? 500) }));
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      void post('Profiler.start');
      return;
    }
    running = false;
    void post('Profiler.stop').then(({ profile }) => {
      mapToSources(profile);
      writeFileSync(out, JSON.stringify(profile));
      writeFileSync(`${out}.done`, '');
    });
  });
}
