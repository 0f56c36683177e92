// Status page components, check samples, incidents: table types (see db/migrations/0005_status.ts).

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface StatusTables {}
