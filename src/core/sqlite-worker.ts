/**
 * Runs SQLite's slow synchronous work (the online backup, integrity checks) on worker threads.
 *
 * better-sqlite3 is synchronous: copying a 1 GB database or running integrity_check on it holds the thread
 * for seconds. On the main thread that would stall the health server and make ECS think the sidecar hung,
 * so each task gets a short-lived worker. Aborting the task terminates the worker at once. The copy and
 * its check are separate tasks so that callers can hash the copy while it is being checked.
 *
 * The worker body is a small CommonJS script passed as source (`eval: true`), with the driver's resolved
 * path, so it runs the same from `src/` under vitest and from `dist/` in production.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { IntegrityCheck } from '../config.js';
import { AbortedError, DbSyncError } from '../errors.js';

const driverPath = createRequire(import.meta.url).resolve('better-sqlite3');

/** How long a snapshot waits on a locked database before giving up (an app's write lock, a checkpoint). */
export const BUSY_TIMEOUT_MS = 30_000;

export type WorkerTask =
  { op: 'snapshot'; source: string; destination: string; busyTimeoutMs: number } | { op: 'check'; path: string; check: IntegrityCheck };

export interface CheckResult {
  /** `true` when the file is SQLite and the check found nothing. */
  readonly ok: boolean;
  /** What the check reported when not ok (first rows of quick_check, or the open error). */
  readonly problems: readonly string[];
  readonly journalMode: string | undefined;
  readonly pageCount: number | undefined;
}

export interface SnapshotWorkerResult {
  /** Journal mode of the source database (`wal`, `delete`, ...). */
  readonly sourceJournalMode: string;
}

// Written as plain CommonJS because it runs as eval'd source inside the worker.
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driverPath);
const fs = require('node:fs');

function check(path, kind) {
  let db;
  try {
    // Read-only: the checked file is hashed at the same time and installed or uploaded afterwards, byte for byte.
    db = new Database(path, { fileMustExist: true, readonly: true });
    const journalMode = String(db.pragma('journal_mode', { simple: true }));
    const pageCount = Number(db.pragma('page_count', { simple: true }));
    if (kind === 'none') {
      db.prepare('SELECT count(*) FROM sqlite_schema').get();
      return { ok: true, problems: [], journalMode, pageCount };
    }
    const pragma = kind === 'full' ? 'integrity_check(20)' : 'quick_check(20)';
    const rows = db.pragma(pragma).map((r) => String(Object.values(r)[0]));
    const ok = rows.length === 1 && rows[0] === 'ok';
    return { ok, problems: ok ? [] : rows, journalMode, pageCount };
  } catch (error) {
    return { ok: false, problems: [String((error && error.code) || 'ERROR') + ': ' + String(error && error.message)], journalMode: undefined, pageCount: undefined };
  } finally {
    if (db) db.close();
  }
}

async function snapshot(task) {
  const source = new Database(task.source, { fileMustExist: true, timeout: task.busyTimeoutMs });
  let sourceJournalMode;
  try {
    sourceJournalMode = String(source.pragma('journal_mode', { simple: true }));
    // Copy every page in one step. With the default 100 pages per step, a write from another connection
    // between steps restarts the backup; under steady writes it never finishes (measured: 31,649 restarts).
    // Create the copy owner-only (0600) before SQLite would create it 0644: it holds the whole database.
    // SQLite keeps an existing file's mode, and gives its -wal/-journal the same.
    fs.closeSync(fs.openSync(task.destination, 'wx', 0o600));
    await source.backup(task.destination, { progress: () => 0x7fffffff });
  } finally {
    source.close();
  }
  return { sourceJournalMode };
}

(async () => {
  const task = workerData.task;
  const result = task.op === 'snapshot' ? await snapshot(task) : check(task.path, task.check);
  parentPort.postMessage({ ok: true, result });
})().catch((error) => {
  parentPort.postMessage({ ok: false, error: { message: String(error && error.message), code: error && error.code } });
});
`;

/** What to do about a failed task, by SQLite result code (or errno, for the worker's own file calls). */
function sqliteHint(code: string): string | undefined {
  if (code === 'SQLITE_BUSY') return `the database stayed locked for ${BUSY_TIMEOUT_MS / 1000}s; a long write transaction is holding it`;
  if (code === 'SQLITE_NOTADB') return 'the file is not a SQLite database; check DB_LOCAL_PATH';
  if (code === 'SQLITE_FULL' || code === 'ENOSPC') {
    return "the disk is full: each snapshot needs free space about the database's size beside it; free space (db-sync retries)";
  }
  if (['SQLITE_CANTOPEN', 'SQLITE_READONLY', 'EROFS', 'EACCES', 'EPERM'].includes(code)) {
    return "db-sync writes each snapshot to a temp file beside the database: make DB_LOCAL_PATH's directory writable";
  }
  return undefined;
}

type WorkerReply<T> = { ok: true; result: T } | { ok: false; error: { message: string; code?: string } };

/**
 * Run one task on a fresh worker thread.
 * @throws AbortedError when `signal` fires (the worker is terminated); DbSyncError (`LocalDatabase`)
 *   when SQLite fails, e.g. the database is locked past the busy timeout or is not a database.
 */
export function runSqliteTask(task: Extract<WorkerTask, { op: 'snapshot' }>, signal?: AbortSignal): Promise<SnapshotWorkerResult>;
export function runSqliteTask(task: Extract<WorkerTask, { op: 'check' }>, signal?: AbortSignal): Promise<CheckResult>;
export function runSqliteTask(task: WorkerTask, signal?: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError(`${task.op} aborted`));
      return;
    }
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { driverPath, task } });
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    let aborted = false;
    const onAbort = (): void => {
      // Settle on 'exit', not now: a worker inside a native SQLite call (a whole-database backup step) keeps
      // writing until the call returns. Callers delete the task's files once this rejects; an SQLite error from
      // that inside the dying isolate aborts the whole process (FATAL ERROR: v8::ToLocalChecked Empty MaybeLocal
      // in Database::ThrowSqliteError, as in WiseLibs/better-sqlite3#842).
      aborted = true;
      void worker.terminate();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (reply: WorkerReply<unknown>) => {
      if (aborted) return;
      finish(() => {
        if (reply.ok) resolve(reply.result);
        else {
          const code = reply.error.code ?? 'SQLITE_ERROR';
          // Node's file errors already start with their code ("EROFS: read-only file system, …"); SQLite's do not.
          const message = reply.error.message.startsWith(`${code}:`) ? reply.error.message : `${code}: ${reply.error.message}`;
          reject(new DbSyncError('LocalDatabase', message, { hint: sqliteHint(code) }));
        }
      });
    });
    worker.once('error', (error) => finish(() => reject(aborted ? new AbortedError(`${task.op} aborted`, error) : error)));
    worker.once('exit', (code) =>
      finish(() =>
        reject(aborted ? new AbortedError(`${task.op} aborted`) : new Error(`sqlite worker exited with code ${code} before answering`)),
      ),
    );
  });
}
