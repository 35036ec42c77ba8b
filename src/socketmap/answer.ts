// Maps a socketmap request onto the lookup service. Failures are never
// "not found": an unavailable directory answers TEMP so Postfix defers (4xx),
// an unknown map name answers PERM (a main.cf mistake, 451 4.3.5 in smtpd).
import { DirectoryError } from '../directory/types.ts';
import { isMapName, MAP_NAMES } from '../lookup/maps.ts';
import type { LookupService } from '../lookup/service.ts';
import type { SocketmapReply } from './protocol.ts';

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
