import type { Ctx } from '../context.js';
import { parseJsonObject } from '../json.js';
import { badRequest, forbidden, notFound } from '../errors.js';
import { paginate, type PageInput } from '../pagination.js';

// The read side of the audit log; rows are written only by ./audit.ts (recordAudit).

const COLUMNS = ['id', 'actor_type', 'actor_id', 'action', 'resource_type', 'resource_id', 'request_id', 'ip', 'metadata', 'created_at'] as const;
type Row = {
  id: string; actor_type: string; actor_id: string | null; action: string; resource_type: string | null; resource_id: string | null;
  request_id: string | null; ip: string | null; metadata: string; created_at: string;
};


const present = (r: Row) => ({ ...r, metadata: parseJsonObject(r.metadata) ?? {} });

export interface AuditLogFilters {
  actor_id?: string; actor_type?: string; action?: string; resource_type?: string; resource_id?: string;
  /** ISO-8601 timestamps (any offset), inclusive. */
  since?: string; until?: string;
  /** Platform admins: the entries of platform administration (no organization). */
  platform?: boolean;
}

/** Stored timestamps are `Date#toISOString()` text, so a normalized bound compares as text. */
function bound(field: 'since' | 'until', value: string): string {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw badRequest({ [field]: 'Must be an ISO-8601 timestamp' });
  return d.toISOString();
}

/** The organization's audit rows, newest first. */
export function listAuditLogs(ctx: Ctx, input: PageInput & AuditLogFilters) {
  const org = ctx.actor!.organizationId;
  const since = input.since ? bound('since', input.since) : undefined;
  const until = input.until ? bound('until', input.until) : undefined;
  if (since && until && since > until) throw badRequest({ since: 'Must not be after until', until: 'Must not be before since' });
  if (input.platform && !ctx.actor!.isPlatformAdmin) throw forbidden('Platform administrators only');
  let query = ctx.deps.db.kysely.selectFrom('audit_logs').select(COLUMNS);
  query = input.platform ? query.where('organization_id', 'is', null) : query.where('organization_id', '=', org);
  if (input.actor_id) query = query.where('actor_id', '=', input.actor_id);
  if (input.actor_type) query = query.where('actor_type', '=', input.actor_type);
  if (input.action) query = query.where('action', '=', input.action);
  if (input.resource_type) query = query.where('resource_type', '=', input.resource_type);
  if (input.resource_id) query = query.where('resource_id', '=', input.resource_id);
  if (since) query = query.where('created_at', '>=', since);
  if (until) query = query.where('created_at', '<=', until);
  return paginate(ctx, { query, table: 'audit_logs', scope: input.platform ? 'platform' : org, input }, present);
}

export async function getAuditLog(ctx: Ctx, id: string) {
  const row = await ctx.deps.db.kysely.selectFrom('audit_logs').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Audit log entry');
  return present(row);
}
