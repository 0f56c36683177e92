// Status page components, check samples, incidents: table types (see db/migrations/0005_status.ts).

import type { Generated } from 'kysely';

export type ComponentStatus = 'operational' | 'degraded_performance' | 'partial_outage' | 'major_outage' | 'under_maintenance';
export type ComponentKind = 'builtin' | 'http';
export type IncidentStatus = 'investigating' | 'identified' | 'monitoring' | 'resolved';
export type IncidentImpact = 'none' | 'minor' | 'major' | 'critical';

/** A monitored component: a built-in check of this service, or a user-defined HTTP check. */
export interface StatusComponentsTable {
  id: string;
  /** A slug, unique: `api_service`, `database`… for built-ins. */
  name: string;
  display_name: string;
  kind: ComponentKind;
  /** HTTP checks only. */
  url: string | null;
  expected_status: number | null;
  timeout_ms: number | null;
  /** 0/1: set by platform admins; the component then shows `under_maintenance`. */
  maintenance: Generated<number>;
  /** What the page shows: the last check's status, or `under_maintenance`. */
  current_status: Generated<ComponentStatus>;
  /** What the last check observed, maintenance or not. */
  last_check_status: ComponentStatus | null;
  last_error: string | null;
  last_checked: string | null;
  position: number;
  created_at: string;
  updated_at: string;
}

/** One check result. */
export interface StatusSamplesTable {
  id: string;
  component_id: string;
  status: ComponentStatus;
  latency_ms: number | null;
  error: string | null;
  note: string | null;
  checked_at: string;
}

/**
 * Samples rolled up per component and UTC hour (`YYYY-MM-DDTHH`), written with each sample, so
 * uptime over 90 days reads at most 2160 rows per component whatever the check frequency.
 * `worst` is the severity rank of the worst status in the hour (0 operational … 4 major outage).
 */
export interface StatusHourlyTable {
  component_id: string;
  hour: string;
  total: number;
  /** Samples that were operational or under maintenance. */
  good: number;
  worst: number;
}

export interface StatusIncidentsTable {
  id: string;
  title: string;
  status: IncidentStatus;
  impact: IncidentImpact;
  created_by: string | null;
  created_at: string;
  updated_at: string;
  resolved_at: string | null;
}

export interface StatusIncidentComponentsTable {
  incident_id: string;
  component_id: string;
}

export interface StatusIncidentUpdatesTable {
  id: string;
  incident_id: string;
  status: IncidentStatus;
  message: string;
  created_by: string | null;
  created_at: string;
}

export interface StatusTables {
  status_components: StatusComponentsTable;
  status_samples: StatusSamplesTable;
  status_hourly: StatusHourlyTable;
  status_incidents: StatusIncidentsTable;
  status_incident_components: StatusIncidentComponentsTable;
  status_incident_updates: StatusIncidentUpdatesTable;
}
