/**
 * The fixed permission catalog. Every procedure names the one permission it needs; roles are
 * sets of these. Built-in roles: owner ⊇ admin ⊇ member ⊇ viewer.
 */
export const RESOURCES = {
  account: 'The organization and its settings',
  billing: 'Billing details, plans and payments',
  projects: 'Projects',
  team: 'Team members and their roles',
  roles: 'Custom roles',
  api_keys: 'Organization API keys',
  audit_logs: 'The audit log',
  secrets: 'The encrypted secrets vault',
  contacts: 'Contacts, their imports and exports',
  outreach: 'Sending domains, outreach health, e-mail templates, branding and tracking',
  status: 'Status page components and incidents',
  agents: 'AI agents, templates, runs, tools, prompts, memories and providers',
  budgets: 'Budgets and cost rules',
  workflows: 'Workflows and enrollments',
  webhooks: 'Webhooks, events and integrations',
  reports: 'Reports and analytics',
} as const;

export type Resource = keyof typeof RESOURCES;
export type Permission = `${Resource}:${'read' | 'write'}`;

export const PERMISSIONS: { name: Permission; description: string }[] = Object.entries(RESOURCES).flatMap(([r, d]) => [
  { name: `${r}:read` as Permission, description: `Read: ${d}` },
  { name: `${r}:write` as Permission, description: `Create, change and delete: ${d}` },
]);
export const PERMISSION_NAMES = new Set<string>(PERMISSIONS.map((p) => p.name));

export const BUILTIN_ROLES = ['owner', 'admin', 'member', 'viewer'] as const;
export type BuiltinRole = (typeof BUILTIN_ROLES)[number];

const ADMIN_ONLY_READ: Resource[] = ['audit_logs', 'secrets', 'billing'];
const MEMBER_WRITES: Resource[] = ['projects', 'contacts', 'outreach', 'agents', 'workflows', 'webhooks', 'reports', 'budgets', 'status'];

const all = PERMISSIONS.map((p) => p.name);
const ROLE_PERMISSIONS: Record<BuiltinRole, ReadonlySet<string>> = {
  owner: new Set(all),
  admin: new Set(all),
  member: new Set([
    ...Object.keys(RESOURCES).filter((r) => r !== 'audit_logs' && r !== 'billing').map((r) => `${r}:read`),
    ...MEMBER_WRITES.map((r) => `${r}:write`),
  ]),
  viewer: new Set(Object.keys(RESOURCES).filter((r) => !ADMIN_ONLY_READ.includes(r as Resource)).map((r) => `${r}:read`)),
};

export function isBuiltinRole(role: string): role is BuiltinRole {
  return (BUILTIN_ROLES as readonly string[]).includes(role);
}

export function permissionsOfBuiltin(role: BuiltinRole): ReadonlySet<string> {
  return ROLE_PERMISSIONS[role];
}

/** Rank for "at least this role" checks (team management cannot raise anyone above oneself). */
export const ROLE_RANK: Record<BuiltinRole, number> = { viewer: 0, member: 1, admin: 2, owner: 3 };
