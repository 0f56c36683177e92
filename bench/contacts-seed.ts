/**
 * Seeds one organization with a million contacts, as the app stores them, as fast as possible:
 *
 * - the schema comes from the real migrations (src/db.ts `openDatabase` + `migrate`), the
 *   organization and its API key from the service (bench/seed.ts `addOrganization`);
 * - rows come from bench/contacts-data.ts and every derived column is computed with the contacts
 *   service's own functions: `nameKey`, `normalizeEmail`, `dedupeKey`, `analyzeEmail` (against the
 *   same DNS answers bench/dns.ts serves), the flag order of `DATA_HEALTH_FLAGS`, the `stale`
 *   rule; ids are `newId('ctc')` (the service's prefix) minted at each contact's creation time,
 *   so ids and `created_at` agree and sort together;
 * - each contact's flags are also `contact_flags` rows, and `contact_facets` holds the counts
 *   the service maintains (total, city, esp, esg, email_validity, data_health_flag);
 * - speed: worker threads generate the rows in chunks of 25,000 (bench/contacts-rows.ts) while this
 *   thread inserts them in order, one prepared statement, one transaction per chunk; the indexes
 *   of `contacts` and `contact_flags` are dropped first and re-created after the load with the
 *   migration's own SQL (read back from sqlite_master); journal off and synchronous off while
 *   loading; the file is put back in WAL mode at the end. No ANALYZE (the app runs without
 *   statistics, so the planner sees what it sees in production).
 *
 * `verifyAgainstService` writes a sample through the service itself (upsertContacts and
 * createContactIn, DNS from bench/dns.ts) and compares every stored column, flag row and facet
 * count with what this seed computes for the same input.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import pino from 'pino';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { migrate, openDatabase } from '../src/db.js';
import { createContactIn, DATA_HEALTH_FLAGS, upsertContacts } from '../src/services/contacts.js';
import { CHUNK, ContactStream, world, type World } from './contacts-data.js';
import { analysisTable, derive, Facets, generateChunk, type Chunk, type ChunkParams } from './contacts-rows.js';
import { HERE, serverEnv, TMP } from './lib.js';
import { addOrganization } from './seed.js';

/**
 * The tables the seed writes. Only their schema is hashed: a migration of another domain does not
 * make the million rows stale (the app applies pending migrations to the working copy when it
 * starts), while a change to these tables or their indexes does.
 */
const SEEDED_TABLES = ['organizations', 'api_keys', 'contacts', 'contact_flags', 'contact_facets'];

/** Hash of what the seeded file depends on: the schema of the tables it writes and the seed's own code. */
export async function seedIdentity(contacts: number): Promise<string> {
  const db = await openDatabase({ url: ':memory:' });
  await migrate(db);
  const schema = (await sql`select type, name, sql from sqlite_master where tbl_name in (${sql.join(SEEDED_TABLES)}) order by name`.execute(db.kysely)).rows;
  await db.close();
  const h = createHash('sha256').update(JSON.stringify(schema)).update(String(contacts));
  for (const f of ['contacts-data.ts', 'contacts-rows.ts', 'contacts-gen-worker.ts', 'contacts-seed.ts']) h.update(readFileSync(join(HERE, f)));
  return h.digest('hex').slice(0, 12);
}

export interface ContactsSeed {
  path: string;
  org: { id: string; name: string; key: string };
  contacts: number;
  flagRows: number;
  workers: number;
  facets: Record<string, number>;
  ms: { total: number; schema: number; rows: number; flags: number; indexes: number; finish: number };
  bytes: number;
}

/** Seeds `path` (removed first) with `contacts` contacts in one organization. */
export async function seedContacts(path: string, contacts: number, opts: { workers?: number; onProgress?: (done: number) => void } = {}): Promise<ContactsSeed> {
  const { workers, onProgress } = opts;
  const t0 = performance.now();
  mkdirSync(dirname(path), { recursive: true });
  for (const suffix of ['', '-wal', '-shm', '-journal']) if (existsSync(path + suffix)) rmSync(path + suffix);
  const db = await openDatabase({ url: path });
  await migrate(db);
  const org = await addOrganization(db, 'Bench contacts organization');
  await db.close();
  const tSchema = performance.now();

  const raw = new BetterSqlite3(path);
  raw.pragma('journal_mode = DELETE');
  raw.pragma('journal_mode = OFF');
  raw.pragma('synchronous = OFF');
  raw.pragma('locking_mode = EXCLUSIVE');
  raw.pragma('cache_size = -1048576');
  raw.pragma('temp_store = MEMORY');
  raw.pragma('threads = 2');
  raw.pragma('foreign_keys = OFF');
  const indexes = raw.prepare("select name, sql from sqlite_master where type = 'index' and tbl_name in ('contacts', 'contact_flags') and sql is not null")
    .all() as { name: string; sql: string }[];
  for (const ix of indexes) raw.exec(`drop index "${ix.name}"`);

  const columns = (raw.prepare("select name from pragma_table_info('contacts') order by cid").all() as { name: string }[]).map((c) => c.name);
  const insert = raw.prepare(`insert into contacts (${columns.join(', ')}) values (${columns.map(() => '?').join(', ')})`);
  const facets = new Map<string, number>();
  const flagRows: Record<string, string[]> = Object.fromEntries(DATA_HEALTH_FLAGS.map((f) => [f, []]));
  const insertChunk = raw.transaction((rows: unknown[][]) => { for (const r of rows) insert.run(r); });

  // Rows are generated by worker threads, chunk by chunk, and inserted here in chunk order
  // (`workers` 0: generated here).
  const params: ChunkParams = { total: contacts, org: org.id, now: Date.now(), columns };
  const nChunks = Math.ceil(contacts / CHUNK);
  const nWorkers = Math.max(0, Math.min(workers ?? Math.min(availableParallelism(), 4), nChunks));
  const take = (c: Chunk, i: number) => {
    insertChunk(c.rows);
    for (const [k, n] of c.facets) facets.set(k, (facets.get(k) ?? 0) + n);
    for (const [f, ids] of Object.entries(c.flags)) for (const id of ids) flagRows[f].push(id);
    onProgress?.(Math.min(contacts, (i + 1) * CHUNK));
  };
  if (nWorkers === 0) {
    const w = world();
    const analyses = await analysisTable(w);
    for (let i = 0; i < nChunks; i++) take(generateChunk(w, analyses, params, i), i);
  } else {
    // tsx's loader is registered per thread: the worker registers it, then loads its TypeScript.
    const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(new URL('./contacts-gen-worker.ts', import.meta.url).href)}); })`;
    const pool = Array.from({ length: nWorkers }, () => new Worker(boot, { eval: true, workerData: params }));
    try {
      const done = new Map<number, Chunk>();
      let waiting: (() => void) | null = null;
      let failed: Error | null = null;
      let next = 0;
      const ask = (w: Worker) => { if (next < nChunks) w.postMessage(next++); };
      for (const w of pool) {
        w.on('message', (m: Chunk | 'ready') => {
          if (m === 'ready') { ask(w); ask(w); return; }
          done.set(m.index, m);
          ask(w);
          waiting?.();
        });
        w.on('error', (err) => { failed = err; waiting?.(); });
      }
      for (let i = 0; i < nChunks; i++) {
        while (!done.has(i)) {
          if (failed) throw failed;
          await new Promise<void>((r) => { waiting = r; });
          waiting = null;
        }
        const c = done.get(i)!;
        done.delete(i);
        take(c, i);
      }
    } finally {
      await Promise.all(pool.map((w) => w.terminate()));
    }
  }
  const tRows = performance.now();

  // Flag rows in primary-key order (organization_id, flag, contact_id): appends only.
  const insertFlag = raw.prepare('insert into contact_flags (organization_id, flag, contact_id) values (?, ?, ?)');
  let nFlags = 0;
  raw.transaction(() => {
    for (const flag of [...DATA_HEALTH_FLAGS].sort()) {
      for (const id of flagRows[flag]) { insertFlag.run(org.id, flag, id); nFlags++; }
    }
  })();
  const insertFacet = raw.prepare('insert into contact_facets (organization_id, facet, value, count) values (?, ?, ?, ?)');
  raw.transaction(() => {
    for (const [k, n] of facets) { const [facet, value] = k.split('\u0000'); insertFacet.run(org.id, facet, value, n); }
  })();
  const tFlags = performance.now();

  for (const ix of indexes) raw.exec(ix.sql);
  const tIndexes = performance.now();

  raw.pragma('locking_mode = NORMAL');
  raw.pragma('journal_mode = WAL');
  raw.pragma('wal_checkpoint(TRUNCATE)');
  raw.close();
  const tEnd = performance.now();
  return {
    path, org, contacts, flagRows: nFlags, workers: nWorkers,
    facets: Object.fromEntries([...facets].map(([k, v]) => [k.replace('\u0000', '='), v])),
    ms: { total: tEnd - t0, schema: tSchema - t0, rows: tRows - tSchema, flags: tFlags - tRows, indexes: tIndexes - tFlags, finish: tEnd - tIndexes },
    bytes: statSync(path).size,
  };
}

/** Consistency checks of a seeded file against the rules the service keeps (cheap at 1M: a few index scans). */
export function checkSeeded(path: string, org: string): string {
  const db = new BetterSqlite3(path, { readonly: true });
  try {
    const one = <T>(sqlText: string, ...p: unknown[]) => db.prepare(sqlText).pluck().get(...p) as T;
    const total = one<number>('select count(*) from contacts where organization_id = ?', org);
    const facetTotal = one<number>("select count from contact_facets where organization_id = ? and facet = 'total' and value = ''", org);
    const dupGroups = one<number>('select coalesce(sum(n), 0) from (select count(*) n from contacts where organization_id = ? and email_dedupe_key is not null group by email_dedupe_key having count(*) > 1)', org);
    const dupFlag = one<number>("select count(*) from contact_flags where organization_id = ? and flag = 'duplicate_email'", org);
    const flagRows = one<number>('select count(*) from contact_flags where organization_id = ?', org);
    const flagJson = one<number>("select coalesce(sum(json_array_length(data_health_flags)), 0) from contacts where organization_id = ?", org);
    const problems: string[] = [];
    if (total !== facetTotal) problems.push(`count ${total} ≠ facet total ${facetTotal}`);
    if (dupGroups !== dupFlag) problems.push(`${dupGroups} contacts share a dedupe key but ${dupFlag} carry duplicate_email`);
    if (flagRows !== flagJson) problems.push(`${flagRows} contact_flags rows for ${flagJson} flags in data_health_flags`);
    if (problems.length) throw new Error(`seeded file inconsistent: ${problems.join('; ')}`);
    return `${total.toLocaleString('en-US')} contacts = facet total; ${dupFlag.toLocaleString('en-US')} in duplicate groups = duplicate_email flags; `
      + `${flagRows.toLocaleString('en-US')} flag rows = flags in data_health_flags`;
  } finally {
    db.close();
  }
}

/**
 * Writes `n` generated contacts through the service (upsertContacts for those with an e-mail,
 * createContactIn for the others) into a scratch database, with DNS from `dnsServer`, and
 * compares each stored row, its flag rows and the facet counts with what `derive` computes.
 * Returns a one-line summary; throws on the first difference.
 */
export async function verifyAgainstService(w: World, dnsServer: string, n = 2000): Promise<string> {
  const path = join(TMP, 'contacts-verify.db');
  for (const suffix of ['', '-wal', '-shm']) if (existsSync(path + suffix)) rmSync(path + suffix);
  const config = loadConfig({ ...process.env, ...serverEnv(path), DNS_SERVERS: dnsServer, WORKERS_IN_PROCESS: 'false', LOG_LEVEL: 'silent' });
  const app = await buildApp(config, { logger: pino({ level: 'silent' }) });
  try {
    const org = await addOrganization(app.deps.db, 'Service sample');
    const stream = new ContactStream(w, 4242, n, 90_000_000);
    const gens = Array.from({ length: n }, (_, i) => stream.next(i)).map((g) => ({ ...g, dnsUnknown: false }));
    const withEmail = gens.map((g, i) => ({ g, i })).filter((x) => x.g.input.email);
    const ids = new Map<number, string>();
    const t0 = performance.now();
    const res = await upsertContacts(app.deps, org.id, withEmail.map((x) => x.g.input));
    for (const r of res.results) {
      if (r.error) throw new Error(`service refused sample row ${withEmail[r.index].i}: ${r.error}`);
      ids.set(withEmail[r.index].i, r.id!);
    }
    for (const [i, g] of gens.entries()) if (!g.input.email) ids.set(i, (await createContactIn(app.deps, org.id, g.input)).id);
    const ms = performance.now() - t0;

    const analyses = await analysisTable(w);
    const db = app.deps.db.kysely;
    const stored = new Map((await db.selectFrom('contacts').selectAll().where('organization_id', '=', org.id).execute()).map((r) => [r.id, r]));
    const flagRows = await db.selectFrom('contact_flags').select(['flag', 'contact_id']).where('organization_id', '=', org.id).execute();
    const flagsOf = new Map<string, string[]>();
    for (const f of flagRows) flagsOf.set(f.contact_id, [...(flagsOf.get(f.contact_id) ?? []), f.flag]);
    const facets = new Facets();
    const skip = new Set(['id', 'organization_id', 'created_at', 'updated_at', 'email_checked_at']);
    let compared = 0;
    for (const [i, g] of gens.entries()) {
      const id = ids.get(i)!;
      const got = stored.get(id) as unknown as Record<string, unknown>;
      const now = Date.parse(got.created_at as string);
      const want = derive(g, id, org.id, analyses, { created: now, updated: now, checked: now, now });
      facets.row(want.row, want.flags);
      for (const [k, v] of Object.entries(want.row)) {
        if (skip.has(k)) continue;
        if ((got[k] ?? null) !== v && Number(got[k]) !== v) throw new Error(`sample ${i} (${g.input.email}): ${k} is ${JSON.stringify(got[k])} through the service, ${JSON.stringify(v)} in the seed`);
      }
      if ((got.email_checked_at === null) !== (want.row.email_checked_at === null)) throw new Error(`sample ${i}: email_checked_at null-ness differs`);
      if (!id.startsWith('ctc_')) throw new Error(`sample ${i}: the service's id ${id} does not have the prefix the seed uses (ctc_)`);
      const gotFlags = (flagsOf.get(id) ?? []).sort().join(',');
      if (gotFlags !== [...want.flags].sort().join(',')) throw new Error(`sample ${i}: flag rows ${gotFlags} through the service, ${want.flags.join(',')} in the seed`);
      compared++;
    }
    const gotFacets = await db.selectFrom('contact_facets').select(['facet', 'value', 'count']).where('organization_id', '=', org.id).execute();
    const gotMap = new Map(gotFacets.filter((f) => Number(f.count) !== 0).map((f) => [`${f.facet}\u0000${f.value}`, Number(f.count)]));
    for (const [k, v] of facets.map) if (gotMap.get(k) !== v) throw new Error(`facet ${k.replace('\u0000', '=')}: ${gotMap.get(k)} through the service, ${v} in the seed`);
    if (gotMap.size !== facets.map.size) throw new Error(`the service keeps ${gotMap.size} facet counts, the seed ${facets.map.size}`);
    const dups = gens.filter((g) => g.duplicate).length;
    return `${compared} sample contacts written through the service (upsertContacts + createContactIn, DNS from the bench server, ${Math.round(ms)} ms) `
      + `match the seed's rows column for column (ids, timestamps aside), flag rows and ${facets.map.size} facet counts; ${dups} of them in duplicate pairs`;
  } finally {
    await app.close();
    for (const suffix of ['', '-wal', '-shm']) if (existsSync(path + suffix)) rmSync(path + suffix);
  }
}
