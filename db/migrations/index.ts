import type { Migration } from 'kysely';
import * as m0001 from './0001_identity.js';
import * as m0002 from './0002_engine.js';
import * as m0003 from './0003_contacts.js';
import * as m0004 from './0004_outreach.js';
import * as m0005 from './0005_status.js';
import * as m0006 from './0006_content.js';
import * as m0007 from './0007_imports.js';
import * as m0008 from './0008_providers.js';
import * as m0009 from './0009_runtime.js';
import * as m0010 from './0010_tools.js';
import * as m0011 from './0011_budgets.js';

/** Every migration, in order. Landed migrations are frozen: add a new one instead of editing. */
export const migrations: Record<string, Migration> = {
  '0001_identity': m0001,
  '0002_engine': m0002,
  '0003_contacts': m0003,
  '0004_outreach': m0004,
  '0005_status': m0005,
  '0006_content': m0006,
  '0007_imports': m0007,
  '0008_providers': m0008,
  '0009_runtime': m0009,
  '0010_tools': m0010,
  '0011_budgets': m0011,
};
