import { router } from '../src/trpc.js';

export const projectsRouter = router({});
