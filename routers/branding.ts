import { router } from '../src/trpc.js';

export const brandingRouter = router({});
