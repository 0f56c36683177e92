import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { startFakeLlm, type FakeLlm } from './support/llm-server.js';
import { fixture as foreignAgent } from './fixtures/agent_runtime.js';
import { runUntilIdle } from '../src/engine/queue.js';
import { createProvider, upsertModel } from '../src/services/providers.js';
import { createTool } from '../src/services/tools.js';
import { createAgent } from '../src/services/agents.js';
import { createBudget } from '../src/services/budgets.js';
import { createContact } from '../src/services/contacts.js';
import type { ExecutionPolicy } from '../src/services/agent_templates.js';

// The agent runtime's three endpoints against a local fake LLM (OpenAI wire format) and a local
// HTTP tool server. Model prices are set so that costs are round: $1000 per million input tokens,
// $2000 per million output tokens (100 in + 20 out = $0.14).

let env: TestEnv;
let llm: FakeLlm;
let toolServer: http.Server;
let toolUrl: string;
const toolHits: string[] = [];
let providerId: string;
let seq = 0;

const IN_PRICE = 1000;
const OUT_PRICE = 2000;
const costOf = (input: number, output: number) => (input * IN_PRICE + output * OUT_PRICE) / 1e6;

const ctx = () => env.ctxOf(env.owner);
const drain = () => runUntilIdle(env.app.deps, { types: ['runs.execute'] });

async function newAgent(policy: ExecutionPolicy = {}, extra: { output_schema?: Record<string, unknown> } = {}) {
  return createAgent(ctx(), {
    name: `agent ${++seq}`,
    execution_policy: { provider_id: providerId, model: 'gpt-4o-mini', retry: { max_attempts: 3, backoff_ms: 1 }, ...policy },
    ...extra,
  });
}

async function runRow(id: string) {
  return env.db.kysely.selectFrom('runs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}
async function stepsOf(id: string) {
  return env.db.kysely.selectFrom('run_steps').selectAll().where('run_id', '=', id).orderBy('seq', 'asc').execute();
}

const execute = (agentId: string, body: unknown, token = env.member.token, headers?: Record<string, string>) =>
  env.request('POST', `/api/v1/agents/${agentId}/execute`, { token, body, headers });
const inference = (agentId: string, body: unknown, token = env.member.token) =>
  env.request('POST', `/api/v1/agents/${agentId}/inference`, { token, body });
const scoreLead = (agentId: string, body: unknown, token = env.member.token) =>
  env.request('POST', `/api/v1/agents/${agentId}/score_lead`, { token, body });

beforeAll(async () => {
  env = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
  llm = await startFakeLlm();
  toolServer = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    toolHits.push(`${req.method} ${url.pathname}${url.search}`);
    const city = url.searchParams.get('city') ?? '';
    if (city === 'Atlantis') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'No such city' }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ city, temperature_c: 21 }));
  });
  await new Promise<void>((r) => toolServer.listen(0, '127.0.0.1', r));
  toolUrl = `http://127.0.0.1:${(toolServer.address() as AddressInfo).port}`;

  const provider = await createProvider(ctx(), { name: 'fake openai', type: 'openai', base_url: llm.openaiBaseUrl, api_key: 'sk-test-0123456789abcdef', default_model: 'gpt-4o-mini' });
  providerId = provider.id;
  await upsertModel(ctx(), providerId, 'gpt-4o-mini', { input_price_per_million: IN_PRICE, output_price_per_million: OUT_PRICE });
  await createTool(ctx(), {
    name: 'weather', description: 'The current weather of a city', method: 'GET', url_template: `${toolUrl}/weather?city={{city}}`,
    input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  });
});

afterAll(async () => {
  await llm?.close();
  await new Promise<void>((r) => (toolServer ? toolServer.close(() => r()) : r()));
  await env?.close();
});

describe('POST /api/v1/agents/{id}/execute', () => {
  it('runs the loop: a tool call, then the final answer; steps llm, tool, llm; tokens and cost summed from the prices', async () => {
    const agent = await newAgent({ system_prompt: 'You are a weather bot.', tools_allowed: ['weather'] });
    llm.push(
      { toolCalls: [{ name: 'weather', arguments: { city: 'Paris' } }], usage: { input: 100, output: 20 } },
      { text: 'It is 21 °C in Paris.', usage: { input: 200, output: 30 } },
    );
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'What is the weather in Paris?', metadata: { ticket: 'T-1' } });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ agent_id: agent.id, kind: 'agent', trigger: 'execute', status: 'queued', error: null, output: null });
    expect(res.body.input).toEqual({ message: 'What is the weather in Paris?', metadata: { ticket: 'T-1' } });
    expect(res.body.policy).toMatchObject({ system_prompt: 'You are a weather bot.', tools_allowed: ['weather'], model: 'gpt-4o-mini' });
    const shown = await env.request('GET', `/api/v1/runs/${res.body.id}`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(Object.keys(shown.body).sort()).toEqual(Object.keys(res.body).sort());

    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    expect(JSON.parse(run.output!)).toEqual({ text: 'It is 21 °C in Paris.', finish_reason: 'stop', llm_calls: 2, tool_calls: 1 });
    expect(Number(run.tokens_in)).toBe(300);
    expect(Number(run.tokens_out)).toBe(50);
    expect(Number(run.cost)).toBeCloseTo(costOf(300, 50), 10);

    const steps = await stepsOf(run.id);
    expect(steps.map((s) => [s.type, s.name, s.status])).toEqual([['llm', 'gpt-4o-mini', 'succeeded'], ['tool', 'weather', 'succeeded'], ['llm', 'gpt-4o-mini', 'succeeded']]);
    expect(Number(steps[0].cost)).toBeCloseTo(costOf(100, 20), 10);
    expect([Number(steps[0].tokens_in), Number(steps[0].tokens_out)]).toEqual([100, 20]);
    expect(steps[0].provider_id).toBe(providerId);
    expect(JSON.parse(steps[1].input!)).toEqual({ city: 'Paris' });
    expect(JSON.parse(steps[1].output!)).toEqual({ city: 'Paris', temperature_c: 21 });
    expect(toolHits).toContain('GET /weather?city=Paris');

    // The model got the system prompt, the tool, and then the tool's result.
    const [first, second] = llm.requests.slice(before);
    expect(first.body.messages[0]).toMatchObject({ role: 'system', content: 'You are a weather bot.' });
    expect(first.body.tools.map((t: { function: { name: string } }) => t.function.name)).toEqual(['weather']);
    const toolMessage = second.body.messages.find((m: { role: string }) => m.role === 'tool');
    expect(JSON.parse(toolMessage.content)).toEqual({ city: 'Paris', temperature_c: 21 });
    expect(second.body.messages.find((m: { role: string }) => m.role === 'assistant').tool_calls[0].function.name).toBe('weather');

    // Audited against the agent, with the run's id.
    const audit = await env.db.kysely.selectFrom('audit_logs').selectAll().where('action', '=', 'agent_runtime.execute').where('resource_id', '=', agent.id).execute();
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ resource_type: 'agent', actor_id: env.member.userId });
    expect(JSON.parse(audit[0].metadata)).toEqual({ run_id: run.id });

    // Tokens streamed as run events.
    const tokens = await env.db.kysely.selectFrom('run_events').select('data').where('run_id', '=', run.id).where('type', '=', 'token').execute();
    expect(tokens.map((t) => JSON.parse(t.data).delta).join('')).toBe('It is 21 °C in Paris.');
  });

  it('accepts {message, messages, context}; the context goes with the system prompt', async () => {
    const agent = await newAgent({ system_prompt: 'Be brief.' });
    llm.push({ text: 'Hello Ada.' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }], message: 'Greet me by name', context: { user: 'Ada' } } });
    expect(res.status).toBe(202);
    await drain();
    expect((await runRow(res.body.id)).status).toBe('succeeded');
    const body = llm.requests[before].body;
    expect(body.messages.map((m: { role: string }) => m.role)).toEqual(['system', 'user', 'assistant', 'user']);
    expect(body.messages[0].content).toContain('Be brief.');
    expect(body.messages[0].content).toContain('"user":"Ada"');
  });

  it('parks a tool that requires approval; approving resumes the run without calling the model again for the recorded step', async () => {
    const agent = await newAgent({ tools_allowed: ['weather'], tools_requiring_approval: ['weather'] });
    llm.push({ toolCalls: [{ name: 'weather', arguments: { city: 'Oslo' } }] }, { text: 'Cold in Oslo.' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Weather in Oslo?' });
    await drain();
    expect((await runRow(res.body.id)).status).toBe('awaiting_approval');
    let steps = await stepsOf(res.body.id);
    expect(steps.map((s) => [s.type, s.name, s.status])).toEqual([['llm', 'gpt-4o-mini', 'succeeded'], ['approval', 'tool:weather', 'awaiting_approval']]);
    expect(JSON.parse(steps[1].input!)).toMatchObject({ tool: 'weather', input: { city: 'Oslo' } });
    expect(toolHits).not.toContain('GET /weather?city=Oslo');
    expect(llm.requests.length - before).toBe(1);

    const approved = await env.request('POST', `/api/v1/runs/${res.body.id}/approve`, { token: env.member.token, body: {} });
    expect(approved.status).toBeLessThan(300);
    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    expect(JSON.parse(run.output!).text).toBe('Cold in Oslo.');
    steps = await stepsOf(run.id);
    expect(steps.map((s) => [s.type, s.status])).toEqual([['llm', 'succeeded'], ['approval', 'succeeded'], ['tool', 'succeeded'], ['llm', 'succeeded']]);
    expect(toolHits).toContain('GET /weather?city=Oslo');
    expect(llm.requests.length - before).toBe(2);
  });

  it('a rejected tool call fails the run with error_code rejected; the tool never runs', async () => {
    const agent = await newAgent({ tools_allowed: ['weather'], tools_requiring_approval: ['weather'] });
    llm.push({ toolCalls: [{ name: 'weather', arguments: { city: 'Quito' } }] });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Weather in Quito?' });
    await drain();
    expect((await runRow(res.body.id)).status).toBe('awaiting_approval');
    const rejected = await env.request('POST', `/api/v1/runs/${res.body.id}/reject`, { token: env.member.token, body: { comment: 'Not today' } });
    expect(rejected.status).toBeLessThan(300);
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'rejected' });
    expect((await stepsOf(run.id)).map((s) => [s.type, s.status])).toEqual([['llm', 'succeeded'], ['approval', 'rejected']]);
    expect(toolHits).not.toContain('GET /weather?city=Quito');
    expect(llm.requests.length - before).toBe(1);
  });

  it('stops at max_steps with error_code max_steps', async () => {
    const agent = await newAgent({ tools_allowed: ['weather'], max_steps: 2 });
    llm.push({ toolCalls: [{ name: 'weather', arguments: { city: 'Rome' } }] });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Weather in Rome, forever' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'max_steps' });
    expect(run.error).toContain('max_steps (2)');
    expect((await stepsOf(run.id)).map((s) => s.type)).toEqual(['llm', 'tool']);
    expect(llm.requests.length - before).toBe(1);
  });

  it('stops with error_code max_cost once the run has cost max_cost_usd', async () => {
    const agent = await newAgent({ tools_allowed: ['weather'], max_cost_usd: 0.1 });
    llm.push({ toolCalls: [{ name: 'weather', arguments: { city: 'Lima' } }], usage: { input: 100, output: 20 } });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Weather in Lima?' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'max_cost' });
    expect(Number(run.cost)).toBeCloseTo(0.14, 10);
    expect((await stepsOf(run.id)).map((s) => s.type)).toEqual(['llm', 'tool']);
    expect(llm.requests.length - before).toBe(1);
  });

  it('refuses a paid step over a budget: the run fails with budget_exceeded and the budget details, the model is not called', async () => {
    const agent = await newAgent();
    const budget = await createBudget(ctx(), { name: `tiny ${agent.id}`, scope: 'agent', scope_id: agent.id, limit_usd: 0.001, period: 'monthly' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Hello' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'budget_exceeded' });
    expect(run.error).toContain(budget.id);
    expect(run.error).toContain('"limit":0.001');
    expect(llm.requests.length).toBe(before);
    const steps = await stepsOf(run.id);
    expect(steps.map((s) => [s.type, s.status])).toEqual([['llm', 'failed']]);
    expect(Number(steps[0].cost)).toBe(0);
  });

  it('retries a provider 429 per policy: attempt 2 is recorded on the step', async () => {
    const agent = await newAgent();
    llm.push({ status: 429 }, { text: 'Second time lucky.' });
    const res = await execute(agent.id, { input: 'Hi' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    const steps = await stepsOf(run.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ type: 'llm', status: 'succeeded', attempt: 2 });
  });

  it("fails the step with the provider's message on a 401 (not retried)", async () => {
    const agent = await newAgent();
    llm.push({ status: 401 });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Hi' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'provider_error' });
    expect(run.error).toContain('Incorrect API key provided');
    const steps = await stepsOf(run.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ type: 'llm', status: 'failed', attempt: 1 });
    expect(steps[0].error).toContain('Incorrect API key provided');
    expect(llm.requests.length - before).toBe(1);
  });

  it('never runs a tool outside tools_allowed: the model gets an error result instead', async () => {
    const agent = await newAgent({ tools_allowed: ['weather'] });
    llm.push({ toolCalls: [{ name: 'delete_everything', arguments: {} }] }, { text: 'I cannot do that.' });
    const before = llm.requests.length;
    const hits = toolHits.length;
    const res = await execute(agent.id, { input: 'Delete everything' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    expect((await stepsOf(run.id)).map((s) => s.type)).toEqual(['llm', 'llm']);
    expect(toolHits.length).toBe(hits);
    const toolMessages = llm.requests[before + 1].body.messages.filter((m: { role: string }) => m.role === 'tool');
    expect(toolMessages).toHaveLength(1);
    expect(toolMessages[0].content).toContain('not allowed');
  });

  it("feeds a tool's non-retryable failure back to the model instead of failing the run", async () => {
    const agent = await newAgent({ tools_allowed: ['weather'] });
    llm.push({ toolCalls: [{ name: 'weather', arguments: { city: 'Atlantis' } }] }, { text: 'Atlantis does not exist.' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Weather in Atlantis?' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    const steps = await stepsOf(run.id);
    expect(steps.map((s) => [s.type, s.status])).toEqual([['llm', 'succeeded'], ['tool', 'failed'], ['llm', 'succeeded']]);
    expect(steps[1].attempt).toBe(1);
    expect(steps[1].error).toContain('404');
    const toolMessage = llm.requests[before + 1].body.messages.find((m: { role: string }) => m.role === 'tool');
    expect(toolMessage.content).toContain('404');
  });

  it('replays the first answer for the same Idempotency-Key', async () => {
    const agent = await newAgent();
    llm.push({ text: 'once' });
    const a = await execute(agent.id, { input: 'Once' }, env.member.token, { 'idempotency-key': `k-${agent.id}` });
    const b = await execute(agent.id, { input: 'Once' }, env.member.token, { 'idempotency-key': `k-${agent.id}` });
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(b.body.id).toBe(a.body.id);
    const runs = await env.db.kysely.selectFrom('runs').select('id').where('agent_id', '=', agent.id).execute();
    expect(runs).toHaveLength(1);
    await drain();
  });

  it('400 without a message, for an unknown tool in the policy, and for a bad body; 422 without a usable provider; 409 for a paused agent', async () => {
    const agent = await newAgent();
    let res = await execute(agent.id, { input: { context: { a: 1 } } });
    expectError(res, 400);
    expect(res.body.details).toHaveProperty('input');
    expectError(await execute(agent.id, { input: '' }), 400);
    expectError(await execute(agent.id, {}), 400);
    expectError(await execute(agent.id, { input: { message: 'x', unknown: 1 } }), 400);

    // A tool deleted after the policy was written.
    const t = await createTool(ctx(), { name: `gone_${agent.id.slice(-6)}`, url_template: `${toolUrl}/weather?city={{city}}`, input_schema: { type: 'object', properties: { city: { type: 'string' } } } });
    const withTool = await newAgent({ tools_allowed: [t.name] });
    await env.db.kysely.deleteFrom('tools').where('id', '=', t.id).execute();
    res = await execute(withTool.id, { input: 'Hi' });
    expectError(res, 400);
    expect(JSON.stringify(res.body.details)).toContain(t.name);

    const noProvider = await createAgent(ctx(), { name: `no provider ${++seq}`, execution_policy: { provider_id: 'prv_missing' } });
    res = await execute(noProvider.id, { input: 'Hi' });
    expectError(res, 422);
    expect(res.body.error).toBe('provider_misconfigured');

    await env.db.kysely.updateTable('agents').set({ status: 'paused' }).where('id', '=', agent.id).execute();
    expectError(await execute(agent.id, { input: 'Hi' }), 409);
    const runs = await env.db.kysely.selectFrom('runs').select('id').where('agent_id', 'in', [agent.id, withTool.id, noProvider.id]).execute();
    expect(runs).toHaveLength(0);
  });
});

describe('POST /api/v1/agents/{id}/inference', () => {
  const schema = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer', minimum: 0 } }, required: ['name', 'age'], additionalProperties: false };

  it('answers the validated JSON with usage, cost and the run id (recorded as a run with its step)', async () => {
    const agent = await newAgent();
    llm.push({ text: '{"name":"Ada","age":36}', usage: { input: 50, output: 10 } });
    const before = llm.requests.length;
    const res = await inference(agent.id, { input: 'Ada Lovelace, 36 years old', schema });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(['cost', 'output', 'run_id', 'usage']);
    expect(res.body.output).toEqual({ name: 'Ada', age: 36 });
    expect(res.body.usage).toEqual({ input_tokens: 50, output_tokens: 10 });
    expect(res.body.cost).toBeCloseTo(costOf(50, 10), 10);
    const run = await runRow(res.body.run_id);
    expect(run).toMatchObject({ kind: 'inference', status: 'succeeded', agent_id: agent.id });
    expect((await stepsOf(run.id)).map((s) => [s.type, s.status])).toEqual([['llm', 'succeeded']]);
    expect(JSON.stringify(llm.requests[before].body)).toContain('Ada Lovelace');
  });

  it('asks again, with the validation errors, after an invalid answer', async () => {
    const agent = await newAgent();
    llm.push({ text: 'Sure! Ada is 36.' }, { text: '{"name":"Ada","age":"36"}' }, { text: '{"name":"Ada","age":36}' });
    const before = llm.requests.length;
    const res = await inference(agent.id, { input: { person: 'Ada, 36' }, schema });
    expect(res.status).toBe(200);
    expect(res.body.output).toEqual({ name: 'Ada', age: 36 });
    expect(res.body.usage).toEqual({ input_tokens: 30, output_tokens: 15 });
    expect((await stepsOf(res.body.run_id)).map((s) => s.type)).toEqual(['llm', 'llm', 'llm']);
    const third = JSON.stringify(llm.requests[before + 2].body.messages);
    expect(third).toContain('must be integer');
  });

  it('422 invalid_output when every attempt is invalid (max_invalid_output_retries)', async () => {
    const agent = await newAgent({ max_invalid_output_retries: 1 });
    llm.push({ text: '{"name":"Ada"}' }, { text: 'no' });
    const before = llm.requests.length;
    const res = await inference(agent.id, { input: 'Ada', schema });
    expectError(res, 422);
    expect(res.body.error).toBe('invalid_output');
    expect(llm.requests.length - before).toBe(2);
    const run = await runRow(res.body.details.run_id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'invalid_output' });

    // A provider error retried away earlier does not make it a provider failure.
    llm.push({ status: 429 }, { text: 'no' }, { text: 'still no' });
    const again = await inference(agent.id, { input: 'Ada', schema });
    expectError(again, 422);
    expect(again.body.error).toBe('invalid_output');
  });

  it('402 max_cost when an invalid answer has already cost max_cost_usd: not asked again', async () => {
    const agent = await newAgent({ max_invalid_output_retries: 2, max_cost_usd: 0.1 });
    llm.push({ text: 'not json', usage: { input: 100, output: 20 } });
    const before = llm.requests.length;
    const res = await inference(agent.id, { input: 'Ada', schema });
    expectError(res, 402);
    expect(res.body.error).toBe('max_cost');
    expect(llm.requests.length - before).toBe(1);
    const run = await runRow(res.body.details.run_id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'max_cost' });
    expect(Number(run.cost)).toBeCloseTo(costOf(100, 20), 10);
  });

  it("uses the agent's output_schema when the request has none; 400 when there is neither, or the schema does not compile", async () => {
    const withSchema = await newAgent({}, { output_schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } });
    llm.push({ text: '{"ok":true}' });
    const res = await inference(withSchema.id, { input: 'Is it ok?' });
    expect(res.status).toBe(200);
    expect(res.body.output).toEqual({ ok: true });

    const without = await newAgent();
    const none = await inference(without.id, { input: 'x' });
    expectError(none, 400);
    expect(none.body.details).toHaveProperty('schema');
    const bad = await inference(without.id, { input: 'x', schema: { type: 'nonsense' } });
    expectError(bad, 400);
    expect(bad.body.details.schema).toMatch(/does not compile/);
    expectError(await inference(without.id, { input: 'x', schema: { type: 'object', required: 'name' } }), 400);
    expectError(await inference(without.id, { schema }), 400);
    const runs = await env.db.kysely.selectFrom('runs').select('id').where('agent_id', '=', without.id).execute();
    expect(runs).toHaveLength(0);
  });

  it('402 budget_exceeded with the budget, and 502 with the provider\'s message on a provider failure (never 500)', async () => {
    const agent = await newAgent();
    llm.push({ status: 401 });
    const failed = await inference(agent.id, { input: 'x', schema });
    expectError(failed, 502);
    expect(failed.body.error).toBe('provider_error');
    expect(failed.body.details.message).toContain('Incorrect API key provided');
    expect(failed.body.details.provider_status).toBe(401);

    const noProvider = await createAgent(ctx(), { name: `no provider ${++seq}`, execution_policy: { provider_id: 'prv_missing' } });
    const misconfigured = await inference(noProvider.id, { input: 'x', schema });
    expectError(misconfigured, 422);
    expect(misconfigured.body.details.message).toContain('not found');

    const budget = await createBudget(ctx(), { name: `tiny inference ${agent.id}`, scope: 'agent', scope_id: agent.id, limit_usd: 0.0001 });
    const before = llm.requests.length;
    const refused = await inference(agent.id, { input: 'x', schema });
    expectError(refused, 402);
    expect(refused.body.error).toBe('budget_exceeded');
    expect(refused.body.details).toMatchObject({ budget_id: budget.id, limit: 0.0001 });
    expect(llm.requests.length).toBe(before);
  });
});

describe('POST /api/v1/agents/{id}/score_lead', () => {
  it('scores a stored contact and writes lead_score and lead_score_reasons on it', async () => {
    const agent = await newAgent({ system_prompt: 'We sell to SaaS companies.' });
    const contact = await createContact(ctx(), { name: 'Jane Buyer', company: 'Acme SaaS', title: 'VP Sales', city: 'Berlin' });
    llm.push({ text: '{"score": 82, "reasons": ["Senior decision maker", "SaaS company"]}' });
    const before = llm.requests.length;
    const res = await scoreLead(agent.id, { contact_id: contact.id });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ contact_id: contact.id, score: 82, reasons: ['Senior decision maker', 'SaaS company'] });
    expect(res.body.usage).toEqual({ input_tokens: 10, output_tokens: 5 });
    expect(typeof res.body.run_id).toBe('string');
    const sent = JSON.stringify(llm.requests[before].body);
    expect(sent).toContain('Acme SaaS');
    expect(sent).toContain('We sell to SaaS companies.');

    const shown = await env.request('GET', `/api/agents/${contact.id}/`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ lead_score: 82, lead_score_reasons: ['Senior decision maker', 'SaaS company'] });
    const steps = await stepsOf(res.body.run_id);
    expect(steps.map((s) => [s.type, s.name])).toEqual([['llm', 'gpt-4o-mini'], ['output', 'contact.lead_score']]);
  });

  it('scores an inline contact without storing anything', async () => {
    const agent = await newAgent();
    llm.push({ text: '{"score": 10, "reasons": ["Student"]}' });
    const res = await scoreLead(agent.id, { contact: { name: 'Sam', title: 'Student' } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ contact_id: null, score: 10, reasons: ['Student'] });
  });

  it('a score outside 0–100 is invalid output (asked again, then 422)', async () => {
    const agent = await newAgent({ max_invalid_output_retries: 1 });
    const contact = await createContact(ctx(), { name: 'Out Of Range' });
    llm.push({ text: '{"score": 150, "reasons": ["Great"]}' }, { text: '{"score": 101, "reasons": ["Great"]}' });
    const res = await scoreLead(agent.id, { contact_id: contact.id });
    expectError(res, 422);
    const row = await env.db.kysely.selectFrom('contacts').select('lead_score').where('id', '=', contact.id).executeTakeFirstOrThrow();
    expect(row.lead_score).toBeNull();
  });

  it("400 unless exactly one of contact_id and contact; 404 for another organization's contact", async () => {
    const agent = await newAgent();
    const contact = await createContact(ctx(), { name: 'Both' });
    expectError(await scoreLead(agent.id, {}), 400);
    expectError(await scoreLead(agent.id, { contact_id: contact.id, contact: { name: 'x' } }), 400);
    const foreign = await createContact(env.ctxOf(env.otherOwner), { name: 'Foreign Lead' });
    const before = llm.requests.length;
    const res = await scoreLead(agent.id, { contact_id: foreign.id });
    expectError(res, 404);
    expect(res.body.details).toContain('Contact');
    expectError(await scoreLead(agent.id, { contact_id: 'con_missing' }), 404);
    expect(llm.requests.length).toBe(before);
  });
});

describe('security', () => {
  const routes = ['execute', 'inference', 'score_lead'];

  it('401 without a token, 403 for a viewer, 404 for an agent of another organization or an unknown id', async () => {
    const agent = await newAgent();
    const foreign = await foreignAgent(env);
    const before = await env.db.kysely.selectFrom('runs').select('id').execute();
    for (const r of routes) {
      expectError(await env.request('POST', `/api/v1/agents/${agent.id}/${r}`, { body: { input: 'x' } }), 401);
      expectError(await env.request('POST', `/api/v1/agents/${agent.id}/${r}`, { token: env.viewer.token, body: { input: 'x' } }), 403);
      expectError(await env.request('POST', `/api/v1/agents/${agent.id}/${r}`, { token: env.viewerKey, body: { input: 'x' } }), 403);
      const res = await env.request('POST', `/api/v1/agents/${foreign}/${r}`, { token: env.owner.token, body: { input: 'x', schema: { type: 'object' }, contact: { name: 'x' } } });
      expectError(res, 404);
      expect(res.body.details).toBe('Agent not found');
      expectError(await env.request('POST', `/api/v1/agents/agt_unknown/${r}`, { token: env.owner.token, body: {} }), 404);
    }
    const after = await env.db.kysely.selectFrom('runs').select('id').execute();
    expect(after.length).toBe(before.length);
  });
});

describe('execute: provider errors are retried per policy and recorded on the step', () => {
  const stepEvents = async (runId: string) => {
    const rows = await env.db.kysely.selectFrom('run_events').select(['type', 'data']).where('run_id', '=', runId).where('type', '=', 'step').orderBy('seq', 'asc').execute();
    return rows.map((r) => JSON.parse(r.data) as { status: string; attempt: number; error?: string });
  };

  it('a 503 then a good reply: the run succeeds on attempt 2; the 503 was recorded in a step event before the retry', async () => {
    const agent = await newAgent();
    llm.push({ status: 503 }, { text: 'Back on my feet.' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Hi' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'succeeded', error: null, error_code: null });
    expect(JSON.parse(run.output!)).toMatchObject({ text: 'Back on my feet.', llm_calls: 1 });
    const steps = await stepsOf(run.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ type: 'llm', status: 'succeeded', attempt: 2, error: null });
    expect(llm.requests.length - before).toBe(2);

    const events = await stepEvents(run.id);
    const failedAttempt = events.find((e) => e.attempt === 1 && e.error);
    expect(failedAttempt?.error).toContain('The server had an error while processing your request');
    expect(failedAttempt?.error).toContain('provider status 503');
    expect(events.at(-1)).toMatchObject({ status: 'succeeded', attempt: 2 });
  });

  it('a 5xx on every attempt (max_attempts 2): the run fails with provider_error, the step with the provider\'s message; the model is called exactly twice', async () => {
    const agent = await newAgent({ retry: { max_attempts: 2, backoff_ms: 1 } });
    llm.push({ status: 500 }, { status: 502 });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Hi' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'provider_error' });
    expect(run.error).toContain('The server had an error while processing your request');
    expect(run.error).toContain('provider status 502');
    const steps = await stepsOf(run.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ type: 'llm', status: 'failed', attempt: 2 });
    expect(steps[0].error).toContain('The server had an error while processing your request');
    expect(steps[0].error).toContain('provider status 502');
    expect(steps[0].finished_at).not.toBeNull();
    expect(llm.requests.length - before).toBe(2);

    const events = await stepEvents(run.id);
    expect(events.find((e) => e.attempt === 1 && e.error)?.error).toContain('provider status 500');
    expect(events.at(-1)).toMatchObject({ status: 'failed', attempt: 2 });
  });

  it('malformed output (a 200 stream that is not chat-completion chunks): retried per policy, then the step fails with a malformed-response error', async () => {
    const agent = await newAgent({ retry: { max_attempts: 2, backoff_ms: 1 } });
    // The runtime streams: events whose data is not JSON, then JSON that is not a completion chunk.
    llm.push({ raw: 'data: {"this is": not json}\n\n' }, { raw: 'data: {"unexpected": "shape"}\n\n' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Hi' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'provider_error' });
    expect(run.error).toContain('Malformed response from the provider');
    const steps = await stepsOf(run.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ type: 'llm', status: 'failed', attempt: 2 });
    expect(steps[0].error).toContain('Malformed response from the provider');
    expect(llm.requests.length - before).toBe(2);
    expect((await stepEvents(run.id)).find((e) => e.attempt === 1 && e.error)?.error).toContain('Malformed response from the provider');
  });

  it('malformed output then a good reply: the run succeeds on attempt 2', async () => {
    const agent = await newAgent();
    llm.push({ raw: 'data: {"this is": not json}\n\n' }, { text: 'Fine now.' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Hi' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run.status).toBe('succeeded');
    expect(JSON.parse(run.output!).text).toBe('Fine now.');
    expect((await stepsOf(run.id))[0]).toMatchObject({ type: 'llm', status: 'succeeded', attempt: 2, error: null });
    expect(llm.requests.length - before).toBe(2);
  });

  it('a provider slower than the run\'s timeout_seconds: the run fails with timeout, the in-flight step is failed, no retry', async () => {
    // The per-call timeout is not configurable from the policy (callLlm's 60 s default): this
    // covers a slow provider through the run's own timeout, the shortest one (1 s).
    const agent = await newAgent({ timeout_seconds: 1 });
    llm.push({ delayMs: 1500, text: 'too late' });
    const before = llm.requests.length;
    const res = await execute(agent.id, { input: 'Hi' });
    await drain();
    const run = await runRow(res.body.id);
    expect(run).toMatchObject({ status: 'failed', error_code: 'timeout' });
    expect(run.error).toContain('timeout of 1 s');
    const steps = await stepsOf(run.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ type: 'llm', status: 'failed', attempt: 1 });
    expect(steps[0].error).toContain('timeout of 1 s');
    expect(llm.requests.length - before).toBe(1);
  });
});
