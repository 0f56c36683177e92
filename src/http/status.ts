import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.js';

/** Non-JSON routes: the public HTML status page. */
// eslint-disable-next-line @typescript-eslint/no-unused-vars
export function register(app: FastifyInstance, deps: Deps): void {}
