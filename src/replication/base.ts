/**
 * A base: a full copy of the database at an exact position of its chain, uploaded as a new version of
 * `KEY` with the chain metadata (docs/continuous-replication.md, "Bases").
 *
 * The copy runs the backup API from a connection X whose read transaction began at that position: the
 * open transaction keeps the copy's snapshot fixed, so the backup never restarts however much the app
 * writes meanwhile. It runs on the main thread in steps (better-sqlite3 copies one step per event-loop
 * turn), so the capture keeps ticking between steps. Then the same check, sha256 and upload as a snapshot.
 * Bases taken while the app runs are paced (pacer.ts) like periodic snapshots; the final base is not.
 */
import { closeSync, fdatasyncSync, openSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import type Database from 'better-sqlite3';
import { DbSyncError } from '../errors.js';
import { tempPathBeside } from '../fs-atomic.js';
import { Pacer } from '../core/pacer.js';
import { bothSettled } from '../core/settle.js';
import { checkAndHash, discardSnapshot, type Snapshot } from '../core/snapshot.js';
import { stepBytesFor } from '../core/sqlite-worker.js';
import { uploadSnapshotFile, type UploadContext, type UploadOutcome } from '../core/upload.js';
import { SHORT_RETRY, type RetryPolicy } from '../core/retry.js';
import { hashDatabaseFile, type PageHashes } from './checksum.js';
import { chainMetadata, type ChainPosition } from './layout.js';

/** The longest pause a paced base copy takes on the main thread at once (the capture's ticks and the health server wait meanwhile). */
const MAX_MAIN_THREAD_PAUSE_MS = 50;

/**
 * Copy the database as `x` sees it (its read transaction must be open) into a new temp file beside it,
 * check it and hash it. `x`'s transaction is rolled back and `x` closed in every case.
 * @param pace share of the time the copy, check and hashes may work (pacer.ts); absent: as fast as they can.
 * @returns the snapshot (caller removes it) and the page hashes of the copy.
 */
export async function copyBase(
  x: Database.Database,
  dbPath: string,
  ctx: Pick<UploadContext, 'check'>,
  signal?: AbortSignal,
  pace?: number,
): Promise<{ snapshot: Snapshot; hashes: PageHashes }> {
  const pacer = new Pacer(pace);
  const paced = pacer.active;
  const started = performance.now();
  const takenAt = new Date();
  // A snapshot like any other (the name says so to whoever finds one left by a kill).
  const destination = tempPathBeside(dbPath, 'snapshot-base');
  const snapshot: Snapshot = { path: destination, sizeBytes: 0, sha256: '', takenAt, journalMode: 'wal', durationMs: 0 };
  try {
    try {
      const pageSize = Number(x.pragma('page_size', { simple: true }));
      const pagesPerStep = Math.max(1, Math.floor(stepBytesFor(pace) / pageSize));
      // Owner-only before SQLite creates it 0644: it holds the whole database.
      const fd = openSync(destination, 'wx', 0o600);
      try {
        await x.backup(destination, {
          progress: () => {
            if (signal?.aborted) throw signal.reason ?? new Error('base aborted');
            // Spread the copy's writeback over the copy (as snapshots do), not one burst at the end.
            fdatasyncSync(fd);
            // The progress callback cannot await: pause by blocking, briefly (better-sqlite3 steps on setImmediate,
            // so ticks and requests run between steps).
            pacer.pauseBlocking(MAX_MAIN_THREAD_PAUSE_MS);
            return pagesPerStep;
          },
        });
      } finally {
        closeSync(fd);
      }
    } finally {
      if (x.inTransaction) x.exec('ROLLBACK');
      x.close();
    }
    const [[check, sha256], hashes] = paced
      ? [await checkAndHash(destination, ctx.check, pace, signal), await hashDatabaseFile(destination, signal, new Pacer(pace))]
      : await bothSettled(checkAndHash(destination, ctx.check, undefined, signal), hashDatabaseFile(destination, signal));
    if (!check.ok) {
      throw new DbSyncError('Corrupt', `base of ${dbPath} failed its ${ctx.check} check: ${check.problems.join('; ')}`, {
        hint: 'the live database is damaged; nothing was uploaded. Restore a good copy with `db-sync restore`',
      });
    }
    const { size } = await stat(destination);
    return {
      snapshot: { ...snapshot, sizeBytes: size, sha256, durationMs: Math.round(performance.now() - started) },
      hashes,
    };
  } catch (error) {
    await discardSnapshot(snapshot);
    throw error;
  }
}

/**
 * Upload a copied base as `KEY` with its chain position (through the normal snapshot upload: block
 * reuse, metadata, the lease's renewing fence). The file is removed afterwards in every case.
 */
export async function uploadBase(
  ctx: UploadContext,
  snapshot: Snapshot,
  position: ChainPosition,
  options: { signal?: AbortSignal | undefined; retry?: RetryPolicy | undefined } = {},
): Promise<UploadOutcome> {
  try {
    return await uploadSnapshotFile(ctx, snapshot, {
      signal: options.signal,
      retry: options.retry ?? SHORT_RETRY,
      extraMetadata: chainMetadata(position),
    });
  } finally {
    await discardSnapshot(snapshot);
  }
}
