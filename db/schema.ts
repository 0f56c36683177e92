import type { Generated } from 'kysely';
import type { ContactsTables } from './schema/contacts.js';
import type { ContentTables } from './schema/content.js';
import type { EngineTables } from './schema/engine.js';
import type { ImportsTables } from './schema/imports.js';
import type { OutreachTables } from './schema/outreach.js';
import type { StatusTables } from './schema/status.js';
import type { ProvidersTables } from './schema/providers.js';
import type { RuntimeTables } from './schema/runtime.js';
import type { ToolsTables } from './schema/tools.js';
import type { BudgetsTables } from './schema/budgets.js';

// Table types. Timestamps are ISO-8601 UTC text; flags are 0/1 integers; JSON columns are text.

export interface OrganizationsTable {
  id: string; name: string; slug: string; plan: Generated<string>;
  billing_email: string | null; billing_name: string | null; billing_address: string | null; tax_id: string | null;
  timezone: Generated<string>; settings: Generated<string>;
  created_at: string; updated_at: string;
}
export interface UsersTable {
  id: string; username: string; email: string | null; password_hash: string;
  first_name: Generated<string>; last_name: Generated<string>;
  is_platform_admin: Generated<number>; is_active: Generated<number>;
  totp_secret_enc: string | null; totp_enabled: Generated<number>; totp_last_counter: Generated<number>;
  mailgun_api_key_enc: string | null; mailgun_domain: string | null;
  default_organization_id: string | null; last_login_at: string | null;
  created_at: string; updated_at: string;
}
export interface RolesTable {
  id: string; organization_id: string; name: string; description: Generated<string>; permissions: Generated<string>;
  created_at: string; updated_at: string;
}
export interface MembershipsTable {
  id: string; organization_id: string; user_id: string; role: string; role_id: string | null;
  created_at: string; updated_at: string;
}
export interface SessionsTable {
  id: string; user_id: string; organization_id: string; created_at: string; expires_at: string;
  revoked_at: string | null; revoked_reason: string | null;
}
export interface RefreshTokensTable {
  id: string; session_id: string; token_hash: string; created_at: string; used_at: string | null;
}
export interface ApiKeysTable {
  id: string; organization_id: string; name: string; prefix: string; key_hash: string; role: string;
  created_by: string | null; expires_at: string | null; last_used_at: string | null; revoked_at: string | null;
  created_at: string;
}
export interface ApiKeyUsageTable { api_key_id: string; day: string; requests: Generated<number> }
export interface ProjectsTable {
  id: string; organization_id: string; name: string; description: Generated<string>; status: Generated<string>;
  settings: Generated<string>; created_at: string; updated_at: string;
}
export interface AuditLogsTable {
  id: string; organization_id: string | null; actor_type: string; actor_id: string | null; action: string;
  resource_type: string | null; resource_id: string | null; request_id: string | null; ip: string | null;
  metadata: Generated<string>; created_at: string;
}
export interface SecretsTable {
  id: string; organization_id: string; name: string; description: Generated<string>; value_enc: string;
  created_by: string | null; created_at: string; updated_at: string;
}
export interface IdempotencyKeysTable {
  scope: string; key: string; request_hash: string; status_code: number | null; response_body: string | null; created_at: string;
}

/** Every table: the identity tables below, and each domain's from db/schema/<domain>.ts. */
export interface Database extends EngineTables, ContactsTables, OutreachTables, StatusTables, ContentTables, ImportsTables,
  ProvidersTables, RuntimeTables, ToolsTables, BudgetsTables {
  organizations: OrganizationsTable;
  users: UsersTable;
  roles: RolesTable;
  memberships: MembershipsTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
  api_keys: ApiKeysTable;
  api_key_usage: ApiKeyUsageTable;
  projects: ProjectsTable;
  audit_logs: AuditLogsTable;
  secrets: SecretsTable;
  idempotency_keys: IdempotencyKeysTable;
}
