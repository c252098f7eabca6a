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

/**
 * SQLite result codes (with their extended forms, `SQLITE_CORRUPT_INDEX`…) that say a file's content is
 * bad. Every other failure while checking a file is local (SQLITE_IOERR_*, SQLITE_CANTOPEN, SQLITE_FULL,
 * SQLITE_NOMEM, SQLITE_READONLY_*, SQLITE_BUSY_*, errno errors) and is thrown, never reported as "not ok".
 */
export const CONTENT_ERROR_CODES = ['SQLITE_CORRUPT', 'SQLITE_NOTADB'] as const;

// Written as plain CommonJS because it runs as eval'd source inside the worker.
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driverPath);
const fs = require('node:fs');

const CONTENT_ERRORS = ${JSON.stringify(CONTENT_ERROR_CODES)};
function isContentError(code) {
  return CONTENT_ERRORS.some((base) => code === base || code.startsWith(base + '_'));
}

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
    // Only an answer about the content makes the file bad. A local failure (I/O, no space for the -shm,
    // out of memory, a lock) says nothing about the copy: rethrown, it stops the caller instead of making
    // it skip a good copy.
    const code = String((error && error.code) || '');
    if (!isContentError(code)) throw error;
    return { ok: false, problems: [code + ': ' + String(error && error.message)], journalMode: undefined, pageCount: undefined };
  } finally {
    if (db) db.close();
  }
}

// A read-only source connection can neither checkpoint nor delete the -wal when it closes (a read-write
// one, as the last connection to the file, checkpoints the WAL into the main file and deletes the -wal and
// -shm). It cannot roll back a hot journal or recover a WAL without write access either: only then does the
// snapshot fall back to a read-write connection, as the app's next open would do anyway.
const NEEDS_WRITE = ['SQLITE_READONLY_ROLLBACK', 'SQLITE_READONLY_RECOVERY', 'SQLITE_READONLY_CANTINIT', 'SQLITE_READONLY_CANTLOCK'];

async function snapshot(task) {
  try {
    return await snapshotWith(task, true);
  } catch (error) {
    if (!NEEDS_WRITE.includes(String(error && error.code))) throw error;
    try { fs.rmSync(task.destination, { force: true }); } catch {}
    return snapshotWith(task, false);
  }
}

async function snapshotWith(task, readonly) {
  const source = new Database(task.source, { fileMustExist: true, timeout: task.busyTimeoutMs, readonly });
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

/** The primary result code of an extended one: `SQLITE_IOERR_SHMSIZE` → `SQLITE_IOERR`; errno codes as they are. */
export function baseCode(code: string): string {
  return /^SQLITE_[A-Z]+/.exec(code)?.[0] ?? code;
}

const WRITABLE_DIR_HINT =
  "db-sync writes each snapshot to a temp file beside the database: make DB_LOCAL_PATH's directory writable by db-sync's user";

/**
 * What to do about a failed task, by SQLite result code (extended codes such as SQLITE_READONLY_DIRECTORY
 * or SQLITE_IOERR_SHMSIZE get their primary code's hint, or a closer one), or errno for file calls.
 */
export function sqliteHint(code: string): string | undefined {
  if (code === 'SQLITE_IOERR_SHMSIZE' || code === 'SQLITE_IOERR_SHMMAP' || code === 'SQLITE_IOERR_SHMOPEN') {
    return "SQLite could not create the 32 KiB shared-memory file (-shm) beside the database: the volume is full or does not support it; free space in DB_LOCAL_PATH's directory";
  }
  const base = baseCode(code);
  if (base === 'SQLITE_BUSY' || base === 'SQLITE_LOCKED') {
    return `the database stayed locked for ${BUSY_TIMEOUT_MS / 1000}s; a long write transaction is holding it`;
  }
  if (base === 'SQLITE_NOTADB') return 'the file is not a SQLite database; check DB_LOCAL_PATH';
  if (base === 'SQLITE_CORRUPT') return 'the database file is damaged; check it with `sqlite3 FILE "PRAGMA integrity_check"`';
  if (base === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT') {
    return "the disk is full: each snapshot needs free space about the database's size beside it; free space (db-sync retries)";
  }
  if (base === 'SQLITE_NOMEM' || code === 'ENOMEM') return 'out of memory; give the container more memory';
  if (code === 'EMFILE' || code === 'ENFILE') return 'too many open files; raise the open-file limit (ulimit -n) of the container';
  if (base === 'SQLITE_IOERR' || code === 'EIO') {
    return "a disk I/O error on the volume: check that DB_LOCAL_PATH's filesystem is healthy, not full, and supports file locks and shared memory (not a network share without locking)";
  }
  if (['SQLITE_CANTOPEN', 'SQLITE_READONLY', 'SQLITE_PERM', 'SQLITE_AUTH', 'EROFS', 'EACCES', 'EPERM'].includes(base))
    return WRITABLE_DIR_HINT;
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
