import { router } from '../src/trpc.js';

export const teamMembersRouter = router({});
