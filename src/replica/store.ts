/**
 * The replica store: the one small interface between db-sync's domain logic and where snapshots live.
 *
 * Implementations: {@link S3Store} (any S3-compatible server) and {@link DirStore} (a local directory).
 * The contract, checked by one test suite against every implementation:
 * - "absent" is `null`, never an exception;
 * - failures are {@link StorageError}s with `retryable` set; no backend-specific error type escapes;
 * - every slow call takes an AbortSignal and stops promptly when it fires;
 * - `put` is atomic: readers see the old object or the new one, never a partial one;
 * - versions are listed newest first.
 *
 * Stores that can compare-and-swap small objects also implement {@link ConditionalStore} (the lease uses it).
 */
import type { Readable } from 'node:stream';
import { StorageError } from '../errors.js';

/** User metadata stored with each snapshot object. Keys are lowercase (S3 lowercases them anyway). */
export type ObjectMetadata = Readonly<Record<string, string>>;

export interface ObjectInfo {
  readonly key: string;
  /** Version id, when the store keeps versions; `undefined` on an unversioned store. */
  readonly versionId: string | undefined;
  readonly sizeBytes: number;
  readonly lastModified: Date;
  /** Whether this is the current version of the key. */
  readonly isLatest: boolean;
  /** User metadata. Listing calls may leave it empty (S3 does not return it in listings). */
  readonly metadata: ObjectMetadata;
}

export interface GetResult {
  readonly info: ObjectInfo;
  /** The object's bytes. The caller must consume or destroy it. */
  readonly body: Readable;
}

export interface PutOptions {
  readonly metadata: ObjectMetadata;
  readonly signal?: AbortSignal | undefined;
  /** Called as bytes are sent, with the total so far. */
  readonly onProgress?: ((sentBytes: number) => void) | undefined;
}

/**
 * Digests of a file's fixed-size blocks, as a store uploaded it: what a later {@link ReplicaStore.putFromPrevious}
 * compares the next file against to find the unchanged blocks it can copy server-side.
 */
export interface BlockDigests {
  readonly blockSizeBytes: number;
  readonly sizeBytes: number;
  /** One hex digest per block, in file order; the last block may be shorter than `blockSizeBytes`. */
  readonly digests: readonly string[];
}

/** The version a new object may be built from, with the block digests of its content. */
export interface PutBase {
  readonly versionId: string;
  readonly blocks: BlockDigests;
}

export interface PutFromPreviousOptions extends PutOptions {
  /** The version to reuse unchanged ranges of; `undefined` = no base known, upload everything. */
  readonly base: PutBase | undefined;
}

export interface PutFromPreviousResult {
  readonly info: ObjectInfo;
  /** Block digests of what was stored, for the next call; `undefined` when this store does not use them. */
  readonly blocks: BlockDigests | undefined;
  /** `delta`: unchanged ranges were copied from the base version; `full`: every byte was sent. */
  readonly mode: 'delta' | 'full';
  /** Why a base was given but not used (logged by the caller). */
  readonly fallbackReason?: string | undefined;
  /** Bytes sent over the network, and bytes copied server-side from the base version. */
  readonly sentBytes: number;
  readonly copiedBytes: number;
}

export interface DownloadOptions extends ReadOptions {
  /** Called as bytes arrive, with the total so far and the object's size. */
  readonly onProgress?: ((receivedBytes: number, totalBytes: number) => void) | undefined;
}

/** An object written to a local file by {@link ReplicaStore.download}. */
export interface Downloaded {
  readonly info: ObjectInfo;
  /** sha256 (lowercase hex) of the bytes written, computed as they arrived. */
  readonly sha256: string;
  readonly sizeBytes: number;
}

export interface ReadOptions {
  readonly versionId?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface ReplicaStore {
  /** Human-readable location, e.g. `s3://bucket` or `/var/backups/db`. Never contains credentials. */
  readonly location: string;

  /** Metadata of an object (or one version of it); `null` when it does not exist. */
  head(key: string, options?: ReadOptions): Promise<ObjectInfo | null>;

  /** Open an object (or one version of it) for reading; `null` when it does not exist. */
  get(key: string, options?: ReadOptions): Promise<GetResult | null>;

  /**
   * Upload a local file as `key`, atomically, with metadata. Memory stays bounded whatever the file size.
   * @returns the new object's info (with its version id where the store keeps versions).
   */
  put(key: string, sourcePath: string, options: PutOptions): Promise<ObjectInfo>;

  /**
   * Like {@link put}, and the result is the same complete object; but where the store can, ranges whose
   * block digest equals `base`'s are copied server-side from exactly that version instead of being sent.
   * Whenever anything is uncertain (no base, `base.versionId` is no longer the key's current version, the
   * block layout differs, the server refuses part copies) it falls back to sending every byte.
   */
  putFromPrevious(key: string, sourcePath: string, options: PutFromPreviousOptions): Promise<PutFromPreviousResult>;

  /**
   * Write an object (or one version of it) into a new file at `path` (mode 0600, replaced if present),
   * hashing the bytes on the way, with memory bounded whatever the size. The bytes are not fsynced.
   * All bytes come from one version, even if the key is overwritten meanwhile.
   * @returns null when the object does not exist (no file is left then). On failure the file may remain
   *   partially written; the caller removes it.
   */
  download(key: string, path: string, options?: DownloadOptions): Promise<Downloaded | null>;

  /** Copy one version of an object to another key, with its metadata. */
  copy(
    sourceKey: string,
    sourceVersionId: string | undefined,
    destinationKey: string,
    options?: { signal?: AbortSignal | undefined },
  ): Promise<ObjectInfo>;

  /** Current objects whose key starts with `prefix`, sorted by key. Metadata is not filled in. */
  list(prefix: string, options?: { signal?: AbortSignal | undefined }): Promise<ObjectInfo[]>;

  /** Every stored version of exactly `key`, newest first. A store without versions returns the current one. */
  listVersions(key: string, options?: { signal?: AbortSignal | undefined }): Promise<ObjectInfo[]>;

  /** Delete the current object at `key` (on a versioned store, older versions stay). Absent is not an error. */
  delete(key: string, options?: { signal?: AbortSignal | undefined }): Promise<void>;

  /**
   * Abort incomplete uploads (S3 multipart uploads, a directory's temp files) of keys that start with
   * `prefix` and that `include` accepts, begun before `initiatedBefore`: what a killed process left.
   * Optional: a store that leaves nothing behind omits it.
   * @returns the keys whose uploads were aborted.
   */
  abortStaleUploads?(
    prefix: string,
    options: { initiatedBefore: Date; include?: ((key: string) => boolean) | undefined; signal?: AbortSignal | undefined },
  ): Promise<string[]>;

  /**
   * Whether the store keeps older versions of an overwritten object: S3 bucket versioning
   * (GetBucketVersioning). Fallback restores, `restore --at` and `backups` depend on it.
   * Optional: a store that always keeps versions (DirStore) may answer `enabled` or omit it.
   */
  versioning?(options?: { signal?: AbortSignal | undefined }): Promise<VersioningState>;

  /** Release connections. Idempotent. */
  close(): void;
}

/**
 * A store's versioning: `enabled`; `suspended` (was on, now off: new writes overwrite); `disabled` (never
 * turned on).
 */
export type VersioningState = 'enabled' | 'suspended' | 'disabled';

/** A small object read whole, with the entity tag that conditional writes compare against. */
export interface SmallObject {
  readonly bytes: Buffer;
  /** Opaque tag of this content, without quotes; changes on every write. */
  readonly etag: string;
}

/** The condition of a conditional write: create only (`ifNoneMatch`), or replace only this content (`ifMatch`). */
export type WriteCondition = { readonly ifNoneMatch: true } | { readonly ifMatch: string };

/**
 * Thrown when a conditional write's condition does not hold: the object exists (`ifNoneMatch`), or it is
 * absent or holds other content (`ifMatch`). Never retryable: someone else wrote first.
 */
export class PreconditionFailedError extends StorageError {
  constructor(message: string, cause?: unknown) {
    super(message, { retryable: false, code: 'PreconditionFailed', kind: 'Refused', cause });
    this.name = 'PreconditionFailedError';
  }
}

/**
 * Compare-and-swap on small objects (a few KB, read and written whole).
 *
 * The contract (checked by the store contract suite where the backend enforces it): a write whose
 * condition does not hold throws {@link PreconditionFailedError} and changes nothing; of two concurrent
 * writes with the same condition at most one succeeds. Whether a given S3 endpoint really enforces the
 * conditions is not promised here: `probeConditionalWrites` (src/core/lease-probe.ts) finds out.
 */
export interface ConditionalStore {
  /** The object's bytes and etag; `null` when absent. */
  getBytes(key: string, options?: { signal?: AbortSignal | undefined }): Promise<SmallObject | null>;

  /**
   * Write `bytes` to `key` if `condition` holds.
   * @returns the new etag.
   * @throws PreconditionFailedError when the condition does not hold.
   */
  putBytes(key: string, bytes: Uint8Array, condition: WriteCondition, options?: { signal?: AbortSignal | undefined }): Promise<string>;
}

/** Whether a store offers compare-and-swap writes. */
export function isConditionalStore(store: ReplicaStore): store is ReplicaStore & ConditionalStore {
  const s = store as Partial<ConditionalStore>;
  return typeof s.getBytes === 'function' && typeof s.putBytes === 'function';
}
