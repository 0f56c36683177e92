import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from './helpers.js';
import { startFakeLlm, type FakeLlm } from './support/llm-server.js';
import { runUntilIdle, Worker } from '../src/engine/queue.js';
import { compileJsonSchema, conversationOf, describeSchemaErrors } from '../src/engine/agent_loop.js';
import { createProvider, upsertModel } from '../src/services/providers.js';
import { createTool } from '../src/services/tools.js';
import { createAgent } from '../src/services/agents.js';
import { createMemoryIn } from '../src/services/memories.js';
import { createBudget } from '../src/services/budgets.js';
import type { ExecutionPolicy } from '../src/services/agent_templates.js';

// The agent loop beyond the endpoints' basics: Anthropic's wire format, memories as context, a
// worker stopped in the middle of a tool call (the run resumes without paying for the recorded
// LLM step again), tool input the model got wrong, and the pure helpers.

let env: TestEnv;
let llm: FakeLlm;
let toolServer: http.Server;
let toolUrl: string;
const toolHits: string[] = [];
let openaiProvider: string;
let anthropicProvider: string;
let seq = 0;

/** The next request for city=Slow waits until `release()`; `arrived` resolves when it comes in. */
let slow: { arrived: Promise<void>; signalArrived: () => void; release: () => void; released: Promise<void> } | null = null;
function armSlow() {
  let signalArrived!: () => void;
  let release!: () => void;
  const arrived = new Promise<void>((r) => { signalArrived = r; });
  const released = new Promise<void>((r) => { release = r; });
  slow = { arrived, signalArrived, release, released };
  return slow;
}

const ctx = () => env.ctxOf(env.owner);
const drain = () => runUntilIdle(env.app.deps, { types: ['runs.execute'] });

async function newAgent(providerId: string, model: string, policy: ExecutionPolicy = {}) {
  return createAgent(ctx(), {
    name: `loop agent ${++seq}`,
    execution_policy: { provider_id: providerId, model, retry: { max_attempts: 3, backoff_ms: 1 }, ...policy },
  });
}
const runRow = (id: string) => env.db.kysely.selectFrom('runs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const stepsOf = (id: string) => env.db.kysely.selectFrom('run_steps').selectAll().where('run_id', '=', id).orderBy('seq', 'asc').execute();
const execute = (agentId: string, input: unknown) => env.request('POST', `/api/v1/agents/${agentId}/execute`, { token: env.member.token, body: { input } });

beforeAll(async () => {
  env = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
  llm = await startFakeLlm();
  toolServer = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    toolHits.push(`${url.pathname}${url.search}`);
    const city = url.searchParams.get('city') ?? '';
    if (city === 'Slow' && slow) {
      const s = slow;
      slow = null;
      s.signalArrived();
      await s.released;
    }
    if (!res.destroyed) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ city, temperature_c: 12 }));
    }
  });
  await new Promise<void>((r) => toolServer.listen(0, '127.0.0.1', r));
  toolUrl = `http://127.0.0.1:${(toolServer.address() as AddressInfo).port}`;

  openaiProvider = (await createProvider(ctx(), { name: 'fake openai', type: 'openai', base_url: llm.openaiBaseUrl, api_key: 'sk-test-0123456789abcdef' })).id;
  await upsertModel(ctx(), openaiProvider, 'gpt-4o-mini', { input_price_per_million: 1000, output_price_per_million: 2000 });
  anthropicProvider = (await createProvider(ctx(), { name: 'fake anthropic', type: 'anthropic', base_url: llm.anthropicBaseUrl, api_key: 'sk-ant-test-0123456789' })).id;
  await upsertModel(ctx(), anthropicProvider, 'claude-sonnet-4-5', { input_price_per_million: 3000, output_price_per_million: 15000 });
  await createTool(ctx(), {
    name: 'weather', description: 'The current weather of a city', method: 'GET', url_template: `${toolUrl}/weather?city={{city}}`,
    input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
  });
});

afterAll(async () => {
  slow?.release();
  await llm?.close();
  await new Promise<void>((r) => (toolServer ? toolServer.close(() => r()) : r()));
  await env?.close();
});

describe('the agent loop', () => {
  it('speaks Anthropic: a tool call, its result as a tool_result block, the final answer; cost from the prices', async () => {
    const agent = await newAgent(anthropicProvider, 'claude-sonnet-4-5', { system_prompt: 'Weather bot.', tools_allowed: ['weather'] });
    llm.push(
      { toolCalls: [{ name: 'weather', arguments: { city: 'Bergen' } }], usage: { input: 100, output: 10 } },
      { text: 'Bergen: 12 °C, as usual.', usage: { input: 150, output: 20 } },
    );
    const before = llm.requests.length;
    const res = await execute(agent.id, 'Weather in Bergen?');
    expect(res.status).toBe(202);
    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    expect(JSON.parse(run.output!).text).toBe('Bergen: 12 °C, as usual.');
    expect([Number(run.tokens_in), Number(run.tokens_out)]).toEqual([250, 30]);
    expect(Number(run.cost)).toBeCloseTo((250 * 3000 + 30 * 15000) / 1e6, 10);
    expect((await stepsOf(run.id)).map((s) => s.type)).toEqual(['llm', 'tool', 'llm']);

    const [first, second] = llm.requests.slice(before);
    expect(first.path).toBe('/v1/messages');
    expect(first.body.system).toEqual([expect.objectContaining({ type: 'text', text: 'Weather bot.' })]);
    expect(first.body.tools.map((t: { name: string }) => t.name)).toEqual(['weather']);
    const toolUse = second.body.messages[1].content.find((c: { type: string }) => c.type === 'tool_use');
    const toolResult = second.body.messages[2].content.find((c: { type: string }) => c.type === 'tool_result');
    expect(toolUse).toMatchObject({ name: 'weather', input: { city: 'Bergen' } });
    expect(toolResult.tool_use_id).toBe(toolUse.id);
    expect(JSON.stringify(toolResult.content)).toContain('temperature_c');
  });

  it('inference through Anthropic (structured output as the forced json tool)', async () => {
    const agent = await newAgent(anthropicProvider, 'claude-sonnet-4-5');
    llm.push({ text: '{"sentiment":"positive"}' });
    const res = await env.request('POST', `/api/v1/agents/${agent.id}/inference`, {
      token: env.member.token,
      body: { input: 'I love it!', schema: { type: 'object', properties: { sentiment: { enum: ['positive', 'negative'] } }, required: ['sentiment'] } },
    });
    expect(res.status).toBe(200);
    expect(res.body.output).toEqual({ sentiment: 'positive' });
  });

  it('adds the memories most relevant to the input as context when memory_search is allowed (one memory step)', async () => {
    const agent = await newAgent(openaiProvider, 'gpt-4o-mini', { system_prompt: 'Support bot.', tools_allowed: ['memory_search'] });
    await createMemoryIn(env.app.deps, env.orgA, { agent_id: agent.id, content: 'The customer prefers to be contacted by email, never by phone.' });
    await createMemoryIn(env.app.deps, env.orgA, { agent_id: agent.id, content: 'Invoices are sent on the first day of the month.' });
    llm.push({ text: 'By email.' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { message: 'How should we contact the customer: email or phone?' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    const steps = await stepsOf(run.id);
    expect(steps.map((s) => [s.type, s.name])).toEqual([['memory', 'memory_search'], ['llm', 'gpt-4o-mini']]);
    const found = JSON.parse(steps[0].output!) as { content: string }[];
    expect(found[0].content).toContain('contacted by email');
    const system = llm.requests[before].body.messages[0];
    expect(system.role).toBe('system');
    expect(system.content).toContain('Support bot.');
    expect(system.content).toContain('Relevant memories:');
    expect(system.content).toContain('contacted by email');
  });

  it('without memory_search in tools_allowed, no memory step and no memories in the prompt', async () => {
    const agent = await newAgent(openaiProvider, 'gpt-4o-mini');
    await createMemoryIn(env.app.deps, env.orgA, { agent_id: agent.id, content: 'Secret preference: carrier pigeons.' });
    llm.push({ text: 'ok' });
    const before = llm.requests.length;
    const res = await execute(agent.id, 'Which preference? carrier pigeons?');
    await drain();
    expect((await stepsOf(res.body.id)).map((s) => s.type)).toEqual(['llm']);
    expect(JSON.stringify(llm.requests[before].body)).not.toContain('Secret preference');
  });

  it('answers a tool call whose input does not match the schema with one error result (the tool is not called)', async () => {
    const agent = await newAgent(openaiProvider, 'gpt-4o-mini', { tools_allowed: ['weather'] });
    llm.push({ toolCalls: [{ name: 'weather', arguments: { town: 'Paris' } }] }, { text: 'Sorry.' });
    const before = llm.requests.length;
    const hits = toolHits.length;
    const res = await execute(agent.id, 'Weather?');
    await drain();
    expect((await runRow(res.body.id)).status).toBe('succeeded');
    const steps = await stepsOf(res.body.id);
    expect(steps.map((s) => [s.type, s.status])).toEqual([['llm', 'succeeded'], ['tool', 'failed'], ['llm', 'succeeded']]);
    expect(toolHits.length).toBe(hits);
    const toolMessages = llm.requests[before + 1].body.messages.filter((m: { role: string }) => m.role === 'tool');
    expect(toolMessages).toHaveLength(1);
    expect(toolMessages[0].content).toContain('invalid_input');
  });

  it('records the spend of each LLM step against budgets: a threshold reached raises its alert', async () => {
    // max_output_tokens bounds the estimate checked before the call (100 × $2000/M + the input).
    const agent = await newAgent(openaiProvider, 'gpt-4o-mini', { max_output_tokens: 100 });
    const budget = await createBudget(ctx(), { name: `alerting ${agent.id}`, scope: 'agent', scope_id: agent.id, limit_usd: 1, alert_thresholds: [10] });
    llm.push({ text: 'ok', usage: { input: 100, output: 20 } });
    const res = await execute(agent.id, 'Hi');
    await drain();
    const r0 = await runRow(res.body.id);
    expect([r0.status, r0.error]).toEqual(['succeeded', null]);
    const alerts = await env.db.kysely.selectFrom('budget_alerts').selectAll().where('budget_id', '=', budget.id).execute();
    expect(alerts.map((a) => Number(a.threshold))).toEqual([10]);
    expect(Number(alerts[0].used_usd)).toBeCloseTo(0.14, 10);
  });

  it('resumes after the worker stops in the middle of a tool call: the recorded LLM step is not called (nor paid) again', async () => {
    const agent = await newAgent(openaiProvider, 'gpt-4o-mini', { tools_allowed: ['weather'] });
    llm.push(
      { toolCalls: [{ name: 'weather', arguments: { city: 'Slow' } }], usage: { input: 100, output: 20 } },
      { text: 'Slow city: 12 °C.', usage: { input: 100, output: 20 } },
    );
    const before = llm.requests.length;
    const gate = armSlow();
    const res = await execute(agent.id, 'Weather in Slow?');

    const worker = new Worker(env.app.deps, { types: ['runs.execute'], pollMs: 20 });
    await worker.start();
    await gate.arrived; // the tool step is in flight
    await worker.stop(0); // aborts the run's job and hands it back
    gate.release();
    let steps = await stepsOf(res.body.id);
    expect(steps.map((s) => [s.type, s.status])).toEqual([['llm', 'succeeded'], ['tool', 'running']]);
    expect((await runRow(res.body.id)).status).not.toBe('failed');
    expect(llm.requests.length - before).toBe(1);

    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    expect(JSON.parse(run.output!).text).toBe('Slow city: 12 °C.');
    steps = await stepsOf(run.id);
    expect(steps.map((s) => [s.type, s.status, s.attempt])).toEqual([['llm', 'succeeded', 1], ['tool', 'succeeded', 2], ['llm', 'succeeded', 1]]);
    expect(llm.requests.length - before).toBe(2);
    expect(Number(run.cost)).toBeCloseTo(2 * (100 * 1000 + 20 * 2000) / 1e6, 10);
  });
});

describe('helpers', () => {
  it('conversationOf: a string, {message}, {messages, message, context}; null without a message', () => {
    expect(conversationOf('hi')).toEqual({ messages: [{ role: 'user', content: 'hi' }], context: null, query: 'hi' });
    expect(conversationOf({ message: 'x', context: { a: 1 } })).toEqual({ messages: [{ role: 'user', content: 'x' }], context: { a: 1 }, query: 'x' });
    expect(conversationOf({ messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] })?.query).toBe('a');
    expect(conversationOf({ context: { a: 1 } })).toBeNull();
    expect(conversationOf({ messages: [{ role: 'assistant', content: 'b' }] })).toBeNull();
    expect(conversationOf('  ')).toBeNull();
    expect(conversationOf(null)).toBeNull();
  });

  it('compileJsonSchema: draft-07 by default, 2020-12 by $schema; throws for a schema that does not compile', () => {
    const v = compileJsonSchema({ type: 'object', properties: { n: { type: 'integer', maximum: 3 } }, required: ['n'] });
    expect(v({ n: 2 })).toBe(true);
    expect(v({ n: 4 })).toBe(false);
    expect(describeSchemaErrors(v.errors)).toEqual(['/n: must be <= 3']);
    const t = compileJsonSchema({ $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'array', prefixItems: [{ type: 'string' }], items: false });
    expect(t(['a'])).toBe(true);
    expect(t(['a', 'b'])).toBe(false);
    expect(() => compileJsonSchema({ type: 'nonsense' })).toThrow();
    expect(() => compileJsonSchema([])).toThrow();
  });
});
