// The user directory: entities and the interface both backends implement.
// All names and addresses are stored in canonical form (see core/address.ts):
// domains as lower-case A-labels, addresses as `local@domain`, catch-alls as `@domain`.

export interface Domain {
  readonly name: string;
  /** Set for an alias domain: every address here maps to the same local part at `aliasFor`. */
  readonly aliasFor?: string;
  readonly enabled: boolean;
  readonly description?: string;
  readonly created: Date;
  readonly updated: Date;
}

export interface Mailbox {
  /** `local@domain` */
  readonly address: string;
  readonly domain: string;
  readonly name?: string;
  /** `{SCHEME}…` as Dovecot understands it; absent = no password login. */
  readonly passwordHash?: string;
  /** Storage quota in bytes; 0 = unlimited. */
  readonly quotaBytes: number;
  readonly enabled: boolean;
  readonly created: Date;
  readonly updated: Date;
}

export interface Alias {
  /** `local@domain`, or `@domain` for a catch-all. */
  readonly address: string;
  readonly domain: string;
  /** Canonical target addresses, local or foreign. */
  readonly targets: readonly string[];
  readonly enabled: boolean;
  readonly created: Date;
  readonly updated: Date;
}

/** Extra right for a SASL login to use an envelope sender (an address or `@domain`). */
export interface SenderGrant {
  readonly address: string;
  readonly login: string;
  readonly created: Date;
}

/** What Dovecot reports back about a mailbox (dict: last_login, quota usage). Never bumps the change serial. */
export interface MailboxActivity {
  readonly lastLogin?: Date;
  readonly lastLoginIp?: string;
  /** Quota usage as Dovecot counts it (priv/quota/storage, priv/quota/messages). */
  readonly quotaBytes?: number;
  readonly quotaMessages?: number;
}

/** A quota usage change: `set` from quota_clone / recalculation, `add` from the quota dict's atomic increments. */
export interface QuotaUsageChange {
  readonly setBytes?: number;
  readonly setMessages?: number;
  readonly addBytes?: number;
  readonly addMessages?: number;
}

export type MailboxPatch = Partial<Pick<Mailbox, 'name' | 'quotaBytes' | 'enabled'>> & { passwordHash?: string | null };
export type DomainPatch = Partial<Pick<Domain, 'enabled'>> & { description?: string | null };
export type AliasPatch = Partial<Pick<Alias, 'targets' | 'enabled'>>;

/** The rows a write touched, as the MySQL change log records them (name: an address, `@domain` or a domain name). */
export type ChangeKind = 'domain' | 'mailbox' | 'alias' | 'grant';
export interface ChangedKey {
  readonly kind: ChangeKind;
  /**
   * mailbox, alias: its address; grant: the granted address (`x@domain` or `@domain`);
   * domain: the domain name, standing for its row and everything in the domain (a delete cascades).
   */
  readonly name: string;
}

/** What a directory change may have touched: everything (a file reload, a gap in the change log) or these rows. */
export type DirectoryChange = { readonly all: true } | { readonly all: false; readonly keys: readonly ChangedKey[] };

export const ALL_CHANGED: DirectoryChange = Object.freeze({ all: true as const });

/**
 * True when a cache of answers must drop everything: no details, "everything
 * changed", or a domain changed (a domain stands for all its rows; rare).
 */
export function dropsEveryAnswer(change: DirectoryChange | undefined): change is { readonly all: true } | undefined {
  return !change || change.all || change.keys.some((k) => k.kind === 'domain');
}

/** Point reads on the hot path (socketmap, policy, auth). */
export interface DirectoryReader {
  findDomain(name: string): Promise<Domain | undefined>;
  findMailbox(address: string): Promise<Mailbox | undefined>;
  findAlias(address: string): Promise<Alias | undefined>;
  /** Grants whose address is exactly `address` (an address or `@domain`). */
  findSenderGrants(address: string): Promise<readonly SenderGrant[]>;
}

/**
 * Keyset-paginated reads of whole tables in key order, for caches that preload
 * the directory: each call returns up to `limit` rows after `after` ('' = from the start).
 */
export interface DirectoryPages {
  pageDomains(after: string, limit: number): Promise<Domain[]>;
  pageMailboxes(after: string, limit: number): Promise<Mailbox[]>;
  pageAliases(after: string, limit: number): Promise<Alias[]>;
  pageSenderGrants(after: { readonly address: string; readonly login: string }, limit: number): Promise<SenderGrant[]>;
}

export interface DomainUsage {
  readonly mailboxes: number;
  readonly aliases: number;
  readonly aliasDomains: number;
}

/**
 * A directory backend. Writes enforce uniqueness (DirectoryError 'exists') and
 * report missing rows (DirectoryError 'not_found'); referential rules (a
 * mailbox needs its domain...) live in admin.ts so both backends agree.
 * Anything the backend cannot answer right now throws DirectoryError 'unavailable'.
 */
export interface DirectoryBackend extends DirectoryReader {
  readonly kind: 'yaml' | 'mysql';
  /** True when point reads cost a round trip, so callers should cache answers. */
  readonly remote: boolean;

  listDomains(): Promise<Domain[]>;
  listMailboxes(domain?: string): Promise<Mailbox[]>;
  listAliases(domain?: string): Promise<Alias[]>;
  listSenderGrants(): Promise<SenderGrant[]>;
  domainUsage(name: string): Promise<DomainUsage>;

  insertDomain(domain: Domain): Promise<void>;
  updateDomain(name: string, patch: DomainPatch): Promise<void>;
  /** Deletes the domain and everything in it (mailboxes, aliases, grants, alias domains pointing to it). */
  deleteDomain(name: string): Promise<void>;
  insertMailbox(mailbox: Mailbox): Promise<void>;
  updateMailbox(address: string, patch: MailboxPatch): Promise<void>;
  deleteMailbox(address: string): Promise<void>;
  insertAlias(alias: Alias): Promise<void>;
  updateAlias(address: string, patch: AliasPatch): Promise<void>;
  deleteAlias(address: string): Promise<void>;
  insertSenderGrant(grant: SenderGrant): Promise<void>;
  deleteSenderGrant(address: string, login: string): Promise<void>;

  getActivity(address: string): Promise<MailboxActivity | undefined>;
  recordLogin(address: string, at: Date, ip?: string): Promise<void>;
  /** 'notfound' when an increment hits a counter that was never set (Dovecot then recalculates). */
  updateQuotaUsage(address: string, change: QuotaUsageChange): Promise<'ok' | 'notfound'>;

  /** Called whenever the data may have changed (file replaced, change serial bumped), with what changed. */
  onChange(listener: (change: DirectoryChange) => void): void;
  close(): Promise<void>;
}

export type DirectoryErrorCode = 'exists' | 'not_found' | 'invalid' | 'unavailable';

export class DirectoryError extends Error {
  override readonly name = 'DirectoryError';
  readonly code: DirectoryErrorCode;
  constructor(code: DirectoryErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** Temporary failures must become TEMP / DEFER / tempfail at every protocol edge. */
  get temporary(): boolean {
    return this.code === 'unavailable';
  }
}
