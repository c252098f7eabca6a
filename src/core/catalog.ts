/**
 * What can be restored: every version of KEY and every timestamped backup, newest first, and the choice
 * of one for a point in time.
 */
import type { Logger } from '../logger.js';
import type { ObjectInfo, ReplicaStore } from '../replica/store.js';
import { parseStampedKey, stampedPrefix, type StampedKind } from './backup-key.js';
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

/**
 * HEAD requests in flight at once while reading checksums: 5,000 versions take seconds instead of the
 * minutes one-at-a-time took, and 16 connections are well within the SDK's default pool (50) and any S3
 * request-rate limit (5,500 GET/HEAD per second per prefix).
 */
export const CATALOG_HEAD_CONCURRENCY = 16;

interface Options {
  readonly log: Logger;
  readonly signal?: AbortSignal | undefined;
  /** How listing retries (default `DEFAULT_RETRY`). */
  readonly policy?: RetryPolicy | undefined;
}

/** Timestamped backups of `key` (current objects only), newest first. */
export async function listBackups(store: ReplicaStore, key: string, options: Options): Promise<Array<ObjectInfo & { at: Date }>> {
  return listStamped(store, key, 'backup', options);
}

/** Timestamped keys of one kind (`KEY.backup.*`, `KEY.conflict.*`; current objects only), newest first. */
export async function listStamped(
  store: ReplicaStore,
  key: string,
  kind: StampedKind,
  options: Options,
): Promise<Array<ObjectInfo & { at: Date }>> {
  const prefix = stampedPrefix(key, kind);
  const objects = await withRetry(`list ${prefix}*`, () => store.list(prefix, { signal: options.signal }), options);
  return objects
    .flatMap((o) => {
      const at = parseStampedKey(key, kind, o.key);
      return at ? [{ ...o, at }] : [];
    })
    .sort((a, b) => b.at.getTime() - a.at.getTime());
}

/**
 * Versions of `key` and its backups, newest first. With `withChecksums`, each entry's sha256 is read
 * from its metadata (one HEAD per entry: listings do not carry metadata), {@link CATALOG_HEAD_CONCURRENCY}
 * at a time.
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
  return mapBounded(entries, CATALOG_HEAD_CONCURRENCY, async (e) => {
    const info = await withRetry(`head ${e.key}`, () => store.head(e.key, { versionId: e.versionId, signal: options.signal }), options);
    return { ...e, sha256: info ? recordedSha256(info.metadata) : undefined };
  });
}

/**
 * `fn` over `items` with at most `limit` calls in flight; results in the items' order. The first
 * rejection rejects the whole (calls already started run to their end; no new one starts).
 */
export async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The newest version of `key` stored at or before `at`; undefined when none is that old. */
export function versionAt(entries: readonly CatalogEntry[], at: Date): CatalogEntry | undefined {
  return entries.filter((e) => e.kind === 'version' && e.at.getTime() <= at.getTime()).sort((a, b) => b.at.getTime() - a.at.getTime())[0];
}
