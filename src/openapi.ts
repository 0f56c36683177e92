import { z } from 'zod';
import { VERSION } from './config.js';
import type { RestRoute } from './http/rest.js';
import { MAX_PAGE_SIZE } from './pagination.js';
import { errorBody } from './schemas.js';

/**
 * The OpenAPI 3.1 document, generated from the route table (every procedure that carries
 * `meta.openapi`, aliases included) plus the list of non-JSON routes below.
 *
 * The output is deterministic: paths, methods, responses, components and tags are emitted in a
 * fixed order whatever order the routers are declared in, so the committed `openapi.json` only
 * changes when the API does.
 */

export type JsonSchema = Record<string, unknown>;
type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD';

/** A schema given either as zod (converted like the procedures' schemas) or as JSON Schema. */
export type SchemaSource = z.ZodType | JsonSchema;

export interface ExtraMedia { schema?: SchemaSource; example?: unknown }

export interface ExtraParameter {
  name: string;
  in: 'query' | 'header' | 'path' | 'cookie';
  description?: string;
  required?: boolean;
  schema?: SchemaSource;
}

export interface ExtraResponse {
  description: string;
  /** Content type → schema, e.g. `{ 'text/csv': { schema: { type: 'string' } } }`; none for an empty body. */
  content?: Record<string, ExtraMedia>;
  headers?: Record<string, { description?: string; schema?: SchemaSource; required?: boolean }>;
}

/**
 * A route that is not a procedure (non-JSON responses or requests: CSV/XLSX downloads, the
 * tracking pixel, click redirects, Server-Sent Events, multipart uploads, form posts, metrics).
 * Append entries to `nonJsonOperations` (or call `documentOperation`) next to the route itself.
 */
export interface ExtraOperation {
  method: Method;
  /** `{param}` style, exactly as served. */
  path: string;
  operationId: string;
  tags: string[];
  summary: string;
  description?: string;
  /** No Bearer token (default false: the Bearer scheme, 401 and 403 are documented). */
  public?: boolean;
  /** Default true: the 429 response and the rate-limit headers are documented. */
  rateLimited?: boolean;
  /** Query parameters from a zod object schema (its properties, types and descriptions). */
  query?: z.ZodType;
  /** Further parameters (headers such as Last-Event-ID, path parameter descriptions). */
  parameters?: ExtraParameter[];
  requestBody?: { description?: string; required?: boolean; content: Record<string, ExtraMedia> };
  /** Status → response. Error responses (400/401/403/404/429) are added as for procedures. */
  responses: Record<number, ExtraResponse>;
  /** Further error statuses this route answers with an `{error, details}` body (409, 422, 503…). */
  errors?: number[];
}

/** The documented non-JSON routes. Later work appends its own (downloads, SSE, tracking). */
export const nonJsonOperations: ExtraOperation[] = [
  {
    method: 'GET', path: '/metrics', operationId: 'platform.metrics', tags: ['Platform'],
    summary: 'Prometheus metrics', description: 'Request counts (`http_requests_total` by method, route and status) and latencies, in the Prometheus text format.',
    public: true, rateLimited: false,
    responses: { 200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } } },
  },
  {
    method: 'GET', path: '/openapi.json', operationId: 'platform.openapi', tags: ['Platform'],
    summary: 'This OpenAPI document', public: true,
    responses: { 200: { description: 'The OpenAPI 3.1 document', content: { 'application/json': { schema: { type: 'object' } } } } },
  },
  {
    method: 'GET', path: '/docs', operationId: 'platform.docs', tags: ['Platform'],
    summary: 'Interactive API reference (Swagger UI over /openapi.json)', public: true,
    responses: { 200: { description: 'An HTML page', content: { 'text/html': { schema: { type: 'string' } } } } },
  },
];

/** Documents a non-JSON route (replacing an earlier entry for the same method and path). */
export function documentOperation(op: ExtraOperation): void {
  const i = nonJsonOperations.findIndex((o) => o.method === op.method && o.path === op.path);
  if (i >= 0) nonJsonOperations[i] = op;
  else nonJsonOperations.push(op);
}

// ---------------------------------------------------------------------------------------------
// Schemas

const METHOD_ORDER = ['get', 'put', 'post', 'patch', 'delete', 'head', 'options', 'trace'];
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
const pathParamsOf = (path: string) => [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
const isZod = (s: unknown): s is z.ZodType => typeof s === 'object' && s !== null && '_zod' in s;
const componentName = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, '_');
const pascal = (s: string) => s.split(/[^A-Za-z0-9]+/).filter(Boolean).map((w) => w[0].toUpperCase() + w.slice(1)).join('');

/**
 * Component schemas shared by the whole document. Schemas that zod puts under `$defs` (those
 * registered with `.meta({ id })`, and recursive ones) are hoisted here and their `$ref`s
 * rewritten, since a `#/$defs/…` pointer inside an OpenAPI document would point at its root.
 */
class Components {
  readonly schemas = new Map<string, JsonSchema>();

  /** Adds `schema` under `name`; the same name twice must mean the same schema. */
  add(name: string, schema: JsonSchema): string {
    const have = this.schemas.get(name);
    if (have && JSON.stringify(have) !== JSON.stringify(schema)) throw new Error(`Two different schemas want the component name ${name}`);
    this.schemas.set(name, schema);
    return name;
  }

  /**
   * A zod schema (or a JSON Schema) as an OpenAPI schema object. Definitions are named by their
   * registry id (`Thing` for outputs, `ThingInput` for inputs; identical pairs are merged at the
   * end), recursive ones after `hint`.
   */
  convert(source: SchemaSource, io: 'input' | 'output', hint: string): JsonSchema {
    if (!isZod(source)) return structuredClone(source);
    const raw = z.toJSONSchema(source, { target: 'draft-2020-12', io, unrepresentable: 'any', cycles: 'ref', reused: 'inline' }) as JsonSchema;
    const { $schema: _schema, $defs, ...root } = raw;
    const defs = ($defs ?? {}) as Record<string, JsonSchema>;
    const suffix = io === 'input' ? 'Input' : '';
    const names = new Map<string, string>();
    for (const n of Object.keys(defs)) {
      names.set(n, componentName(/^__schema\d+$/.test(n) ? `${pascal(hint)}${io === 'input' ? 'Input' : 'Output'}${n.slice(8)}` : `${n}${suffix}`));
    }
    const recursiveRoot = JSON.stringify(raw).includes('"$ref":"#"');
    const rootName = componentName(`${pascal(hint)}${io === 'input' ? 'Input' : 'Output'}`);
    const rewrite = (node: unknown): unknown => {
      if (Array.isArray(node)) return node.map(rewrite);
      if (typeof node !== 'object' || node === null) return node;
      const out: JsonSchema = {};
      for (const [k, v] of Object.entries(node as JsonSchema)) {
        if (k === '$ref' && typeof v === 'string' && v === '#') out[k] = `#/components/schemas/${rootName}`;
        else if (k === '$ref' && typeof v === 'string' && v.startsWith('#/$defs/')) out[k] = `#/components/schemas/${names.get(v.slice(8)) ?? v.slice(8)}`;
        else out[k] = rewrite(v);
      }
      return tidy(out);
    };
    for (const n of Object.keys(defs).sort()) this.add(names.get(n)!, rewrite(defs[n]) as JsonSchema);
    const body = rewrite(root) as JsonSchema;
    if (recursiveRoot) return { $ref: `#/components/schemas/${this.add(rootName, body)}` };
    return body;
  }

  /** `XInput` identical to `X` (up to their own names) → one component `X`; returns the renames. */
  mergeInputTwins(): Map<string, string> {
    const renames = new Map<string, string>();
    for (const name of [...this.schemas.keys()]) {
      if (!name.endsWith('Input')) continue;
      const twin = name.slice(0, -'Input'.length);
      const a = this.schemas.get(twin);
      if (!a) continue;
      const norm = (s: JsonSchema, self: string) => JSON.stringify(s).split(`#/components/schemas/${self}"`).join('#/components/schemas/$self"');
      if (norm(a, twin) === norm(this.schemas.get(name)!, name)) renames.set(name, twin);
    }
    for (const n of renames.keys()) this.schemas.delete(n);
    return renames;
  }
}

/** Rewrites `$ref`s to renamed component schemas, everywhere in the document. */
function renameRefs(node: unknown, renames: Map<string, string>): unknown {
  if (!renames.size) return node;
  if (Array.isArray(node)) return node.map((n) => renameRefs(n, renames));
  if (typeof node !== 'object' || node === null) return node;
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(node as JsonSchema)) {
    if (k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/')) {
      const name = v.slice('#/components/schemas/'.length);
      out[k] = `#/components/schemas/${renames.get(name) ?? name}`;
    } else out[k] = renameRefs(v, renames);
  }
  return out;
}

/** Drops the safe-integer bounds zod writes on every `.int()`: they say nothing to a client. */
function tidy(s: JsonSchema): JsonSchema {
  if (s.minimum === Number.MIN_SAFE_INTEGER) delete s.minimum;
  if (s.maximum === Number.MAX_SAFE_INTEGER) delete s.maximum;
  return s;
}

/** The object properties a schema accepts (objects, and the union of the members of anyOf/oneOf/allOf). */
function objectProperties(schema: JsonSchema, components: Components): { props: Record<string, JsonSchema>; required: Set<string>; isObject: boolean } {
  const resolved = typeof schema.$ref === 'string' && schema.$ref.startsWith('#/components/schemas/')
    ? components.schemas.get(schema.$ref.slice('#/components/schemas/'.length)) ?? schema
    : schema;
  if (resolved.properties && typeof resolved.properties === 'object') {
    return { props: resolved.properties as Record<string, JsonSchema>, required: new Set((resolved.required as string[] | undefined) ?? []), isObject: true };
  }
  for (const key of ['anyOf', 'oneOf', 'allOf'] as const) {
    const members = resolved[key] as JsonSchema[] | undefined;
    if (!Array.isArray(members)) continue;
    const parts = members.map((m) => objectProperties(m, components)).filter((p) => p.isObject);
    if (!parts.length) continue;
    const props: Record<string, JsonSchema> = {};
    for (const p of parts) for (const [k, v] of Object.entries(p.props)) props[k] ??= v;
    const required = new Set<string>();
    for (const k of Object.keys(props)) {
      const inAll = parts.every((p) => p.required.has(k));
      const inAny = parts.some((p) => p.required.has(k));
      if (key === 'allOf' ? inAny : inAll) required.add(k);
    }
    return { props, required, isObject: true };
  }
  return { props: {}, required: new Set(), isObject: resolved.type === 'object' };
}

/** The schema without the given properties (path parameters are not part of the body). */
function withoutProperties(schema: JsonSchema, names: string[], components: Components): JsonSchema {
  if (!names.length) return schema;
  // A named input schema holding a path parameter is inlined, so that the body can omit it.
  const named = typeof schema.$ref === 'string' && schema.$ref.startsWith('#/components/schemas/')
    ? components.schemas.get(schema.$ref.slice('#/components/schemas/'.length)) : undefined;
  if (named && names.some((n) => n in ((named.properties as JsonSchema | undefined) ?? {}))) schema = structuredClone(named);
  const out: JsonSchema = { ...schema };
  if (out.properties && typeof out.properties === 'object') {
    const props = { ...(out.properties as Record<string, JsonSchema>) };
    for (const n of names) delete props[n];
    out.properties = props;
    if (Array.isArray(out.required)) {
      const req = (out.required as string[]).filter((r) => !names.includes(r));
      if (req.length) out.required = req; else delete out.required;
    }
  }
  for (const key of ['anyOf', 'oneOf', 'allOf'] as const) {
    if (Array.isArray(out[key])) out[key] = (out[key] as JsonSchema[]).map((m) => withoutProperties(m, names, components));
  }
  return out;
}

function parameter(name: string, where: 'query' | 'path' | 'header', schema: JsonSchema | undefined, required: boolean): JsonSchema {
  const s: JsonSchema = { ...(schema ?? { type: 'string' }) };
  const description = typeof s.description === 'string' ? s.description : undefined;
  delete s.description;
  const p: JsonSchema = { name, in: where };
  if (description) p.description = description;
  p.required = where === 'path' ? true : required;
  p.schema = s;
  return p;
}

// ---------------------------------------------------------------------------------------------
// Operations

const ref = (kind: 'schemas' | 'responses' | 'headers' | 'parameters', name: string) => ({ $ref: `#/components/${kind}/${name}` });

const RATE_LIMIT_HEADERS = {
  'X-RateLimit-Limit': ref('headers', 'X-RateLimit-Limit'),
  'X-RateLimit-Remaining': ref('headers', 'X-RateLimit-Remaining'),
  'X-RateLimit-Reset': ref('headers', 'X-RateLimit-Reset'),
};

interface ErrorNeeds { input: boolean; auth: boolean; notFound: boolean; rateLimited: boolean; conflict: boolean; declared?: number[] }

/** Shared error responses by status; any other declared status gets an inline `Error` response. */
const ERROR_RESPONSES: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 409: 'Conflict', 422: 'UnprocessableEntity', 429: 'TooManyRequests', 503: 'ServiceUnavailable',
};

function errorResponses(n: ErrorNeeds): Record<string, unknown> {
  const r: Record<string, unknown> = {};
  for (const s of n.declared ?? []) r[String(s)] = ERROR_RESPONSES[s] ? ref('responses', ERROR_RESPONSES[s]) : errorResponse(`Error (${s})`);
  if (n.input) r['400'] = ref('responses', 'BadRequest');
  if (n.auth) { r['401'] = ref('responses', 'Unauthorized'); r['403'] = ref('responses', 'Forbidden'); }
  if (n.notFound) r['404'] = ref('responses', 'NotFound');
  if (n.conflict) r['409'] = ref('responses', 'Conflict');
  if (n.rateLimited) r['429'] = ref('responses', 'TooManyRequests');
  return r;
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No content', 301: 'Moved permanently', 302: 'Found', 303: 'See other', 307: 'Temporary redirect',
};

function sortResponses(r: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => a.localeCompare(b)));
}

function accessNote(route: RestRoute): string | undefined {
  const m = route.meta;
  if (m.public) return 'No authentication.';
  const parts: string[] = [];
  if (m.platformAdmin) parts.push('Platform administrators only.');
  if (m.userOnly) parts.push('A signed-in user (JWT), not an API key.');
  if (m.permission) parts.push(`Needs the \`${m.permission}\` permission.`);
  return parts.length ? parts.join(' ') : 'Any authenticated actor (JWT or API key).';
}

function procedureOperation(route: RestRoute, operationId: string, components: Components): JsonSchema {
  const { method, successStatus = 200, tags, summary, description, path: documented } = route.openapi;
  // Further error statuses a procedure may declare (e.g. 401 on a login, 503 on health), when its meta lists them.
  const declared = route.openapi.errors;
  const hint = route.procedurePath;
  const pathParams = pathParamsOf(route.path);
  const hasBody = BODY_METHODS.has(method);
  const input = route.input ? components.convert(route.input, 'input', hint) : undefined;
  const { props, required } = input ? objectProperties(input, components) : { props: {} as Record<string, JsonSchema>, required: new Set<string>() };

  const parameters: JsonSchema[] = pathParams.map((p) => parameter(p, 'path', props[p], true));
  if (!hasBody) {
    for (const [name, schema] of Object.entries(props)) {
      if (pathParams.includes(name)) continue;
      parameters.push(parameter(name, 'query', schema, required.has(name)));
    }
  }
  const idempotent = method === 'POST' && (successStatus === 201 || successStatus === 202);
  if (idempotent) parameters.push(ref('parameters', 'IdempotencyKey'));

  const op: JsonSchema = { operationId, tags: [...tags], summary };
  const notes = [description, route.path !== documented ? `Alias of \`${method} ${documented}\`.` : undefined, accessNote(route)].filter(Boolean);
  if (notes.length) op.description = notes.join('\n\n');
  if (parameters.length) op.parameters = parameters;

  if (hasBody && input) {
    const body = withoutProperties(input, pathParams, components);
    const bp = objectProperties(body, components);
    if (Object.keys(bp.props).length > 0 || !bp.isObject) {
      op.requestBody = { required: bp.required.size > 0, content: { 'application/json': { schema: body } } };
    }
  }

  const success: JsonSchema = { description: STATUS_TEXT[successStatus] ?? 'Success', headers: { ...RATE_LIMIT_HEADERS } };
  if (successStatus !== 204) {
    success.content = { 'application/json': { schema: route.output ? components.convert(route.output, 'output', hint) : {} } };
  }
  const responses: Record<string, unknown> = {
    [String(successStatus)]: success,
    ...errorResponses({
      input: hasBody || Object.keys(props).length > 0,
      auth: !route.meta.public,
      notFound: pathParams.length > 0,
      rateLimited: true,
      conflict: idempotent,
      declared,
    }),
  };
  op.responses = sortResponses(responses);
  if (!route.meta.public) op.security = [{ bearerAuth: [] }];
  op['x-trpc-procedure'] = route.procedurePath;
  return op;
}

function extraOperation(e: ExtraOperation, components: Components): JsonSchema {
  const hint = e.operationId;
  const conv = (s: SchemaSource | undefined, io: 'input' | 'output') => (s === undefined ? undefined : components.convert(s, io, hint));
  const pathParams = pathParamsOf(e.path);
  const given = new Map((e.parameters ?? []).map((p) => [`${p.in}:${p.name}`, p]));
  const parameters: JsonSchema[] = [];
  for (const p of pathParams) {
    const g = given.get(`path:${p}`);
    const schema = conv(g?.schema, 'input') ?? { type: 'string' };
    parameters.push(parameter(p, 'path', g?.description ? { ...schema, description: g.description } : schema, true));
  }
  let queryProps = 0;
  if (e.query) {
    const q = components.convert(e.query, 'input', hint);
    const { props, required } = objectProperties(q, components);
    for (const [name, schema] of Object.entries(props)) {
      if (pathParams.includes(name)) continue;
      parameters.push(parameter(name, 'query', schema, required.has(name)));
      queryProps++;
    }
  }
  for (const p of e.parameters ?? []) {
    if (p.in === 'path') continue;
    const schema = conv(p.schema, 'input') ?? { type: 'string' };
    parameters.push(parameter(p.name, p.in === 'cookie' ? 'header' : p.in, p.description ? { ...schema, description: p.description } : schema, p.required ?? false));
    if (p.in === 'cookie') (parameters[parameters.length - 1] as JsonSchema).in = 'cookie';
    if (p.in === 'query') queryProps++;
  }
  const rateLimited = e.rateLimited !== false;
  const op: JsonSchema = { operationId: e.operationId, tags: [...e.tags], summary: e.summary };
  const notes = [e.description, e.public ? 'No authentication.' : undefined].filter(Boolean);
  if (notes.length) op.description = notes.join('\n\n');
  if (parameters.length) op.parameters = parameters;
  const media = (content: Record<string, ExtraMedia>, io: 'input' | 'output') => Object.fromEntries(Object.keys(content).sort().map((ct) => {
    const m: JsonSchema = {};
    const s = conv(content[ct].schema, io);
    if (s) m.schema = s;
    if (content[ct].example !== undefined) m.example = content[ct].example;
    return [ct, m];
  }));
  if (e.requestBody) {
    const rb: JsonSchema = { required: e.requestBody.required ?? true, content: media(e.requestBody.content, 'input') };
    if (e.requestBody.description) rb.description = e.requestBody.description;
    op.requestBody = rb;
  }
  const responses: Record<string, unknown> = {};
  for (const [status, r] of Object.entries(e.responses)) {
    const res: JsonSchema = { description: r.description };
    const headers: Record<string, unknown> = rateLimited && Number(status) < 400 ? { ...RATE_LIMIT_HEADERS } : {};
    for (const [h, v] of Object.entries(r.headers ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
      const hv: JsonSchema = { schema: conv(v.schema, 'output') ?? { type: 'string' } };
      if (v.description) hv.description = v.description;
      if (v.required) hv.required = true;
      headers[h] = hv;
    }
    if (Object.keys(headers).length) res.headers = headers;
    if (r.content) res.content = media(r.content, 'output');
    responses[status] = res;
  }
  Object.assign(responses, Object.fromEntries(Object.entries(errorResponses({
    input: queryProps > 0 || e.requestBody !== undefined,
    auth: !e.public,
    notFound: pathParams.length > 0,
    rateLimited,
    conflict: false,
    declared: e.errors,
  })).filter(([s]) => !(s in responses))));
  op.responses = sortResponses(responses);
  if (!e.public) op.security = [{ bearerAuth: [] }];
  return op;
}

// ---------------------------------------------------------------------------------------------
// The document

const DESCRIPTION = `Agentry serves the FireGlue (\`/api/…/\`) and DripPulse (\`/api/v1/…\`) API references, and its own \`/api/v1\` resources, on one data model.

**Authentication**: \`Authorization: Bearer <token>\`, where the token is a JWT access token (from \`POST /api/token/\` or \`POST /api/v1/admin/login\`) or an organization API key (\`POST /api/v1/api_keys\`).

**Errors**: every error body is \`{"error": "<message>", "details": <string|object>}\`; for 400, \`details\` names the fields.

**Lists**: \`{"count", "next", "previous", "results"}\` with \`page\` and \`page_size\` (at most ${MAX_PAGE_SIZE}); deep \`next\`/\`previous\` links carry an opaque \`cursor\`.

**Rate limits**: every response carries \`X-RateLimit-Limit\`, \`X-RateLimit-Remaining\` and \`X-RateLimit-Reset\` (a Unix time); over the limit, 429 with \`Retry-After\`.

**Idempotency**: \`POST\` requests that create or start something honour an \`Idempotency-Key\` header.

The same procedures are callable with a typed TypeScript client over \`/trpc\` (\`createClient\` from this package).`;

function errorResponse(description: string, extraHeaders: Record<string, unknown> = {}): JsonSchema {
  return { description, headers: extraHeaders, content: { 'application/json': { schema: ref('schemas', 'Error') } } };
}

/** Builds the OpenAPI 3.1 document from the route table and the non-JSON operations. */
export function generateOpenApi(routes: RestRoute[], extra: ExtraOperation[] = nonJsonOperations): Record<string, unknown> {
  const components = new Components();
  components.add('Error', {
    ...components.convert(errorBody, 'output', 'Error'),
    description: 'Every error body: a message, and details (for 400, an object naming the invalid fields).',
  });

  // Operation ids: the procedure path; each alias gets a numbered suffix.
  const sorted = [...routes].sort((a, b) => a.path.localeCompare(b.path) || a.openapi.method.localeCompare(b.openapi.method));
  const used = new Set<string>();
  const unique = (id: string) => {
    let candidate = id;
    for (let i = 2; used.has(candidate); i++) candidate = `${id}_${i}`;
    used.add(candidate);
    return candidate;
  };
  const operationIds = new Map<RestRoute, string>();
  // Canonical paths first (in route-table order), so a procedure's id never depends on its aliases.
  for (const r of routes) if (r.path === r.openapi.path) operationIds.set(r, unique(r.procedurePath));
  for (const r of routes) {
    if (r.path === r.openapi.path) continue;
    const n = (r.openapi.aliases ?? []).indexOf(r.path) + 1;
    operationIds.set(r, unique(`${r.procedurePath}_alias${n}`));
  }
  for (const e of extra) {
    if (used.has(e.operationId)) throw new Error(`Duplicate operationId ${e.operationId}`);
    used.add(e.operationId);
  }

  const paths: Record<string, Record<string, unknown>> = {};
  const put = (path: string, method: string, op: JsonSchema) => {
    const item = (paths[path] ??= {});
    const m = method.toLowerCase();
    if (item[m]) throw new Error(`Two operations for ${method} ${path}`);
    item[m] = op;
  };
  for (const r of sorted) put(r.path, r.openapi.method, procedureOperation(r, operationIds.get(r)!, components));
  const extraSorted = [...extra].sort((a, b) => a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  for (const e of extraSorted) put(e.path, e.method, extraOperation(e, components));

  const orderedPaths: Record<string, unknown> = {};
  for (const p of Object.keys(paths).sort()) {
    const item = paths[p];
    orderedPaths[p] = Object.fromEntries(Object.keys(item).sort((a, b) => METHOD_ORDER.indexOf(a) - METHOD_ORDER.indexOf(b)).map((m) => [m, item[m]]));
  }

  const tags = new Set<string>();
  for (const item of Object.values(paths)) for (const op of Object.values(item)) for (const t of ((op as JsonSchema).tags as string[]) ?? []) tags.add(t);

  const renames = components.mergeInputTwins();
  const schemas = Object.fromEntries([...components.schemas.keys()].sort().map((k) => [k, renameRefs(components.schemas.get(k), renames)]));

  return {
    openapi: '3.1.0',
    info: {
      title: 'Agentry',
      version: VERSION,
      description: DESCRIPTION,
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    tags: [...tags].sort().map((name) => ({ name })),
    paths: renameRefs(orderedPaths, renames),
    components: {
      schemas,
      responses: {
        BadRequest: errorResponse('Invalid request: bad JSON, or input that fails validation (details name the fields)'),
        Conflict: errorResponse('Conflict: an Idempotency-Key reused with another request or still in progress, or a conflicting resource'),
        Forbidden: errorResponse('The actor may not do this'),
        NotFound: errorResponse('No such resource in your organization'),
        TooManyRequests: errorResponse('Rate limit exceeded', { 'Retry-After': ref('headers', 'Retry-After'), ...RATE_LIMIT_HEADERS }),
        ServiceUnavailable: errorResponse('A dependency is unavailable'),
        Unauthorized: errorResponse('Missing, invalid or expired token'),
        UnprocessableEntity: errorResponse('Well-formed but not processable'),
      },
      parameters: {
        IdempotencyKey: {
          name: 'Idempotency-Key', in: 'header', required: false,
          description: 'Replays the first response for a retry with the same key and body (header `idempotent-replayed: true`); the same key with another body is a 409.',
          schema: { type: 'string', maxLength: 255 },
        },
      },
      headers: {
        'Retry-After': { description: 'Seconds until the rate limit resets', schema: { type: 'integer' } },
        'X-RateLimit-Limit': { description: 'Requests allowed per hour for this actor and endpoint class', schema: { type: 'integer' } },
        'X-RateLimit-Remaining': { description: 'Requests left in the current window', schema: { type: 'integer' } },
        'X-RateLimit-Reset': { description: 'When the window resets (Unix time, seconds)', schema: { type: 'integer' } },
      },
      securitySchemes: {
        bearerAuth: {
          type: 'http', scheme: 'bearer', bearerFormat: 'JWT or API key',
          description: 'A JWT access token (from `POST /api/token/` or `POST /api/v1/admin/login`) or an organization API key.',
        },
      },
    },
  };
}
