import type { TestEnv } from './helpers.js';
import { createApiKey } from '../src/services/api_keys.js';

/**
 * For every router whose REST routes take an id: a factory that creates one of its resources in
 * organization B and returns the id, so the security sweep can check that organization A gets 404.
 * The sweep fails for a route whose router has no entry here, so a new route cannot be forgotten.
 */
export const crossOrgFixtures: Record<string, (env: TestEnv) => Promise<string>> = {
  api_keys: async (env) => (await createApiKey(env.ctxOf(env.otherOwner), { name: 'b key' })).id,
};

/** Routers whose id routes act across organizations by design (platform administration). */
export const crossOrgExempt = new Set<string>(['admin']);
