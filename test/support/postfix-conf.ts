// The shipped postfix-conf/main.cf, read the way Postfix reads it, so tests load it verbatim.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

export const MAIN_CF = new URL('../../postfix-conf/main.cf', import.meta.url).pathname;

/** main.cf `name = value` lines (with continuation lines), as Postfix reads them. */
export function readMainCf(path: string = MAIN_CF): Record<string, string> {
  const out: Record<string, string> = {};
  let last: string | undefined;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (/^\s*(#|$)/.test(line)) continue;
    if (/^\s/.test(line) && last) {
      out[last] += ` ${line.trim()}`;
      continue;
    }
    const m = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(line);
    assert.ok(m, `unparsable main.cf line: ${line}`);
    last = m[1]!;
    out[last] = m[2]!.trim();
  }
  return out;
}

