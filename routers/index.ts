import { router } from '../src/trpc.js';
import { accountRouter } from './account.js';
import { adminRouter } from './admin.js';
import { apiKeysRouter } from './api_keys.js';
import { auditLogsRouter } from './audit_logs.js';
import { authRouter } from './auth.js';
import { healthRouter } from './health.js';
import { projectsRouter } from './projects.js';
import { rolesRouter } from './roles.js';
import { secretsRouter } from './secrets.js';
import { teamMembersRouter } from './team_members.js';
import { twoFactorRouter } from './two_factor.js';
import { usersRouter } from './users.js';
import { contactsRouter } from './contacts.js';
import { outreachRouter } from './outreach.js';
import { statusRouter } from './status.js';
import { emailTemplatesRouter } from './email_templates.js';
import { brandingRouter } from './branding.js';
import { contactFormRouter } from './contact_form.js';
import { dataSourcesRouter } from './data_sources.js';

export const appRouter = router({
  health: healthRouter,
  auth: authRouter,
  users: usersRouter,
  two_factor: twoFactorRouter,
  api_keys: apiKeysRouter,
  account: accountRouter,
  projects: projectsRouter,
  team_members: teamMembersRouter,
  roles: rolesRouter,
  audit_logs: auditLogsRouter,
  secrets: secretsRouter,
  admin: adminRouter,
  contacts: contactsRouter,
  outreach: outreachRouter,
  status: statusRouter,
  email_templates: emailTemplatesRouter,
  branding: brandingRouter,
  contact_form: contactFormRouter,
  data_sources: dataSourcesRouter,
});

export type AppRouter = typeof appRouter;
