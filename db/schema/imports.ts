// Data sources and their import runs: table types (see db/migrations/0007_imports.ts).

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ImportsTables {}
