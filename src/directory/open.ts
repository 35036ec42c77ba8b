// Opens the configured directory backend. mysql2 is only loaded when used.
import type { Logger } from 'pino';
import type { DirectoryConfig } from '../config/load.ts';
import type { DirectoryBackend } from './types.ts';
import { YamlDirectory } from './yaml-backend.ts';

export interface OpenedDirectory extends DirectoryBackend {
  /** Start noticing outside changes (file edits, other instances' writes). */
  watch(): void;
}

export async function openDirectory(config: DirectoryConfig, log?: Logger): Promise<OpenedDirectory> {
  if (config.backend === 'yaml') return YamlDirectory.open(config.path, log);
  const { MysqlDirectory } = await import('./mysql-backend.ts');
  return MysqlDirectory.open(config, log);
}
