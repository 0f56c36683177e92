import type { Kysely } from 'kysely';

// Data sources and their import runs. Frozen once landed.
// Same schema on SQLite and PostgreSQL: text ids, ISO timestamps, JSON as text.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('data_sources')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('url', 'text')
    .addColumn('field_mapping', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('options', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('file_name', 'text')
    .addColumn('file_size', 'bigint')
    .addColumn('file_lines', 'bigint')
    .addColumn('uploaded_at', 'text')
    .addColumn('last_run_id', 'text')
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('data_sources_org_idx').on('data_sources').columns(['organization_id', 'id']).execute();

  await db.schema.createTable('data_source_runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('data_source_id', 'text', (c) => c.notNull().references('data_sources.id').onDelete('cascade'))
    .addColumn('job_id', 'text')
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('field_mapping', 'text', (c) => c.notNull())
    .addColumn('options', 'text', (c) => c.notNull())
    .addColumn('rows_processed', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('rows_total', 'bigint')
    .addColumn('bytes_read', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('bytes_total', 'bigint')
    .addColumn('created_count', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('updated_count', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('skipped_count', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('error_count', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('failure_reason', 'text')
    .addColumn('created_by', 'text')
    .addColumn('started_at', 'text')
    .addColumn('finished_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('data_source_runs_org_idx').on('data_source_runs').columns(['organization_id', 'id']).execute();
  await db.schema.createIndex('data_source_runs_source_idx').on('data_source_runs').columns(['data_source_id', 'status']).execute();

  await db.schema.createTable('data_source_run_errors')
    .addColumn('run_id', 'text', (c) => c.notNull().references('data_source_runs.id').onDelete('cascade'))
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('row_number', 'bigint', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('raw', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('data_source_run_errors_pk', ['run_id', 'seq'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('data_source_run_errors').execute();
  await db.schema.dropTable('data_source_runs').execute();
  await db.schema.dropTable('data_sources').execute();
}
