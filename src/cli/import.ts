import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import pino from 'pino';
import { buildApp } from '../app.js';
import { loadConfig } from '../config.js';
import type { Ctx } from '../context.js';
import { runUntilIdle } from '../engine/queue.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import { PERMISSION_NAMES } from '../permissions.js';
import {
  IMPORT_JOB, createDataSource, getRun, saveUpload, startRun, validateMapping, type DataSourceRun, type FieldMapping,
  runJobId,
} from '../services/data_sources.js';

/**
 * `import contacts FILE --org-id ID [--mapping JSON] [--delimiter D] [--no-header]`: the API's own
 * path, run inline — a csv_upload data source is created, the file stored as its upload, a run
 * started and its job run here (`runUntilIdle`), with a progress bar on a terminal and plain
 * progress lines otherwise.
 */

const DELIMITER_NAMES: Record<string, string> = { tab: '\t', '\\t': '\t', comma: ',', semicolon: ';', pipe: '|' };

const details = (err: AppError) => (typeof err.details === 'string' ? err.details : Object.entries(err.details as Record<string, unknown>).map(([k, v]) => `${k}: ${String(v)}`).join('; '));

export async function importCommand(args: string[], fail: (message: string) => never): Promise<void> {
  let parsed: ReturnType<typeof parseArgs<{ options: { 'org-id': { type: 'string' }; mapping: { type: 'string' }; delimiter: { type: 'string' }; 'no-header': { type: 'boolean' }; name: { type: 'string' } }; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({
      args, allowPositionals: true, strict: true,
      options: { 'org-id': { type: 'string' }, mapping: { type: 'string' }, delimiter: { type: 'string' }, 'no-header': { type: 'boolean' }, name: { type: 'string' } },
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const [what, file, ...extra] = parsed.positionals;
  const v = parsed.values;
  if (what !== 'contacts') fail(what === undefined ? 'import needs what to import: import contacts FILE --org-id ID' : `Only contacts can be imported, not "${what}"`);
  if (!file) fail('import contacts needs a FILE');
  if (extra.length) fail(`Unexpected argument "${extra[0]}"`);
  if (!v['org-id']) fail('import contacts needs --org-id');
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) fail(`Not a file: ${file}`);
    size = st.size;
  } catch {
    fail(`No such file: ${file}`);
  }
  let mapping: FieldMapping | undefined;
  if (v.mapping !== undefined) {
    let m: unknown;
    try { m = JSON.parse(v.mapping); } catch { fail('--mapping must be JSON: {"CSV column": "contact field", …}'); }
    if (typeof m !== 'object' || m === null || Array.isArray(m) || !Object.values(m).every((t) => typeof t === 'string')) fail('--mapping must be a JSON object of strings: {"CSV column": "contact field", …}');
    try { validateMapping(m as FieldMapping, '--mapping'); } catch (err) { if (err instanceof AppError) fail(details(err)); throw err; }
    mapping = m as FieldMapping;
  }
  let delimiter: string | null = null;
  if (v.delimiter !== undefined) {
    delimiter = DELIMITER_NAMES[v.delimiter.toLowerCase()] ?? v.delimiter;
    if (delimiter.length !== 1 || ['"', '\r', '\n'].includes(delimiter)) fail('--delimiter must be one character (or tab, comma, semicolon, pipe)');
  }

  const config = loadConfig();
  const app = await buildApp(config, { logger: pino({ level: process.env.LOG_LEVEL || 'error' }, pino.destination(2)) });
  try {
    const org = await app.deps.db.kysely.selectFrom('organizations').select(['id', 'name']).where('id', '=', v['org-id']).executeTakeFirst();
    if (!org) fail(`No organization ${v['org-id']}`);
    const ctx: Ctx = {
      deps: app.deps, authError: null, requestId: newId('req'), ip: '127.0.0.1', baseUrl: config.publicUrl ?? `http://localhost:${config.port}`, url: '/',
      actor: { type: 'user', id: 'cli', userId: null, organizationId: org.id, role: 'owner', permissions: PERMISSION_NAMES, isPlatformAdmin: true, sessionId: null },
    };
    const source = await createDataSource(ctx, {
      name: (v.name ?? `Import of ${basename(file)}`).slice(0, 200), type: 'csv_upload', field_mapping: mapping,
      options: { delimiter, has_header: v['no-header'] !== true },
    });
    await saveUpload(ctx, source.id, { filename: basename(file), stream: createReadStream(file, { highWaterMark: 256 * 1024 }) });
    const started = await startRun(ctx, { data_source_id: source.id });
    const jobId = await runJobId(ctx, started.id);
    const run = await follow(ctx, started.id, size, () => runUntilIdle(app.deps, { types: [IMPORT_JOB], ...(jobId ? { ids: [jobId] } : {}) }));
    report(run, file, org.name, source.id);
  } catch (err) {
    if (err instanceof AppError) {
      process.stderr.write(`Import failed: ${err.message}: ${details(err)}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  } finally {
    await app.close();
  }
}

/** Runs jobs until the run is finished, showing its progress. */
async function follow(ctx: Ctx, runId: string, size: number, work: () => Promise<number>): Promise<DataSourceRun> {
  const tty = process.stderr.isTTY === true;
  const bar = tty
    ? new cliProgress.SingleBar({
      format: 'Importing [{bar}] {percentage}% | {rows} rows | {created} created | {updated} updated | {errors} errors | {duration_formatted}',
      hideCursor: true, stream: process.stderr,
    }, cliProgress.Presets.shades_classic)
    : null;
  bar?.start(Math.max(size, 1), 0, { rows: 0, created: 0, updated: 0, errors: 0 });
  let lastLine = -1;
  const show = (r: DataSourceRun) => {
    const payload = { rows: r.rows_processed, created: r.created_count, updated: r.updated_count, errors: r.error_count };
    if (bar) { bar.update(Math.min(r.bytes_read, Math.max(size, 1)), payload); return; }
    // Plain lines: one per tenth of the file.
    const tenth = Math.floor((r.progress ?? 0) / 10);
    if (tenth > lastLine && r.status !== 'queued') {
      lastLine = tenth;
      process.stdout.write(`progress: ${r.progress ?? 0}% | ${r.rows_processed} rows | ${r.created_count} created | ${r.updated_count} updated | ${r.error_count} errors\n`);
    }
  };
  let finished = false;
  const worker = (async () => {
    while (!finished) {
      await work();
      if (!finished) await new Promise((r) => setTimeout(r, 200));
    }
  })();
  let run: DataSourceRun;
  try {
    for (;;) {
      run = await getRun(ctx, runId, { errors_limit: 0 });
      show(run);
      if (run.status === 'succeeded' || run.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    finished = true;
    await worker;
    bar?.stop();
  }
  return getRun(ctx, runId, { errors_limit: 10 });
}

function report(run: DataSourceRun, file: string, orgName: string, sourceId: string): void {
  if (run.status === 'failed') {
    process.stderr.write(`Import of ${file} failed: ${run.failure_reason ?? 'unknown reason'} (data source ${sourceId}, run ${run.id})\n`);
    process.exitCode = 1;
    return;
  }
  const seconds = run.started_at && run.finished_at ? (Date.parse(run.finished_at) - Date.parse(run.started_at)) / 1000 : null;
  const rate = seconds ? ` in ${seconds.toFixed(1)} s (${Math.round(run.rows_processed / Math.max(seconds, 0.001))} rows/s)` : '';
  const lines = [
    `Imported ${file} into ${orgName}: ${run.rows_processed} rows, ${run.created_count} created, ${run.updated_count} updated, ${run.skipped_count} skipped, ${run.error_count} errors${rate}`,
    `Data source ${sourceId}, run ${run.id}`,
  ];
  if (run.errors.length) {
    lines.push(`First errors${run.error_count > run.errors.length ? ` (${run.errors.length} of ${run.error_count}; GET /api/v1/data_source_runs/${run.id} for more)` : ''}:`);
    for (const e of run.errors) lines.push(`  row ${e.row_number}: ${e.message}${e.raw ? ` | ${e.raw.slice(0, 120)}` : ''}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}
