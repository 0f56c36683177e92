import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import {
  APICallError, generateText, jsonSchema, Output, streamText, tool,
  type LanguageModel, type ModelMessage, type Tool,
} from 'ai';
import type { ProviderType } from '../../db/schema/providers.js';
import type { Deps } from '../context.js';
import { AppError } from '../errors.js';
import { fetchOutbound } from './outbound.js';

/**
 * The one way the server talks to LLM providers: OpenAI (chat completions), Anthropic (messages)
 * and any OpenAI-compatible server, through the AI SDK. One call per `callLlm`: the SDK's own
 * retries are off, tool calls are returned unexecuted, failures are `LlmError`s that say whether
 * a retry may help. Every request goes through the SSRF guard (`fetchOutbound`): the provider's
 * base URL must be public or allow-listed, and the socket connects to the address that was checked.
 */

export interface ToolSpec { name: string; description: string; inputSchema: Record<string, unknown> }

export interface LlmRequest {
  organizationId: string;
  /** null/undefined: the organization's default provider. */
  providerId?: string | null;
  /** null/undefined: the provider's default model. */
  model?: string | null;
  system?: string;
  messages: ModelMessage[];
  /** Offered to the model; it may answer with tool calls (never executed here). */
  tools?: ToolSpec[];
  /** Ask for JSON output matching this schema (the output is parsed, not validated, here). */
  jsonSchema?: Record<string, unknown>;
  temperature?: number;
  /** Default DEFAULT_MAX_OUTPUT_TOKENS (4096). */
  maxOutputTokens?: number;
  /** Default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** When set, the call streams and this is called for every text delta. */
  onTextDelta?: (delta: string) => void;
}

export interface LlmUsage { input_tokens: number; output_tokens: number }

export interface LlmResult {
  text: string;
  /** Parsed JSON when jsonSchema was given (undefined if the text is not JSON). */
  json?: unknown;
  toolCalls: { id: string; name: string; input: unknown }[];
  finishReason: string;
  usage: LlmUsage;
  /** USD from the model's prices (0 when unknown). */
  cost: number;
  providerId: string;
  model: string;
  latencyMs: number;
  /** The assistant message(s) to append to the conversation. */
  responseMessages: ModelMessage[];
}

export type LlmErrorCode =
  | 'timeout' | 'aborted' | 'rate_limited' | 'server_error' | 'network' | 'malformed_response'
  | 'auth_failed' | 'model_not_found' | 'bad_request' | 'misconfigured' | 'forbidden_url' | 'provider_error';

/** A provider failure: status (HTTP status or null), retryable (timeout, 429, 5xx, network, malformed), the provider's message. */
export class LlmError extends Error {
  readonly status: number | null;
  readonly retryable: boolean;
  readonly code: LlmErrorCode;
  constructor(code: LlmErrorCode, message: string, opts: { status?: number | null; retryable?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'LlmError';
    this.code = code;
    this.status = opts.status ?? null;
    this.retryable = opts.retryable ?? false;
  }
}

export const DEFAULT_TIMEOUT_MS = 60_000;
/** The output bound of a call whose request gives none (and what estimateMaxCost assumes then). */
export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;

/** The public endpoint of each provider type (a provider's base_url overrides it). */
export const DEFAULT_BASE_URLS: Record<Exclude<ProviderType, 'openai_compatible'>, string> = {
  openai: 'https://api.openai.com/v1',
  anthropic: 'https://api.anthropic.com/v1',
};

// The SDK prints its warnings (unsupported settings, unknown models) to the console unless told
// otherwise; they are logged per call at debug level instead.
const g = globalThis as { AI_SDK_LOG_WARNINGS?: unknown };
if (g.AI_SDK_LOG_WARNINGS === undefined) g.AI_SDK_LOG_WARNINGS = false;

// ---------------------------------------------------------------------------------------------
// Provider rows

export interface ResolvedProvider {
  id: string; name: string; type: ProviderType; baseUrl: string; apiKey: string | null;
  defaultModel: string; headers: Record<string, string>;
}

const misconfigured = (message: string) => new LlmError('misconfigured', message, { retryable: false });

/** The provider (or the organization's default) with its key decrypted; misconfiguration is a non-retryable LlmError. */
export async function loadProvider(deps: Deps, organizationId: string, providerId?: string | null): Promise<ResolvedProvider> {
  let q = deps.db.kysely.selectFrom('llm_providers')
    .select(['id', 'name', 'type', 'base_url', 'api_key_enc', 'default_model', 'headers'])
    .where('organization_id', '=', organizationId);
  q = providerId ? q.where('id', '=', providerId) : q.where('is_default', '=', 1);
  const row = await q.executeTakeFirst();
  if (!row) {
    throw misconfigured(providerId
      ? `LLM provider ${providerId} not found in this organization`
      : 'No default LLM provider is configured for this organization (create one under /api/v1/providers)');
  }
  let apiKey: string | null = null;
  if (row.api_key_enc) {
    try {
      apiKey = deps.box.decrypt(row.api_key_enc);
    } catch {
      throw misconfigured(`The API key of provider "${row.name}" cannot be decrypted (was SECRETS_KEY changed?)`);
    }
  }
  const baseUrl = row.base_url ?? (row.type === 'openai_compatible' ? null : DEFAULT_BASE_URLS[row.type]);
  if (!baseUrl) throw misconfigured(`Provider "${row.name}" has no base URL`);
  if (!apiKey && row.type !== 'openai_compatible') throw misconfigured(`Provider "${row.name}" has no API key`);
  let headers: Record<string, string> = {};
  try { headers = JSON.parse(row.headers) as Record<string, string>; } catch { /* none */ }
  return { id: row.id, name: row.name, type: row.type, baseUrl, apiKey, defaultModel: row.default_model, headers };
}

export interface ModelPrices { input_price_per_million: number; output_price_per_million: number }

/** The prices of a provider's model, or null when the model has no price row. */
export async function modelPrices(deps: Deps, providerId: string, model: string): Promise<ModelPrices | null> {
  const row = await deps.db.kysely.selectFrom('llm_models').select(['input_price_per_million', 'output_price_per_million'])
    .where('provider_id', '=', providerId).where('name', '=', model).executeTakeFirst();
  return row ? { input_price_per_million: Number(row.input_price_per_million), output_price_per_million: Number(row.output_price_per_million) } : null;
}

/** USD of a call with this usage at these prices. */
export function costOf(prices: ModelPrices | null, usage: LlmUsage): number {
  if (!prices) return 0;
  return (usage.input_tokens * prices.input_price_per_million + usage.output_tokens * prices.output_price_per_million) / 1_000_000;
}

// ---------------------------------------------------------------------------------------------
// The guarded fetch handed to the SDK

function bodyOf(body: unknown): string | Uint8Array | undefined {
  if (body == null) return undefined;
  if (typeof body === 'string' || body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new LlmError('bad_request', 'Unsupported request body for an LLM provider', { retryable: false });
}

/**
 * A `fetch` for the AI SDK that goes through the SSRF guard: refusals become non-retryable
 * `forbidden_url` errors, connection failures retryable `network` errors. The response body
 * streams (server-sent events reach the SDK as they arrive).
 */
export function guardedFetch(deps: Deps, timeoutMs: number): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const url = typeof input === 'string' || input instanceof URL ? String(input) : input.url;
    const headers: Record<string, string> = {};
    new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined)).forEach((v, k) => { headers[k] = v; });
    let res;
    try {
      res = await fetchOutbound(url, deps.config, {
        method: init?.method ?? 'GET', headers, body: bodyOf(init?.body), signal: init?.signal ?? undefined,
        field: 'base_url', timeoutMs, idleTimeoutMs: timeoutMs,
      });
    } catch (err) {
      if (err instanceof AppError) {
        const why = typeof err.details === 'object' && !Array.isArray(err.details) ? String((err.details as Record<string, unknown>).base_url ?? err.message) : err.message;
        if (err.status === 400) throw new LlmError('forbidden_url', `The provider's base URL is refused: ${why}`, { retryable: false, cause: err });
        throw new LlmError('network', why, { retryable: true, cause: err });
      }
      throw err;
    }
    const status = res.status;
    const nullBody = status === 204 || status === 205 || status === 304 || (init?.method ?? 'GET').toUpperCase() === 'HEAD';
    if (nullBody) res.body.resume();
    const body = nullBody ? null : (Readable.toWeb(res.body) as NodeReadableStream<Uint8Array> as unknown as ReadableStream<Uint8Array>);
    return new Response(body, { status, statusText: res.statusText, headers: res.headers });
  }) as typeof fetch;
}

// ---------------------------------------------------------------------------------------------
// Models

function languageModel(deps: Deps, p: ResolvedProvider, model: string, timeoutMs: number): LanguageModel {
  const common = { baseURL: p.baseUrl.replace(/\/+$/, ''), headers: p.headers, fetch: guardedFetch(deps, timeoutMs) };
  switch (p.type) {
    case 'openai':
      // Chat completions: what OpenAI and most compatible gateways speak.
      return createOpenAI({ ...common, apiKey: p.apiKey ?? '' }).chat(model);
    case 'anthropic':
      return createAnthropic({ ...common, apiKey: p.apiKey ?? '' })(model);
    case 'openai_compatible':
      // JSON output as `response_format: json_object` (what most compatible servers accept), the
      // schema itself in the system prompt (see callLlm).
      return createOpenAICompatible({
        ...common, name: 'openai_compatible', ...(p.apiKey ? { apiKey: p.apiKey } : {}), includeUsage: true, supportsStructuredOutputs: false,
      })(model);
    default:
      throw misconfigured(`Unknown provider type "${String(p.type)}"`);
  }
}

/** JSON from a model's text: the whole text, or the first fenced code block, or the outermost object. */
export function parseJsonText(text: string): unknown {
  const attempts = [text.trim()];
  const fenced = /```(?:json)?\s*([\s\S]*?)```/i.exec(text);
  if (fenced) attempts.push(fenced[1].trim());
  const first = text.indexOf('{');
  const last = text.lastIndexOf('}');
  if (first !== -1 && last > first) attempts.push(text.slice(first, last + 1));
  for (const a of attempts) {
    if (!a) continue;
    try { return JSON.parse(a); } catch { /* next */ }
  }
  return undefined;
}

/** Structured output: the schema reaches the provider (response_format / output_format / json tool); the answer is parsed leniently here and validated by the caller. */
function lenientJsonOutput(schema: Record<string, unknown>) {
  const base = Output.object({ schema: jsonSchema(schema) });
  return {
    ...base,
    parseCompleteOutput: async ({ text }: { text: string }) => parseJsonText(text) ?? null,
    parsePartialOutput: async () => undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// Errors

const NAMED_MALFORMED = new Set(['AI_JSONParseError', 'AI_TypeValidationError', 'AI_InvalidResponseDataError', 'AI_NoContentGeneratedError', 'AI_EmptyResponseBodyError', 'AI_NoOutputGeneratedError']);

function findLlmError(err: unknown): LlmError | null {
  for (let e = err, i = 0; e && i < 6; e = (e as { cause?: unknown }).cause, i++) if (e instanceof LlmError) return e;
  return null;
}

/** Any failure of a call, as an LlmError. */
export function toLlmError(err: unknown, state: { timedOut: boolean; aborted: boolean; timeoutMs: number }): LlmError {
  const own = findLlmError(err);
  if (own) return own;
  if (state.timedOut) return new LlmError('timeout', `The provider did not answer within ${Math.round(state.timeoutMs / 100) / 10} s`, { retryable: true, cause: err });
  if (state.aborted) return new LlmError('aborted', 'The call was cancelled', { retryable: false, cause: err });
  if (APICallError.isInstance(err)) {
    const status = err.statusCode ?? null;
    const message = err.message || 'The provider call failed';
    if (status === null) return new LlmError('network', message, { retryable: true, cause: err });
    if (status >= 200 && status < 300) return new LlmError('malformed_response', `Malformed response from the provider: ${message}`, { status, retryable: true, cause: err });
    if (status === 429) return new LlmError('rate_limited', message, { status, retryable: true, cause: err });
    if (status === 408 || status === 409 || status >= 500) return new LlmError('server_error', message, { status, retryable: true, cause: err });
    if (status === 401 || status === 403) return new LlmError('auth_failed', message, { status, retryable: false, cause: err });
    if (status === 404) return new LlmError('model_not_found', message, { status, retryable: false, cause: err });
    return new LlmError('bad_request', message, { status, retryable: false, cause: err });
  }
  const name = (err as { name?: string })?.name ?? '';
  const message = (err as { message?: string })?.message ?? String(err);
  if (NAMED_MALFORMED.has(name)) return new LlmError('malformed_response', `Malformed response from the provider: ${message}`, { retryable: true, cause: err });
  if (name === 'AbortError' || name === 'TimeoutError') return new LlmError('timeout', message, { retryable: true, cause: err });
  if (name === 'AI_LoadAPIKeyError' || name === 'AI_UnsupportedFunctionalityError' || name === 'AI_InvalidPromptError' || name === 'AI_InvalidArgumentError') {
    return new LlmError(name === 'AI_LoadAPIKeyError' ? 'misconfigured' : 'bad_request', message, { retryable: false, cause: err });
  }
  return new LlmError('provider_error', message, { retryable: false, cause: err });
}

// ---------------------------------------------------------------------------------------------
// The call

/** One call. The AI SDK's own retries are off (maxRetries: 0): the caller retries per policy. */
export async function callLlm(deps: Deps, req: LlmRequest): Promise<LlmResult> {
  const provider = await loadProvider(deps, req.organizationId, req.providerId);
  const modelName = req.model || provider.defaultModel;
  const timeoutMs = req.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const state = { timedOut: false, aborted: false, timeoutMs };
  const controller = new AbortController();
  const timer = setTimeout(() => { state.timedOut = true; controller.abort(new LlmError('timeout', `The provider did not answer within ${Math.round(timeoutMs / 100) / 10} s`, { retryable: true })); }, timeoutMs);
  const onAbort = () => { state.aborted = true; controller.abort(req.signal?.reason); };
  if (req.signal?.aborted) onAbort();
  else req.signal?.addEventListener('abort', onAbort, { once: true });

  const tools: Record<string, Tool> | undefined = req.tools?.length
    ? Object.fromEntries(req.tools.map((t) => [t.name, tool({ description: t.description, inputSchema: jsonSchema(t.inputSchema) })]))
    : undefined;
  let system = req.system;
  if (req.jsonSchema && provider.type === 'openai_compatible') {
    // Not every compatible server honours response_format: say it in words too.
    system = `${system ? `${system}\n\n` : ''}Answer with a single JSON value only, matching this JSON Schema:\n${JSON.stringify(req.jsonSchema)}`;
  }
  const started = Date.now();
  try {
    const settings = {
      model: languageModel(deps, provider, modelName, timeoutMs),
      ...(system ? { system } : {}),
      messages: req.messages,
      ...(tools ? { tools } : {}),
      ...(req.jsonSchema ? { output: lenientJsonOutput(req.jsonSchema) } : {}),
      ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
      // Always bounded, so that estimateMaxCost is an upper bound (providers' own defaults reach 64k tokens).
      maxOutputTokens: req.maxOutputTokens ?? DEFAULT_MAX_OUTPUT_TOKENS,
      maxRetries: 0,
      abortSignal: controller.signal,
      providerOptions: { openai: { strictJsonSchema: false } },
    };
    let text: string;
    let output: unknown;
    let toolCalls: { toolCallId: string; toolName: string; input: unknown }[];
    let finishReason: string;
    let usage: { inputTokens?: number; outputTokens?: number };
    let responseMessages: ModelMessage[];
    let warnings: unknown[] | undefined;
    if (req.onTextDelta) {
      let streamError: unknown;
      let events = 0;
      const result = streamText({
        ...settings, includeRawChunks: true,
        onChunk: ({ chunk }) => { if (chunk.type === 'raw') events++; },
        onError: ({ error }) => { streamError ??= error; },
      });
      try {
        for await (const delta of result.textStream) if (delta) req.onTextDelta(delta);
        [text, toolCalls, finishReason, usage] = await Promise.all([result.text, result.toolCalls, result.finishReason, result.usage]);
        responseMessages = (await result.response).messages;
        warnings = await result.warnings;
        if (req.jsonSchema) output = parseJsonText(text);
      } catch (err) {
        throw streamError ?? err;
      }
      if (streamError) throw streamError;
      // A 200 whose body held no event at all (a JSON or HTML page where a stream was due) is no answer.
      if (events === 0 && !controller.signal.aborted) {
        throw new LlmError('malformed_response', 'Malformed response from the provider: the stream held no events', { status: 200, retryable: true });
      }
    } else {
      const result = await generateText(settings);
      ({ text, toolCalls, finishReason, usage } = result);
      // Parsed here rather than through result.output, which throws when the text is not JSON.
      if (req.jsonSchema) output = parseJsonText(text);
      responseMessages = result.response.messages;
      warnings = result.warnings;
    }
    // A stream cut short by a timeout or a cancellation ends quietly in the SDK: not a result.
    if (controller.signal.aborted) throw controller.signal.reason ?? new Error('aborted');
    if (warnings?.length) deps.log.debug({ provider_id: provider.id, model: modelName, warnings }, 'llm call warnings');
    // Only the assistant's own message(s): for a call of a tool it was not offered, the SDK adds an
    // error tool result of its own; the caller answers every tool call itself (one result per call).
    responseMessages = responseMessages.filter((m) => m.role === 'assistant');
    const u: LlmUsage = { input_tokens: usage.inputTokens ?? 0, output_tokens: usage.outputTokens ?? 0 };
    const cost = costOf(await modelPrices(deps, provider.id, modelName), u);
    return {
      text,
      ...(req.jsonSchema ? { json: output } : {}),
      toolCalls: toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
      finishReason,
      usage: u,
      cost,
      providerId: provider.id,
      model: modelName,
      latencyMs: Date.now() - started,
      responseMessages,
    };
  } catch (err) {
    const e = toLlmError(err, state);
    deps.log.debug({ provider_id: provider.id, model: modelName, code: e.code, status: e.status }, 'llm call failed');
    throw e;
  } finally {
    clearTimeout(timer);
    req.signal?.removeEventListener('abort', onAbort);
  }
}

/** Upper bound of a call's cost before it is made (for budget checks): input at ~4 characters a token, output at its bound. */
export async function estimateMaxCost(
  deps: Deps,
  req: Pick<LlmRequest, 'organizationId' | 'providerId' | 'model' | 'maxOutputTokens'> & { inputChars: number },
): Promise<number> {
  const provider = await loadProvider(deps, req.organizationId, req.providerId);
  const prices = await modelPrices(deps, provider.id, req.model || provider.defaultModel);
  return costOf(prices, {
    input_tokens: Math.ceil(Math.max(0, req.inputChars) / 4),
    output_tokens: req.maxOutputTokens ?? DEFAULT_MAX_OUTPUT_TOKENS,
  });
}
