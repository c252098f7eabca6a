/**
 * The block digests of the last upload, remembered next to the database (`DB_LOCAL_PATH.db-sync-blocks.json`)
 * so the next upload, in this process or a later one on the same volume, can send only the changed blocks
 * (ReplicaStore.putFromPrevious).
 *
 * Why a local file and not the object's metadata: a 1 GB database has ~125 digests (~5 KB of hex), over
 * S3's 2 KB metadata limit, and reading them back would cost a request per sync. The file is only a hint:
 * the store uses it only when the key's current version is still exactly the recorded one (and of the
 * recorded size); anything else (unreadable, another key or store, someone else wrote since) means a full
 * upload. A stale or lost file therefore costs bandwidth, never correctness.
 */
import { readFile } from 'node:fs/promises';
import { atomicWriteFile, removeQuietly } from '../fs-atomic.js';
import type { PutBase } from '../replica/store.js';

interface UploadBaseRecord {
  readonly location: string;
  readonly key: string;
  readonly versionId: string;
  readonly blockSizeBytes: number;
  readonly sizeBytes: number;
  readonly digests: readonly string[];
}

export function uploadBasePath(dbPath: string): string {
  return `${dbPath}.db-sync-blocks.json`;
}

function isRecord(value: unknown): value is UploadBaseRecord {
  const r = value as Partial<UploadBaseRecord> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.location === 'string' &&
    typeof r.key === 'string' &&
    typeof r.versionId === 'string' &&
    Number.isSafeInteger(r.blockSizeBytes) &&
    Number.isSafeInteger(r.sizeBytes) &&
    Array.isArray(r.digests) &&
    r.digests.every((d) => typeof d === 'string' && /^[0-9a-f]+$/.test(d))
  );
}

/** The base for the next upload of `key` to the store at `location`; undefined when none is recorded for them. */
export async function readUploadBase(dbPath: string, location: string, key: string): Promise<PutBase | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(uploadBasePath(dbPath), 'utf8'));
    if (!isRecord(parsed) || parsed.location !== location || parsed.key !== key) return undefined;
    return {
      versionId: parsed.versionId,
      blocks: { blockSizeBytes: parsed.blockSizeBytes, sizeBytes: parsed.sizeBytes, digests: parsed.digests },
    };
  } catch {
    return undefined;
  }
}

/** Remember `base` as what `key` at `location` now holds; with no base, forget any (the next upload is full). */
export async function writeUploadBase(dbPath: string, location: string, key: string, base: PutBase | undefined): Promise<void> {
  if (!base) {
    await removeQuietly(uploadBasePath(dbPath));
    return;
  }
  const record: UploadBaseRecord = { location, key, versionId: base.versionId, ...base.blocks };
  await atomicWriteFile(uploadBasePath(dbPath), `${JSON.stringify(record)}\n`);
}
