/**
 * Snapshot + upload, the one operation every write path shares (daemon ticks, the final sync, `upload`).
 */
import type { IntegrityCheck } from '../config.js';
import type { Logger } from '../logger.js';
import type { ObjectInfo, ObjectMetadata, ReplicaStore } from '../replica/store.js';
import { backupKey } from './backup-key.js';
import { toError } from '../errors.js';
import { listBackups } from './catalog.js';
import { recordedSha256, snapshotMetadata, type Origin } from './metadata.js';
import { SHORT_RETRY, withRetry, type RetryPolicy } from './retry.js';
import { discardSnapshot, takeSnapshot, type Snapshot } from './snapshot.js';
import { readUploadBase, writeUploadBase } from './upload-base.js';

export interface UploadContext {
  readonly store: ReplicaStore;
  readonly key: string;
  readonly dbPath: string;
  readonly check: IntegrityCheck;
  readonly origin: Origin;
  readonly log: Logger;
  /**
   * Share of the time snapshots taken while the app runs may work (pacer.ts): used where a caller asks for a
   * paced snapshot (the sidecar's periodic snapshots, continuous replication's bases); absent: unpaced.
   */
  readonly snapshotPace?: number | undefined;
  /** Observer (metrics): called after every snapshot that was uploaded or found identical. */
  readonly onOutcome?: ((outcome: UploadOutcome) => void) | undefined;
}

export interface UploadOutcome {
  readonly snapshot: Omit<Snapshot, 'path'>;
  /** The new object, or undefined when its sha256 equalled `skipIfSha256` and nothing was sent. */
  readonly uploaded: ObjectInfo | undefined;
  readonly uploadMs: number;
  /** How the bytes went: `delta` when unchanged blocks were copied from the previous version server-side. */
  readonly transfer?: { readonly mode: 'delta' | 'full'; readonly sentBytes: number; readonly copiedBytes: number } | undefined;
}

/**
 * Take a snapshot of `ctx.dbPath` and upload it to `ctx.key`, unless its sha256 equals `skipIfSha256`
 * (the database is byte-identical to what the store already holds). The temp snapshot is always removed.
 */
export async function snapshotAndUpload(
  ctx: UploadContext,
  options: {
    signal?: AbortSignal | undefined;
    skipIfSha256?: string | undefined;
    onProgress?: (sentBytes: number, totalBytes: number) => void;
    /** How the upload retries (default: `DEFAULT_RETRY`, about a minute). */
    retry?: RetryPolicy | undefined;
    /** Pace the snapshot by `ctx.snapshotPace` (the app is running and nobody waits for this one). */
    paced?: boolean | undefined;
  },
): Promise<UploadOutcome> {
  const pace = options.paced ? ctx.snapshotPace : undefined;
  const snapshot = await takeSnapshot(ctx.dbPath, { check: ctx.check, signal: options.signal, pace });
  try {
    return await uploadSnapshotFile(ctx, snapshot, options);
  } finally {
    await discardSnapshot(snapshot);
  }
}

/**
 * Upload a snapshot file already taken and checked (its sha256 known) to `ctx.key`, with the snapshot
 * metadata plus `extraMetadata` (a base's chain position), unless its sha256 equals `skipIfSha256`.
 * The caller owns (and removes) the file.
 */
export async function uploadSnapshotFile(
  ctx: UploadContext,
  snapshot: Snapshot,
  options: {
    signal?: AbortSignal | undefined;
    skipIfSha256?: string | undefined;
    onProgress?: ((sentBytes: number, totalBytes: number) => void) | undefined;
    retry?: RetryPolicy | undefined;
    extraMetadata?: ObjectMetadata | undefined;
  },
): Promise<UploadOutcome> {
  const { path, ...summary } = snapshot;
  if (options.skipIfSha256 === snapshot.sha256) {
    const outcome = { snapshot: summary, uploaded: undefined, uploadMs: 0 };
    ctx.onOutcome?.(outcome);
    return outcome;
  }
  const started = performance.now();
  const onProgress = options.onProgress;
  // The digests of the last upload, if this database made it (src/core/upload-base.ts). A crash between
  // the upload and the write below leaves older digests, which the store refuses: the key moved on.
  const base = await readUploadBase(ctx.dbPath, ctx.store.location, ctx.key);
  const result = await withRetry(
    `upload ${ctx.key}`,
    () =>
      ctx.store.putFromPrevious(ctx.key, path, {
        metadata: { ...snapshotMetadata(snapshot, ctx.origin, ctx.check), ...options.extraMetadata },
        base,
        signal: options.signal,
        onProgress: onProgress ? (sent) => onProgress(sent, snapshot.sizeBytes) : undefined,
      }),
    { log: ctx.log, signal: options.signal, policy: options.retry },
  );
  const uploaded = result.info;
  const uploadMs = Math.round(performance.now() - started);
  const next = uploaded.versionId && result.blocks ? { versionId: uploaded.versionId, blocks: result.blocks } : undefined;
  await writeUploadBase(ctx.dbPath, ctx.store.location, ctx.key, next).catch((error: unknown) =>
    // Only a hint for the next upload: failing to keep it costs a full upload, not this one.
    ctx.log.warn({ err: (error as Error).message }, 'could not record block digests; the next upload sends everything'),
  );
  if (result.fallbackReason) ctx.log.info({ key: ctx.key, reason: result.fallbackReason }, 'sending the whole snapshot');
  ctx.log.info(
    {
      key: ctx.key,
      versionId: uploaded.versionId,
      sizeBytes: snapshot.sizeBytes,
      sha256: snapshot.sha256,
      snapshotMs: snapshot.durationMs,
      uploadMs,
      mode: result.mode,
      sentBytes: result.sentBytes,
      copiedBytes: result.copiedBytes,
      ...options.extraMetadata,
    },
    'snapshot uploaded',
  );
  const transfer = { mode: result.mode, sentBytes: result.sentBytes, copiedBytes: result.copiedBytes };
  const outcome = { snapshot: summary, uploaded, uploadMs, transfer };
  ctx.onOutcome?.(outcome);
  return outcome;
}

/** What {@link writeBackupKey} did: wrote a backup, or found the newest backup already holding this content. */
export interface BackupOutcome {
  /** The backup written; undefined when skipped. */
  readonly written: ObjectInfo | undefined;
  /** When skipped: the newest backup, which holds the same content (same sha256). */
  readonly existing?: string | undefined;
}

/**
 * Copy one version of `key` to its timestamped backup key `KEY.backup.YYYYMMDD_HHMMSS` (server-side), unless
 * the newest backup already holds that content: a backup copies the snapshot's metadata, its sha256
 * included, so one LIST and one HEAD tell. Without this, every stop of an unchanged database (a crash
 * loop, say) made another full copy, kept for days.
 * @param sha256 the content of that version, when known; unknown = always copy.
 * @throws the copy's error (the skip check's own errors only mean "copy anyway").
 */
export async function writeBackupKey(
  ctx: Pick<UploadContext, 'store' | 'key' | 'log'>,
  versionId: string | undefined,
  at: Date,
  signal?: AbortSignal,
  sha256?: string,
): Promise<BackupOutcome> {
  if (sha256 !== undefined) {
    const newest = await newestBackup(ctx, signal);
    if (newest?.sha256 === sha256) {
      ctx.log.info(
        { key: newest.key, sha256 },
        'backup key not written: the newest backup already holds this content (nothing changed since)',
      );
      return { written: undefined, existing: newest.key };
    }
  }
  const destination = backupKey(ctx.key, at);
  const info = await withRetry(`write backup ${destination}`, () => ctx.store.copy(ctx.key, versionId, destination, { signal }), {
    log: ctx.log,
    signal,
  });
  ctx.log.info({ key: destination, sourceVersionId: versionId, sizeBytes: info.sizeBytes }, 'backup written');
  return { written: info };
}

/** The newest timestamped backup of `ctx.key` and the sha256 its metadata records; undefined when none or unreadable. */
async function newestBackup(
  ctx: Pick<UploadContext, 'store' | 'key' | 'log'>,
  signal: AbortSignal | undefined,
): Promise<{ key: string; sha256: string | undefined } | undefined> {
  try {
    const [newest] = await listBackups(ctx.store, ctx.key, { log: ctx.log, signal, policy: SHORT_RETRY });
    if (!newest) return undefined;
    const info = await ctx.store.head(newest.key, { signal });
    return info ? { key: newest.key, sha256: recordedSha256(info.metadata) } : undefined;
  } catch (error) {
    ctx.log.debug({ err: toError(error).message }, 'could not read the newest backup; writing a new one');
    return undefined;
  }
}
