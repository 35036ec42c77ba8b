// Maps a socketmap request onto the lookup service. Failures are never
// "not found": an unavailable directory answers TEMP so Postfix defers (4xx),
// an unknown map name answers PERM (a main.cf mistake, 451 4.3.5 in smtpd).
import { DirectoryError } from '../directory/types.ts';
import { isMapName, MAP_NAMES } from '../lookup/maps.ts';
import type { LookupService } from '../lookup/service.ts';
import type { LookupResult } from '../lookup/maps.ts';
import { encodeNetstring } from './netstring.ts';
import { encodeReply, type SocketmapReply } from './protocol.ts';

export async function answerSocketmap(service: LookupService, map: string, key: string): Promise<SocketmapReply> {
  if (!isMapName(map)) return { status: 'PERM', reason: `unknown map ${map} (known: ${MAP_NAMES.join(' ')})` };
  try {
    const result = await service.lookup(map, key);
    return result.found && result.value ? { status: 'OK', data: result.value } : { status: 'NOTFOUND' };
  } catch (err) {
    if (err instanceof DirectoryError && err.temporary) return { status: 'TEMP', reason: err.message };
    throw err;
  }
}

/** Encoded replies of cached answers: a cache hit costs one Map lookup and one write, no allocation. */
const frames = new WeakMap<LookupResult, Buffer>();

/**
 * The whole reply frame for an answer known without waiting (a cache hit, an
 * in-memory directory), synchronously; undefined otherwise (the caller then
 * takes the async path, answerSocketmap).
 */
export function cachedSocketmapFrame(service: LookupService, map: string, key: string): Buffer | undefined {
  if (!isMapName(map)) return undefined;
  let hit: LookupResult | undefined;
  try {
    hit = service.answerNow(map, key);
  } catch {
    return undefined; // the async path answers it again and turns the failure into TEMP with a log line
  }
  if (!hit) return undefined;
  let frame = frames.get(hit);
  if (!frame) {
    try {
      frame = encodeNetstring(encodeReply(hit.found && hit.value ? { status: 'OK', data: hit.value } : { status: 'NOTFOUND' }));
    } catch {
      return undefined; // e.g. a value over Postfix's limit: the async path logs it and answers PERM
    }
    frames.set(hit, frame);
  }
  return frame;
}
