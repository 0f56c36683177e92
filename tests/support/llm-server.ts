import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local stand-in for LLM providers, speaking the real wire formats so that the official SDKs
 * (the AI SDK's OpenAI, OpenAI-compatible and Anthropic providers) parse it:
 *
 * - OpenAI chat completions: `POST /v1/chat/completions`, JSON or (`stream: true`) SSE chunks ending
 *   with `data: [DONE]`; text, `tool_calls`, `usage` (in streams only when
 *   `stream_options.include_usage` is set, as OpenAI does); errors as `{error:{message,type,code}}`.
 * - Anthropic messages: `POST /v1/messages`, JSON or SSE events (message_start,
 *   content_block_start/delta/stop with text_delta and input_json_delta, message_delta with usage,
 *   message_stop); errors as `{type:'error', error:{type,message}}`.
 * - `GET /v1/models` in OpenAI's list shape (Anthropic's `has_more`/`first_id` fields included).
 *
 * Replies are scripted per test: `push(...)` queues replies (FIFO, shared by both formats); when
 * the queue is empty the answer is the text `ok`. Every request is recorded. No internet needed.
 */

export interface FakeReply {
  /** Assistant text (default `ok` when neither text nor toolCalls is given). */
  text?: string;
  /** Tool calls the model asks for (never executed by the server). */
  toolCalls?: { name: string; arguments: object }[];
  /** Token usage reported (default input 10, output 5). */
  usage?: { input: number; output: number };
  /** An error status (4xx/5xx): answered with `errorBody`, or the provider's own error shape. */
  status?: number;
  errorBody?: unknown;
  /** Wait this long before answering (the connection stays open). */
  delayMs?: number;
  /** Streams only: wait this long between events (to cancel or time out mid-stream). */
  chunkDelayMs?: number;
  /** A raw (malformed) body sent as is, with `status` (default 200). */
  raw?: string;
}

export interface FakeRequest { path: string; body: any; headers: Record<string, string> }

export interface FakeLlm {
  /** The server's origin, e.g. `http://127.0.0.1:43121`. */
  url: string;
  /** Base URL for OpenAI and OpenAI-compatible providers (`…/v1`). */
  openaiBaseUrl: string;
  /** Base URL for the Anthropic provider (`…/v1`). */
  anthropicBaseUrl: string;
  /** Every request received, in order. */
  requests: FakeRequest[];
  /** Next responses, FIFO; when empty, answers the default text 'ok'. */
  push(...r: FakeReply[]): void;
  close(): Promise<void>;
}

const DEFAULT_USAGE = { input: 10, output: 5 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rid = (prefix: string) => `${prefix}${randomBytes(8).toString('hex')}`;

/** Splits text into several deltas (words with their trailing spaces), as providers stream it. */
function pieces(text: string): string[] {
  const parts = text.match(/\S+\s*|\s+/g) ?? [];
  return parts.length ? parts : [];
}

function split(s: string, n: number): string[] {
  if (s.length <= n) return [s];
  const size = Math.ceil(s.length / n);
  const out: string[] = [];
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size));
  return out;
}

function openaiErrorBody(status: number): unknown {
  const by: Record<number, [string, string, string | null]> = {
    400: ['Invalid request.', 'invalid_request_error', null],
    401: ['Incorrect API key provided: sk-fake. You can find your API key at https://platform.openai.com/account/api-keys.', 'invalid_request_error', 'invalid_api_key'],
    403: ['You are not allowed to sample from this model', 'invalid_request_error', null],
    404: ['The model `unknown-model` does not exist or you do not have access to it.', 'invalid_request_error', 'model_not_found'],
    429: ['Rate limit reached for requests', 'requests', 'rate_limit_exceeded'],
  };
  const [message, type, code] = by[status] ?? ['The server had an error while processing your request. Sorry about that!', 'server_error', null];
  return { error: { message, type, param: null, code } };
}

function anthropicErrorBody(status: number): unknown {
  const by: Record<number, [string, string]> = {
    400: ['invalid_request_error', 'Invalid request.'],
    401: ['authentication_error', 'invalid x-api-key'],
    403: ['permission_error', 'Your API key does not have permission to use the specified resource.'],
    404: ['not_found_error', 'model: unknown-model'],
    413: ['request_too_large', 'Request exceeds the maximum allowed number of bytes.'],
    429: ['rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit'],
    529: ['overloaded_error', 'Overloaded'],
  };
  const [type, message] = by[status] ?? ['api_error', 'Internal server error'];
  return { type: 'error', error: { type, message } };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Writes server-sent events, `delayMs` apart; stops when the client goes away. */
async function writeSse(res: ServerResponse, events: string[], delayMs = 0): Promise<void> {
  if (res.destroyed) return;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  for (const e of events) {
    if (res.destroyed) return;
    res.write(e);
    if (delayMs) await sleep(delayMs);
  }
  if (!res.destroyed) res.end();
}

// ---------------------------------------------------------------------------------------------
// OpenAI chat completions

async function openaiReply(res: ServerResponse, body: any, reply: FakeReply): Promise<void> {
  const model = typeof body?.model === 'string' ? body.model : 'fake-model';
  const usage = reply.usage ?? DEFAULT_USAGE;
  const text = reply.text ?? (reply.toolCalls?.length ? '' : 'ok');
  const calls = (reply.toolCalls ?? []).map((c) => ({ id: rid('call_'), name: c.name, arguments: JSON.stringify(c.arguments) }));
  const finish = calls.length ? 'tool_calls' : 'stop';
  const id = rid('chatcmpl-');
  const created = Math.floor(Date.now() / 1000);
  const usageBody = { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output };

  if (!body?.stream) {
    sendJson(res, 200, {
      id, object: 'chat.completion', created, model, system_fingerprint: 'fp_fake',
      choices: [{
        index: 0,
        message: {
          role: 'assistant', content: text === '' && calls.length ? null : text, refusal: null,
          ...(calls.length ? { tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })) } : {}),
        },
        logprobs: null, finish_reason: finish,
      }],
      usage: usageBody,
    });
    return;
  }
  const events: string[] = [];
  const chunk = (choices: unknown[], extra: object = {}) => {
    events.push(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake', choices, ...extra })}\n\n`);
  };
  chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  for (const p of pieces(text)) chunk([{ index: 0, delta: { content: p }, logprobs: null, finish_reason: null }]);
  calls.forEach((c, index) => {
    chunk([{ index: 0, delta: { tool_calls: [{ index, id: c.id, type: 'function', function: { name: c.name, arguments: '' } }] }, logprobs: null, finish_reason: null }]);
    for (const a of split(c.arguments, 3)) chunk([{ index: 0, delta: { tool_calls: [{ index, function: { arguments: a } }] }, logprobs: null, finish_reason: null }]);
  });
  chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }]);
  if (body?.stream_options?.include_usage) chunk([], { usage: usageBody });
  events.push('data: [DONE]\n\n');
  await writeSse(res, events, reply.chunkDelayMs);
}

// ---------------------------------------------------------------------------------------------
// Anthropic messages

async function anthropicReply(res: ServerResponse, body: any, reply: FakeReply): Promise<void> {
  const model = typeof body?.model === 'string' ? body.model : 'fake-model';
  const usage = reply.usage ?? DEFAULT_USAGE;
  let text = reply.text ?? (reply.toolCalls?.length ? '' : 'ok');
  const toolCalls = [...(reply.toolCalls ?? [])];
  // Structured output on models without native JSON output: the SDK forces a tool named `json`,
  // and the model answers with that tool's input (as Claude does). Non-JSON text stays text.
  if (body?.tool_choice?.type === 'tool' && body.tool_choice.name === 'json' && !toolCalls.length) {
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === 'object') { toolCalls.push({ name: 'json', arguments: parsed }); text = ''; }
    } catch { /* answered as text */ }
  }
  const calls = toolCalls.map((c) => ({ id: rid('toolu_'), name: c.name, input: c.arguments }));
  const stop = calls.length ? 'tool_use' : 'end_turn';
  const id = rid('msg_');
  const content: any[] = [];
  if (text !== '') content.push({ type: 'text', text });
  for (const c of calls) content.push({ type: 'tool_use', id: c.id, name: c.name, input: c.input });

  if (!body?.stream) {
    sendJson(res, 200, {
      id, type: 'message', role: 'assistant', model, content, stop_reason: stop, stop_sequence: null,
      usage: { input_tokens: usage.input, output_tokens: usage.output, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
    return;
  }
  const events: string[] = [];
  const event = (type: string, data: object) => {
    events.push(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  };
  event('message_start', {
    message: {
      id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null,
      usage: { input_tokens: usage.input, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    },
  });
  let index = 0;
  if (text !== '') {
    event('content_block_start', { index, content_block: { type: 'text', text: '' } });
    for (const p of pieces(text)) event('content_block_delta', { index, delta: { type: 'text_delta', text: p } });
    event('content_block_stop', { index });
    index++;
  }
  for (const c of calls) {
    event('content_block_start', { index, content_block: { type: 'tool_use', id: c.id, name: c.name, input: {} } });
    for (const part of split(JSON.stringify(c.input), 3)) event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: part } });
    event('content_block_stop', { index });
    index++;
  }
  event('message_delta', { delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: usage.output } });
  event('message_stop', {});
  await writeSse(res, events, reply.chunkDelayMs);
}

// ---------------------------------------------------------------------------------------------

const MODELS = ['gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku-latest', 'claude-sonnet-4-5'];

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export async function startFakeLlm(): Promise<FakeLlm> {
  const queue: FakeReply[] = [];
  const requests: FakeRequest[] = [];

  const server = http.createServer(async (req, res) => {
    res.on('error', () => {});
    try {
      const raw = await readBody(req);
      let body: any = raw;
      try { body = raw ? JSON.parse(raw) : undefined; } catch { /* kept as text */ }
      const path = (req.url ?? '/').split('?')[0];
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
      requests.push({ path, body, headers });

      const isOpenai = req.method === 'POST' && /\/chat\/completions$/.test(path);
      const isAnthropic = req.method === 'POST' && /\/messages$/.test(path);
      if (req.method === 'GET' && /\/models$/.test(path)) {
        const data = MODELS.map((m) => ({ id: m, object: 'model', created: 1700000000, owned_by: 'fake', type: 'model', display_name: m, created_at: '2024-01-01T00:00:00Z' }));
        sendJson(res, 200, { object: 'list', data, has_more: false, first_id: MODELS[0], last_id: MODELS[MODELS.length - 1] });
        return;
      }
      if (!isOpenai && !isAnthropic) {
        sendJson(res, 404, { error: { message: `Unknown path ${req.method} ${path}`, type: 'invalid_request_error', code: null } });
        return;
      }

      const reply = queue.shift() ?? {};
      if (reply.delayMs) await sleep(reply.delayMs);
      if (res.destroyed) return;
      if (reply.raw !== undefined) {
        const stream = Boolean(body?.stream);
        res.writeHead(reply.status ?? 200, { 'content-type': stream ? 'text/event-stream' : 'application/json' });
        res.end(reply.raw);
        return;
      }
      if (reply.status && reply.status >= 400) {
        sendJson(res, reply.status, reply.errorBody ?? (isOpenai ? openaiErrorBody(reply.status) : anthropicErrorBody(reply.status)));
        return;
      }
      if (isOpenai) await openaiReply(res, body, reply);
      else await anthropicReply(res, body, reply);
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { error: { message: String(err), type: 'server_error', code: null } });
      else res.destroy();
    }
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    openaiBaseUrl: `${url}/v1`,
    anthropicBaseUrl: `${url}/v1`,
    requests,
    push: (...r) => { queue.push(...r); },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
