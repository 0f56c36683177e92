import { TRPCError } from '@trpc/server';
import type { TRPC_ERROR_CODE_KEY } from '@trpc/server/rpc';
import { ZodError } from 'zod';

export type ErrorDetails = string | Record<string, unknown> | unknown[];

const CODE_BY_STATUS: Record<number, TRPC_ERROR_CODE_KEY> = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_SUPPORTED',
  409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  422: 'UNPROCESSABLE_CONTENT',
  429: 'TOO_MANY_REQUESTS',
  500: 'INTERNAL_SERVER_ERROR',
  502: 'BAD_GATEWAY',
  503: 'SERVICE_UNAVAILABLE',
};

/** The one error type services throw. Its status and body are what every client sees. */
export class AppError extends TRPCError {
  readonly status: number;
  readonly details: ErrorDetails;
  constructor(status: number, error: string, details: ErrorDetails = '') {
    super({ code: CODE_BY_STATUS[status] ?? 'INTERNAL_SERVER_ERROR', message: error });
    this.status = status;
    this.details = details;
  }
}

export const badRequest = (details: ErrorDetails, error = 'Invalid request') => new AppError(400, error, details);
export const unauthorized = (details: ErrorDetails = 'Please provide a valid access token', error = 'Authentication required') =>
  new AppError(401, error, details);
export const forbidden = (details: ErrorDetails = 'You do not have permission to perform this action') =>
  new AppError(403, 'Forbidden', details);
export const notFound = (what = 'Resource') => new AppError(404, 'Not found', `${what} not found`);
export const conflict = (details: ErrorDetails, error = 'Conflict') => new AppError(409, error, details);

/** Field errors of a ZodError as `{ "a.b": "message" }`. */
export function zodDetails(err: ZodError): Record<string, string> {
  const out: Record<string, string> = {};
  for (const issue of err.issues) {
    const key = issue.path.length ? issue.path.join('.') : '_';
    if (!(key in out)) out[key] = issue.message;
  }
  return out;
}

export interface ErrorBody { error: string; details: ErrorDetails }

/**
 * The one mapping from anything thrown to an HTTP status and body. `fault` is true only for
 * real faults (status 500), which the caller logs.
 */
export function toHttpError(err: unknown): { status: number; body: ErrorBody; fault: boolean } {
  if (err instanceof AppError) return { status: err.status, body: { error: err.message, details: err.details }, fault: false };
  if (err instanceof ZodError) return { status: 400, body: { error: 'Invalid request', details: zodDetails(err) }, fault: false };
  if (err instanceof TRPCError) {
    if (err.cause instanceof AppError) return toHttpError(err.cause);
    if (err.cause instanceof ZodError) {
      const isOutput = err.code === 'INTERNAL_SERVER_ERROR';
      if (!isOutput) return { status: 400, body: { error: 'Invalid request', details: zodDetails(err.cause) }, fault: false };
    }
    const status = statusOfCode(err.code);
    if (status < 500) return { status, body: { error: err.message, details: '' }, fault: false };
  }
  const e = err as { statusCode?: number; code?: string; message?: string };
  // Fastify's own client errors (bad JSON, too large, unsupported media).
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const messages: Record<number, string> = { 400: 'Invalid request', 404: 'Not found', 405: 'Method not allowed', 413: 'Payload too large', 415: 'Unsupported media type', 429: 'Rate limit exceeded' };
    return { status: e.statusCode, body: { error: messages[e.statusCode] ?? 'Invalid request', details: e.message ?? '' }, fault: false };
  }
  return { status: 500, body: { error: 'Internal server error', details: 'An unexpected error occurred' }, fault: true };
}

function statusOfCode(code: TRPC_ERROR_CODE_KEY): number {
  for (const [status, c] of Object.entries(CODE_BY_STATUS)) if (c === code) return Number(status);
  return 500;
}

/**
 * Refuses NUL characters anywhere in an input (PostgreSQL cannot store them in text, and no field
 * needs one): a 400 naming the field, instead of a database error.
 */
export function assertNoNul(value: unknown, path = ''): void {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) throw badRequest({ [path || '_']: 'NUL characters are not allowed' });
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => assertNoNul(v, path ? `${path}.${i}` : String(i)));
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k.includes('\u0000')) throw badRequest({ [path || '_']: 'NUL characters are not allowed' });
      assertNoNul(v, path ? `${path}.${k}` : k);
    }
  }
}
