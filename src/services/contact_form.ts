import type { Ctx } from '../context.js';
import { notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';
import { emitEvent } from './events.js';

export const INQUIRY_TYPES = ['support', 'sales', 'billing', 'partnership', 'feedback', 'other'] as const;
export type InquiryType = (typeof INQUIRY_TYPES)[number];

export interface ContactFormInput {
  name: string; email: string; company?: string | null; inquiry_type: InquiryType; subject: string; message: string;
  /** The honeypot: a field people never see. When it is filled, the answer is the same and nothing is kept. */
  website?: string | null;
}

/** Submissions belong to the platform, not to an organization: one count scope for all. */
const SCOPE = 'platform';
const TABLE = 'contact_form_submissions';

const COLUMNS = ['id', 'name', 'email', 'company', 'inquiry_type', 'subject', 'message', 'ip', 'user_agent', 'created_at'] as const;
type Row = { id: string; name: string; email: string; company: string | null; inquiry_type: string; subject: string; message: string; ip: string | null; user_agent: string | null; created_at: string };
const present = (r: Row) => ({ ...r, inquiry_type: r.inquiry_type as InquiryType });

/** The request's User-Agent, when the request context carries it. */
function userAgentOf(ctx: Ctx): string | null {
  const ua = ctx.userAgent;
  return typeof ua === 'string' && ua.length > 0 ? ua.slice(0, 512) : null;
}

/**
 * Stores a submission and emits `contact_form.submitted` (no organization) in one transaction,
 * from which notifications and webhooks forward it. A filled honeypot gets the same answer, with
 * nothing stored and nothing emitted.
 */
export async function submitContactForm(ctx: Ctx, input: ContactFormInput): Promise<{ id: string; status: 'received' }> {
  const id = newId('cfs');
  if (input.website && input.website.trim() !== '') {
    ctx.deps.log.info({ requestId: ctx.requestId, ip: ctx.ip }, 'contact form: honeypot filled, submission dropped');
    return { id, status: 'received' };
  }
  const row: Row = {
    id, name: input.name, email: input.email, company: input.company || null, inquiry_type: input.inquiry_type,
    subject: input.subject, message: input.message, ip: ctx.ip || null, user_agent: userAgentOf(ctx), created_at: nowIso(),
  };
  await ctx.deps.db.kysely.transaction().execute(async (trx) => {
    await trx.insertInto('contact_form_submissions').values(row).execute();
    await emitEvent(trx, {
      organizationId: null,
      type: 'contact_form.submitted',
      payload: {
        submission_id: id, name: row.name, email: row.email, company: row.company, inquiry_type: row.inquiry_type,
        subject: row.subject, message: row.message, created_at: row.created_at,
      },
    });
  });
  ctx.deps.counts.invalidate(SCOPE, TABLE);
  return { id, status: 'received' };
}

export function listContactFormSubmissions(ctx: Ctx, input: PageInput & { inquiry_type?: InquiryType }) {
  let query = ctx.deps.db.kysely.selectFrom('contact_form_submissions').select(COLUMNS);
  if (input.inquiry_type) query = query.where('inquiry_type', '=', input.inquiry_type);
  return paginate(ctx, { query, table: TABLE, scope: SCOPE, input }, present);
}

export async function getContactFormSubmission(ctx: Ctx, id: string) {
  const row = await ctx.deps.db.kysely.selectFrom('contact_form_submissions').select(COLUMNS).where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('Submission');
  return present(row);
}
