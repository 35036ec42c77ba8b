// Cleanup after crashed test processes: master processes of private Postfix
// and Dovecot instances that outlived the test that started them, and their
// temp dirs. test/run.ts calls it once a run's tests are finished.
import { readFileSync, readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

export interface StrayMasters {
  /** /proc/<pid>/comm of the master process ("master", "dovecot"). */
  comm: string;
  /** True when the process with this pid belongs to the run (reads its cmdline or environ). */
  belongsToRun: (pid: string) => boolean;
  /** Temp dir name prefix of the run's instances under os.tmpdir(). */
  tmpPrefix: string;
}

/**
 * SIGTERMs every matching master, waits up to 5 s for them to go, SIGKILLs
 * their process groups (the harnesses start each master as a group leader),
 * and removes every temp dir with the run's prefix. Returns how many masters
 * were found.
 */
export async function killStrayMasters(s: StrayMasters): Promise<number> {
  const victims: number[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync("/proc");
  } catch {
    return 0;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "latin1").trim() !== s.comm) continue;
      if (!s.belongsToRun(entry)) continue;
      process.kill(Number(entry), "SIGTERM");
      victims.push(Number(entry));
    } catch {}
  }
  // A dead master may linger as a zombie (nobody reaps orphans here): treat "Z" as gone.
  const alive = (pid: number): boolean => {
    try {
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "latin1"));
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + 5000;
  while (victims.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const pid of victims) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
  }
  for (const name of readdirSync(os.tmpdir())) {
    if (name.startsWith(s.tmpPrefix)) {
      await rm(path.join(os.tmpdir(), name), { recursive: true, force: true, maxRetries: 3, retryDelay: 100 }).catch(() => undefined);
    }
  }
  return victims.length;
}
