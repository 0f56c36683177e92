import { router } from '../src/trpc.js';

export const rolesRouter = router({});
