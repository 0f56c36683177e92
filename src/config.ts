import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  databaseUrl: string;
  jwtSecret: string;
  /** 32 bytes, for AES-256-GCM. */
  secretsKey: Buffer;
  adminUsername: string;
  adminPassword: string | undefined;
  redisUrl: string | undefined;
  rateLimitPerHour: number;
  rateLimitHealthPerHour: number;
  /** Public form posts (the contact form) per IP per hour. */
  rateLimitPublicFormPerHour: number;
  logLevel: string;
  bodyLimit: number;
  trustProxy: boolean;
  /** Absolute origin for links in responses; when unset, taken from each request's Host. */
  publicUrl: string | undefined;
  /** Run job workers inside `serve` (default true). */
  inProcessWorkers: boolean;
  /** Jobs of one organization running at the same time, across all workers (0: no limit). */
  orgConcurrency: number;
  /** DNS servers for e-mail and domain checks (`host` or `host:port`); the system's when empty. */
  dnsServers: string[];
  /** Time bound of one DNS lookup, all servers included. */
  dnsTimeoutMs: number;
  /** Seconds a "does not exist" / "no records" answer is cached. */
  dnsNegativeTtl: number;
  /** Largest accepted file upload (CSV imports, logos). */
  uploadLimitBytes: number;
  /**
   * Hosts or CIDR ranges that outbound requests (URL imports, HTTP tools, webhooks) may reach even
   * though they are private, loopback or link-local; everything else private is refused.
   */
  outboundAllowlist: string[];
  /** Check every REST response against its zod output schema (tests and development; costs time). */
  validateResponses: boolean;
  version: string;
}

export const VERSION = '0.1.0';

/** A secret from the environment, or one generated once and kept in the data directory (mode 0600). */
function persistentSecret(dataDir: string, file: string, fromEnv: string | undefined, bytes: number): string {
  if (fromEnv) return fromEnv;
  const path = join(dataDir, file);
  if (existsSync(path)) return readFileSync(path, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const value = randomBytes(bytes).toString('base64url');
  writeFileSync(path, value + '\n', { mode: 0o600 });
  chmodSync(path, 0o600);
  return value;
}

/** Any string becomes a 32-byte key: base64/hex of 32 bytes is used as is, anything else is hashed. */
export function keyFromString(value: string): Buffer {
  for (const enc of ['base64url', 'base64', 'hex'] as const) {
    const b = Buffer.from(value, enc);
    if (b.length === 32 && b.toString(enc).replace(/=+$/, '') === value.replace(/=+$/, '')) return b;
  }
  return createHash('sha256').update(value).digest();
}

function int(env: NodeJS.ProcessEnv, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const dataDir = resolve(env.DATA_DIR ?? './data');
  return {
    port: int(env, 'PORT', 8000),
    host: env.HOST ?? '0.0.0.0',
    dataDir,
    databaseUrl: env.DATABASE_URL || join(dataDir, 'agentry.db'),
    jwtSecret: persistentSecret(dataDir, 'jwt_secret', env.JWT_SECRET, 48),
    secretsKey: keyFromString(persistentSecret(dataDir, 'secrets_key', env.SECRETS_KEY, 32)),
    adminUsername: env.ADMIN_USERNAME || 'admin',
    adminPassword: env.ADMIN_PASSWORD || undefined,
    redisUrl: env.REDIS_URL || undefined,
    rateLimitPerHour: int(env, 'RATE_LIMIT_PER_HOUR', 1000),
    rateLimitHealthPerHour: int(env, 'RATE_LIMIT_HEALTH_PER_HOUR', 100),
    rateLimitPublicFormPerHour: int(env, 'RATE_LIMIT_PUBLIC_FORM_PER_HOUR', 10),
    logLevel: env.LOG_LEVEL || 'info',
    bodyLimit: int(env, 'BODY_LIMIT_BYTES', 1024 * 1024),
    trustProxy: env.TRUST_PROXY === 'true' || env.TRUST_PROXY === '1',
    publicUrl: env.PUBLIC_URL?.replace(/\/$/, '') || undefined,
    inProcessWorkers: env.WORKERS_IN_PROCESS !== 'false',
    orgConcurrency: int(env, 'ORG_CONCURRENCY', 0),
    dnsServers: (env.DNS_SERVERS ?? '').split(',').map((x) => x.trim()).filter(Boolean),
    dnsTimeoutMs: int(env, 'DNS_TIMEOUT_MS', 2000),
    dnsNegativeTtl: int(env, 'DNS_NEGATIVE_TTL', 60),
    uploadLimitBytes: int(env, 'UPLOAD_LIMIT_BYTES', 512 * 1024 * 1024),
    outboundAllowlist: (env.OUTBOUND_ALLOWLIST ?? '').split(',').map((x) => x.trim()).filter(Boolean),
    validateResponses: env.VALIDATE_RESPONSES ? env.VALIDATE_RESPONSES === 'true' : env.NODE_ENV === 'test' || env.NODE_ENV === 'development',
    version: VERSION,
  };
}
