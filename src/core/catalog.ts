/**
 * What can be restored: every version of KEY and every timestamped backup, newest first, and the choice
 * of one for a point in time.
 */
import type { Logger } from '../logger.js';
import type { ObjectInfo, ReplicaStore } from '../replica/store.js';
import { backupPrefix, parseBackupKey } from './backup-key.js';
import { recordedSha256 } from './metadata.js';
import { withRetry, type RetryPolicy } from './retry.js';

export interface CatalogEntry {
  readonly kind: 'version' | 'backup';
  readonly key: string;
  readonly versionId: string | undefined;
  /** When the object was stored. For backups, the time in the key name. */
  readonly at: Date;
  readonly sizeBytes: number;
  readonly isLatest: boolean;
  /** From metadata, when asked for and present. */
  readonly sha256?: string | undefined;
}

interface Options {
  readonly log: Logger;
  readonly signal?: AbortSignal | undefined;
  /** How listing retries (default `DEFAULT_RETRY`). */
  readonly policy?: RetryPolicy | undefined;
}

/** Timestamped backups of `key` (current objects only), newest first. */
export async function listBackups(store: ReplicaStore, key: string, options: Options): Promise<Array<ObjectInfo & { at: Date }>> {
  const objects = await withRetry(`list ${backupPrefix(key)}*`, () => store.list(backupPrefix(key), { signal: options.signal }), options);
  return objects
    .flatMap((o) => {
      const at = parseBackupKey(key, o.key);
      return at ? [{ ...o, at }] : [];
    })
    .sort((a, b) => b.at.getTime() - a.at.getTime());
}

/**
 * Versions of `key` and its backups, newest first. With `withChecksums`, each entry's sha256 is read
 * from its metadata (one HEAD per entry: listings do not carry metadata).
 */
export async function listCatalog(
  store: ReplicaStore,
  key: string,
  options: Options & { withChecksums?: boolean },
): Promise<CatalogEntry[]> {
  const versions = await withRetry(`list versions of ${key}`, () => store.listVersions(key, { signal: options.signal }), options);
  const backups = await listBackups(store, key, options);
  const entries: CatalogEntry[] = [
    ...versions.map((v) => ({
      kind: 'version' as const,
      key,
      versionId: v.versionId,
      at: v.lastModified,
      sizeBytes: v.sizeBytes,
      isLatest: v.isLatest,
    })),
    ...backups.map((b) => ({
      kind: 'backup' as const,
      key: b.key,
      versionId: undefined,
      at: b.at,
      sizeBytes: b.sizeBytes,
      isLatest: true,
    })),
  ].sort((a, b) => b.at.getTime() - a.at.getTime());
  if (!options.withChecksums) return entries;
  const out: CatalogEntry[] = [];
  for (const e of entries) {
    const info = await withRetry(`head ${e.key}`, () => store.head(e.key, { versionId: e.versionId, signal: options.signal }), options);
    out.push({ ...e, sha256: info ? recordedSha256(info.metadata) : undefined });
  }
  return out;
}

/** The newest version of `key` stored at or before `at`; undefined when none is that old. */
export function versionAt(entries: readonly CatalogEntry[], at: Date): CatalogEntry | undefined {
  return entries.filter((e) => e.kind === 'version' && e.at.getTime() <= at.getTime()).sort((a, b) => b.at.getTime() - a.at.getTime())[0];
}
