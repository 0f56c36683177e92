// Sending domains, their checks and alerts, e-mail events: table types (see db/migrations/0004_outreach.ts).

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface OutreachTables {}
