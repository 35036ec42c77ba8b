// What the milter reads from the running daemon for each message: its config
// section, the shared DNS resolver and cache, the daemon's SPF verdict memory
// (shared with the policy service), and the DKIM key store (one per key_dir,
// kept across messages: it caches the parsed keys and looks at the key
// directories at most once a second, so `mailwarden dkim rotate/retire`
// takes effect within a second without a reload). With milter.arc.seal, the
// directory's lookup service (the socketmap's) expands recipients, and the
// key store provides the sealing key. With milter.workers, the worker pool
// verifies, signs and seals (the session's verify/sign/seal/release seams).
import type { Config } from '../config/load.ts';
import { dkimConfigOf } from '../dkim/config.ts';
import { DkimKeyStore } from '../dkim/keys.ts';
import type { DnsResolver } from '../dns/resolver.ts';
import type { SpfMemory } from '../checks/spf-memory.ts';
import { forwardingOf } from '../checks/forwarding.ts';
import type { LookupService } from '../lookup/service.ts';
import type { MilterRuntime } from './session.ts';
import type { AuthWorkerPool } from './worker-pool.ts';

export function milterRuntime(config: Config, resolver: DnsResolver, spfMemory?: SpfMemory, lookups?: LookupService, pool?: AuthWorkerPool): MilterRuntime {
  const milter = config.milter;
  if (!milter) throw new Error('milter: no milter section in the running configuration');
  const store = keyStore(dkimConfigOf(config).keyDir);
  const arc = milter.arc;
  return {
    config: milter,
    resolver,
    ...(spfMemory ? { spfMemory } : {}),
    signingKeys: (domain) => store.signingKeys(domain),
    ...(arc.seal && lookups ? { forwarding: (recipient: string) => forwardingOf(lookups, recipient) } : {}),
    ...(arc.seal && arc.domain ? { arcSealingKey: () => store.sealingKey(arc.domain!, arc.selector) } : {}),
    ...(pool ? pool.hooks() : {}),
  };
}

const stores = new Map<string, DkimKeyStore>();

function keyStore(keyDir: string): DkimKeyStore {
  let store = stores.get(keyDir);
  if (!store) {
    // A handful of key_dirs over the daemon's life (one per reload that changes it, at most).
    if (stores.size >= 16) stores.clear();
    store = new DkimKeyStore(keyDir);
    stores.set(keyDir, store);
  }
  return store;
}
