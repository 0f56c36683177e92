// Contacts and what is derived from their e-mail: table types (see db/migrations/0003_contacts.ts).

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ContactsTables {}
