// Sending domains, their checks and alerts, e-mail events: table types (see db/migrations/0004_outreach.ts).
import type { Generated } from 'kysely';

export type DomainStatus = 'healthy' | 'unhealthy' | 'unknown';
export type AlertSeverity = 'critical' | 'warning' | 'info';
export type EmailEventType = 'sent' | 'delivered' | 'opened' | 'clicked' | 'replied' | 'bounced' | 'complained' | 'unsubscribed';

export interface SendingDomainsTable {
  id: string; organization_id: string; domain: string; dkim_selector: Generated<string>;
  status: Generated<DomainStatus>; health_score: number | null;
  /** JSON: the last check's results, by check (mx, spf, dkim, dmarc). */
  checks: Generated<string>;
  bounce_rate: Generated<number>; complaint_rate: Generated<number>; sent_last_30_days: Generated<number>;
  last_checked_at: string | null; created_at: string; updated_at: string;
}

export interface DomainHealthAlertsTable {
  id: string; organization_id: string; domain_id: string; domain: string; kind: string;
  severity: AlertSeverity; severity_rank: number; message: string;
  detected_at: string; resolved_at: string | null;
}

export interface EmailEventsTable {
  id: string; organization_id: string; contact_id: string | null; message_id: string; recipient: string;
  sending_domain: string; type: EmailEventType; bounce_type: 'hard' | 'soft' | null;
  /** JSON object. */
  metadata: Generated<string>;
  occurred_at: string;
}

export interface OutreachTables {
  sending_domains: SendingDomainsTable;
  domain_health_alerts: DomainHealthAlertsTable;
  email_events: EmailEventsTable;
}
