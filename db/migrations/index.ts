import type { Migration } from 'kysely';
import * as m0001 from './0001_identity.js';

/** Every migration, in order. Landed migrations are frozen: add a new one instead of editing. */
export const migrations: Record<string, Migration> = {
  '0001_identity': m0001,
};
