import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { id, timestamp } from '../src/schemas.js';
import { paginated } from '../src/pagination.js';
import {
  COMPONENT_STATUSES, INCIDENT_IMPACTS, INCIDENT_STATUSES,
  addIncidentUpdate, createComponent, createIncident, deleteComponent, getIncident, listComponents, listIncidents,
  runStatusChecks, statusOverview, updateComponent, updateIncident,
} from '../src/services/status.js';

// The platform's status page: reads are public, platform admins manage components and incidents.

const componentStatus = z.enum(COMPONENT_STATUSES);
const incidentStatus = z.enum(INCIDENT_STATUSES);
const impact = z.enum(INCIDENT_IMPACTS);
const percentage = z.number().describe('0–100; 100 when there are no samples');
const windows = z.object({ '24h': percentage, '7d': percentage, '30d': percentage, '90d': percentage });

const component = z.object({
  id: z.string(), name: z.string(), display_name: z.string(), kind: z.enum(['builtin', 'http']),
  url: z.string().nullable(), expected_status: z.number().int().nullable(), timeout_ms: z.number().int().nullable(),
  current_status: componentStatus, under_maintenance: z.boolean(),
  last_checked: timestamp.nullable(), last_error: z.string().nullable(), position: z.number().int(),
  created_at: timestamp, updated_at: timestamp,
});
const componentRef = z.object({ id: z.string(), name: z.string(), display_name: z.string(), current_status: componentStatus });
const incident = z.object({
  id: z.string(), title: z.string(), status: incidentStatus, impact,
  components: z.array(componentRef),
  created_at: timestamp, updated_at: timestamp, resolved_at: timestamp.nullable(),
  updates: z.array(z.object({ id: z.string(), status: incidentStatus, message: z.string(), created_at: timestamp })).describe('The timeline, newest first'),
});

const slug = z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9_-]*$/, 'Use lowercase letters, digits, _ and -, starting with a letter or digit');
const displayName = z.string().trim().min(1).max(200);
const httpUrl = z.url({ protocol: /^https?$/, error: 'An http:// or https:// URL' }).max(2000);
const expectedStatus = z.number().int().min(100).max(599).describe('HTTP status the check expects (default 200)');
const timeoutMs = z.number().int().min(100).max(30000).describe('Milliseconds before the check counts as an outage (default 5000); slower than half of it is degraded');
const position = z.number().int().min(0).max(100000).describe('Display order, ascending');
const title = z.string().trim().min(1).max(200);
const message = z.string().trim().min(1).max(10000);
const componentIds = z.array(id).max(100).describe('Affected component ids');
const incidentId = z.object({ incident_id: id });

const tags = ['Status page'];

export const statusRouter = router({
  overview: procedure
    .meta({ public: true, openapi: { method: 'GET', path: '/api/status/overview/', tags, summary: 'System status: components, open incidents, uptime (24h, 7d, 30d, 90d)' } })
    .input(z.object({}))
    .output(z.object({
      overall_status: componentStatus.describe('The worst current status among components'),
      components: z.array(z.object({
        id: z.string(), name: z.string(), display_name: z.string(), current_status: componentStatus,
        uptime_percentage: percentage.describe('Over the last 90 days'), last_checked: timestamp.nullable(),
      })),
      incidents: z.array(incident).describe('Open incidents, newest first'),
      uptime_stats: z.object({ overall: windows, components: z.record(z.string(), windows).describe('By component name') }),
      last_updated: timestamp,
    }))
    .query(({ ctx }) => statusOverview(ctx)),
  healthCheck: procedure
    .meta({ public: true, rateLimit: 'health', openapi: { method: 'GET', path: '/api/status/health-check/', tags, summary: 'Run every component check now and record the results (health rate limit: 100 an hour)' } })
    .input(z.object({}))
    .output(z.object({
      overall_status: componentStatus,
      checked_at: timestamp,
      results: z.array(z.object({
        component_id: z.string(), component: z.string().describe('The component name'), display_name: z.string(),
        status: componentStatus.describe('Recorded status (under_maintenance while the component is)'), observed_status: componentStatus.describe('What the check saw'),
        latency_ms: z.number().nullable(), error: z.string().nullable(), note: z.string().nullable(), checked_at: timestamp,
      })),
    }))
    .query(({ ctx }) => runStatusChecks(ctx.deps)),

  listComponents: procedure
    .meta({ platformAdmin: true, openapi: { method: 'GET', path: '/api/status/components/', tags, summary: 'List components with their check configuration' } })
    .input(z.object({}))
    .output(paginated(component))
    .query(({ ctx }) => listComponents(ctx)),
  createComponent: procedure
    .meta({ platformAdmin: true, resource: 'status_component', openapi: { method: 'POST', path: '/api/status/components/', tags, summary: 'Add an HTTP check component', successStatus: 201, errors: [409] } })
    .input(z.object({
      name: slug, display_name: displayName,
      kind: z.literal('http').optional().describe('Only HTTP checks can be added; built-in components exist already'),
      url: httpUrl, expected_status: expectedStatus.optional(), timeout_ms: timeoutMs.optional(), position: position.optional(),
    }))
    .output(component)
    .mutation(({ ctx, input: { kind: _kind, ...rest } }) => createComponent(ctx, rest)),
  updateComponent: procedure
    .meta({ platformAdmin: true, resource: 'status_component', openapi: { method: 'PATCH', path: '/api/status/components/{id}/', tags, summary: 'Change a component; set or clear maintenance (built-ins: display name, position and maintenance only)', errors: [409] } })
    .input(z.object({
      id, name: slug.optional(), display_name: displayName.optional(), url: httpUrl.optional(),
      expected_status: expectedStatus.optional(), timeout_ms: timeoutMs.optional(), position: position.optional(),
      under_maintenance: z.boolean().optional().describe('true shows the component under_maintenance until cleared'),
    }))
    .output(component)
    .mutation(({ ctx, input: { id: componentId, ...rest } }) => updateComponent(ctx, componentId, rest)),
  deleteComponent: procedure
    .meta({ platformAdmin: true, resource: 'status_component', openapi: { method: 'DELETE', path: '/api/status/components/{id}/', tags, summary: 'Delete an HTTP check component with its samples' } })
    .input(z.object({ id }))
    .output(z.object({ id: z.string(), deleted: z.literal(true) }))
    .mutation(({ ctx, input }) => deleteComponent(ctx, input.id)),

  listIncidents: procedure
    .meta({ public: true, openapi: { method: 'GET', path: '/api/status/incidents/', tags, summary: 'List incidents, newest first' } })
    .input(z.object({
      status: incidentStatus.optional().describe('Only incidents in this status'),
      limit: z.number().int().min(1).max(100).optional().describe('Results per page, 1–100 (default 50)'),
      page: z.number().int().min(1).optional().describe('Page number (1-based)'),
      cursor: z.string().max(500).optional().describe('Opaque cursor from a `next`/`previous` link'),
    }))
    .output(paginated(incident))
    .query(({ ctx, input }) => listIncidents(ctx, input)),
  getIncident: procedure
    .meta({ public: true, openapi: { method: 'GET', path: '/api/status/incidents/{incident_id}/', tags, summary: 'An incident with its timeline of updates' } })
    .input(incidentId)
    .output(incident)
    .query(({ ctx, input }) => getIncident(ctx, input.incident_id)),
  createIncident: procedure
    .meta({ platformAdmin: true, resource: 'status_incident', openapi: { method: 'POST', path: '/api/status/incidents/', tags, summary: 'Open an incident; the message is its first update', successStatus: 201 } })
    .input(z.object({
      title, status: incidentStatus.optional().describe('Default investigating'), impact: impact.optional().describe('Default minor'),
      component_ids: componentIds.optional(), message,
    }))
    .output(incident)
    .mutation(({ ctx, input }) => createIncident(ctx, input)),
  updateIncident: procedure
    .meta({ platformAdmin: true, resource: 'status_incident', openapi: { method: 'PATCH', path: '/api/status/incidents/{incident_id}/', tags, summary: 'Change an incident\'s title, impact or components (its status changes through updates)' } })
    .input(incidentId.extend({ title: title.optional(), impact: impact.optional(), component_ids: componentIds.optional() }))
    .output(incident)
    .mutation(({ ctx, input: { incident_id: incId, ...rest } }) => updateIncident(ctx, incId, rest)),
  addIncidentUpdate: procedure
    .meta({ platformAdmin: true, resource: 'status_incident', openapi: { method: 'POST', path: '/api/status/incidents/{incident_id}/updates/', tags, summary: 'Post an update; its status becomes the incident\'s (resolved sets resolved_at)', successStatus: 201 } })
    .input(incidentId.extend({ status: incidentStatus, message }))
    .output(incident)
    .mutation(({ ctx, input: { incident_id: incId, ...rest } }) => addIncidentUpdate(ctx, incId, rest)),
});
