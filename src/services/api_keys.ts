import type { Ctx } from '../context.js';
import { generateApiKey } from '../auth.js';
import { badRequest, forbidden, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';
import { assertAssignableRole } from './roles.js';

const COLUMNS = ['id', 'name', 'prefix', 'role', 'created_by', 'expires_at', 'last_used_at', 'revoked_at', 'created_at'] as const;
type Row = { id: string; name: string; prefix: string; role: string; created_by: string | null; expires_at: string | null; last_used_at: string | null; revoked_at: string | null; created_at: string };

function present(r: Row) {
  const status = r.revoked_at ? 'revoked' : r.expires_at && r.expires_at <= nowIso() ? 'expired' : 'active';
  return { ...r, status: status as 'active' | 'revoked' | 'expired' };
}

export function listApiKeys(ctx: Ctx, input: PageInput) {
  const org = ctx.actor!.organizationId;
  const query = ctx.deps.db.kysely.selectFrom('api_keys').select(COLUMNS).where('organization_id', '=', org);
  return paginate(ctx, { query, table: 'api_keys', scope: org, input }, present);
}

export async function getApiKey(ctx: Ctx, id: string) {
  const row = await ctx.deps.db.kysely.selectFrom('api_keys').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('API key');
  return present(row);
}

export async function createApiKey(ctx: Ctx, input: { name: string; role?: string; expires_at?: string }) {
  const actor = ctx.actor!;
  const role = input.role ?? 'member';
  await assertAssignableRole(ctx, role);
  if (role === 'owner') throw forbidden('An API key cannot have the owner role');
  const expiresAt = input.expires_at ? new Date(input.expires_at) : null;
  if (expiresAt && expiresAt.getTime() <= Date.now()) throw badRequest({ expires_at: 'Must be in the future' });
  const { key, prefix, hash } = generateApiKey();
  const row = {
    id: newId('key'), organization_id: actor.organizationId, name: input.name, prefix, key_hash: hash, role,
    created_by: actor.userId ?? actor.id, expires_at: expiresAt?.toISOString() ?? null,
    last_used_at: null, revoked_at: null, created_at: nowIso(),
  };
  await ctx.deps.db.kysely.insertInto('api_keys').values(row).execute();
  ctx.deps.counts.invalidate(actor.organizationId, 'api_keys');
  const { organization_id: _o, key_hash: _h, ...shown } = row;
  return { ...present(shown), key };
}

export async function revokeApiKey(ctx: Ctx, id: string) {
  const current = await getApiKey(ctx, id);
  if (!current.revoked_at) {
    await ctx.deps.db.kysely.updateTable('api_keys').set({ revoked_at: nowIso() })
      .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  }
  return getApiKey(ctx, id);
}

/** Requests per key per day over the last `days` days (today included). */
export async function apiKeyUsage(ctx: Ctx, input: { days?: number; api_key_id?: string }) {
  await ctx.deps.usage.flush();
  const days = input.days ?? 30;
  const since = new Date(Date.now() - (days - 1) * 86400_000).toISOString().slice(0, 10);
  let q = ctx.deps.db.kysely.selectFrom('api_key_usage as u').innerJoin('api_keys as k', 'k.id', 'u.api_key_id')
    .select(['u.api_key_id', 'k.name', 'k.prefix', 'u.day', 'u.requests'])
    .where('k.organization_id', '=', ctx.actor!.organizationId).where('u.day', '>=', since);
  if (input.api_key_id) q = q.where('u.api_key_id', '=', input.api_key_id);
  const rows = await q.orderBy('u.day', 'desc').orderBy('u.api_key_id').execute();
  return { since, total_requests: rows.reduce((n, r) => n + r.requests, 0), results: rows };
}
