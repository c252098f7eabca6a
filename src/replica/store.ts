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
 */
import type { Readable } from 'node:stream';

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

  /** Release connections. Idempotent. */
  close(): void;
}
