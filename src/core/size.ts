// Byte sizes as operators write them (Dovecot/Postfix habits: 500M, 2G).
export { parseSize } from '../config/reader.ts';

const UNITS = ['T', 'G', 'M', 'K'] as const;
const FACTOR = { T: 1024 ** 4, G: 1024 ** 3, M: 1024 ** 2, K: 1024 } as const;

/** Shortest exact form: 2147483648 → "2G", 1500 → "1500". */
export function formatSize(bytes: number): string {
  if (bytes === 0) return '0';
  for (const unit of UNITS) {
    if (bytes % FACTOR[unit] === 0) return `${bytes / FACTOR[unit]}${unit}`;
  }
  return String(bytes);
}
