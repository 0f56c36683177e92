import { isIP } from 'node:net';
import { Ajv, type ValidateFunction, type ErrorObject } from 'ajv';
import type { Selectable } from 'kysely';
import type { ToolsTable } from '../../db/schema/tools.js';
import type { Ctx, Deps } from '../context.js';
import { containsText, isUniqueViolation, prepared } from '../db.js';
import { AppError, badRequest, conflict, notFound } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import type { ToolSpec } from '../integrations/llm.js';
import { assertOutboundUrl, fetchOutbound, OutboundFailure } from '../integrations/outbound.js';
import { paginate, type PageInput } from '../pagination.js';
import { filteredQuery, normalizeEmail } from './contacts.js';
import { searchMemories } from './memories.js';
import { findSecretRefs, resolveSecretRefs, SECRET_NAME } from './secrets.js';

// Tools an agent may call: HTTP tools stored per organization (method, URL template, headers that
// may reference `{{secrets.NAME}}`, a JSON-Schema input, a timeout) and built-ins that run in
// process (memory_search, contact_lookup), resolvable by name in every organization.
//
// How an HTTP tool call is made from its input (an object, validated against input_schema):
// - `{{name}}` placeholders in the URL template take the input's top-level `name` (URL-encoded;
//   objects and arrays as JSON; absent or null → empty). `{{secrets.NAME}}` takes the secret's
//   value (URL-encoded). Placeholders may appear in the path, query and fragment only: the scheme,
//   host and port are literal, so a model cannot choose where a tool connects.
// - The input fields the URL does not use go as query parameters for GET and DELETE (arrays as
//   repeated parameters, objects as JSON, null skipped) and as a JSON body for POST, PUT and
//   PATCH (`{}` when nothing is left).
// - Header values may reference `{{secrets.NAME}}`, resolved at call time (never stored resolved).
// - Every request goes through fetchOutbound: the SSRF guard checks the resolved address of each
//   hop (private, loopback and link-local refused unless in OUTBOUND_ALLOWLIST).
// - The output is the response body: parsed JSON when the response says JSON, else text; at most
//   1 MiB. A non-2xx status is a ToolError.

// ---------------------------------------------------------------------------------------------
// Types and errors

export type { ToolSpec };

export interface ResolvedTool extends ToolSpec { id: string | null; kind: 'http' | 'builtin'; timeoutMs: number }

export type ToolErrorCode =
  | 'invalid_input' | 'unknown_tool' | 'tool_disabled' | 'forbidden_url' | 'invalid_url' | 'missing_secret' | 'invalid_header'
  | 'timeout' | 'network' | 'http_error' | 'response_too_large' | 'too_many_redirects' | 'aborted' | 'internal';

/**
 * A tool call that failed. `retryable` is true for timeouts, network errors, 429 and 5xx
 * responses; false for invalid input, refused URLs, other 4xx responses and configuration errors.
 */
export class ToolError extends Error {
  readonly code: ToolErrorCode;
  readonly retryable: boolean;
  /** The HTTP status of the tool's response, when there was one. */
  readonly status: number | null;
  /** Machine-readable details (e.g. the JSON-Schema errors of invalid input). */
  readonly details?: unknown;
  constructor(code: ToolErrorCode, message: string, opts: { retryable?: boolean; status?: number | null; details?: unknown } = {}) {
    super(message);
    this.name = 'ToolError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.status = opts.status ?? null;
    if (opts.details !== undefined) this.details = opts.details;
  }
}

export const TOOL_NAME = /^[a-zA-Z][a-zA-Z0-9_-]{0,63}$/;
export const BUILTIN_TOOL_NAMES = ['memory_search', 'contact_lookup'] as const;
export const HTTP_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type HttpToolMethod = (typeof HTTP_METHODS)[number];
export const DEFAULT_TIMEOUT_MS = 10_000;
export const MAX_TIMEOUT_MS = 60_000;
export const MIN_TIMEOUT_MS = 100;
/** Largest response body a tool call reads. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;
const MAX_SCHEMA_CHARS = 64 * 1024;
const MAX_HEADERS = 50;

const isBuiltinName = (name: string) => BUILTIN_TOOL_NAMES.some((b) => b.toLowerCase() === name.toLowerCase());

// ---------------------------------------------------------------------------------------------
// JSON Schema: one Ajv instance per schema (so that no `$id` or `$ref` of one tenant's schema can
// reach another's), strict, compiled once per schema text and cached.

const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})$/;
const FORMATS: Record<string, RegExp> = {
  'date-time': DATE_TIME,
  date: /^\d{4}-\d{2}-\d{2}$/,
  time: /^\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$/,
  email: /^[^\s@]+@[^\s@]+\.[^\s@]+$/,
  uri: /^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]*$/,
  uuid: /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/,
  ipv4: /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/,
  hostname: /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/,
};

function newAjv(): Ajv {
  const ajv = new Ajv({ strict: true, strictRequired: false, allowUnionTypes: true, allErrors: true, useDefaults: true, coerceTypes: false, validateSchema: true, addUsedSchema: false });
  for (const [name, re] of Object.entries(FORMATS)) ajv.addFormat(name, re);
  return ajv;
}

const validators = new Map<string, ValidateFunction>();
const MAX_VALIDATORS = 500;

/** The compiled validator of a schema (its JSON text is the cache key); throws Ajv's error when it does not compile. */
function validatorFor(schemaText: string): ValidateFunction {
  const hit = validators.get(schemaText);
  if (hit) {
    validators.delete(schemaText);
    validators.set(schemaText, hit);
    return hit;
  }
  const fn = newAjv().compile(JSON.parse(schemaText) as object);
  if (validators.size >= MAX_VALIDATORS) validators.delete(validators.keys().next().value as string);
  validators.set(schemaText, fn);
  return fn;
}

function describeAjvErrors(errors: ErrorObject[] | null | undefined): { message: string; errors: { path: string; message: string }[] } {
  const list = (errors ?? []).slice(0, 20).map((e) => {
    let path = e.instancePath || '';
    if (e.keyword === 'required') path = `${path}/${(e.params as { missingProperty: string }).missingProperty}`;
    if (e.keyword === 'additionalProperties') path = `${path}/${(e.params as { additionalProperty: string }).additionalProperty}`;
    return { path: path || '/', message: e.message ?? 'is invalid' };
  });
  return { message: list.map((e) => `${e.path}: ${e.message}`).join('; ') || 'The input does not match the schema', errors: list };
}

/** Validates `input` against `schemaText` (a copy gets the schema's defaults); throws ToolError invalid_input. */
function validateInput(schemaText: string, input: unknown): Record<string, unknown> {
  const value = input === undefined ? {} : structuredClone(input);
  const validate = validatorFor(schemaText);
  if (!validate(value)) {
    const d = describeAjvErrors(validate.errors);
    throw new ToolError('invalid_input', `Invalid input: ${d.message}`, { details: d.errors });
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new ToolError('invalid_input', 'Invalid input: must be an object');
  return value as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Built-ins

interface Builtin {
  name: (typeof BUILTIN_TOOL_NAMES)[number];
  description: string;
  schema: Record<string, unknown>;
  run(deps: Deps, org: string, input: Record<string, unknown>, opts: { agentId?: string | null }): Promise<unknown>;
}

const BUILTINS: Builtin[] = [
  {
    name: 'memory_search',
    description: 'Searches the memories stored for this agent (and the ones shared by the organization) by full text; returns the best matches first.',
    schema: {
      type: 'object',
      properties: {
        query: { type: 'string', minLength: 1, maxLength: 1000, description: 'Words to look for' },
        namespace: { type: 'string', minLength: 1, maxLength: 100, description: 'Only memories of this namespace' },
        limit: { type: 'integer', minimum: 1, maximum: 50, description: 'At most this many results (default 10)' },
      },
      required: ['query'],
      additionalProperties: false,
    },
    async run(deps, org, input, opts) {
      const results = await searchMemories(deps, org, {
        query: input.query as string,
        namespace: input.namespace as string | undefined,
        limit: input.limit as number | undefined,
        ...(opts.agentId ? { agent_id: opts.agentId } : {}),
      });
      return { results: results.map((r) => ({ id: r.id, content: r.content, score: r.score, namespace: r.namespace, metadata: r.metadata })) };
    },
  },
  {
    name: 'contact_lookup',
    description: "Looks up contacts of the organization by id, by e-mail address, or by the start of a name or e-mail (give at least one); returns id, name, email, company, title and lead_score.",
    schema: {
      type: 'object',
      properties: {
        id: { type: 'string', minLength: 1, maxLength: 64, description: 'A contact id' },
        email: { type: 'string', minLength: 3, maxLength: 320, description: 'An exact e-mail address (any case)' },
        query: { type: 'string', minLength: 1, maxLength: 200, description: 'The start of a name or of an e-mail address' },
        limit: { type: 'integer', minimum: 1, maximum: 20, description: 'At most this many contacts (default 5)' },
      },
      additionalProperties: false,
    },
    async run(deps, org, input) {
      if (input.id === undefined && input.email === undefined && input.query === undefined) {
        throw new ToolError('invalid_input', 'Invalid input: give one of id, email or query', { details: [{ path: '/', message: 'must have id, email or query' }] });
      }
      const limit = (input.limit as number | undefined) ?? 5;
      const db = deps.db.kysely;
      const cols = ['contacts.id', 'contacts.name', 'contacts.email', 'contacts.company', 'contacts.title', 'contacts.lead_score'] as const;
      let q = db.selectFrom('contacts').select(cols).where('contacts.organization_id', '=', org);
      if (typeof input.id === 'string') q = q.where('contacts.id', '=', input.id);
      if (typeof input.email === 'string') q = q.where('contacts.email_normalized', '=', normalizeEmail(input.email));
      if (typeof input.query === 'string' && input.query.trim()) {
        const ids = (await filteredQuery(deps, org, { search: input.query })).clearSelect().select('contacts.id');
        q = q.where('contacts.id', 'in', ids);
      }
      const rows = await q.orderBy('contacts.id', 'desc').limit(limit).execute();
      return {
        contacts: rows.map((r) => ({
          id: r.id, name: r.name, email: r.email, company: r.company, title: r.title, lead_score: r.lead_score === null ? null : Number(r.lead_score),
        })),
      };
    },
  },
];

const builtinByName = new Map(BUILTINS.map((b) => [b.name as string, { ...b, schemaText: JSON.stringify(b.schema) }]));
for (const b of builtinByName.values()) validatorFor(b.schemaText);

// ---------------------------------------------------------------------------------------------
// Definitions: validation shared by create and update

type Row = Omit<Selectable<ToolsTable>, 'organization_id'>;
const COLUMNS = ['id', 'name', 'description', 'kind', 'method', 'url_template', 'headers', 'input_schema', 'timeout_ms', 'enabled', 'created_at', 'updated_at'] as const;

export interface ToolDefinition {
  name: string;
  description: string;
  method: HttpToolMethod;
  url_template: string;
  headers: Record<string, string>;
  input_schema: Record<string, unknown>;
  timeout_ms: number;
  enabled: boolean;
}
export type ToolInput = Partial<ToolDefinition> & Pick<ToolDefinition, 'name' | 'url_template'>;

const present = (r: Row) => ({
  id: r.id, name: r.name, description: r.description, kind: r.kind as 'http', method: r.method as HttpToolMethod, url_template: r.url_template,
  headers: JSON.parse(r.headers) as Record<string, string>, input_schema: JSON.parse(r.input_schema) as Record<string, unknown>,
  timeout_ms: Number(r.timeout_ms), enabled: Number(r.enabled) === 1, created_at: r.created_at, updated_at: r.updated_at,
});
export type Tool = ReturnType<typeof present>;

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** RFC 9110 token. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$/;
/** Visible ASCII, space, tab and obs-text: no CR, LF, NUL or other control characters. */
const HEADER_VALUE = /^[\t\x20-\x7E\x80-\xFF]*$/;
/** Set by the HTTP client or hop-by-hop: a tool may not set them. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-connection', 'expect']);

const hasControl = (s: string) => { for (let i = 0; i < s.length; i++) { const c = s.charCodeAt(i); if (c < 32 || c === 127) return true; } return false; };

/** Where the URL's authority ends (scheme://authority is what must be literal). */
function authorityEnd(url: string): number {
  const start = url.indexOf('://');
  if (start < 0) return -1;
  const rest = url.slice(start + 3);
  const m = /[/?#]/.exec(rest);
  return start + 3 + (m ? m.index : rest.length);
}

/** The JSON-Schema property names an object schema declares. */
function declaredProperties(schema: Record<string, unknown>): Set<string> {
  const props = schema.properties;
  return new Set(props && typeof props === 'object' && !Array.isArray(props) ? Object.keys(props) : []);
}

/**
 * Checks a whole definition (after defaults and merges). Throws one 400 naming every faulty field;
 * nothing is stored on failure.
 */
async function checkDefinition(deps: Deps, org: string, def: ToolDefinition): Promise<void> {
  const errors: Record<string, string> = {};

  if (!TOOL_NAME.test(def.name)) errors.name = 'Letters, digits, _ and -, starting with a letter, at most 64 characters';
  else if (isBuiltinName(def.name)) errors.name = `${def.name} is the name of a built-in tool`;

  // input_schema: an object schema that compiles (strict).
  let schemaOk = false;
  const schemaText = JSON.stringify(def.input_schema);
  if (!def.input_schema || typeof def.input_schema !== 'object' || Array.isArray(def.input_schema)) errors.input_schema = 'Must be a JSON Schema object';
  else if (def.input_schema.type !== 'object') errors.input_schema = 'Must describe an object: "type": "object"';
  else if (schemaText.length > MAX_SCHEMA_CHARS) errors.input_schema = `At most ${MAX_SCHEMA_CHARS} characters as JSON`;
  else {
    try {
      validatorFor(schemaText);
      schemaOk = true;
    } catch (err) {
      errors.input_schema = `Does not compile: ${(err as Error).message}`.slice(0, 500);
    }
  }

  // url_template: http(s), literal scheme/host/port, known placeholders, parsable.
  const secretNames = new Set<string>();
  const url = def.url_template;
  const urlError = (() => {
    if (url.length > 2000) return 'At most 2000 characters';
    if (hasControl(url) || /\s/.test(url.replace(PLACEHOLDER, 'x'))) return 'Must not contain spaces or control characters';
    const end = authorityEnd(url);
    if (!/^https?:\/\//i.test(url) || end < 0) return 'Must be an absolute http or https URL';
    if (url.slice(0, end).includes('{') || url.slice(0, end).includes('}')) return 'Placeholders may appear in the path, query and fragment only: the scheme, host and port are literal';
    const declared = declaredProperties(def.input_schema ?? {});
    for (const m of url.matchAll(PLACEHOLDER)) {
      const inner = m[1];
      if (inner.startsWith('secrets.')) {
        const name = inner.slice('secrets.'.length);
        if (!SECRET_NAME.test(name)) return `{{${inner}}} is not a valid secret reference`;
        secretNames.add(name);
      } else if (!VAR_NAME.test(inner)) return `{{${inner}}} is not a valid placeholder`;
      else if (schemaOk && !declared.has(inner)) return `{{${inner}}} is not declared in input_schema.properties`;
    }
    const stripped = url.replace(PLACEHOLDER, 'x');
    if (stripped.includes('{{') || stripped.includes('}}')) return 'Unbalanced {{ or }}';
    let parsed: URL;
    try { parsed = new URL(stripped); } catch { return 'Not a valid URL'; }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'Must be an http or https URL';
    if (!parsed.hostname) return 'The URL has no host';
    return null;
  })();
  if (urlError) errors.url_template = urlError;

  // headers: valid names and values (no header injection), only secret placeholders.
  const headerNames = new Set<string>();
  const headerError = (() => {
    const entries = Object.entries(def.headers ?? {});
    if (entries.length > MAX_HEADERS) return `At most ${MAX_HEADERS} headers`;
    for (const [name, value] of entries) {
      if (!HEADER_NAME.test(name)) return `"${name.slice(0, 100)}" is not a valid header name`;
      if (RESERVED_HEADERS.has(name.toLowerCase())) return `${name} is set by the HTTP client and may not be set by a tool`;
      if (headerNames.has(name.toLowerCase())) return `${name} is given twice`;
      headerNames.add(name.toLowerCase());
      if (typeof value !== 'string') return `The value of ${name} must be a string`;
      if (value.length > 8000) return `The value of ${name} is longer than 8000 characters`;
      if (!HEADER_VALUE.test(value)) return `The value of ${name} contains a line break or another control character`;
      for (const m of value.matchAll(PLACEHOLDER)) {
        const inner = m[1];
        if (!inner.startsWith('secrets.') || !SECRET_NAME.test(inner.slice('secrets.'.length))) return `Header values may only reference {{secrets.NAME}}, not {{${inner}}}`;
        secretNames.add(inner.slice('secrets.'.length));
      }
    }
    return null;
  })();
  if (headerError) errors.headers = headerError;

  if (!HTTP_METHODS.includes(def.method)) errors.method = `One of ${HTTP_METHODS.join(', ')}`;
  if (!Number.isInteger(def.timeout_ms) || def.timeout_ms < MIN_TIMEOUT_MS || def.timeout_ms > MAX_TIMEOUT_MS) errors.timeout_ms = `An integer from ${MIN_TIMEOUT_MS} to ${MAX_TIMEOUT_MS} (milliseconds)`;

  // A literal loopback, private or link-local host (or localhost) is refused now, unless
  // allow-listed; host names are checked with DNS on every call.
  if (!errors.url_template) {
    const origin = url.slice(0, authorityEnd(url));
    const host = new URL(origin).hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const isLocalName = host === 'localhost' || host.endsWith('.localhost');
    if (isIP(host) || isLocalName) {
      try {
        await assertOutboundUrl(origin, deps.config, { field: 'url_template', resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        const d = err.details as Record<string, string>;
        errors.url_template = typeof d === 'object' && d.url_template ? d.url_template : err.message;
      }
    }
  }

  // Referenced secrets must exist (checked again, with a clear error, at call time).
  if (secretNames.size && !errors.headers && !errors.url_template) {
    const found = await deps.db.kysely.selectFrom('secrets').select('name').where('organization_id', '=', org).where('name', 'in', [...secretNames]).execute();
    const have = new Set(found.map((r) => r.name));
    const missing = [...secretNames].filter((n) => !have.has(n));
    if (missing.length) {
      const inUrl = missing.filter((n) => url.includes(`secrets.${n}`));
      const msg = (names: string[]) => `Unknown secret${names.length > 1 ? 's' : ''}: ${names.join(', ')}`;
      if (inUrl.length) errors.url_template = msg(inUrl);
      const inHeaders = missing.filter((n) => !inUrl.includes(n));
      if (inHeaders.length) errors.headers = msg(inHeaders);
    }
  }

  if (Object.keys(errors).length) throw badRequest(errors);
}

// ---------------------------------------------------------------------------------------------
// CRUD

const nameTaken = () => conflict({ name: 'A tool with this name already exists' });

export function listTools(ctx: Ctx, input: PageInput & { search?: string; enabled?: boolean }) {
  const org = ctx.actor!.organizationId;
  let query = ctx.deps.db.kysely.selectFrom('tools').select(COLUMNS).where('organization_id', '=', org);
  if (input.search) query = query.where(containsText('name', input.search));
  if (input.enabled !== undefined) query = query.where('enabled', '=', input.enabled ? 1 : 0);
  return paginate(ctx, { query, table: 'tools', scope: org, input }, present);
}

async function findRow(deps: Deps, org: string, id: string): Promise<Row | undefined> {
  return deps.db.kysely.selectFrom('tools').select(COLUMNS).where('id', '=', id).where('organization_id', '=', org)
    .executeTakeFirst() as Promise<Row | undefined>;
}

export async function getTool(ctx: Ctx, id: string): Promise<Tool> {
  const row = await findRow(ctx.deps, ctx.actor!.organizationId, id);
  if (!row) throw notFound('Tool');
  return present(row);
}

const toColumns = (d: ToolDefinition) => ({
  name: d.name, description: d.description, kind: 'http', method: d.method, url_template: d.url_template,
  headers: JSON.stringify(d.headers), input_schema: JSON.stringify(d.input_schema), timeout_ms: d.timeout_ms, enabled: d.enabled ? 1 : 0,
});

export async function createTool(ctx: Ctx, input: ToolInput): Promise<Tool> {
  const org = ctx.actor!.organizationId;
  const def: ToolDefinition = {
    name: input.name, description: input.description ?? '', method: input.method ?? 'GET', url_template: input.url_template,
    headers: input.headers ?? {}, input_schema: input.input_schema ?? { type: 'object', properties: {} },
    timeout_ms: input.timeout_ms ?? DEFAULT_TIMEOUT_MS, enabled: input.enabled ?? true,
  };
  await checkDefinition(ctx.deps, org, def);
  const now = nowIso();
  const id = newId('tool');
  try {
    await ctx.deps.db.kysely.insertInto('tools').values({ id, organization_id: org, ...toColumns(def), created_at: now, updated_at: now }).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  ctx.deps.counts.invalidate(org, 'tools');
  return getTool(ctx, id);
}

/** PATCH: the given fields replace the stored ones; the merged definition is checked as a whole. */
export async function updateTool(ctx: Ctx, id: string, input: Partial<ToolDefinition>): Promise<Tool> {
  const org = ctx.actor!.organizationId;
  const row = await findRow(ctx.deps, org, id);
  if (!row) throw notFound('Tool');
  const cur = present(row);
  const def: ToolDefinition = {
    name: input.name ?? cur.name, description: input.description ?? cur.description, method: input.method ?? cur.method,
    url_template: input.url_template ?? cur.url_template, headers: input.headers ?? cur.headers, input_schema: input.input_schema ?? cur.input_schema,
    timeout_ms: input.timeout_ms ?? cur.timeout_ms, enabled: input.enabled ?? cur.enabled,
  };
  await checkDefinition(ctx.deps, org, def);
  try {
    await ctx.deps.db.kysely.updateTable('tools').set({ ...toColumns(def), updated_at: nowIso() })
      .where('id', '=', id).where('organization_id', '=', org).execute();
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken();
    throw err;
  }
  return getTool(ctx, id);
}

export async function deleteTool(ctx: Ctx, id: string): Promise<void> {
  const org = ctx.actor!.organizationId;
  const res = await ctx.deps.db.kysely.deleteFrom('tools').where('id', '=', id).where('organization_id', '=', org).executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) throw notFound('Tool');
  ctx.deps.counts.invalidate(org, 'tools');
}

export interface ToolTestResult {
  ok: boolean;
  output: unknown;
  latency_ms: number;
  error?: { code: string; message: string; retryable: boolean; status: number | null };
}

/**
 * POST /tools/{id}/test: really runs the tool (enabled or not) with `input`. Invalid input is a
 * 400 naming `input`; any other failure is a 200 with ok=false and the error.
 */
export async function testTool(ctx: Ctx, id: string, input: unknown): Promise<ToolTestResult> {
  const tool = await getTool(ctx, id);
  const started = performance.now();
  try {
    const res = await executeTool(ctx.deps, ctx.actor!.organizationId, tool.name, input ?? {}, { includeDisabled: true });
    return { ok: true, output: res.output, latency_ms: res.latencyMs };
  } catch (err) {
    if (!(err instanceof ToolError)) throw err;
    if (err.code === 'invalid_input') throw badRequest({ input: err.message.replace(/^Invalid input: /, '') }, 'Invalid tool input');
    return {
      ok: false, output: null, latency_ms: Math.round(performance.now() - started),
      error: { code: err.code, message: err.message, retryable: err.retryable, status: err.status },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Resolution and execution (the agent loop's entry points)

function specOfRow(r: Row): ResolvedTool {
  return {
    id: r.id, kind: 'http', name: r.name, description: r.description || `HTTP ${r.method} tool`,
    inputSchema: JSON.parse(r.input_schema) as Record<string, unknown>, timeoutMs: Number(r.timeout_ms),
  };
}

/**
 * The tools of these names in the organization (built-ins included), in the order given,
 * duplicates dropped. An unknown or disabled name → 400 naming it under `field` (default
 * `tools_allowed`).
 */
export async function resolveTools(deps: Deps, organizationId: string, names: string[], opts: { field?: string } = {}): Promise<ResolvedTool[]> {
  const wanted = [...new Set(names)];
  const stored = wanted.filter((n) => !builtinByName.has(n));
  const rows = stored.length
    ? await deps.db.kysely.selectFrom('tools').select(COLUMNS).where('organization_id', '=', organizationId).where('name', 'in', stored).execute() as Row[]
    : [];
  const byName = new Map(rows.map((r) => [r.name, r]));
  const unknown = stored.filter((n) => !byName.has(n));
  const disabled = stored.filter((n) => byName.has(n) && Number(byName.get(n)!.enabled) !== 1);
  const field = opts.field ?? 'tools_allowed';
  if (unknown.length) throw badRequest({ [field]: `Unknown tool${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}` });
  if (disabled.length) throw badRequest({ [field]: `Disabled tool${disabled.length > 1 ? 's' : ''}: ${disabled.join(', ')}` });
  return wanted.map((n) => {
    const b = builtinByName.get(n);
    if (b) return { id: null, kind: 'builtin' as const, name: b.name, description: b.description, inputSchema: b.schema, timeoutMs: DEFAULT_TIMEOUT_MS };
    return specOfRow(byName.get(n)!);
  });
}

/** A request context acting for an organization (secrets resolution outside a request). */
function orgCtx(deps: Deps, organizationId: string): Ctx {
  return {
    deps, authError: null, requestId: newId('req'), ip: '127.0.0.1', baseUrl: '', url: '/',
    actor: { type: 'api_key', id: 'tools', userId: null, organizationId, role: 'system', permissions: new Set(), isPlatformAdmin: false, sessionId: null },
  };
}

/** Replaces `{{secrets.NAME}}` in `text`; an unknown secret → ToolError missing_secret. */
async function withSecrets(deps: Deps, org: string, text: string): Promise<string> {
  if (findSecretRefs(text).length === 0) return text;
  try {
    return await resolveSecretRefs(orgCtx(deps, org), text);
  } catch (err) {
    if (err instanceof AppError && err.status === 400) {
      const d = err.details as Record<string, string>;
      throw new ToolError('missing_secret', `${typeof d === 'object' && d.secrets ? d.secrets : 'Unknown secret'} (create it under /api/v1/secrets)`);
    }
    throw err;
  }
}

const scalarText = (v: unknown): string => (v === undefined || v === null ? '' : typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v));

/** The request an HTTP tool makes for `input` (see the rules at the top of this file). */
async function buildRequest(deps: Deps, org: string, row: Row, input: Record<string, unknown>) {
  const used = new Set<string>();
  const secretValues = new Map<string, string>();
  for (const name of findSecretRefs(row.url_template)) {
    secretValues.set(name, await withSecrets(deps, org, `{{secrets.${name}}}`));
  }
  const rendered = row.url_template.replace(PLACEHOLDER, (_m, inner: string) => {
    if (inner.startsWith('secrets.')) return encodeURIComponent(secretValues.get(inner.slice('secrets.'.length)) ?? '');
    used.add(inner);
    return encodeURIComponent(scalarText(input[inner]));
  });
  let url: URL;
  try {
    url = new URL(rendered);
  } catch {
    throw new ToolError('invalid_url', 'The rendered URL is not valid');
  }
  const rest = Object.fromEntries(Object.entries(input).filter(([k]) => !used.has(k)));
  const method = row.method as HttpToolMethod;
  const headers: Record<string, string> = { accept: 'application/json, text/plain;q=0.9, */*;q=0.5' };
  for (const [name, value] of Object.entries(JSON.parse(row.headers) as Record<string, string>)) {
    const resolved = await withSecrets(deps, org, value);
    if (!HEADER_VALUE.test(resolved)) throw new ToolError('invalid_header', `The value of header ${name} contains a line break or another control character once its secrets are resolved`);
    headers[name] = resolved;
  }
  let body: string | undefined;
  if (method === 'GET' || method === 'DELETE') {
    for (const [k, v] of Object.entries(rest)) {
      if (v === null || v === undefined) continue;
      if (Array.isArray(v)) for (const item of v) url.searchParams.append(k, scalarText(item));
      else url.searchParams.append(k, scalarText(v));
    }
  } else {
    body = JSON.stringify(rest);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  }
  return { url, method, headers, body };
}

function classifyFailure(err: unknown, timeoutMs: number): ToolError {
  if (err instanceof ToolError) return err;
  if (err instanceof OutboundFailure) {
    const why = String(Object.values((err.details ?? {}) as Record<string, unknown>)[0] ?? err.message);
    if (/No response within|stalled/.test(why)) return new ToolError('timeout', `The tool did not answer within ${timeoutMs} ms`, { retryable: true });
    if (/redirect/i.test(why)) return new ToolError('too_many_redirects', why);
    if (/larger than/.test(why)) return new ToolError('response_too_large', `The response is larger than ${MAX_RESPONSE_BYTES} bytes`);
    return new ToolError('network', why, { retryable: true });
  }
  if (err instanceof AppError && err.status === 400) {
    const why = String(Object.values((typeof err.details === 'object' ? err.details : {}) as Record<string, unknown>)[0] ?? err.details);
    return err.message === 'URL not allowed'
      ? new ToolError('forbidden_url', `URL not allowed: ${why}`)
      : new ToolError('invalid_url', why || err.message);
  }
  return new ToolError('network', (err as Error)?.message ?? String(err), { retryable: true });
}

async function executeHttp(deps: Deps, org: string, row: Row, input: Record<string, unknown>, signal: AbortSignal | undefined): Promise<unknown> {
  const timeoutMs = Number(row.timeout_ms);
  const req = await buildRequest(deps, org, row, input);
  const ac = new AbortController();
  // Errors are made when they happen (an error's stack trace costs more than the rest of a fast call).
  const timer = setTimeout(() => ac.abort(new ToolError('timeout', `The tool did not answer within ${timeoutMs} ms`, { retryable: true })), timeoutMs);
  const onAbort = () => ac.abort(new ToolError('aborted', 'The tool call was cancelled'));
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort, { once: true });
  // DNS resolution and reading are bounded by the same deadline.
  const aborted = new Promise<never>((_r, reject) => {
    if (ac.signal.aborted) reject(ac.signal.reason);
    ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true });
  });
  aborted.catch(() => undefined);
  try {
    return await Promise.race([aborted, (async () => {
      const res = await fetchOutbound(req.url, deps.config, {
        method: req.method, headers: req.headers, body: req.body, timeoutMs, idleTimeoutMs: timeoutMs, signal: ac.signal,
      });
      const buf = await res.buffer(MAX_RESPONSE_BYTES);
      const text = buf.toString('utf8');
      const type = res.headers.get('content-type') ?? '';
      let output: unknown = text;
      if (/[/+]json\b/i.test(type)) {
        try { output = text === '' ? null : JSON.parse(text); } catch { output = text; }
      }
      if (!res.ok) {
        const snippet = (typeof output === 'string' ? output : JSON.stringify(output)).slice(0, 500);
        const retryable = res.status === 429 || res.status >= 500;
        throw new ToolError('http_error', `The tool answered HTTP ${res.status}${snippet ? `: ${snippet}` : ''}`, { retryable, status: res.status, details: output });
      }
      return output;
    })()]);
  } catch (err) {
    throw classifyFailure(ac.signal.aborted && !(err instanceof ToolError && err.code === 'http_error') ? ac.signal.reason : err, timeoutMs);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * Runs one tool call: the input is validated against the tool's JSON Schema (ajv), built-ins run
 * in process, HTTP tools go through fetchOutbound (SSRF guard, secrets in headers, timeout, at
 * most 1 MiB of response). Failures are ToolErrors (see `retryable`). `agentId` scopes
 * memory_search to the calling agent's memories (and the organization's shared ones).
 */
/** The tool an agent calls by name: on every tool step, so built and compiled once. */
const toolByName = prepared((k) => k.selectFrom('tools').select(COLUMNS).where('organization_id', '=', '').where('name', '=', ''));

export async function executeTool(
  deps: Deps, organizationId: string, name: string, input: unknown,
  opts: { agentId?: string | null; signal?: AbortSignal; includeDisabled?: boolean } = {},
): Promise<{ output: unknown; latencyMs: number }> {
  const started = performance.now();
  const builtin = builtinByName.get(name);
  if (builtin) {
    const value = validateInput(builtin.schemaText, input);
    try {
      const output = await builtin.run(deps, organizationId, value, opts);
      return { output, latencyMs: Math.round(performance.now() - started) };
    } catch (err) {
      if (err instanceof ToolError) throw err;
      throw new ToolError('internal', `${name} failed: ${(err as Error)?.message ?? String(err)}`, { retryable: true });
    }
  }
  const [row] = await toolByName(deps.db, [organizationId, name]) as Row[];
  if (!row) throw new ToolError('unknown_tool', `No tool named ${name}`);
  if (Number(row.enabled) !== 1 && !opts.includeDisabled) throw new ToolError('tool_disabled', `The tool ${name} is disabled`);
  const value = validateInput(row.input_schema, input);
  const output = await executeHttp(deps, organizationId, row, value, opts.signal);
  return { output, latencyMs: Math.round(performance.now() - started) };
}
