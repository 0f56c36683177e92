import { z } from 'zod';
import { procedure, router } from '../src/trpc.js';
import { pageParams, paginated } from '../src/pagination.js';
import { id, idInput, timestamp } from '../src/schemas.js';
import {
  CONTACT_FIELDS, DATA_SOURCE_TYPES, RUN_STATUSES, createDataSource, deleteDataSource, getDataSource, getRun, listDataSources, listRuns,
  previewDataSource, startRun, updateDataSource,
} from '../src/services/data_sources.js';

const mappingDescription = `CSV column (its header, or \`column_N\` without a header) → contact field: ${CONTACT_FIELDS.join(', ')}, or \`custom_fields.<key>\`. `
  + 'Several columns may map to `name` (joined with spaces, in this order) or `tags` (merged; a cell may hold several tags separated by , ; or |).';
const fieldMapping = z.record(z.string().min(1).max(200), z.string().max(100)).describe(mappingDescription);
const fieldMappingInput = fieldMapping.refine((m) => Object.keys(m).length <= 500, 'At most 500 columns');
const delimiter = z.string().length(1).refine((d) => !['"', '\r', '\n'].includes(d), 'A single character other than a quote or a line break');

const options = z.object({
  delimiter: z.string().nullable().describe('Column delimiter; null: detected from the first line (comma, semicolon, tab or pipe)'),
  has_header: z.boolean().describe('Whether the first row names the columns'),
});
const optionsInput = z.object({
  delimiter: delimiter.nullable().optional().describe('A single character; null to detect it'),
  has_header: z.boolean().optional(),
}).strict();

export const dataSourceOutput = z.object({
  id: z.string(),
  name: z.string(),
  type: z.enum(DATA_SOURCE_TYPES),
  url: z.string().nullable().describe('csv_url: read at each run (http or https, public addresses only)'),
  field_mapping: fieldMapping,
  options,
  file_name: z.string().nullable().describe('csv_upload: the uploaded file, as named by the client'),
  file_size: z.number().int().nullable().describe('Bytes'),
  row_estimate: z.number().int().nullable().describe('Data rows, estimated from the line count'),
  uploaded_at: timestamp.nullable(),
  last_run: z.object({ id: z.string(), status: z.enum(RUN_STATUSES), created_at: timestamp, finished_at: timestamp.nullable() }).nullable(),
  created_at: timestamp,
  updated_at: timestamp,
}).meta({ id: 'DataSource' });

const runError = z.object({
  row_number: z.number().int().describe('The record\'s position in the file, the header row being 1'),
  message: z.string(),
  raw: z.string().describe('The row as read, truncated to 500 characters'),
});

const runOutput = z.object({
  id: z.string(),
  data_source_id: z.string(),
  status: z.enum(RUN_STATUSES),
  field_mapping: fieldMapping.describe('The mapping this run applies'),
  options,
  progress: z.number().nullable().describe('Percent of the bytes read, when the size is known'),
  rows_processed: z.number().int(),
  rows_total: z.number().int().nullable().describe('Estimated data rows, when known'),
  bytes_read: z.number().int(),
  bytes_total: z.number().int().nullable(),
  created_count: z.number().int(),
  updated_count: z.number().int(),
  skipped_count: z.number().int().describe('Rows whose mapped cells are all empty'),
  error_count: z.number().int().describe('Rows not imported, all counted'),
  errors_stored: z.number().int().describe('Row errors kept (the first 1000)'),
  errors: z.array(runError).describe('Stored row errors from `errors_offset`, at most `errors_limit` (default 100)'),
  failure_reason: z.string().nullable().describe('Why the run failed (or why it is being retried)'),
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  created_at: timestamp,
  updated_at: timestamp,
}).meta({ id: 'DataSourceRun' });

const text = z.string().optional();
const importedContact = z.object({
  name: text, email: text, phone: text, company: text, title: text, city: text, state: text, country: text,
  tags: z.array(z.string()).optional(), source: text, custom_fields: z.record(z.string(), z.string()).optional(),
});

const previewOutput = z.object({
  data_source_id: z.string(),
  delimiter: z.string(),
  has_header: z.boolean(),
  columns: z.array(z.string()).describe('Detected columns'),
  rows: z.array(z.object({ row_number: z.number().int(), values: z.array(z.string()).describe('Cells, in column order (long values truncated)') })),
  errors: z.array(runError).describe('Problems of the previewed rows: unparseable rows, wrong column counts, rows that would not import'),
  proposed_field_mapping: fieldMapping.describe('Proposed from the header names'),
  field_mapping: fieldMapping.describe('The mapping previewed: the one given, else the stored one, else the proposed one'),
  mapping_errors: z.record(z.string(), z.string()).describe('Mapped columns the file lacks (by column), and `_` when nothing maps to email'),
  unmapped_columns: z.array(z.string()),
  contacts: z.array(z.object({
    row_number: z.number().int(),
    status: z.enum(['import', 'skip', 'error']),
    contact: importedContact.nullable().describe('The contact fields this row would import'),
    error: z.string().nullable(),
  })),
  row_estimate: z.number().int().nullable(),
});

const createInput = z.object({
  name: z.string().trim().min(1).max(200),
  type: z.enum(DATA_SOURCE_TYPES).describe('`csv_upload`: upload the file to /api/v1/data_sources/{id}/upload; `csv_url`: read from `url` at each run'),
  url: z.string().max(2000).nullable().optional(),
  field_mapping: fieldMappingInput.optional(),
  options: optionsInput.optional(),
}).strict();

const updateInput = idInput.extend({
  name: z.string().trim().min(1).max(200).optional(),
  url: z.string().max(2000).nullable().optional(),
  field_mapping: fieldMappingInput.optional(),
  options: optionsInput.optional(),
}).strict();

const tags = ['Data sources'];

export const dataSourcesRouter = router({
  list: procedure
    .meta({ permission: 'contacts:read', openapi: { method: 'GET', path: '/api/v1/data_sources', tags, summary: 'List data sources' } })
    .input(z.object({ ...pageParams, type: z.enum(DATA_SOURCE_TYPES).optional(), search: z.string().max(200).optional().describe('In the name') }))
    .output(paginated(dataSourceOutput))
    .query(({ ctx, input }) => listDataSources(ctx, input)),
  create: procedure
    .meta({
      permission: 'contacts:write', resource: 'data_source',
      openapi: {
        method: 'POST', path: '/api/v1/data_sources', tags, summary: 'Create a data source', successStatus: 201,
        description: 'A `csv_url` source is checked now: http or https, and a host that resolves to public addresses only. A `csv_upload` source takes its file at `POST /api/v1/data_sources/{id}/upload` (multipart).',
      },
    })
    .input(createInput).output(dataSourceOutput)
    .mutation(({ ctx, input }) => createDataSource(ctx, input)),
  get: procedure
    .meta({ permission: 'contacts:read', openapi: { method: 'GET', path: '/api/v1/data_sources/{id}', tags, summary: 'Show a data source' } })
    .input(idInput).output(dataSourceOutput)
    .query(({ ctx, input }) => getDataSource(ctx, input.id)),
  update: procedure
    .meta({ permission: 'contacts:write', resource: 'data_source', openapi: { method: 'PATCH', path: '/api/v1/data_sources/{id}', tags, summary: 'Update a data source', description: '`field_mapping` replaces the mapping; `options` are merged.' } })
    .input(updateInput).output(dataSourceOutput)
    .mutation(({ ctx, input: { id: sourceId, ...rest } }) => updateDataSource(ctx, sourceId, rest)),
  delete: procedure
    .meta({ permission: 'contacts:write', resource: 'data_source', openapi: { method: 'DELETE', path: '/api/v1/data_sources/{id}', tags, summary: 'Delete a data source', description: 'Its runs, their errors and its file go with it; an import in progress stops at its next batch. Imported contacts stay.' } })
    .input(idInput).output(z.object({ id: z.string(), deleted: z.literal(true) }))
    .mutation(({ ctx, input }) => deleteDataSource(ctx, input.id)),
  preview: procedure
    .meta({
      permission: 'contacts:read', audit: false,
      openapi: {
        method: 'POST', path: '/api/v1/data_sources/{id}/preview', tags, summary: 'Preview an import',
        description: 'Reads the start of the file only: up to 20 rows as parsed, the detected columns, a proposed field mapping and what each row would import as. Malformed rows are reported one by one; a file that is not CSV text is a 400. A URL that cannot be reached is a 502.',
        errors: [502],
      },
    })
    .input(idInput.extend({
      field_mapping: fieldMappingInput.optional().describe('Preview with this mapping instead of the stored one'),
      delimiter: delimiter.optional(),
      has_header: z.boolean().optional(),
      limit: z.number().int().min(1).max(20).optional().describe('Rows (default and maximum 20)'),
    }).strict())
    .output(previewOutput)
    .mutation(({ ctx, input: { id: sourceId, ...rest } }) => previewDataSource(ctx, sourceId, rest)),

  startRun: procedure
    .meta({
      permission: 'contacts:write', resource: 'data_source_run',
      openapi: {
        method: 'POST', path: '/api/v1/data_source_runs', tags, summary: 'Start an import run', successStatus: 202,
        description: 'Queues the import of the data source\'s rows as contacts, upserted by e-mail; one run per data source at a time (later ones wait). Without a mapping (given here or stored), the proposed one is used. Poll `GET /api/v1/data_source_runs/{id}` for progress.',
      },
    })
    .input(z.object({ data_source_id: id, field_mapping: fieldMappingInput.optional().describe('Overrides the stored mapping for this run') }).strict())
    .output(runOutput)
    .mutation(({ ctx, input }) => startRun(ctx, input)),
  listRuns: procedure
    .meta({ permission: 'contacts:read', openapi: { method: 'GET', path: '/api/v1/data_source_runs', tags, summary: 'List import runs', description: 'Newest first, without their errors.' } })
    .input(z.object({ ...pageParams, data_source_id: id.optional(), status: z.enum(RUN_STATUSES).optional() }))
    .output(paginated(runOutput))
    .query(({ ctx, input }) => listRuns(ctx, input)),
  getRun: procedure
    .meta({ permission: 'contacts:read', openapi: { method: 'GET', path: '/api/v1/data_source_runs/{id}', tags, summary: 'Show an import run', description: 'Status, progress, counts and the stored row errors (the first 1000 of a run are kept), paged with `errors_offset` and `errors_limit`.' } })
    .input(idInput.extend({
      errors_limit: z.number().int().min(0).max(1000).optional().describe('Row errors returned (default 100)'),
      errors_offset: z.number().int().min(0).max(1000).optional().describe('Skip this many stored row errors'),
    }))
    .output(runOutput)
    .query(({ ctx, input: { id: runId, ...q } }) => getRun(ctx, runId, q)),
});
