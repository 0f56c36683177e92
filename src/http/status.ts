import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.js';
import { documentOperation } from '../openapi.js';
import { statusPageData, type ComponentStatus, type DayBucket, type Incident } from '../services/status.js';

// Documented on import, so that `agentry openapi` (which builds no app) includes it.
documentOperation({
  method: 'GET', path: '/status', operationId: 'status.page', tags: ['Status page'], public: true,
  summary: 'The public status page (HTML)',
  description: 'Overall status, each component with its status and a 90-day uptime bar (one segment per UTC day), open incidents and those resolved in the last 14 days with their timelines. Plain HTML, no scripts.',
  responses: { 200: { description: 'An HTML page', content: { 'text/html': { schema: { type: 'string' } } } } },
});

/** Non-JSON routes: the public HTML status page. */
// eslint-disable-next-line @typescript-eslint/no-unused-vars
export function register(app: FastifyInstance, deps: Deps): void {
  app.get('/status', async (req, reply) => {
    const data = await statusPageData(req.ctx);
    reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('cache-control', 'no-cache')
      // No script runs on this page; user-defined text is escaped, and this makes sure of it.
      .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
      .header('x-content-type-options', 'nosniff');
    return renderStatusPage(data);
  });
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** Escapes text for HTML content and quoted attribute values. */
export const esc = (v: unknown) => String(v ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);

const STATUS_LABEL: Record<ComponentStatus, string> = {
  operational: 'Operational',
  under_maintenance: 'Under maintenance',
  degraded_performance: 'Degraded performance',
  partial_outage: 'Partial outage',
  major_outage: 'Major outage',
};
const BANNER: Record<ComponentStatus, string> = {
  operational: 'All systems operational',
  under_maintenance: 'Maintenance in progress',
  degraded_performance: 'Degraded performance',
  partial_outage: 'Partial system outage',
  major_outage: 'Major system outage',
};
const IMPACT_LABEL: Record<Incident['impact'], string> = { none: 'No impact', minor: 'Minor impact', major: 'Major impact', critical: 'Critical impact' };
const INCIDENT_LABEL: Record<Incident['status'], string> = { investigating: 'Investigating', identified: 'Identified', monitoring: 'Monitoring', resolved: 'Resolved' };

/** `2025-10-09T18:30:00.123Z` → `2025-10-09 18:30 UTC`. */
const when = (iso: string | null) => (iso ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : 'never');

function bar(days: DayBucket[]): string {
  const segs = days.map((d) => {
    const cls = d.status ?? 'nodata';
    const title = d.status === null ? `${d.date}: no data` : `${d.date}: ${d.uptime_percentage}% uptime, ${STATUS_LABEL[d.status].toLowerCase()} at worst`;
    return `<span class="seg s-${cls}" title="${esc(title)}"></span>`;
  });
  return `<div class="bar" aria-label="Uptime over the last ${days.length} days">${segs.join('')}</div>`;
}

function incidentHtml(i: Incident): string {
  const affected = i.components.length ? `<p class="affected">Affected: ${i.components.map((c) => esc(c.display_name)).join(', ')}</p>` : '';
  const timeline = i.updates.map((u) => `<li class="update"><span class="update-status">${esc(INCIDENT_LABEL[u.status])}</span> <time datetime="${esc(u.created_at)}">${esc(when(u.created_at))}</time><p class="update-message">${esc(u.message)}</p></li>`).join('');
  return `<article class="incident impact-${esc(i.impact)} incident-${esc(i.status)}" data-incident-id="${esc(i.id)}">
<h3 class="incident-title">${esc(i.title)}</h3>
<p class="incident-meta"><span class="incident-status">${esc(INCIDENT_LABEL[i.status])}</span> · ${esc(IMPACT_LABEL[i.impact])} · opened ${esc(when(i.created_at))}${i.resolved_at ? ` · resolved ${esc(when(i.resolved_at))}` : ''}</p>
${affected}
<ol class="timeline">${timeline}</ol>
</article>`;
}

export function renderStatusPage(data: Awaited<ReturnType<typeof statusPageData>>): string {
  const components = data.components.map((c) => `<li class="component s-border-${c.current_status}" data-component="${esc(c.name)}">
<div class="component-head"><span class="component-name">${esc(c.display_name)}</span><span class="component-status st-${c.current_status}">${esc(STATUS_LABEL[c.current_status])}</span></div>
${bar(c.days)}
<div class="bar-legend"><span>${c.days.length} days ago</span><span class="uptime">${esc(c.uptime_percentage)}% uptime over ${c.days.length} days</span><span>Today</span></div>
</li>`).join('\n');
  const open = data.open_incidents.length ? data.open_incidents.map(incidentHtml).join('\n') : '<p class="empty">No open incidents.</p>';
  const resolved = data.resolved_incidents.length ? data.resolved_incidents.map(incidentHtml).join('\n') : '<p class="empty">No incidents in the last 14 days.</p>';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60">
<title>${esc(BANNER[data.overall_status])} · Status</title>
<style>
:root { --operational: #22a35a; --under_maintenance: #3b82f6; --degraded_performance: #e6a700; --partial_outage: #f2711c; --major_outage: #db2828; --nodata: #d4d8dd; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933; background: #f5f7fa; }
main { max-width: 860px; margin: 0 auto; padding: 32px 16px 48px; }
h1 { font-size: 24px; margin: 0 0 20px; }
h2 { font-size: 18px; margin: 32px 0 12px; }
.banner { padding: 18px 20px; border-radius: 8px; color: #fff; font-size: 20px; font-weight: 600; }
.banner.b-operational { background: var(--operational); } .banner.b-under_maintenance { background: var(--under_maintenance); }
.banner.b-degraded_performance { background: var(--degraded_performance); } .banner.b-partial_outage { background: var(--partial_outage); }
.banner.b-major_outage { background: var(--major_outage); }
.components { list-style: none; margin: 0; padding: 0; background: #fff; border: 1px solid #e1e5ea; border-radius: 8px; }
.component { padding: 16px 20px; border-top: 1px solid #e1e5ea; }
.component:first-child { border-top: 0; }
.component-head { display: flex; justify-content: space-between; gap: 12px; margin-bottom: 8px; }
.component-name { font-weight: 600; overflow-wrap: anywhere; }
.component-status { font-weight: 600; white-space: nowrap; }
.st-operational { color: var(--operational); } .st-under_maintenance { color: var(--under_maintenance); }
.st-degraded_performance { color: #b58400; } .st-partial_outage { color: var(--partial_outage); } .st-major_outage { color: var(--major_outage); }
.bar { display: flex; gap: 2px; height: 34px; }
.seg { flex: 1 1 0; min-width: 1px; border-radius: 2px; background: var(--nodata); }
.seg:hover { opacity: .7; }
.s-operational { background: var(--operational); } .s-under_maintenance { background: var(--under_maintenance); }
.s-degraded_performance { background: var(--degraded_performance); } .s-partial_outage { background: var(--partial_outage); }
.s-major_outage { background: var(--major_outage); } .s-nodata { background: var(--nodata); }
.bar-legend { display: flex; justify-content: space-between; font-size: 12px; color: #6b7785; margin-top: 4px; }
.incident { background: #fff; border: 1px solid #e1e5ea; border-left: 4px solid var(--degraded_performance); border-radius: 8px; padding: 14px 20px; margin-bottom: 12px; }
.incident.impact-none { border-left-color: var(--nodata); } .incident.impact-major { border-left-color: var(--partial_outage); } .incident.impact-critical { border-left-color: var(--major_outage); }
.incident.incident-resolved { border-left-color: var(--operational); }
.incident-title { margin: 0 0 4px; font-size: 17px; overflow-wrap: anywhere; }
.incident-meta, .affected { margin: 0 0 6px; color: #52606d; font-size: 13px; }
.incident-status { font-weight: 600; color: #1f2933; }
.timeline { list-style: none; margin: 8px 0 0; padding: 0 0 0 14px; border-left: 2px solid #e1e5ea; }
.update { margin: 0 0 10px; }
.update-status { font-weight: 600; }
.update time { color: #6b7785; font-size: 13px; }
.update-message { margin: 2px 0 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.empty { color: #6b7785; }
@media (max-width: 600px) { main { padding: 20px 10px 32px; } .component { padding: 12px; } .bar { gap: 1px; height: 28px; } .incident { padding: 12px; } }
footer { margin-top: 32px; color: #6b7785; font-size: 13px; }
footer a { color: inherit; }
</style>
</head>
<body>
<main>
<h1>System status</h1>
<div class="banner b-${data.overall_status}" role="status" id="overall-status">${esc(BANNER[data.overall_status])}</div>
<h2>Components</h2>
<ul class="components">
${components}
</ul>
<h2>Open incidents</h2>
<section id="open-incidents">
${open}
</section>
<h2>Resolved in the last 14 days</h2>
<section id="resolved-incidents">
${resolved}
</section>
<footer>Generated ${esc(when(data.generated_at))} · <a href="/api/status/overview/">JSON</a></footer>
</main>
</body>
</html>
`;
}
