import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput, timestamp } from '../src/schemas.js';
import {
  assertEmailTemplateExists, createEmailTemplate, deleteEmailTemplate, getEmailTemplate, listEmailTemplates, previewEmailTemplate, replaceEmailTemplate,
} from '../src/services/email_templates.js';

const LIQUID = 'Liquid (strict: unknown variables and filters are errors; in HTML, `{{ value }}` is escaped, `| raw` is not).';

const template = z.object({
  id: z.string(),
  name: z.string(),
  subject: z.string(),
  html_content: z.string(),
  text_content: z.string(),
  text_content_generated: z.boolean().describe('True when text_content was made from html_content (it is then made again from the rendered HTML when sending)'),
  created_at: timestamp,
  updated_at: timestamp,
});

const fields = z.object({
  name: z.string().trim().min(1).max(200).describe('Unique in the organization'),
  subject: z.string().min(1).max(998).regex(/^[^\r\n]*$/, 'The subject is one line: no line breaks').describe(LIQUID),
  html_content: z.string().min(1).max(500_000).describe(LIQUID),
  text_content: z.string().max(500_000).nullable().optional().describe(`${LIQUID} Generated from html_content when missing or empty.`),
});

const rendered = z.object({ subject: z.string(), html_content: z.string(), text_content: z.string() });

const tags = ['Email templates'];

/** PUT replaces the whole template: an unknown id answers 404 before the body is validated. */
const existing = procedure.use(async ({ ctx, getRawInput, next }) => {
  await assertEmailTemplateExists(ctx, ((await getRawInput()) as { id?: unknown } | undefined)?.id);
  return next();
});

export const emailTemplatesRouter = router({
  list: procedure
    .meta({ permission: 'outreach:read', openapi: { method: 'GET', path: '/api/email-templates/', tags, summary: 'List e-mail templates' } })
    .input(z.object({ ...pageParams, search: z.string().max(200).optional().describe('Part of the name, case-insensitive') }))
    .output(paginated(template))
    .query(({ ctx, input }) => listEmailTemplates(ctx, input)),
  create: procedure
    .meta({ permission: 'outreach:write', resource: 'email_template', openapi: { method: 'POST', path: '/api/email-templates/', tags, summary: 'Create an e-mail template', successStatus: 201, errors: [409] } })
    .input(fields).output(template)
    .mutation(({ ctx, input }) => createEmailTemplate(ctx, input)),
  get: procedure
    .meta({ permission: 'outreach:read', openapi: { method: 'GET', path: '/api/email-templates/{id}/', tags, summary: 'Show an e-mail template' } })
    .input(idInput).output(template)
    .query(({ ctx, input }) => getEmailTemplate(ctx, input.id)),
  update: existing
    .meta({ permission: 'outreach:write', resource: 'email_template', openapi: { method: 'PUT', path: '/api/email-templates/{id}/', tags, summary: 'Replace an e-mail template', errors: [409] } })
    .input(fields.extend(idInput.shape)).output(template)
    .mutation(({ ctx, input: { id, ...rest } }) => replaceEmailTemplate(ctx, id, rest)),
  delete: procedure
    .meta({ permission: 'outreach:write', resource: 'email_template', openapi: { method: 'DELETE', path: '/api/email-templates/{id}/', tags, summary: 'Delete an e-mail template', successStatus: 204 } })
    .input(idInput).output(z.void())
    .mutation(({ ctx, input }) => deleteEmailTemplate(ctx, input.id)),
  preview: procedure
    .meta({
      permission: 'outreach:read', audit: false,
      openapi: {
        method: 'POST', path: '/api/email-templates/{id}/preview/', tags, summary: 'Render an e-mail template with sample data',
        description: 'Renders subject, HTML and text with `data`, or with sample data when none is given: `contact` (name, first_name, last_name, email, company, title, phone, city, state, country), `organization` (name) and `unsubscribe_url`. A rendering error answers 400 naming the field and the line.',
      },
    })
    .input(idInput.extend({ data: z.record(z.string(), z.unknown()).optional().describe('The variables to render with (replaces the sample data)') }))
    .output(rendered)
    .mutation(({ ctx, input }) => previewEmailTemplate(ctx, input.id, input.data)),
});
