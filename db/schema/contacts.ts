// Contacts and what is derived from their e-mail: table types (see db/migrations/0003_contacts.ts).

import type { Generated } from 'kysely';

export interface ContactsTable {
  id: string;
  organization_id: string;
  name: string | null;
  /** lower-case, accents removed: prefix-search key. */
  name_key: string | null;
  email: string | null;
  /** lower-case e-mail, unique per organization. */
  email_normalized: string | null;
  /** lower-case, plus-tag and dots of the local part removed: duplicate_email groups. */
  email_dedupe_key: string | null;
  phone: string | null;
  company: string | null;
  title: string | null;
  city: string | null;
  state: string | null;
  country: string | null;
  /** JSON array of strings. */
  tags: Generated<string>;
  /** JSON object. */
  custom_fields: Generated<string>;
  source: string | null;
  lead_score: number | null;
  /** JSON array. */
  lead_score_reasons: Generated<string>;
  unsubscribed: Generated<number>;
  bounced: Generated<number>;
  esp: string | null;
  esg: string | null;
  email_validity: string | null;
  /** JSON array of flags (also one contact_flags row each). */
  data_health_flags: Generated<string>;
  email_checked_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface ContactFlagsTable { organization_id: string; flag: string; contact_id: string }

/** Maintained per-organization counts of filter values (facet: total, city, esp, esg, email_validity, data_health_flag). */
export interface ContactFacetsTable { organization_id: string; facet: string; value: string; count: Generated<number> }

export interface ContactsTables {
  contacts: ContactsTable;
  contact_flags: ContactFlagsTable;
  contact_facets: ContactFacetsTable;
}
