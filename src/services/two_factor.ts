import { verify } from 'otplib';
import type { Ctx } from '../context.js';

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
