/**
 * What was last synced, remembered next to the database (`DB_LOCAL_PATH.db-sync.json`), so a restart on
 * the same volume can tell "local has unsynced changes" from "the remote moved on" and never overwrite
 * either with the other. Written atomically after every upload and restore.
 */
import { readFile } from 'node:fs/promises';
import { atomicWriteFile, removeQuietly } from '../fs-atomic.js';

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
