import { z } from 'zod';

/** Shared zod pieces for router inputs and outputs. */
export const id = z.string().min(1).max(64);
export const idInput = z.object({ id });
export const timestamp = z.string().describe('ISO-8601 UTC');
export const errorBody = z.object({ error: z.string(), details: z.union([z.string(), z.record(z.string(), z.unknown()), z.array(z.unknown())]) });
