// Last login and quota usage for the YAML backend: a JSON file next to the
// directory (directory.yaml → directory.activity.json). It changes on every
// login and delivery, so it is kept apart from the directory (no reload, no
// lost comments) and written at most once a second, atomically.
import { readFileSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import type { MailboxActivity, QuotaUsageChange } from './types.ts';
import { writeFileAtomic } from './yaml-file.ts';

const FLUSH_MS = 1000;

interface StoredActivity {
  lastLogin?: string;
  lastLoginIp?: string;
  quotaBytes?: number;
  quotaMessages?: number;
}

export function activityPath(directoryPath: string): string {
  return join(dirname(directoryPath), `${basename(directoryPath, extname(directoryPath))}.activity.json`);
}

export class ActivityFile {
  readonly path: string;
  #data: Map<string, StoredActivity> | undefined;
  #timer: NodeJS.Timeout | undefined;
  onError: (err: Error) => void = () => {};

  constructor(path: string) {
    this.path = path;
  }

  #load(): Map<string, StoredActivity> {
    if (this.#data) return this.#data;
    let parsed: Record<string, StoredActivity> = {};
    try {
      parsed = JSON.parse(readFileSync(this.path, 'utf8')) as Record<string, StoredActivity>;
    } catch (err) {
      // Missing is normal; a corrupt file only loses statistics, never mail: start afresh.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.onError(err as Error);
    }
    this.#data = new Map(Object.entries(parsed));
    return this.#data;
  }

  get(address: string): MailboxActivity | undefined {
    const a = this.#load().get(address);
    if (!a) return undefined;
    return {
      ...(a.lastLogin ? { lastLogin: new Date(a.lastLogin) } : {}),
      ...(a.lastLoginIp ? { lastLoginIp: a.lastLoginIp } : {}),
      ...(a.quotaBytes !== undefined ? { quotaBytes: a.quotaBytes } : {}),
      ...(a.quotaMessages !== undefined ? { quotaMessages: a.quotaMessages } : {}),
    };
  }

  recordLogin(address: string, at: Date, ip?: string): void {
    const data = this.#load();
    const a = { ...data.get(address), lastLogin: at.toISOString() };
    if (ip) a.lastLoginIp = ip;
    data.set(address, a);
    this.#schedule();
  }

  updateQuota(address: string, change: QuotaUsageChange): 'ok' | 'notfound' {
    const data = this.#load();
    const a: StoredActivity = { ...data.get(address) };
    if (change.setBytes !== undefined) a.quotaBytes = change.setBytes;
    if (change.setMessages !== undefined) a.quotaMessages = change.setMessages;
    let result: 'ok' | 'notfound' = 'ok';
    if (change.addBytes !== undefined) {
      if (a.quotaBytes === undefined) result = 'notfound';
      else a.quotaBytes += change.addBytes;
    }
    if (change.addMessages !== undefined) {
      if (a.quotaMessages === undefined) result = 'notfound';
      else a.quotaMessages += change.addMessages;
    }
    data.set(address, a);
    this.#schedule();
    return result;
  }

  forget(address: string): void {
    if (this.#load().delete(address)) this.#schedule();
  }

  #schedule(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => this.flush(), FLUSH_MS);
    this.#timer.unref();
  }

  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#data) return;
    try {
      writeFileAtomic(this.path, `${JSON.stringify(Object.fromEntries(this.#data))}\n`);
    } catch (err) {
      this.onError(err as Error);
    }
  }
}
