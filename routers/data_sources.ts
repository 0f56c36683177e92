import { router } from '../src/trpc.js';

export const dataSourcesRouter = router({});
