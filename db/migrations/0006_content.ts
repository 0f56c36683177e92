import type { Kysely } from 'kysely';

// E-mail templates, branding, tracking scripts, contact form submissions. Frozen once landed.
// Identical schema on SQLite and PostgreSQL: text ids and ISO timestamps, 0/1 integers.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('email_templates')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('html_content', 'text', (c) => c.notNull())
    .addColumn('text_content', 'text', (c) => c.notNull())
    // 1 when text_content was generated from html_content (and is regenerated at render time).
    .addColumn('text_content_generated', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('email_templates_org_name_uq', ['organization_id', 'name'])
    .execute();
  await db.schema.createIndex('email_templates_org_idx').on('email_templates').columns(['organization_id', 'id']).execute();

  // One row per organization, created on first change; absent means every URL is null.
  await db.schema.createTable('branding')
    .addColumn('organization_id', 'text', (c) => c.primaryKey().references('organizations.id').onDelete('cascade'))
    .addColumn('logo_app_url', 'text')
    .addColumn('logo_square_url', 'text')
    .addColumn('logo_email_url', 'text')
    .addColumn('logo_login_url', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();

  await db.schema.createTable('tracking_scripts')
    .addColumn('organization_id', 'text', (c) => c.primaryKey().references('organizations.id').onDelete('cascade'))
    .addColumn('header_script', 'text')
    .addColumn('body_script', 'text')
    .addColumn('footer_script', 'text')
    .addColumn('facebook_pixel_id', 'text')
    .addColumn('google_analytics_id', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();

  // Platform-level (the public contact form of the platform itself): no organization column.
  await db.schema.createTable('contact_form_submissions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('company', 'text')
    .addColumn('inquiry_type', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('contact_form_submissions_type_idx').on('contact_form_submissions').columns(['inquiry_type', 'id']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('contact_form_submissions').execute();
  await db.schema.dropTable('tracking_scripts').execute();
  await db.schema.dropTable('branding').execute();
  await db.schema.dropTable('email_templates').execute();
}
