import { PostgresAdapter, sql, type ColumnDefinitionBuilder, type Kysely } from 'kysely';

// Contacts and what is derived from their e-mail. Frozen once landed.
//
// Same schema on SQLite and PostgreSQL: text ids, ISO timestamps, 0/1 integers, JSON as text.
// One engine-specific detail: the two search keys (`name_key`, `email_normalized`) are compared
// with `>= term AND < term || U+10FFFF` ranges, which are prefix matches only under code-point
// order. SQLite's default BINARY collation is that order (UTF-8 bytes); on PostgreSQL the
// columns are declared COLLATE "C" so that the database's locale (en_US…, which ignores
// punctuation and folds case at the first level) cannot change what a range matches.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  const pg = db.getExecutor().adapter instanceof PostgresAdapter;
  const binary = (c: ColumnDefinitionBuilder) => (pg ? c.modifyEnd(sql`collate "C"`) : c);

  await db.schema.createTable('contacts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('name', 'text')
    // lower-case, accents removed: the indexed prefix-search key for the name.
    .addColumn('name_key', 'text', binary)
    .addColumn('email', 'text')
    // lower-case e-mail: unique per organization, the upsert key and the e-mail search key.
    .addColumn('email_normalized', 'text', binary)
    // lower-case, plus-tag and dots removed from the local part: finds duplicate_email groups.
    .addColumn('email_dedupe_key', 'text')
    .addColumn('phone', 'text')
    .addColumn('company', 'text')
    .addColumn('title', 'text')
    .addColumn('city', 'text')
    .addColumn('state', 'text')
    .addColumn('country', 'text')
    .addColumn('tags', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('custom_fields', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('source', 'text')
    .addColumn('lead_score', 'integer')
    .addColumn('lead_score_reasons', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('unsubscribed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('bounced', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('esp', 'text')
    .addColumn('esg', 'text')
    .addColumn('email_validity', 'text')
    .addColumn('data_health_flags', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('email_checked_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  // Lists (newest first) and every filter: (organization_id, X, id), so a filtered page is one
  // index range read in id order.
  await db.schema.createIndex('contacts_org_idx').on('contacts').columns(['organization_id', 'id']).execute();
  await db.schema.createIndex('contacts_org_city_idx').on('contacts').columns(['organization_id', 'city', 'id']).execute();
  await db.schema.createIndex('contacts_org_esp_idx').on('contacts').columns(['organization_id', 'esp', 'id']).execute();
  await db.schema.createIndex('contacts_org_esg_idx').on('contacts').columns(['organization_id', 'esg', 'id']).execute();
  await db.schema.createIndex('contacts_org_validity_idx').on('contacts').columns(['organization_id', 'email_validity', 'id']).execute();
  // Search: prefix ranges on these two keys (with id, so that the matching ids are read from
  // the index alone).
  await db.schema.createIndex('contacts_org_name_key_idx').on('contacts').columns(['organization_id', 'name_key', 'id']).execute();
  await db.schema.createIndex('contacts_org_email_key_idx').on('contacts').columns(['organization_id', 'email_normalized', 'id']).execute();
  // Partial unique index: several contacts may have no e-mail (accepted by both engines).
  await db.schema.createIndex('contacts_org_email_uq').on('contacts').columns(['organization_id', 'email_normalized']).unique()
    .where(sql<boolean>`email_normalized is not null`).execute();
  await db.schema.createIndex('contacts_org_dedupe_idx').on('contacts').columns(['organization_id', 'email_dedupe_key']).execute();
  // The re-check: contacts whose last conclusive check is oldest, and those still unknown.
  await db.schema.createIndex('contacts_checked_idx').on('contacts').columns(['email_checked_at']).execute();
  await db.schema.createIndex('contacts_validity_updated_idx').on('contacts').columns(['email_validity', 'updated_at']).execute();

  // One row per (contact, data-health flag): the flag filter reads (organization_id, flag)
  // in contact id order.
  await db.schema.createTable('contact_flags')
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('flag', 'text', (c) => c.notNull())
    .addColumn('contact_id', 'text', (c) => c.notNull().references('contacts.id').onDelete('cascade'))
    .addPrimaryKeyConstraint('contact_flags_pk', ['organization_id', 'flag', 'contact_id'])
    .execute();
  await db.schema.createIndex('contact_flags_contact_idx').on('contact_flags').columns(['contact_id']).execute();

  // Maintained counts per organization of each filter value (facet: total, city, esp, esg,
  // email_validity, data_health_flag), changed in the same transaction as the contacts.
  await db.schema.createTable('contact_facets')
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('facet', 'text', (c) => c.notNull())
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('count', 'integer', (c) => c.notNull().defaultTo(0))
    .addPrimaryKeyConstraint('contact_facets_pk', ['organization_id', 'facet', 'value'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('contact_facets').execute();
  await db.schema.dropTable('contact_flags').execute();
  await db.schema.dropTable('contacts').execute();
}
