import type { Ctx } from '../context.js';
import { sha256Hex } from '../crypto.js';
import { conflict } from '../errors.js';
import { nowIso } from '../ids.js';

export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

export type IdempotencyClaim =
  | { kind: 'new'; scope: string; key: string }
  | { kind: 'replay'; status: number; body: unknown };

/**
 * Claims an Idempotency-Key for a request. Same key and same request → the stored response is
 * replayed; same key and another request (or the first still running) → 409.
 */
export async function claimIdempotencyKey(ctx: Ctx, route: string, key: string, input: unknown): Promise<IdempotencyClaim> {
  const db = ctx.deps.db.kysely;
  const scope = `${ctx.actor ? `${ctx.actor.type}:${ctx.actor.id}` : `ip:${ctx.ip}`}|${route}`;
  const hash = sha256Hex(JSON.stringify(input ?? null));
  const expired = new Date(Date.now() - IDEMPOTENCY_TTL_MS).toISOString();
  await db.deleteFrom('idempotency_keys').where('scope', '=', scope).where('key', '=', key).where('created_at', '<', expired).execute();
  const inserted = await db.insertInto('idempotency_keys')
    .values({ scope, key, request_hash: hash, status_code: null, response_body: null, created_at: nowIso() })
    .onConflict((oc) => oc.columns(['scope', 'key']).doNothing())
    .executeTakeFirst();
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0) > 0) return { kind: 'new', scope, key };
  const row = await db.selectFrom('idempotency_keys').selectAll().where('scope', '=', scope).where('key', '=', key).executeTakeFirstOrThrow();
  if (row.request_hash !== hash) throw conflict('This Idempotency-Key was used with a different request', 'Idempotency key reused');
  if (row.status_code === null) throw conflict('A request with this Idempotency-Key is still in progress', 'Idempotency key in use');
  return { kind: 'replay', status: row.status_code, body: row.response_body === null ? null : JSON.parse(ctx.deps.box.decrypt(row.response_body)) };
}

export async function completeIdempotencyKey(ctx: Ctx, claim: { scope: string; key: string }, status: number, body: unknown): Promise<void> {
  await ctx.deps.db.kysely.updateTable('idempotency_keys')
    // Sealed: a stored response may hold a secret shown once (a new API key).
    .set({ status_code: status, response_body: body === undefined ? null : ctx.deps.box.encrypt(JSON.stringify(body)) })
    .where('scope', '=', claim.scope).where('key', '=', claim.key).execute();
}

/** A failed request frees its key, so that a corrected retry may use it. */
export async function releaseIdempotencyKey(ctx: Ctx, claim: { scope: string; key: string }): Promise<void> {
  await ctx.deps.db.kysely.deleteFrom('idempotency_keys').where('scope', '=', claim.scope).where('key', '=', claim.key).execute();
}

export async function purgeExpiredIdempotencyKeys(ctx: Pick<Ctx, 'deps'>): Promise<void> {
  const expired = new Date(Date.now() - IDEMPOTENCY_TTL_MS).toISOString();
  await ctx.deps.db.kysely.deleteFrom('idempotency_keys').where('created_at', '<', expired).execute();
}
