import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { appRouter } from '../routers/index.js';
import { buildApp } from './app.js';
import { Worker } from './engine/queue.js';
import { loadConfig } from './config.js';
import { migrate, openDatabase } from './db.js';
import { restRoutes } from './http/rest.js';
import { generateOpenApi } from './openapi.js';
import { bootstrap } from './services/bootstrap.js';
import { createOrganization } from './services/organizations.js';
import { createUser } from './services/users.js';
import { AppError } from './errors.js';
import { ROLE_RANK, isBuiltinRole } from './permissions.js';
import { newId, nowIso } from './ids.js';
import { importCommand } from './cli/import.js';

const USAGE = `Usage: agentry <command> [options]

Commands:
  serve                       Start the HTTP server (default port 8000), with job workers
                              in-process unless WORKERS_IN_PROCESS=false
  worker                      Run job workers only (no HTTP), for scaling out on PostgreSQL
  migrate                     Apply pending database migrations
  create-user --username U --password P [--email E] [--org-id ID --role ROLE] [--platform-admin]
                              Create a user; with --org-id, add it to that organization
  create-org --name NAME [--owner USERNAME]
                              Create an organization, optionally owned by a user
  import contacts FILE --org-id ID [--mapping JSON] [--delimiter D] [--no-header] [--name NAME]
                              Import contacts from a CSV file (upserted by e-mail) through a
                              data source and run, with progress; --mapping is
                              {"CSV column": "contact field"} (proposed from the header if absent)
  openapi [--out FILE] [--check]
                              Write the OpenAPI document (default ./openapi.json); with
                              --check, write nothing and fail if the file is out of date

Configuration comes from environment variables; see README.md.`;

function fail(message: string): never {
  process.stderr.write(`${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function parse(args: string[], options: Record<string, { type: 'string' | 'boolean' }>) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    fail((err as Error).message);
  }
}

async function withDb<T>(fn: (db: Awaited<ReturnType<typeof openDatabase>>) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const db = await openDatabase({ url: config.databaseUrl });
  try {
    await migrate(db);
    return await fn(db);
  } finally {
    await db.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve': {
      parse(rest, {});
      const config = loadConfig();
      const app = await buildApp(config);
      const admin = await bootstrap(app.deps.db, config);
      if (admin) {
        const pw = admin.password ? `password: ${admin.password}  (shown once; set ADMIN_PASSWORD to choose it)` : 'password: from ADMIN_PASSWORD';
        process.stdout.write(`\nCreated platform admin "${admin.username}" ${pw}\n\n`);
      }
      const worker = config.inProcessWorkers ? new Worker(app.deps, { concurrency: Number(process.env.WORKER_CONCURRENCY ?? 4) }) : null;
      await app.fastify.listen({ port: config.port, host: config.host });
      await worker?.start();
      process.stdout.write(`Agentry listening on http://localhost:${config.port} (database: ${app.deps.db.dialect}${worker ? ', workers in-process' : ''})\n`);
      const stop = async () => { await worker?.stop(); await app.close(); process.exit(0); };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      return;
    }
    case 'worker': {
      parse(rest, {});
      const config = loadConfig();
      const app = await buildApp(config);
      const worker = new Worker(app.deps, { concurrency: Number(process.env.WORKER_CONCURRENCY ?? 4) });
      await worker.start();
      process.stdout.write(`Agentry worker ${worker.id} running (database: ${app.deps.db.dialect})\n`);
      const stop = async () => { await worker.stop(); await app.close(); process.exit(0); };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      return;
    }
    case 'migrate': {
      parse(rest, {});
      const applied = await withDb((db) => migrate(db));
      process.stdout.write(applied.length ? `Applied: ${applied.join(', ')}\n` : 'Up to date\n');
      return;
    }
    case 'create-user': {
      const v = parse(rest, { username: { type: 'string' }, password: { type: 'string' }, email: { type: 'string' }, 'org-id': { type: 'string' }, role: { type: 'string' }, 'platform-admin': { type: 'boolean' } });
      if (typeof v.username !== 'string' || typeof v.password !== 'string') fail('create-user needs --username and --password');
      const role = (v.role as string | undefined) ?? 'member';
      if (!isBuiltinRole(role)) fail(`--role must be one of ${Object.keys(ROLE_RANK).join(', ')}`);
      const user = await withDb(async (db) => {
        if (v['org-id']) {
          const org = await db.kysely.selectFrom('organizations').select('id').where('id', '=', v['org-id'] as string).executeTakeFirst();
          if (!org) fail(`No organization ${v['org-id']}`);
        }
        const u = await createUser(db.kysely, { username: v.username as string, password: v.password as string, email: (v.email as string) ?? null, is_platform_admin: v['platform-admin'] === true });
        if (v['org-id']) {
          const now = nowIso();
          await db.kysely.insertInto('memberships').values({ id: newId('mem'), organization_id: v['org-id'] as string, user_id: u.id, role, role_id: null, created_at: now, updated_at: now }).execute();
          await db.kysely.updateTable('users').set({ default_organization_id: v['org-id'] as string }).where('id', '=', u.id).execute();
        } else {
          await createOrganization(db.kysely, { name: `${u.username}'s organization`, ownerId: u.id });
        }
        return u;
      });
      process.stdout.write(`Created user ${user.username} (${user.id})\n`);
      return;
    }
    case 'create-org': {
      const v = parse(rest, { name: { type: 'string' }, owner: { type: 'string' } });
      if (typeof v.name !== 'string' || !v.name.trim()) fail('create-org needs --name');
      const org = await withDb(async (db) => {
        let ownerId: string | undefined;
        if (v.owner) {
          const u = await db.kysely.selectFrom('users').select('id').where('username', '=', v.owner as string).executeTakeFirst();
          if (!u) fail(`No user ${v.owner}`);
          ownerId = u.id;
        }
        return createOrganization(db.kysely, { name: (v.name as string).trim(), ownerId });
      });
      process.stdout.write(`Created organization ${org.name} (${org.id})\n`);
      return;
    }
    case 'import': {
      await importCommand(rest, fail);
      return;
    }
    case 'openapi': {
      const v = parse(rest, { out: { type: 'string' }, check: { type: 'boolean' } });
      const out = (v.out as string | undefined) ?? 'openapi.json';
      const text = JSON.stringify(generateOpenApi(restRoutes(appRouter)), null, 2) + '\n';
      if (v.check) {
        const current = existsSync(out) ? readFileSync(out, 'utf8') : '';
        if (current !== text) {
          process.stderr.write(`${out} is out of date with the routers: run \`npm run openapi\` and commit it\n`);
          process.exit(1);
        }
        process.stdout.write(`${out} is up to date\n`);
        return;
      }
      writeFileSync(out, text);
      process.stdout.write(`Wrote ${out}\n`);
      return;
    }
    case undefined: case '-h': case '--help': case 'help':
      if (command === undefined) fail('No command given');
      process.stdout.write(USAGE + '\n');
      return;
    default:
      fail(`Unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).catch((err) => {
  if (err instanceof AppError) {
    process.stderr.write(`${err.message}: ${typeof err.details === 'string' ? err.details : JSON.stringify(err.details)}\n`);
    process.exit(1);
  }
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
