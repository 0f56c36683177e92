import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { currentUser, updateProfile } from '../src/services/users.js';
import { userOut } from './auth.js';

const tags = ['Users'];

export const usersRouter = router({
  me: procedure
    .meta({ userOnly: true, openapi: { method: 'GET', path: '/api/user/', tags, summary: 'The current user' } })
    .input(z.object({})).output(userOut)
    .query(({ ctx }) => currentUser(ctx)),
  updateProfile: procedure
    .meta({ userOnly: true, resource: 'user', openapi: { method: 'PATCH', path: '/api/profile/', tags, summary: 'Update your own profile' } })
    .input(z.object({
      first_name: z.string().trim().max(150).optional(),
      last_name: z.string().trim().max(150).optional(),
      email: z.email().max(254).nullable().optional(),
      mailgun_api_key: z.string().trim().min(1).max(512).nullable().optional()
        .describe('Write-only: stored encrypted and never returned; null removes it'),
      mailgun_domain: z.string().trim().max(253).nullable().optional().describe('A domain name such as mg.example.com'),
    }))
    .output(userOut)
    .mutation(({ ctx, input }) => updateProfile(ctx, input)),
});
