// Durable execution: jobs, and the events outbox: table types (see db/migrations/0002_engine.ts).

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface EngineTables {}
