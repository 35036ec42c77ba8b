// reject_sender_login_mismatch without a hand-written map: a SASL login may
// use an envelope sender it owns — its own address (with or without an
// extension), addresses of aliases that deliver to it, alias-domain
// variants, and explicit sender grants — as smtpd_sender_login_maps says.
import { addressKey, parseAddress } from '../core/address.ts';
import type { LookupService } from '../lookup/service.ts';
import { withLookups, type MapReader } from './map-reader.ts';

export interface SenderLoginVerdict {
  readonly allowed: boolean;
  /** Logins that own the sender ('' when nobody does). */
  readonly owners: string;
  readonly rule: string;
}

/** Throws DirectoryError('unavailable') when the directory cannot answer. */
export async function senderLoginAllowed(lookups: LookupService, login: string, sender: string): Promise<SenderLoginVerdict> {
  return withLookups(lookups, (read) => senderLoginWith(read, login, sender));
}

/** senderLoginAllowed over a MapReader: undefined while the owners of the sender are not at hand. */
export function senderLoginWith(read: MapReader, login: string, sender: string): SenderLoginVerdict | undefined {
  // The null sender (bounces, DSNs) belongs to nobody; Postfix does not check it either.
  if (sender === '') return { allowed: true, owners: '', rule: 'null sender' };
  const owners = read('smtpd_sender_login_maps', sender);
  if (owners === undefined) return undefined;
  if (!owners.found) return { allowed: false, owners: '', rule: owners.rule };
  const me = canonicalLogin(login);
  const allowed = owners.value!.split(',').some((o) => canonicalLogin(o) === me);
  return { allowed, owners: owners.value!, rule: owners.rule };
}

/** Logins are mailbox addresses; compare them in canonical form (case, quoting). */
function canonicalLogin(login: string): string {
  const a = parseAddress(login.trim());
  return a ? addressKey(a) : login.trim().toLowerCase();
}
