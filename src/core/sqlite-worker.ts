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
import { Pacer, pauseAfter } from './pacer.js';

const driverPath = createRequire(import.meta.url).resolve('better-sqlite3');

/** How long a snapshot waits on a locked database before giving up (an app's write lock, a checkpoint). */
export const BUSY_TIMEOUT_MS = 30_000;

/** WAL snapshots copy this much per backup step, then flush it, so the copy's writeback comes in small pieces. */
export const SNAPSHOT_STEP_BYTES = 8 * 1024 * 1024;
/**
 * Paced copies (the app runs, nobody waits) step and flush this much at a time instead. Each flush makes the
 * app's next commit fsync wait for it (ext4 data=ordered: the journal commit writes the flushed data first), so
 * the smaller the flush, the shorter that wait. Measured on a 200 MB database under 200 commits/s, p99 of the
 * app's commits during the paced copy over its p99 outside it, same run: 8 MiB x1.4-2.0 (median x1.6, 7 runs),
 * 1 MiB x1.0-1.3 (median x1.05, 7 runs with or without the check after it; one more run, overlapped by a test
 * suite, x1.75). It costs about 30 % more copy time (unpaced 200 MB: 0.6 s at 8 MiB, 0.8 s at 1 MiB), which is
 * why unpaced copies, which someone waits for, keep 8 MiB.
 */
export const PACED_STEP_BYTES = 1024 * 1024;

/** The backup step (and flush) size for a copy at `pace` (pacer.ts: absent or 1 is unpaced). */
export function stepBytesFor(pace: number | undefined): number {
  return new Pacer(pace).active ? PACED_STEP_BYTES : SNAPSHOT_STEP_BYTES;
}
/** Rollback-journal snapshots read, compare and write the database in chunks of this size. */
export const SNAPSHOT_CHUNK_BYTES = 4 * 1024 * 1024;
/** Nice value of a snapshot's copy and check threads (Linux), so the app's threads win the cores meanwhile. */
export const SNAPSHOT_NICENESS = 10;

export interface SnapshotTask {
  op: 'snapshot';
  source: string;
  destination: string;
  busyTimeoutMs: number;
  /** Default {@link stepBytesFor} the task's pace. */
  stepBytes?: number;
  /** Default {@link SNAPSHOT_CHUNK_BYTES}. */
  chunkBytes?: number;
  /** Nice value for the copying thread, default {@link SNAPSHOT_NICENESS}; 0 keeps the normal priority. */
  niceness?: number;
  /**
   * Share of the time the copy may work (pacer.ts), 0 < pace ≤ 1; absent or 1: as fast as it can. Only the
   * WAL copy and the rollback mode's unlocked pass are paced, never the locked pass.
   */
  pace?: number | undefined;
}

export type WorkerTask = SnapshotTask | { op: 'check'; path: string; check: IntegrityCheck; niceness?: number };

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
  /** Rollback-journal mode: how long the copy held the SHARED lock (writers wait meanwhile), in ms. */
  readonly sharedLockMs?: number;
  /** Rollback-journal mode: bytes the locked pass rewrote (written by the app during the unlocked copy). */
  readonly rewrittenBytes?: number;
}

/**
 * Page cache of the worker's connections, as PRAGMA cache_size (negative: KiB). better-sqlite3 builds SQLite
 * with a 16 MB default per connection, and a copy or a check reads every page once, so a large cache only
 * holds memory. Measured: peak RSS of a 200 MB `upload` to a directory replica 136 → 122 MB, `download` 112 → 107 MB.
 */
export const WORKER_CACHE_SIZE = -1024;

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
const os = require('node:os');

const CONTENT_ERRORS = ${JSON.stringify(CONTENT_ERROR_CODES)};
const CACHE_SIZE = ${WORKER_CACHE_SIZE};
// Pacing (pacer.ts): after each piece of work, sleep so that work takes about 'share' of the time. The thread
// may block: it runs nothing else, and aborting terminates it.
const pauseAfter = ${pauseAfter.toString()};
class Pacer {
  constructor(share) { this.share = share; this.workStart = performance.now(); }
  pause() {
    const ms = pauseAfter(performance.now() - this.workStart, this.share);
    if (ms >= 1) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    this.workStart = performance.now();
  }
}

function isContentError(code) {
  return CONTENT_ERRORS.some((base) => code === base || code.startsWith(base + '_'));
}

function check(path, kind) {
  let db;
  try {
    // Read-only: the checked file is hashed at the same time and installed or uploaded afterwards, byte for byte.
    db = new Database(path, { fileMustExist: true, readonly: true });
    db.pragma('cache_size = ' + CACHE_SIZE);
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
  source.pragma('cache_size = ' + CACHE_SIZE);
  let sourceJournalMode;
  let rollback = {};
  try {
    sourceJournalMode = String(source.pragma('journal_mode', { simple: true }));
    // Create the copy owner-only (0600) before SQLite would create it 0644: it holds the whole database.
    // SQLite keeps an existing file's mode, and gives its -wal/-journal the same.
    fs.closeSync(fs.openSync(task.destination, 'wx', 0o600));
    if (sourceJournalMode === 'wal') await walCopy(source, task);
    else rollback = await rollbackCopy(source, task);
  } finally {
    source.close();
  }
  return { sourceJournalMode, ...rollback };
}

// Lower this thread's CPU priority (Linux: setpriority on the thread id), so that the app's threads win the
// cores while a snapshot copies and checks. Node exposes no worker thread id; /proc/thread-self names it.
function lowerThreadPriority(niceness) {
  if (!niceness) return;
  try {
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    os.setPriority(tid, niceness);
  } catch {
    // Not Linux, or not allowed: the copy runs at normal priority, as before.
  }
}

// WAL mode: the backup API (it reads committed WAL frames), in steps of stepBytes, inside one read transaction
// held by the source connection. Every step then reads that one snapshot, so a commit by another connection
// between steps does not restart the copy (a backup restarts only when its source starts a new read; with the
// default 100 pages per step and no held read it never finished under steady writes: 31,649 restarts). The
// bytes equal a one-step backup's. After each step the pages SQLite has written so far are flushed, so the
// kernel writes the copy back in small pieces instead of one database-sized burst at the final commit's fsync,
// which the app's own WAL fsync would queue behind on ext4 (its journal commit waits for that data).
async function walCopy(source, task) {
  const pacer = new Pacer(task.pace);
  const pageSize = Number(source.pragma('page_size', { simple: true }));
  const pagesPerStep = Math.max(1, Math.floor(task.stepBytes / pageSize));
  source.exec('BEGIN');
  try {
    source.prepare('SELECT count(*) FROM sqlite_schema').get();
    const fd = fs.openSync(task.destination, 'r');
    try {
      await source.backup(task.destination, {
        progress: () => {
          fs.fdatasyncSync(fd);
          pacer.pause();
          return pagesPerStep;
        },
      });
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    source.exec('COMMIT');
  }
}

// The lock page (the one holding SQLite's PENDING_BYTE) is never written by SQLite, nor by the backup API.
const PENDING_BYTE = 0x40000000;

// Rollback-journal mode: readers hold the SHARED lock, and writers cannot commit while anyone holds it, so a
// backup-API copy stalls the app for the whole copy (4.65 s at 1 GB). Instead: copy the file without any lock,
// then take SHARED (a read transaction) and, under it, compare the file with the copy chunk by chunk and rewrite
// the chunks that differ. While SHARED is held no writer can touch the file and no hot journal exists, so the
// copy then equals the committed database, whatever the unlocked pass saw. Finally give the header the fields
// the backup API writes into a new file, so the bytes equal a backup-API copy's.
// Returns how long the SHARED lock was held (ms) and how many bytes the locked pass rewrote.
async function rollbackCopy(source, task) {
  copyUnlocked(task.source, task.destination, task.chunkBytes, new Pacer(task.pace));
  source.exec('BEGIN');
  const locked = performance.now();
  let pageCount;
  let pageSize;
  let sharedLockMs;
  let rewrittenBytes;
  try {
    source.prepare('SELECT count(*) FROM sqlite_schema').get();
    pageSize = Number(source.pragma('page_size', { simple: true }));
    pageCount = Number(source.pragma('page_count', { simple: true }));
    rewrittenBytes = await rewriteChanged(task.source, task.destination, pageCount * pageSize, task.chunkBytes);
  } finally {
    source.exec('COMMIT');
    sharedLockMs = performance.now() - locked;
  }
  const version = String(source.prepare('SELECT sqlite_version() AS v').get().v).split('.').map(Number);
  // An empty database (a 0-byte file) has no header to rewrite: the copy stays 0 bytes, which SQLite opens as
  // an empty database, as it does the source. Writing a header into it would make it "not a database".
  if (pageCount > 0) {
    writeBackupHeader(task.destination, pageSize, pageCount, version[0] * 1000000 + version[1] * 1000 + (version[2] || 0));
  }
  return { sharedLockMs: Math.round(sharedLockMs), rewrittenBytes };
}

// Unlocked, so it may be paced; the locked pass below never is (writers wait while it runs).
function copyUnlocked(from, to, chunkBytes, pacer) {
  const buf = Buffer.allocUnsafe(chunkBytes);
  const src = fs.openSync(from, 'r');
  const dst = fs.openSync(to, 'r+');
  try {
    for (let off = 0; ; ) {
      const n = fs.readSync(src, buf, 0, chunkBytes, off);
      if (n === 0) break;
      fs.writeSync(dst, buf, 0, n, off);
      off += n;
      pacer.pause();
    }
  } finally {
    fs.closeSync(src);
    fs.closeSync(dst);
  }
}

// Make 'to' hold the first sizeBytes of 'from': reads both side by side, rewrites the chunks that differ.
// Past the end of 'from' it reads zeros, as SQLite does for pages beyond a short file. Returns the bytes rewritten.
async function rewriteChanged(from, to, sizeBytes, chunkBytes) {
  const src = await fs.promises.open(from, 'r');
  const dst = await fs.promises.open(to, 'r+');
  try {
    const a = Buffer.allocUnsafe(chunkBytes);
    const b = Buffer.allocUnsafe(chunkBytes);
    let rewritten = 0;
    for (let off = 0; off < sizeBytes; off += chunkBytes) {
      const len = Math.min(chunkBytes, sizeBytes - off);
      const [ra, rb] = await Promise.all([src.read(a, 0, len, off), dst.read(b, 0, len, off)]);
      if (ra.bytesRead < len) a.fill(0, ra.bytesRead, len);
      if (rb.bytesRead < len || a.compare(b, 0, len, 0, len) !== 0) {
        await dst.write(a, 0, len, off);
        rewritten += len;
      }
    }
    await dst.truncate(sizeBytes);
    return rewritten;
  } finally {
    await src.close();
    await dst.close();
  }
}

// The header fields in which a backup-API copy into a new file differs from its source: the destination's
// commit sets the file change counter (offset 24) and its version-valid-for (92) to 1, the schema cookie (40)
// to 1, the page count (28) and the writing library's version (96). The lock page stays zeros.
function writeBackupHeader(path, pageSize, pageCount, versionNumber) {
  const fd = fs.openSync(path, 'r+');
  try {
    const header = Buffer.alloc(100);
    fs.readSync(fd, header, 0, 100, 0);
    header.writeUInt32BE(1, 24);
    header.writeUInt32BE(pageCount, 28);
    header.writeUInt32BE(1, 40);
    header.writeUInt32BE(1, 92);
    header.writeUInt32BE(versionNumber, 96);
    fs.writeSync(fd, header, 0, 100, 0);
    if (pageCount * pageSize > PENDING_BYTE) fs.writeSync(fd, Buffer.alloc(pageSize), 0, pageSize, PENDING_BYTE);
  } finally {
    fs.closeSync(fd);
  }
}

(async () => {
  const task = workerData.task;
  lowerThreadPriority(task.niceness);
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
export function runSqliteTask(task: SnapshotTask, signal?: AbortSignal): Promise<SnapshotWorkerResult>;
export function runSqliteTask(task: Extract<WorkerTask, { op: 'check' }>, signal?: AbortSignal): Promise<CheckResult>;
export function runSqliteTask(task: WorkerTask, signal?: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError(`${task.op} aborted`));
      return;
    }
    const withDefaults =
      task.op === 'snapshot'
        ? { stepBytes: stepBytesFor(task.pace), chunkBytes: SNAPSHOT_CHUNK_BYTES, niceness: SNAPSHOT_NICENESS, ...task }
        : task;
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { driverPath, task: withDefaults } });
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
