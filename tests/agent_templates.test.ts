import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';
import { executionPolicySchema, mergePolicies } from '../src/services/agent_templates.js';
import { createAgent } from '../src/services/agents.js';

let env: TestEnv;
beforeAll(async () => { env = await createTestEnv(); });
afterAll(async () => { await env.close(); });

const BASE = '/api/v1/agent_templates';
const create = (body: unknown, token = env.member.token) => env.request('POST', BASE, { token, body });
const count = async () => (await env.request('GET', BASE, { token: env.owner.token })).body.count as number;

const fullPolicy = {
  provider_id: null, model: 'gpt-4o-mini', system_prompt: 'You nurture leads.', temperature: 0.3, max_output_tokens: 800,
  tools_allowed: ['memory_search', 'contact_lookup', 'send_email'], tools_requiring_approval: ['send_email'],
  max_steps: 8, max_cost_usd: 0.5, timeout_seconds: 120, retry: { max_attempts: 4, backoff_ms: 250 }, max_invalid_output_retries: 1,
};
const outputSchema = { type: 'object', properties: { score: { type: 'integer', minimum: 0, maximum: 100 } }, required: ['score'] };

describe('agent templates', () => {
  it('creates, shows, lists, updates and deletes', async () => {
    const created = await create({ name: 'Lead nurturer', description: 'Nurtures', category: 'sales', config: { tone: 'friendly' }, execution_policy: fullPolicy, output_schema: outputSchema });
    expect(created.status, created.text).toBe(201);
    expect(Object.keys(created.body).sort()).toEqual(['agents_count', 'category', 'config', 'created_at', 'description', 'execution_policy', 'id', 'name', 'output_schema', 'updated_at']);
    expect(created.body).toMatchObject({
      name: 'Lead nurturer', description: 'Nurtures', category: 'sales', config: { tone: 'friendly' }, execution_policy: fullPolicy, output_schema: outputSchema, agents_count: 0,
    });
    expect(created.body.id).toMatch(/^atp_/);
    const id = created.body.id as string;

    const shown = await env.request('GET', `${BASE}/${id}`, { token: env.viewer.token });
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual(created.body);

    const minimal = await create({ name: 'Minimal' });
    expect(minimal.body).toMatchObject({ description: '', category: 'general', config: {}, execution_policy: {}, output_schema: null });

    const listed = await env.request('GET', `${BASE}?category=sales`, { token: env.viewerKey });
    expect(listed.status).toBe(200);
    expect(listed.body.results.map((t: { id: string }) => t.id)).toEqual([id]);
    const searched = await env.request('GET', `${BASE}?search=MINIM`, { token: env.viewer.token });
    expect(searched.body.results.map((t: { name: string }) => t.name)).toEqual(['Minimal']);

    const patched = await env.request('PATCH', `${BASE}/${id}`, { token: env.member.token, body: { description: 'Changed', output_schema: null, execution_policy: { model: 'claude-sonnet', max_steps: 3 } } });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body).toMatchObject({ name: 'Lead nurturer', description: 'Changed', output_schema: null, execution_policy: { model: 'claude-sonnet', max_steps: 3 }, created_at: created.body.created_at });
    expect(Object.keys(patched.body.execution_policy).sort()).toEqual(['max_steps', 'model']);

    const deleted = await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token });
    expect(deleted.status).toBe(204);
    expect(deleted.text).toBe('');
    expectError(await env.request('GET', `${BASE}/${id}`, { token: env.member.token }), 404);
    expectError(await env.request('DELETE', `${BASE}/${id}`, { token: env.member.token }), 404);
  });

  it('refuses unknown policy keys, naming them, and writes nothing', async () => {
    const before = await count();
    const res = await create({ name: 'Unknown keys', execution_policy: { model: 'x', max_tokens: 5, tools: ['a'] } });
    expectError(res, 400);
    expect(res.body.details.execution_policy).toMatch(/Unknown execution policy keys: "max_tokens", "tools"/);
    const retry = await create({ name: 'Unknown retry key', execution_policy: { retry: { attempts: 2 } } });
    expectError(retry, 400);
    expect(retry.body.details['execution_policy.retry']).toMatch(/"attempts"/);
    expect(await count()).toBe(before);
  });

  it.each([
    ['temperature', { temperature: 2.5 }], ['temperature', { temperature: -0.1 }],
    ['max_steps', { max_steps: 0 }], ['max_steps', { max_steps: 101 }], ['max_steps', { max_steps: 2.5 }],
    ['max_cost_usd', { max_cost_usd: 0 }], ['max_cost_usd', { max_cost_usd: -1 }],
    ['timeout_seconds', { timeout_seconds: 0 }], ['timeout_seconds', { timeout_seconds: 3601 }],
    ['retry.max_attempts', { retry: { max_attempts: 0 } }], ['retry.max_attempts', { retry: { max_attempts: 11 } }],
    ['retry.backoff_ms', { retry: { backoff_ms: -1 } }], ['retry.backoff_ms', { retry: { backoff_ms: 60_001 } }],
    ['max_invalid_output_retries', { max_invalid_output_retries: 6 }],
    ['tools_allowed', { tools_allowed: 'memory_search' }], ['model', { model: 42 }],
  ])('refuses an out-of-range or mistyped %s', async (field, policy) => {
    const res = await create({ name: `Bad ${field}`, execution_policy: policy });
    expectError(res, 400);
    expect(Object.keys(res.body.details)).toContain(`execution_policy.${field}`);
  });

  it('accepts the bounds themselves', async () => {
    const res = await create({ name: 'Bounds', execution_policy: { temperature: 2, max_steps: 100, timeout_seconds: 3600, max_cost_usd: 0.0001, retry: { max_attempts: 10, backoff_ms: 0 }, max_invalid_output_retries: 0 } });
    expect(res.status, res.text).toBe(201);
    const low = await create({ name: 'Bounds low', execution_policy: { temperature: 0, max_steps: 1, timeout_seconds: 1, retry: { max_attempts: 1, backoff_ms: 60_000 }, max_invalid_output_retries: 5, max_cost_usd: null } });
    expect(low.status, low.text).toBe(201);
  });

  it('refuses approval tools that are not allowed', async () => {
    const res = await create({ name: 'Approvals', execution_policy: { tools_allowed: ['memory_search'], tools_requiring_approval: ['send_email', 'memory_search'] } });
    expectError(res, 400);
    expect(res.body.details['execution_policy.tools_requiring_approval']).toMatch(/subset of tools_allowed.*"send_email"/);
    const none = await create({ name: 'Approvals none', execution_policy: { tools_requiring_approval: ['x'] } });
    expectError(none, 400);
    expect(none.body.details).toHaveProperty(['execution_policy.tools_requiring_approval']);
  });

  it('refuses output schemas that do not compile', async () => {
    const before = await count();
    for (const schema of [{ type: 'objekt' }, { type: 'object', properties: { a: { $ref: '#/definitions/missing' } } }, { type: 'object', required: 'a' }]) {
      const res = await create({ name: 'Bad schema', output_schema: schema });
      expectError(res, 400);
      expect(res.body.details.output_schema).toMatch(/Not a valid JSON Schema/);
    }
    const notObject = await create({ name: 'Bad schema', output_schema: ['a'] });
    expectError(notObject, 400);
    expect(notObject.body.details).toHaveProperty('output_schema');
    expect(await count()).toBe(before);
    const t = await create({ name: 'Good schema' });
    const patch = await env.request('PATCH', `${BASE}/${t.body.id}`, { token: env.member.token, body: { output_schema: { type: 'nope' } } });
    expectError(patch, 400);
    expect(patch.body.details).toHaveProperty('output_schema');
  });

  it('keeps names unique per organization (409)', async () => {
    expect((await create({ name: 'Unique template' })).status).toBe(201);
    const dup = await create({ name: 'Unique template' });
    expectError(dup, 409);
    expect(dup.body.details).toHaveProperty('name');
    expect((await create({ name: 'Unique template' }, env.otherOwner.token)).status).toBe(201);
    const other = await create({ name: 'Other template' });
    expectError(await env.request('PATCH', `${BASE}/${other.body.id}`, { token: env.member.token, body: { name: 'Unique template' } }), 409);
  });

  it('PATCH …/execution_policy merges: given keys replace, null removes, retry key by key, validated as a whole', async () => {
    const t = await create({ name: 'Merge patch', execution_policy: { model: 'gpt-4o', temperature: 0.7, tools_allowed: ['a', 'b'], tools_requiring_approval: ['b'], retry: { max_attempts: 3, backoff_ms: 500 } } });
    const url = `${BASE}/${t.body.id}/execution_policy`;
    const res = await env.request('PATCH', url, { token: env.member.token, body: { temperature: null, max_steps: 5, tools_allowed: ['a', 'b', 'c'], retry: { backoff_ms: null, max_attempts: 2 } } });
    expect(res.status, res.text).toBe(200);
    expect(res.body.execution_policy).toEqual({ model: 'gpt-4o', tools_allowed: ['a', 'b', 'c'], tools_requiring_approval: ['b'], retry: { max_attempts: 2 }, max_steps: 5 });
    expect(res.body.updated_at >= t.body.updated_at).toBe(true);

    // Wrapped in execution_policy, as some clients send it.
    const wrapped = await env.request('PATCH', url, { token: env.member.token, body: { execution_policy: { retry: null, system_prompt: 'Be brief' } } });
    expect(wrapped.status, wrapped.text).toBe(200);
    expect(wrapped.body.execution_policy).toEqual({ model: 'gpt-4o', tools_allowed: ['a', 'b', 'c'], tools_requiring_approval: ['b'], max_steps: 5, system_prompt: 'Be brief' });

    // The merged result must hold: removing the allowed tool that needs approval is refused.
    const invalid = await env.request('PATCH', url, { token: env.member.token, body: { tools_allowed: ['a'] } });
    expectError(invalid, 400);
    expect(invalid.body.details).toHaveProperty(['execution_policy.tools_requiring_approval']);
    const unknown = await env.request('PATCH', url, { token: env.member.token, body: { max_tokens: 3 } });
    expectError(unknown, 400);
    expect(JSON.stringify(unknown.body.details)).toContain('"max_tokens\\"');
    const range = await env.request('PATCH', url, { token: env.member.token, body: { temperature: 9 } });
    expectError(range, 400);
    expect(range.body.details).toHaveProperty('temperature');
    expect((await env.request('GET', `${BASE}/${t.body.id}`, { token: env.member.token })).body.execution_policy).toEqual(wrapped.body.execution_policy);
    expectError(await env.request('PATCH', `${BASE}/atp_missing/execution_policy`, { token: env.member.token, body: {} }), 404);
  });

  it("refuses a template policy that would break an agent's effective policy", async () => {
    const t = await create({ name: 'Base of agents', execution_policy: { tools_allowed: ['a', 'b'] } });
    await createAgent(env.ctxOf(env.owner), { name: 'Needs approval of b', template_id: t.body.id, execution_policy: { tools_requiring_approval: ['b'] } });
    const res = await env.request('PATCH', `${BASE}/${t.body.id}/execution_policy`, { token: env.member.token, body: { tools_allowed: ['a'] } });
    expectError(res, 400);
    expect(res.body.details.execution_policy).toMatch(/Agent agt_.*Needs approval of b.*tools_requiring_approval/);
    const put = await env.request('PATCH', `${BASE}/${t.body.id}`, { token: env.member.token, body: { execution_policy: {} } });
    expectError(put, 400);
    expect((await env.request('GET', `${BASE}/${t.body.id}`, { token: env.member.token })).body.execution_policy).toEqual({ tools_allowed: ['a', 'b'] });
  });

  it('deleting a template its agents use: 409, or with force the agents keep their effective policy', async () => {
    const t = await create({ name: 'In use', execution_policy: { model: 'gpt-4o', max_steps: 4, retry: { max_attempts: 2 } }, output_schema: outputSchema });
    const agent = await createAgent(env.ctxOf(env.owner), { template_id: t.body.id, execution_policy: { max_steps: 6, retry: { backoff_ms: 10 } } });
    expect((await env.request('GET', `${BASE}/${t.body.id}`, { token: env.member.token })).body.agents_count).toBe(1);
    const refused = await env.request('DELETE', `${BASE}/${t.body.id}`, { token: env.member.token });
    expectError(refused, 409);
    expect(refused.body.details).toMatchObject({ agents_count: 1 });
    const forced = await env.request('DELETE', `${BASE}/${t.body.id}?force=true`, { token: env.member.token });
    expect(forced.status, forced.text).toBe(204);
    const after = await env.request('GET', `/api/v1/agents/${agent.id}`, { token: env.member.token });
    expect(after.status).toBe(200);
    expect(after.body).toMatchObject({ template_id: null, output_schema: outputSchema });
    const policy = { model: 'gpt-4o', max_steps: 6, retry: { max_attempts: 2, backoff_ms: 10 } };
    expect(after.body.execution_policy).toEqual(policy);
    expect(after.body.effective_policy).toEqual(policy);
    expect(after.body.effective_policy).toEqual(agent.effective_policy);
  });

  it("keeps each organization's templates to itself (404)", async () => {
    const b = await create({ name: 'B only' }, env.otherOwner.token);
    const list = await env.request('GET', `${BASE}?page_size=100`, { token: env.owner.token });
    expect(list.body.results.map((t: { id: string }) => t.id)).not.toContain(b.body.id);
    const url = `${BASE}/${b.body.id}`;
    expectError(await env.request('GET', url, { token: env.owner.token }), 404);
    expectError(await env.request('PATCH', url, { token: env.owner.token, body: { name: 'x' } }), 404);
    expectError(await env.request('PATCH', `${url}/execution_policy`, { token: env.owner.token, body: { max_steps: 2 } }), 404);
    expectError(await env.request('DELETE', `${url}?force=true`, { token: env.owner.token }), 404);
    // Nor can an agent of organization A be made from it.
    const spawn = await env.request('POST', '/api/v1/agents/spawn', { token: env.owner.token, body: { template_id: b.body.id } });
    expectError(spawn, 400);
    expect(spawn.body.details).toHaveProperty('template_id');
    expect((await env.request('GET', url, { token: env.otherOwner.token })).body.name).toBe('B only');
  });

  it('needs agents:write to change templates; viewers read; 401 without a token', async () => {
    const t = await create({ name: 'Perms' });
    expectError(await create({ name: 'Viewer' }, env.viewer.token), 403);
    expectError(await env.request('PATCH', `${BASE}/${t.body.id}`, { token: env.viewerKey, body: { name: 'x' } }), 403);
    expectError(await env.request('PATCH', `${BASE}/${t.body.id}/execution_policy`, { token: env.viewer.token, body: { max_steps: 2 } }), 403);
    expectError(await env.request('DELETE', `${BASE}/${t.body.id}`, { token: env.viewer.token }), 403);
    expectError(await env.request('GET', BASE), 401);
    expectError(await env.request('GET', `${BASE}/${t.body.id}`), 401);
    expect((await env.request('GET', `${BASE}/${t.body.id}`, { token: env.viewerKey })).status).toBe(200);
  });
});

describe('mergePolicies and executionPolicySchema', () => {
  it('agent keys override, arrays are replaced, retry merges key by key, null overrides', () => {
    const merged = mergePolicies(
      { provider_id: 'prv_1', model: 'a', tools_allowed: ['x', 'y'], retry: { max_attempts: 3, backoff_ms: 500 }, max_steps: 10 },
      { provider_id: null, tools_allowed: ['z'], retry: { backoff_ms: 50 }, temperature: 1 },
    );
    expect(merged).toEqual({ provider_id: null, model: 'a', tools_allowed: ['z'], retry: { max_attempts: 3, backoff_ms: 50 }, max_steps: 10, temperature: 1 });
    expect(mergePolicies(undefined, { model: 'm' })).toEqual({ model: 'm' });
    expect(mergePolicies({ retry: { max_attempts: 2 } }, null)).toEqual({ retry: { max_attempts: 2 } });
    // Inputs are not mutated.
    const t = { tools_allowed: ['a'], retry: { max_attempts: 1 } };
    const m = mergePolicies(t, {});
    m.tools_allowed!.push('b');
    m.retry!.max_attempts = 9;
    expect(t).toEqual({ tools_allowed: ['a'], retry: { max_attempts: 1 } });
  });

  it('is strict and checks the approval subset', () => {
    expect(executionPolicySchema.safeParse({ foo: 1 }).success).toBe(false);
    expect(executionPolicySchema.safeParse({ tools_allowed: ['a'], tools_requiring_approval: ['a'] }).success).toBe(true);
    expect(executionPolicySchema.safeParse({ tools_allowed: ['a'], tools_requiring_approval: ['b'] }).success).toBe(false);
  });
});
