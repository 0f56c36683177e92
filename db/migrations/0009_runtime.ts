import { sql, type Kysely } from 'kysely';

// The agent runtime: agent templates, agents, runs, their steps and their event log. Frozen once
// landed. Identical schema on SQLite and PostgreSQL: text ids and ISO timestamps, 0/1 integers,
// JSON as text, money as double precision (USD).

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('agent_templates')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('category', 'text', (c) => c.notNull().defaultTo('general'))
    // JSON: default agent configuration (free-form settings copied onto spawned agents).
    .addColumn('config', 'text', (c) => c.notNull().defaultTo('{}'))
    // JSON: the execution policy (model, system prompt, tools, limits, retry policy).
    .addColumn('execution_policy', 'text', (c) => c.notNull().defaultTo('{}'))
    // JSON Schema of structured output (inference), or null.
    .addColumn('output_schema', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('agent_templates_org_name_uq', ['organization_id', 'name'])
    .execute();
  await db.schema.createIndex('agent_templates_org_idx').on('agent_templates').columns(['organization_id', 'id']).execute();

  await db.schema.createTable('agents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('project_id', 'text', (c) => c.references('projects.id').onDelete('set null'))
    .addColumn('template_id', 'text', (c) => c.references('agent_templates.id').onDelete('set null'))
    // The workflow it was spawned from (workflows land with their own issue; no foreign key here).
    .addColumn('workflow_id', 'text')
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    // active | paused | archived
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('active'))
    .addColumn('config', 'text', (c) => c.notNull().defaultTo('{}'))
    // JSON: overrides on top of the template's policy (the effective policy is the merge).
    .addColumn('execution_policy', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('output_schema', 'text')
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('agents_org_idx').on('agents').columns(['organization_id', 'id']).execute();
  await db.schema.createIndex('agents_template_idx').on('agents').columns(['template_id']).execute();

  await db.schema.createTable('runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('project_id', 'text')
    .addColumn('agent_id', 'text', (c) => c.references('agents.id').onDelete('cascade'))
    // What runs: 'agent' (the agent loop), 'inference', 'score_lead'; workflows add their own.
    .addColumn('kind', 'text', (c) => c.notNull())
    // api | execute | inference | score_lead | replay | schedule | workflow
    .addColumn('trigger', 'text', (c) => c.notNull().defaultTo('api'))
    // queued | running | waiting | awaiting_approval | succeeded | failed | cancelled
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('queued'))
    .addColumn('input', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('output', 'text')
    .addColumn('error', 'text')
    // Machine-readable reason of a failure: budget_exceeded, max_steps, max_cost, timeout, rejected, provider_error, tool_error …
    .addColumn('error_code', 'text')
    // JSON: the effective execution policy, frozen when the run starts.
    .addColumn('policy', 'text', (c) => c.notNull().defaultTo('{}'))
    // Replays: the run it was made from, and the first step (seq) that ran anew.
    .addColumn('parent_run_id', 'text')
    .addColumn('replay_from_seq', 'integer')
    .addColumn('steps_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('tokens_in', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('tokens_out', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('cost', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('cancel_requested', 'integer', (c) => c.notNull().defaultTo(0))
    // The job that executes it (jobs.id).
    .addColumn('job_id', 'text')
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('started_at', 'text')
    .addColumn('finished_at', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('runs_org_idx').on('runs').columns(['organization_id', 'id']).execute();
  await db.schema.createIndex('runs_org_status_idx').on('runs').columns(['organization_id', 'status', 'id']).execute();
  await db.schema.createIndex('runs_agent_idx').on('runs').columns(['agent_id', 'id']).execute();

  await db.schema.createTable('run_steps')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('run_id', 'text', (c) => c.notNull().references('runs.id').onDelete('cascade'))
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('project_id', 'text')
    .addColumn('agent_id', 'text')
    // Position in the run, from 0: a step is identified by (run_id, seq) when the run resumes.
    .addColumn('seq', 'integer', (c) => c.notNull())
    // llm | tool | approval | memory | output (and workflow step types later)
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    // running | succeeded | failed | awaiting_approval | rejected | cancelled
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('input', 'text')
    .addColumn('output', 'text')
    .addColumn('error', 'text')
    .addColumn('provider_id', 'text')
    .addColumn('model', 'text')
    .addColumn('tokens_in', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('tokens_out', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('cost', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('latency_ms', 'integer')
    .addColumn('attempt', 'integer', (c) => c.notNull().defaultTo(1))
    // Approvals: approved | rejected, who decided and when, and an optional comment.
    .addColumn('decision', 'text')
    .addColumn('decided_by', 'text')
    .addColumn('decided_at', 'text')
    .addColumn('decision_comment', 'text')
    // 1 when the result was copied from the parent run by a replay.
    .addColumn('reused', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('started_at', 'text')
    .addColumn('finished_at', 'text')
    .addUniqueConstraint('run_steps_run_seq_uq', ['run_id', 'seq'])
    .execute();
  // Cost and usage roll-ups (budgets before every paid step, agent costs) by organization, agent
  // and time; `cost` is in the index so that a period's sum reads the index alone.
  await db.schema.createIndex('run_steps_org_time_idx').on('run_steps').columns(['organization_id', 'created_at', 'cost']).execute();
  await db.schema.createIndex('run_steps_agent_time_idx').on('run_steps').columns(['agent_id', 'created_at', 'cost']).execute();

  // The queue's indexes, rebuilt as partial indexes: each holds only the jobs in one status, so
  // a job changing status touches two small indexes instead of every status-led one (a claim
  // and a completion wrote ~8 pages each), and finished jobs weigh on none of them.
  // - Due jobs, in the order a claim walks them (many runs may wait behind a full concurrency key).
  await sql`create index jobs_claim_idx on jobs (priority desc, run_at, id) where status = 'queued'`.execute(db);
  // - Running jobs by lease: expired leases, and the running counts per concurrency key and, for
  //   ORG_CONCURRENCY, per organization (few rows: at most the workers' slots).
  await sql`create index jobs_running_idx on jobs (locked_until) where status = 'running'`.execute(db);
  // - Dead jobs by time, for the status page's job-queue check.
  await sql`create index jobs_dead_idx on jobs (updated_at) where status = 'dead'`.execute(db);
  await db.schema.dropIndex('jobs_due_idx').execute();
  await db.schema.dropIndex('jobs_lease_idx').execute();
  await db.schema.dropIndex('jobs_concurrency_idx').execute();

  // What a run's stream replays: status changes, steps, LLM token deltas, logs; ids are per run.
  await db.schema.createTable('run_events')
    .addColumn('run_id', 'text', (c) => c.notNull().references('runs.id').onDelete('cascade'))
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    // status | step | token | log
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('data', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('run_events_pk', ['run_id', 'seq'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('jobs_claim_idx').execute();
  await db.schema.dropIndex('jobs_running_idx').execute();
  await db.schema.dropIndex('jobs_dead_idx').execute();
  await db.schema.createIndex('jobs_due_idx').on('jobs').columns(['status', 'run_at', 'priority']).execute();
  await db.schema.createIndex('jobs_lease_idx').on('jobs').columns(['status', 'locked_until']).execute();
  await db.schema.createIndex('jobs_concurrency_idx').on('jobs').columns(['concurrency_key', 'status']).execute();
  await db.schema.dropTable('run_events').execute();
  await db.schema.dropTable('run_steps').execute();
  await db.schema.dropTable('runs').execute();
  await db.schema.dropTable('agents').execute();
  await db.schema.dropTable('agent_templates').execute();
}
