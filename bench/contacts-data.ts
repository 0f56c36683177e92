/**
 * Synthetic but realistic contacts for the issue-3 benchmark: a deterministic generator (same
 * rows every run, bar the random part of the ids), the e-mail domains with their DNS (served by
 * bench/dns.ts to the app, and answered in memory while seeding), and the derived columns computed
 * with the contacts service's own functions (nameKey, normalizeEmail, dedupeKey, analyzeEmail).
 *
 * Skew, roughly: 3 % without a name, 2 % without an e-mail; ~55 % consumer mailboxes (gmail,
 * outlook, yahoo, icloud…) and ~40 % company domains (3,000 of them, Zipf-weighted, MX at Google,
 * Microsoft, Mimecast, Proofpoint, self-hosted…); 1 % disposable domains, ~1.5 % mistyped
 * domains (NXDOMAIN), 0.5 % malformed addresses; ~3 % role accounts (info@, sales@…, one per
 * domain and role); ~1 % in duplicate pairs (`jane.doe12@x` and `janedoe12+news@x`); 3 % whose
 * DNS check timed out (`unknown`); 200 cities, Zipf-weighted (the largest ~17 %), 5 % none;
 * 4 % unsubscribed, 2 % bounced; created over the last three years.
 */
import { isDisposableDomain, isRoleAccount, type MxResolver } from '../src/services/email_intel.js';

// ---- deterministic randomness ----------------------------------------------------------------

export function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)],
    chance: (p: number) => next() < p,
  };
}
export type Rng = ReturnType<typeof rng>;

/** Cumulative weights for `weighted`. */
function cumulative(weights: number[]): Float64Array {
  const c = new Float64Array(weights.length);
  let s = 0;
  for (let i = 0; i < weights.length; i++) { s += weights[i]; c[i] = s; }
  for (let i = 0; i < c.length; i++) c[i] /= s;
  return c;
}
function weighted(c: Float64Array, u: number): number {
  let lo = 0;
  let hi = c.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (c[mid] < u) lo = mid + 1; else hi = mid;
  }
  return lo;
}
const zipf = (n: number, s = 1) => Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);

// ---- vocabularies ------------------------------------------------------------------------------

const FIRST = [
  'James', 'Mary', 'John', 'Patricia', 'Robert', 'Jennifer', 'Michael', 'Linda', 'William', 'Elizabeth', 'David', 'Barbara',
  'Richard', 'Susan', 'Joseph', 'Jessica', 'Thomas', 'Sarah', 'Charles', 'Karen', 'Christopher', 'Nancy', 'Daniel', 'Lisa',
  'Matthew', 'Betty', 'Anthony', 'Margaret', 'Mark', 'Sandra', 'Donald', 'Ashley', 'Steven', 'Kimberly', 'Paul', 'Emily',
  'Andrew', 'Donna', 'Joshua', 'Michelle', 'Kenneth', 'Carol', 'Kevin', 'Amanda', 'Brian', 'Melissa', 'George', 'Deborah',
  'Timothy', 'Stephanie', 'Ronald', 'Rebecca', 'Jason', 'Sharon', 'Edward', 'Laura', 'Jeffrey', 'Cynthia', 'Ryan', 'Amy',
  'Jacob', 'Kathleen', 'Gary', 'Angela', 'Nicholas', 'Shirley', 'Eric', 'Anna', 'Jonathan', 'Brenda', 'Stephen', 'Pamela',
  'Maria', 'José', 'Juan', 'Luis', 'Carlos', 'Ana', 'Sofía', 'Lucía', 'Mateo', 'Diego', 'Valentina', 'Camila',
  'Jürgen', 'Anja', 'Lukas', 'Léa', 'Chloé', 'Zoë', 'François', 'Amélie', 'Søren', 'Åsa', 'Björn', 'Noémie',
  'Wei', 'Li', 'Hiroshi', 'Yuki', 'Aarav', 'Priya', 'Arjun', 'Ananya', 'Mohammed', 'Fatima', 'Omar', 'Aisha',
  'Olga', 'Ivan', 'Dmitri', 'Katarzyna', 'Piotr', 'Ioana', 'Andrei', 'Giulia', 'Marco', 'Francesca', 'Luca', 'Chiara',
];
const LAST = [
  'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez', 'Martinez', 'Hernandez',
  'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore', 'Jackson', 'Martin', 'Lee', 'Perez', 'Thompson',
  'White', 'Harris', 'Sanchez', 'Clark', 'Ramirez', 'Lewis', 'Robinson', 'Walker', 'Young', 'Allen', 'King', 'Wright',
  'Scott', 'Torres', 'Nguyen', 'Hill', 'Flores', 'Green', 'Adams', 'Nelson', 'Baker', 'Hall', 'Rivera', 'Campbell',
  'Mitchell', 'Carter', 'Roberts', 'Gomez', 'Phillips', 'Evans', 'Turner', 'Diaz', 'Parker', 'Cruz', 'Edwards', 'Collins',
  'Reyes', 'Stewart', 'Morris', 'Morales', 'Murphy', 'Cook', 'Rogers', 'Gutierrez', 'Ortiz', 'Morgan', 'Cooper', 'Peterson',
  'Bailey', 'Reed', 'Kelly', 'Howard', 'Ramos', 'Kim', 'Cox', 'Ward', 'Richardson', 'Watson', 'Brooks', 'Chavez', 'Wood',
  'James', 'Bennett', 'Gray', 'Mendoza', 'Ruiz', 'Hughes', 'Price', 'Alvarez', 'Castillo', 'Sanders', 'Patel', 'Myers',
  'Müller', 'Schmidt', 'Schneider', 'Fischer', 'Weber', 'Meyer', 'Wagner', 'Becker', 'Schulz', 'Hoffmann', 'Dubois',
  'Lefèvre', 'Moreau', 'Lambert', 'Rousseau', 'Fontaine', 'Jørgensen', 'Nilsson', 'Lindqvist', 'Ström', 'Rossi', 'Russo',
  'Ferrari', 'Esposito', 'Bianchi', 'Romano', 'Colombo', 'Ricci', 'Kowalski', 'Nowak', 'Wiśniewski', 'Popescu', 'Ionescu',
  'Ivanov', 'Petrov', 'Sokolov', 'Wang', 'Zhang', 'Liu', 'Chen', 'Yang', 'Huang', 'Sato', 'Suzuki', 'Takahashi', 'Tanaka',
  'Sharma', 'Singh', 'Kumar', 'Gupta', 'Khan', 'Ali', 'Hassan', 'Ibrahim', 'Okafor', 'Mensah', 'Silva', 'Santos', 'Oliveira',
  'Souza', 'Pereira', 'Costa', 'Carvalho', 'Almeida', 'Ferreira', 'Rocha', "O'Brien", 'McCarthy', 'Van der Berg', 'De Vries',
];

/** 200 cities: [city, state, country]. */
const CITY_LIST: [string, string | null, string][] = [];
{
  const us: [string, string][] = [
    ['New York', 'NY'], ['Los Angeles', 'CA'], ['Chicago', 'IL'], ['Houston', 'TX'], ['Phoenix', 'AZ'], ['Philadelphia', 'PA'],
    ['San Antonio', 'TX'], ['San Diego', 'CA'], ['Dallas', 'TX'], ['Austin', 'TX'], ['Jacksonville', 'FL'], ['San Jose', 'CA'],
    ['Fort Worth', 'TX'], ['Columbus', 'OH'], ['Charlotte', 'NC'], ['Indianapolis', 'IN'], ['San Francisco', 'CA'], ['Seattle', 'WA'],
    ['Denver', 'CO'], ['Oklahoma City', 'OK'], ['Nashville', 'TN'], ['Washington', 'DC'], ['El Paso', 'TX'], ['Las Vegas', 'NV'],
    ['Boston', 'MA'], ['Detroit', 'MI'], ['Portland', 'OR'], ['Louisville', 'KY'], ['Memphis', 'TN'], ['Baltimore', 'MD'],
    ['Milwaukee', 'WI'], ['Albuquerque', 'NM'], ['Tucson', 'AZ'], ['Fresno', 'CA'], ['Sacramento', 'CA'], ['Mesa', 'AZ'],
    ['Kansas City', 'MO'], ['Atlanta', 'GA'], ['Omaha', 'NE'], ['Colorado Springs', 'CO'], ['Raleigh', 'NC'], ['Long Beach', 'CA'],
    ['Virginia Beach', 'VA'], ['Miami', 'FL'], ['Oakland', 'CA'], ['Minneapolis', 'MN'], ['Tulsa', 'OK'], ['Bakersfield', 'CA'],
    ['Wichita', 'KS'], ['Arlington', 'TX'], ['Aurora', 'CO'], ['Tampa', 'FL'], ['New Orleans', 'LA'], ['Cleveland', 'OH'],
    ['Honolulu', 'HI'], ['Anaheim', 'CA'], ['Lexington', 'KY'], ['Stockton', 'CA'], ['Corpus Christi', 'TX'], ['Henderson', 'NV'],
    ['Riverside', 'CA'], ['Newark', 'NJ'], ['Saint Paul', 'MN'], ['Santa Ana', 'CA'], ['Cincinnati', 'OH'], ['Irvine', 'CA'],
    ['Orlando', 'FL'], ['Pittsburgh', 'PA'], ['St. Louis', 'MO'], ['Greensboro', 'NC'], ['Jersey City', 'NJ'], ['Anchorage', 'AK'],
    ['Lincoln', 'NE'], ['Plano', 'TX'], ['Durham', 'NC'], ['Buffalo', 'NY'], ['Chandler', 'AZ'], ['Chula Vista', 'CA'],
    ['Toledo', 'OH'], ['Madison', 'WI'], ['Gilbert', 'AZ'], ['Reno', 'NV'], ['Fort Wayne', 'IN'], ['North Las Vegas', 'NV'],
    ['St. Petersburg', 'FL'], ['Lubbock', 'TX'], ['Irving', 'TX'], ['Laredo', 'TX'], ['Winston-Salem', 'NC'], ['Chesapeake', 'VA'],
    ['Glendale', 'AZ'], ['Garland', 'TX'], ['Scottsdale', 'AZ'], ['Norfolk', 'VA'], ['Boise', 'ID'], ['Fremont', 'CA'],
    ['Spokane', 'WA'], ['Santa Clarita', 'CA'], ['Baton Rouge', 'LA'], ['Richmond', 'VA'], ['Hialeah', 'FL'], ['San Bernardino', 'CA'],
    ['Tacoma', 'WA'], ['Modesto', 'CA'], ['Huntsville', 'AL'], ['Des Moines', 'IA'], ['Yonkers', 'NY'], ['Rochester', 'NY'],
    ['Moreno Valley', 'CA'], ['Fayetteville', 'NC'], ['Fontana', 'CA'], ['Columbus', 'GA'], ['Worcester', 'MA'], ['Port St. Lucie', 'FL'],
    ['Little Rock', 'AR'], ['Augusta', 'GA'], ['Oxnard', 'CA'], ['Birmingham', 'AL'], ['Montgomery', 'AL'], ['Frisco', 'TX'],
  ];
  for (const [c, s] of us) CITY_LIST.push([c, s, 'United States']);
  const world: [string, string | null, string][] = [
    ['London', 'England', 'United Kingdom'], ['Manchester', 'England', 'United Kingdom'], ['Edinburgh', 'Scotland', 'United Kingdom'],
    ['Dublin', null, 'Ireland'], ['Paris', 'Île-de-France', 'France'], ['Lyon', 'Auvergne-Rhône-Alpes', 'France'], ['Marseille', null, 'France'],
    ['Berlin', null, 'Germany'], ['München', 'Bayern', 'Germany'], ['Hamburg', null, 'Germany'], ['Köln', 'Nordrhein-Westfalen', 'Germany'],
    ['Frankfurt am Main', 'Hessen', 'Germany'], ['Zürich', null, 'Switzerland'], ['Genève', null, 'Switzerland'], ['Wien', null, 'Austria'],
    ['Amsterdam', 'Noord-Holland', 'Netherlands'], ['Rotterdam', null, 'Netherlands'], ['Brussels', null, 'Belgium'], ['Antwerpen', null, 'Belgium'],
    ['Madrid', null, 'Spain'], ['Barcelona', 'Catalunya', 'Spain'], ['València', null, 'Spain'], ['Sevilla', 'Andalucía', 'Spain'],
    ['Lisboa', null, 'Portugal'], ['Porto', null, 'Portugal'], ['Roma', 'Lazio', 'Italy'], ['Milano', 'Lombardia', 'Italy'],
    ['Napoli', null, 'Italy'], ['Torino', null, 'Italy'], ['København', null, 'Denmark'], ['Stockholm', null, 'Sweden'],
    ['Göteborg', null, 'Sweden'], ['Oslo', null, 'Norway'], ['Helsinki', null, 'Finland'], ['Warszawa', null, 'Poland'],
    ['Kraków', null, 'Poland'], ['Praha', null, 'Czechia'], ['Budapest', null, 'Hungary'], ['București', null, 'Romania'],
    ['Athens', null, 'Greece'], ['İstanbul', null, 'Türkiye'], ['Tel Aviv', null, 'Israel'], ['Dubai', null, 'United Arab Emirates'],
    ['Toronto', 'ON', 'Canada'], ['Vancouver', 'BC', 'Canada'], ['Montréal', 'QC', 'Canada'], ['Calgary', 'AB', 'Canada'],
    ['Ottawa', 'ON', 'Canada'], ['Ciudad de México', null, 'Mexico'], ['Guadalajara', 'Jalisco', 'Mexico'], ['Monterrey', null, 'Mexico'],
    ['São Paulo', 'SP', 'Brazil'], ['Rio de Janeiro', 'RJ', 'Brazil'], ['Buenos Aires', null, 'Argentina'], ['Santiago', null, 'Chile'],
    ['Bogotá', null, 'Colombia'], ['Lima', null, 'Peru'], ['Sydney', 'NSW', 'Australia'], ['Melbourne', 'VIC', 'Australia'],
    ['Brisbane', 'QLD', 'Australia'], ['Auckland', null, 'New Zealand'], ['Singapore', null, 'Singapore'], ['Tokyo', null, 'Japan'],
    ['Ōsaka', null, 'Japan'], ['Seoul', null, 'South Korea'], ['Beijing', null, 'China'], ['Shanghai', null, 'China'],
    ['Shenzhen', null, 'China'], ['Hong Kong', null, 'China'], ['Taipei', null, 'Taiwan'], ['Bangalore', 'Karnataka', 'India'],
    ['Mumbai', 'Maharashtra', 'India'], ['New Delhi', 'Delhi', 'India'], ['Hyderabad', 'Telangana', 'India'], ['Chennai', 'Tamil Nadu', 'India'],
    ['Jakarta', null, 'Indonesia'], ['Manila', null, 'Philippines'], ['Bangkok', null, 'Thailand'], ['Kuala Lumpur', null, 'Malaysia'],
    ['Lagos', null, 'Nigeria'], ['Nairobi', null, 'Kenya'], ['Cape Town', null, 'South Africa'], ['Johannesburg', null, 'South Africa'],
  ];
  CITY_LIST.push(...world);
}
export const CITIES = CITY_LIST.slice(0, 200);

const TITLES = [
  'CEO', 'CTO', 'CFO', 'COO', 'VP Sales', 'VP Marketing', 'VP Engineering', 'Head of Growth', 'Marketing Manager', 'Sales Manager',
  'Account Executive', 'Sales Development Representative', 'Software Engineer', 'Senior Software Engineer', 'Product Manager',
  'Designer', 'Data Scientist', 'Operations Manager', 'HR Manager', 'Recruiter', 'Customer Success Manager', 'Founder',
  'Co-founder', 'Director of Sales', 'Director of Marketing', 'IT Manager', 'Procurement Lead', 'Consultant', 'Analyst', 'Intern',
];
const TAGS = ['customer', 'prospect', 'vip', 'newsletter', 'partner', 'lead', 'trial', 'churned', 'webinar', 'event-2024',
  'enterprise', 'smb', 'mid-market', 'priority', 'cold', 'warm', 'hot', 'referral', 'investor', 'press'];
const SOURCES = ['csv_import', 'web_form', 'api', 'manual', 'hubspot', 'salesforce', 'referral', 'event'];
const INDUSTRIES = ['Software', 'Retail', 'Finance', 'Healthcare', 'Manufacturing', 'Education', 'Logistics', 'Media', 'Energy', 'Legal'];
const REASONS = ['Opened 3 e-mails this week', 'Visited the pricing page', 'Company size matches the ideal profile', 'Replied to outreach',
  'Booked a demo', 'Clicked a link twice'];
const ROLES = ['info', 'sales', 'support', 'contact', 'hello', 'office', 'billing', 'marketing', 'admin', 'team', 'jobs', 'hr', 'press', 'accounts', 'help'];

// ---- domains and their DNS ---------------------------------------------------------------------

export type DomainKind = 'mx' | 'implicit' | 'nullmx' | 'nxdomain';
export interface DomainSpec { domain: string; kind: DomainKind; mx?: string; company?: string }

const CONSUMER: [DomainSpec, number][] = [
  [{ domain: 'gmail.com', kind: 'mx', mx: 'gmail-smtp-in.l.google.com' }, 30],
  [{ domain: 'outlook.com', kind: 'mx', mx: 'outlook-com.olc.protection.outlook.com' }, 7],
  [{ domain: 'hotmail.com', kind: 'mx', mx: 'hotmail-com.olc.protection.outlook.com' }, 5],
  [{ domain: 'yahoo.com', kind: 'mx', mx: 'mta5.am0.yahoodns.net' }, 6],
  [{ domain: 'icloud.com', kind: 'mx', mx: 'mx01.mail.icloud.com' }, 3],
  [{ domain: 'proton.me', kind: 'mx', mx: 'mail.protonmail.ch' }, 1],
  [{ domain: 'fastmail.com', kind: 'mx', mx: 'in1-smtp.messagingengine.com' }, 0.5],
  [{ domain: 'zohomail.com', kind: 'mx', mx: 'mx.zoho.com' }, 0.5],
  [{ domain: 'aol.com', kind: 'mx', mx: 'mx-aol.mail.gm0.yahoodns.net' }, 1],
  [{ domain: 'gmx.de', kind: 'mx', mx: 'mx00.gmx.net' }, 1],
];
const DISPOSABLE: DomainSpec[] = ['mailinator.com', 'guerrillamail.com', 'yopmail.com', '10minutemail.com']
  .map((domain) => ({ domain, kind: 'mx' as const, mx: `mx.${domain}` }));
const TYPOS: DomainSpec[] = ['gmial.com', 'gmai.com', 'hotmial.com', 'yahooo.com', 'outlok.com', 'iclod.com']
  .map((domain) => ({ domain, kind: 'nxdomain' as const }));

const CO_A = ['north', 'blue', 'bright', 'silver', 'red', 'green', 'iron', 'summit', 'river', 'stone', 'cedar', 'pine', 'harbor',
  'falcon', 'eagle', 'atlas', 'nova', 'apex', 'vertex', 'quantum', 'pixel', 'cloud', 'data', 'smart', 'prime', 'alpha', 'delta',
  'omega', 'sun', 'moon', 'star', 'oak', 'maple', 'lake', 'ocean', 'coast', 'valley', 'metro', 'urban', 'global', 'bold', 'swift',
  'clear', 'true', 'core', 'zen', 'echo', 'polar', 'terra', 'luna', 'orbit', 'spark', 'forge', 'beacon', 'anchor', 'crest',
  'pioneer', 'frontier', 'horizon', 'keystone'];
const CO_B = ['works', 'labs', 'systems', 'logistics', 'partners', 'analytics', 'health', 'foods', 'capital', 'media', 'studio',
  'tech', 'soft', 'ware', 'dynamics', 'solutions', 'group', 'holdings', 'ventures', 'retail', 'energy', 'bio', 'robotics',
  'motors', 'foundry', 'digital', 'networks', 'security', 'legal', 'learning', 'travel', 'design', 'supply', 'markets',
  'finance', 'insurance', 'realty', 'homes', 'outdoors', 'apparel', 'games', 'pay', 'ai', 'cloud', 'data', 'mobile', 'devices',
  'consulting', 'agency', 'printing'];
const TLDS = ['com', 'com', 'com', 'io', 'co', 'net', 'de', 'co.uk', 'fr', 'ai'];
const title = (w: string) => w[0].toUpperCase() + w.slice(1);

/** Company domains: 3,000, with where their mail goes. */
function companyDomains(r: Rng): DomainSpec[] {
  const out: DomainSpec[] = [];
  const seen = new Set<string>();
  const providers: [number, (d: string, i: number) => Omit<DomainSpec, 'domain' | 'company'>][] = [
    [40, () => ({ kind: 'mx', mx: 'aspmx.l.google.com' })],
    [33, (d) => ({ kind: 'mx', mx: `${d.replace(/\./g, '-')}.mail.protection.outlook.com` })],
    [8, (d) => ({ kind: 'mx', mx: `mail.${d}` })],
    [4, (_d, i) => ({ kind: 'mx', mx: `us-smtp-inbound-${1 + (i % 2)}.mimecast.com` })],
    [4, (_d, i) => ({ kind: 'mx', mx: `mx0a-00${100000 + i}.pphosted.com` })],
    [2, (_d, i) => ({ kind: 'mx', mx: `d${i}.ess.barracudanetworks.com` })],
    [2, () => ({ kind: 'mx', mx: 'mx.zoho.com' })],
    [1, () => ({ kind: 'mx', mx: 'inbound-smtp.us-east-1.amazonaws.com' })],
    [4, (_d, i) => ({ kind: 'mx', mx: `mx${i % 3}.mailhosting-${i % 7}.net` })],
    [1.5, () => ({ kind: 'implicit' })],
    [0.5, () => ({ kind: 'nullmx' })],
  ];
  const c = cumulative(providers.map((p) => p[0]));
  for (let i = 0; out.length < 3000; i++) {
    const a = r.pick(CO_A);
    const b = r.pick(CO_B);
    const tld = r.pick(TLDS);
    const domain = `${a}${r.chance(0.3) ? '-' : ''}${b}.${tld}`;
    if (seen.has(domain) || isDisposableDomain(domain)) continue;
    seen.add(domain);
    out.push({ domain, company: `${title(a)}${title(b)}`, ...providers[weighted(c, r.next())][1](domain, i) });
  }
  return out;
}

export interface World {
  consumer: DomainSpec[];
  consumerCum: Float64Array;
  companies: DomainSpec[];
  companyCum: Float64Array;
  disposable: DomainSpec[];
  typos: DomainSpec[];
  byDomain: Map<string, DomainSpec>;
}

export function world(): World {
  for (const d of DISPOSABLE) if (!isDisposableDomain(d.domain)) throw new Error(`${d.domain} is not on the disposable list any more`);
  const companies = companyDomains(rng(7));
  const all = [...CONSUMER.map((c) => c[0]), ...DISPOSABLE, ...TYPOS, ...companies];
  return {
    consumer: CONSUMER.map((c) => c[0]), consumerCum: cumulative(CONSUMER.map((c) => c[1])),
    companies, companyCum: cumulative(zipf(companies.length, 0.8)),
    disposable: DISPOSABLE, typos: TYPOS,
    byDomain: new Map(all.map((d) => [d.domain, d])),
  };
}

/** DNS zones for bench/dns.ts: every domain that exists, with its MX (or A) records. */
export function zones(w: World): Map<string, { MX?: { exchange: string; priority: number }[]; A?: string[] }> {
  const z = new Map<string, { MX?: { exchange: string; priority: number }[]; A?: string[] }>();
  for (const d of w.byDomain.values()) {
    if (d.kind === 'mx') z.set(d.domain, { MX: [{ exchange: d.mx!, priority: 10 }] });
    else if (d.kind === 'implicit') z.set(d.domain, { A: ['192.0.2.10'] });
    else if (d.kind === 'nullmx') z.set(d.domain, { MX: [{ exchange: '.', priority: 0 }] });
  }
  return z;
}

/** The same answers in memory (seeding): what the app's resolver would get from bench/dns.ts. */
export function memoryResolver(w: World): MxResolver {
  return {
    mx: async (domain) => {
      const d = w.byDomain.get(domain);
      if (!d || d.kind === 'nxdomain') return { status: 'nxdomain' };
      if (d.kind === 'implicit') return { status: 'nodata' };
      if (d.kind === 'nullmx') return { status: 'ok', records: [{ exchange: '', priority: 0 }] };
      return { status: 'ok', records: [{ exchange: d.mx!, priority: 10 }] };
    },
    addresses: async (name) => {
      const d = w.byDomain.get(name);
      if (!d || d.kind === 'nxdomain') return { status: 'nxdomain' };
      return d.kind === 'implicit' ? { status: 'ok', records: ['192.0.2.10'] } : { status: 'nodata' };
    },
  };
}

// ---- contacts ----------------------------------------------------------------------------------

/** A contact as a client or an import would send it, plus what happened at its last write. */
export interface GenContact {
  input: {
    name: string | null; email: string | null; phone: string | null; company: string | null; title: string | null;
    city: string | null; state: string | null; country: string | null; tags: string[];
    custom_fields: Record<string, string | number | boolean | null>; source: string | null; lead_score: number | null;
    lead_score_reasons: string[]; unsubscribed: boolean; bounced: boolean;
  };
  /** Domain of the e-mail (null when there is none or it is malformed). */
  domain: string | null;
  /** The DNS check at the last write timed out (stored `unknown`). */
  dnsUnknown: boolean;
  /** One of a duplicate pair (same e-mail once lower-cased, dots and +tag removed). */
  duplicate: boolean;
}

const ascii = (s: string) => s.normalize('NFKD').replace(/\p{M}+/gu, '').toLowerCase().replace(/[^a-z]/g, '');

/**
 * Contact number `i` of a stream (call in order: duplicate pairs are planned ahead). `offset`
 * makes numbers (hence e-mails) of another stream distinct, e.g. the import file's new rows.
 */
export class ContactStream {
  private r: Rng;
  private cityCum = cumulative(zipf(200, 1));
  private pendingTwins = new Map<number, { local: string; domain: string; first: string; last: string }>();
  private rolesUsed = new Set<string>();
  /**
   * `total`: how many will be drawn (a pair's second half must fall inside); `offset` numbers the
   * contacts (their e-mails carry the number); `chunk`: this stream is chunk `index` of `count`
   * independent streams (see streamChunk).
   */
  constructor(private w: World, seed: number, private total: number, private offset = 0, private chunk = { index: 0, count: 1 }) {
    this.r = rng(seed);
  }

  private owns(key: string): boolean {
    if (this.chunk.count === 1) return true;
    let h = 0;
    for (let k = 0; k < key.length; k++) h = (Math.imul(h, 31) + key.charCodeAt(k)) >>> 0;
    return h % this.chunk.count === this.chunk.index;
  }

  next(i: number): GenContact {
    const r = this.r;
    const n = i + this.offset;
    const twin = this.pendingTwins.get(i);
    if (twin) this.pendingTwins.delete(i);
    let first = twin?.first ?? r.pick(FIRST);
    let last = twin?.last ?? r.pick(LAST);
    let name: string | null = `${first} ${last}`;
    let email: string | null = null;
    let domain: string | null = null;
    let company: string | null = null;
    let dnsUnknown = false;
    let duplicate = !!twin;

    if (twin) {
      // The other half of a duplicate pair: the same mailbox written another way.
      email = r.chance(0.5) ? `${twin.local.replace(/\./g, '')}+news@${twin.domain}` : `${twin.local.replace(/\./g, '')}@${twin.domain}`;
      domain = twin.domain;
    } else if (!r.chance(0.02)) {
      const u = r.next();
      let d: DomainSpec;
      if (u < 0.55) d = this.w.consumer[weighted(this.w.consumerCum, r.next())];
      else if (u < 0.96) d = this.w.companies[weighted(this.w.companyCum, r.next())];
      else if (u < 0.97) d = r.pick(this.w.disposable);
      else if (u < 0.985) d = r.pick(this.w.typos);
      else d = this.w.consumer[0];
      domain = d.domain;
      company = d.company ?? null;
      const base = `${ascii(first)}.${ascii(last)}${n}`;
      let local = base;
      if (d.company && r.chance(0.07)) {
        // One mailbox per (role, domain): each pair belongs to one chunk of the stream, so that
        // chunks generated apart never write the same address twice.
        const role = r.pick(ROLES);
        const key = `${role}@${d.domain}`;
        if (!this.rolesUsed.has(key) && this.owns(key)) { this.rolesUsed.add(key); local = role; }
      }
      if (u >= 0.995) {
        // Malformed: a doubled dot, or no @ at all.
        email = r.chance(0.5) ? `${ascii(first)}..${ascii(last)}${n}@${d.domain}` : `${base}.${d.domain}`;
        domain = null;
      } else {
        email = `${local}@${d.domain}`;
        if (r.chance(0.08)) email = `${local[0].toUpperCase()}${local.slice(1)}@${d.domain[0].toUpperCase()}${d.domain.slice(1)}`;
        if (local === base && d.kind !== 'nxdomain' && !this.w.disposable.includes(d) && r.chance(0.005)) {
          // Its twin comes a little later.
          let at = i + 1 + r.int(500);
          while (this.pendingTwins.has(at)) at++;
          if (at < this.total) {
            this.pendingTwins.set(at, { local: base, domain: d.domain, first, last });
            duplicate = true;
          }
        }
        dnsUnknown = r.chance(0.03);
      }
      if (local !== base && r.chance(0.5)) name = null; // role mailboxes often have no person's name
    }
    if (name && email && r.chance(0.03)) name = null;
    if (!name && !email) { first = r.pick(FIRST); last = r.pick(LAST); name = `${first} ${last}`; }

    const city = r.chance(0.05) ? null : CITIES[weighted(this.cityCum, r.next())];
    const tagCount = r.chance(0.4) ? 0 : 1 + r.int(3);
    const tags = [...new Set(Array.from({ length: tagCount }, () => r.pick(TAGS)))];
    const custom: Record<string, string | number | boolean | null> = {};
    if (r.chance(0.3)) custom.industry = r.pick(INDUSTRIES);
    if (r.chance(0.1)) custom.employees = 10 * (1 + r.int(500));
    if (r.chance(0.05)) custom.newsletter = r.chance(0.5);
    const scored = r.chance(0.6);
    let jobTitle: string | null = r.chance(0.6) ? r.pick(TITLES) : null;
    if (jobTitle && r.chance(0.001)) jobTitle = `- ${jobTitle}`; // a cell an export must escape
    return {
      input: {
        name, email,
        phone: r.chance(0.7) ? `+1 555-${String(100 + r.int(900))}-${String(1000 + r.int(9000))}` : null,
        company: company ?? (r.chance(0.5) ? `${title(r.pick(CO_A))}${title(r.pick(CO_B))}` : null),
        title: jobTitle,
        city: city?.[0] ?? null, state: city?.[1] ?? null, country: city?.[2] ?? null,
        tags, custom_fields: custom,
        source: r.chance(0.1) ? null : r.pick(SOURCES),
        lead_score: scored ? r.int(101) : null,
        lead_score_reasons: scored && r.chance(0.5) ? [r.pick(REASONS), r.pick(REASONS)].filter((x, k, a) => a.indexOf(x) === k) : [],
        unsubscribed: r.chance(0.04),
        bounced: r.chance(domain && this.w.byDomain.get(domain)?.kind === 'nxdomain' ? 0.5 : 0.015),
      },
      domain, dnsUnknown, duplicate,
    };
  }
}

export { isRoleAccount };

/** Rows per chunk: a seeded organization is a sequence of independent chunks (generated in parallel). */
export const CHUNK = 25_000;

/** The stream of chunk `index` of a `total`-contact seed with random seed `seed`. */
export function streamChunk(w: World, seed: number, total: number, index: number): ContactStream {
  const count = Math.ceil(total / CHUNK);
  return new ContactStream(w, seed * 1_000_003 + index, Math.min(CHUNK, total - index * CHUNK), index * CHUNK, { index, count });
}
