import type { Ctx } from '../context.js';
import { newId, nowIso } from '../ids.js';

export interface AuditEntry {
  action: string;
  resourceType: string | null;
  resourceId: string | null;
  /** Defaults to the actor's organization. */
  organizationId?: string | null;
  /** Defaults to the request's actor. */
  actor?: { type: 'user' | 'api_key' | 'system'; id: string | null };
  metadata?: Record<string, unknown>;
}

/** The one writer of audit rows. */
export async function recordAudit(ctx: Ctx, e: AuditEntry): Promise<void> {
  const organizationId = e.organizationId !== undefined ? e.organizationId : (ctx.actor?.organizationId ?? null);
  const actor = e.actor ?? (ctx.actor ? { type: ctx.actor.type, id: ctx.actor.id } : { type: 'system' as const, id: null });
  await ctx.deps.db.kysely.insertInto('audit_logs').values({
    id: newId('aud'),
    organization_id: organizationId,
    actor_type: actor.type,
    actor_id: actor.id,
    action: e.action,
    resource_type: e.resourceType,
    resource_id: e.resourceId,
    request_id: ctx.requestId,
    ip: ctx.ip,
    metadata: JSON.stringify(e.metadata ?? {}),
    created_at: nowIso(),
  }).execute();
  ctx.deps.counts.invalidate(organizationId ?? 'platform', 'audit_logs');
}
