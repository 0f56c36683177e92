import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { dataSourceOutput } from '../../routers/data_sources.js';
import type { Ctx } from '../context.js';
import { authorizeActor } from '../trpc.js';
import { AppError, badRequest } from '../errors.js';
import { documentOperation } from '../openapi.js';
import type { Permission } from '../permissions.js';
import { recordAudit } from '../services/audit.js';
import { saveUpload } from '../services/data_sources.js';

/** Non-JSON routes: CSV uploads for data sources. */

const UPLOAD_PATH = '/api/v1/data_sources/{id}/upload';

documentOperation({
  method: 'POST', path: UPLOAD_PATH, operationId: 'data_sources.upload', tags: ['Data sources'],
  summary: 'Upload the CSV file of a data source',
  description: 'A multipart/form-data request with one file field (`file`): the CSV file of a `csv_upload` data source, UTF-8 text '
    + '(a BOM is fine), streamed to storage as it arrives, at most UPLOAD_LIMIT_BYTES (512 MB by default). It replaces the previous file; '
    + 'a refused upload leaves the previous file in place. Spreadsheets, archives and other binary files are refused (400).\n\nNeeds the `contacts:write` permission.',
  parameters: [{ name: 'id', in: 'path', required: true, description: 'The data source id', schema: { type: 'string' } }],
  requestBody: {
    required: true,
    content: { 'multipart/form-data': { schema: { type: 'object', properties: { file: { type: 'string', format: 'binary', description: 'The CSV file' } }, required: ['file'] } } },
  },
  responses: { 200: { description: 'The data source, with the file\'s name, size and row estimate', content: { 'application/json': { schema: dataSourceOutput } } } },
  errors: [404, 413, 415],
});

/** The one authorization check (src/trpc.ts), as a procedure with this permission would run it. */
function authorize(ctx: Ctx, permission: Permission): void {
  authorizeActor(ctx, { permission });
}

/** The upload route: registered in the scope that parses multipart/form-data (src/app.ts). */
export function registerUploads(app: FastifyInstance): void {
  app.post(UPLOAD_PATH.replace('{id}', ':id'), async (req: FastifyRequest, reply: FastifyReply) => {
    const ctx = req.ctx;
    authorize(ctx, 'contacts:write');
    const { id } = req.params as { id: string };
    if (!req.isMultipart()) throw new AppError(415, 'Unsupported media type', 'Send multipart/form-data with one file field (file)');
    const part = await req.file();
    if (!part) throw badRequest({ file: 'No file in the request' });
    const source = await saveUpload(ctx, id, { filename: part.filename, stream: part.file, truncated: () => part.file.truncated });
    await recordAudit(ctx, { action: 'data_sources.upload', resourceType: 'data_source', resourceId: id, metadata: { file_name: source.file_name, file_size: source.file_size } });
    return reply.code(200).send(source);
  });
}
