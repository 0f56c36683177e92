import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { disableTwoFactor, enableTwoFactor, setupTwoFactor } from '../src/services/two_factor.js';

const tags = ['Two-factor authentication'];
const state = z.object({ success: z.boolean(), two_factor_enabled: z.boolean() });

export const twoFactorRouter = router({
  setup: procedure
    .meta({
      userOnly: true,
      openapi: {
        method: 'GET', path: '/api/2fa/setup/', tags, summary: 'Start 2FA setup: a new TOTP secret and its QR code',
        description: 'Stores a new pending secret (replacing any earlier pending one). 409 while 2FA is enabled: disable it first.',
      },
    })
    .input(z.object({}))
    .output(z.object({
      qr_code: z.string().describe('data:image/png;base64 URL of a QR code of `otpauth_url`'),
      secret: z.string().describe('Base32 TOTP secret, shown only now'),
      otpauth_url: z.string(),
    }))
    .query(({ ctx }) => setupTwoFactor(ctx)),
  enable: procedure
    .meta({ userOnly: true, resource: 'user', openapi: { method: 'POST', path: '/api/2fa/enable/', tags, summary: 'Enable 2FA with a code from the pending secret' } })
    .input(z.object({ otp: z.string().trim().regex(/^\d{6}$/, 'A 6-digit code') }))
    .output(state)
    .mutation(({ ctx, input }) => enableTwoFactor(ctx, input)),
  disable: procedure
    .meta({ userOnly: true, resource: 'user', openapi: { method: 'POST', path: '/api/2fa/disable/', tags, summary: 'Disable 2FA (password required)' } })
    .input(z.object({ password: z.string().min(1).max(1024) }))
    .output(state)
    .mutation(({ ctx, input }) => disableTwoFactor(ctx, input)),
});
