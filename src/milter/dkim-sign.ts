// DKIM signing of one outbound message with mailauth: the default signer of
// the milter session (MilterRuntime.sign), and what the auth worker threads
// run for it (src/milter/auth-worker.ts).
import type { Readable } from 'node:stream';
import '../checks/mailauth-setup.ts'; // before mailauth: see the file
import { dkimSign } from 'mailauth';
import type { SigningKey } from './session.ts';

/** What the signer returns. */
export interface SignOutcome {
  /** The DKIM-Signature fields, CRLF-folded, each ending in CRLF ('' when no key could sign). */
  readonly signatures: string;
  /** Keys mailauth could not sign with: `{ selector, signingDomain, err: { message } }` each. */
  readonly errors: readonly unknown[];
}

/** Signs the message read from `message` with every key (one DKIM-Signature each). */
export function signMessage(message: Readable | Buffer, keys: readonly SigningKey[]): Promise<SignOutcome> {
  // The top-level signingDomain/selector/privateKey the typings demand would sign nothing
  // (libraries.md §0.6): signatureData is what mailauth reads.
  const options = {
    signatureData: keys.map((k) => ({ signingDomain: k.domain, selector: k.selector, privateKey: k.privateKeyPem, algorithm: k.algorithm })),
  } as unknown as Parameters<typeof dkimSign>[1];
  return dkimSign(message, options) as Promise<SignOutcome>;
}
