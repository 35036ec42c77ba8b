// Imported signing keys, kept for the milter's signer (main thread or auth
// worker threads alike). mailauth turns the
// PEM of every key into a KeyObject again for every signature
// (tools.getPrivateKey -> crypto.createPrivateKey); OpenSSL 3's PEM decoder
// makes that about as expensive as the RSA-2048 signature itself (measured
// in-process: 1,244-1,294 -> 741-749 µs of CPU per signed message). A
// KeyObject is immutable, so the same PEM can map to the same one.
//
// mailauth's DKIM signer takes getPrivateKey from tools.js when it is loaded
// (a destructuring require), so the replacement must be in place before
// anything loads mailauth's signer: every module of ours that imports
// mailauth imports mailauth-setup.ts first (ES modules evaluate their
// imports in order), the milter's auth worker threads included. If mailauth's signer was loaded earlier anyway (a test that
// imports mailauth itself), installing does nothing and mailauth keeps its
// own behaviour: slower, never wrong.
import { createRequire } from 'node:module';
import type { KeyObject } from 'node:crypto';

/** Distinct keys kept (a few per domain we sign for; the oldest goes first). */
const MAX_KEYS = 256;

interface MailauthTools {
  getPrivateKey(key: string | Buffer): KeyObject;
}

const keys = new Map<string, KeyObject>();
let hits = 0;
let installed = false;

/** Replaces mailauth's getPrivateKey with a caching one (idempotent). Call before mailauth's signer is loaded. */
export function installPrivateKeyCache(): void {
  if (installed) return;
  installed = true;
  const require = createRequire(import.meta.url);
  // Too late: the signer already holds the original function.
  if (require.cache[require.resolve('mailauth/lib/dkim/dkim-signer.js')]) return;
  const tools = require('mailauth/lib/tools.js') as MailauthTools;
  const load = tools.getPrivateKey;
  tools.getPrivateKey = (key) => {
    const text = typeof key === 'string' ? key : key.toString('latin1');
    let object = keys.get(text);
    if (object) {
      hits++;
      return object;
    }
    // Unusable keys throw here as before (mailauth reports them per signature) and are not kept.
    object = load(key);
    if (keys.size >= MAX_KEYS) keys.delete(keys.keys().next().value!);
    keys.set(text, object);
    return object;
  };
}

/** Keys kept and signatures that reused one (tests, the worker's state). */
export function privateKeyCacheStats(): { readonly keys: number; readonly hits: number } {
  return { keys: keys.size, hits };
}
