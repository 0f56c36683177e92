import { randomBytes } from 'node:crypto';
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import type { Ctx, Deps } from '../context.js';
import { AppError, badRequest } from '../errors.js';
import { nowIso } from '../ids.js';
import { recordAudit } from './audit.js';

// ---------------------------------------------------------------------------------------------
// Branding: four logo URLs per organization, set by URL or by uploading a file.

export const LOGO_KINDS = ['app', 'square', 'email', 'login'] as const;
export type LogoKind = (typeof LOGO_KINDS)[number];

const LOGO_COLUMNS = ['logo_app_url', 'logo_square_url', 'logo_email_url', 'logo_login_url'] as const;
type LogoColumn = (typeof LOGO_COLUMNS)[number];
export type Branding = Record<LogoColumn, string | null>;

const columnOf = (kind: LogoKind): LogoColumn => `logo_${kind}_url`;

export async function getBranding(ctx: Ctx): Promise<Branding> {
  const row = await ctx.deps.db.kysely.selectFrom('branding').select(LOGO_COLUMNS)
    .where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  return Object.fromEntries(LOGO_COLUMNS.map((c) => [c, row?.[c] ?? null])) as Branding;
}

/** Sets the given URLs (null clears one); files uploaded here that no URL uses any more are removed. */
export async function updateBranding(ctx: Ctx, input: Partial<Branding>): Promise<Branding> {
  const org = ctx.actor!.organizationId;
  const set: Partial<Branding> = {};
  for (const c of LOGO_COLUMNS) if (input[c] !== undefined) set[c] = input[c];
  if (Object.keys(set).length === 0) return getBranding(ctx);
  const before = await getBranding(ctx);
  const now = nowIso();
  await ctx.deps.db.kysely.insertInto('branding')
    .values({ organization_id: org, logo_app_url: null, logo_square_url: null, logo_email_url: null, logo_login_url: null, ...set, updated_at: now })
    .onConflict((oc) => oc.column('organization_id').doUpdateSet({ ...set, updated_at: now }))
    .execute();
  const after = await getBranding(ctx);
  await removeUnusedLogos(ctx.deps, org, before, after);
  return after;
}

// ---------------------------------------------------------------------------------------------
// Logo files: `<dataDir>/media/logos/<org id>/<32 hex>.<ext>`, served at `/media/logos/<org id>/<file>`.

export const MAX_LOGO_BYTES = 2 * 1024 * 1024;

export const LOGO_CONTENT_TYPES = { png: 'image/png', jpg: 'image/jpeg', svg: 'image/svg+xml', webp: 'image/webp' } as const;
export type LogoExt = keyof typeof LOGO_CONTENT_TYPES;

const ORG_SEGMENT = /^org_[0-9A-HJKMNP-TV-Z]{26}$/;
const FILE_SEGMENT = /^[0-9a-f]{32}\.(png|jpg|svg|webp)$/;

const logosRoot = (deps: Deps) => resolve(deps.config.dataDir, 'media', 'logos');

/**
 * The file behind `/media/logos/<org>/<file>`, or null when either segment is not one this
 * service writes (so no path can leave the logos directory).
 */
export function logoFile(deps: Deps, org: string, file: string): { path: string; contentType: string } | null {
  if (!ORG_SEGMENT.test(org) || !FILE_SEGMENT.test(file)) return null;
  const root = logosRoot(deps);
  const path = resolve(root, org, file);
  if (!path.startsWith(root + sep)) return null;
  return { path, contentType: LOGO_CONTENT_TYPES[file.slice(file.lastIndexOf('.') + 1) as LogoExt] };
}

/** The name of a logo file of `org` that `url` points to (whatever the host), or null. */
function ownLogoName(url: string | null, org: string): string | null {
  if (!url) return null;
  try {
    const m = /^\/media\/logos\/([^/]+)\/([^/]+)$/.exec(new URL(url).pathname);
    return m && m[1] === org && FILE_SEGMENT.test(m[2]) ? m[2] : null;
  } catch {
    return null;
  }
}

async function removeUnusedLogos(deps: Deps, org: string, before: Branding, after: Branding): Promise<void> {
  const inUse = new Set(LOGO_COLUMNS.map((c) => ownLogoName(after[c], org)));
  for (const c of LOGO_COLUMNS) {
    const name = ownLogoName(before[c], org);
    if (!name || inUse.has(name)) continue;
    const f = logoFile(deps, org, name);
    if (f) await unlink(f.path).catch(() => undefined);
  }
}

const startsWith = (buf: Buffer, bytes: number[], at = 0) => buf.length >= at + bytes.length && bytes.every((b, i) => buf[at + i] === b);

/** Things an SVG logo must not contain: scripts, event handlers, script URLs, embedded documents, entity declarations. */
const SVG_FORBIDDEN: [RegExp, string][] = [
  [/<\s*script/i, 'a <script> element'],
  [/<\s*foreignObject/i, 'a <foreignObject> element'],
  [/<\s*(iframe|embed|object|handler|listener)\b/i, 'an embedded document or handler element'],
  [/[\s"'/]on[a-z]+\s*=/i, 'an event handler attribute (on…=)'],
  [/<!ENTITY/i, 'an entity declaration'],
];

function decodeXmlCharRefs(text: string): string {
  return text.replace(/&#(x[0-9a-f]+|\d+);?/gi, (_m, ref: string) => {
    const code = ref[0].toLowerCase() === 'x' ? parseInt(ref.slice(1), 16) : parseInt(ref, 10);
    return Number.isFinite(code) && code >= 0 && code <= 0x10ffff ? String.fromCodePoint(code) : '';
  });
}

/** The problem with an SVG document, or null when it is a safe-looking SVG. */
function svgProblem(buf: Buffer): string | null {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    return 'The file is not a PNG, JPEG, SVG or WebP image';
  }
  text = text.replace(/^\uFEFF/, '');
  // An SVG document: optional XML declaration, comments and a DOCTYPE without an internal subset, then <svg.
  const prolog = /^\s*(<\?xml[^>]*\?>\s*)?(<!--[\s\S]*?-->\s*)*(<!DOCTYPE\s+svg[^>[]*>\s*)?(<!--[\s\S]*?-->\s*)*<svg[\s>]/i;
  if (!prolog.test(text)) return 'The file is not a PNG, JPEG, SVG or WebP image';
  if (/&(?!(amp|lt|gt|quot|apos);|#\d+;?|#x[0-9a-f]+;?)/i.test(text)) return 'SVG logos may not use entities other than the XML ones';
  const decoded = decodeXmlCharRefs(text);
  for (const [re, what] of SVG_FORBIDDEN) if (re.test(decoded)) return `SVG logos may not contain ${what}`;
  // Browsers ignore whitespace and control characters inside a URL scheme ("java\tscript:").
  // eslint-disable-next-line no-control-regex
  const flat = decoded.replace(/[\s\u0000-\u001f]+/g, '');
  if (/(java|vb|live)script:/i.test(flat)) return 'SVG logos may not contain script URLs';
  if (/data:(text\/html|application\/xhtml|image\/svg)/i.test(flat)) return 'SVG logos may not embed documents as data: URLs';
  return null;
}

/** The image type of `buf`, decided by its content (magic bytes; for SVG, the document itself). */
export function detectLogoType(buf: Buffer): LogoExt {
  if (buf.length === 0) throw badRequest({ file: 'The file is empty' });
  if (startsWith(buf, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(buf, [0xff, 0xd8, 0xff])) return 'jpg';
  if (startsWith(buf, [0x52, 0x49, 0x46, 0x46]) && startsWith(buf, [0x57, 0x45, 0x42, 0x50], 8)) return 'webp';
  const problem = svgProblem(buf);
  if (problem) throw badRequest({ file: problem });
  return 'svg';
}

/**
 * Stores an uploaded logo and points the organization's `kind` URL at it (absolute, on this
 * server). The file is checked before anything is written; if the database write fails, the
 * file is removed again.
 */
export async function uploadLogo(ctx: Ctx, kind: LogoKind, content: Buffer): Promise<Branding> {
  if (content.length > MAX_LOGO_BYTES) throw new AppError(413, 'Payload too large', { file: `At most ${MAX_LOGO_BYTES / 1024 / 1024} MB` });
  const ext = detectLogoType(content);
  const org = ctx.actor!.organizationId;
  const name = `${randomBytes(16).toString('hex')}.${ext}`;
  const dir = join(logosRoot(ctx.deps), org);
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  await writeFile(path, content, { flag: 'wx', mode: 0o644 });
  let branding: Branding;
  try {
    branding = await updateBranding(ctx, { [columnOf(kind)]: `${ctx.baseUrl}/media/logos/${org}/${name}` });
  } catch (err) {
    await unlink(path).catch(() => undefined);
    throw err;
  }
  await recordAudit(ctx, { action: 'branding.uploadLogo', resourceType: 'branding', resourceId: null, metadata: { kind, file: name, bytes: content.length, type: LOGO_CONTENT_TYPES[ext] } });
  return branding;
}

// ---------------------------------------------------------------------------------------------
// Tracking scripts: per organization.

const TRACKING_COLUMNS = ['header_script', 'body_script', 'footer_script', 'facebook_pixel_id', 'google_analytics_id'] as const;
type TrackingColumn = (typeof TRACKING_COLUMNS)[number];
export type Tracking = Record<TrackingColumn, string | null>;

export async function getTracking(ctx: Ctx): Promise<Tracking> {
  const row = await ctx.deps.db.kysely.selectFrom('tracking_scripts').select(TRACKING_COLUMNS)
    .where('organization_id', '=', ctx.actor!.organizationId).executeTakeFirst();
  return Object.fromEntries(TRACKING_COLUMNS.map((c) => [c, row?.[c] ?? null])) as Tracking;
}

/** Sets the given fields; null or an empty string clears one. */
export async function updateTracking(ctx: Ctx, input: Partial<Tracking>): Promise<Tracking> {
  const set: Partial<Tracking> = {};
  for (const c of TRACKING_COLUMNS) if (input[c] !== undefined) set[c] = input[c] === '' ? null : input[c];
  if (Object.keys(set).length === 0) return getTracking(ctx);
  const now = nowIso();
  await ctx.deps.db.kysely.insertInto('tracking_scripts')
    .values({ organization_id: ctx.actor!.organizationId, header_script: null, body_script: null, footer_script: null, facebook_pixel_id: null, google_analytics_id: null, ...set, updated_at: now })
    .onConflict((oc) => oc.column('organization_id').doUpdateSet({ ...set, updated_at: now }))
    .execute();
  return getTracking(ctx);
}
