import { router } from '../src/trpc.js';

export const outreachRouter = router({});
