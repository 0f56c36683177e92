import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { createProject, deleteProject, getProject, listProjects, updateProject } from '../src/services/projects.js';
import { pageParams, paginated } from '../src/pagination.js';
import { idInput } from '../src/schemas.js';

const project = z.object({
  id: z.string(), name: z.string(), description: z.string(), status: z.enum(['active', 'archived']),
  settings: z.record(z.string(), z.unknown()), created_at: z.string(), updated_at: z.string(),
});
const fields = {
  name: z.string().trim().min(1).max(200),
  description: z.string().max(5000).optional(),
  status: z.enum(['active', 'archived']).optional(),
  settings: z.record(z.string(), z.unknown()).optional(),
};
const tags = ['Projects'];

export const projectsRouter = router({
  list: procedure
    .meta({ permission: 'projects:read', openapi: { method: 'GET', path: '/api/v1/projects', tags, summary: 'List projects' } })
    .input(z.object({ ...pageParams, status: z.enum(['active', 'archived']).optional(), search: z.string().max(200).optional() }))
    .output(paginated(project))
    .query(({ ctx, input }) => listProjects(ctx, input)),
  create: procedure
    .meta({ permission: 'projects:write', resource: 'project', openapi: { method: 'POST', path: '/api/v1/projects', tags, summary: 'Create a project', successStatus: 201 } })
    .input(z.object(fields)).output(project)
    .mutation(({ ctx, input }) => createProject(ctx, input)),
  get: procedure
    .meta({ permission: 'projects:read', openapi: { method: 'GET', path: '/api/v1/projects/{id}', tags, summary: 'Show a project' } })
    .input(idInput).output(project)
    .query(({ ctx, input }) => getProject(ctx, input.id)),
  update: procedure
    .meta({ permission: 'projects:write', resource: 'project', openapi: { method: 'PATCH', path: '/api/v1/projects/{id}', tags, summary: 'Update a project' } })
    .input(idInput.extend({ ...fields, name: fields.name.optional() })).output(project)
    .mutation(({ ctx, input: { id, ...rest } }) => updateProject(ctx, id, rest)),
  delete: procedure
    .meta({ permission: 'projects:write', resource: 'project', openapi: { method: 'DELETE', path: '/api/v1/projects/{id}', tags, summary: 'Delete a project' } })
    .input(idInput).output(z.object({ id: z.string(), deleted: z.literal(true) }))
    .mutation(({ ctx, input }) => deleteProject(ctx, input.id)),
});
