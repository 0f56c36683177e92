import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../src/app.js';
import type { Ctx } from '../src/context.js';
import type { Db } from '../src/db.js';
import { newId, nowIso } from '../src/ids.js';
import { PERMISSIONS } from '../src/permissions.js';
import { getJob, runUntilIdle } from '../src/engine/queue.js';
import { executeAgent } from '../src/services/agent_runtime.js';
import { createAgent } from '../src/services/agents.js';
import { createOrganization } from '../src/services/organizations.js';
import { createProvider, upsertModel } from '../src/services/providers.js';
import { createTool } from '../src/services/tools.js';
import { createUser } from '../src/services/users.js';
import { freshDb, testConfig } from './helpers.js';
import { startFakeLlm, type FakeLlm } from './support/llm-server.js';

// The real agent loop (run kind `agent`, started as POST /api/v1/agents/{id}/execute does) in a
// worker process that is SIGKILLed while the run's tool call is in flight. Turn 1 of the model
// (through the AI SDK, to the local fake LLM) has been answered and paid; once the dead worker's
// lease runs out another worker resumes the run: the tool is called again (attempt 2 of its
// step), the model is asked exactly once more (turn 2), and nothing is paid twice.
// Prices are round: $1000 per million input tokens, $2000 per million output tokens.

const IN_PRICE = 1000;
const OUT_PRICE = 2000;
const costOf = (input: number, output: number) => (input * IN_PRICE + output * OUT_PRICE) / 1e6;

let fresh: Awaited<ReturnType<typeof freshDb>> | undefined;
let db: Db;
let app: App | undefined;
let llm: FakeLlm | undefined;
let toolServer: Server | undefined;
let child: ChildProcess | undefined;
/** The tool server's answer to the first call, held open until the end. */
let hanging: ServerResponse | undefined;
const toolHits: string[] = [];

afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
  }
  hanging?.destroy();
  toolServer?.closeAllConnections();
  await new Promise((r) => (toolServer ? toolServer.close(r) : r(undefined)));
  await llm?.close();
  await app?.close();
  await fresh?.drop();
});

describe('a worker process killed mid-run of the agent loop', () => {
  it('resumes at the tool call in flight: the paid LLM turn is not asked again, the tool gets attempt 2, the run costs its two turns once', async () => {
    llm = await startFakeLlm();
    let toolCalled!: () => void;
    const firstToolCall = new Promise<void>((r) => { toolCalled = r; });
    toolServer = createServer((req, res) => {
      toolHits.push(`${req.method} ${req.url}`);
      if (toolHits.length === 1) {
        // The first worker's call: announced, never answered (the worker is killed meanwhile).
        hanging = res;
        toolCalled();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ order: 42, status: 'shipped', call: toolHits.length }));
    });
    await new Promise<void>((r) => toolServer!.listen(0, '127.0.0.1', r));
    const toolUrl = `http://127.0.0.1:${(toolServer.address() as AddressInfo).port}`;

    fresh = await freshDb({ shared: true });
    db = fresh.db;
    app = await buildApp(testConfig({ outboundAllowlist: ['127.0.0.1'] }), { db, logger: pino({ level: 'silent' }) });
    const org = (await createOrganization(db.kysely, { name: 'Agent Crash Org' })).id;
    const userId = (await createUser(db.kysely, { username: 'crash_owner', password: 'correct horse battery', email: 'crash_owner@example.test' })).id;
    const now = nowIso();
    await db.kysely.insertInto('memberships').values({ id: newId('mem'), organization_id: org, user_id: userId, role: 'owner', role_id: null, created_at: now, updated_at: now }).execute();
    const ctx: Ctx = {
      deps: app.deps, authError: null, requestId: 'test', ip: '127.0.0.1', baseUrl: 'http://localhost', url: '/',
      actor: {
        type: 'user', id: userId, userId, organizationId: org, role: 'owner',
        permissions: new Set(PERMISSIONS.map((p) => p.name)), isPlatformAdmin: false, sessionId: null,
      },
    };
    const provider = await createProvider(ctx, { name: 'fake openai', type: 'openai', base_url: llm.openaiBaseUrl, api_key: 'sk-test-0123456789abcdef', default_model: 'gpt-4o-mini' });
    await upsertModel(ctx, provider.id, 'gpt-4o-mini', { input_price_per_million: IN_PRICE, output_price_per_million: OUT_PRICE });
    await createTool(ctx, {
      name: 'order_status', description: 'The status of an order', method: 'GET', url_template: `${toolUrl}/orders/{{order}}`,
      input_schema: { type: 'object', properties: { order: { type: 'string' } }, required: ['order'] },
    });
    const agent = await createAgent(ctx, {
      name: 'crash agent',
      execution_policy: {
        provider_id: provider.id, model: 'gpt-4o-mini', system_prompt: 'You track orders.', tools_allowed: ['order_status'],
        retry: { max_attempts: 3, backoff_ms: 1 }, timeout_seconds: 120,
      },
    });

    llm.push(
      { toolCalls: [{ name: 'order_status', arguments: { order: '42' } }], usage: { input: 100, output: 20 } },
      { text: 'Order 42 has shipped.', usage: { input: 200, output: 30 } },
    );
    const run = await executeAgent(ctx, agent.id, { input: 'Where is order 42?' });
    expect(run).toMatchObject({ kind: 'agent', status: 'queued' });
    const runRow = () => db.kysely.selectFrom('runs').selectAll().where('id', '=', run.id).executeTakeFirstOrThrow();
    const jobId = (await runRow()).job_id!;

    child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/agent-child.ts'], {
      env: { ...process.env, CRASH_DB_URL: fresh.url, CRASH_DB_SCHEMA: fresh.schema }, stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout!.on('data', (d) => { out += d; });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`the child did not call the tool: ${out}`)), 25_000);
      const onExit = (code: number | null) => { clearTimeout(t); reject(new Error(`child exited ${code}: ${out}`)); };
      child!.once('exit', onExit);
      void firstToolCall.then(() => { clearTimeout(t); child!.off('exit', onExit); resolve(); });
    });

    const steps = () => db.kysely.selectFrom('run_steps').selectAll().where('run_id', '=', run.id).orderBy('seq', 'asc').execute();
    // Turn 1 answered, recorded and paid; the tool step is in flight.
    expect(llm.requests).toHaveLength(1);
    const before = await steps();
    expect(before.map((s) => [s.type, s.name, s.status, s.attempt])).toEqual([['llm', 'gpt-4o-mini', 'succeeded', 1], ['tool', 'order_status', 'running', 1]]);
    expect(Number(before[0].cost)).toBeCloseTo(costOf(100, 20), 10);

    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    expect(await getJob(db.kysely, jobId)).toMatchObject({ status: 'running', attempts: 1 }); // nobody told the database
    expect(await runRow()).toMatchObject({ status: 'running' });

    // Another worker (this process, with the same agent kind) claims the job once the dead worker's lease runs out.
    const until = Date.parse((await getJob(db.kysely, jobId))!.locked_until!);
    await new Promise((r) => setTimeout(r, Math.max(0, until - Date.now()) + 100));
    expect(await runUntilIdle(app.deps, { types: ['runs.execute'], leaseMs: 5000 })).toBe(1);

    // The model was asked twice in all: turn 1 once (never again), then turn 2 with the tool's result.
    expect(llm.requests).toHaveLength(2);
    const second = llm.requests[1].body;
    const toolMessage = second.messages.find((m: { role: string }) => m.role === 'tool');
    expect(JSON.parse(toolMessage.content)).toEqual({ order: 42, status: 'shipped', call: 2 });
    expect(second.messages.find((m: { role: string }) => m.role === 'assistant').tool_calls[0].function.name).toBe('order_status');
    expect(toolHits).toEqual(['GET /orders/42', 'GET /orders/42']);

    const after = await steps();
    expect(after.map((s) => [s.seq, s.type, s.status, s.attempt])).toEqual([[0, 'llm', 'succeeded', 1], [1, 'tool', 'succeeded', 2], [2, 'llm', 'succeeded', 1]]);
    expect(after[0].id).toBe(before[0].id);
    expect(after[0].finished_at).toBe(before[0].finished_at);
    expect(Number(after[0].cost)).toBeCloseTo(costOf(100, 20), 10);
    expect([Number(after[0].tokens_in), Number(after[0].tokens_out)]).toEqual([100, 20]);
    expect(Number(after[1].cost)).toBe(0);
    expect(JSON.parse(after[1].output!)).toEqual({ order: 42, status: 'shipped', call: 2 });
    expect(Number(after[2].cost)).toBeCloseTo(costOf(200, 30), 10);

    const finished = await runRow();
    expect(finished).toMatchObject({ status: 'succeeded', error: null, error_code: null });
    expect(Number(finished.steps_count)).toBe(3);
    expect(JSON.parse(finished.output!)).toEqual({ text: 'Order 42 has shipped.', finish_reason: 'stop', llm_calls: 2, tool_calls: 1 });
    expect([Number(finished.tokens_in), Number(finished.tokens_out)]).toEqual([300, 50]);
    expect(Number(finished.cost)).toBeCloseTo(Number(after[0].cost) + Number(after[2].cost), 10);
    expect(Number(finished.cost)).toBeCloseTo(costOf(300, 50), 10);

    // Step 0 succeeded once: one `succeeded` step event for it, written by the first worker.
    const events = await db.kysely.selectFrom('run_events').select('data').where('run_id', '=', run.id).where('type', '=', 'step').orderBy('seq', 'asc').execute();
    const stepEvents = events.map((e) => JSON.parse(e.data) as { seq: number; status: string; attempt: number });
    expect(stepEvents.filter((e) => e.seq === 0 && e.status === 'succeeded')).toHaveLength(1);
    expect(stepEvents.filter((e) => e.seq === 1).map((e) => [e.status, e.attempt])).toEqual([['running', 1], ['running', 2], ['succeeded', 2]]);
    expect(await getJob(db.kysely, jobId)).toMatchObject({ status: 'succeeded', attempts: 2 });
  }, 60_000);
});
