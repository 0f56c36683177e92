import { createHash } from 'node:crypto';
import type BetterSqlite3 from 'better-sqlite3';

/**
 * The raw baselines' API-key check: the same work the app's auth does (sha256 of the Bearer key,
 * one indexed lookup, revoked/expired refused, a role that can read), nothing else.
 */
export type KeyRow = { id: string; organization_id: string; role: string; expires_at: string | null; revoked_at: string | null };

const BEARER = /^Bearer\s+(\S+)\s*$/i;
const READERS = new Set(['owner', 'admin', 'member', 'viewer']);

export function rawKeyAuth(db: BetterSqlite3.Database): (authorization: string | undefined) => KeyRow | 401 | 403 {
  const keyStmt = db.prepare('select id, organization_id, role, expires_at, revoked_at from api_keys where key_hash = ?');
  return (authorization) => {
    const m = BEARER.exec(authorization ?? '');
    if (!m || !m[1].startsWith('agk_')) return 401;
    const key = keyStmt.get(createHash('sha256').update(m[1]).digest('hex')) as KeyRow | undefined;
    if (!key || key.revoked_at || (key.expires_at && key.expires_at <= new Date().toISOString())) return 401;
    return READERS.has(key.role) ? key : 403;
  };
}
