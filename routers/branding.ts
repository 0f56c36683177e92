import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { getBranding, getTracking, updateBranding, updateTracking } from '../src/services/branding.js';

export const brandingOutput = z.object({
  logo_app_url: z.string().nullable(),
  logo_square_url: z.string().nullable(),
  logo_email_url: z.string().nullable(),
  logo_login_url: z.string().nullable(),
});

const logoUrl = z.url({ protocol: /^https?$/, error: 'An absolute http or https URL' }).max(2048).nullable().optional()
  .describe('An http or https URL; null clears it. Files are uploaded with POST /api/branding/logos/{kind}/.');

const tracking = z.object({
  header_script: z.string().nullable(),
  body_script: z.string().nullable(),
  footer_script: z.string().nullable(),
  facebook_pixel_id: z.string().nullable(),
  google_analytics_id: z.string().nullable(),
});

const MAX_SCRIPT_BYTES = 64 * 1024;
const script = z.string().max(MAX_SCRIPT_BYTES)
  .refine((s) => Buffer.byteLength(s, 'utf8') <= MAX_SCRIPT_BYTES, 'At most 64 KB (UTF-8)')
  .nullable().optional().describe('HTML inserted as is (up to 64 KB); null or "" clears it');

const tags = ['Platform configuration'];

export const brandingRouter = router({
  get: procedure
    .meta({ permission: 'outreach:read', openapi: { method: 'GET', path: '/api/branding/', tags, summary: 'Branding configuration (logo URLs)' } })
    .input(z.object({})).output(brandingOutput)
    .query(({ ctx }) => getBranding(ctx)),
  update: procedure
    .meta({ permission: 'account:write', resource: 'branding', openapi: { method: 'PATCH', path: '/api/branding/', tags, summary: 'Set logo URLs' } })
    .input(z.object({ logo_app_url: logoUrl, logo_square_url: logoUrl, logo_email_url: logoUrl, logo_login_url: logoUrl }))
    .output(brandingOutput)
    .mutation(({ ctx, input }) => updateBranding(ctx, input)),
  tracking: procedure
    .meta({ permission: 'outreach:read', openapi: { method: 'GET', path: '/api/tracking/', tags, summary: 'Tracking scripts' } })
    .input(z.object({})).output(tracking)
    .query(({ ctx }) => getTracking(ctx)),
  updateTracking: procedure
    .meta({ permission: 'account:write', resource: 'tracking', openapi: { method: 'PATCH', path: '/api/tracking/', tags, summary: 'Set tracking scripts' } })
    .input(z.object({
      header_script: script,
      body_script: script,
      footer_script: script,
      facebook_pixel_id: z.string().regex(/^(\d{5,20})?$/, 'A Facebook pixel id: 5 to 20 digits').nullable().optional()
        .describe('5 to 20 digits; null or "" clears it'),
      google_analytics_id: z.string()
        .regex(/^(G-[A-Z0-9]{4,20}|GT-[A-Z0-9]{4,20}|UA-\d{4,12}-\d{1,4})?$/, 'A Google Analytics id: G-XXXXXXXXXX, GT-XXXXXXX or UA-XXXXXXXX-X')
        .nullable().optional().describe('G-…, GT-… or UA-…-…; null or "" clears it'),
    }))
    .output(tracking)
    .mutation(({ ctx, input }) => updateTracking(ctx, input)),
});
