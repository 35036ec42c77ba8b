// Position-aware access to a parsed YAML document, so every validation error
// can say file:line:column.
import { isMap, isScalar, isSeq, type Document, type LineCounter, type Node, type Pair, type YAMLMap } from 'yaml';
import { parseCidr } from '../core/network.ts';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super(issues.join('\n'));
    this.issues = issues;
  }
}

export class NodeReader {
  readonly issues: string[] = [];
  readonly file: string;
  readonly doc: Document;
  readonly lines: LineCounter;

  constructor(file: string, doc: Document, lines: LineCounter) {
    this.file = file;
    this.doc = doc;
    this.lines = lines;
  }

  where(node: Node | null | undefined): string {
    const offset = node?.range?.[0];
    if (offset === undefined) return this.file;
    const pos = this.lines.linePos(offset);
    return `${this.file}:${pos.line}:${pos.col}`;
  }

  fail(node: Node | null | undefined, message: string): undefined {
    this.issues.push(`${this.where(node)}: ${message}`);
    return undefined;
  }

  /** A mapping section; reports keys not in `known` (typos are the most common config error). */
  section(parent: YAMLMap | undefined, key: string, path: string, known: readonly string[]): YAMLMap | undefined {
    const node = parent ? (parent.get(key, true) as Node | undefined) : undefined;
    if (node === undefined || node === null) return undefined;
    if (!isMap(node)) return this.fail(node, `${path} must be a mapping`);
    this.checkKeys(node, path, known);
    return node;
  }

  checkKeys(map: YAMLMap, path: string, known: readonly string[]): void {
    const seen = new Set<string>();
    for (const pair of map.items as Pair<Node, Node>[]) {
      const name = isScalar(pair.key) ? String(pair.key.value) : '?';
      if (seen.has(name)) this.fail(pair.key, `duplicate setting ${path ? `${path}.` : ''}${name}`);
      seen.add(name);
      if (!known.includes(name)) {
        this.fail(pair.key, `unknown setting ${path ? `${path}.` : ''}${name} (known: ${known.join(', ')})`);
      }
    }
  }

  node(map: YAMLMap | undefined, key: string): Node | undefined {
    const node = map?.get(key, true) as Node | null | undefined;
    return node ?? undefined;
  }

  string(map: YAMLMap | undefined, key: string, path: string): string | undefined {
    const node = this.node(map, key);
    if (node === undefined) return undefined;
    if (!isScalar(node) || (typeof node.value !== 'string' && typeof node.value !== 'number')) {
      return this.fail(node, `${path} must be a string`);
    }
    return String(node.value);
  }

  boolean(map: YAMLMap | undefined, key: string, path: string): boolean | undefined {
    const node = this.node(map, key);
    if (node === undefined) return undefined;
    if (!isScalar(node) || typeof node.value !== 'boolean') return this.fail(node, `${path} must be true or false`);
    return node.value;
  }

  integer(map: YAMLMap | undefined, key: string, path: string, min: number, max: number): number | undefined {
    const node = this.node(map, key);
    if (node === undefined) return undefined;
    const value = isScalar(node) ? node.value : undefined;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      return this.fail(node, `${path} must be an integer from ${min} to ${max}`);
    }
    return value;
  }

  /** Durations in Postfix style: `500ms`, `10s`, `5m`, `1h`, `1d`, or a bare number of seconds. */
  duration(map: YAMLMap | undefined, key: string, path: string): number | undefined {
    const node = this.node(map, key);
    if (node === undefined) return undefined;
    const ms = isScalar(node) ? parseDuration(String(node.value)) : undefined;
    if (ms === undefined) return this.fail(node, `${path} must be a duration like 500ms, 10s, 5m, 1h`);
    return ms;
  }

  /** One of a fixed set of words (an enum setting); anything else is reported and the fallback used. */
  choice<T extends string>(map: YAMLMap | undefined, key: string, path: string, allowed: readonly T[], fallback: T): T {
    const v = this.string(map, key, path);
    if (v === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(v)) {
      this.fail(this.node(map, key), `${path} must be one of ${allowed.join(', ')}`);
      return fallback;
    }
    return v as T;
  }

  /** A list of IP networks (`192.0.2.0/24`, `2001:db8::/32`, a bare address, Postfix's `[::1]/128`), normalised to `addr/prefix`. */
  cidrList(map: YAMLMap | undefined, key: string, path: string): string[] | undefined {
    const list = this.stringList(map, key, path);
    if (list === undefined) return undefined;
    const node = this.node(map, key);
    const out: string[] = [];
    for (const [i, raw] of list.entries()) {
      const c = parseCidr(raw.trim().replace(/^\[([^\]]+)\]/, '$1'));
      if (typeof c === 'string') this.fail(isSeq(node) ? (node.items[i] as Node) : node, `${path}: ${c}`);
      else out.push(`${c.address}/${c.prefix}`);
    }
    return out;
  }

  stringList(map: YAMLMap | undefined, key: string, path: string): string[] | undefined {
    const node = this.node(map, key);
    if (node === undefined) return undefined;
    if (!isSeq(node)) return this.fail(node, `${path} must be a list`);
    const out: string[] = [];
    for (const item of node.items as Node[]) {
      if (!isScalar(item) || typeof item.value !== 'string') {
        this.fail(item, `${path} entries must be strings`);
        continue;
      }
      out.push(item.value);
    }
    return out;
  }
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/.exec(text);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!);
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Byte sizes as operators write them: `500M`, `2G`, `1.5T`, `0` (unlimited), bare bytes. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const bytes = Math.round(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** The yaml library's first message line, without its own " at line L, column C:" (we print file:line:col). */
export function yamlMessage(message: string): string {
  return message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
}
