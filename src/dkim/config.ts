// The `dkim:` section of mailwarden.yaml. Minimal on purpose: where the keys
// live. Which domains sign is decided by which keys exist (keys.ts).
//
//   dkim:
//     key_dir: dkim        # default; relative paths are relative to the config file
import { dirname, resolve } from 'node:path';
import type { YAMLMap } from 'yaml';
import type { NodeReader } from '../config/reader.ts';

export interface DkimConfig {
  /** Absolute path of the key store (layout in keys.ts). */
  readonly keyDir: string;
}

export const DKIM_KEYS = ['key_dir'] as const;

/** The directory next to the config file, e.g. /etc/mailwarden/dkim. */
export function defaultDkimConfig(configFile: string): DkimConfig {
  return { keyDir: resolve(dirname(configFile), 'dkim') };
}

/** Always returns a config: no `dkim:` section means the default key_dir. */
export function readDkimConfig(r: NodeReader, top: YAMLMap | undefined): DkimConfig {
  const sec = r.section(top, 'dkim', 'dkim', DKIM_KEYS);
  const base = dirname(r.file);
  const text = r.string(sec, 'key_dir', 'dkim.key_dir');
  if (text === undefined) return defaultDkimConfig(r.file);
  if (text.trim() === '' || /[\0\r\n]/.test(text)) {
    r.fail(r.node(sec, 'key_dir'), 'dkim.key_dir must be a directory path');
    return defaultDkimConfig(r.file);
  }
  return { keyDir: resolve(base, text) };
}

/**
 * The DKIM settings of a loaded config. Until `dkim` is part of Config (load.ts),
 * a config without it gets the default, so the CLI works either way.
 */
export function dkimConfigOf(config: { readonly file: string; readonly dkim?: DkimConfig }): DkimConfig {
  return config.dkim ?? defaultDkimConfig(config.file);
}
