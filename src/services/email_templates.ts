import { compile as compileHtmlToText, type HtmlToTextOptions } from 'html-to-text';
import { Liquid, type Template } from 'liquidjs';
import type { Ctx } from '../context.js';
import { containsText, isUniqueViolation } from '../db.js';
import { AppError, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';

// ---------------------------------------------------------------------------------------------
// The Liquid engine: the one place templates are parsed and rendered (previews here, deliveries
// elsewhere call renderTemplate).

const engineOptions = {
  // Unknown variables and filters are errors; `{% if x %}` and `| default:` may test a missing value.
  strictVariables: true,
  strictFilters: true,
  lenientIf: true,
  ownPropertyOnly: true,
  // No file system: includes, renders and layouts resolve against this empty map (and are removed below).
  templates: {},
  timezoneOffset: 0,
  // Denial-of-service bounds: source length, render time (ms), allocations.
  parseLimit: 2_000_000,
  renderLimit: 2_000,
  memoryLimit: 10_000_000,
};

function makeEngine(escapeOutput: boolean): Liquid {
  const engine = new Liquid({ ...engineOptions, ...(escapeOutput ? { outputEscape: 'escape' as const } : {}) });
  for (const tag of ['include', 'render', 'layout']) delete engine.tags[tag];
  if (escapeOutput) {
    // An explicit `| escape` (as Shopify templates write it) escapes once, not twice.
    for (const name of ['escape', 'escape_once', 'xml_escape']) {
      const f = engine.filters[name];
      engine.registerFilter(name, { handler: typeof f === 'function' ? f : f.handler, raw: true });
    }
  }
  return engine;
}

/** HTML output escapes every `{{ value }}` (use `| raw` for trusted HTML); subject and text do not. */
const htmlEngine = makeEngine(true);
const plainEngine = makeEngine(false);

export type TemplateField = 'subject' | 'html_content' | 'text_content';

/** A Liquid syntax or rendering error, with details naming the field and the line: `{html_content: "line 3: …"}`. */
export class TemplateError extends AppError {
  constructor(readonly fields: Partial<Record<TemplateField, string>>, error = 'Invalid template') {
    super(400, error, fields);
  }
}

function describeLiquidError(err: unknown): string {
  const e = err as { token?: { getPosition?: () => [number, number] }; originalError?: Error; message?: string };
  const position = typeof e?.token?.getPosition === 'function' ? e.token.getPosition() : undefined;
  const raw = e?.originalError?.message ?? e?.message ?? String(err);
  const message = raw.replace(/, line:\d+, col:\d+$/, '');
  return position ? `line ${position[0]}: ${message}` : message;
}

// Parsed templates, kept for repeated renders (a delivery renders one template many times); bounded
// by total source length, oldest dropped first.
const parsedCache = new Map<string, Template[]>();
const PARSED_CACHE_MAX_CHARS = 20_000_000;
let parsedCacheChars = 0;

function parseWith(engine: Liquid, source: string): Template[] {
  const key = `${engine === htmlEngine ? 'h' : 'p'}:${source}`;
  const hit = parsedCache.get(key);
  if (hit) return hit;
  const parsed = engine.parse(source);
  while (parsedCache.size > 0 && parsedCacheChars + key.length > PARSED_CACHE_MAX_CHARS) {
    const oldest = parsedCache.keys().next().value as string;
    parsedCache.delete(oldest);
    parsedCacheChars -= oldest.length;
  }
  parsedCache.set(key, parsed);
  parsedCacheChars += key.length;
  return parsed;
}

const engineOf = (field: TemplateField) => (field === 'html_content' ? htmlEngine : plainEngine);

/**
 * The plain-text engine (strict, no HTML escaping: what subjects and text bodies use) for other
 * domains' templates (prompts): parse through the shared cache, render, and describe an error as
 * `line N: message`.
 */
export function plainLiquid() {
  return { engine: plainEngine, parse: (source: string) => parseWith(plainEngine, source), describeError: describeLiquidError };
}

/** Parses each given field; throws one TemplateError naming every field that does not parse. */
export function parseTemplateFields(fields: Partial<Record<TemplateField, string>>): void {
  const errors: Partial<Record<TemplateField, string>> = {};
  for (const [field, source] of Object.entries(fields) as [TemplateField, string | undefined][]) {
    if (source === undefined) continue;
    try {
      parseWith(engineOf(field), source);
    } catch (err) {
      errors[field] = describeLiquidError(err);
    }
  }
  if (Object.keys(errors).length) throw new TemplateError(errors);
}

const textOptions = (wordwrap: number | false): HtmlToTextOptions => ({
  wordwrap,
  selectors: [
    ...['h1', 'h2', 'h3', 'h4', 'h5', 'h6'].map((selector) => ({ selector, options: { uppercase: false } })),
    { selector: 'img', format: 'skip' },
    { selector: 'a', options: { hideLinkHrefIfSameAsText: true } },
    // E-mail HTML lays out with tables: each cell is a block rather than a column.
    ...['table', 'tr', 'td', 'th'].map((selector) => ({ selector, format: 'block' })),
  ],
});
/** From a template's source: no wrapping, so that no `{{ … }}` is split across lines. */
const sourceToText = compileHtmlToText(textOptions(false));
/** From rendered HTML, for sending. */
const renderedToText = compileHtmlToText(textOptions(78));

/** The plain-text version of an HTML template source (Liquid tags are kept as they are). */
export function textFromHtml(html: string): string {
  return sourceToText(html).trim();
}

export interface RenderableTemplate {
  subject: string;
  html_content: string;
  /** When empty or missing, or when `text_content_generated` is true, the text is made from the rendered HTML. */
  text_content?: string | null;
  text_content_generated?: boolean;
}

export interface RenderedTemplate { subject: string; html_content: string; text_content: string }

/**
 * Renders a template's subject, HTML and text with `data`. Throws a TemplateError (400) naming
 * each field that fails, with its line. The subject is one line: line breaks become spaces.
 */
export async function renderTemplate(template: RenderableTemplate, data: Record<string, unknown>): Promise<RenderedTemplate> {
  const generated = template.text_content_generated === true || !template.text_content || template.text_content.trim() === '';
  const errors: Partial<Record<TemplateField, string>> = {};
  const render = async (field: TemplateField, source: string): Promise<string> => {
    try {
      const engine = engineOf(field);
      return String(await engine.render(parseWith(engine, source), data));
    } catch (err) {
      errors[field] = describeLiquidError(err);
      return '';
    }
  };
  const [subject, html, text] = await Promise.all([
    render('subject', template.subject),
    render('html_content', template.html_content),
    generated ? Promise.resolve(null) : render('text_content', template.text_content!),
  ]);
  if (Object.keys(errors).length) throw new TemplateError(errors, 'Template rendering failed');
  return {
    subject: subject.replace(/[\r\n]+/g, ' ').trim(),
    html_content: html,
    text_content: text ?? renderedToText(html).trim(),
  };
}

// ---------------------------------------------------------------------------------------------
// E-mail templates of an organization.

const COLUMNS = ['id', 'name', 'subject', 'html_content', 'text_content', 'text_content_generated', 'created_at', 'updated_at'] as const;
type Row = { id: string; name: string; subject: string; html_content: string; text_content: string; text_content_generated: number; created_at: string; updated_at: string };

const present = (r: Row) => ({ ...r, text_content_generated: r.text_content_generated === 1 });
export type EmailTemplate = ReturnType<typeof present>;

export interface EmailTemplateInput { name: string; subject: string; html_content: string; text_content?: string | null }

const nameTaken = () => conflict({ name: 'An e-mail template with this name already exists' });

/** Validates the Liquid of every field and works out the text version. */
function prepare(input: EmailTemplateInput) {
  const ownText = input.text_content != null && input.text_content.trim() !== '' ? input.text_content : null;
  parseTemplateFields({ subject: input.subject, html_content: input.html_content, ...(ownText !== null ? { text_content: ownText } : {}) });
  return {
    name: input.name, subject: input.subject, html_content: input.html_content,
    text_content: ownText ?? textFromHtml(input.html_content), text_content_generated: ownText === null ? 1 : 0,
  };
}

export function listEmailTemplates(ctx: Ctx, input: PageInput & { search?: string }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('email_templates').select(COLUMNS).where('organization_id', '=', org);
  if (input.search) query = query.where(containsText('name', input.search));
  return paginate(ctx, { query, table: 'email_templates', scope: org, input }, present);
}

async function findRow(ctx: Ctx, id: string): Promise<Row | undefined> {
  return ctx.deps.db.kysely.selectFrom('email_templates').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
}

export async function getEmailTemplate(ctx: Ctx, id: string): Promise<EmailTemplate> {
  const row = await findRow(ctx, id);
  if (!row) throw notFound('E-mail template');
  return present(row);
}

/** 404 unless the template exists in the actor's organization (checked before the body is validated). */
export async function assertEmailTemplateExists(ctx: Ctx, id: unknown): Promise<void> {
  if (typeof id !== 'string' || id.length === 0 || id.length > 64 || !(await findRow(ctx, id))) throw notFound('E-mail template');
}

export async function createEmailTemplate(ctx: Ctx, input: EmailTemplateInput): Promise<EmailTemplate> {
  const org = ctx.actor!.organizationId;
  const values = prepare(input);
  const now = nowIso();
  const id = newId('etp');
  try {
    await ctx.deps.db.kysely.insertInto('email_templates').values({ id, organization_id: org, ...values, created_at: now, updated_at: now }).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  ctx.deps.counts.invalidate(org, 'email_templates');
  return getEmailTemplate(ctx, id);
}

/** PUT: a full replacement (an omitted text_content is generated again from the HTML). */
export async function replaceEmailTemplate(ctx: Ctx, id: string, input: EmailTemplateInput): Promise<EmailTemplate> {
  const values = prepare(input);
  let updated: bigint | number;
  try {
    const res = await ctx.deps.db.kysely.updateTable('email_templates').set({ ...values, updated_at: nowIso() })
      .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
    updated = res.numUpdatedRows;
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  if (Number(updated) === 0) throw notFound('E-mail template');
  return getEmailTemplate(ctx, id);
}

export async function deleteEmailTemplate(ctx: Ctx, id: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  const res = await ctx.deps.db.kysely.deleteFrom('email_templates').where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) throw notFound('E-mail template');
  ctx.deps.counts.invalidate(org, 'email_templates');
}

/** The data a preview renders with when the request gives none. */
export async function sampleData(ctx: Ctx): Promise<Record<string, unknown>> {
  const org = await ctx.deps.db.kysely.selectFrom('organizations').select('name').where('id', '=', ctx.actor!.organizationId).executeTakeFirst();
  return {
    contact: {
      name: 'Jane Doe', first_name: 'Jane', last_name: 'Doe', email: 'jane.doe@example.com', company: 'Acme Corp',
      title: 'Head of Marketing', phone: '+1 555 0100', city: 'Springfield', state: 'IL', country: 'US',
    },
    organization: { name: org?.name ?? 'Your organization' },
    unsubscribe_url: `${ctx.baseUrl}/api/v1/track/n/unsubscribe?token=preview`,
  };
}

export async function previewEmailTemplate(ctx: Ctx, id: string, data: Record<string, unknown> | undefined): Promise<RenderedTemplate> {
  const t = await getEmailTemplate(ctx, id);
  return renderTemplate(t, data ?? (await sampleData(ctx)));
}
