// Imported before 'mailauth' by every module of ours that uses it: mailauth's
// DKIM signer takes tools.getPrivateKey when it is loaded, so the cache of
// imported signing keys (private-key-cache.ts) must be in place
// first. Without it every signature re-imports the PEM, which costs about as
// much as the RSA signature itself.
import { installPrivateKeyCache } from './private-key-cache.ts';

installPrivateKeyCache();
