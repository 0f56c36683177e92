import { defineRecurringJob } from './queue.js';
import { checkAllDomains } from '../services/outreach.js';
import { pruneStatusSamples, runStatusChecks } from '../services/status.js';

/**
 * The platform's periodic work, one schedule each for all processes (recurring jobs in the queue,
 * so a run missed while every worker was down happens when one comes back).
 */
const MINUTE = 60_000;

defineRecurringJob('status.checks', MINUTE, async ({ deps }) => {
  const r = await runStatusChecks(deps);
  return { overall_status: r.overall_status, components: r.results.length };
});
defineRecurringJob('status.prune', 24 * 60 * MINUTE, async ({ deps }) => ({ deleted: await pruneStatusSamples(deps) }));
defineRecurringJob('outreach.check_domains', 60 * MINUTE, async ({ deps }) => checkAllDomains(deps));
