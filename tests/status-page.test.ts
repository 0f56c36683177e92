import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from './helpers.js';
import { recordSamples } from '../src/services/status.js';

// The public status page as a person sees it, in a real browser against a real server.
const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`tests/status-page.test.ts skipped: ${CHROMIUM} does not exist (install Debian's chromium package to run it)`);

const INJECTION = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> Payments & "refunds"';

describe.skipIf(!hasChromium)('GET /status in a browser', () => {
  let env: TestEnv;
  let browser: Browser;
  let page: Page;
  let baseUrl: string;
  let openIncident: { id: string };
  let injected: { id: string };
  let resolved: { id: string };

  beforeAll(async () => {
    env = await createTestEnv();
    const admin = env.platformAdmin.token;
    const post = async (url: string, body: unknown) => {
      const res = await env.request('POST', url, { token: admin, body });
      if (res.status !== 201) throw new Error(`${url}: ${res.status} ${res.text}`);
      return res.body;
    };

    expect((await env.request('GET', '/api/status/health-check/')).status).toBe(200);
    const overview = (await env.request('GET', '/api/status/overview/')).body;
    const idOf = (name: string) => overview.components.find((c: { name: string }) => c.name === name).id as string;
    // Some history: an outage two days ago on the database, maintenance yesterday on the job queue.
    const day = (n: number) => new Date(Date.now() - n * 86400_000).toISOString();
    await recordSamples(env.app.deps, [
      { component_id: idOf('database'), status: 'operational', checked_at: day(2) },
      { component_id: idOf('database'), status: 'major_outage', checked_at: day(2) },
      { component_id: idOf('job_queue'), status: 'under_maintenance', checked_at: day(1) },
      { component_id: idOf('api_service'), status: 'degraded_performance', checked_at: day(5) },
    ]);
    const maint = await env.request('PATCH', `/api/status/components/${idOf('email_transport')}/`, { token: admin, body: { under_maintenance: true } });
    expect(maint.status).toBe(200);

    openIncident = await post('/api/status/incidents/', { title: 'Delayed e-mail delivery', impact: 'minor', component_ids: [idOf('email_transport')], message: 'We are investigating delays.' });
    await post(`/api/status/incidents/${openIncident.id}/updates/`, { status: 'identified', message: 'A provider is throttling us; switching routes.' });
    injected = await post('/api/status/incidents/', { title: INJECTION, impact: 'major', message: '<b>bold?</b> No.' });
    resolved = await post('/api/status/incidents/', { title: 'Database failover', impact: 'major', component_ids: [idOf('database')], message: 'Primary lost.' });
    await post(`/api/status/incidents/${resolved.id}/updates/`, { status: 'resolved', message: 'Failover complete.' });

    baseUrl = await env.app.fastify.listen({ port: 0, host: '127.0.0.1' });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    const res = await page.goto(`${baseUrl}/status`);
    expect(res?.status()).toBe(200);
    if (process.env.STATUS_SCREENSHOT) await page.screenshot({ path: join(tmpdir(), 'agentry-status.png'), fullPage: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await env?.close();
  });

  const component = (displayName: string) => page.locator('li.component').filter({ has: page.locator('.component-name', { hasText: displayName }) });

  it('shows the overall status', async () => {
    expect(await page.locator('#overall-status').innerText()).toBe('Maintenance in progress');
    expect(await page.title()).toMatch(/Maintenance in progress/);
  });

  it('shows each component with its status and a 90-day bar', async () => {
    const expected: [string, string][] = [
      ['API Service', 'Operational'], ['Database', 'Operational'], ['Job Queue', 'Operational'],
      ['E-mail Transport', 'Under maintenance'], ['LLM Providers', 'Operational'],
    ];
    expect(await page.locator('li.component .component-name').allInnerTexts()).toEqual(expected.map(([name]) => name));
    for (const [name, status] of expected) {
      const row = component(name);
      expect(await row.count(), name).toBe(1);
      expect(await row.locator('.component-status').innerText(), name).toBe(status);
      expect(await row.locator('.bar .seg').count(), name).toBe(90);
      expect(await row.locator('.bar .seg').first().isVisible()).toBe(true);
    }
  });

  it('colours each day by its worst status, with the day\'s uptime in the title', async () => {
    const segs = component('Database').locator('.bar .seg');
    const outage = segs.nth(87);
    expect(await outage.getAttribute('class')).toContain('s-major_outage');
    expect(await outage.getAttribute('title')).toMatch(/^\d{4}-\d{2}-\d{2}: 50% uptime/);
    const colours = await segs.evaluateAll((els) => els.map((e) => getComputedStyle(e).backgroundColor));
    expect(new Set(colours).size).toBeGreaterThan(1);
    expect(colours[87]).not.toBe(colours[0]);
    expect(await component('Job Queue').locator('.bar .seg').nth(88).getAttribute('class')).toContain('s-under_maintenance');
    expect(await component('API Service').locator('.bar .seg').nth(84).getAttribute('class')).toContain('s-degraded_performance');
  });

  it('shows an open incident with its title and its latest update', async () => {
    const incident = page.locator(`#open-incidents [data-incident-id="${openIncident.id}"]`);
    expect(await incident.locator('.incident-title').innerText()).toBe('Delayed e-mail delivery');
    expect(await incident.locator('.update-message').first().innerText()).toBe('A provider is throttling us; switching routes.');
    expect(await incident.locator('.update-status').first().innerText()).toBe('Identified');
    expect(await incident.locator('.update').count()).toBe(2);
    expect(await incident.innerText()).toContain('Affected: E-mail Transport');
  });

  it('shows incidents resolved in the last 14 days under their own heading', async () => {
    const incident = page.locator(`#resolved-incidents [data-incident-id="${resolved.id}"]`);
    expect(await incident.locator('.incident-title').innerText()).toBe('Database failover');
    expect(await incident.locator('.update-message').first().innerText()).toBe('Failover complete.');
    expect(await page.locator(`#open-incidents [data-incident-id="${resolved.id}"]`).count()).toBe(0);
  });

  it('renders an HTML-injection attempt in an incident as text', async () => {
    const incident = page.locator(`[data-incident-id="${injected.id}"]`);
    expect(await incident.locator('.incident-title').innerText()).toBe(INJECTION);
    expect(await incident.locator('.update-message').innerText()).toBe('<b>bold?</b> No.');
    expect(await incident.locator('img, script, b').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await page.locator('script').count()).toBe(0);
  });
});
