import type { Ctx } from '../context.js';
import { containsPattern, containsText } from '../db.js';
import { notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { paginate, type PageInput } from '../pagination.js';

const COLUMNS = ['id', 'name', 'description', 'status', 'settings', 'created_at', 'updated_at'] as const;
type Row = { id: string; name: string; description: string; status: string; settings: string; created_at: string; updated_at: string };

const present = (r: Row) => ({ ...r, status: r.status as 'active' | 'archived', settings: JSON.parse(r.settings) as Record<string, unknown> });

export interface ProjectInput { name: string; description?: string; status?: 'active' | 'archived'; settings?: Record<string, unknown> }

function listQuery(ctx: Ctx, org: string, status: string | undefined, search: string | undefined) {
  let query = ctx.deps.db.kysely.selectFrom('projects').select(COLUMNS).where('organization_id', '=', org);
  if (status) query = query.where('status', '=', status);
  if (search) query = query.where(containsText('name', search));
  return query;
}

export function listProjects(ctx: Ctx, input: PageInput & { status?: string; search?: string }) {
  const org = ctx.actor!.organizationId;
  const { status, search } = input;
  const params: string[] = [org];
  if (status) params.push(status);
  if (search) params.push(containsPattern(search));
  return paginate(ctx, {
    // Built only when its shape is first compiled. A bound function, not an arrow: under tsx every
    // arrow created in an object literal is also given a name, which costs on each request.
    query: listQuery.bind(null, ctx, org, status, search),
    prepared: { shape: `${status ? 's' : ''}${search ? 'q' : ''}`, params },
    table: 'projects', scope: org, input, countKey: `${status ?? ''}|${search ?? ''}`,
  }, present);
}

export async function getProject(ctx: Ctx, id: string) {
  const row = await ctx.deps.db.kysely.selectFrom('projects').select(COLUMNS)
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  if (!row) throw notFound('Project');
  return present(row);
}

export async function createProject(ctx: Ctx, input: ProjectInput) {
  const org = ctx.actor!.organizationId;
  const now = nowIso();
  const id = newId('prj');
  await ctx.deps.db.kysely.insertInto('projects').values({
    id, organization_id: org, name: input.name, description: input.description ?? '', status: input.status ?? 'active',
    settings: JSON.stringify(input.settings ?? {}), created_at: now, updated_at: now,
  }).execute();
  ctx.deps.counts.invalidate(org, 'projects');
  return getProject(ctx, id);
}

export async function updateProject(ctx: Ctx, id: string, input: Partial<ProjectInput>) {
  await getProject(ctx, id);
  const { settings, ...rest } = input;
  await ctx.deps.db.kysely.updateTable('projects')
    .set({ ...rest, ...(settings ? { settings: JSON.stringify(settings) } : {}), updated_at: nowIso() })
    .where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  return getProject(ctx, id);
}

export async function deleteProject(ctx: Ctx, id: string) {
  const p = await getProject(ctx, id);
  await ctx.deps.db.kysely.deleteFrom('projects').where('id', '=', id).where('organization_id', '=', ctx.actor!.organizationId).execute();
  ctx.deps.counts.invalidate(ctx.actor!.organizationId, 'projects');
  return { id: p.id, deleted: true as const };
}
