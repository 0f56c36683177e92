import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { SecretBox } from './crypto.js';
import type { Db } from './db.js';
import type { AppError } from './errors.js';
import type { CountCache } from './pagination.js';
import type { ApiKeyUsage } from './auth.js';

/** Everything built once per process and shared by every request. */
export interface Deps {
  db: Db;
  config: Config;
  box: SecretBox;
  log: Logger;
  jwtKey: Uint8Array;
  usage: ApiKeyUsage;
  counts: CountCache;
}

export interface Actor {
  type: 'user' | 'api_key';
  /** The user's id, or the API key's id. */
  id: string;
  userId: string | null;
  organizationId: string;
  /** A built-in role name, or `custom:<role id>`. */
  role: string;
  permissions: ReadonlySet<string>;
  isPlatformAdmin: boolean;
  sessionId: string | null;
}

/** Per request. */
export interface Ctx {
  deps: Deps;
  actor: Actor | null;
  /** Why a presented token was refused; thrown when a procedure needs an actor. */
  authError: AppError | null;
  requestId: string;
  ip: string;
  /** The request's User-Agent (truncated), when it sent one. */
  userAgent?: string | null;
  /** Absolute origin (scheme://host) for links. */
  baseUrl: string;
  /** The request's path and query, for pagination links. */
  url: string;
  /** A procedure may set this to answer with another success or failure status (health: 503). */
  responseStatus?: number;
}
