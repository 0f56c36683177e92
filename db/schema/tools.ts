// Tools and memories: table types (see db/migrations/0010_tools.ts). JSON columns are text.
// SQLite also has `memories_fts` (FTS5, external content) and PostgreSQL a GIN expression index;
// neither is a Kysely table: searches reach them with raw SQL in src/services/memories.ts.

import type { Generated } from 'kysely';

export interface ToolsTable {
  id: string; organization_id: string; name: string; description: Generated<string>;
  kind: Generated<string>; method: Generated<string>; url_template: string;
  headers: Generated<string>; input_schema: Generated<string>;
  timeout_ms: Generated<number>; enabled: Generated<number>;
  created_at: string; updated_at: string;
}

export interface MemoriesTable {
  id: string; organization_id: string; agent_id: string | null; namespace: Generated<string>;
  content: string; metadata: Generated<string>;
  created_at: string; updated_at: string;
}

export interface ToolsTables {
  tools: ToolsTable;
  memories: MemoriesTable;
}
