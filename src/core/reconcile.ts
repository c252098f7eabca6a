/**
 * A database already on the volume at start: decide, never guess, between it and the remote copy.
 *
 * With L = local content, R = remote content, S = what both held at the last sync (the state file):
 * - L = R: in sync, nothing to do;
 * - R = S (only the local side moved, or nothing did): keep local, upload it soon. R = S also when R is the
 *   very version synced last, whatever its recorded hash;
 * - L = S (only the remote moved, e.g. another task uploaded): take the remote, keep local as .backup;
 * - neither: both moved. Keep local, upload it as `KEY.conflict.YYYYMMDD_HHMMSS`, and refuse to start;
 * - no state file (unknown history): the caller decides (DB_SYNC_ON_UNKNOWN_HISTORY). By default the remote
 *   wins, as with the old script: a file nobody synced is as likely a database baked into the image, or a
 *   0-byte file something created early, as the newer data; it is kept as .backup, never uploaded.
 */
import { stampedKey } from './backup-key.js';
import { listStamped } from './catalog.js';
import { DbSyncError } from '../errors.js';
import type { ObjectInfo } from '../replica/store.js';
import { recordedSha256, snapshotMetadata } from './metadata.js';
import { withRetry, type RetryPolicy } from './retry.js';
import { discardSnapshot, takeSnapshot } from './snapshot.js';
import { readSyncState } from './sync-state.js';
import type { UploadContext } from './upload.js';

export type Reconciliation =
  | { readonly decision: 'in-sync'; readonly sha256: string; readonly versionId: string | undefined }
  | { readonly decision: 'local-ahead' | 'no-remote'; readonly remoteSha256: string | undefined }
  /** No state file (or one for another key), and the contents differ: the caller decides (DB_SYNC_ON_UNKNOWN_HISTORY). */
  | { readonly decision: 'unknown-history'; readonly remoteSha256: string | undefined; readonly remote: ObjectInfo }
  | { readonly decision: 'remote-ahead'; readonly remote: ObjectInfo };

/** The conflict key for `key` at `at`: `KEY.conflict.YYYYMMDD_HHMMSS`. */
export function conflictKey(key: string, at: Date): string {
  return stampedKey(key, 'conflict', at);
}

/**
 * The conflict copy of `key` that already holds content `sha256`, if any (newest first, one HEAD each):
 * a restart in the same conflict (restart: always, a supervisor) must not upload the same copy again.
 */
async function existingConflictCopy(
  ctx: Pick<UploadContext, 'store' | 'key' | 'log'>,
  sha256: string,
  signal: AbortSignal,
  policy?: RetryPolicy,
): Promise<string | undefined> {
  const { store, key, log } = ctx;
  for (const copy of await listStamped(store, key, 'conflict', { log, signal })) {
    const info = await withRetry(`head ${copy.key}`, () => store.head(copy.key, { signal }), { log, signal, policy });
    if (info && recordedSha256(info.metadata) === sha256) return copy.key;
  }
  return undefined;
}

/**
 * Compare the local database with the remote copy and the last-synced state.
 * @throws DbSyncError `Refused` after uploading the local copy to a conflict key, when both sides moved.
 */
export async function reconcileLocal(ctx: UploadContext, signal: AbortSignal, policy?: RetryPolicy): Promise<Reconciliation> {
  const { store, key, dbPath, log } = ctx;
  const remote = await withRetry(`head ${key}`, () => store.head(key, { signal }), { log, signal, policy });
  // Also with no remote copy: the snapshot proves the local file is a readable, healthy database, so a
  // stray or damaged file at DB_LOCAL_PATH stops the start (exit 7 or 6) instead of making it "ready".
  const snapshot = await takeSnapshot(dbPath, { check: ctx.check, signal });
  try {
    if (!remote) return { decision: 'no-remote', remoteSha256: undefined };
    const remoteSha = recordedSha256(remote.metadata);
    const state = await readSyncState(dbPath);
    const localSha = snapshot.sha256;
    if (localSha === remoteSha) return { decision: 'in-sync', sha256: localSha, versionId: remote.versionId };
    if (!state || state.key !== key) return { decision: 'unknown-history', remoteSha256: remoteSha, remote };
    // The remote is unchanged since the last sync when it is the very version we synced, or holds the content
    // we synced. The version id matters for objects without a sha256 (uploaded by `aws s3 cp` before db-sync
    // took over): the state then holds the downloaded file's hash, which a fresh snapshot of the same,
    // unchanged database need not reproduce byte for byte, so comparing hashes alone would cry conflict.
    const remoteUnchanged =
      (remoteSha !== undefined && remoteSha === state.sha256) || (remote.versionId !== undefined && remote.versionId === state.versionId);
    if (remoteUnchanged) return { decision: 'local-ahead', remoteSha256: remoteSha };
    if (localSha === state.sha256) return { decision: 'remote-ahead', remote };
    const uploadedBefore = await existingConflictCopy(ctx, localSha, signal, policy);
    const conflict = uploadedBefore ?? conflictKey(key, new Date());
    if (!uploadedBefore) {
      await withRetry(
        `upload ${conflict}`,
        () => store.put(conflict, snapshot.path, { metadata: snapshotMetadata(snapshot, ctx.origin, ctx.check), signal }),
        { log, signal },
      );
    }
    log.error(
      {
        key,
        conflictKey: conflict,
        localSha256: localSha,
        remoteSha256: remoteSha,
        lastSyncedSha256: state.sha256,
        lastSyncedAt: state.syncedAt,
        conflictCopyUploadedBefore: uploadedBefore !== undefined,
      },
      'CONFLICT: the local database and the remote copy both changed since the last sync; not starting',
    );
    throw new DbSyncError(
      'Refused',
      `both the local database and s3 ${key} changed since the last sync (${state.syncedAt}); the local copy ` +
        `${uploadedBefore ? 'is already stored at' : 'was uploaded to'} ${conflict}`,
      {
        hint:
          `compare ${key} and ${conflict} (db-sync restore --backup ${conflict} --to /tmp/local.sqlite3). To keep the local copy, ` +
          `run \`db-sync upload\`; to take the remote one, move ${dbPath} away and start again`,
      },
    );
  } finally {
    await discardSnapshot(snapshot);
  }
}
