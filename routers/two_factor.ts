import { router } from '../src/trpc.js';

export const twoFactorRouter = router({});
