import { generateSecret, generateURI, verify } from 'otplib';
import QRCode from 'qrcode';
import type { Ctx } from '../context.js';
import { verifyPassword } from '../crypto.js';
import { AppError, badRequest, conflict, notFound } from '../errors.js';
import { nowIso } from '../ids.js';
import { recordAudit } from './audit.js';

/** The issuer shown by authenticator apps next to the account name. */
export const TOTP_ISSUER = 'Agentry';

/**
 * Checks a TOTP code against a user's sealed secret (±1 step of clock drift). A code is accepted
 * once: its time step must be later than the last one used, which is then recorded.
 */
export async function consumeOtp(ctx: Ctx, user: { id: string; totp_secret_enc: string | null; totp_last_counter: number }, code: string): Promise<boolean> {
  if (!user.totp_secret_enc || !/^\d{6}$/.test(code)) return false;
  const secret = ctx.deps.box.decrypt(user.totp_secret_enc);
  const result = await verify({ secret, token: code, epochTolerance: 30, afterTimeStep: user.totp_last_counter || undefined });
  if (!result.valid) return false;
  const timeStep = (result as { timeStep: number }).timeStep;
  const updated = await ctx.deps.db.kysely.updateTable('users').set({ totp_last_counter: timeStep })
    .where('id', '=', user.id).where('totp_last_counter', '<', timeStep).executeTakeFirst();
  return Number(updated.numUpdatedRows) === 1;
}

async function totpRow(ctx: Ctx) {
  const row = await ctx.deps.db.kysely.selectFrom('users')
    .select(['id', 'username', 'password_hash', 'totp_enabled', 'totp_secret_enc', 'totp_last_counter'])
    .where('id', '=', ctx.actor!.userId!).executeTakeFirst();
  if (!row) throw notFound('User');
  return row;
}

const alreadyEnabled = () =>
  conflict({ two_factor: 'Two-factor authentication is already enabled; disable it first' }, 'Two-factor authentication already enabled');

/**
 * Starts (or restarts) 2FA setup: a new secret, sealed and stored as pending (not yet enabled),
 * returned once with its otpauth:// URI and that URI as a PNG QR code data URL.
 */
export async function setupTwoFactor(ctx: Ctx): Promise<{ qr_code: string; secret: string; otpauth_url: string }> {
  const user = await totpRow(ctx);
  if (user.totp_enabled) throw alreadyEnabled();
  const secret = generateSecret();
  const otpauth_url = generateURI({ issuer: TOTP_ISSUER, label: user.username, secret });
  const qr_code = await QRCode.toDataURL(otpauth_url, { type: 'image/png', errorCorrectionLevel: 'M', margin: 2, width: 240 });
  // A new secret starts a new replay window; guarded so that a concurrent enable is not undone.
  const updated = await ctx.deps.db.kysely.updateTable('users')
    .set({ totp_secret_enc: ctx.deps.box.encrypt(secret), totp_last_counter: 0, updated_at: nowIso() })
    .where('id', '=', user.id).where('totp_enabled', '=', 0).executeTakeFirst();
  if (Number(updated.numUpdatedRows) !== 1) throw alreadyEnabled();
  // A GET that changes state: the audit middleware only covers mutations, so record it here.
  await recordAudit(ctx, { action: 'two_factor.setup', resourceType: 'user', resourceId: user.id });
  return { qr_code, secret, otpauth_url };
}

/** Enables 2FA once the user proves, with a current code, that the pending secret is in their app. */
export async function enableTwoFactor(ctx: Ctx, input: { otp: string }): Promise<{ success: true; two_factor_enabled: boolean }> {
  const user = await totpRow(ctx);
  if (user.totp_enabled) throw alreadyEnabled();
  if (!user.totp_secret_enc) throw badRequest({ two_factor: 'No pending setup: call GET /api/2fa/setup/ first' });
  if (!(await consumeOtp(ctx, user, input.otp))) throw badRequest({ otp: 'The code is invalid, expired or was already used' });
  const updated = await ctx.deps.db.kysely.updateTable('users').set({ totp_enabled: 1, updated_at: nowIso() })
    .where('id', '=', user.id).where('totp_enabled', '=', 0).where('totp_secret_enc', '=', user.totp_secret_enc).executeTakeFirst();
  // The secret was replaced by another setup (or 2FA enabled) in the meantime.
  if (Number(updated.numUpdatedRows) !== 1) throw new AppError(409, 'Conflict', { two_factor: 'The pending setup changed; start again' });
  return { success: true, two_factor_enabled: true };
}

/** Disables 2FA (or abandons a pending setup) after checking the password: secret and flag are cleared. */
export async function disableTwoFactor(ctx: Ctx, input: { password: string }): Promise<{ success: true; two_factor_enabled: boolean }> {
  const user = await totpRow(ctx);
  if (!(await verifyPassword(input.password, user.password_hash))) throw badRequest({ password: 'The password is incorrect' });
  if (!user.totp_enabled && !user.totp_secret_enc) throw badRequest({ two_factor: 'Two-factor authentication is not enabled' });
  await ctx.deps.db.kysely.updateTable('users').set({ totp_enabled: 0, totp_secret_enc: null, totp_last_counter: 0, updated_at: nowIso() })
    .where('id', '=', user.id).execute();
  return { success: true, two_factor_enabled: false };
}
