import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import { newId, nowIso } from '../ids.js';

/**
 * The events outbox: every domain event (`contact_form.submitted`, `budget.alert`, …) is one row,
 * written in the same transaction as the change that caused it when one is given. Webhook delivery
 * and event subscriptions read from here.
 */
export async function emitEvent(db: Kysely<Database>, e: { organizationId: string | null; type: string; payload: Record<string, unknown> }): Promise<string> {
  const id = newId('evt');
  await db.insertInto('events').values({ id, organization_id: e.organizationId, type: e.type, payload: JSON.stringify(e.payload), created_at: nowIso() }).execute();
  return id;
}
