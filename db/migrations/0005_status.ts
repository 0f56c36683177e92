import type { Kysely } from 'kysely';

// Status page components, check samples, incidents. Frozen once landed.
// Platform-level: no organization column. Identical schema on SQLite and PostgreSQL.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('status_components')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('display_name', 'text', (c) => c.notNull())
    // builtin | http
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('url', 'text')
    .addColumn('expected_status', 'integer')
    .addColumn('timeout_ms', 'integer')
    .addColumn('maintenance', 'integer', (c) => c.notNull().defaultTo(0))
    // operational | degraded_performance | partial_outage | major_outage | under_maintenance
    .addColumn('current_status', 'text', (c) => c.notNull().defaultTo('operational'))
    .addColumn('last_check_status', 'text')
    .addColumn('last_error', 'text')
    .addColumn('last_checked', 'text')
    .addColumn('position', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();

  await db.schema.createTable('status_samples')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('component_id', 'text', (c) => c.notNull().references('status_components.id').onDelete('cascade'))
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('latency_ms', 'double precision')
    .addColumn('error', 'text')
    .addColumn('note', 'text')
    .addColumn('checked_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('status_samples_component_time_idx').on('status_samples').columns(['component_id', 'checked_at']).execute();

  await db.schema.createTable('status_hourly')
    .addColumn('component_id', 'text', (c) => c.notNull().references('status_components.id').onDelete('cascade'))
    .addColumn('hour', 'text', (c) => c.notNull())
    .addColumn('total', 'integer', (c) => c.notNull())
    .addColumn('good', 'integer', (c) => c.notNull())
    .addColumn('worst', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('status_hourly_pk', ['component_id', 'hour'])
    .execute();
  await db.schema.createIndex('status_hourly_hour_idx').on('status_hourly').columns(['hour', 'component_id']).execute();

  await db.schema.createTable('status_incidents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('title', 'text', (c) => c.notNull())
    // investigating | identified | monitoring | resolved
    .addColumn('status', 'text', (c) => c.notNull())
    // none | minor | major | critical
    .addColumn('impact', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('resolved_at', 'text')
    .execute();
  await db.schema.createIndex('status_incidents_status_idx').on('status_incidents').columns(['status', 'id']).execute();
  await db.schema.createIndex('status_incidents_resolved_idx').on('status_incidents').columns(['resolved_at']).execute();

  await db.schema.createTable('status_incident_components')
    .addColumn('incident_id', 'text', (c) => c.notNull().references('status_incidents.id').onDelete('cascade'))
    .addColumn('component_id', 'text', (c) => c.notNull().references('status_components.id').onDelete('cascade'))
    .addPrimaryKeyConstraint('status_incident_components_pk', ['incident_id', 'component_id'])
    .execute();
  await db.schema.createIndex('status_incident_components_component_idx').on('status_incident_components').column('component_id').execute();

  await db.schema.createTable('status_incident_updates')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('incident_id', 'text', (c) => c.notNull().references('status_incidents.id').onDelete('cascade'))
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('status_incident_updates_incident_idx').on('status_incident_updates').columns(['incident_id', 'id']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('status_incident_updates').execute();
  await db.schema.dropTable('status_incident_components').execute();
  await db.schema.dropTable('status_incidents').execute();
  await db.schema.dropTable('status_hourly').execute();
  await db.schema.dropTable('status_samples').execute();
  await db.schema.dropTable('status_components').execute();
}
