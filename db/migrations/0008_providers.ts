import { sql, type Kysely } from 'kysely';

// LLM providers of an organization and the prices of their models. Frozen once landed.
// Identical schema on SQLite and PostgreSQL: text ids and ISO timestamps, 0/1 integers, JSON as
// text, money as double precision (USD).

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('llm_providers')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    // openai | anthropic | openai_compatible
    .addColumn('type', 'text', (c) => c.notNull())
    // Required for openai_compatible; for the others an override of the public endpoint (null: the default).
    .addColumn('base_url', 'text')
    // The API key sealed with the SecretBox (AES-256-GCM); never returned. Null: no key (local servers).
    .addColumn('api_key_enc', 'text')
    // The key's last four characters, shown masked (`…abcd`) so a person can tell keys apart.
    .addColumn('api_key_hint', 'text')
    .addColumn('default_model', 'text', (c) => c.notNull())
    // 1 for the organization's default provider (at most one per organization: partial unique index below).
    .addColumn('is_default', 'integer', (c) => c.notNull().defaultTo(0))
    // JSON object: extra HTTP headers sent with every request (OpenAI-Organization, proxies' headers…).
    .addColumn('headers', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('llm_providers_org_name_uq', ['organization_id', 'name'])
    .execute();
  await db.schema.createIndex('llm_providers_org_idx').on('llm_providers').columns(['organization_id', 'id']).execute();
  await db.schema.createIndex('llm_providers_one_default_uq').on('llm_providers').column('organization_id').unique()
    .where(sql.ref('is_default'), '=', 1).execute();

  await db.schema.createTable('llm_models')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('provider_id', 'text', (c) => c.notNull().references('llm_providers.id').onDelete('cascade'))
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    // USD per million tokens.
    .addColumn('input_price_per_million', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('output_price_per_million', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('llm_models_provider_name_uq', ['provider_id', 'name'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('llm_models').execute();
  await db.schema.dropTable('llm_providers').execute();
}
