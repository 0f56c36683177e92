import type { Ctx } from '../context.js';
import { containsText, isUniqueViolation } from '../db.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';

/** A secret's name: an upper-case identifier, referenced as `{{secrets.NAME}}`. */
export const SECRET_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;

// Named columns: `value_enc` is never selected except by resolveSecretRefs.
const COLUMNS = ['id', 'name', 'description', 'created_by', 'created_at', 'updated_at'] as const;
type Row = { id: string; name: string; description: string; created_by: string | null; created_at: string; updated_at: string };
const present = (r: Row) => r;

export interface SecretInput { name: string; description?: string; value: string }

const nameTaken = (name: string) => conflict({ name: `A secret named ${name} already exists` });

export function listSecrets(ctx: Ctx, input: PageInput & { search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('secrets').select(COLUMNS).where('organization_id', '=', org);
  if (input.search) query = query.where(containsText('name', input.search));
  return paginate(ctx, { query, table: 'secrets', scope: org, input }, present);
}

export async function getSecret(ctx: Ctx, id: string) {
  const row = await ctx.deps.db.kysely.selectFrom('secrets').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Secret');
  return present(row);
}

async function assertNameFree(ctx: Ctx, name: string, exceptId?: string) {
  let q = ctx.deps.db.kysely.selectFrom('secrets').select('id').where('organization_id', '=', ctx.actor!.organizationId).where('name', '=', name);
  if (exceptId) q = q.where('id', '<>', exceptId);
  if (await q.executeTakeFirst()) throw nameTaken(name);
}

export async function createSecret(ctx: Ctx, input: SecretInput) {
  const actor = ctx.actor!;
  await assertNameFree(ctx, input.name);
  const now = nowIso();
  const id = newId('sec');
  try {
    await ctx.deps.db.kysely.insertInto('secrets').values({
      id, organization_id: actor.organizationId, name: input.name, description: input.description ?? '',
      value_enc: ctx.deps.box.encrypt(input.value), created_by: actor.userId ?? actor.id, created_at: now, updated_at: now,
    }).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken(input.name);
    throw err;
  }
  ctx.deps.counts.invalidate(actor.organizationId, 'secrets');
  return getSecret(ctx, id);
}

/** Renames, redescribes, or rotates the value. */
export async function updateSecret(ctx: Ctx, id: string, input: Partial<SecretInput>) {
  const org = ctx.actor!.organizationId;
  await getSecret(ctx, id);
  if (input.name !== undefined) await assertNameFree(ctx, input.name, id);
  const set: { name?: string; description?: string; value_enc?: string; updated_at: string } = { updated_at: nowIso() };
  if (input.name !== undefined) set.name = input.name;
  if (input.description !== undefined) set.description = input.description;
  if (input.value !== undefined) set.value_enc = ctx.deps.box.encrypt(input.value);
  try {
    await ctx.deps.db.kysely.updateTable('secrets').set(set).where('id', '=', id).where('organization_id', '=', org).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken(input.name ?? '');
    throw err;
  }
  return getSecret(ctx, id);
}

export async function deleteSecret(ctx: Ctx, id: string) {
  const org = ctx.actor!.organizationId;
  await getSecret(ctx, id);
  await ctx.deps.db.kysely.deleteFrom('secrets').where('id', '=', id).where('organization_id', '=', org).execute();
  ctx.deps.counts.invalidate(org, 'secrets');
  return { id, deleted: true as const };
}

const REF = /\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}/g;

/** The distinct secret names `text` references as `{{secrets.NAME}}`. */
export function findSecretRefs(text: string): string[] {
  return [...new Set(Array.from(text.matchAll(REF), (m) => m[1]))];
}

/**
 * Replaces every `{{secrets.NAME}}` in `text` with the decrypted value of the caller's
 * organization's secret NAME. Unknown names → 400 naming them (under `field`, default `secrets`).
 */
export async function resolveSecretRefs(ctx: Ctx, text: string, opts: { field?: string } = {}): Promise<string> {
  const names = findSecretRefs(text);
  if (names.length === 0) return text;
  const rows = await ctx.deps.db.kysely.selectFrom('secrets').select(['name', 'value_enc'])
    .where('organization_id', '=', ctx.actor!.organizationId).where('name', 'in', names).execute();
  const values = new Map(rows.map((r) => [r.name, r.value_enc]));
  const missing = names.filter((n) => !values.has(n));
  if (missing.length) throw badRequest({ [opts.field ?? 'secrets']: `Unknown secret${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}` });
  const plain = new Map<string, string>();
  for (const [name, enc] of values) plain.set(name, ctx.deps.box.decrypt(enc));
  return text.replace(REF, (_m, name: string) => plain.get(name)!);
}
