// Opens the policy state store that goes with the configured directory:
// MariaDB tables for directory.backend: mysql (shared by every instance),
// a side file next to the YAML directory otherwise (one process only).
// mysql2 is only loaded when used.
import type { Logger } from 'pino';
import type { DirectoryConfig } from '../config/load.ts';
import type { OpenedDirectory } from '../directory/open.ts';
import { DirectoryError } from '../directory/types.ts';
import { FilePolicyState, policyStatePath } from './file-store.ts';
import type { PolicyStateStore } from './types.ts';

export async function openPolicyState(config: DirectoryConfig, directory: OpenedDirectory, log?: Logger): Promise<PolicyStateStore> {
  if (directory.kind !== config.backend) {
    throw new DirectoryError('invalid', `policy state: directory is ${directory.kind} but directory.backend is ${config.backend}`);
  }
  if (config.backend === 'yaml') {
    const path = policyStatePath(config.path);
    log?.info({ path }, 'policy state in a local file (one mailwarden process only; use the mysql backend to share it)');
    return FilePolicyState.open(path, { log });
  }
  // Its own pool: MysqlDirectory keeps its pool private, and policy writes then
  // never queue behind directory listings (or the other way round).
  const { MysqlPolicyState } = await import('./mysql-store.ts');
  return MysqlPolicyState.open(config, log);
}
