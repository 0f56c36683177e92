import { router } from '../src/trpc.js';

export const usersRouter = router({});
