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
});

export type AppRouter = typeof appRouter;
