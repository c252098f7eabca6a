/**
 * Consistent snapshots of a live database, byte for byte what SQLite's online backup API would produce.
 *
 * The copy is taken by a second connection on a worker thread (at a lower CPU priority) into a temp file
 * beside the database. The result is a self-contained SQLite file (the WAL's committed frames included)
 * that passed the configured integrity check, with its sha256 and size. Readers and writers of the live
 * database keep going: in WAL mode the backup (in steps inside one read transaction) blocks nobody; in
 * rollback-journal mode the file is copied without a lock and writers wait only for a short locked pass that
 * brings the copy up to date (see sqlite-worker.ts). The temp file needs no durability (it is uploaded and
 * deleted, never the durable copy): in WAL mode its writeback is spread over the copy, in rollback mode it is not synced.
 */
import { stat } from 'node:fs/promises';
import type { IntegrityCheck } from '../config.js';
import { DbSyncError, isAbort, wrapError } from '../errors.js';
import { removeQuietly, tempPathBeside } from '../fs-atomic.js';
import { sha256File } from './hash.js';
import { bothSettled } from './settle.js';
import { Pacer } from './pacer.js';
import { BUSY_TIMEOUT_MS, runSqliteTask, SNAPSHOT_NICENESS, type CheckResult } from './sqlite-worker.js';

export interface Snapshot {
  /** Temp file holding the snapshot. The caller owns it and must {@link discardSnapshot} it. */
  readonly path: string;
  readonly sizeBytes: number;
  readonly sha256: string;
  readonly takenAt: Date;
  /** Journal mode of the live database (`wal`, `delete`, ...). */
  readonly journalMode: string;
  /** How long the copy and check took. */
  readonly durationMs: number;
}

export interface SnapshotOptions {
  readonly check: IntegrityCheck;
  readonly signal?: AbortSignal | undefined;
  readonly busyTimeoutMs?: number | undefined;
  /**
   * Share of the time the snapshot may work (pacer.ts), for snapshots taken while the app runs; absent or 1:
   * as fast as it can (one-shot commands, the final sync). Paced, the check and the hash run one after the
   * other instead of at once, so the snapshot never keeps two cores busy.
   */
  readonly pace?: number | undefined;
}

/**
 * Snapshot the database at `dbPath`.
 * @throws DbSyncError `NotFound` when the database does not exist, `LocalDatabase` when it cannot be read,
 *   `Corrupt` when the copy fails its integrity check; AbortedError when `signal` fires. The temp file is
 *   removed on every failure. The source is opened read-only, so db-sync never writes the live database:
 *   its close cannot checkpoint the WAL into the main file or delete the -wal (measured: with a read-write
 *   connection as the last one, a 10 MB WAL was checkpointed and the main file rewritten). SQLite does
 *   create the -shm beside a WAL database when it is missing, as any reader does. Only a database that
 *   needs write access to be read at all (a hot rollback journal left by a crashed writer, a WAL that must
 *   be recovered without a writable -shm) is opened read-write, which rolls it back or recovers it as the
 *   app's next open would.
 */
export async function takeSnapshot(dbPath: string, options: SnapshotOptions): Promise<Snapshot> {
  const started = performance.now();
  const takenAt = new Date();
  await stat(dbPath).catch((error: unknown) => {
    throw new DbSyncError('NotFound', `snapshot ${dbPath}: the database does not exist`, {
      hint: 'check DB_LOCAL_PATH; the app creates the database on first use',
      cause: error,
    });
  });
  const destination = tempPathBeside(dbPath, 'snapshot');
  try {
    const copied = await runSqliteTask(
      { op: 'snapshot', source: dbPath, destination, busyTimeoutMs: options.busyTimeoutMs ?? BUSY_TIMEOUT_MS, pace: options.pace },
      options.signal,
    );
    const [check, sha256] = await checkAndHash(destination, options.check, options.pace, options.signal);
    if (!check.ok) {
      throw new DbSyncError('Corrupt', `snapshot of ${dbPath} failed its ${options.check} check: ${check.problems.join('; ')}`, {
        hint: 'the live database is damaged; nothing was uploaded. Restore a good copy with `db-sync restore`',
      });
    }
    const { size } = await stat(destination);
    return {
      path: destination,
      sizeBytes: size,
      sha256,
      takenAt,
      journalMode: copied.sourceJournalMode,
      durationMs: Math.round(performance.now() - started),
    };
  } catch (error) {
    await discardSnapshotFiles(destination);
    if (isAbort(error, options.signal)) throw wrapError('snapshot', error);
    // Our Corrupt error names the file already; the worker's SQLite errors do not (wrapError keeps kind and hint).
    throw error instanceof DbSyncError && error.kind === 'Corrupt' ? error : wrapError(`snapshot ${dbPath}`, error);
  }
}

/**
 * The integrity check (worker thread) and the sha256 (this thread) of a snapshot copy. Unpaced they run at
 * once (about 0.7 s saved at 1 GB); paced, one after the other, the hash paced too. The check itself is one
 * SQLite call and cannot be paced.
 */
export async function checkAndHash(
  path: string,
  kind: IntegrityCheck,
  pace: number | undefined,
  signal: AbortSignal | undefined,
): Promise<[CheckResult, string]> {
  const check = (): Promise<CheckResult> => runSqliteTask({ op: 'check', path, check: kind, niceness: SNAPSHOT_NICENESS }, signal);
  const pacer = new Pacer(pace);
  if (!pacer.active) return bothSettled(check(), sha256File(path, signal));
  const result = await check();
  return [result, await sha256File(path, signal, pacer)];
}

/** Remove a snapshot's temp file (and any -wal/-shm SQLite left beside it). Never throws. */
export async function discardSnapshot(snapshot: Snapshot): Promise<void> {
  await discardSnapshotFiles(snapshot.path);
}

async function discardSnapshotFiles(path: string): Promise<void> {
  await Promise.all([removeQuietly(path), removeQuietly(`${path}-wal`), removeQuietly(`${path}-shm`), removeQuietly(`${path}-journal`)]);
}
