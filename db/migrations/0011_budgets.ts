import type { Kysely } from 'kysely';

// Budgets (spend limits per organization, project or agent, with alert thresholds), the alerts
// they raised, and prompts with their numbered versions. Frozen once landed. Identical schema on
// SQLite and PostgreSQL: text ids and ISO timestamps, 0/1 integers, JSON as text, money as double
// precision (USD).

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('budgets')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    // organization | project | agent
    .addColumn('scope', 'text', (c) => c.notNull())
    // The project's or agent's id; null for the organization scope.
    .addColumn('scope_id', 'text')
    // daily | weekly | monthly | total (UTC calendar periods; weeks start on Monday)
    .addColumn('period', 'text', (c) => c.notNull())
    .addColumn('limit_usd', 'double precision', (c) => c.notNull())
    // JSON: percentages of the limit that raise an alert, sorted, unique, 1..100.
    .addColumn('alert_thresholds', 'text', (c) => c.notNull().defaultTo('[50,80,100]'))
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('budgets_org_idx').on('budgets').columns(['organization_id', 'id']).execute();
  // The budgets covering a spend (checked before every paid step).
  await db.schema.createIndex('budgets_org_scope_idx').on('budgets').columns(['organization_id', 'scope', 'scope_id']).execute();

  await db.schema.createTable('budget_alerts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('budget_id', 'text', (c) => c.notNull().references('budgets.id').onDelete('cascade'))
    // Percent of the limit.
    .addColumn('threshold', 'integer', (c) => c.notNull())
    .addColumn('period_start', 'text', (c) => c.notNull())
    .addColumn('used_usd', 'double precision', (c) => c.notNull())
    .addColumn('limit_usd', 'double precision', (c) => c.notNull())
    // threshold | exceeded
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    // Each threshold fires once per period.
    .addUniqueConstraint('budget_alerts_once_uq', ['budget_id', 'period_start', 'threshold'])
    .execute();
  await db.schema.createIndex('budget_alerts_org_idx').on('budget_alerts').columns(['organization_id', 'id']).execute();
  await db.schema.createIndex('budget_alerts_org_budget_idx').on('budget_alerts').columns(['organization_id', 'budget_id', 'id']).execute();

  // Project budgets sum run steps by project and time (organization and agent indexes exist in 0009).
  await db.schema.createIndex('run_steps_project_time_idx').on('run_steps').columns(['project_id', 'created_at', 'cost']).execute();

  await db.schema.createTable('prompts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('prompts_org_name_uq', ['organization_id', 'name'])
    .execute();
  await db.schema.createIndex('prompts_org_idx').on('prompts').columns(['organization_id', 'id']).execute();

  await db.schema.createTable('prompt_versions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('prompt_id', 'text', (c) => c.notNull().references('prompts.id').onDelete('cascade'))
    .addColumn('organization_id', 'text', (c) => c.notNull())
    // 1, 2, … per prompt.
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('template', 'text', (c) => c.notNull())
    // JSON: the variable names the template uses.
    .addColumn('variables', 'text', (c) => c.notNull().defaultTo('[]'))
    // JSON: {provider_id, model, temperature}, or null.
    .addColumn('model_settings', 'text')
    // JSON: labels such as production, staging; a label is on at most one version of a prompt.
    .addColumn('labels', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('prompt_versions_prompt_version_uq', ['prompt_id', 'version'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('prompt_versions').execute();
  await db.schema.dropTable('prompts').execute();
  await db.schema.dropIndex('run_steps_project_time_idx').execute();
  await db.schema.dropTable('budget_alerts').execute();
  await db.schema.dropTable('budgets').execute();
}
