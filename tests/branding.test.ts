import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, expectError, type TestEnv } from './helpers.js';

let env: TestEnv;
let dataDir: string;
beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'agentry-branding-'));
  env = await createTestEnv({ dataDir });
});
afterAll(async () => {
  await env.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=', 'base64');
const JPEG = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]), Buffer.from('JFIF\0rest of a jpeg')]);
const WEBP = Buffer.concat([Buffer.from('RIFF'), Buffer.from([0x1a, 0, 0, 0]), Buffer.from('WEBPVP8 '), Buffer.alloc(14)]);
const SVG = Buffer.from('<?xml version="1.0" encoding="UTF-8"?>\n<!-- logo -->\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="#f60"/></svg>\n');

interface FilePart { field?: string; filename?: string; contentType?: string; content: Buffer }

/** A multipart/form-data body with the given file parts and text fields. */
function multipart(files: FilePart[], fields: Record<string, string> = {}) {
  const boundary = `----agentry${randomBytes(8).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  for (const f of files) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${f.field ?? 'file'}"; filename="${f.filename ?? 'logo.bin'}"\r\nContent-Type: ${f.contentType ?? 'application/octet-stream'}\r\n\r\n`));
    chunks.push(f.content, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

const upload = (kind: string, files: FilePart[], token = env.admin.token, fields: Record<string, string> = {}) =>
  env.request('POST', `/api/branding/logos/${kind}/`, { token, ...multipart(files, fields) });

const logosDir = () => join(dataDir, 'media', 'logos', env.orgA);
const storedFiles = () => (existsSync(logosDir()) ? readdirSync(logosDir()).sort() : []);
const pathOf = (url: string) => new URL(url).pathname;
const EMPTY_BRANDING = { logo_app_url: null, logo_square_url: null, logo_email_url: null, logo_login_url: null };

describe('branding', () => {
  it('answers exactly the documented shape, nulls when unset, for readers of the organization', async () => {
    const res = await env.request('GET', '/api/branding/', { token: env.viewer.token });
    expect(res.status).toBe(200);
    expect(res.body).toEqual(EMPTY_BRANDING);
    expect((await env.request('GET', '/api/branding/', { token: env.viewerKey })).body).toEqual(EMPTY_BRANDING);
    expectError(await env.request('GET', '/api/branding/'), 401);
  });

  it('admins set logo URLs (http/https only); members may not; other organizations are untouched', async () => {
    expectError(await env.request('PATCH', '/api/branding/', { token: env.member.token, body: { logo_app_url: 'https://cdn.example.com/a.png' } }), 403);
    const set = await env.request('PATCH', '/api/branding/', { token: env.admin.token, body: { logo_app_url: 'https://cdn.example.com/a.png', logo_login_url: 'http://cdn.example.com/login.svg' } });
    expect(set.status).toBe(200);
    expect(set.body).toEqual({ ...EMPTY_BRANDING, logo_app_url: 'https://cdn.example.com/a.png', logo_login_url: 'http://cdn.example.com/login.svg' });

    const partial = await env.request('PATCH', '/api/branding/', { token: env.adminKey, body: { logo_email_url: 'https://cdn.example.com/e.png', logo_login_url: null } });
    expect(partial.body).toEqual({ ...EMPTY_BRANDING, logo_app_url: 'https://cdn.example.com/a.png', logo_email_url: 'https://cdn.example.com/e.png' });

    for (const bad of ['javascript:alert(1)', 'ftp://cdn.example.com/a.png', '/media/logo.png', 'data:image/png;base64,AAAA', 'not a url', 42]) {
      const res = await env.request('PATCH', '/api/branding/', { token: env.admin.token, body: { logo_square_url: 'https://ok.example.com/s.png', logo_app_url: bad } });
      expectError(res, 400);
      expect(Object.keys(res.body.details)).toEqual(['logo_app_url']);
    }
    const after = await env.request('GET', '/api/branding/', { token: env.viewer.token });
    expect(after.body).toEqual(partial.body);
    expect((await env.request('GET', '/api/branding/', { token: env.otherOwner.token })).body).toEqual(EMPTY_BRANDING);
  });

  it('stores an uploaded logo and serves it publicly with its type, nosniff and a long cache', async () => {
    const res = await upload('square', [{ content: PNG, filename: 'logo.png', contentType: 'image/png' }]);
    expect(res.status).toBe(200);
    expect(res.body.logo_square_url).toMatch(new RegExp(`^http://[^/]+/media/logos/${env.orgA}/[0-9a-f]{32}\\.png$`));
    const file = pathOf(res.body.logo_square_url).split('/').pop()!;
    expect(existsSync(join(logosDir(), file))).toBe(true);
    expect((await env.request('GET', '/api/branding/', { token: env.viewer.token })).body.logo_square_url).toBe(res.body.logo_square_url);

    const served = await env.app.fastify.inject({ method: 'GET', url: pathOf(res.body.logo_square_url) });
    expect(served.statusCode).toBe(200);
    expect(served.headers['content-type']).toBe('image/png');
    expect(served.headers['x-content-type-options']).toBe('nosniff');
    expect(served.headers['cache-control']).toMatch(/max-age=31536000/);
    expect(served.rawPayload.equals(PNG)).toBe(true);

    const audit = await env.db.kysely.selectFrom('audit_logs').select(['action', 'organization_id', 'actor_id']).where('action', '=', 'branding.uploadLogo').execute();
    expect(audit).toEqual([{ action: 'branding.uploadLogo', organization_id: env.orgA, actor_id: env.admin.userId }]);
  });

  it('recognizes JPEG, WebP and SVG by their content, whatever type the client declares', async () => {
    const cases: [string, Buffer, string, string][] = [
      ['app', JPEG, 'text/plain', 'image/jpeg'],
      ['email', WEBP, 'application/octet-stream', 'image/webp'],
      ['login', SVG, 'image/png', 'image/svg+xml'],
    ];
    for (const [kind, content, declared, expected] of cases) {
      const res = await upload(kind, [{ content, contentType: declared }]);
      expect(res.status, kind).toBe(200);
      const served = await env.app.fastify.inject({ method: 'GET', url: pathOf(res.body[`logo_${kind}_url`]) });
      expect(served.headers['content-type']).toBe(expected);
      expect(served.rawPayload.equals(content)).toBe(true);
    }
  });

  it('refuses files that are not PNG, JPEG, SVG or WebP, even when declared as images, storing nothing', async () => {
    const before = storedFiles();
    const branding = (await env.request('GET', '/api/branding/', { token: env.viewer.token })).body;
    const bad: Buffer[] = [
      Buffer.from('<html><body><script>alert(1)</script></body></html>'),
      Buffer.from('GIF89a\x01\x00\x01\x00'),
      Buffer.from('%PDF-1.7'),
      Buffer.from([0x00, 0xff, 0xfe, 0x00, 0x89]),
      Buffer.alloc(0),
    ];
    for (const content of bad) {
      const res = await upload('app', [{ content, contentType: 'image/png', filename: 'logo.png' }]);
      expectError(res, 400);
      expect(res.body.details).toHaveProperty('file');
    }
    expect(storedFiles()).toEqual(before);
    expect((await env.request('GET', '/api/branding/', { token: env.viewer.token })).body).toEqual(branding);
  });

  it('refuses SVG files with scripts, event handlers, script URLs or entities', async () => {
    const before = storedFiles();
    const svgs = [
      '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
      '<svg xmlns="http://www.w3.org/2000/svg"><SCRIPT  type="text/javascript">alert(1)</SCRIPT></svg>',
      '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
      '<svg xmlns="http://www.w3.org/2000/svg"><rect\nonclick = "alert(1)"/></svg>',
      '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><a xlink:href="javascript:alert(1)"><rect/></a></svg>',
      '<svg xmlns="http://www.w3.org/2000/svg"><a href="&#106;ava&#x73;cript:alert(1)"><rect/></a></svg>',
      '<svg xmlns="http://www.w3.org/2000/svg"><a href="java\tscript:alert(1)"><rect/></a></svg>',
      '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><iframe src="https://evil.example"/></foreignObject></svg>',
      '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x "y">]><svg xmlns="http://www.w3.org/2000/svg">&x;</svg>',
      '<svg xmlns="http://www.w3.org/2000/svg"><set attributeName="href" to="javascript:alert(1)"/></svg>',
    ];
    for (const svg of svgs) {
      const res = await upload('login', [{ content: Buffer.from(svg), contentType: 'image/svg+xml', filename: 'logo.svg' }]);
      expect(res.status, svg).toBe(400);
      expectError(res, 400);
      expect(res.body.details.file).toMatch(/SVG|image/);
    }
    expect(storedFiles()).toEqual(before);
  });

  it('answers 413 above 2 MB, storing nothing', async () => {
    const before = storedFiles();
    const big = Buffer.concat([PNG, Buffer.alloc(2 * 1024 * 1024 + 1 - PNG.length)]);
    const res = await upload('app', [{ content: big, contentType: 'image/png' }]);
    expectError(res, 413);
    expect(storedFiles()).toEqual(before);
    const exact = Buffer.concat([PNG, Buffer.alloc(2 * 1024 * 1024 - PNG.length)]);
    expect((await upload('app', [{ content: exact, contentType: 'image/png' }])).status).toBe(200);
  });

  it('answers 4xx for requests that are not an upload of one logo kind', async () => {
    const json = await env.request('POST', '/api/branding/logos/app/', { token: env.admin.token, body: { file: 'x' } });
    expectError(json, 415);
    const noFile = await upload('app', [], env.admin.token, { note: 'no file here' });
    expectError(noFile, 400);
    expect(noFile.body.details).toHaveProperty('file');
    const malformed: [string, string][] = [
      ['multipart/form-data', 'garbage'],
      ['multipart/form-data; boundary=xyz', 'garbage'],
      // Cut off before the closing boundary.
      ['multipart/form-data; boundary=xyz', '--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n1234'],
    ];
    for (const [contentType, payload] of malformed) {
      const res = await env.request('POST', '/api/branding/logos/app/', { token: env.admin.token, headers: { 'content-type': contentType }, payload });
      expectError(res, 400);
      expect(res.body.details).toHaveProperty('file');
    }
    const kind = await upload('banner', [{ content: PNG }]);
    expectError(kind, 400);
    expect(kind.body.details).toHaveProperty('kind');
  });

  it('needs a token with account:write to upload', async () => {
    expectError(await upload('app', [{ content: PNG }], ''), 401);
    expectError(await upload('app', [{ content: PNG }], 'not-a-token'), 401);
    expectError(await upload('app', [{ content: PNG }], env.member.token), 403);
    expectError(await upload('app', [{ content: PNG }], env.viewerKey), 403);
    expect((await upload('app', [{ content: PNG }], env.adminKey)).status).toBe(200);
  });

  it('removes an uploaded file once no logo URL uses it', async () => {
    const first = await upload('email', [{ content: PNG }]);
    const firstFile = pathOf(first.body.logo_email_url).split('/').pop()!;
    // The same file under a second kind keeps it alive.
    await env.request('PATCH', '/api/branding/', { token: env.admin.token, body: { logo_app_url: first.body.logo_email_url } });
    const second = await upload('email', [{ content: JPEG }]);
    expect(storedFiles()).toContain(firstFile);
    await env.request('PATCH', '/api/branding/', { token: env.admin.token, body: { logo_app_url: 'https://cdn.example.com/app.png' } });
    expect(storedFiles()).not.toContain(firstFile);
    expect((await env.app.fastify.inject({ method: 'GET', url: pathOf(first.body.logo_email_url) })).statusCode).toBe(404);
    expect((await env.app.fastify.inject({ method: 'GET', url: pathOf(second.body.logo_email_url) })).statusCode).toBe(200);
  });

  it('serves nothing outside the logos directory: both path segments are checked strictly', async () => {
    const res = await upload('square', [{ content: PNG }]);
    const [, , , org, file] = pathOf(res.body.logo_square_url).split('/');
    const attempts = [
      `/media/logos/${org}/${file.toUpperCase()}`,
      `/media/logos/${org}/..%2F..%2F..%2Fjwt_secret`,
      `/media/logos/..%2F..%2F/${file}`,
      `/media/logos/${org}/${file}%00.png`,
      `/media/logos/${org}/${file.replace('.png', '.html')}`,
      `/media/logos/${org}/${'0'.repeat(32)}.png`,
      `/media/logos/${env.orgB}/${file}`,
      `/media/logos/org_x/${file}`,
      `/media/logos/${org}/.%2E%2F.%2E%2Fagentry.db`,
    ];
    for (const url of attempts) {
      const r = await env.request('GET', url);
      expect(r.status, url).toBe(404);
      expectError(r, 404);
    }
    expect((await env.request('GET', `/media/logos/${org}/${file}`)).status).toBe(200);
  });
});

describe('tracking scripts', () => {
  const EMPTY = { header_script: null, body_script: null, footer_script: null, facebook_pixel_id: null, google_analytics_id: null };

  it('answers exactly the documented shape, nulls when unset', async () => {
    const res = await env.request('GET', '/api/tracking/', { token: env.viewer.token });
    expect(res.status).toBe(200);
    expect(res.body).toEqual(EMPTY);
    expectError(await env.request('GET', '/api/tracking/'), 401);
  });

  it('admins set and clear them; members may not; organizations are separate', async () => {
    const body = {
      header_script: '<script>// Custom header script</script>', body_script: '<script>// Custom body script</script>',
      footer_script: '<script>// Custom footer script</script>', facebook_pixel_id: '123456789', google_analytics_id: 'G-ABC123XYZ9',
    };
    expectError(await env.request('PATCH', '/api/tracking/', { token: env.member.token, body }), 403);
    const set = await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body });
    expect(set.status).toBe(200);
    expect(set.body).toEqual(body);
    expect((await env.request('GET', '/api/tracking/', { token: env.viewerKey })).body).toEqual(body);

    const cleared = await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { body_script: null, facebook_pixel_id: '' } });
    expect(cleared.body).toEqual({ ...body, body_script: null, facebook_pixel_id: null });
    expect((await env.request('GET', '/api/tracking/', { token: env.otherOwner.token })).body).toEqual(EMPTY);
  });

  it('accepts the Google Analytics formats and refuses anything else', async () => {
    for (const id of ['G-ABC123XYZ9', 'GT-ABCDE12', 'UA-12345678-1']) {
      const res = await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { google_analytics_id: id } });
      expect(res.status, id).toBe(200);
      expect(res.body.google_analytics_id).toBe(id);
    }
    for (const id of ['GA-XXXXXXXXX', 'G-', 'UA-1234', 'g-abc123', 'G-ABC 123', '<script>', 'UA-12345678-1x']) {
      const res = await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { google_analytics_id: id } });
      expectError(res, 400);
      expect(Object.keys(res.body.details)).toEqual(['google_analytics_id']);
    }
    expect((await env.request('GET', '/api/tracking/', { token: env.admin.token })).body.google_analytics_id).toBe('UA-12345678-1');
  });

  it('accepts pixel ids of 5 to 20 digits only', async () => {
    for (const id of ['12345', '12345678901234567890']) {
      expect((await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { facebook_pixel_id: id } })).body.facebook_pixel_id).toBe(id);
    }
    for (const id of ['1234', '123456789012345678901', '12345a', ' 123456', 123456]) {
      const res = await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { facebook_pixel_id: id } });
      expectError(res, 400);
      expect(Object.keys(res.body.details)).toEqual(['facebook_pixel_id']);
    }
  });

  it('bounds each script to 64 KB (bytes), changing nothing when one is too long', async () => {
    const exact = 'x'.repeat(64 * 1024);
    expect((await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { header_script: exact } })).status).toBe(200);
    const before = (await env.request('GET', '/api/tracking/', { token: env.admin.token })).body;
    const tooLong = await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { header_script: 'ok', footer_script: `${exact}x` } });
    expectError(tooLong, 400);
    expect(Object.keys(tooLong.body.details)).toEqual(['footer_script']);
    const multiByte = await env.request('PATCH', '/api/tracking/', { token: env.admin.token, body: { body_script: 'é'.repeat(32 * 1024 + 1) } });
    expectError(multiByte, 400);
    expect(Object.keys(multiByte.body.details)).toEqual(['body_script']);
    expect((await env.request('GET', '/api/tracking/', { token: env.admin.token })).body).toEqual(before);
  });
});
