import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput, timestamp } from '../src/schemas.js';
import { INQUIRY_TYPES, getContactFormSubmission, listContactFormSubmissions, submitContactForm } from '../src/services/contact_form.js';

const inquiryType = z.enum(INQUIRY_TYPES);

const submission = z.object({
  id: z.string(),
  name: z.string(),
  email: z.string(),
  company: z.string().nullable(),
  inquiry_type: inquiryType,
  subject: z.string(),
  message: z.string(),
  ip: z.string().nullable(),
  user_agent: z.string().nullable(),
  created_at: timestamp,
});

const tags = ['Contact form'];

export const contactFormRouter = router({
  submit: procedure
    .meta({
      public: true, rateLimit: 'public_form', audit: false,
      openapi: {
        method: 'POST', path: '/api/contact-form/', tags, summary: 'Submit the contact form', successStatus: 201,
        description: 'Public. Limited per IP address (10 an hour by default). The submission is stored and forwarded as a `contact_form.submitted` event.',
      },
    })
    .input(z.object({
      name: z.string().trim().min(1).max(200),
      email: z.email().max(254),
      company: z.string().trim().max(200).nullable().optional(),
      inquiry_type: inquiryType,
      subject: z.string().trim().min(1).max(200),
      message: z.string().trim().min(1).max(5000),
      website: z.string().max(2000).nullable().optional().describe('Leave empty (a field hidden from people: forms filled by robots fill it)'),
    }))
    .output(z.object({ id: z.string(), status: z.literal('received') }))
    .mutation(({ ctx, input }) => submitContactForm(ctx, input)),
  list: procedure
    .meta({ platformAdmin: true, openapi: { method: 'GET', path: '/api/contact-form/submissions/', tags, summary: 'List contact form submissions' } })
    .input(z.object({ ...pageParams, inquiry_type: inquiryType.optional() }))
    .output(paginated(submission))
    .query(({ ctx, input }) => listContactFormSubmissions(ctx, input)),
  get: procedure
    .meta({ platformAdmin: true, openapi: { method: 'GET', path: '/api/contact-form/submissions/{id}/', tags, summary: 'Show a contact form submission' } })
    .input(idInput).output(submission)
    .query(({ ctx, input }) => getContactFormSubmission(ctx, input.id)),
});
