import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import {
  contactFilters, contactFields, createContact, DATA_HEALTH_FLAGS, deleteContact, getContact, listContacts, listFacet, updateContact,
  type FacetName,
} from '../src/services/contacts.js';
import { EMAIL_VALIDITY } from '../src/services/email_intel.js';

// FireGlue's "agents" are Agentry's contacts: the documented paths, trailing slashes included.

const contact = z.object({
  id: z.string(),
  name: z.string().nullable(),
  email: z.string().nullable(),
  phone: z.string().nullable(),
  company: z.string().nullable(),
  title: z.string().nullable(),
  city: z.string().nullable(),
  state: z.string().nullable(),
  country: z.string().nullable(),
  tags: z.array(z.string()),
  custom_fields: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])),
  source: z.string().nullable(),
  lead_score: z.number().int().nullable(),
  lead_score_reasons: z.array(z.unknown()),
  unsubscribed: z.boolean(),
  bounced: z.boolean(),
  esp: z.string().nullable().describe('E-mail service provider, from the MX hosts (null until known)'),
  esg: z.string().nullable().describe('E-mail service group: google, microsoft, yahoo, security_gateway, other'),
  email_validity: z.enum(EMAIL_VALIDITY).nullable().describe('null when the contact has no e-mail'),
  data_health_flags: z.array(z.enum(DATA_HEALTH_FLAGS)),
  email_checked_at: z.string().nullable().describe('Last conclusive e-mail check (ISO-8601 UTC)'),
  created_at: z.string(),
  updated_at: z.string(),
}).meta({ id: 'Contact' });

const id = z.string().min(1).max(64);
const tags = ['Contacts'];

const option = z.object({ value: z.string(), count: z.number().int() }).meta({ id: 'FilterOption' });
const optionParams = z.object({
  page: pageParams.page,
  page_size: z.number().int().min(1).max(1000).optional().describe('Values per page (default 100, max 1000)'),
});
const optionsDescription = 'Each value with the number of contacts that have it: `{count, next, previous, results: [{value, count}]}`, '
  + 'highest count first. Counts are maintained on every write, not computed per request.';

const filterOptions = (name: FacetName, path: string, summary: string, extra = '') => procedure
  .meta({ permission: 'contacts:read', openapi: { method: 'GET', path, tags: ['Filter Options'], summary, description: `${optionsDescription}${extra}` } })
  .input(optionParams)
  .output(paginated(option))
  .query(({ ctx, input }) => listFacet(ctx, name, input));

export const contactsRouter = router({
  list: procedure
    .meta({
      permission: 'contacts:read',
      openapi: {
        method: 'GET', path: '/api/agents/', tags, summary: 'List contacts',
        description: 'Newest first. `search` matches a prefix of the name (any case, accents ignored) or of the e-mail. '
          + '`data_health_flags` takes one flag or several comma-separated (contacts having all of them).',
      },
    })
    .input(z.object({ ...pageParams, ...contactFilters }))
    .output(paginated(contact))
    .query(({ ctx, input }) => listContacts(ctx, input)),
  create: procedure
    .meta({
      permission: 'contacts:write', resource: 'contact',
      openapi: {
        method: 'POST', path: '/api/agents/', tags, summary: 'Create a contact', successStatus: 201, errors: [409],
        description: 'E-mail validity, ESP, ESG and data-health flags are derived. 409 when another contact of the organization has the e-mail (any case).',
      },
    })
    .input(z.object(contactFields))
    .output(contact)
    .mutation(({ ctx, input }) => createContact(ctx, input)),
  get: procedure
    .meta({ permission: 'contacts:read', openapi: { method: 'GET', path: '/api/agents/{id}/', tags, summary: 'Show a contact' } })
    .input(z.object({ id }))
    .output(contact)
    .query(({ ctx, input }) => getContact(ctx, input.id)),
  update: procedure
    .meta({ permission: 'contacts:write', resource: 'contact', openapi: { method: 'PATCH', path: '/api/agents/{id}/', tags, summary: 'Update a contact', errors: [409] } })
    .input(z.object({ id, ...contactFields }))
    .output(contact)
    .mutation(({ ctx, input: { id: contactId, ...rest } }) => updateContact(ctx, contactId, rest)),
  delete: procedure
    .meta({ permission: 'contacts:write', resource: 'contact', openapi: { method: 'DELETE', path: '/api/agents/{id}/', tags, summary: 'Delete a contact', successStatus: 204 } })
    .input(z.object({ id }))
    .output(z.void())
    .mutation(async ({ ctx, input }) => { await deleteContact(ctx, input.id); }),

  cities: filterOptions('cities', '/api/cities/', 'Cities of the contacts', ' Cities in use only.'),
  esps: filterOptions('esps', '/api/esps/', 'E-mail service providers', ' Every known provider, zeros included.'),
  esgs: filterOptions('esgs', '/api/esgs/', 'E-mail service groups', ' Every group, zeros included.'),
  email_validity_options: filterOptions('email_validity', '/api/email-validity-options/', 'E-mail validity values', ' Every value, zeros included (`catch_all` is accepted but never assigned: it needs an SMTP probe).'),
  data_health_flags: filterOptions('data_health_flags', '/api/data-health-flags/', 'Data-health flags', ' Every flag, zeros included.'),
});
