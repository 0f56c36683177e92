// Budgets, their alerts, prompts and prompt versions: table types (see db/migrations/0011_budgets.ts).
// JSON columns are text.

import type { Generated } from 'kysely';

export interface BudgetsTable {
  id: string; organization_id: string; name: string;
  scope: string; scope_id: string | null; period: string; limit_usd: number;
  alert_thresholds: Generated<string>; enabled: Generated<number>;
  created_at: string; updated_at: string;
}

export interface BudgetAlertsTable {
  id: string; organization_id: string; budget_id: string; threshold: number; period_start: string;
  used_usd: number; limit_usd: number; kind: string; created_at: string;
}

export interface PromptsTable {
  id: string; organization_id: string; name: string; description: Generated<string>;
  created_at: string; updated_at: string;
}

export interface PromptVersionsTable {
  id: string; prompt_id: string; organization_id: string; version: number; template: string;
  variables: Generated<string>; model_settings: string | null; labels: Generated<string>;
  created_by: string | null; created_at: string;
}

export interface BudgetsTables {
  budgets: BudgetsTable;
  budget_alerts: BudgetAlertsTable;
  prompts: PromptsTable;
  prompt_versions: PromptVersionsTable;
}
