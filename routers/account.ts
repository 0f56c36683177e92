import { router } from '../src/trpc.js';

export const accountRouter = router({});
