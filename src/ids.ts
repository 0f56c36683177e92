import { randomBytes } from 'node:crypto';

// Crockford base32: sortable as plain ASCII.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
let lastMs = 0;
let lastRand: Uint8Array = new Uint8Array(10);

function encode(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const b of bytes) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

/**
 * An opaque, time-sortable identifier: `<prefix>_` + 48-bit millisecond time + 80 random bits
 * (ULID layout). Within one millisecond the random part is incremented, so ids minted by one
 * process sort in creation order.
 */
export function newId(prefix: string): string {
  const now = Date.now();
  let rand: Uint8Array;
  if (now === lastMs) {
    rand = Uint8Array.from(lastRand);
    for (let i = rand.length - 1; i >= 0; i--) {
      if (rand[i] === 255) { rand[i] = 0; continue; }
      rand[i]++;
      break;
    }
  } else {
    rand = randomBytes(10);
  }
  lastMs = now;
  lastRand = rand;
  const bytes = new Uint8Array(16);
  let t = now;
  for (let i = 5; i >= 0; i--) { bytes[i] = t % 256; t = Math.floor(t / 256); }
  bytes.set(rand, 6);
  return `${prefix}_${encode(bytes)}`;
}

export function nowIso(): string {
  return new Date().toISOString();
}
