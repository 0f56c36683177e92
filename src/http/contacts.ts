import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Deps } from '../context.js';
import { authorizeActor } from '../trpc.js';
import { badRequest, zodDetails } from '../errors.js';
import { documentOperation } from '../openapi.js';
import { recordAudit } from '../services/audit.js';
import { contactBatches, contactFilters, iterateContacts, type ApiRow, type Contact, type ContactBatches } from '../services/contacts.js';
import { queryCoercion } from './rest.js';

/**
 * Non-JSON routes: contact exports. `GET /api/agents/download/?format=csv|xlsx` with the list's
 * filters streams the matching contacts (newest first), read from the database in keyset batches
 * and written as they come: memory stays flat whatever the row count (CSV: each batch of rows
 * becomes one chunk of text as soon as it is read, see CsvExport; XLSX through exceljs's
 * streaming WorkbookWriter; both paced by the response's back-pressure).
 *
 * Formula injection: a text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is
 * written with a leading `'`, in both formats, so a spreadsheet shows it as text instead of
 * evaluating it.
 */

const PATH = '/api/agents/download/';

const downloadQuery = z.object({
  format: z.enum(['csv', 'xlsx']).describe('Export format'),
  ...contactFilters,
});

const COLUMNS = [
  'id', 'name', 'email', 'phone', 'company', 'title', 'city', 'state', 'country', 'tags', 'custom_fields', 'source',
  'lead_score', 'lead_score_reasons', 'unsubscribed', 'bounced', 'esp', 'esg', 'email_validity', 'data_health_flags',
  'email_checked_at', 'created_at', 'updated_at',
] as const;

const FORMULA_START = /^[=+\-@\t\r]/;

/** A text cell that a spreadsheet could evaluate as a formula gets a leading `'`. */
export function escapeCell(s: string): string {
  return FORMULA_START.test(s) ? `'${s}` : s;
}

function cells(c: Contact): Array<string | number | null> {
  const text = (v: string | null) => (v === null ? null : escapeCell(v));
  return [
    c.id, text(c.name), text(c.email), text(c.phone), text(c.company), text(c.title), text(c.city), text(c.state), text(c.country),
    text(c.tags.join('; ')), text(Object.keys(c.custom_fields).length ? JSON.stringify(c.custom_fields) : ''), text(c.source),
    c.lead_score, text(c.lead_score_reasons.length ? JSON.stringify(c.lead_score_reasons) : ''),
    c.unsubscribed ? 'true' : 'false', c.bounced ? 'true' : 'false', c.esp, c.esg, c.email_validity,
    c.data_health_flags.join('; '), c.email_checked_at, c.created_at, c.updated_at,
  ];
}

function filename(ext: string): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `contacts-${stamp}.${ext}`;
}

// ---- CSV -------------------------------------------------------------------------------------

/**
 * RFC 4180: a field holding a comma, a double quote, a CR or a LF is quoted, its quotes doubled;
 * records end with LF. Byte for byte what csv-stringify writes with its defaults (the test suite
 * compares the two on awkward values, and the benchmark on a million rows).
 */
const NEEDS_QUOTES = /[",\r\n]/;
export function csvField(s: string): string {
  return NEEDS_QUOTES.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}
/** Stored text a person typed: formula-escaped, then quoted as needed. */
const typed = (v: string | null) => (v === null ? '' : csvField(escapeCell(v)));
/** Values the service derives (ids, enums, timestamps): quoted as needed. */
const derived = (v: string | null) => (v === null ? '' : csvField(v));
/** A stored JSON list of strings, `; `-joined. */
const joined = (json: string) => (json === '[]' ? '' : (JSON.parse(json) as string[]).join('; '));

const CSV_HEADER = `${COLUMNS.join(',')}\n`;

/**
 * One CSV record from the stored columns: the cells of `cells(present(row))` without building the
 * contact. `custom_fields` and `lead_score_reasons` are stored as the JSON that `present` +
 * `JSON.stringify` would give back (the service writes them with JSON.stringify), so the stored
 * text is used as is.
 */
export function csvRecord(r: ApiRow): string {
  return `${derived(r.id)},${typed(r.name)},${typed(r.email)},${typed(r.phone)},${typed(r.company)},${typed(r.title)},`
    + `${typed(r.city)},${typed(r.state)},${typed(r.country)},${r.tags === '[]' ? '' : typed(joined(r.tags))},`
    + `${r.custom_fields === '{}' ? '' : typed(r.custom_fields)},${typed(r.source)},${r.lead_score === null ? '' : String(Number(r.lead_score))},`
    + `${r.lead_score_reasons === '[]' ? '' : typed(r.lead_score_reasons)},${Number(r.unsubscribed) === 1 ? 'true' : 'false'},`
    + `${Number(r.bounced) === 1 ? 'true' : 'false'},${derived(r.esp)},${derived(r.esg)},${derived(r.email_validity)},`
    + `${derived(joined(r.data_health_flags))},${derived(r.email_checked_at)},${derived(r.created_at)},${derived(r.updated_at)}\n`;
}

/**
 * The CSV body: each `_read` takes one batch of rows, turns it into one chunk of text and pushes
 * it; the response's back-pressure decides when the next `_read` comes. On SQLite the batch is
 * read synchronously, so a batch's row objects live only within one call (they are collected
 * young, which keeps the heap and RSS flat: an async iteration row by row kept them alive across
 * turns of the event loop until they were promoted), and one chunk per batch instead of one per
 * row spares the stream machinery and the socket a million small writes.
 */
class CsvExport extends Readable {
  private headerSent = false;
  constructor(private readonly next: ContactBatches, private readonly batch: number) {
    super();
  }

  override _read(): void {
    let got: ApiRow[] | Promise<ApiRow[]>;
    try {
      got = this.next();
    } catch (err) {
      this.destroy(err as Error);
      return;
    }
    if (Array.isArray(got)) this.emitBatch(got);
    else got.then((rows) => this.emitBatch(rows), (err: Error) => this.destroy(err));
  }

  private emitBatch(rows: ApiRow[]): void {
    if (this.destroyed) return;
    let text = this.headerSent ? '' : CSV_HEADER;
    this.headerSent = true;
    for (let i = 0; i < rows.length; i++) text += csvRecord(rows[i]);
    if (text) this.push(text);
    if (rows.length < this.batch) this.push(null);
  }
}

/** Rows per database read (and per chunk of about 140 KB) of a CSV export; a setting so that tests can cross many batch boundaries. */
export const csvTuning = { batch: 500 };

/** Resolves on `event`, or when `out` closes first (the client went away): then false. */
async function until(emitter: NodeJS.EventEmitter, event: string, out: PassThrough): Promise<boolean> {
  if (out.destroyed) return false;
  const ac = new AbortController();
  try {
    return await Promise.race([once(emitter, event, { signal: ac.signal }).then(() => true), once(out, 'close', { signal: ac.signal }).then(() => false)]);
  } finally {
    ac.abort();
  }
}

/**
 * Writes the rows into an XLSX stream. exceljs's streaming writer pushes each committed row into
 * the zip without back-pressure, so rows would pile up in memory whenever the database is faster
 * than compression or the client: every 100 rows this waits until the sheet's pending bytes
 * (the zip entry's input buffer) are taken, and until the response is drained.
 */
async function writeXlsx(rows: AsyncIterable<Contact>, out: PassThrough): Promise<void> {
  // Loaded on first use: it takes a quarter of a second, which every process start would pay.
  const { default: ExcelJS } = await import('exceljs');
  const workbook = new ExcelJS.stream.xlsx.WorkbookWriter({ stream: out, useSharedStrings: false, useStyles: false });
  const sheet = workbook.addWorksheet('Contacts');
  sheet.addRow([...COLUMNS]).commit();
  // The writable the sheet's stream feeds (exceljs internals; without it only the response paces).
  // (a PassThrough of the readable-stream package, which has no `writableLength`).
  type Sink = NodeJS.EventEmitter & { writableLength?: number; _writableState?: { length: number } };
  const sheetSink = () => (sheet as unknown as { stream?: { pipes?: Sink[] } }).stream?.pipes?.[0];
  const pending = (s: Sink) => s.writableLength ?? s._writableState?.length ?? 0;
  let n = 0;
  for await (const c of rows) {
    sheet.addRow(cells(c)).commit();
    if (++n % 100 === 0) {
      // Let compression run (zlib answers on the event loop), then look at what is pending.
      await new Promise((r) => setImmediate(r));
      const sink = sheetSink();
      if (sink && pending(sink) > 256 * 1024 && !(await until(sink, 'drain', out))) return;
      if (out.writableNeedDrain && !(await until(out, 'drain', out))) return;
    }
  }
  sheet.commit();
  await workbook.commit();
}

/** The one authorization check (src/trpc.ts), as the contacts list procedure runs it. */
function authorize(request: FastifyRequest) {
  const ctx = request.ctx;
  const actor = authorizeActor(ctx, { permission: 'contacts:read' })!;
  return { ctx, actor };
}

documentOperation({
  method: 'GET', path: PATH, operationId: 'contacts.download', tags: ['Contacts'],
  summary: 'Download contacts as CSV or XLSX',
  description: 'The contacts matching the filters (the same as `GET /api/agents/`), newest first, streamed. '
    + 'Needs the `contacts:read` permission. Text cells starting with `=`, `+`, `-`, `@`, a tab or a carriage return '
    + 'are prefixed with `\'` (formula injection). Lists (tags, flags) are joined with `; `, objects are JSON.',
  query: downloadQuery,
  responses: {
    200: {
      description: 'The file, with a `Content-Disposition: attachment` file name',
      content: {
        'text/csv': { schema: { type: 'string' } },
        'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet': { schema: { type: 'string', format: 'binary' } },
      },
      headers: { 'Content-Disposition': { description: 'attachment; filename="contacts-<time>.<csv|xlsx>"', schema: { type: 'string' } } },
    },
  },
});

export function register(app: FastifyInstance, deps: Deps): void {
  const coerce = queryCoercion(downloadQuery);

  app.get(PATH, async (request: FastifyRequest, reply: FastifyReply) => {
    const { ctx, actor } = authorize(request);
    const parsed = downloadQuery.safeParse(coerce(request.query as Record<string, unknown>));
    if (!parsed.success) throw badRequest(zodDetails(parsed.error));
    const { format, ...filters } = parsed.data;
    const org = actor.organizationId;
    await recordAudit(ctx, { action: 'contacts.download', resourceType: 'contact', resourceId: null, metadata: { format, filters } });

    reply.header('content-disposition', `attachment; filename="${filename(format)}"`);
    reply.header('cache-control', 'no-store');
    if (format === 'csv') {
      reply.type('text/csv; charset=utf-8');
      const { batch } = csvTuning;
      const csv = new CsvExport(await contactBatches(deps, org, filters, batch), batch);
      // When the client goes away, Fastify destroys the stream: no further batch is read.
      csv.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ERR_STREAM_PREMATURE_CLOSE') deps.log.error({ err, reqId: request.id }, 'contacts export failed');
      });
      return reply.send(csv);
    }
    const rows = iterateContacts(deps, org, filters);
    reply.type('application/vnd.openxmlformats-officedocument.spreadsheetml.sheet');
    const out = new PassThrough();
    writeXlsx(rows, out).catch((err) => {
      deps.log.error({ err, reqId: request.id }, 'contacts export failed');
      out.destroy(err as Error);
    });
    return reply.send(out);
  });
}
