/**
 * Verified restore: download → sha256 check → SQLite integrity check → fsync → rename over the target.
 *
 * Guarantees:
 * - a restore that fails at any step leaves the target (and its -wal/-shm) exactly as it was;
 * - a restored database never sits next to a stale -wal/-shm/-journal of the file it replaced (SQLite
 *   would replay it into the new file and corrupt it);
 * - the replaced local database, when asked, is kept as a consistent copy at `TARGET.backup`;
 * - with fallback, the newest copy that passes verification wins: the current object, then older versions
 *   of the key, then the timestamped backups, newest first, each skip logged with its reason.
 */
import { createWriteStream } from 'node:fs';
import { chmod, chown, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { IntegrityCheck } from '../config.js';
import { DbSyncError, isAbort, wrapError } from '../errors.js';
import { atomicCopyFile, commitTempFile, FILE_MODE, fsyncFile, removeQuietly, tempPathBeside } from '../fs-atomic.js';
import type { Logger } from '../logger.js';
import type { ObjectInfo, ReplicaStore } from '../replica/store.js';
import { parseChainMetadata } from '../replication/layout.js';
import { replayChain, type ReplayResult } from '../replication/replay.js';
import { backupPrefix, keyOfBackup, parseBackupKey } from './backup-key.js';
import { HashingStream, STREAM_BUFFER_BYTES } from './hash.js';
import { recordedSha256 } from './metadata.js';
import { withRetry, type RetryPolicy } from './retry.js';
import { bothSettled } from './settle.js';
import { BUSY_TIMEOUT_MS, runSqliteTask } from './sqlite-worker.js';

/** One object (or object version) that can be restored. */
export interface RestoreSource {
  readonly key: string;
  /** A specific version; `undefined` means the current object. */
  readonly versionId?: string | undefined;
}

export interface VerifyOptions {
  readonly check: IntegrityCheck;
  readonly log: Logger;
  readonly signal?: AbortSignal | undefined;
  /** How storage calls retry (default: `DEFAULT_RETRY`); shorter when the caller retries the whole restore itself. */
  readonly policy?: RetryPolicy | undefined;
  /** Called as a download's bytes arrive: received so far, and the object's size (0 when unknown). */
  readonly onProgress?: ((receivedBytes: number, totalBytes: number) => void) | undefined;
  /** Point in time (Unix ms): a base's chain is applied only through the segments committed by then. */
  readonly atMs?: number | undefined;
  /** Set to false to restore a base without its chain (the fallback when the chain's result is unhealthy). */
  readonly applyChain?: boolean | undefined;
}

export interface RestoreOptions extends VerifyOptions {
  /** Keep the database being replaced at `TARGET.backup`. */
  readonly keepPrevious: boolean;
}

/** A downloaded, verified copy. */
export interface VerifiedCopy {
  readonly path: string;
  readonly info: ObjectInfo;
  readonly sha256: string;
  readonly sizeBytes: number;
  /** Whether the object carried a sha256 in its metadata and it matched (objects written by other tools carry none). */
  readonly checksumVerified: boolean;
  /** The chain applied on top of the object, when it is a base (docs/continuous-replication.md); undefined otherwise. */
  readonly chain: ReplayResult | undefined;
}

export interface Restored extends Omit<VerifiedCopy, 'path'> {
  readonly target: string;
  /** Where the replaced database was kept, if there was one and it was asked for. */
  readonly previousKeptAt: string | undefined;
  /** Newer candidates that failed verification, newest first. */
  readonly skipped: readonly SkippedCandidate[];
}

export interface SkippedCandidate {
  readonly key: string;
  readonly versionId: string | undefined;
  readonly reason: string;
}

const describe = (s: RestoreSource): string => (s.versionId ? `${s.key}@${s.versionId}` : s.key);

/**
 * Download `source` to a temp file beside `target` and verify it (size, sha256, SQLite integrity).
 * @returns the verified temp copy (the caller installs or discards it), or null when the object is absent.
 * @throws DbSyncError `Corrupt` when verification fails (the temp file is removed), storage errors as is.
 */
export async function downloadVerified(
  store: ReplicaStore,
  source: RestoreSource,
  target: string,
  options: VerifyOptions,
): Promise<VerifiedCopy | null> {
  const got = await withRetry(
    `download ${describe(source)}`,
    () => store.get(source.key, { versionId: source.versionId, signal: options.signal }),
    {
      log: options.log,
      signal: options.signal,
      policy: options.policy,
    },
  );
  if (!got) return null;
  const temp = tempPathBeside(target, 'restore');
  try {
    const hashing = new HashingStream();
    const onProgress = options.onProgress;
    const total = got.info.sizeBytes;
    let received = 0;
    const counted = onProgress
      ? new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            received += chunk.length;
            onProgress(received, total);
            callback(null, chunk);
          },
        })
      : undefined;
    const sink = createWriteStream(temp, { mode: FILE_MODE, highWaterMark: STREAM_BUFFER_BYTES });
    await (counted
      ? pipeline(got.body, hashing, counted, sink, { signal: options.signal })
      : pipeline(got.body, hashing, sink, { signal: options.signal }));
    const sha256 = hashing.digest();
    const problem = (reason: string): DbSyncError =>
      new DbSyncError('Corrupt', `${describe(source)} failed verification: ${reason}`, {
        hint: 'the remote copy is damaged; restore an older version (`db-sync backups` lists them)',
      });
    if (got.info.sizeBytes > 0 && hashing.bytes !== got.info.sizeBytes) {
      throw problem(`received ${hashing.bytes} bytes, expected ${got.info.sizeBytes} (truncated)`);
    }
    const expected = recordedSha256(got.info.metadata);
    if (expected !== undefined && expected !== sha256) {
      throw problem(`sha256 ${sha256} does not match the recorded ${expected}`);
    }
    const chain = options.applyChain === false ? undefined : await replayOnto(store, got.info, temp, options);
    // The fsync (writing the copy back to disk) and the check (reading it from the page cache) overlap:
    // about a second saved at 1 GB. Both must succeed before the copy may be installed.
    const [check] = await bothSettled(runSqliteTask({ op: 'check', path: temp, check: options.check }, options.signal), fsyncFile(temp));
    await removeSqliteSidecars(temp);
    if (!check.ok && chain !== undefined && chain.segments > 0) {
      const reason = `the chain's result is not a healthy SQLite database (${check.problems.join('; ')})`;
      options.log.error({ key: got.info.key, versionId: got.info.versionId, chain, reason }, 'restoring the base alone: ' + reason);
      await removeQuietly(temp);
      const alone = await downloadVerified(store, { key: source.key, versionId: got.info.versionId }, target, {
        ...options,
        applyChain: false,
      });
      return (
        alone && {
          ...alone,
          chain: { ...chain, lastSeq: chain.fromSeq, lastCommitAt: undefined, segments: 0, pages: 0, stoppedBecause: reason },
        }
      );
    }
    if (!check.ok) throw problem(`not a healthy SQLite database (${check.problems.join('; ')})`);
    return { path: temp, info: got.info, sha256, sizeBytes: hashing.bytes, checksumVerified: expected !== undefined, chain };
  } catch (error) {
    got.body.destroy();
    await removeQuietly(temp);
    await removeSqliteSidecars(temp);
    if (isAbort(error, options.signal)) throw wrapError(`download ${describe(source)}`, error);
    throw error;
  }
}

/**
 * When the downloaded object is a base, apply its chain onto `path` (src/replication/replay.ts): undefined
 * when it carries no chain. Malformed chain metadata is logged and the base restored alone. A backup key
 * copied from a base keeps the base's metadata; its chain lives under the key it was made from.
 */
async function replayOnto(store: ReplicaStore, info: ObjectInfo, path: string, options: VerifyOptions): Promise<ReplayResult | undefined> {
  const chain = parseChainMetadata(info.metadata);
  if (chain.kind === 'none') return undefined;
  if (chain.kind === 'malformed') {
    options.log.error(
      { key: info.key, versionId: info.versionId, reason: chain.reason },
      'chain metadata is unusable; restoring the base alone',
    );
    return undefined;
  }
  return replayChain(store, keyOfBackup(info.key), chain.position, path, options);
}

/** Remove the -wal, -shm and -journal files SQLite may keep beside `dbPath`. */
export async function removeSqliteSidecars(dbPath: string): Promise<void> {
  await Promise.all(['-wal', '-shm', '-journal'].map((suffix) => removeQuietly(`${dbPath}${suffix}`)));
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Keep a consistent copy of the database at `dbPath` (WAL content included) at `destination`, atomically.
 * Uses the backup API; a file that is not a readable database is copied byte for byte instead.
 */
export async function preserveDatabase(dbPath: string, destination: string, options: VerifyOptions): Promise<void> {
  const temp = tempPathBeside(destination, 'keep');
  try {
    await runSqliteTask({ op: 'snapshot', source: dbPath, destination: temp, busyTimeoutMs: BUSY_TIMEOUT_MS }, options.signal);
    await removeSqliteSidecars(temp);
    await fsyncFile(temp);
    await commitTempFile(temp, destination);
  } catch (error) {
    await removeQuietly(temp);
    await removeSqliteSidecars(temp);
    if (isAbort(error, options.signal)) throw error;
    options.log.warn({ path: dbPath, err: (error as Error).message }, 'previous database is not readable as SQLite; keeping a byte copy');
    await atomicCopyFile(dbPath, destination);
  }
}

/** Put a verified copy in place of `target`. The temp file is consumed either way. */
export async function installCopy(copy: VerifiedCopy, target: string, options: RestoreOptions): Promise<string | undefined> {
  try {
    let previousKeptAt: string | undefined;
    if (options.keepPrevious && (await exists(target))) {
      previousKeptAt = `${target}.backup`;
      await preserveDatabase(target, previousKeptAt, options);
    }
    await adoptOwnership(copy.path, target);
    // Stale sidecars first: after this point the old database is gone in spirit (kept above if asked).
    await removeSqliteSidecars(target);
    await commitTempFile(copy.path, target);
    return previousKeptAt;
  } catch (error) {
    await removeQuietly(copy.path);
    throw error;
  }
}

/**
 * File modes: the verified copy is created 0600 (it holds the whole database). Installed over an existing
 * database, it takes that file's mode and owner, so the app that opens it still can. Installed where there
 * was none, it stays 0600 and takes the owner of its directory: a sidecar running as root then restores a
 * file the app's user (who owns the shared volume) can open. chown works only as root or to oneself, so it
 * is best effort; as a non-root user the file stays this user's (run db-sync as the app's user).
 */
async function adoptOwnership(path: string, target: string): Promise<void> {
  const existing = await stat(target).catch(() => null);
  const owner = existing ?? (await stat(dirname(target)).catch(() => null));
  if (existing) await chmod(path, existing.mode & 0o7777);
  if (owner) await chown(path, owner.uid, owner.gid).catch(() => undefined);
}

/**
 * Restore exactly one object or version to `target`.
 * @returns null when it does not exist. @throws as {@link downloadVerified}; the target is untouched on failure.
 */
export async function restoreExact(
  store: ReplicaStore,
  source: RestoreSource,
  target: string,
  options: RestoreOptions,
): Promise<Restored | null> {
  const copy = await downloadVerified(store, source, target, options);
  if (!copy) return null;
  const previousKeptAt = await installCopy(copy, target, options);
  const { path: _path, ...rest } = copy;
  return { ...rest, target, previousKeptAt, skipped: [] };
}

/** Restore candidates after the current object: older versions of the key, then backups, newest first. */
export async function fallbackCandidates(
  store: ReplicaStore,
  key: string,
  options: { signal?: AbortSignal | undefined; log: Logger; policy?: RetryPolicy | undefined },
): Promise<RestoreSource[]> {
  const versions = await withRetry(`list versions of ${key}`, () => store.listVersions(key, { signal: options.signal }), options);
  const backups = (await withRetry(`list ${backupPrefix(key)}*`, () => store.list(backupPrefix(key), { signal: options.signal }), options))
    .map((o) => ({ key: o.key, at: parseBackupKey(key, o.key) }))
    .filter((b): b is { key: string; at: Date } => b.at !== undefined)
    .sort((a, b) => b.at.getTime() - a.at.getTime());
  return [
    ...versions.filter((v) => !v.isLatest && v.versionId !== undefined).map((v) => ({ key, versionId: v.versionId })),
    ...backups.map((b) => ({ key: b.key })),
  ];
}

/**
 * Restore the newest good copy of `key` to `target`, falling back past copies that fail verification.
 * @returns null when no copy exists at all (a first start).
 * @throws DbSyncError `Corrupt` when copies exist but none verifies; the target is untouched.
 */
export async function restoreNewestGood(
  store: ReplicaStore,
  key: string,
  target: string,
  options: RestoreOptions,
): Promise<Restored | null> {
  const skipped: SkippedCandidate[] = [];
  let candidates: RestoreSource[] | undefined;
  let source: RestoreSource | undefined = { key };
  let index = 0;
  while (source) {
    try {
      const copy = await downloadVerified(store, source, target, options);
      if (copy) {
        if (skipped.length > 0) {
          options.log.error(
            { used: describe(source), skipped },
            `restored an older copy: ${skipped.length} newer cop${skipped.length === 1 ? 'y' : 'ies'} failed verification`,
          );
        }
        const previousKeptAt = await installCopy(copy, target, options);
        const { path: _path, ...rest } = copy;
        return { ...rest, target, previousKeptAt, skipped };
      }
    } catch (error) {
      if (!(error instanceof DbSyncError) || error.kind !== 'Corrupt') throw error;
      options.log.error(
        { key: source.key, versionId: source.versionId, reason: error.message },
        'skipping a copy that failed verification',
      );
      skipped.push({ key: source.key, versionId: source.versionId, reason: error.message });
    }
    // The current object is absent or bad: look at the rest only now, so a normal start costs one GET.
    candidates ??= await fallbackCandidates(store, key, options);
    source = candidates[index++];
  }
  if (skipped.length === 0) return null;
  throw new DbSyncError(
    'Corrupt',
    `no copy of ${key} passed verification (${skipped.length} tried):\n  - ${skipped.map((s) => s.reason).join('\n  - ')}`,
    {
      hint: 'every remote copy is damaged; the local database was left untouched. Inspect them with `db-sync backups`',
    },
  );
}
