import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, unlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Parser } from 'csv-parse';
import type { Ctx, Deps } from '../context.js';
import { containsText } from '../db.js';
import { AppError, badRequest, notFound } from '../errors.js';
import { defineJob, enqueue, PermanentJobError, type JobContext } from '../engine/queue.js';
import { newId, nowIso } from '../ids.js';
import { assertOutboundUrl, fetchOutbound } from '../integrations/outbound.js';
import { paginate, type PageInput } from '../pagination.js';
import { upsertContacts } from './contacts.js';

// ---------------------------------------------------------------------------------------------
// Data sources (DripPulse): a CSV file uploaded once or read from a URL at each run, and how its
// columns map to contact fields. A run imports the file's rows as contacts (upserted by e-mail)
// in a job, streaming: memory stays flat whatever the file's size.

export const DATA_SOURCE_TYPES = ['csv_upload', 'csv_url'] as const;
export type DataSourceType = (typeof DATA_SOURCE_TYPES)[number];
export const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** Contact fields a column can map to, besides `custom_fields.<key>`. */
export const CONTACT_FIELDS = ['name', 'email', 'phone', 'company', 'title', 'city', 'state', 'country', 'tags', 'source'] as const;
export type ContactField = (typeof CONTACT_FIELDS)[number];
const CUSTOM_FIELD = /^custom_fields\.([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})$/;

export type FieldMapping = Record<string, string>;
export interface SourceOptions { delimiter: string | null; has_header: boolean }

/** Rows upserted per call (and progress written per batch). */
export const BATCH_SIZE = 500;
/** Row errors kept per run (all are counted). */
export const MAX_STORED_ERRORS = 1000;
/** A cell larger than this is refused (its row is reported). */
export const MAX_CELL_BYTES = 64 * 1024;
/** A record larger than this is taken for an unbalanced quote: its first line is reported and skipped. */
const MAX_RECORD_BYTES = 1024 * 1024;
/** After this many such records the file is not CSV enough to go on. */
const MAX_RECOVERIES = 100;
const RAW_LIMIT = 500;
const PREVIEW_ROWS = 20;
const PREVIEW_MAX_BYTES = 4 * 1024 * 1024;
const PREVIEW_CELL = 500;
export const IMPORT_JOB = 'data_source.import';

// ---------------------------------------------------------------------------------------------
// Rows and presentation

const SOURCE_COLUMNS = [
  'd.id', 'd.name', 'd.type', 'd.url', 'd.field_mapping', 'd.options', 'd.file_name', 'd.file_size', 'd.file_lines', 'd.uploaded_at',
  'd.created_at', 'd.updated_at', 'r.id as run_id', 'r.status as run_status', 'r.created_at as run_created_at', 'r.finished_at as run_finished_at',
] as const;

interface SourceRow {
  id: string; name: string; type: string; url: string | null; field_mapping: string; options: string;
  file_name: string | null; file_size: number | null; file_lines: number | null; uploaded_at: string | null;
  created_at: string; updated_at: string;
  run_id: string | null; run_status: string | null; run_created_at: string | null; run_finished_at: string | null;
}

const parseOptions = (text: string): SourceOptions => {
  const o = JSON.parse(text) as Partial<SourceOptions>;
  return { delimiter: typeof o.delimiter === 'string' ? o.delimiter : null, has_header: o.has_header !== false };
};

const rowEstimate = (lines: number | null, hasHeader: boolean) => (lines === null ? null : Math.max(0, Number(lines) - (hasHeader ? 1 : 0)));

function presentSource(r: SourceRow) {
  const options = parseOptions(r.options);
  return {
    id: r.id,
    name: r.name,
    type: r.type as DataSourceType,
    url: r.url,
    field_mapping: JSON.parse(r.field_mapping) as FieldMapping,
    options,
    file_name: r.file_name,
    file_size: r.file_size === null ? null : Number(r.file_size),
    row_estimate: rowEstimate(r.file_lines, options.has_header),
    uploaded_at: r.uploaded_at,
    last_run: r.run_id ? { id: r.run_id, status: r.run_status as RunStatus, created_at: r.run_created_at!, finished_at: r.run_finished_at } : null,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}
export type DataSource = ReturnType<typeof presentSource>;

const sourceQuery = (ctx: Ctx) => ctx.deps.db.kysely.selectFrom('data_sources as d')
  .leftJoin('data_source_runs as r', 'r.id', 'd.last_run_id')
  .select(SOURCE_COLUMNS)
  .where('d.organization_id', '=', ctx.actor!.organizationId);

async function sourceRow(ctx: Ctx, id: string): Promise<SourceRow> {
  const row = await sourceQuery(ctx).where('d.id', '=', id).executeTakeFirst();
  if (!row) throw notFound('Data source');
  return row;
}

/** Where an uploaded file lives: `<dataDir>/imports/<organization id>/<data source id>.csv`. */
export function uploadPath(deps: Deps, organizationId: string, id: string): string {
  return join(resolve(deps.config.dataDir), 'imports', organizationId, `${id}.csv`);
}

// ---------------------------------------------------------------------------------------------
// Field mappings

/** Checks every target of a mapping; throws a 400 naming `<field>.<column>` for each bad one. */
export function validateMapping(mapping: FieldMapping, field = 'field_mapping'): void {
  const bad: Record<string, string> = {};
  for (const [column, target] of Object.entries(mapping)) {
    if (typeof target !== 'string' || !((CONTACT_FIELDS as readonly string[]).includes(target) || CUSTOM_FIELD.test(target))) {
      bad[`${field}.${column}`] = `Unknown contact field ${JSON.stringify(target)}: use one of ${CONTACT_FIELDS.join(', ')} or custom_fields.<key> (letters, digits, _ . -)`;
    }
  }
  if (Object.keys(bad).length) throw badRequest(bad);
}

const normalizeHeader = (h: string) => h.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase().replace(/[^a-z0-9]+/g, '');

/** Normalized header → target. `name_first`/`name_last` are the parts of a name. */
const SYNONYMS: Record<string, string> = {};
const syn = (target: string, names: string[]) => names.forEach((n) => { SYNONYMS[n] = target; });
syn('email', ['email', 'emailaddress', 'mail', 'emailid', 'workemail', 'businessemail', 'primaryemail', 'contactemail', 'emails']);
syn('name', ['name', 'fullname', 'contactname', 'contact', 'displayname', 'personname', 'leadname', 'customername']);
syn('name_first', ['firstname', 'givenname', 'fname', 'forename', 'first']);
syn('name_last', ['lastname', 'surname', 'familyname', 'lname', 'last']);
syn('phone', ['phone', 'phonenumber', 'telephone', 'tel', 'mobile', 'mobilephone', 'mobilenumber', 'cell', 'cellphone', 'workphone', 'phoneno', 'directphone']);
syn('company', ['company', 'companyname', 'organization', 'organisation', 'org', 'employer', 'business', 'businessname', 'account', 'accountname']);
syn('title', ['title', 'jobtitle', 'position', 'role', 'designation', 'job']);
syn('city', ['city', 'town', 'locality']);
syn('state', ['state', 'province', 'region', 'stateprovince', 'stateregion', 'county']);
syn('country', ['country', 'countryname', 'countrycode', 'nation']);
syn('tags', ['tags', 'tag', 'labels', 'label', 'segments', 'segment', 'lists']);
syn('source', ['source', 'leadsource', 'origin', 'channel']);

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/**
 * A mapping proposed from the header: names compared case-, accent-, space- and punctuation-
 * insensitively ("E-mail", "Email Address" → email; "Full Name" → name; "First Name" and
 * "Last Name" → name, in that order; "Company Name" → company). Without a header, the column whose
 * sample values look like e-mail addresses is proposed for email.
 */
export function proposeMapping(columns: string[], hasHeader: boolean, sample: string[][] = []): FieldMapping {
  const out: FieldMapping = {};
  if (!hasHeader) {
    const i = columns.findIndex((_, c) => {
      const vals = sample.map((r) => (r[c] ?? '').trim()).filter(Boolean);
      return vals.length > 0 && vals.filter((v) => EMAIL.test(v)).length >= vals.length / 2;
    });
    if (i >= 0) out[columns[i]] = 'email';
    return out;
  }
  const taken = new Set<string>();
  const byTarget = new Map<string, string>();
  for (const col of columns) {
    const target = SYNONYMS[normalizeHeader(col)];
    if (target && !byTarget.has(target)) byTarget.set(target, col);
  }
  for (const col of columns) {
    const target = SYNONYMS[normalizeHeader(col)];
    if (!target) continue;
    if (target === 'name_first' || target === 'name_last') continue;
    if (byTarget.get(target) !== col || taken.has(target)) continue;
    out[col] = target;
    taken.add(target);
  }
  if (!taken.has('name')) {
    const first = byTarget.get('name_first');
    const last = byTarget.get('name_last');
    const parts = [first, last].filter((c): c is string => !!c);
    if (parts.length) {
      // Keep the mapping in first-then-last order: the name is joined in mapping order.
      const rebuilt: FieldMapping = {};
      for (const c of parts) rebuilt[c] = 'name';
      for (const [k, v] of Object.entries(out)) rebuilt[k] = v;
      return rebuilt;
    }
  }
  return out;
}

/** What an import writes for one row (the contacts service's input). */
export interface ImportedContact {
  name?: string; email?: string; phone?: string; company?: string; title?: string;
  city?: string; state?: string; country?: string; tags?: string[]; source?: string;
  custom_fields?: Record<string, string>;
}

interface Plan {
  width: number;
  /** Per target, the column indexes, in mapping order. */
  targets: { target: string; columns: number[]; names: string[] }[];
}

/** Resolves a mapping against the file's columns; the problems are reported, not thrown. */
function planFor(columns: string[], mapping: FieldMapping): { plan: Plan; missing: string[] } {
  const index = new Map(columns.map((c, i) => [c, i]));
  const missing: string[] = [];
  const byTarget = new Map<string, { columns: number[]; names: string[] }>();
  for (const [column, target] of Object.entries(mapping)) {
    const i = index.get(column);
    if (i === undefined) { missing.push(column); continue; }
    const t = byTarget.get(target) ?? { columns: [], names: [] };
    t.columns.push(i);
    t.names.push(column);
    byTarget.set(target, t);
  }
  return { plan: { width: columns.length, targets: [...byTarget].map(([target, t]) => ({ target, ...t })) }, missing };
}

type Mapped = { kind: 'contact'; contact: ImportedContact } | { kind: 'skip' } | { kind: 'error'; message: string };

/** One CSV record → the contact it imports, a skip (nothing in the mapped cells) or an error. */
function mapRecord(values: string[], plan: Plan): Mapped {
  if (values.length !== plan.width) return { kind: 'error', message: `Expected ${plan.width} columns, found ${values.length}` };
  const contact: ImportedContact = {};
  let any = false;
  for (const t of plan.targets) {
    const cells: string[] = [];
    for (let k = 0; k < t.columns.length; k++) {
      const raw = values[t.columns[k]];
      if (raw.length > MAX_CELL_BYTES / 4 && Buffer.byteLength(raw) > MAX_CELL_BYTES) {
        return { kind: 'error', message: `Column ${JSON.stringify(t.names[k])}: the value is larger than ${MAX_CELL_BYTES / 1024} KB` };
      }
      const v = raw.trim();
      if (v) cells.push(v);
    }
    if (!cells.length) continue;
    any = true;
    // Cells are text, always: a value that looks like a spreadsheet formula is kept as written.
    if (t.target === 'name') contact.name = cells.join(' ');
    else if (t.target === 'tags') {
      const tags = new Set<string>(contact.tags ?? []);
      for (const c of cells) for (const tag of c.split(/[,;|]/)) { const s = tag.trim(); if (s) tags.add(s); }
      if (tags.size) contact.tags = [...tags];
    } else if (t.target.startsWith('custom_fields.')) {
      contact.custom_fields = { ...(contact.custom_fields ?? {}), [t.target.slice('custom_fields.'.length)]: cells[0] };
    } else {
      (contact as Record<string, unknown>)[t.target] = cells[0];
    }
  }
  if (!any) return { kind: 'skip' };
  // A malformed address is the contacts service's to judge (it keeps it, flagged invalid_email).
  if (!contact.email) return { kind: 'error', message: 'No e-mail address: contacts are matched by e-mail' };
  return { kind: 'contact', contact };
}

/** A record written back as one CSV line, at most `limit` characters. */
function rawOf(values: string[], delimiter: string, limit = RAW_LIMIT): string {
  let out = '';
  for (let i = 0; i < values.length && out.length < limit; i++) {
    let v = values[i].length > limit ? values[i].slice(0, limit) : values[i];
    if (v.includes(delimiter) || v.includes('"') || v.includes('\n') || v.includes('\r')) v = `"${v.replace(/"/g, '""')}"`;
    out += (i ? delimiter : '') + v;
  }
  return out.length > limit ? `${out.slice(0, limit - 1)}…` : out;
}

const truncate = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

// ---------------------------------------------------------------------------------------------
// Reading CSV: csv-parse, fed chunk by chunk

/** What is not CSV text, judged from the first bytes; null when it may be CSV. */
export function notCsvReason(head: Buffer): string | null {
  const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
  if (starts(0x50, 0x4b, 0x03, 0x04)) return 'This is a ZIP archive (an Excel .xlsx file?), not CSV text: export it as CSV';
  if (starts(0xd0, 0xcf, 0x11, 0xe0)) return 'This is an Excel .xls file, not CSV text: export it as CSV';
  if (starts(0x25, 0x50, 0x44, 0x46)) return 'This is a PDF file, not CSV text';
  if (starts(0x89, 0x50, 0x4e, 0x47) || starts(0xff, 0xd8, 0xff) || starts(0x47, 0x49, 0x46, 0x38)) return 'This is an image, not CSV text';
  if (starts(0x1f, 0x8b)) return 'This is a gzip archive, not CSV text: decompress it first';
  if (starts(0xff, 0xfe) || starts(0xfe, 0xff)) return 'This is UTF-16 text: save the file as UTF-8 CSV';
  let control = 0;
  for (const b of head) {
    if (b === 0) return 'This is a binary file, not CSV text';
    if (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d && b !== 0x0c) control++;
  }
  if (head.length && control > head.length / 100) return 'This is a binary file, not CSV text';
  return null;
}

const DELIMITERS = [',', ';', '\t', '|'];

/** The delimiter of the first line (outside quotes), comma when nothing else is more frequent. */
export function detectDelimiter(head: Buffer): string {
  const text = head.subarray(0, 64 * 1024).toString('utf8');
  const counts = new Map(DELIMITERS.map((d) => [d, 0]));
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    else if (!quoted && (ch === '\n' || ch === '\r')) break;
    else if (!quoted && counts.has(ch)) counts.set(ch, counts.get(ch)! + 1);
  }
  let best = ',';
  for (const d of DELIMITERS) if (counts.get(d)! > counts.get(best)!) best = d;
  return best;
}

export type CsvEvent =
  | { kind: 'record'; row: number; values: string[] }
  | { kind: 'error'; row: number; message: string; raw: string };

/** The file cannot be read as CSV at all: the run fails with this. */
export class CsvFatalError extends Error {}

function describeParseError(err: Error & { code?: string }): string {
  switch (err.code) {
    case 'CSV_MAX_RECORD_SIZE': return 'The row runs on past 1 MB (an unbalanced quote?); this line was skipped';
    case 'CSV_QUOTE_NOT_CLOSED': return 'Unbalanced quote: a quoted value is never closed; this line was skipped';
    default: return `Malformed CSV (${err.code ?? err.message}); this line was skipped`;
  }
}

/**
 * Parses CSV from a stream of chunks with csv-parse and yields its records (and the rows it could
 * not parse) a chunk at a time. Quotes are relaxed and column counts are not enforced here (the
 * caller reports wrong counts per row). A quoted value left open would otherwise swallow the
 * rest of the file: when a record passes 1 MB (or the file ends inside quotes), its first line
 * is reported as an error and parsing resumes on the next line with a fresh parser, so one bad
 * row never aborts the rest. Only the bytes of the record being parsed are held.
 */
export async function* csvEvents(source: AsyncIterable<Buffer>, delimiter: string): AsyncGenerator<CsvEvent[]> {
  let out: CsvEvent[] = [];
  let rowBase = 0;
  let recoveries = 0;
  let parser!: Parser;
  let records = 0;
  let lastEnd = 0;
  let retained: Buffer[] = [];
  let retainedStart = 0;
  let retainedBytes = 0;

  const fresh = () => {
    parser = new Parser({
      delimiter, bom: true, relax_quotes: true, relax_column_count: true, skip_empty_lines: true,
      record_delimiter: ['\r\n', '\n', '\r'], max_record_size: MAX_RECORD_BYTES,
      on_record: (record: string[], info: { records: number; bytes: number }) => {
        out.push({ kind: 'record', row: rowBase + info.records, values: record });
        records = info.records;
        lastEnd = info.bytes;
        return null;
      },
    });
    parser.on('error', () => undefined);
    records = 0; lastEnd = 0; retained = []; retainedStart = 0; retainedBytes = 0;
  };
  const trim = () => {
    let drop = lastEnd - retainedStart;
    while (retained.length && drop >= retained[0].length) {
      drop -= retained[0].length; retainedStart += retained[0].length; retainedBytes -= retained[0].length; retained.shift();
    }
    if (drop > 0 && retained.length) { retained[0] = retained[0].subarray(drop); retainedStart += drop; retainedBytes -= drop; }
  };
  const write = (buf: Buffer) => new Promise<Error | null>((res) => { parser.write(buf, (err) => res(err ?? null)); });
  const end = async (): Promise<Error | null> => {
    const p = parser;
    return new Promise<Error | null>((res) => {
      p.once('error', (err) => res(err));
      p.once('end', () => res(null));
      p.resume();
      p.end();
    });
  };
  /** After a parse error: the pending record's first line is an error row; returns the bytes after it. */
  const recover = (err: Error): Buffer => {
    trim();
    const pending = Buffer.concat(retained);
    let start = 0;
    while (start < pending.length && (pending[start] === 0x0a || pending[start] === 0x0d)) start++;
    let nl = pending.indexOf(0x0a, start);
    const cr = pending.indexOf(0x0d, start);
    if (cr >= 0 && (nl < 0 || cr < nl)) nl = cr;
    const line = pending.subarray(start, nl < 0 ? pending.length : nl);
    let rest = nl < 0 ? Buffer.alloc(0) : pending.subarray(nl + 1);
    if (rest[0] === 0x0a && pending[nl] === 0x0d) rest = rest.subarray(1);
    rowBase += records + 1;
    out.push({ kind: 'error', row: rowBase, message: describeParseError(err), raw: truncate(line.subarray(0, RAW_LIMIT * 4).toString('utf8'), RAW_LIMIT) });
    if (++recoveries > MAX_RECOVERIES) throw new CsvFatalError(`More than ${MAX_RECOVERIES} rows with unbalanced quotes: this does not look like CSV with "${delimiter === '\t' ? '\\t' : delimiter}" as delimiter`);
    fresh();
    return rest;
  };
  const feed = async (buf: Buffer): Promise<void> => {
    let next: Buffer | null = buf;
    while (next) {
      const chunk: Buffer = next;
      next = null;
      if (!chunk.length) break;
      retained.push(chunk);
      retainedBytes += chunk.length;
      const err = await write(chunk);
      if (err) { next = recover(err); continue; }
      trim();
      // No record ends in this much input (e.g. a line of millions of delimiters): give up on it.
      if (retainedBytes > 4 * MAX_RECORD_BYTES) {
        parser.destroy();
        next = recover(Object.assign(new Error('record too large'), { code: 'CSV_MAX_RECORD_SIZE' }));
      }
    }
  };

  fresh();
  for await (const chunk of source) {
    await feed(chunk);
    if (out.length) { yield out; out = []; }
  }
  for (;;) {
    const err = await end();
    if (!err) break;
    const rest = recover(err);
    await feed(rest);
  }
  if (out.length) yield out;
}

/** Column names from a header record: trimmed, blanks named `column_N`, repeats suffixed. */
function columnsFrom(header: string[] | null, width: number): string[] {
  if (!header) return Array.from({ length: width }, (_, i) => `column_${i + 1}`);
  const seen = new Map<string, number>();
  return header.map((h, i) => {
    const base = h.trim() || `column_${i + 1}`;
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base} (${n})`;
  });
}

// ---------------------------------------------------------------------------------------------
// Opening a source

interface Opened {
  /** The bytes, in chunks. */
  body: Readable;
  bytesTotal: number | null;
  /** Where to point the user when the content is wrong. */
  field: 'file' | 'url';
}

async function openSource(deps: Deps, organizationId: string, src: { id: string; type: string; url: string | null; file_size: number | null; uploaded_at: string | null }, opts: { forPreview?: boolean; signal?: AbortSignal } = {}): Promise<Opened> {
  if (src.type === 'csv_url') {
    const res = await fetchOutbound(src.url!, deps.config, { signal: opts.signal, headers: { accept: 'text/csv, text/plain;q=0.9, */*;q=0.5' } });
    if (!res.ok) {
      res.body.destroy();
      throw badRequest({ url: `The server answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}` }, 'Could not read the data source');
    }
    const len = Number(res.headers.get('content-length'));
    if (Number.isFinite(len) && len > deps.config.uploadLimitBytes && !opts.forPreview) {
      res.body.destroy();
      throw badRequest({ url: `The file is ${len} bytes, more than the limit of ${deps.config.uploadLimitBytes}` }, 'Could not read the data source');
    }
    return { body: res.body, bytesTotal: Number.isFinite(len) && len > 0 ? len : null, field: 'url' };
  }
  if (!src.uploaded_at) throw badRequest({ file: 'No file has been uploaded yet: POST one to /api/v1/data_sources/{id}/upload' }, 'No file');
  const body = createReadStream(uploadPath(deps, organizationId, src.id), { highWaterMark: 64 * 1024 });
  await new Promise<void>((res, rej) => {
    body.once('open', () => res());
    body.once('error', (err) => rej((err as { code?: string }).code === 'ENOENT' ? badRequest({ file: 'The uploaded file is missing: upload it again' }, 'No file') : err));
  });
  return { body, bytesTotal: src.file_size === null ? null : Number(src.file_size), field: 'file' };
}

const HEAD_BYTES = 8192;

/** A source's bytes: the head (judged to be text before anything is parsed), then the rest. */
interface Chunks {
  /** At least 8 KB, or the whole source when smaller; empty for an empty source. */
  head: Buffer;
  /** The head, then the remaining chunks. */
  all(): AsyncGenerator<Buffer>;
  /** Stops reading (idempotent). */
  close(): Promise<void>;
}

/**
 * Reads a source in counted chunks. The head is checked (`check` throws for what is not CSV)
 * before any of it is handed on. Past `limit.bytes` the source is cut (previews, quietly) or the
 * read fails (imports).
 */
async function readChunks(opened: Opened, check: (head: Buffer) => void, limit: { bytes: number; quiet: boolean }, onBytes: (n: number) => void = () => undefined): Promise<Chunks> {
  let n = 0;
  async function* counted(): AsyncGenerator<Buffer> {
    try {
      for await (const raw of opened.body) {
        const chunk = raw as Buffer;
        n += chunk.length;
        onBytes(n);
        if (n > limit.bytes && !limit.quiet) throw new CsvFatalError(`The file is larger than the limit of ${limit.bytes} bytes`);
        yield chunk;
        if (n > limit.bytes) return;
      }
    } finally {
      opened.body.destroy();
    }
  }
  const it = counted();
  const first: Buffer[] = [];
  let size = 0;
  let ended = false;
  try {
    while (size < HEAD_BYTES) {
      const r = await it.next();
      if (r.done) { ended = true; break; }
      first.push(r.value);
      size += r.value.length;
    }
    const head = Buffer.concat(first);
    if (head.length) check(head);
    return {
      head,
      async *all() {
        if (head.length) yield head;
        if (ended) return;
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          yield r.value;
        }
      },
      close: async () => { await it.return(undefined); },
    };
  } catch (err) {
    await it.return(undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// CRUD

export interface DataSourceInput {
  name: string;
  type: DataSourceType;
  url?: string | null;
  field_mapping?: FieldMapping;
  options?: Partial<SourceOptions>;
}

export function listDataSources(ctx: Ctx, input: PageInput & { type?: DataSourceType; search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = sourceQuery(ctx);
  if (input.type) query = query.where('d.type', '=', input.type);
  if (input.search) query = query.where(containsText('d.name', input.search));
  return paginate(ctx, { query, table: 'data_sources', scope: org, input, idColumn: 'd.id' }, presentSource);
}

export async function getDataSource(ctx: Ctx, id: string) {
  return presentSource(await sourceRow(ctx, id));
}

export async function createDataSource(ctx: Ctx, input: DataSourceInput) {
  const org = ctx.actor!.organizationId;
  if (input.type === 'csv_url') {
    if (!input.url) throw badRequest({ url: 'Required for csv_url data sources' });
    await assertOutboundUrl(input.url, ctx.deps.config);
  } else if (input.url) {
    throw badRequest({ url: 'Only csv_url data sources have a URL; upload the file of a csv_upload source to /api/v1/data_sources/{id}/upload' });
  }
  const mapping = input.field_mapping ?? {};
  validateMapping(mapping);
  const options: SourceOptions = { delimiter: input.options?.delimiter ?? null, has_header: input.options?.has_header ?? true };
  const now = nowIso();
  const id = newId('dsrc');
  await ctx.deps.db.kysely.insertInto('data_sources').values({
    id, organization_id: org, name: input.name, type: input.type, url: input.type === 'csv_url' ? input.url! : null,
    field_mapping: JSON.stringify(mapping), options: JSON.stringify(options), file_name: null, file_size: null, file_lines: null,
    uploaded_at: null, last_run_id: null, created_by: ctx.actor!.userId ?? ctx.actor!.id, created_at: now, updated_at: now,
  }).execute();
  ctx.deps.counts.invalidate(org, 'data_sources');
  return getDataSource(ctx, id);
}

export async function updateDataSource(ctx: Ctx, id: string, input: Partial<Omit<DataSourceInput, 'type'>>) {
  const current = await sourceRow(ctx, id);
  const set: Record<string, string | null> = {};
  if (input.name !== undefined) set.name = input.name;
  if (input.url !== undefined && input.url !== null) {
    if (current.type !== 'csv_url') throw badRequest({ url: 'Only csv_url data sources have a URL' });
    await assertOutboundUrl(input.url, ctx.deps.config);
    set.url = input.url;
  } else if (input.url === null && current.type === 'csv_url') {
    throw badRequest({ url: 'A csv_url data source needs its URL' });
  }
  if (input.field_mapping !== undefined) {
    validateMapping(input.field_mapping);
    set.field_mapping = JSON.stringify(input.field_mapping);
  }
  if (input.options !== undefined) {
    const merged = { ...parseOptions(current.options), ...Object.fromEntries(Object.entries(input.options).filter(([, v]) => v !== undefined)) };
    set.options = JSON.stringify(merged);
  }
  if (Object.keys(set).length) {
    await ctx.deps.db.kysely.updateTable('data_sources').set({ ...set, updated_at: nowIso() })
      .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  }
  return getDataSource(ctx, id);
}

/**
 * Deletes the source, its runs and their errors, and its file. An import in progress stops at
 * its next batch (it finds its run gone); a queued one does nothing.
 */
export async function deleteDataSource(ctx: Ctx, id: string) {
  const org = ctx.actor!.organizationId;
  await sourceRow(ctx, id);
  await ctx.deps.db.kysely.deleteFrom('data_sources').where('id', '=', id).where('organization_id', '=', org).execute();
  await unlink(uploadPath(ctx.deps, org, id)).catch(() => undefined);
  ctx.deps.counts.invalidate(org, 'data_sources');
  ctx.deps.counts.invalidate(org, 'data_source_runs');
  return { id, deleted: true as const };
}

// ---------------------------------------------------------------------------------------------
// Uploads

/** Counts bytes and lines of what passes, and refuses what is not text. */
class Inspector extends Transform {
  bytes = 0;
  newlines = 0;
  last = -1;
  private head: Buffer | null = Buffer.alloc(0);
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    if (this.head) {
      this.head = Buffer.concat([this.head, chunk]);
      if (this.head.length >= 8192) {
        const why = notCsvReason(this.head);
        this.head = null;
        if (why) { cb(badRequest({ file: why }, 'Not a CSV file')); return; }
      }
    }
    this.bytes += chunk.length;
    for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) this.newlines++;
    if (chunk.length) this.last = chunk[chunk.length - 1];
    cb(null, chunk);
  }
  override _flush(cb: (err?: Error | null) => void): void {
    const why = this.head ? notCsvReason(this.head) : null;
    cb(why ? badRequest({ file: why }, 'Not a CSV file') : null);
  }
}

const cleanFileName = (name: string | undefined) => truncate([...basename(name ?? '')].filter((ch) => ch >= ' ' && ch !== '\u007f').join('').trim(), 255) || 'upload.csv';

/**
 * Stores the file of a csv_upload source, streamed to `<dataDir>/imports/<org>/<id>.csv` through a
 * temporary file (a refused or cut-off upload leaves the previous file in place). `truncated()`
 * tells whether the multipart limit cut the stream.
 */
export async function saveUpload(ctx: Ctx, id: string, file: { filename?: string; stream: Readable; truncated?: () => boolean }) {
  const org = ctx.actor!.organizationId;
  const src = await sourceRow(ctx, id);
  if (src.type !== 'csv_upload') {
    file.stream.resume();
    throw badRequest({ type: 'This data source reads its URL; only csv_upload sources take a file' });
  }
  const finalPath = uploadPath(ctx.deps, org, id);
  await mkdir(join(finalPath, '..'), { recursive: true });
  const tmp = `${finalPath}.${randomBytes(6).toString('hex')}.part`;
  const inspector = new Inspector();
  try {
    await pipeline(file.stream, inspector, createWriteStream(tmp));
    if (file.truncated?.()) throw new AppError(413, 'Payload too large', { file: `At most ${ctx.deps.config.uploadLimitBytes} bytes` });
    if (inspector.bytes === 0) throw badRequest({ file: 'The file is empty' });
    await rename(tmp, finalPath);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    if ((err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw new AppError(413, 'Payload too large', { file: `At most ${ctx.deps.config.uploadLimitBytes} bytes` });
    throw err;
  }
  const lines = inspector.newlines + (inspector.last === 0x0a ? 0 : 1);
  const now = nowIso();
  await ctx.deps.db.kysely.updateTable('data_sources')
    .set({ file_name: cleanFileName(file.filename), file_size: inspector.bytes, file_lines: lines, uploaded_at: now, updated_at: now })
    .where('id', '=', id).where('organization_id', '=', org).execute();
  return getDataSource(ctx, id);
}

// ---------------------------------------------------------------------------------------------
// Preview

export interface PreviewInput { field_mapping?: FieldMapping; delimiter?: string; has_header?: boolean; limit?: number }

/**
 * The first rows (up to 20) as parsed, the columns, a proposed mapping and what the rows would
 * import as — reading only the start of the file. Rows that cannot be parsed or mapped are
 * reported one by one; a file that is not CSV text is a 400.
 */
export async function previewDataSource(ctx: Ctx, id: string, input: PreviewInput = {}) {
  const org = ctx.actor!.organizationId;
  const src = await sourceRow(ctx, id);
  if (input.field_mapping) validateMapping(input.field_mapping);
  const stored = parseOptions(src.options);
  const hasHeader = input.has_header ?? stored.has_header;
  const limit = Math.min(input.limit ?? PREVIEW_ROWS, PREVIEW_ROWS);
  const opened = await openSource(ctx.deps, org, src, { forPreview: true });
  const check = (head: Buffer) => { const why = notCsvReason(head); if (why) throw badRequest({ [opened.field]: why }, 'Not a CSV file'); };

  // The head decides the delimiter; it is judged to be text before anything is parsed.
  const chunks = await readChunks(opened, check, { bytes: PREVIEW_MAX_BYTES, quiet: true });
  const head = chunks.head;
  if (!head.length) { await chunks.close(); throw badRequest({ [opened.field]: 'The file is empty' }, 'Not a CSV file'); }
  const delimiter = input.delimiter ?? stored.delimiter ?? detectDelimiter(head);

  let header: string[] | null = null;
  const rows: { row_number: number; values: string[] }[] = [];
  const errors: { row_number: number; message: string; raw: string }[] = [];
  const events = csvEvents(chunks.all(), delimiter);
  try {
    outer: for await (const batch of events) {
      for (const e of batch) {
        if (e.kind === 'error') {
          if (hasHeader && !header) throw badRequest({ [opened.field]: `The header row cannot be parsed: ${e.message}` }, 'Not a CSV file');
          errors.push({ row_number: e.row, message: e.message, raw: e.raw });
          if (rows.length + errors.length >= limit) break outer;
          continue;
        }
        if (hasHeader && !header) { header = e.values; continue; }
        rows.push({ row_number: e.row, values: e.values });
        if (rows.length + errors.length >= limit) break outer;
      }
    }
  } catch (err) {
    if (err instanceof CsvFatalError) throw badRequest({ [opened.field]: err.message }, 'Not a CSV file');
    throw err;
  } finally {
    await events.return(undefined);
    await chunks.close();
  }
  const columns = columnsFrom(header, header ? header.length : (rows[0]?.values.length ?? 0));
  const proposed = proposeMapping(columns, hasHeader, rows.map((r) => r.values));
  const storedMapping = JSON.parse(src.field_mapping) as FieldMapping;
  const mapping = input.field_mapping ?? (Object.keys(storedMapping).length ? storedMapping : proposed);
  const { plan, missing } = planFor(columns, mapping);
  const mappingErrors: Record<string, string> = {};
  for (const m of missing) mappingErrors[m] = 'No such column in the file';
  if (!Object.values(mapping).includes('email')) mappingErrors._ = 'No column maps to email: contacts are matched by e-mail';

  const contacts: { row_number: number; contact: ImportedContact | null; status: 'import' | 'skip' | 'error'; error: string | null }[] = [];
  for (const r of rows) {
    const m = mapRecord(r.values, plan);
    if (m.kind === 'error') errors.push({ row_number: r.row_number, message: m.message, raw: rawOf(r.values, delimiter) });
    contacts.push({
      row_number: r.row_number,
      contact: m.kind === 'contact' ? truncateContact(m.contact) : null,
      status: m.kind === 'contact' ? 'import' : m.kind,
      error: m.kind === 'error' ? m.message : null,
    });
  }
  errors.sort((a, b) => a.row_number - b.row_number);
  return {
    data_source_id: id,
    delimiter,
    has_header: hasHeader,
    columns,
    rows: rows.map((r) => ({ row_number: r.row_number, values: r.values.map((v) => truncate(v, PREVIEW_CELL)) })),
    errors,
    proposed_field_mapping: proposed,
    field_mapping: mapping,
    mapping_errors: mappingErrors,
    unmapped_columns: columns.filter((c) => !(c in mapping)),
    contacts,
    row_estimate: src.type === 'csv_upload' ? rowEstimate(src.file_lines, hasHeader) : null,
  };
}

function truncateContact(c: ImportedContact): ImportedContact {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(c)) {
    if (typeof v === 'string') out[k] = truncate(v, PREVIEW_CELL);
    else if (Array.isArray(v)) out[k] = v.map((x) => truncate(String(x), PREVIEW_CELL));
    else out[k] = Object.fromEntries(Object.entries(v as Record<string, string>).map(([kk, vv]) => [kk, truncate(vv, PREVIEW_CELL)]));
  }
  return out as ImportedContact;
}

// ---------------------------------------------------------------------------------------------
// Runs

const RUN_COLUMNS = [
  'id', 'data_source_id', 'status', 'field_mapping', 'options', 'rows_processed', 'rows_total', 'bytes_read', 'bytes_total',
  'created_count', 'updated_count', 'skipped_count', 'error_count', 'failure_reason', 'started_at', 'finished_at', 'created_at', 'updated_at',
] as const;
interface RunRow {
  id: string; data_source_id: string; status: string; field_mapping: string; options: string;
  rows_processed: number; rows_total: number | null; bytes_read: number; bytes_total: number | null;
  created_count: number; updated_count: number; skipped_count: number; error_count: number;
  failure_reason: string | null; started_at: string | null; finished_at: string | null; created_at: string; updated_at: string;
}
export interface RunError { row_number: number; message: string; raw: string }

function presentRun(r: RunRow, errors: RunError[], stored: number) {
  const bytesRead = Number(r.bytes_read);
  const bytesTotal = r.bytes_total === null ? null : Number(r.bytes_total);
  const progress = r.status === 'succeeded' ? 100 : bytesTotal ? Math.min(100, Math.floor((bytesRead / bytesTotal) * 1000) / 10) : r.status === 'queued' ? 0 : null;
  return {
    id: r.id,
    data_source_id: r.data_source_id,
    status: r.status as RunStatus,
    field_mapping: JSON.parse(r.field_mapping) as FieldMapping,
    options: parseOptions(r.options),
    progress,
    rows_processed: Number(r.rows_processed),
    rows_total: r.rows_total === null ? null : Number(r.rows_total),
    bytes_read: bytesRead,
    bytes_total: bytesTotal,
    created_count: Number(r.created_count),
    updated_count: Number(r.updated_count),
    skipped_count: Number(r.skipped_count),
    error_count: Number(r.error_count),
    errors_stored: stored,
    errors,
    failure_reason: r.failure_reason,
    started_at: r.started_at,
    finished_at: r.finished_at,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}
export type DataSourceRun = ReturnType<typeof presentRun>;

export interface RunInput { data_source_id: string; field_mapping?: FieldMapping }

/** Reads the header of an uploaded file (first record), or null when the file has none. */
async function headerOf(ctx: Ctx, src: SourceRow, options: SourceOptions): Promise<{ columns: string[]; sample: string[][]; delimiter: string }> {
  const opened = await openSource(ctx.deps, ctx.actor!.organizationId, src, { forPreview: true });
  const chunks = await readChunks(opened, () => undefined, { bytes: PREVIEW_MAX_BYTES, quiet: true });
  const delimiter = options.delimiter ?? detectDelimiter(chunks.head);
  let header: string[] | null = null;
  const sample: string[][] = [];
  const events = csvEvents(chunks.all(), delimiter);
  try {
    outer: for await (const batch of events) {
      for (const e of batch) {
        if (e.kind !== 'record') continue;
        if (options.has_header && !header) { header = e.values; continue; }
        sample.push(e.values);
        if (sample.length >= 20) break outer;
      }
    }
  } catch {
    // The run reports parse problems; here only the columns matter.
  } finally {
    await events.return(undefined);
    await chunks.close();
  }
  const width = header ? header.length : (sample[0]?.length ?? 0);
  return { columns: columnsFrom(header, width), sample, delimiter };
}

/**
 * Starts an import: the run is stored as queued and its job enqueued in one transaction (one
 * import per data source at a time). With an uploaded file, the mapping is checked against the
 * file's columns now; with a URL, when the run reads it.
 */
/** The job that carries a run (for running it inline, as the CLI does). */
export async function runJobId(ctx: Ctx, runId: string): Promise<string | null> {
  const row = await ctx.deps.db.kysely.selectFrom('data_source_runs').select('job_id')
    .where('id', '=', runId).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  return row?.job_id ?? null;
}

export async function startRun(ctx: Ctx, input: RunInput) {
  const org = ctx.actor!.organizationId;
  const src = await sourceRow(ctx, input.data_source_id);
  if (input.field_mapping) validateMapping(input.field_mapping);
  const options = parseOptions(src.options);
  let mapping: FieldMapping = input.field_mapping ?? JSON.parse(src.field_mapping);
  let rowsTotal: number | null = null;
  let bytesTotal: number | null = null;
  if (src.type === 'csv_upload') {
    if (!src.uploaded_at) throw badRequest({ data_source_id: 'This data source has no file yet: upload one to /api/v1/data_sources/{id}/upload first' }, 'No file');
    const { columns, sample } = await headerOf(ctx, src, options);
    if (!Object.keys(mapping).length) mapping = proposeMapping(columns, options.has_header, sample);
    const { missing } = planFor(columns, mapping);
    if (missing.length) throw badRequest(Object.fromEntries(missing.map((m) => [`field_mapping.${m}`, `No such column in the file (columns: ${truncate(columns.join(', '), 300)})`])));
    rowsTotal = rowEstimate(src.file_lines, options.has_header);
    bytesTotal = src.file_size === null ? null : Number(src.file_size);
  }
  if (Object.keys(mapping).length && !Object.values(mapping).includes('email')) {
    throw badRequest({ field_mapping: 'Map one column to email: contacts are matched by e-mail' });
  }
  if (!Object.keys(mapping).length && src.type === 'csv_upload') {
    throw badRequest({ field_mapping: 'No column could be matched to a contact field: give a field_mapping' });
  }
  const id = newId('dsr');
  const jobId = newId('job');
  const now = nowIso();
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    await trx.insertInto('data_source_runs').values({
      id, organization_id: org, data_source_id: src.id, job_id: jobId, status: 'queued', field_mapping: JSON.stringify(mapping),
      options: JSON.stringify(options), rows_total: rowsTotal, bytes_total: bytesTotal, failure_reason: null,
      created_by: ctx.actor!.userId ?? ctx.actor!.id, started_at: null, finished_at: null, created_at: now, updated_at: now,
    }).execute();
    await trx.updateTable('data_sources').set({ last_run_id: id }).where('id', '=', src.id).where('organization_id', '=', org).execute();
    await enqueue(trx, {
      id: jobId, type: IMPORT_JOB, payload: { run_id: id }, organizationId: org,
      concurrencyKey: `data_source:${src.id}`, concurrencyLimit: 1, maxAttempts: 3,
    });
  });
  ctx.deps.counts.invalidate(org, 'data_source_runs');
  return getRun(ctx, id);
}

export interface RunQuery { errors_limit?: number; errors_offset?: number }

/** A run with its stored errors, `errors_limit` (default 100, at most 1000) from `errors_offset`. */
export async function getRun(ctx: Ctx, id: string, q: RunQuery = {}) {
  const db = ctx.deps.db.kysely;
  const org = ctx.actor!.organizationId;
  const row = await db.selectFrom('data_source_runs').select(RUN_COLUMNS).where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (!row) throw notFound('Data source run');
  const limit = Math.min(q.errors_limit ?? 100, MAX_STORED_ERRORS);
  const errors = limit === 0 ? [] : await db.selectFrom('data_source_run_errors').select(['row_number', 'message', 'raw'])
    .where('run_id', '=', id).orderBy('seq').limit(limit).offset(q.errors_offset ?? 0).execute();
  const stored = Math.min(Number(row.error_count), MAX_STORED_ERRORS);
  return presentRun(row, errors.map((e) => ({ ...e, row_number: Number(e.row_number) })), stored);
}

export function listRuns(ctx: Ctx, input: PageInput & { data_source_id?: string; status?: RunStatus }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('data_source_runs').select(RUN_COLUMNS).where('organization_id', '=', org);
  if (input.data_source_id) query = query.where('data_source_id', '=', input.data_source_id);
  if (input.status) query = query.where('status', '=', input.status);
  return paginate(ctx, { query, table: 'data_source_runs', scope: org, input }, (r) => presentRun(r, [], Math.min(Number(r.error_count), MAX_STORED_ERRORS)));
}

// ---------------------------------------------------------------------------------------------
// The import job

class RunGone extends Error {}

interface Counters { rows: number; created: number; updated: number; skipped: number; errors: number; bytes: number }

/**
 * Imports one run: streams the source through csv-parse, maps each record, upserts contacts
 * `BATCH_SIZE` at a time through the contacts service, and after each batch writes progress and
 * the new row errors (the first `MAX_STORED_ERRORS` are kept) and extends the job's lease. A bad
 * row is counted and reported, never fatal; a source that cannot be read fails the run with the
 * reason. Restarted after a crash, the run starts over (upserts make that safe).
 */
export async function runImportJob({ deps, job, signal, heartbeat }: JobContext): Promise<unknown> {
  const db = deps.db.kysely;
  const runId = String(job.payload.run_id ?? '');
  const run = await db.selectFrom('data_source_runs').selectAll().where('id', '=', runId).executeTakeFirst();
  if (!run || run.status === 'succeeded' || run.status === 'failed') return { skipped: true };
  const org = run.organization_id;
  const src = await db.selectFrom('data_sources').select(['id', 'type', 'url', 'file_size', 'uploaded_at', 'options'])
    .where('id', '=', run.data_source_id).where('organization_id', '=', org).executeTakeFirst();
  const finish = async (status: 'succeeded' | 'failed', reason: string | null, c?: Counters) => {
    const now = nowIso();
    await db.updateTable('data_source_runs').set({
      status, failure_reason: reason, finished_at: now, updated_at: now,
      ...(c ? { rows_processed: c.rows, created_count: c.created, updated_count: c.updated, skipped_count: c.skipped, error_count: c.errors, bytes_read: c.bytes } : {}),
    }).where('id', '=', runId).execute();
  };
  if (!src) { await finish('failed', 'The data source was deleted'); return { failed: true }; }

  // A fresh start (also after a crash or a retry).
  const started = nowIso();
  await db.deleteFrom('data_source_run_errors').where('run_id', '=', runId).execute();
  await db.updateTable('data_source_runs').set({
    status: 'running', started_at: run.started_at ?? started, finished_at: null, failure_reason: null, rows_processed: 0, bytes_read: 0,
    created_count: 0, updated_count: 0, skipped_count: 0, error_count: 0, updated_at: started,
  }).where('id', '=', runId).execute();

  const c: Counters = { rows: 0, created: 0, updated: 0, skipped: 0, errors: 0, bytes: 0 };
  try {
    await importRows(deps, { org, runId, src, mapping: JSON.parse(run.field_mapping), options: parseOptions(run.options), signal, heartbeat }, c);
    await finish('succeeded', null, c);
    return { rows: c.rows, created: c.created, updated: c.updated, skipped: c.skipped, errors: c.errors };
  } catch (err) {
    if (err instanceof RunGone) return { deleted: true };
    if (signal.aborted) throw err;
    const reason = err instanceof AppError ? failureText(err) : err instanceof CsvFatalError ? err.message : (err as Error)?.message ?? String(err);
    const permanent = err instanceof AppError || err instanceof CsvFatalError;
    if (permanent || job.attempts >= job.max_attempts) {
      await finish('failed', reason, c).catch(() => undefined);
      throw new PermanentJobError(reason);
    }
    // Retried by the queue: the run shows queued again until then.
    await db.updateTable('data_source_runs').set({ status: 'queued', failure_reason: `Attempt ${job.attempts} failed (${reason}); retrying`, updated_at: nowIso() })
      .where('id', '=', runId).execute().catch(() => undefined);
    throw err;
  }
}

function failureText(err: AppError): string {
  const d = err.details;
  if (typeof d === 'string' && d) return `${err.message}: ${d}`;
  if (d && typeof d === 'object' && !Array.isArray(d)) return `${err.message}: ${Object.values(d).map(String).join('; ')}`;
  return err.message;
}

interface ImportSpec {
  org: string; runId: string;
  src: { id: string; type: string; url: string | null; file_size: number | null; uploaded_at: string | null };
  mapping: FieldMapping; options: SourceOptions; signal: AbortSignal; heartbeat: () => Promise<void>;
}

async function importRows(deps: Deps, spec: ImportSpec, c: Counters): Promise<void> {
  const db = deps.db.kysely;
  const opened = await openSource(deps, spec.org, spec.src, { signal: spec.signal });
  if (opened.bytesTotal !== null) {
    await db.updateTable('data_source_runs').set({ bytes_total: opened.bytesTotal }).where('id', '=', spec.runId).execute();
  }
  const check = (head: Buffer) => { const why = notCsvReason(head); if (why) throw new CsvFatalError(why); };
  const chunks = await readChunks(opened, check, { bytes: deps.config.uploadLimitBytes, quiet: false }, (n) => { c.bytes = n; });
  try {
    await importChunks(deps, spec, c, chunks);
  } finally {
    await chunks.close();
  }
}

async function importChunks(deps: Deps, spec: ImportSpec, c: Counters, chunks: Chunks): Promise<void> {
  const db = deps.db.kysely;
  if (!chunks.head.length) throw new CsvFatalError('The file is empty');
  // The delimiter, when not given, is detected from the head; the run shows the one used.
  const delimiter = spec.options.delimiter ?? detectDelimiter(chunks.head);
  if (delimiter !== spec.options.delimiter) {
    await db.updateTable('data_source_runs').set({ options: JSON.stringify({ ...spec.options, delimiter }) }).where('id', '=', spec.runId).execute();
  }

  let header: string[] | null = null;
  let plan: Plan | null = null;
  let batch: { row: number; values: string[]; contact: ImportedContact }[] = [];
  let newErrors: RunError[] = [];
  let sinceFlush = 0;

  const addError = (e: RunError) => {
    c.errors++;
    if (c.errors <= MAX_STORED_ERRORS) newErrors.push({ row_number: e.row_number, message: truncate(e.message, 1000), raw: e.raw });
  };
  const resolvePlan = async (columns: string[], sample: string[][]) => {
    const mapping = Object.keys(spec.mapping).length ? spec.mapping : proposeMapping(columns, spec.options.has_header, sample);
    if (!Object.keys(mapping).length) throw new CsvFatalError('No column could be matched to a contact field: give a field_mapping');
    if (!Object.values(mapping).includes('email')) throw new CsvFatalError('No column maps to email: contacts are matched by e-mail');
    const r = planFor(columns, mapping);
    if (r.missing.length) throw new CsvFatalError(`The field mapping names columns the file does not have: ${r.missing.map((m) => JSON.stringify(m)).join(', ')} (columns: ${truncate(columns.join(', '), 300)})`);
    if (mapping !== spec.mapping) await db.updateTable('data_source_runs').set({ field_mapping: JSON.stringify(mapping) }).where('id', '=', spec.runId).execute();
    return r.plan;
  };
  const flush = async () => {
    if (batch.length) {
      const rows = batch;
      batch = [];
      const result = await upsertContacts(deps, spec.org, rows.map((r) => r.contact));
      c.created += result.created;
      c.updated += result.updated;
      for (const r of result.results) {
        if (r.error) addError({ row_number: rows[r.index].row, message: r.error, raw: rawOf(rows[r.index].values, delimiter) });
      }
    }
    const errs = newErrors;
    newErrors = [];
    sinceFlush = 0;
    await db.transaction().execute(async (trx) => {
      const u = await trx.updateTable('data_source_runs').set({
        rows_processed: c.rows, bytes_read: c.bytes, created_count: c.created, updated_count: c.updated, skipped_count: c.skipped,
        error_count: c.errors, updated_at: nowIso(),
      }).where('id', '=', spec.runId).executeTakeFirst();
      if (Number(u.numUpdatedRows) === 0) throw new RunGone();
      if (errs.length) {
        const seq0 = await trx.selectFrom('data_source_run_errors').select((eb) => eb.fn.max('seq').as('m')).where('run_id', '=', spec.runId).executeTakeFirst();
        let seq = Number(seq0?.m ?? 0);
        for (let i = 0; i < errs.length; i += 200) {
          await trx.insertInto('data_source_run_errors').values(errs.slice(i, i + 200).map((e) => ({
            run_id: spec.runId, seq: ++seq, organization_id: spec.org, row_number: e.row_number, message: e.message, raw: e.raw,
          }))).execute();
        }
      }
    });
    await spec.heartbeat();
  };

  const pendingHeaderless: { row: number; values: string[] }[] = [];
  const handle = async (row: number, values: string[]) => {
    c.rows++;
    sinceFlush++;
    const m = mapRecord(values, plan!);
    if (m.kind === 'contact') batch.push({ row, values, contact: m.contact });
    else if (m.kind === 'skip') c.skipped++;
    else addError({ row_number: row, message: m.message, raw: rawOf(values, delimiter) });
    if (batch.length >= BATCH_SIZE || sinceFlush >= BATCH_SIZE) await flush();
  };

  for await (const events of csvEvents(chunks.all(), delimiter)) {
    if (spec.signal.aborted) throw spec.signal.reason ?? new Error('aborted');
    for (const e of events) {
      if (e.kind === 'error') {
        if (spec.options.has_header && !header) throw new CsvFatalError(`The header row cannot be parsed: ${e.message}`);
        c.rows++;
        sinceFlush++;
        addError({ row_number: e.row, message: e.message, raw: e.raw });
        continue;
      }
      if (!plan) {
        if (spec.options.has_header) {
          header = e.values;
          plan = await resolvePlan(columnsFrom(header, header.length), []);
          continue;
        }
        // No header: the columns are those of the first row, the sample its first rows.
        pendingHeaderless.push({ row: e.row, values: e.values });
        if (pendingHeaderless.length < 20) continue;
        plan = await resolvePlan(columnsFrom(null, pendingHeaderless[0].values.length), pendingHeaderless.map((p) => p.values));
        for (const p of pendingHeaderless.splice(0)) await handle(p.row, p.values);
        continue;
      }
      await handle(e.row, e.values);
    }
    if (sinceFlush >= BATCH_SIZE) await flush();
  }
  if (!plan && pendingHeaderless.length) {
    plan = await resolvePlan(columnsFrom(null, pendingHeaderless[0].values.length), pendingHeaderless.map((p) => p.values));
    for (const p of pendingHeaderless.splice(0)) await handle(p.row, p.values);
  }
  if (!plan && spec.options.has_header && !header) throw new CsvFatalError('The file has no header row');
  await flush();
}

defineJob(IMPORT_JOB, runImportJob);
