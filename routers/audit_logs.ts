import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { getAuditLog, listAuditLogs } from '../src/services/audit_logs.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';

const auditLog = z.object({
  id: z.string(),
  actor_type: z.string().describe('user, api_key or system'),
  actor_id: z.string().nullable(),
  action: z.string().describe('The procedure that acted, e.g. projects.create'),
  resource_type: z.string().nullable(),
  resource_id: z.string().nullable(),
  request_id: z.string().nullable(),
  ip: z.string().nullable(),
  metadata: z.record(z.string(), z.unknown()),
  created_at: timestamp,
});
const tags = ['Audit logs'];
const when = z.iso.datetime({ offset: true });

export const auditLogsRouter = router({
  list: procedure
    .meta({ permission: 'audit_logs:read', openapi: { method: 'GET', path: '/api/v1/audit_logs', tags, summary: 'List audit log entries, newest first' } })
    .input(z.object({
      ...pageParams,
      actor_id: id.optional(),
      actor_type: z.enum(['user', 'api_key', 'system']).optional(),
      action: z.string().max(200).optional(),
      resource_type: z.string().max(100).optional(),
      resource_id: id.optional(),
      since: when.optional().describe('Entries at or after this time (ISO-8601)'),
      until: when.optional().describe('Entries at or before this time (ISO-8601)'),
      platform: z.boolean().optional().describe('Platform admins only: the platform-administration entries, which belong to no organization'),
    }))
    .output(paginated(auditLog))
    .query(({ ctx, input }) => listAuditLogs(ctx, input)),
  get: procedure
    .meta({ permission: 'audit_logs:read', openapi: { method: 'GET', path: '/api/v1/audit_logs/{id}', tags, summary: 'Show an audit log entry' } })
    .input(idInput).output(auditLog)
    .query(({ ctx, input }) => getAuditLog(ctx, input.id)),
});
