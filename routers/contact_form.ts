import { router } from '../src/trpc.js';

export const contactFormRouter = router({});
