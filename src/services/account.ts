import type { Ctx } from '../context.js';
import { parseJsonObject } from '../json.js';
import { isUniqueViolation } from '../db.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { nowIso } from '../ids.js';


/** The canonical name of an IANA time zone, or null when Intl does not know it. */
export function canonicalTimeZone(tz: string): string | null {
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(tz)) return null; // zone names, not offsets such as "+01:00"
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

async function organizationRow(ctx: Ctx) {
  const row = await ctx.deps.db.kysely.selectFrom('organizations')
    .select(['id', 'name', 'slug', 'plan', 'timezone', 'settings', 'billing_email', 'billing_name', 'billing_address', 'tax_id', 'created_at', 'updated_at'])
    .where('id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Organization');
  return row;
}


export async function getAccount(ctx: Ctx) {
  const o = await organizationRow(ctx);
  const members = await ctx.deps.db.kysely.selectFrom('memberships').select((eb) => eb.fn.countAll().as('n'))
    .where('organization_id', '=', o.id).executeTakeFirstOrThrow();
  return {
    id: o.id, name: o.name, slug: o.slug, plan: o.plan, timezone: o.timezone, settings: parseJsonObject(o.settings) ?? {},
    member_count: Number(members.n), created_at: o.created_at, updated_at: o.updated_at,
  };
}

export interface AccountInput { name?: string; slug?: string; timezone?: string; settings?: Record<string, unknown> }

export async function updateAccount(ctx: Ctx, input: AccountInput) {
  const org = ctx.actor!.organizationId;
  const set: { name?: string; slug?: string; timezone?: string; settings?: string; updated_at: string } = { updated_at: nowIso() };
  if (input.timezone !== undefined) {
    const tz = canonicalTimeZone(input.timezone);
    if (!tz) throw badRequest({ timezone: `Unknown time zone "${input.timezone}": use an IANA name such as Europe/Paris or UTC` });
    set.timezone = tz;
  }
  if (input.name !== undefined) set.name = input.name;
  if (input.settings !== undefined) set.settings = JSON.stringify(input.settings);
  if (input.slug !== undefined) {
    const taken = await ctx.deps.db.kysely.selectFrom('organizations').select('id').where('slug', '=', input.slug).where('id', '!=', org).executeTakeFirst();
    if (taken) throw conflict({ slug: 'This slug is taken' });
    set.slug = input.slug;
  }
  try {
    await ctx.deps.db.kysely.updateTable('organizations').set(set).where('id', '=', org).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict({ slug: 'This slug is taken' });
    throw err;
  }
  return getAccount(ctx);
}

export const ADDRESS_FIELDS = ['line1', 'line2', 'city', 'state', 'postal_code', 'country'] as const;
export type BillingAddress = Record<(typeof ADDRESS_FIELDS)[number], string | null>;

function presentAddress(text: string | null): BillingAddress | null {
  const o = parseJsonObject(text);
  if (!o) return null;
  return Object.fromEntries(ADDRESS_FIELDS.map((k) => [k, typeof o[k] === 'string' ? o[k] : null])) as BillingAddress;
}

export async function getBilling(ctx: Ctx) {
  const o = await organizationRow(ctx);
  return {
    billing_email: o.billing_email, billing_name: o.billing_name, billing_address: presentAddress(o.billing_address),
    tax_id: o.tax_id, plan: o.plan, updated_at: o.updated_at,
  };
}

export interface BillingInput {
  billing_email?: string | null; billing_name?: string | null; tax_id?: string | null;
  billing_address?: Partial<BillingAddress> | null;
}

export async function updateBilling(ctx: Ctx, input: BillingInput) {
  const set: { billing_email?: string | null; billing_name?: string | null; tax_id?: string | null; billing_address?: string | null; updated_at: string } = { updated_at: nowIso() };
  if (input.billing_email !== undefined) set.billing_email = input.billing_email;
  if (input.billing_name !== undefined) set.billing_name = input.billing_name;
  if (input.tax_id !== undefined) set.tax_id = input.tax_id;
  if (input.billing_address !== undefined) {
    const a = input.billing_address;
    set.billing_address = a === null ? null : JSON.stringify(Object.fromEntries(ADDRESS_FIELDS.map((k) => [k, a[k] ?? null])));
  }
  await ctx.deps.db.kysely.updateTable('organizations').set(set).where('id', '=', ctx.actor!.organizationId).execute();
  return getBilling(ctx);
}
