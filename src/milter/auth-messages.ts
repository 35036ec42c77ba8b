// The messages between the milter's worker pool (worker-pool.ts, main
// thread) and its auth workers (auth-worker.ts). Types only.
//
// Per message the main thread posts `verify` or `sign`, then the bytes as
// `chunk`s (transferred ArrayBuffers; past the first 64 KiB each asks for an
// `ack` once the worker's stream into mailauth took it, which bounds what is
// in flight), `end`, and for a verification the SPF outcome (`spf`, decided
// in the main thread). The worker answers `verdict`/`signed` or `failed`.
// DNS questions go the other way (`dns` -> `dns-answer`): the main thread's
// cached resolver answers them. `release` ends everything the worker keeps
// for a message.
//
// Every wake-up of the other thread costs (a syscall, and in a VM often an
// interrupt), so each side posts arrays: what it has for the other thread
// by the end of its event-loop turn, in one postMessage.
import type { DnsRrType } from '../dns/resolver.ts';
import type { ArcSealingKey, ArcSealOutcome, MessageAuthInput, MessageAuthVerdict, SpfOutcome } from '../checks/message-auth.ts';
import type { SignOutcome } from './dkim-sign.ts';
import type { SigningKey } from './session.ts';

/** An Error as it crosses the thread boundary (structured clone drops `code`). */
export interface WireError {
  readonly message: string;
  readonly name?: string;
  readonly code?: string;
}

/** The verification options that cross over (spfMemory stays in the main thread, the key record cache is per worker). */
export interface WireVerifyOptions {
  readonly minBitLength?: number;
  readonly rejectRsaSha1?: boolean;
  readonly prepareArcSeal?: boolean;
}

export type ToAuthWorker =
  /** `epoch`: which resolver answers (the worker caches answers per resolver, briefly). */
  | { readonly t: 'verify'; readonly id: number; readonly epoch: number; readonly input: MessageAuthInput; readonly opts: WireVerifyOptions }
  | { readonly t: 'sign'; readonly id: number; readonly keys: readonly SigningKey[] }
  /** `ack`: answer with the bytes taken so far once this chunk is taken. */
  | { readonly t: 'chunk'; readonly id: number; readonly data: ArrayBuffer; readonly ack?: true }
  | { readonly t: 'end'; readonly id: number }
  | { readonly t: 'spf'; readonly id: number; readonly spf?: SpfOutcome; readonly error?: WireError }
  /** The session is done with the message: stop its work, forget its sealing material. */
  | { readonly t: 'release'; readonly id: number }
  /** `id` is the request's; `job` the verification whose material seals. */
  | { readonly t: 'seal'; readonly id: number; readonly job: number; readonly key: ArcSealingKey; readonly signTime?: number }
  | { readonly t: 'dns-answer'; readonly id: number; readonly value?: unknown; readonly error?: WireError }
  | { readonly t: 'state'; readonly id: number }
  /** Tests only: the worker fails the way a bug would (an uncaught exception) or exits. */
  | { readonly t: 'crash'; readonly how: 'throw' | 'exit' };

/** A sealing outcome as it crosses over: `error` as a WireError. */
export type WireSealOutcome =
  | Exclude<ArcSealOutcome, { error: Error }>
  | { readonly sealed: false; readonly reason: string; readonly error: WireError };

export interface AuthWorkerState {
  /** Verifications and signings still running. */
  readonly running: number;
  /** Verifications whose ARC sealing material is kept for a seal. */
  readonly sealable: number;
  /** DKIM/ARC key records this worker has parsed (its DkimKeyRecordCache). */
  readonly keyRecords: number;
  /** DNS answers kept briefly (a DMARC check asks up to 3 names per message; the main thread's cache has them too). */
  readonly dnsAnswers: number;
  /** Imported signing keys kept, and signatures that reused one (src/checks/private-key-cache.ts). */
  readonly privateKeys: { readonly keys: number; readonly hits: number };
}

export type FromAuthWorker =
  /** All bytes of the message taken by the stream into mailauth so far. */
  | { readonly t: 'ack'; readonly id: number; readonly taken: number }
  /** `sealable`: the worker keeps the material for a seal until `release`. */
  | { readonly t: 'verdict'; readonly id: number; readonly verdict: MessageAuthVerdict; readonly sealable: boolean }
  | { readonly t: 'signed'; readonly id: number; readonly outcome: SignOutcome }
  | { readonly t: 'failed'; readonly id: number; readonly error: WireError }
  | { readonly t: 'sealed'; readonly id: number; readonly outcome: WireSealOutcome }
  | { readonly t: 'dns'; readonly id: number; readonly job: number; readonly name: string; readonly rrtype: DnsRrType }
  | { readonly t: 'state'; readonly id: number; readonly state: AuthWorkerState };

export function wireError(err: unknown): WireError {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { message: err.message, name: err.name, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { message: String(err) };
}

export function fromWireError(w: WireError): Error {
  const err = new Error(w.message);
  if (w.name && w.name !== 'Error') Object.defineProperty(err, 'name', { value: w.name, configurable: true, writable: true });
  if (w.code !== undefined) Object.assign(err, { code: w.code });
  return err;
}
