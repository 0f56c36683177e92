// The agent runtime: table types (see db/migrations/0009_runtime.ts). JSON columns are text.

import type { Generated } from 'kysely';

export interface AgentTemplatesTable {
  id: string; organization_id: string; name: string; description: Generated<string>; category: Generated<string>;
  config: Generated<string>; execution_policy: Generated<string>; output_schema: string | null;
  created_at: string; updated_at: string;
}

export interface AgentsTable {
  id: string; organization_id: string; project_id: string | null; template_id: string | null; workflow_id: string | null;
  name: string; description: Generated<string>; status: Generated<string>;
  config: Generated<string>; execution_policy: Generated<string>; output_schema: string | null;
  created_by: string | null; created_at: string; updated_at: string;
}

export type RunStatus = 'queued' | 'running' | 'waiting' | 'awaiting_approval' | 'succeeded' | 'failed' | 'cancelled';

export interface RunsTable {
  id: string; organization_id: string; project_id: string | null; agent_id: string | null;
  kind: string; trigger: Generated<string>; status: Generated<string>;
  input: Generated<string>; output: string | null; error: string | null; error_code: string | null;
  policy: Generated<string>; parent_run_id: string | null; replay_from_seq: number | null;
  steps_count: Generated<number>; tokens_in: Generated<number>; tokens_out: Generated<number>; cost: Generated<number>;
  cancel_requested: Generated<number>; job_id: string | null; created_by: string | null;
  created_at: string; started_at: string | null; finished_at: string | null; updated_at: string;
}

export interface RunStepsTable {
  id: string; run_id: string; organization_id: string; project_id: string | null; agent_id: string | null;
  seq: number; type: string; name: string; status: string;
  input: string | null; output: string | null; error: string | null;
  provider_id: string | null; model: string | null;
  tokens_in: Generated<number>; tokens_out: Generated<number>; cost: Generated<number>;
  latency_ms: number | null; attempt: Generated<number>;
  decision: string | null; decided_by: string | null; decided_at: string | null; decision_comment: string | null;
  reused: Generated<number>;
  created_at: string; started_at: string | null; finished_at: string | null;
}

export interface RunEventsTable {
  run_id: string; seq: number; organization_id: string; type: string; data: Generated<string>; created_at: string;
}

export interface RuntimeTables {
  agent_templates: AgentTemplatesTable;
  agents: AgentsTable;
  runs: RunsTable;
  run_steps: RunStepsTable;
  run_events: RunEventsTable;
}
