// Durable execution: table types (see db/migrations/0002_engine.ts).

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'dead' | 'cancelled';

export interface JobsTable {
  id: string; organization_id: string | null; type: string; payload: string; status: JobStatus; priority: number;
  run_at: string; attempts: number; max_attempts: number; concurrency_key: string | null; concurrency_limit: number | null;
  locked_by: string | null; locked_until: string | null; last_error: string | null; result: string | null;
  created_at: string; updated_at: string; finished_at: string | null;
}

export interface EventsTable {
  id: string; organization_id: string | null; type: string; payload: string; created_at: string;
}

export interface EngineTables {
  jobs: JobsTable;
  events: EventsTable;
}
