// E-mail templates, branding, tracking scripts, contact form submissions: table types (see db/migrations/0006_content.ts).

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ContentTables {}
