import { router } from '../src/trpc.js';

export const statusRouter = router({});
