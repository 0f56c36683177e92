import { router } from '../src/trpc.js';

export const adminRouter = router({});
