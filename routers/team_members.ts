import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { createTeamMember, deleteTeamMember, getTeamMember, listTeamMembers, updateTeamMember } from '../src/services/team_members.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput } from '../src/schemas.js';

const teamMember = z.object({
  id: z.string().describe('The membership id'),
  user: z.object({ id: z.string(), username: z.string(), email: z.string().nullable(), first_name: z.string(), last_name: z.string() }),
  role: z.string().describe('owner, admin, member, viewer or custom:<role id>'),
  custom_role: z.object({ id: z.string(), name: z.string() }).nullable().describe('The custom role, when `role` is custom:<role id>'),
  created_at: z.string(), updated_at: z.string(),
});
const role = z.string().min(1).max(80).describe('owner, admin, member, viewer or custom:<role id>; at most your own role');
const tags = ['Team members'];

export const teamMembersRouter = router({
  list: procedure
    .meta({ permission: 'team:read', openapi: { method: 'GET', path: '/api/v1/team_members', tags, summary: 'List team members' } })
    .input(z.object({
      ...pageParams,
      role: z.string().max(80).optional().describe('Only members with this role'),
      search: z.string().max(200).optional().describe('Part of the username, e-mail or name'),
    }))
    .output(paginated(teamMember))
    .query(({ ctx, input }) => listTeamMembers(ctx, input)),
  create: procedure
    .meta({
      permission: 'team:write', resource: 'team_member',
      openapi: {
        method: 'POST', path: '/api/v1/team_members', tags, successStatus: 201, summary: 'Add a team member',
        description: 'Adds an existing user (`user_id` or `username`), or creates a new user (`username` and `password`, optionally `email`, `first_name`, `last_name`) and adds them.',
      },
    })
    .input(z.object({
      user_id: id.optional(),
      username: z.string().min(1).max(150).optional(),
      password: z.string().min(1).max(1024).optional().describe('Creates a new user with this password (at least 8 characters)'),
      email: z.email().max(254).optional(),
      first_name: z.string().max(150).optional(),
      last_name: z.string().max(150).optional(),
      role: role.optional().describe('Default member'),
    }))
    .output(teamMember)
    .mutation(({ ctx, input }) => createTeamMember(ctx, input)),
  get: procedure
    .meta({ permission: 'team:read', openapi: { method: 'GET', path: '/api/v1/team_members/{id}', tags, summary: 'Show a team member' } })
    .input(idInput).output(teamMember)
    .query(({ ctx, input }) => getTeamMember(ctx, input.id)),
  update: procedure
    .meta({ permission: 'team:write', resource: 'team_member', openapi: { method: 'PATCH', path: '/api/v1/team_members/{id}', tags, summary: "Change a team member's role" } })
    .input(idInput.extend({ role: role.optional() })).output(teamMember)
    .mutation(({ ctx, input: { id: memberId, ...rest } }) => updateTeamMember(ctx, memberId, rest)),
  delete: procedure
    .meta({ permission: 'team:write', resource: 'team_member', openapi: { method: 'DELETE', path: '/api/v1/team_members/{id}', tags, summary: 'Remove a team member from the organization' } })
    .input(idInput).output(z.object({ id: z.string(), deleted: z.literal(true) }))
    .mutation(({ ctx, input }) => deleteTeamMember(ctx, input.id)),
});
