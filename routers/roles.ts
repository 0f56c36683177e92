import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { createRole, deleteRole, getRole, listRoles, permissionCatalog, updateRole } from '../src/services/roles.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput } from '../src/schemas.js';

const role = z.object({
  id: z.string(), name: z.string(), description: z.string(),
  permissions: z.array(z.string()).describe('Permission names from the catalog (GET /api/v1/permissions)'),
  assign_as: z.string().describe('The value to give as `role` to a team member or an API key: `custom:<id>`'),
  created_at: z.string(), updated_at: z.string(),
});
const fields = {
  name: z.string().trim().min(1).max(100),
  description: z.string().max(2000).optional(),
  permissions: z.array(z.string().max(64)).max(200).describe('Permission names; you can only grant permissions you hold'),
};
const tags = ['Roles'];

export const rolesRouter = router({
  list: procedure
    .meta({ permission: 'roles:read', openapi: { method: 'GET', path: '/api/v1/roles', tags, summary: 'List custom roles' } })
    .input(z.object({ ...pageParams, search: z.string().max(100).optional().describe('Part of the name') }))
    .output(paginated(role))
    .query(({ ctx, input }) => listRoles(ctx, input)),
  create: procedure
    .meta({ permission: 'roles:write', resource: 'role', openapi: { method: 'POST', path: '/api/v1/roles', tags, summary: 'Create a custom role', successStatus: 201 } })
    .input(z.object(fields)).output(role)
    .mutation(({ ctx, input }) => createRole(ctx, input)),
  get: procedure
    .meta({ permission: 'roles:read', openapi: { method: 'GET', path: '/api/v1/roles/{id}', tags, summary: 'Show a custom role' } })
    .input(idInput).output(role)
    .query(({ ctx, input }) => getRole(ctx, input.id)),
  update: procedure
    .meta({ permission: 'roles:write', resource: 'role', openapi: { method: 'PATCH', path: '/api/v1/roles/{id}', tags, summary: 'Update a custom role (permissions are replaced as a whole)' } })
    .input(idInput.extend({ name: fields.name.optional(), description: fields.description, permissions: fields.permissions.optional() }))
    .output(role)
    .mutation(({ ctx, input: { id, ...rest } }) => updateRole(ctx, id, rest)),
  delete: procedure
    .meta({ permission: 'roles:write', resource: 'role', openapi: { method: 'DELETE', path: '/api/v1/roles/{id}', tags, summary: 'Delete a custom role nobody holds' } })
    .input(idInput).output(z.object({ id: z.string(), deleted: z.literal(true) }))
    .mutation(({ ctx, input }) => deleteRole(ctx, input.id)),
  permissions: procedure
    .meta({ permission: 'roles:read', openapi: { method: 'GET', path: '/api/v1/permissions', tags, summary: 'The permission catalog and the built-in roles' } })
    .input(z.object({}))
    .output(z.object({
      permissions: z.array(z.object({ name: z.string(), description: z.string() })),
      roles: z.array(z.object({ name: z.string(), description: z.string(), permissions: z.array(z.string()) })),
    }))
    .query(() => permissionCatalog()),
});
