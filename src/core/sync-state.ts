/**
 * What was last synced, remembered next to the database (`DB_LOCAL_PATH.db-sync.json`), so a restart on
 * the same volume can tell "local has unsynced changes" from "the remote moved on" and never overwrite
 * either with the other. Written atomically after every upload and restore of the database, by the daemon
 * and by the one-shot commands (`upload`, `shutdown`, `download`, `restore --force`) alike: a command that
 * moved the database without recording it would make the next start cry conflict.
 */
import { readFile } from 'node:fs/promises';
import { toError } from '../errors.js';
import { atomicWriteFile, removeQuietly } from '../fs-atomic.js';
import type { Logger } from '../logger.js';
import type { ObjectInfo, ReplicaStore } from '../replica/store.js';
import { recordedSha256 } from './metadata.js';

export interface SyncState {
  readonly key: string;
  /** sha256 of the content both sides held at the last sync. */
  readonly sha256: string;
  readonly versionId: string | undefined;
  readonly syncedAt: string;
}

export function statePath(dbPath: string): string {
  return `${dbPath}.db-sync.json`;
}

/** The recorded state, or undefined when there is none (or it is unreadable: treated as unknown history). */
export async function readSyncState(dbPath: string): Promise<SyncState | undefined> {
  try {
    const parsed = JSON.parse(await readFile(statePath(dbPath), 'utf8')) as Partial<SyncState>;
    return typeof parsed.sha256 === 'string' && typeof parsed.key === 'string' ? (parsed as SyncState) : undefined;
  } catch {
    return undefined;
  }
}

export async function writeSyncState(dbPath: string, state: SyncState): Promise<void> {
  await atomicWriteFile(statePath(dbPath), `${JSON.stringify(state)}\n`);
}

export async function clearSyncState(dbPath: string): Promise<void> {
  await removeQuietly(statePath(dbPath));
}

/**
 * Record that `dbPath` and `key` both hold content `sha256` (version `versionId` of `key`; undefined when
 * the content came from another key, e.g. a timestamped backup). Never throws: the state only sharpens
 * the next start's decision, so failing to write it is logged, not fatal.
 */
export async function recordSync(
  dbPath: string,
  synced: { key: string; sha256: string; versionId: string | undefined },
  log: Logger,
): Promise<void> {
  try {
    await writeSyncState(dbPath, { ...synced, syncedAt: new Date().toISOString() });
  } catch (error) {
    log.warn({ err: toError(error).message, path: statePath(dbPath) }, 'could not write the sync state file');
  }
}

/**
 * Record a restore into the live database `dbPath` (`download`, `restore --force`).
 * - The newest good copy: both sides now hold it.
 * - A copy the user picked (`--version-id`, `--at`, `--backup`) other than the current object: a rollback,
 *   a deliberate local change. The state then names the current remote object, so the next start sees
 *   "only the local side moved" and uploads the rollback, rather than restoring KEY over it.
 */
export async function recordRestore(
  store: ReplicaStore,
  key: string,
  dbPath: string,
  restored: { sha256: string; info: ObjectInfo },
  options: { picked: boolean; log: Logger; signal?: AbortSignal | undefined },
): Promise<void> {
  const versionOfKey = restored.info.key === key ? restored.info.versionId : undefined;
  if (options.picked) {
    const current = await store.head(key, { signal: options.signal }).catch(() => null);
    const isCurrent = current !== null && versionOfKey !== undefined && current.versionId === versionOfKey;
    if (current && !isCurrent) {
      const sha256 = recordedSha256(current.metadata) ?? `unknown:${current.versionId ?? 'current'}`;
      await recordSync(dbPath, { key, sha256, versionId: current.versionId }, options.log);
      return;
    }
  }
  await recordSync(dbPath, { key, sha256: restored.sha256, versionId: versionOfKey }, options.log);
}
