import { router } from '../src/trpc.js';

export const contactsRouter = router({});
