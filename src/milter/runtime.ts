// What the milter reads from the running daemon for each message: its config
// section, the shared DNS resolver and cache, and the DKIM key store (keys
// are read from disk per signed message, so `mailwarden dkim rotate/retire`
// takes effect without a reload).
import type { Config } from '../config/load.ts';
import { dkimConfigOf } from '../dkim/config.ts';
import { DkimKeyStore } from '../dkim/keys.ts';
import type { DnsResolver } from '../dns/resolver.ts';
import type { MilterRuntime } from './session.ts';

export function milterRuntime(config: Config, resolver: DnsResolver): MilterRuntime {
  const milter = config.milter;
  if (!milter) throw new Error('milter: no milter section in the running configuration');
  const store = new DkimKeyStore(dkimConfigOf(config).keyDir);
  return { config: milter, resolver, signingKeys: (domain) => store.signingKeys(domain) };
}
