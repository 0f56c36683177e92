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
import { providersRouter } from './providers.js';
import { agentsRouter } from './agents.js';
import { agentTemplatesRouter } from './agent_templates.js';
import { agentRuntimeRouter } from './agent_runtime.js';
import { runsRouter } from './runs.js';
import { monitoringRouter } from './monitoring.js';
import { toolsRouter } from './tools.js';
import { memoriesRouter } from './memories.js';
import { promptsRouter } from './prompts.js';
import { budgetsRouter } from './budgets.js';

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
  providers: providersRouter,
  agents: agentsRouter,
  agent_templates: agentTemplatesRouter,
  agent_runtime: agentRuntimeRouter,
  runs: runsRouter,
  monitoring: monitoringRouter,
  tools: toolsRouter,
  memories: memoriesRouter,
  prompts: promptsRouter,
  budgets: budgetsRouter,
});

export type AppRouter = typeof appRouter;
