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
import { chmod, chown, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { IntegrityCheck } from '../config.js';
import { AbortedError, DbSyncError, isAbort, StorageError, toError, wrapError } from '../errors.js';
import { atomicCopyFile, commitTempFile, fsyncFile, removeQuietly, tempPathBeside } from '../fs-atomic.js';
import type { Logger } from '../logger.js';
import type { ObjectInfo, ReplicaStore } from '../replica/store.js';
import { parseChainMetadata } from '../replication/layout.js';
import { replayChain, type ReplayResult } from '../replication/replay.js';
import { backupPrefix, keyOfBackup, parseBackupKey } from './backup-key.js';
import { checkAlreadyPassed, recordedSha256 } from './metadata.js';
import { withRetry, type RetryPolicy } from './retry.js';
import { bothSettled } from './settle.js';
import { BUSY_TIMEOUT_MS, runSqliteTask, sqliteHint, type CheckResult } from './sqlite-worker.js';

/** One object (or object version) that can be restored. */
export interface RestoreSource {
  readonly key: string;
  /** A specific version; `undefined` means the current object. */
  readonly versionId?: string | undefined;
  /** When it was stored, where a listing said so. */
  readonly storedAt?: Date | undefined;
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
  /**
   * Whether the copy's sha256 matched the one recorded in its metadata: it arrived exactly as it was
   * uploaded, so it is not damaged in the store, only bad content someone put there. Such a copy is never
   * replaced automatically by an older one.
   */
  readonly checksumMatched: boolean;
}

/** A downloaded copy is bad: truncated, a sha256 mismatch, or content SQLite rejects. Exit 6. */
export class VerificationFailedError extends DbSyncError {
  constructor(
    message: string,
    /** See {@link SkippedCandidate.checksumMatched}. */
    readonly checksumMatched: boolean,
  ) {
    super('Corrupt', message, { hint: 'the remote copy is damaged; restore an older version (`db-sync backups` lists them)' });
    this.name = 'VerificationFailedError';
  }
}

/**
 * A local failure while writing or checking a download (no space, no permission, an I/O error, too many
 * open files) as the exit-7 error that names the directory and the fix. Never a reason to skip a copy.
 */
function localRestoreError(what: string, dir: string, error: unknown): DbSyncError {
  const err = toError(error);
  const code = (error as { code?: string }).code ?? '';
  const cause = error instanceof DbSyncError ? (error.cause ?? error) : error;
  const reason = err.message.startsWith(`${code}:`) || code === '' ? err.message : `${code}: ${err.message}`;
  return new DbSyncError('LocalDatabase', `${what} in ${dir} failed on this machine (the remote copy is not at fault): ${reason}`, {
    hint: `${(error instanceof DbSyncError ? error.hint : undefined) ?? sqliteHint(code) ?? `fix ${dir}`}; nothing was replaced or uploaded`,
    cause,
  });
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
  const temp = tempPathBeside(target, 'restore');
  try {
    const onProgress = options.onProgress;
    // The store writes the file and hashes it on the way (S3: parallel ranged GETs of one version).
    let got: Awaited<ReturnType<ReplicaStore['download']>>;
    try {
      got = await withRetry(
        `download ${describe(source)}`,
        () => store.download(source.key, temp, { versionId: source.versionId, signal: options.signal, onProgress }),
        { log: options.log, signal: options.signal, policy: options.policy },
      );
    } catch (error) {
      // The store maps its own errors (a reset mid-download is a retryable StorageError); the rest is the
      // local file: no space, no permission.
      if (error instanceof StorageError || error instanceof AbortedError || isAbort(error, options.signal)) throw error;
      throw localRestoreError(`download ${describe(source)}`, dirname(target), error);
    }
    if (!got) {
      await removeQuietly(temp);
      return null;
    }
    const { sha256 } = got;
    const expected = recordedSha256(got.info.metadata);
    const problem = (reason: string, checksumMatched = false): VerificationFailedError =>
      new VerificationFailedError(`${describe(source)} failed verification: ${reason}`, checksumMatched);
    const { size } = await stat(temp);
    if (size !== got.sizeBytes) throw problem(`received ${size} bytes, expected ${got.sizeBytes} (truncated)`);
    if (expected !== undefined && expected !== sha256) {
      throw problem(`sha256 ${sha256} does not match the recorded ${expected}`);
    }
    const chain = options.applyChain === false ? undefined : await replayOnto(store, got.info, temp, options);
    // The fsync (writing the copy back to disk) and the check (reading it from the page cache) overlap:
    // about a second saved at 1 GB. Both must succeed before the copy may be installed. The check is
    // skipped when the sha256 proves these are the bytes db-sync checked before uploading them. It throws
    // on a local failure (I/O, no room for its -shm) and answers "not ok" only about the content.
    // Only for the bytes as downloaded: a chain applied on top makes a file nobody has checked yet.
    const trusted =
      (chain === undefined || chain.segments === 0) && checkAlreadyPassed(got.info.metadata, options.check, expected !== undefined);
    let check: CheckResult | undefined;
    try {
      [check] = await bothSettled(
        trusted ? Promise.resolve(undefined) : runSqliteTask({ op: 'check', path: temp, check: options.check }, options.signal),
        fsyncFile(temp),
      );
    } catch (error) {
      if (isAbort(error, options.signal)) throw error;
      throw localRestoreError(`check the download of ${describe(source)}`, dirname(target), error);
    }
    await removeSqliteSidecars(temp);
    if (check && !check.ok && chain !== undefined && chain.segments > 0) {
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
    if (check && !check.ok) throw problem(`not a healthy SQLite database (${check.problems.join('; ')})`, expected !== undefined);
    if (trusted) {
      options.log.debug({ key: source.key, versionId: got.info.versionId }, 'integrity check skipped: sha256 matches a checked snapshot');
    }
    return { path: temp, info: got.info, sha256, sizeBytes: got.sizeBytes, checksumVerified: expected !== undefined, chain };
  } catch (error) {
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
 * Uses the backup API. A file SQLite cannot copy (not a database, damaged, locked past the busy timeout) is
 * copied byte for byte instead, together with its -wal as `destination-wal` (`.backup-wal`): the -wal may
 * hold committed transactions the main file lacks, and SQLite replays it when `destination` is opened.
 * A stale `destination-wal`/`-shm` from an earlier byte copy is removed, so it is never replayed into a
 * newer copy.
 * @throws when neither copy can be made (the caller then must not replace `dbPath`).
 */
export async function preserveDatabase(dbPath: string, destination: string, options: VerifyOptions): Promise<void> {
  const temp = tempPathBeside(destination, 'keep');
  try {
    await runSqliteTask({ op: 'snapshot', source: dbPath, destination: temp, busyTimeoutMs: BUSY_TIMEOUT_MS }, options.signal);
    await removeSqliteSidecars(temp);
    await fsyncFile(temp);
    await removeSqliteSidecars(destination);
    await commitTempFile(temp, destination);
  } catch (error) {
    await removeQuietly(temp);
    await removeSqliteSidecars(temp);
    if (isAbort(error, options.signal)) throw error;
    const wal = `${dbPath}-wal`;
    const hasWal = await exists(wal);
    options.log.warn(
      { path: dbPath, err: toError(error).message, keptAt: destination, walKeptAt: hasWal ? `${destination}-wal` : undefined },
      'previous database is not readable as SQLite; keeping a byte copy (with its -wal)',
    );
    await removeSqliteSidecars(destination);
    // The -wal first: a main file without its -wal beside it would be the copy that loses transactions.
    if (hasWal) await atomicCopyFile(wal, `${destination}-wal`);
    await atomicCopyFile(dbPath, destination);
  }
}

/** Put a verified copy in place of `target`. The temp file is consumed either way. */
export async function installCopy(copy: VerifiedCopy, target: string, options: RestoreOptions): Promise<string | undefined> {
  try {
    // Owner and mode before anything is touched (a refusal leaves no .backup behind), and before an fsync
    // that makes them durable with the content: after a power loss the installed file is never 0600.
    await adoptOwnership(copy.path, target);
    await fsyncFile(copy.path);
    let previousKeptAt: string | undefined;
    if (options.keepPrevious && (await exists(target))) {
      previousKeptAt = `${target}.backup`;
      await preserveDatabase(target, previousKeptAt, options);
    }
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
 * database, it takes that file's mode and owner, so the app that opens it still can; when it cannot take
 * the owner (chown works only as root, or to oneself), the restore is refused and the old file stays: a
 * file the app can read but not write is a failure found later, at its first write. Installed where there
 * was none, it stays 0600 and takes the owner of its directory when it can (a sidecar running as root then
 * restores a file the app's user, who owns the shared volume, can open); there is no old owner to keep.
 * @throws DbSyncError `LocalDatabase` when the existing file's owner cannot be kept.
 */
async function adoptOwnership(path: string, target: string): Promise<void> {
  const existing = await stat(target).catch(() => null);
  if (!existing) {
    const dir = await stat(dirname(target)).catch(() => null);
    if (dir) await chown(path, dir.uid, dir.gid).catch(() => undefined);
    return;
  }
  await chmod(path, existing.mode & 0o7777);
  await chown(path, existing.uid, existing.gid).catch(() => undefined);
  const installed = await stat(path);
  if (installed.uid === existing.uid && installed.gid === existing.gid) return;
  throw new DbSyncError(
    'LocalDatabase',
    `${target} is owned by uid ${existing.uid} gid ${existing.gid}; db-sync runs as uid ${installed.uid} gid ${installed.gid} ` +
      'and cannot give the restored file that owner, so it was not replaced (the app could lose write access to it)',
    {
      hint:
        "run db-sync as the database file's owner (the app's user: `user` in the task definition or compose file), or as root; " +
        'the existing file was left untouched',
    },
  );
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
    ...versions
      .filter((v) => !v.isLatest && v.versionId !== undefined)
      .map((v) => ({ key, versionId: v.versionId, storedAt: v.lastModified })),
    ...backups.map((b) => ({ key: b.key, storedAt: b.at })),
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
  let currentAbsent = false;
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
      if (index === 0) currentAbsent = true;
    } catch (error) {
      // Only a copy found bad is skipped; a local failure (exit 7) or a storage error stops the restore.
      if (!(error instanceof VerificationFailedError)) throw error;
      options.log.error(
        { key: source.key, versionId: source.versionId, reason: error.message, checksumMatched: error.checksumMatched },
        'skipping a copy that failed verification',
      );
      skipped.push({ key: source.key, versionId: source.versionId, reason: error.message, checksumMatched: error.checksumMatched });
    }
    // The current object is absent or bad: look at the rest only now, so a normal start costs one GET.
    candidates ??= await fallbackCandidates(store, key, options);
    source = candidates[index++];
    if (currentAbsent && index === 1 && source?.key === key && source.versionId !== undefined) {
      // Versions exist but no current object: the newest version of KEY is a delete marker.
      options.log.warn(
        { key, versionId: source.versionId, storedAt: source.storedAt?.toISOString() },
        `${key} has no current object (its newest version is a delete marker: the key was deleted); restoring its newest ` +
          `earlier version anyway, so that deleting the key by accident loses nothing. To start from an empty database, ` +
          `delete every version of ${key}`,
      );
    }
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
