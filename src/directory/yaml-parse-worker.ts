// Parses the YAML directory off the daemon's main thread (a reload of 100,000
// mailboxes takes seconds, during which lookups would wait). Posts back the
// snapshot's plain data (structured clone keeps Maps and Dates) or the error.
import { parentPort, workerData } from 'node:worker_threads';
import { readSnapshot } from './yaml-backend.ts';

const path = (workerData as { path: string }).path;
try {
  parentPort!.postMessage({ ok: true, ...readSnapshot(path) });
} catch (err) {
  const e = err as Error & { code?: string };
  parentPort!.postMessage({ ok: false, code: e.code ?? 'invalid', message: e.message });
}
