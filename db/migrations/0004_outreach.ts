import { sql, type Kysely } from 'kysely';

// Sending domains, their checks and alerts, e-mail events. Frozen once landed.
// Identical schema on SQLite and PostgreSQL: ids and timestamps are text (ISO-8601 UTC), JSON is text.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  // A domain the organization sends from, with the results of its last DNS check.
  await db.schema.createTable('sending_domains')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('domain', 'text', (c) => c.notNull())
    .addColumn('dkim_selector', 'text', (c) => c.notNull().defaultTo('default'))
    // healthy | unhealthy | unknown (no check could be answered yet)
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('unknown'))
    .addColumn('health_score', 'integer')
    // {"mx": {...}, "spf": {...}, "dkim": {...}, "dmarc": {...}}: the last check's results
    .addColumn('checks', 'text', (c) => c.notNull().defaultTo('{}'))
    // Percentages of the messages sent from this domain over the 30 days before the last check.
    .addColumn('bounce_rate', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('complaint_rate', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('sent_last_30_days', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_checked_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('sending_domains_org_domain_uq', ['organization_id', 'domain'])
    .execute();
  await db.schema.createIndex('sending_domains_org_idx').on('sending_domains').columns(['organization_id', 'id']).execute();

  await db.schema.createTable('domain_health_alerts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('domain_id', 'text', (c) => c.notNull().references('sending_domains.id').onDelete('cascade'))
    .addColumn('domain', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    // critical | warning | info, and its rank for ordering (1 = critical, as in SEV1)
    .addColumn('severity', 'text', (c) => c.notNull())
    .addColumn('severity_rank', 'integer', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('detected_at', 'text', (c) => c.notNull())
    .addColumn('resolved_at', 'text')
    .execute();
  await db.schema.createIndex('domain_health_alerts_org_detected_idx').on('domain_health_alerts').columns(['organization_id', 'detected_at', 'id']).execute();
  await db.schema.createIndex('domain_health_alerts_org_severity_idx').on('domain_health_alerts').columns(['organization_id', 'severity_rank', 'id']).execute();
  // One open alert per domain and kind.
  await db.schema.createIndex('domain_health_alerts_open_uq').on('domain_health_alerts').columns(['domain_id', 'kind']).unique()
    .where(sql.ref('resolved_at'), 'is', null).execute();

  // Every e-mail event (sent, delivered, opened, …): written by the delivery pipeline, read by the stats.
  await db.schema.createTable('email_events')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('contact_id', 'text')
    .addColumn('message_id', 'text', (c) => c.notNull())
    .addColumn('recipient', 'text', (c) => c.notNull())
    .addColumn('sending_domain', 'text', (c) => c.notNull())
    // sent | delivered | opened | clicked | replied | bounced | complained | unsubscribed
    .addColumn('type', 'text', (c) => c.notNull())
    // hard | soft, for bounces
    .addColumn('bounce_type', 'text')
    .addColumn('metadata', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('occurred_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('email_events_org_time_idx').on('email_events').columns(['organization_id', 'occurred_at']).execute();
  await db.schema.createIndex('email_events_org_domain_time_idx').on('email_events').columns(['organization_id', 'sending_domain', 'occurred_at']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('email_events').execute();
  await db.schema.dropTable('domain_health_alerts').execute();
  await db.schema.dropTable('sending_domains').execute();
}
