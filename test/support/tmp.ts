// Temporary directories for tests.
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

export interface TempDir {
  path: string;
  /** Removes the directory and everything in it (idempotent). */
  remove(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Creates a fresh directory under os.tmpdir() named `mailwarden-<prefix>-XXXXXX`.
 *
 * The directory is made world-traversable (0755) by default: Postfix daemons run
 * as the unprivileged `postfix` user and must be able to reach UNIX sockets
 * that a test creates inside it. Pass mode 0o700 for private material.
 *
 * Use with `await using dir = await tempDir("x")` or call remove() in an after hook.
 */
export async function tempDir(prefix = "test", mode = 0o755): Promise<TempDir> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `mailwarden-${prefix}-`));
  await chmod(dir, mode);
  const remove = async (): Promise<void> => {
    await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
  };
  return { path: dir, remove, [Symbol.asyncDispose]: remove };
}
