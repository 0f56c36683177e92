import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { adminCreateOrganization, adminCreateUser, adminUpdateUser, listOrganizations, listUsers, platformStats } from '../src/services/admin.js';
import { USERNAME } from '../src/services/users.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';

// Platform administration: platform admins only, across every organization.

const organization = z.object({
  id: z.string(), name: z.string(), slug: z.string(), plan: z.string(), member_count: z.number().int(),
  created_at: timestamp, updated_at: timestamp,
});
const user = z.object({
  id: z.string(), username: z.string(), email: z.string().nullable(), first_name: z.string(), last_name: z.string(),
  is_active: z.boolean(), is_platform_admin: z.boolean(), two_factor_enabled: z.boolean(),
  organizations: z.array(z.object({ id: z.string(), name: z.string(), slug: z.string(), role: z.string() })),
  last_login_at: z.string().nullable(), created_at: timestamp, updated_at: timestamp,
});
const password = z.string().min(8).max(200);
const name = z.string().max(150);
const email = z.email().max(254);
const search = z.string().max(200).optional();
const tags = ['Platform administration'];

export const adminRouter = router({
  listOrganizations: procedure
    .meta({ platformAdmin: true, openapi: { method: 'GET', path: '/api/v1/admin/organizations', tags, summary: 'List all organizations with member counts' } })
    .input(z.object({ ...pageParams, search: search.describe('Part of the name or slug') }))
    .output(paginated(organization))
    .query(({ ctx, input }) => listOrganizations(ctx, input)),
  createOrganization: procedure
    .meta({ platformAdmin: true, resource: 'organization', openapi: { method: 'POST', path: '/api/v1/admin/organizations', tags, summary: 'Create an organization', successStatus: 201 } })
    .input(z.object({
      name: z.string().trim().min(1).max(200),
      owner_user_id: id.optional().describe('An existing user who becomes its owner'),
    }))
    .output(organization)
    .mutation(({ ctx, input }) => adminCreateOrganization(ctx, input)),
  listUsers: procedure
    .meta({ platformAdmin: true, openapi: { method: 'GET', path: '/api/v1/admin/users', tags, summary: 'List all users' } })
    .input(z.object({ ...pageParams, search: search.describe('Part of the username, e-mail or name') }))
    .output(paginated(user))
    .query(({ ctx, input }) => listUsers(ctx, input)),
  createUser: procedure
    .meta({ platformAdmin: true, resource: 'user', openapi: { method: 'POST', path: '/api/v1/admin/users', tags, summary: 'Create a user, optionally in an organization', successStatus: 201 } })
    .input(z.object({
      username: z.string().regex(USERNAME, 'Use 3-150 letters, digits or _ . @ + -'),
      password,
      email: email.optional(),
      first_name: name.optional(),
      last_name: name.optional(),
      is_platform_admin: z.boolean().optional(),
      organization_id: id.optional().describe('Make the user a member of this organization'),
      role: z.string().max(80).optional().describe('owner, admin, member (default), viewer or custom:<role id>; needs organization_id'),
    }))
    .output(user)
    .mutation(({ ctx, input }) => adminCreateUser(ctx, input)),
  updateUser: procedure
    .meta({ platformAdmin: true, resource: 'user', openapi: { method: 'PATCH', path: '/api/v1/admin/users/{id}', tags, summary: 'Change a user: names, e-mail, active and platform-admin flags, password reset' } })
    .input(idInput.extend({
      first_name: name.optional(),
      last_name: name.optional(),
      email: email.nullable().optional(),
      is_active: z.boolean().optional().describe('false ends the user\'s sessions'),
      is_platform_admin: z.boolean().optional(),
      password: password.optional().describe('A new password; ends the user\'s sessions'),
    }))
    .output(user)
    .mutation(({ ctx, input: { id: userId, ...rest } }) => adminUpdateUser(ctx, userId, rest)),
  stats: procedure
    .meta({ platformAdmin: true, openapi: { method: 'GET', path: '/api/v1/admin/stats', tags, summary: 'Platform-wide counts' } })
    .input(z.object({}))
    .output(z.object({
      organizations: z.number().int(), users: z.number().int(), active_users: z.number().int(), active_sessions: z.number().int(),
      active_api_keys: z.number().int(), projects: z.number().int(), audit_events_24h: z.number().int(),
      api_requests_today: z.number().int(), generated_at: timestamp,
    }))
    .query(({ ctx }) => platformStats(ctx)),
});
