import { router } from '../src/trpc.js';

export const auditLogsRouter = router({});
