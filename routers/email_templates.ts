import { router } from '../src/trpc.js';

export const emailTemplatesRouter = router({});
