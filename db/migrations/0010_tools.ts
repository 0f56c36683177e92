import { PostgresAdapter, sql, type Kysely } from 'kysely';

// Tools (HTTP tools an agent may call) and memories (what agents remember, searched by full
// text). Frozen once landed.
//
// Identical tables on SQLite and PostgreSQL: text ids and ISO timestamps, 0/1 integers, JSON as
// text. Only the full-text index differs by engine:
// - SQLite: `memories_fts`, an FTS5 external-content table over `memories.content` (keyed by the
//   table's rowid), kept in sync by triggers and ranked with bm25(). A VACUUM may renumber the
//   rowids of a table without an INTEGER PRIMARY KEY: after one, run
//   `INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')`.
// - PostgreSQL: a GIN expression index on `to_tsvector('english', content)`, ranked with ts_rank().

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  const pg = db.getExecutor().adapter instanceof PostgresAdapter;

  await db.schema.createTable('tools')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    // The name the model sees: ^[a-zA-Z][a-zA-Z0-9_-]{0,63}$, unique in the organization.
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    // http (MCP tools come later)
    .addColumn('kind', 'text', (c) => c.notNull().defaultTo('http'))
    .addColumn('method', 'text', (c) => c.notNull().defaultTo('GET'))
    // `{{name}}` placeholders are filled from the input (URL-encoded).
    .addColumn('url_template', 'text', (c) => c.notNull())
    // JSON object: header name → value; values may reference `{{secrets.NAME}}` (resolved at call time).
    .addColumn('headers', 'text', (c) => c.notNull().defaultTo('{}'))
    // JSON Schema (an object schema) of the input.
    .addColumn('input_schema', 'text', (c) => c.notNull().defaultTo('{"type":"object"}'))
    .addColumn('timeout_ms', 'integer', (c) => c.notNull().defaultTo(10_000))
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('tools_org_name_uq', ['organization_id', 'name'])
    .execute();
  await db.schema.createIndex('tools_org_idx').on('tools').columns(['organization_id', 'id']).execute();

  await db.schema.createTable('memories')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    // Null: shared by the organization's agents.
    .addColumn('agent_id', 'text', (c) => c.references('agents.id').onDelete('cascade'))
    .addColumn('namespace', 'text', (c) => c.notNull().defaultTo('default'))
    .addColumn('content', 'text', (c) => c.notNull())
    // JSON object.
    .addColumn('metadata', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('memories_org_idx').on('memories').columns(['organization_id', 'id']).execute();
  await db.schema.createIndex('memories_org_ns_idx').on('memories').columns(['organization_id', 'namespace', 'id']).execute();
  await db.schema.createIndex('memories_agent_idx').on('memories').columns(['agent_id', 'namespace', 'id']).execute();

  if (pg) {
    await sql`create index memories_content_fts_idx on memories using gin (to_tsvector('english', content))`.execute(db);
  } else {
    await sql`create virtual table memories_fts using fts5(content, content='memories', content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2')`.execute(db);
    await sql`create trigger memories_fts_ai after insert on memories begin
      insert into memories_fts(rowid, content) values (new.rowid, new.content);
    end`.execute(db);
    await sql`create trigger memories_fts_ad after delete on memories begin
      insert into memories_fts(memories_fts, rowid, content) values ('delete', old.rowid, old.content);
    end`.execute(db);
    await sql`create trigger memories_fts_au after update of content on memories begin
      insert into memories_fts(memories_fts, rowid, content) values ('delete', old.rowid, old.content);
      insert into memories_fts(rowid, content) values (new.rowid, new.content);
    end`.execute(db);
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  const pg = db.getExecutor().adapter instanceof PostgresAdapter;
  if (!pg) {
    for (const t of ['memories_fts_au', 'memories_fts_ad', 'memories_fts_ai']) await sql`drop trigger if exists ${sql.ref(t)}`.execute(db);
    await sql`drop table if exists memories_fts`.execute(db);
  }
  await db.schema.dropTable('memories').execute();
  await db.schema.dropTable('tools').execute();
}
