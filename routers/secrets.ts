import { router } from '../src/trpc.js';

export const secretsRouter = router({});
