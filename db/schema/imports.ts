// Data sources and their import runs: table types (see db/migrations/0007_imports.ts).

import type { Generated } from 'kysely';

export interface DataSourcesTable {
  id: string;
  organization_id: string;
  name: string;
  /** `csv_upload` or `csv_url`. */
  type: string;
  /** csv_url only. */
  url: string | null;
  /** JSON object: CSV column → contact field, in the order given. */
  field_mapping: Generated<string>;
  /** JSON object: delimiter (null: detected), has_header. */
  options: Generated<string>;
  /** The uploaded file (csv_upload): its name as sent, size in bytes and line count. */
  file_name: string | null;
  file_size: number | null;
  file_lines: number | null;
  uploaded_at: string | null;
  last_run_id: string | null;
  created_by: string | null;
  created_at: string;
  updated_at: string;
}

export interface DataSourceRunsTable {
  id: string;
  organization_id: string;
  data_source_id: string;
  job_id: string | null;
  /** queued, running, succeeded, failed. */
  status: string;
  /** JSON object: the mapping this run applies. */
  field_mapping: string;
  /** JSON object: the options this run applies. */
  options: string;
  rows_processed: Generated<number>;
  /** An estimate of the data rows, when known. */
  rows_total: number | null;
  bytes_read: Generated<number>;
  bytes_total: number | null;
  created_count: Generated<number>;
  updated_count: Generated<number>;
  skipped_count: Generated<number>;
  /** Every row error, stored or not. */
  error_count: Generated<number>;
  failure_reason: string | null;
  created_by: string | null;
  started_at: string | null;
  finished_at: string | null;
  created_at: string;
  updated_at: string;
}

/** The first errors of a run (at most a fixed number per run; the run counts them all). */
export interface DataSourceRunErrorsTable {
  run_id: string;
  /** 1, 2, … in the order found. */
  seq: number;
  organization_id: string;
  /** The record's position in the file, the header row being 1. */
  row_number: number;
  message: string;
  /** The row as read, truncated. */
  raw: string;
}

export interface ImportsTables {
  data_sources: DataSourcesTable;
  data_source_runs: DataSourceRunsTable;
  data_source_run_errors: DataSourceRunErrorsTable;
}
