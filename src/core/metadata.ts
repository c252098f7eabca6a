/**
 * The metadata every snapshot object carries (S3 user metadata, `x-amz-meta-*`), so a human or a restore
 * can tell what an object is without downloading it.
 */
import type { IntegrityCheck } from '../config.js';
import type { ObjectMetadata } from '../replica/store.js';

/** Metadata keys, lowercase as S3 stores them. Part of the documented S3 layout; never rename one. */
export const META_SHA256 = 'sha256';
export const META_SNAPSHOT_AT = 'snapshot-at';
export const META_SOURCE_HOST = 'source-host';
export const META_TOOL_VERSION = 'db-sync-version';
/**
 * The SQLite check (`quick` or `full`) this very snapshot passed before it was uploaded; absent when none
 * ran. Together with the sha256 it lets a restore skip re-checking the same bytes (see trustedCheck).
 */
export const META_CHECKED = 'checked';
/**
 * A base's position in its chain of segments (docs/continuous-replication.md): generation id, the last seq
 * it holds, and the database checksum there. Parsed and written by src/replication/layout.ts.
 */
export const META_CHAIN_GEN = 'chain-gen';
export const META_CHAIN_SEQ = 'chain-seq';
export const META_CHAIN_CHECKSUM = 'chain-checksum';

/** Who is writing: recorded in metadata and logs. The CLI fills it in from the process. */
export interface Origin {
  readonly host: string;
  readonly toolVersion: string;
}

/** Metadata of a snapshot that passed `check` (as takeSnapshot guarantees before returning it). */
export function snapshotMetadata(snapshot: { sha256: string; takenAt: Date }, origin: Origin, check: IntegrityCheck): ObjectMetadata {
  return {
    [META_SHA256]: snapshot.sha256,
    [META_SNAPSHOT_AT]: snapshot.takenAt.toISOString(),
    [META_SOURCE_HOST]: origin.host,
    [META_TOOL_VERSION]: origin.toolVersion,
    ...(check === 'none' ? {} : { [META_CHECKED]: check }),
  };
}

/**
 * Whether a downloaded copy may skip the SQLite check `wanted`: only when its bytes match the sha256 that
 * db-sync recorded (`sha256Matched`) and the metadata says that very snapshot passed a `quick` check (for
 * `wanted` = quick). The sha256 proves these are the bytes that passed the check before the upload, so
 * running the same check again can only pass again. A `full` check is never skipped: asking for it is
 * asking for a fresh look (and older uploads recorded no check at all).
 */
export function checkAlreadyPassed(metadata: ObjectMetadata, wanted: IntegrityCheck, sha256Matched: boolean): boolean {
  if (!sha256Matched || wanted !== 'quick') return false;
  const checked = metadata[META_CHECKED];
  return checked === 'quick' || checked === 'full';
}

/** The sha256 recorded in an object's metadata, when it is a well-formed one. */
export function recordedSha256(metadata: ObjectMetadata): string | undefined {
  const value = metadata[META_SHA256];
  return value !== undefined && /^[0-9a-f]{64}$/.test(value) ? value : undefined;
}
