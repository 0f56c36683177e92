// LLM providers and model prices: table types (see db/migrations/0008_providers.ts). JSON columns are text.

import type { Generated } from 'kysely';

export type ProviderType = 'openai' | 'anthropic' | 'openai_compatible';

export interface LlmProvidersTable {
  id: string; organization_id: string; name: string; type: ProviderType;
  base_url: string | null; api_key_enc: string | null; api_key_hint: string | null;
  default_model: string; is_default: Generated<number>; headers: Generated<string>;
  created_at: string; updated_at: string;
}

export interface LlmModelsTable {
  id: string; provider_id: string; organization_id: string; name: string;
  input_price_per_million: Generated<number>; output_price_per_million: Generated<number>;
  created_at: string; updated_at: string;
}

export interface ProvidersTables {
  llm_providers: LlmProvidersTable;
  llm_models: LlmModelsTable;
}
