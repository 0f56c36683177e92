import type { ModelMessage } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from './helpers.js';
import { createFakeProvider } from './fixtures/providers.js';
import { startFakeLlm, type FakeLlm } from './support/llm-server.js';
import { callLlm, estimateMaxCost, LlmError, parseJsonText, type LlmRequest } from '../src/integrations/llm.js';
import { upsertModel } from '../src/services/providers.js';

let env: TestEnv;
let fake: FakeLlm;
const ids: Record<'openai' | 'anthropic' | 'openai_compatible', string> = { openai: '', anthropic: '', openai_compatible: '' };

beforeAll(async () => {
  env = await createTestEnv({ outboundAllowlist: ['127.0.0.1'] });
  fake = await startFakeLlm();
  ids.openai = (await createFakeProvider(env, fake, { type: 'openai' })).id;
  ids.anthropic = (await createFakeProvider(env, fake, { type: 'anthropic', is_default: false, default_model: 'claude-3-5-haiku-latest' })).id;
  ids.openai_compatible = (await createFakeProvider(env, fake, { type: 'openai_compatible', is_default: false, default_model: 'llama3.1:8b' })).id;
  await upsertModel(env.ctxOf(env.owner), ids.openai_compatible, 'llama3.1:8b', { input_price_per_million: 1, output_price_per_million: 2 });
});
afterAll(async () => {
  await fake?.close();
  await env?.close();
});

const user = (content: string): ModelMessage => ({ role: 'user', content });
const call = (over: Partial<LlmRequest> = {}) => callLlm(env.app.deps, { organizationId: env.orgA, messages: [user('Hello')], ...over });
const last = () => fake.requests[fake.requests.length - 1];
async function failure(p: Promise<unknown>): Promise<LlmError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LlmError);
    return err as LlmError;
  }
  throw new Error('expected an LlmError');
}
const TYPES = ['openai', 'anthropic', 'openai_compatible'] as const;

const weather = { name: 'get_weather', description: 'The weather in a city', inputSchema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };

describe('callLlm: answers', () => {
  it.each(TYPES)('%s: text, usage and cost from the model prices', async (type) => {
    fake.push({ text: 'Hello there', usage: { input: 1000, output: 500 } });
    const r = await call({ providerId: ids[type], system: 'Be brief.', temperature: 0.2, maxOutputTokens: 100 });
    expect(r).toMatchObject({ text: 'Hello there', toolCalls: [], finishReason: 'stop', usage: { input_tokens: 1000, output_tokens: 500 }, providerId: ids[type] });
    const prices = { openai: [0.15, 0.6], anthropic: [0.8, 4], openai_compatible: [1, 2] }[type];
    expect(r.model).toBe({ openai: 'gpt-4o-mini', anthropic: 'claude-3-5-haiku-latest', openai_compatible: 'llama3.1:8b' }[type]);
    expect(r.cost).toBeCloseTo((1000 * prices[0] + 500 * prices[1]) / 1e6, 12);
    expect(r.latencyMs).toBeGreaterThanOrEqual(0);
    expect(r.json).toBeUndefined();
    expect(r.responseMessages).toEqual([{ role: 'assistant', content: [{ type: 'text', text: 'Hello there' }] }]);
    const req = last();
    expect(req.path).toBe(type === 'anthropic' ? '/v1/messages' : '/v1/chat/completions');
    expect(req.body.temperature).toBe(0.2);
    if (type === 'anthropic') {
      expect(req.body.system).toEqual([{ type: 'text', text: 'Be brief.' }]);
      expect(req.body.max_tokens).toBe(100);
    } else {
      expect(req.body.messages[0]).toEqual({ role: 'system', content: 'Be brief.' });
      expect(req.body.max_tokens).toBe(100);
    }
  });

  it('uses the default provider and model when none is given, another model when asked; unknown prices cost 0', async () => {
    fake.push({ text: 'a' }, { text: 'b' });
    const d = await call();
    expect(d).toMatchObject({ providerId: ids.openai, model: 'gpt-4o-mini' });
    expect(last().body).toMatchObject({ model: 'gpt-4o-mini', max_tokens: 4096 });
    const m = await call({ model: 'my-fine-tune' });
    expect(m).toMatchObject({ model: 'my-fine-tune', cost: 0 });
    expect(last().body.model).toBe('my-fine-tune');
  });

  it.each(TYPES)('%s: streams text deltas through onTextDelta', async (type) => {
    fake.push({ text: 'one two three four', usage: { input: 3, output: 4 } });
    const deltas: string[] = [];
    const r = await call({ providerId: ids[type], onTextDelta: (d) => deltas.push(d) });
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.join('')).toBe('one two three four');
    expect(r).toMatchObject({ text: 'one two three four', finishReason: 'stop', usage: { input_tokens: 3, output_tokens: 4 } });
    expect(r.cost).toBeGreaterThan(0);
    expect(last().body.stream).toBe(true);
    expect(r.responseMessages[0]).toMatchObject({ role: 'assistant' });
  });

  it.each(TYPES)('%s: offers tools and returns tool calls unexecuted, then continues with the result', async (type) => {
    fake.push({ toolCalls: [{ name: 'get_weather', arguments: { city: 'Paris' } }] });
    const r = await call({ providerId: ids[type], tools: [weather] });
    expect(r.finishReason).toBe('tool-calls');
    expect(r.toolCalls).toEqual([{ id: expect.any(String), name: 'get_weather', input: { city: 'Paris' } }]);
    const offered = last().body.tools;
    expect(JSON.stringify(offered)).toContain('get_weather');
    expect(JSON.stringify(offered)).toContain('"city"');

    // The loop appends the assistant message and the tool result, and asks again.
    const messages: ModelMessage[] = [user('Weather in Paris?'), ...r.responseMessages, {
      role: 'tool',
      content: [{ type: 'tool-result', toolCallId: r.toolCalls[0].id, toolName: 'get_weather', output: { type: 'json', value: { temp_c: 21 } } }],
    }];
    fake.push({ text: 'It is 21 °C.' });
    const next = await call({ providerId: ids[type], tools: [weather], messages });
    expect(next.text).toBe('It is 21 °C.');
    expect(JSON.stringify(last().body.messages)).toContain(r.toolCalls[0].id);
    expect(JSON.stringify(last().body.messages)).toContain('temp_c');
  });

  it('returns calls of tools that were not offered, or with other inputs, for the caller to answer', async () => {
    fake.push({ toolCalls: [{ name: 'not_offered', arguments: { a: 1 } }, { name: 'get_weather', arguments: { town: 'Oslo' } }] });
    const r = await call({ tools: [weather] });
    expect(r.toolCalls.map((c) => [c.name, c.input])).toEqual([['not_offered', { a: 1 }], ['get_weather', { town: 'Oslo' }]]);
    expect(r.responseMessages).toHaveLength(1);
    expect(r.responseMessages[0].role).toBe('assistant');
  });

  it.each(TYPES)('%s: tool calls while streaming', async (type) => {
    fake.push({ text: 'Let me check.', toolCalls: [{ name: 'get_weather', arguments: { city: 'Rome' } }] });
    const deltas: string[] = [];
    const r = await call({ providerId: ids[type], tools: [weather], onTextDelta: (d) => deltas.push(d) });
    expect(deltas.join('')).toBe('Let me check.');
    expect(r.toolCalls).toEqual([{ id: expect.any(String), name: 'get_weather', input: { city: 'Rome' } }]);
    expect(r.finishReason).toBe('tool-calls');
  });

  const schema = { type: 'object', properties: { score: { type: 'number' }, reasons: { type: 'array', items: { type: 'string' } } }, required: ['score', 'reasons'] };

  it.each([
    ['openai', undefined], ['anthropic', 'claude-3-5-haiku-latest'], ['anthropic', 'claude-sonnet-4-5'], ['openai_compatible', undefined],
  ] as const)('%s %s: JSON output is parsed into json', async (type, model) => {
    fake.push({ text: '{"score": 80, "reasons": ["fit"]}' });
    const r = await call({ providerId: ids[type], model, jsonSchema: schema });
    expect(r.json).toEqual({ score: 80, reasons: ['fit'] });
    const body = last().body;
    if (type === 'openai') expect(body.response_format).toMatchObject({ type: 'json_schema', json_schema: { schema: expect.objectContaining({ required: ['score', 'reasons'] }) } });
    if (type === 'openai_compatible') {
      expect(body.response_format).toEqual({ type: 'json_object' });
      expect(JSON.stringify(body.messages)).toContain('JSON Schema');
      expect(JSON.stringify(body.messages)).toContain('reasons');
    }
    if (type === 'anthropic') expect(JSON.stringify(body)).toContain('reasons');
  });

  it('JSON output: text that is not JSON gives json undefined (the caller re-asks); fenced JSON is found; streaming too', async () => {
    fake.push({ text: 'I cannot do that.' });
    const no = await call({ jsonSchema: { type: 'object' } });
    expect(no.text).toBe('I cannot do that.');
    expect(no.json).toBeUndefined();
    fake.push({ text: 'Here:\n```json\n{"a": 1}\n```' });
    expect((await call({ providerId: ids.openai_compatible, jsonSchema: { type: 'object' } })).json).toEqual({ a: 1 });
    fake.push({ text: '{"a": [1, 2]}' });
    const streamed = await call({ jsonSchema: { type: 'object' }, onTextDelta: () => {} });
    expect(streamed.json).toEqual({ a: [1, 2] });
    expect(parseJsonText('noise {"b": true} noise')).toEqual({ b: true });
    expect(parseJsonText('')).toBeUndefined();
  });
});

describe('callLlm: failures are LlmErrors', () => {
  it.each(TYPES)('%s: statuses map to codes, the provider message is kept', async (type) => {
    const cases: [number, string, boolean][] = [[429, 'rate_limited', true], [500, 'server_error', true], [503, 'server_error', true], [401, 'auth_failed', false], [403, 'auth_failed', false], [404, 'model_not_found', false], [400, 'bad_request', false]];
    for (const [status, code, retryable] of cases) {
      fake.push({ status });
      const e = await failure(call({ providerId: ids[type] }));
      expect({ status: e.status, code: e.code, retryable: e.retryable }).toEqual({ status, code, retryable });
      expect(e.message.length).toBeGreaterThan(0);
    }
    fake.push({ status: 401 });
    const e = await failure(call({ providerId: ids[type] }));
    expect(e.message).toEqual(type === 'anthropic' ? 'invalid x-api-key' : expect.stringContaining('Incorrect API key'));
    fake.push({ status: 429, errorBody: type === 'anthropic' ? { type: 'error', error: { type: 'rate_limit_error', message: 'Slow down please' } } : { error: { message: 'Slow down please', type: 'requests', code: 'rate_limit_exceeded' } } });
    expect((await failure(call({ providerId: ids[type] }))).message).toBe('Slow down please');
  });

  it.each(TYPES)('%s: a malformed body is a retryable malformed_response (JSON and stream)', async (type) => {
    fake.push({ raw: '{"id": "x", "choices": [' });
    const e = await failure(call({ providerId: ids[type] }));
    expect(e).toMatchObject({ code: 'malformed_response', retryable: true });
    fake.push({ raw: 'data: {"this is": not json}\n\n' });
    const s = await failure(call({ providerId: ids[type], onTextDelta: () => {} }));
    expect(s.retryable).toBe(true);
    // The Anthropic provider reports a broken event stream as a 500 of its own.
    expect(s.code).toBe(type === 'anthropic' ? 'server_error' : 'malformed_response');
    // A streamed 200 without a single event (a JSON or HTML body) is no answer either.
    for (const raw of ['{"id": "x", "choices": [', '<html><body>Bad gateway</body></html>']) {
      fake.push({ raw });
      expect(await failure(call({ providerId: ids[type], onTextDelta: () => {} }))).toMatchObject({ code: 'malformed_response', retryable: true });
    }
  });

  it('an error status while streaming is mapped the same way', async () => {
    fake.push({ status: 500 });
    const e = await failure(call({ onTextDelta: () => {} }));
    expect(e).toMatchObject({ code: 'server_error', status: 500, retryable: true });
    fake.push({ status: 401 });
    expect(await failure(call({ providerId: ids.anthropic, onTextDelta: () => {} }))).toMatchObject({ code: 'auth_failed', status: 401, retryable: false });
  });

  it('times out (retryable) and honours the caller’s abort (not retryable)', async () => {
    fake.push({ delayMs: 2000 });
    const t = await failure(call({ timeoutMs: 200 }));
    expect(t).toMatchObject({ code: 'timeout', retryable: true, status: null });
    fake.push({ delayMs: 2000 });
    const ts = await failure(call({ timeoutMs: 200, onTextDelta: () => {} }));
    expect(ts).toMatchObject({ code: 'timeout', retryable: true });

    const ac = new AbortController();
    fake.push({ delayMs: 2000 });
    const p = call({ signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    expect(await failure(p)).toMatchObject({ code: 'aborted', retryable: false });
    const already = new AbortController();
    already.abort();
    expect(await failure(call({ signal: already.signal }))).toMatchObject({ code: 'aborted', retryable: false });
  });

  it.each(TYPES)('%s: a stream cut short by the timeout or an abort is an error, not a partial answer', async (type) => {
    fake.push({ text: 'a b c d e f g h i j k l', chunkDelayMs: 150 });
    const deltas: string[] = [];
    const t = await failure(call({ providerId: ids[type], timeoutMs: 500, onTextDelta: (d) => deltas.push(d) }));
    expect(t).toMatchObject({ code: 'timeout', retryable: true });
    expect(deltas.join('')).not.toBe('a b c d e f g h i j k l');

    const ac = new AbortController();
    fake.push({ text: 'a b c d e f g h', chunkDelayMs: 100 });
    const a = await failure(call({ providerId: ids[type], signal: ac.signal, onTextDelta: () => ac.abort() }));
    expect(a).toMatchObject({ code: 'aborted', retryable: false });
  });

  it('an unreachable server is a retryable network error', async () => {
    const gone = await startFakeLlm();
    const p = await createFakeProvider(env, gone, { type: 'openai_compatible', is_default: false });
    await gone.close();
    expect(await failure(call({ providerId: p.id }))).toMatchObject({ code: 'network', retryable: true, status: null });
  });

  it('misconfiguration is not retryable: no default provider, unknown or foreign provider, refused URL', async () => {
    const noDefault = await failure(callLlm(env.app.deps, { organizationId: env.orgB, messages: [user('x')] }));
    expect(noDefault).toMatchObject({ code: 'misconfigured', retryable: false });
    expect(noDefault.message).toMatch(/default LLM provider/);
    expect(await failure(call({ providerId: 'prv_missing' }))).toMatchObject({ code: 'misconfigured', retryable: false });
    const foreign = await createFakeProvider(env, fake, { who: env.otherOwner, is_default: false });
    expect(await failure(call({ providerId: foreign.id }))).toMatchObject({ code: 'misconfigured', retryable: false });

    const strict = await createTestEnv();
    try {
      const p = await createFakeProvider(strict, fake);
      const before = fake.requests.length;
      const e = await failure(callLlm(strict.app.deps, { organizationId: strict.orgA, messages: [user('x')] }));
      expect(e).toMatchObject({ code: 'forbidden_url', retryable: false });
      expect(e.message).toContain('loopback');
      expect(fake.requests.length).toBe(before);
      expect(p.id).toMatch(/^prv_/);
    } finally {
      await strict.close();
    }
  });
});

describe('the fake server', () => {
  it('lists models and answers unknown paths with a 404 in the provider shape', async () => {
    const models = await fetch(`${fake.openaiBaseUrl}/models`);
    expect(models.status).toBe(200);
    const body = await models.json() as { object: string; data: { id: string }[] };
    expect(body.object).toBe('list');
    expect(body.data.map((m) => m.id)).toContain('gpt-4o-mini');
    const missing = await fetch(`${fake.url}/v1/nope`, { method: 'POST', body: '{}' });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { message: expect.stringContaining('/v1/nope') } });
    expect(fake.requests[fake.requests.length - 1]).toMatchObject({ path: '/v1/nope', body: {} });
  });
});

describe('estimateMaxCost', () => {
  it('bounds a call: input at ~4 characters a token, output at maxOutputTokens (default 4096)', async () => {
    const c = await estimateMaxCost(env.app.deps, { organizationId: env.orgA, inputChars: 4000, maxOutputTokens: 1000 });
    expect(c).toBeCloseTo((1000 * 0.15 + 1000 * 0.6) / 1e6, 12);
    const d = await estimateMaxCost(env.app.deps, { organizationId: env.orgA, providerId: ids.anthropic, model: 'claude-3-5-haiku-latest', inputChars: 0 });
    expect(d).toBeCloseTo((4096 * 4) / 1e6, 12);
    expect(await estimateMaxCost(env.app.deps, { organizationId: env.orgA, model: 'unpriced', inputChars: 100 })).toBe(0);
    await expect(estimateMaxCost(env.app.deps, { organizationId: env.orgB, inputChars: 1 })).rejects.toBeInstanceOf(LlmError);
  });
});
