// The YAML directory as a remote (MariaDB) directory looks to its callers:
// point reads only through promises (no synchronous `sync` reads), and all of
// them failing with DirectoryError('unavailable') while `down()` says so, as
// during a database outage.
import { DirectoryError, type DirectoryBackend } from '../../src/directory/types.ts';
import type { YamlDirectory } from '../../src/directory/yaml-backend.ts';

const READS = new Set(['findDomain', 'findMailbox', 'findAlias', 'findSenderGrants']);

export function asyncDirectory(inner: YamlDirectory, down: () => boolean = () => false): DirectoryBackend {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'sync') return undefined;
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (typeof prop === 'string' && READS.has(prop)) {
        return async (...args: unknown[]) => {
          if (down()) throw new DirectoryError('unavailable', 'directory: connection refused (injected)');
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  }) as unknown as DirectoryBackend;
}
