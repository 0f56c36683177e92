import { AsyncLocalStorage } from 'node:async_hooks';
import type { JSONValue, ModelMessage, ToolResultPart } from 'ai';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { AppError } from '../errors.js';
import { callLlm, estimateMaxCost, LlmError, type LlmResult, type ToolSpec } from '../integrations/llm.js';
import { assertWithinBudget, BudgetExceededError, recordSpend, type SpendScope } from '../services/budgets.js';
import { searchMemories } from '../services/memories.js';
import { executeTool, resolveTools, ToolError } from '../services/tools.js';
import { storeLeadScore } from '../services/agent_runtime.js';
import { defineRunKind, RunFailure, StepFailed, type RunContext } from './runs.js';

/**
 * The run kinds of the agent runtime (registered at import time; the API process and the worker
 * both load this module through routers/index.ts → src/services/agent_runtime.ts):
 *
 * - `agent`: the loop. The model is called with the agent's system prompt, the run input and, when
 *   the policy allows the `memory_search` tool, the agent's memories most relevant to the input
 *   (one recorded `memory` step). Whenever the model asks for tools they run (after a human
 *   approval for `tools_requiring_approval`; a tool outside `tools_allowed` is never executed: the
 *   model gets an error result) and their results go back to the model, until it answers without
 *   tool calls (the run succeeds with `{text, …}`), or a limit stops it: `max_steps` (LLM + tool
 *   steps; the run fails with error_code `max_steps`), `max_cost_usd` (`max_cost`), a budget
 *   (`budget_exceeded`, checked with the call's maximum cost before every LLM call), the timeout
 *   or a rejected approval (the runtime's).
 * - `inference`: one structured answer validated against a JSON Schema; an answer that is not
 *   JSON or does not match is asked again (each attempt its own step, the validation errors fed
 *   back) up to `max_invalid_output_retries` times, then the run fails with `invalid_output`.
 * - `score_lead`: `{score 0–100, reasons}` for a contact (stored on the contact when it has an id).
 *
 * Bodies are deterministic given their recorded steps: a resumed run re-executes the body from
 * the top, every decision depends only on the frozen policy, the input and recorded step outputs,
 * and anything that reads the outside world (LLM calls, tools, memories, budgets, the contact
 * update) happens inside a step.
 */

// ---------------------------------------------------------------------------------------------
// Policy and input

/** The fields of the frozen execution policy the loop reads (see executionPolicySchema). */
export interface LoopPolicy {
  provider_id?: string | null;
  model?: string | null;
  system_prompt?: string;
  temperature?: number;
  max_output_tokens?: number;
  tools_allowed?: string[];
  tools_requiring_approval?: string[];
  max_steps?: number;
  max_cost_usd?: number | null;
  timeout_seconds?: number;
  max_invalid_output_retries?: number;
}

export const DEFAULT_MAX_STEPS = 10;
export const DEFAULT_MAX_INVALID_OUTPUT_RETRIES = 2;
/** How many memories the loop adds as context. */
export const MEMORY_CONTEXT_LIMIT = 5;
export const MEMORY_TOOL = 'memory_search';

/**
 * The input of an `agent` run: a string (one user message), or `{message?, messages?, context?}`:
 * `messages` is a conversation so far (`{role: 'user'|'assistant', content: string}`), `message`
 * the new user message (appended), `context` any JSON object given to the model with the system
 * prompt. The conversation needs at least one user message.
 */
export interface AgentRunInput {
  message?: string;
  messages?: { role: 'user' | 'assistant'; content: string }[];
  context?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
}

function asObject(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** The conversation an `agent` run starts with; null when the input has no user message. */
export function conversationOf(input: unknown): { messages: ModelMessage[]; context: Record<string, unknown> | null; query: string } | null {
  if (typeof input === 'string') return input.trim() ? { messages: [{ role: 'user', content: input }], context: null, query: input } : null;
  const o = asObject(input);
  const messages: ModelMessage[] = [];
  if (Array.isArray(o.messages)) {
    for (const m of o.messages) {
      const mo = asObject(m);
      if ((mo.role === 'user' || mo.role === 'assistant') && typeof mo.content === 'string') messages.push({ role: mo.role, content: mo.content });
    }
  }
  if (typeof o.message === 'string' && o.message.trim()) messages.push({ role: 'user', content: o.message });
  const lastUser = [...messages].reverse().find((m) => m.role === 'user');
  if (!lastUser) return null;
  const context = o.context && typeof o.context === 'object' && !Array.isArray(o.context) ? (o.context as Record<string, unknown>) : null;
  return { messages, context, query: typeof lastUser.content === 'string' ? lastUser.content : '' };
}

// ---------------------------------------------------------------------------------------------
// JSON Schema (ajv): one instance per compile, so that callers' schemas are not cached forever.

const ajvOptions = { allErrors: true, strict: false, validateFormats: false, logger: false } as const;

function ajvFor(schema: Record<string, unknown>) {
  const dialect = typeof schema.$schema === 'string' ? schema.$schema : '';
  if (dialect.includes('2020-12')) return new Ajv2020(ajvOptions);
  if (dialect.includes('2019-09')) return new Ajv2019(ajvOptions);
  return new Ajv(ajvOptions);
}

/** Compiles a JSON Schema; throws with ajv's message when it does not compile. */
export function compileJsonSchema(schema: unknown): ValidateFunction {
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) throw new Error('A JSON Schema is an object');
  return ajvFor(schema as Record<string, unknown>).compile(schema as Record<string, unknown>);
}

/** `"/score: must be <= 100"`-style messages. */
export function describeSchemaErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).slice(0, 20).map((e) => `${e.instancePath || '/'}: ${e.message ?? 'is invalid'}${e.keyword === 'additionalProperties' ? ` (${String((e.params as { additionalProperty?: string }).additionalProperty)})` : ''}`);
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

const policyOf = (rc: RunContext): LoopPolicy => asObject(rc.run.policy) as LoopPolicy;
const scopeOf = (rc: RunContext): SpendScope => ({ organizationId: rc.run.organization_id, projectId: rc.run.project_id ?? null, agentId: rc.run.agent_id ?? null });

/** What an `llm` step records as its output (and what a resumed body gets back). */
export interface LlmStepOutput {
  text: string;
  json?: unknown;
  tool_calls: { id: string; name: string; input: unknown }[];
  finish_reason: string;
  response_messages: ModelMessage[];
  usage: { input_tokens: number; output_tokens: number };
  cost: number;
  model: string;
  provider_id: string;
}

function stepOutputOf(r: LlmResult): LlmStepOutput {
  return {
    text: r.text, ...(r.json !== undefined ? { json: r.json } : {}),
    tool_calls: r.toolCalls, finish_reason: r.finishReason, response_messages: r.responseMessages,
    usage: r.usage, cost: r.cost, model: r.model, provider_id: r.providerId,
  };
}

const preview = (s: string, n = 500) => (s.length > n ? `${s.slice(0, n)}…` : s);

function summarize(m: ModelMessage): unknown {
  if (typeof m.content === 'string') return { role: m.role, content: preview(m.content) };
  return {
    role: m.role,
    content: m.content.map((p) => {
      const part = p as { type: string; text?: string; toolName?: string; input?: unknown; output?: unknown };
      if (part.type === 'text') return { type: 'text', text: preview(part.text ?? '') };
      if (part.type === 'tool-call') return { type: 'tool-call', tool: part.toolName, input: part.input };
      if (part.type === 'tool-result') return { type: 'tool-result', tool: part.toolName, output: part.output };
      return { type: part.type };
    }),
  };
}

interface LlmCall {
  system?: string;
  messages: ModelMessage[];
  /** The messages added since the previous LLM step (recorded as the step's input). */
  newMessages: ModelMessage[];
  tools?: ToolSpec[];
  jsonSchema?: Record<string, unknown>;
  label?: Record<string, unknown>;
}

/**
 * The error a step fails with: its `code` becomes the run's error_code (through the runtime's
 * StepFailed), `retryable` drives the runtime's retries.
 */
export class StepError extends Error {
  constructor(readonly code: string, message: string, readonly retryable = false) {
    super(message);
    this.name = 'StepError';
  }
}

/**
 * The original errors behind failed steps, for a caller waiting on a synchronous run (inference,
 * score_lead) that answers with the budget's details or the provider's status.
 */
const stepErrors = new AsyncLocalStorage<unknown[]>();

/** Runs `fn`, collecting the original errors of the steps that fail inside it (this async context only). */
export async function collectStepErrors<T>(fn: () => Promise<T>): Promise<{ result: T; errors: unknown[] }> {
  const errors: unknown[] = [];
  const result = await stepErrors.run(errors, fn);
  return { result, errors };
}

function noteStepError(err: unknown): void {
  stepErrors.getStore()?.push(err);
}

/** Budget refusals and provider failures as step errors with the run's error_code. */
function asStepError(err: unknown): unknown {
  if (err instanceof BudgetExceededError) {
    noteStepError(err);
    const d = err.details as { message?: string };
    return new StepError('budget_exceeded', `Budget exceeded: ${d.message ?? err.message} ${JSON.stringify({ ...err.budget })}`);
  }
  if (err instanceof LlmError) {
    noteStepError(err);
    return new StepError('provider_error', err.status ? `${err.message} (provider status ${err.status})` : err.message, err.retryable);
  }
  return err;
}

/**
 * One paid LLM step: the budget check (with the call's maximum cost) and the call happen inside
 * the step, so that a resumed run neither calls nor checks again for a recorded step; the spend
 * is recorded (alerts) once the step is.
 */
async function llmStep(rc: RunContext, call: LlmCall): Promise<LlmStepOutput> {
  const policy = policyOf(rc);
  const org = rc.run.organization_id;
  const stepInput = {
    ...(call.label ?? {}),
    ...(call.system !== undefined ? { system: preview(call.system, 2000) } : {}),
    messages: call.newMessages.map(summarize),
    message_count: call.messages.length,
    ...(call.tools?.length ? { tools: call.tools.map((t) => t.name) } : {}),
    ...(call.jsonSchema ? { json_schema: true } : {}),
  };
  const out = await rc.step<LlmStepOutput>('llm', policy.model ?? 'default', stepInput, async (s) => {
    try {
      const inputChars = (call.system?.length ?? 0) + JSON.stringify(call.messages).length + (call.tools ? JSON.stringify(call.tools).length : 0)
        + (call.jsonSchema ? JSON.stringify(call.jsonSchema).length : 0);
      const estimate = await estimateMaxCost(rc.deps, { organizationId: org, providerId: policy.provider_id ?? null, model: policy.model ?? null, maxOutputTokens: policy.max_output_tokens, inputChars });
      await assertWithinBudget(rc.deps, scopeOf(rc), estimate);
      const r = await callLlm(rc.deps, {
        organizationId: org, providerId: policy.provider_id ?? null, model: policy.model ?? null,
        system: call.system, messages: call.messages,
        ...(call.tools?.length ? { tools: call.tools } : {}),
        ...(call.jsonSchema ? { jsonSchema: call.jsonSchema } : {}),
        ...(policy.temperature !== undefined ? { temperature: policy.temperature } : {}),
        ...(policy.max_output_tokens !== undefined ? { maxOutputTokens: policy.max_output_tokens } : {}),
        signal: s.signal,
        onTextDelta: s.emitToken,
      });
      return { output: stepOutputOf(r), usage: r.usage, cost: r.cost, model: r.model, providerId: r.providerId };
    } catch (err) {
      throw asStepError(err);
    }
  });
  // Alerts are bookkeeping: a failure to raise one is logged, it does not fail the run.
  if (out.cost > 0) {
    await recordSpend(rc.deps, scopeOf(rc), out.cost).catch((err: unknown) => rc.deps.log.warn({ err, run_id: rc.run.id }, 'budget alerts not recorded'));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// agent: the loop

export interface AgentRunOutput {
  text: string;
  finish_reason: string;
  llm_calls: number;
  tool_calls: number;
}

function toolResultOutput(output: unknown): ToolResultPart['output'] {
  if (typeof output === 'string') return { type: 'text', value: output };
  return { type: 'json', value: (output === undefined ? null : output) as JSONValue };
}

/** The tools the policy allows (built-ins and the organization's HTTP tools), as offered to the model. */
async function toolSpecs(rc: RunContext, names: string[]): Promise<ToolSpec[]> {
  if (!names.length) return [];
  try {
    const tools = await resolveTools(rc.deps, rc.run.organization_id, names);
    return tools.map((t) => ({ name: t.name, description: t.description, inputSchema: t.inputSchema }));
  } catch (err) {
    if (err instanceof AppError && err.status < 500) {
      throw new RunFailure('tool_error', `The policy's tools_allowed cannot be resolved: ${typeof err.details === 'string' ? err.details : JSON.stringify(err.details)}`);
    }
    throw err;
  }
}

/** Checked before each LLM call against what the run has spent (a run ends within one call of its cap). */
const maxCostReached = (cost: number, maxCost: number) =>
  new RunFailure('max_cost', `The run's cost (${cost.toFixed(6)} USD) reached max_cost_usd (${maxCost} USD)`);

async function agentBody(rc: RunContext): Promise<AgentRunOutput> {
  const policy = policyOf(rc);
  const org = rc.run.organization_id;
  const start = conversationOf(rc.run.input);
  if (!start) throw new RunFailure('invalid_input', 'The input needs a message: a string, or {message} / {messages}');
  const maxSteps = policy.max_steps ?? DEFAULT_MAX_STEPS;
  const maxCost = policy.max_cost_usd ?? null;
  const allowed = new Set(policy.tools_allowed ?? []);
  const needsApproval = new Set(policy.tools_requiring_approval ?? []);
  const specs = await toolSpecs(rc, [...allowed]);

  let system = policy.system_prompt ?? '';
  if (start.context) system += `${system ? '\n\n' : ''}Context (JSON):\n${JSON.stringify(start.context)}`;
  if (allowed.has(MEMORY_TOOL) && start.query.trim()) {
    const memories = await rc.step<{ id: string; content: string; namespace: string; score: number }[]>('memory', MEMORY_TOOL, { query: preview(start.query), limit: MEMORY_CONTEXT_LIMIT }, async () => {
      const found = await searchMemories(rc.deps, org, { agent_id: rc.run.agent_id ?? null, query: start.query, limit: MEMORY_CONTEXT_LIMIT });
      return { output: found.map((m) => ({ id: m.id, content: m.content, namespace: m.namespace, score: m.score })) };
    });
    if (memories.length) system += `${system ? '\n\n' : ''}Relevant memories:\n${memories.map((m) => `- ${m.content}`).join('\n')}`;
  }

  const messages: ModelMessage[] = [...start.messages];
  let pending: ModelMessage[] = [...start.messages];
  // Counted from recorded step outputs (not rc.totals(), which on resume already holds later steps).
  let steps = 0;
  let cost = 0;
  let llmCalls = 0;
  let toolCalls = 0;
  const stepLimit = () => new RunFailure('max_steps', `The agent reached max_steps (${maxSteps}) without a final answer`);

  for (;;) {
    if (steps >= maxSteps) throw stepLimit();
    if (maxCost !== null && cost >= maxCost) throw maxCostReached(cost, maxCost);
    const r = await llmStep(rc, { system: system || undefined, messages, newMessages: pending, tools: specs, label: { turn: llmCalls + 1 } });
    steps++;
    llmCalls++;
    cost += r.cost;
    // The loop answers every tool call itself: the SDK's own error results for calls it found
    // invalid (unknown tool, input not matching the schema) would answer them twice.
    messages.push(...r.response_messages.filter((m) => m.role !== 'tool'));
    if (!r.tool_calls.length) return { text: r.text, finish_reason: r.finish_reason, llm_calls: llmCalls, tool_calls: toolCalls };

    const content: ToolResultPart[] = [];
    for (const call of r.tool_calls) {
      let output: ToolResultPart['output'];
      if (!allowed.has(call.name)) {
        output = { type: 'error-text', value: `The tool "${call.name}" is not allowed for this agent; it was not run.` };
        await rc.log(`Tool call refused: "${call.name}" is not in tools_allowed`, { tool: call.name, tool_call_id: call.id });
      } else {
        if (steps >= maxSteps) throw stepLimit();
        if (needsApproval.has(call.name)) await rc.approval(`tool:${call.name}`, { tool: call.name, input: call.input, tool_call_id: call.id });
        output = await toolStep(rc, call);
        steps++;
        toolCalls++;
      }
      content.push({ type: 'tool-result', toolCallId: call.id, toolName: call.name, output });
    }
    const results: ModelMessage = { role: 'tool', content };
    messages.push(results);
    pending = [results];
  }
}

/**
 * One tool call as a step. A failure retrying cannot fix (bad input, a 4xx, a refused URL) is the
 * tool's answer to the model (the step is recorded as failed with its error, and the loop goes on);
 * a retryable failure that outlasted its retries fails the run (`tool_error`).
 */
async function toolStep(rc: RunContext, call: { id: string; name: string; input: unknown }): Promise<ToolResultPart['output']> {
  let final: unknown = null;
  try {
    const out = await rc.step<unknown>('tool', call.name, call.input, async (s) => {
      try {
        const t = await executeTool(rc.deps, rc.run.organization_id, call.name, call.input, { agentId: rc.run.agent_id ?? null, signal: s.signal });
        return { output: t.output ?? null };
      } catch (err) {
        final = err;
        throw err;
      }
    });
    return toolResultOutput(out);
  } catch (err) {
    if (err instanceof StepFailed && final instanceof ToolError) {
      if (!final.retryable) return { type: 'error-text', value: `The tool failed (${final.code}): ${final.message}` };
      throw new RunFailure('tool_error', `The tool "${call.name}" failed: ${final.message}`);
    }
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// inference and score_lead: structured answers, re-asked while invalid

export interface StructuredRunOutput { output: unknown; attempts: number }


async function structuredAnswer(rc: RunContext, o: { system?: string; user: string; schema: Record<string, unknown>; check?: (v: unknown) => string[] }): Promise<StructuredRunOutput> {
  const policy = policyOf(rc);
  const retries = policy.max_invalid_output_retries ?? DEFAULT_MAX_INVALID_OUTPUT_RETRIES;
  let validate: ValidateFunction;
  try {
    validate = compileJsonSchema(o.schema);
  } catch (err) {
    throw new RunFailure('invalid_request', `The JSON Schema does not compile: ${(err as Error).message}`);
  }
  const messages: ModelMessage[] = [{ role: 'user', content: o.user }];
  let pending: ModelMessage[] = [...messages];
  let problems: string[] = [];
  const maxCost = policy.max_cost_usd ?? null;
  let cost = 0;
  for (let attempt = 1; attempt <= retries + 1; attempt++) {
    if (maxCost !== null && cost >= maxCost) throw maxCostReached(cost, maxCost);
    const r = await llmStep(rc, { system: o.system, messages, newMessages: pending, jsonSchema: o.schema, label: { attempt } });
    cost += r.cost;
    let value = r.json;
    if (value === undefined) {
      try { value = JSON.parse(r.text); } catch { value = undefined; }
    }
    if (value === undefined) problems = ['The answer is not valid JSON'];
    else if (!validate(value)) problems = describeSchemaErrors(validate.errors);
    else problems = o.check ? o.check(value) : [];
    if (!problems.length) return { output: value, attempts: attempt };
    if (attempt <= retries) {
      const feedback: ModelMessage = {
        role: 'user',
        content: `Your answer does not match the required JSON Schema:\n${problems.map((p) => `- ${p}`).join('\n')}\nAnswer again with only a JSON value that matches the schema.`,
      };
      // The answer as plain assistant text (not the provider's own message: with Anthropic it may be
      // a forced tool call, which would need a tool result before the next user message).
      const answered = r.text || (r.json !== undefined ? JSON.stringify(r.json) : '') || '(no answer)';
      messages.push({ role: 'assistant', content: answered }, feedback);
      pending = [feedback];
      await rc.log(`Invalid structured output (attempt ${attempt}); asking again`, { problems });
    }
  }
  throw new RunFailure('invalid_output', `The model's answer did not match the JSON Schema after ${retries + 1} attempts: ${problems.join('; ')}`);
}

/** `inference` input: `{input: string | object, schema: JSON Schema, system?: string}`. */
async function inferenceBody(rc: RunContext): Promise<StructuredRunOutput> {
  const policy = policyOf(rc);
  const input = asObject(rc.run.input);
  if (!input.schema || typeof input.schema !== 'object') throw new RunFailure('invalid_request', 'No JSON Schema: give `schema` or set the agent\'s output_schema');
  const schema = input.schema as Record<string, unknown>;
  const user = typeof input.input === 'string' ? input.input : JSON.stringify(input.input ?? null);
  const system = typeof input.system === 'string' ? input.system : policy.system_prompt;
  const instructions = 'Answer with only a JSON value that matches the given JSON Schema, with no other text.';
  return structuredAnswer(rc, { system: system ? `${system}\n\n${instructions}` : instructions, user, schema });
}

export const LEAD_SCORE_SCHEMA = {
  type: 'object',
  properties: {
    score: { type: 'integer', minimum: 0, maximum: 100, description: 'How promising the lead is, 0 (not at all) to 100 (ideal)' },
    reasons: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 10, description: 'Short reasons for the score' },
  },
  required: ['score', 'reasons'],
  additionalProperties: false,
} as const;

const SCORING_INSTRUCTIONS = 'You score sales leads. Given a contact, answer with only JSON: {"score": an integer from 0 to 100 (how promising the lead is), "reasons": short strings explaining the score}.';

export interface LeadScore { score: number; reasons: string[] }

/** `score_lead` input: `{contact_id: string | null, contact: object}` (the contact as it was when the run started). */
async function scoreLeadBody(rc: RunContext): Promise<StructuredRunOutput & { contact_id: string | null; stored: boolean }> {
  const policy = policyOf(rc);
  const input = asObject(rc.run.input);
  const contact = asObject(input.contact);
  const contactId = typeof input.contact_id === 'string' ? input.contact_id : null;
  const system = policy.system_prompt ? `${policy.system_prompt}\n\n${SCORING_INSTRUCTIONS}` : SCORING_INSTRUCTIONS;
  const answer = await structuredAnswer(rc, {
    system, user: `Score this lead:\n${JSON.stringify(contact)}`, schema: LEAD_SCORE_SCHEMA as unknown as Record<string, unknown>,
    check: (v) => {
      const s = (v as LeadScore).score;
      return Number.isInteger(s) && s >= 0 && s <= 100 ? [] : ['/score: must be an integer from 0 to 100'];
    },
  });
  const score = answer.output as LeadScore;
  const reasons = score.reasons.map((r) => r.slice(0, 500)).slice(0, 10);
  let stored = false;
  if (contactId) {
    stored = await rc.step<boolean>('output', 'contact.lead_score', { contact_id: contactId, score: score.score }, async () => ({
      output: await storeLeadScore(rc.deps, rc.run.organization_id, contactId, score.score, reasons),
    }));
  }
  return { output: { score: score.score, reasons }, attempts: answer.attempts, contact_id: contactId, stored };
}

defineRunKind('agent', agentBody);
defineRunKind('inference', inferenceBody);
defineRunKind('score_lead', scoreLeadBody);

