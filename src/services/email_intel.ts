import { createRequire } from 'node:module';
import { domainToASCII } from 'node:url';
import type { DnsResult, MxRecord } from '../integrations/dns.js';

/**
 * E-mail intelligence: what an address's shape and its domain's DNS say about it.
 *
 * `analyzeEmail(resolver, email)` → `{ email_validity, esp, esg, flags }`, decided in this order:
 *
 * | step | condition                                                                  | email_validity | flags                      | esp / esg          |
 * |------|-----------------------------------------------------------------------------|----------------|----------------------------|--------------------|
 * | 1    | not an addr-spec (see "syntax" below)                                       | invalid        | invalid_email              | null               |
 * | 2    | domain (or a parent domain) on the disposable-email-domains list            | (see 4)        | + disposable_domain        |                    |
 * | 3    | local part (before any +tag) is a role name (info, sales, noreply…)         | (see 4)        | + role_account             |                    |
 * | 4a   | MX lookup: NXDOMAIN                                                         | invalid        | + invalid_email, no_mx     | null               |
 * | 4b   | MX lookup: a null MX (RFC 7505: one record, exchange ".")                   | invalid        | + invalid_email, no_mx     | null               |
 * | 4c   | MX lookup: no MX; A/AAAA lookup finds none (RFC 5321 §5.1 implicit MX)       | invalid        | + invalid_email, no_mx     | null               |
 * | 4d   | MX lookup: no MX, but the domain has A/AAAA (implicit MX: it receives)       | valid¹         |                            | self_hosted/other  |
 * | 4e   | MX records found                                                            | valid¹         |                            | from the MX hosts  |
 * | 4f   | DNS gave no answer (timeout, SERVFAIL…) or the time bound ran out           | unknown        | (2 and 3 still reported)   | null               |
 *
 * ¹ `risky` instead of `valid` when step 2 or 3 flagged the address. `invalid` and `unknown`
 * win over `risky`: an address whose domain cannot receive mail is invalid whatever its name,
 * and a DNS failure is reported as unknown, never guessed (the contacts re-check retries it).
 *
 * `catch_all` is a recognised validity value (accepted as a filter, listed in the options) but
 * DNS alone cannot tell that a server accepts every recipient (that takes an SMTP probe, which
 * Agentry does not send), so this module never assigns it.
 *
 * Syntax (RFC 5322 addr-spec, the practical subset): `local@domain`, one `@`; the local part a
 * dot-atom (atext characters, and any non-ASCII character as RFC 6531 allows, separated by
 * single dots, no leading or trailing dot), at most 64 octets; no quoted local parts and no
 * address literals (`[192.0.2.1]`). The domain is converted to ASCII (IDNA/punycode), then must
 * have at least two labels, each 1–63 of [a-z0-9-] not starting or ending with `-`, and a
 * top-level label that is not all digits; at most 253 octets. The whole address (local part,
 * `@` and ASCII domain) at most 254 octets.
 *
 * ESP (e-mail service provider), from the preferred (lowest priority value) MX host:
 *
 * | esp              | MX host                                                               | esg              |
 * |------------------|-----------------------------------------------------------------------|------------------|
 * | google_workspace | aspmx.l.google.com, *.google.com, *.googlemail.com                     | google           |
 * | microsoft_365    | *.mail.protection.outlook.com, *.outlook.com, *.hotmail.com            | microsoft        |
 * | yahoo            | *.yahoodns.net                                                        | yahoo            |
 * | zoho             | *.zoho.com, *.zoho.eu, *.zoho.in, *.zoho.com.au, *.zohomail.com         | other            |
 * | proton           | *.protonmail.ch, *.proton.me                                          | other            |
 * | amazon_ses       | inbound-smtp.<region>.amazonaws.com                                   | other            |
 * | fastmail         | *.messagingengine.com, *.fastmail.com                                 | other            |
 * | icloud           | *.mail.icloud.com, *.icloud.com                                       | other            |
 * | mimecast         | *.mimecast.com, *.mimecast.co.za, *.mimecast-offshore.com              | security_gateway |
 * | proofpoint       | *.pphosted.com, *.ppe-hosted.com, *.proofpoint.com                    | security_gateway |
 * | barracuda        | *.barracudanetworks.com                                               | security_gateway |
 * | self_hosted      | the e-mail's own domain, a name under it, or the same registered      | other            |
 * |                  | domain (last two labels; three under a two-letter ccTLD's short       |                  |
 * |                  | second level such as co.uk); also the implicit MX of step 4d          |                  |
 * | other            | anything else                                                         | other            |
 */

export const EMAIL_VALIDITY = ['valid', 'invalid', 'risky', 'catch_all', 'unknown'] as const;
export type EmailValidity = (typeof EMAIL_VALIDITY)[number];

export const ESPS = [
  'google_workspace', 'microsoft_365', 'yahoo', 'zoho', 'proton', 'amazon_ses', 'fastmail', 'icloud',
  'mimecast', 'proofpoint', 'barracuda', 'self_hosted', 'other',
] as const;
export type Esp = (typeof ESPS)[number];

export const ESGS = ['google', 'microsoft', 'yahoo', 'security_gateway', 'other'] as const;
export type Esg = (typeof ESGS)[number];

/** Flags this module can raise (the contacts service adds the others). */
export type EmailFlag = 'invalid_email' | 'disposable_domain' | 'role_account' | 'no_mx';

export interface EmailAnalysis {
  email_validity: EmailValidity;
  esp: Esp | null;
  esg: Esg | null;
  flags: EmailFlag[];
}

/** The part of the DNS resolver this module uses (src/integrations/dns.ts). */
export interface MxResolver {
  mx(domain: string): Promise<DnsResult<MxRecord>>;
  addresses(name: string): Promise<DnsResult<string>>;
}

// ---------------------------------------------------------------------------------------------
// Syntax

// RFC 5322 atext, plus any non-ASCII character (RFC 6531 internationalised local parts).
const ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10FFFF}-]+$/u;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export interface ParsedEmail { local: string; domain: string }

/** `local@domain` with the domain in lower-case ASCII (punycode), or null when not an addr-spec. */
export function parseEmail(email: string): ParsedEmail | null {
  const at = email.lastIndexOf('@');
  if (at <= 0 || at === email.length - 1) return null;
  const local = email.slice(0, at);
  const rawDomain = email.slice(at + 1);
  if (Buffer.byteLength(local, 'utf8') > 64) return null;
  if (!local.split('.').every((atom) => atom.length > 0 && ATOM.test(atom))) return null;
  if (rawDomain.startsWith('[') || /[\s@]/.test(rawDomain)) return null;
  const domain = domainToASCII(rawDomain.replace(/\.$/, '')).toLowerCase();
  if (!domain || domain.length > 253) return null;
  const labels = domain.split('.');
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l)) || /^\d+$/.test(labels[labels.length - 1])) return null;
  if (Buffer.byteLength(local, 'utf8') + 1 + domain.length > 254) return null;
  return { local, domain };
}

// ---------------------------------------------------------------------------------------------
// Lists

let disposable: { exact: Set<string>; wildcard: Set<string> } | null = null;

function disposableLists() {
  if (!disposable) {
    const require = createRequire(import.meta.url);
    disposable = {
      exact: new Set<string>(require('disposable-email-domains') as string[]),
      wildcard: new Set<string>(require('disposable-email-domains/wildcard.json') as string[]),
    };
  }
  return disposable;
}

/** True when the domain, or a domain it is under, is a known disposable-address provider. */
export function isDisposableDomain(domain: string): boolean {
  const { exact, wildcard } = disposableLists();
  if (exact.has(domain)) return true;
  const labels = domain.split('.');
  for (let i = 1; i < labels.length - 1; i++) {
    const parent = labels.slice(i).join('.');
    if (exact.has(parent) || wildcard.has(parent)) return true;
  }
  return wildcard.has(domain);
}

const ROLE_ACCOUNTS = new Set([
  'info', 'sales', 'support', 'admin', 'administrator', 'contact', 'contactus', 'hello', 'hi', 'team', 'office', 'billing',
  'noreply', 'no-reply', 'no_reply', 'donotreply', 'do-not-reply', 'do_not_reply', 'postmaster', 'abuse', 'webmaster',
  'hostmaster', 'help', 'helpdesk', 'marketing', 'jobs', 'careers', 'hr', 'press', 'media', 'pr', 'security', 'privacy',
  'legal', 'compliance', 'accounts', 'accounting', 'finance', 'invoices', 'invoice', 'payments', 'enquiries', 'enquiry',
  'inquiries', 'inquiry', 'feedback', 'newsletter', 'news', 'mail', 'mailer-daemon', 'service', 'services',
  'customerservice', 'customer.service', 'customercare', 'orders', 'shop', 'store', 'reception', 'general', 'all',
  'everyone', 'staff', 'it', 'root', 'sysadmin', 'devnull', 'bounce', 'bounces', 'notifications', 'alerts',
]);

/** True for role accounts: the local part before any `+tag`, case-insensitively. */
export function isRoleAccount(local: string): boolean {
  return ROLE_ACCOUNTS.has(local.toLowerCase().split('+')[0]);
}

// ---------------------------------------------------------------------------------------------
// Providers

const under = (host: string, ...suffixes: string[]) => suffixes.some((s) => host === s || host.endsWith(`.${s}`));

const ESP_RULES: Array<[Esp, (host: string) => boolean]> = [
  ['google_workspace', (h) => under(h, 'google.com', 'googlemail.com')],
  ['microsoft_365', (h) => under(h, 'outlook.com', 'hotmail.com')],
  ['yahoo', (h) => under(h, 'yahoodns.net')],
  ['zoho', (h) => under(h, 'zoho.com', 'zoho.eu', 'zoho.in', 'zoho.com.au', 'zohomail.com')],
  ['proton', (h) => under(h, 'protonmail.ch', 'proton.me')],
  ['amazon_ses', (h) => /^inbound-smtp\.[a-z0-9-]+\.amazonaws\.com$/.test(h)],
  ['fastmail', (h) => under(h, 'messagingengine.com', 'fastmail.com')],
  ['icloud', (h) => under(h, 'icloud.com')],
  ['mimecast', (h) => under(h, 'mimecast.com', 'mimecast.co.za', 'mimecast-offshore.com')],
  ['proofpoint', (h) => under(h, 'pphosted.com', 'ppe-hosted.com', 'proofpoint.com')],
  ['barracuda', (h) => under(h, 'barracudanetworks.com')],
];

const ESG_OF: Record<Esp, Esg> = {
  google_workspace: 'google', microsoft_365: 'microsoft', yahoo: 'yahoo',
  mimecast: 'security_gateway', proofpoint: 'security_gateway', barracuda: 'security_gateway',
  zoho: 'other', proton: 'other', amazon_ses: 'other', fastmail: 'other', icloud: 'other', self_hosted: 'other', other: 'other',
};

export function esgOf(esp: Esp): Esg {
  return ESG_OF[esp];
}

/** The registered domain, approximately (no public-suffix list): last two labels, three under `co.uk`-style suffixes. */
function baseDomain(domain: string): string {
  const l = domain.split('.');
  if (l.length >= 3 && l[l.length - 1].length === 2 && l[l.length - 2].length <= 3) return l.slice(-3).join('.');
  return l.slice(-2).join('.');
}

/** The ESP of a domain whose preferred MX host is `mxHost`. */
export function espOf(mxHost: string, domain: string): Esp {
  const host = mxHost.toLowerCase().replace(/\.$/, '');
  for (const [esp, test] of ESP_RULES) if (test(host)) return esp;
  if (under(host, domain) || baseDomain(host) === baseDomain(domain)) return 'self_hosted';
  return 'other';
}

// ---------------------------------------------------------------------------------------------
// Analysis

type DnsVerdict = { kind: 'mx'; host: string } | { kind: 'implicit' } | { kind: 'none' } | { kind: 'unknown' };

async function lookUp(resolver: MxResolver, domain: string): Promise<DnsVerdict> {
  const mx = await resolver.mx(domain);
  if (mx.status === 'error') return { kind: 'unknown' };
  if (mx.status === 'nxdomain') return { kind: 'none' };
  if (mx.status === 'ok') {
    const hosts = mx.records.filter((r) => r.exchange !== '' && r.exchange !== '.');
    // RFC 7505 null MX: the domain states that it accepts no mail.
    if (!hosts.length) return { kind: 'none' };
    return { kind: 'mx', host: hosts[0].exchange };
  }
  const a = await resolver.addresses(domain);
  if (a.status === 'ok') return { kind: 'implicit' };
  if (a.status === 'error') return { kind: 'unknown' };
  return { kind: 'none' };
}

export interface AnalyzeOptions {
  /** Give up on DNS after this long and answer `unknown` (the lookup goes on and fills the cache). */
  timeoutMs?: number;
}

/** Everything that can be said without DNS: syntax, disposable domain, role account. */
export function analyzeSyntax(email: string): { parsed: ParsedEmail | null; flags: EmailFlag[] } {
  const parsed = parseEmail(email.trim());
  if (!parsed) return { parsed: null, flags: ['invalid_email'] };
  const flags: EmailFlag[] = [];
  if (isDisposableDomain(parsed.domain)) flags.push('disposable_domain');
  if (isRoleAccount(parsed.local)) flags.push('role_account');
  return { parsed, flags };
}

/**
 * Validity, ESP, ESG and flags of one address (see the table at the top). `resolver` null skips
 * DNS (the answer is then `unknown` for a well-formed address).
 */
export async function analyzeEmail(resolver: MxResolver | null, email: string, opts: AnalyzeOptions = {}): Promise<EmailAnalysis> {
  const { parsed, flags } = analyzeSyntax(email);
  if (!parsed) return { email_validity: 'invalid', esp: null, esg: null, flags };
  let verdict: DnsVerdict = { kind: 'unknown' };
  if (resolver) {
    const lookup = lookUp(resolver, parsed.domain).catch((): DnsVerdict => ({ kind: 'unknown' }));
    if (opts.timeoutMs !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<DnsVerdict>((resolve) => { timer = setTimeout(() => resolve({ kind: 'unknown' }), opts.timeoutMs); });
      verdict = await Promise.race([lookup, late]);
      clearTimeout(timer);
    } else {
      verdict = await lookup;
    }
  }
  const risky = flags.length > 0;
  switch (verdict.kind) {
    case 'unknown':
      return { email_validity: 'unknown', esp: null, esg: null, flags };
    case 'none':
      return { email_validity: 'invalid', esp: null, esg: null, flags: ['invalid_email', ...flags, 'no_mx'] };
    case 'implicit':
      return { email_validity: risky ? 'risky' : 'valid', esp: 'self_hosted', esg: 'other', flags };
    case 'mx': {
      const esp = espOf(verdict.host, parsed.domain);
      return { email_validity: risky ? 'risky' : 'valid', esp, esg: esgOf(esp), flags };
    }
  }
}
