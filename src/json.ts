/**
 * The JSON object stored in a text column, or null when the column is null or does not hold an
 * object (JSON columns are written by the services, so this is a guard, not validation).
 */
export function parseJsonObject(text: string | null | undefined): Record<string, unknown> | null {
  if (text === null || text === undefined) return null;
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
