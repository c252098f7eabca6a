/**
 * {@link ReplicaStore} on S3 or any S3-compatible server (MinIO, R2, Ceph RGW, LocalStack).
 *
 * Uploads go through `s3-upload.ts`: a file that fits one part is a plain PutObject, larger ones are
 * multipart of parts streamed from the file (or copied server-side from the previous version),
 * whatever the database size. A failed or aborted multipart upload is aborted on the server, so S3 keeps the previous
 * complete object and no parts linger (the bucket lifecycle rule catches what a SIGKILL leaves).
 */
import { stat } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCopyCommand,
  type CompletedPart,
  type S3ClientConfig,
  type ServerSideEncryption,
} from '@aws-sdk/client-s3';
import { AbortedError, DbSyncError, isLocalFileError, toError, wrapError } from '../errors.js';
import { baseMismatch, blockSizeFor, DEFAULT_BLOCK_BYTES } from './blocks.js';
import { DEFAULT_DOWNLOAD_CONCURRENCY } from '../config.js';
import { downloadRanged } from './s3-download.js';
import { ABORT_UPLOAD_TIMEOUT_MS, PartCopyRefusedError, putMultipart, putWhole, type UploadTarget } from './s3-upload.js';
import { isNotFound, toStorageError } from './s3-errors.js';
import {
  PreconditionFailedError,
  type ConditionalStore,
  type DownloadOptions,
  type Downloaded,
  type GetResult,
  type ObjectInfo,
  type ObjectMetadata,
  type PutBase,
  type PutFromPreviousOptions,
  type PutFromPreviousResult,
  type PutOptions,
  type ReadOptions,
  type ReplicaStore,
  type SmallObject,
  type VersioningState,
  type WriteCondition,
} from './store.js';

/** Part size of uploads of databases up to 80 GB (larger ones get larger parts: see blockSizeFor). */
export const PART_SIZE_BYTES = DEFAULT_BLOCK_BYTES;
/** CopyObject copies at most 5 GiB (an S3 limit); a larger object is copied in parts (UploadPartCopy). */
export const MAX_COPY_OBJECT_BYTES = 5 * 1024 ** 3;
/** Part size of a multipart copy: a 5 GiB object in 10 parts; the 10,000-part limit is 5 TB. */
export const COPY_PART_SIZE_BYTES = 512 * 1024 ** 2;
/** Parts of a multipart copy in flight at once (server-side copies: no local memory, no local bandwidth). */
export const COPY_QUEUE_SIZE = 8;
export { ABORT_UPLOAD_TIMEOUT_MS };

export interface S3StoreOptions {
  readonly bucket: string;
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  readonly forcePathStyle?: boolean | undefined;
  /** Server-side encryption asked for on every write (PutObject, multipart, CopyObject); absent = the bucket's default. */
  readonly sse?: { readonly mode: 'AES256' | 'aws:kms'; readonly kmsKeyId?: string | undefined } | undefined;
  /** Ranged GETs in flight per download (default DEFAULT_DOWNLOAD_CONCURRENCY). */
  readonly downloadConcurrency?: number | undefined;
  /** Use a prepared client (tests with aws-sdk-client-mock). */
  readonly client?: S3Client | undefined;
}

/**
 * Conditional writes (the lease) get one attempt per request: when S3 applies a write but its answer is lost
 * (a reset, a timeout), the SDK's retry meets its own write and gets 412, which reads as "someone else wrote".
 * The lease's own loop retries, and after a 412 it looks whether the object holds its own record.
 */
export const CONDITIONAL_WRITE_MAX_ATTEMPTS = 1;

const ignore = (): void => undefined;
const SILENT_SDK_LOGGER = { trace: ignore, debug: ignore, info: ignore, warn: ignore, error: ignore };

/** Build the S3 client db-sync uses. Credentials come only from the SDK's default provider chain. */
export function createS3Client(options: Omit<S3StoreOptions, 'client' | 'bucket'> & { maxAttempts?: number | undefined }): S3Client {
  const config: S3ClientConfig = {
    region: options.region ?? 'us-east-1',
    forcePathStyle: options.forcePathStyle ?? false,
    // CRC32 computed in JavaScript made a 40 MB multipart upload ~10x slower (measured on Ceph RGW), and
    // streamed PutObject bodies with default checksums get 411 MissingContentLength from RGW. db-sync
    // verifies every object by its own sha256 (native crypto) on restore, so it opts out.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 120_000 },
    // Without a logger the SDK prints "An error was encountered in a non-retryable streaming request." on
    // stderr whenever a streamed part fails; s3-upload.ts retries those parts itself and reports what fails.
    logger: SILENT_SDK_LOGGER,
  };
  if (options.endpoint) config.endpoint = options.endpoint;
  if (options.maxAttempts !== undefined) config.maxAttempts = options.maxAttempts;
  return new S3Client(config);
}

function metadataOf(raw: Record<string, string> | undefined): ObjectMetadata {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw ?? {})) out[k.toLowerCase()] = v;
  return out;
}

/** The SSE request parameters for `sse`; empty when the bucket's default applies. */
export function sseParams(sse: S3StoreOptions['sse']): { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string } {
  if (!sse) return {};
  return sse.mode === 'aws:kms' && sse.kmsKeyId
    ? { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: sse.kmsKeyId }
    : { ServerSideEncryption: sse.mode };
}

/** ETags arrive quoted (`"abc"`); db-sync hands them around bare. */
function bareEtag(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/"/g, '');
}

function httpStatusOf(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

export class S3Store implements ReplicaStore, ConditionalStore {
  readonly location: string;
  private readonly client: S3Client;
  /** For {@link putBytes} only: {@link CONDITIONAL_WRITE_MAX_ATTEMPTS} attempts (a prepared client is used as is). */
  private readonly conditionalClient: S3Client;
  private readonly bucket: string;
  /** Sent with every write: CopyObject does not inherit the source's encryption, it takes the request's or the bucket's. */
  private readonly sse: ReturnType<typeof sseParams>;
  /**
   * How this endpoint wants the If-Match ETag: AWS takes the quoted form, Ceph RGW matches only the bare one
   * (NOTES.md). Unknown until a conditional write first succeeds; then only that form is sent.
   */
  private ifMatchForm: 'quoted' | 'bare' | undefined;
  /** Why this server refused a part copy, once it did: later uploads of this process send everything. */
  private partCopyRefused: string | undefined;
  private readonly downloadConcurrency: number;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.sse = sseParams(options.sse);
    this.client = options.client ?? createS3Client(options);
    this.conditionalClient = options.client ?? createS3Client({ ...options, maxAttempts: CONDITIONAL_WRITE_MAX_ATTEMPTS });
    this.downloadConcurrency = options.downloadConcurrency ?? DEFAULT_DOWNLOAD_CONCURRENCY;
    this.location = `s3://${options.bucket}${options.endpoint ? ` (${options.endpoint})` : ''}`;
  }

  private fail(error: unknown, operation: string, key?: string): Error {
    if (error instanceof AbortedError) return error;
    return toStorageError(error, `${operation} s3://${this.bucket}${key === undefined ? '' : `/${key}`}`, {
      bucket: this.bucket,
      key,
    });
  }

  async head(key: string, options: ReadOptions = {}): Promise<ObjectInfo | null> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key, VersionId: options.versionId }), {
        abortSignal: options.signal,
      });
      return {
        key,
        versionId: out.VersionId ?? options.versionId,
        sizeBytes: out.ContentLength ?? 0,
        lastModified: out.LastModified ?? new Date(0),
        isLatest: options.versionId === undefined,
        metadata: metadataOf(out.Metadata),
      };
    } catch (error) {
      if (!isNotFound(error)) throw this.fail(error, 'head', key);
      await this.assertBucketExists(key, options.signal);
      return null;
    }
  }

  /**
   * A HEAD answer has no body, so S3 reports a missing bucket as a bare 404 `NotFound`, the same as a missing
   * key. Ask about the bucket once, so a missing bucket is an error and not "no object yet".
   */
  private async assertBucketExists(key: string, signal: AbortSignal | undefined): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal });
    } catch (error) {
      if ((error as Error).name === 'AbortError') throw this.fail(error, 'head', key);
      // Only a 404 is conclusive; anything else leaves the object's own 404 standing.
      if (httpStatusOf(error) !== 404) return;
      const missing = { name: 'NoSuchBucket', $fault: 'client', $metadata: { httpStatusCode: 404 }, message: 'the bucket does not exist' };
      throw this.fail(missing, 'head', key);
    }
  }

  async get(key: string, options: ReadOptions = {}): Promise<GetResult | null> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, VersionId: options.versionId }), {
        abortSignal: options.signal,
      });
      if (!out.Body) throw new Error('response has no body');
      return {
        info: {
          key,
          versionId: out.VersionId ?? options.versionId,
          sizeBytes: out.ContentLength ?? 0,
          lastModified: out.LastModified ?? new Date(0),
          isLatest: options.versionId === undefined,
          metadata: metadataOf(out.Metadata),
        },
        // A reset mid-body surfaces as an error of this stream, long after send() resolved: map it here too,
        // so a caller sees a retryable StorageError, as for any other transient S3 failure.
        body: mapStreamErrors(out.Body as Readable, (error) => this.fail(error, 'download', key)),
      };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw this.fail(error, 'download', key);
    }
  }

  async put(key: string, sourcePath: string, options: PutOptions): Promise<ObjectInfo> {
    return (await this.putFromPrevious(key, sourcePath, { ...options, base: undefined })).info;
  }

  async putFromPrevious(key: string, sourcePath: string, options: PutFromPreviousOptions): Promise<PutFromPreviousResult> {
    const target: UploadTarget = {
      client: this.client,
      bucket: this.bucket,
      key,
      metadata: options.metadata,
      sse: this.sse,
      signal: options.signal,
      onProgress: options.onProgress,
    };
    try {
      const { size } = await stat(sourcePath);
      const blockSizeBytes = blockSizeFor(size);
      if (size <= blockSizeBytes) {
        // One request: a PutObject of the whole file (item: no multipart for what fits one part).
        const { versionId, digest } = await putWhole(target, sourcePath, size);
        // Everything a HEAD would say is known from the request and its answer (a 200 means the object is
        // stored whole), so no HEAD follows: a segment a second would otherwise cost a second request.
        // lastModified is this machine's clock, within the request's duration of the server's.
        const info: ObjectInfo = {
          key,
          versionId,
          sizeBytes: size,
          lastModified: new Date(),
          isLatest: true,
          metadata: { ...options.metadata },
        };
        return { info, blocks: { blockSizeBytes, sizeBytes: size, digests: [digest] }, mode: 'full', sentBytes: size, copiedBytes: 0 };
      }
      let fallbackReason = options.base ? await this.deltaRefusal(key, options.base, blockSizeBytes, options.signal) : undefined;
      if (options.base && fallbackReason === undefined) {
        const copySource = `${this.bucket}/${key.split('/').map(encodeURIComponent).join('/')}?versionId=${encodeURIComponent(options.base.versionId)}`;
        try {
          const out = await putMultipart(target, sourcePath, size, blockSizeBytes, { blocks: options.base.blocks, copySource });
          const info = await this.infoAfterWrite(key, out.versionId, options.signal);
          const mode = out.copiedBytes > 0 ? 'delta' : 'full';
          return { info, blocks: out.blocks, mode, sentBytes: size - out.copiedBytes, copiedBytes: out.copiedBytes };
        } catch (error) {
          if (!(error instanceof PartCopyRefusedError)) throw error;
          if (error.permanent) this.partCopyRefused = error.message;
          fallbackReason = error.message;
        }
      }
      const out = await putMultipart(target, sourcePath, size, blockSizeBytes);
      const info = await this.infoAfterWrite(key, out.versionId, options.signal);
      return { info, blocks: out.blocks, mode: 'full', fallbackReason, sentBytes: size, copiedBytes: 0 };
    } catch (error) {
      throw this.fail(error, 'upload', key);
    }
  }

  /** Why `base` cannot be built on; undefined when it can. */
  private async deltaRefusal(
    key: string,
    base: PutBase,
    blockSizeBytes: number,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    if (this.partCopyRefused) return `the server refused part copies earlier (${this.partCopyRefused})`;
    const mismatch = baseMismatch(base, blockSizeBytes);
    if (mismatch) return mismatch;
    const current = await this.head(key, { signal });
    if (!current || current.versionId !== base.versionId) {
      return `${key} changed since the last upload (current version ${current?.versionId ?? 'none'}, expected ${base.versionId})`;
    }
    if (current.sizeBytes !== base.blocks.sizeBytes)
      return `${key} is ${current.sizeBytes} bytes, the recorded digests describe ${base.blocks.sizeBytes}`;
    return undefined;
  }

  /** The info of a version just written: CompleteMultipartUpload returns an empty ETag on some servers and no size. */
  private async infoAfterWrite(key: string, versionId: string | undefined, signal: AbortSignal | undefined): Promise<ObjectInfo> {
    const info = await this.head(key, { versionId, signal });
    if (!info) throw new Error('object missing right after upload');
    return { ...info, isLatest: true };
  }

  async download(key: string, path: string, options: DownloadOptions = {}): Promise<Downloaded | null> {
    try {
      const got = await downloadRanged(
        {
          client: this.client,
          bucket: this.bucket,
          key,
          versionId: options.versionId,
          concurrency: this.downloadConcurrency,
          signal: options.signal,
          onProgress: options.onProgress,
        },
        path,
        isNotFound,
      );
      if (!got) return null;
      const info: ObjectInfo = {
        key,
        versionId: got.first.VersionId,
        sizeBytes: got.sizeBytes,
        lastModified: got.first.LastModified ?? new Date(0),
        isLatest: options.versionId === undefined,
        metadata: metadataOf(got.first.Metadata),
      };
      return { info, sha256: got.sha256, sizeBytes: got.sizeBytes };
    } catch (error) {
      // The temp file beside the database failed (disk full, permissions): the caller reports a local error.
      if (isLocalFileError(error)) throw error;
      throw this.fail(error, 'download', key);
    }
  }

  /**
   * Server-side copy of one version, with its metadata. Objects over {@link MAX_COPY_OBJECT_BYTES} (where
   * CopyObject stops) are copied in parts with UploadPartCopy from the exact source version; a failed
   * multipart copy is aborted, so no parts linger.
   */
  async copy(
    sourceKey: string,
    sourceVersionId: string | undefined,
    destinationKey: string,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<ObjectInfo> {
    const { signal } = options;
    const copySource = (versionId: string | undefined): string => {
      const source = `${this.bucket}/${sourceKey.split('/').map(encodeURIComponent).join('/')}`;
      return versionId ? `${source}?versionId=${encodeURIComponent(versionId)}` : source;
    };
    try {
      const source = await this.head(sourceKey, { versionId: sourceVersionId, signal });
      if (!source)
        throw { name: 'NoSuchKey', $fault: 'client', $metadata: { httpStatusCode: 404 }, message: 'the source object does not exist' };
      let versionId: string | undefined;
      if (source.sizeBytes > MAX_COPY_OBJECT_BYTES) {
        // Pin the version the HEAD saw: every part must come from the same object.
        versionId = await this.copyInParts(copySource(source.versionId ?? sourceVersionId), destinationKey, source, signal);
      } else {
        const out = await this.client.send(
          new CopyObjectCommand({
            Bucket: this.bucket,
            Key: destinationKey,
            CopySource: copySource(sourceVersionId),
            MetadataDirective: 'COPY',
            ...this.sse,
          }),
          { abortSignal: signal },
        );
        versionId = out.VersionId;
      }
      const info = await this.head(destinationKey, { versionId, signal });
      if (!info) throw new Error('object missing right after copy');
      return { ...info, isLatest: true };
    } catch (error) {
      // The HEADs' errors are mapped already: keep their kind and hint, prefix the operation.
      if (error instanceof DbSyncError) throw wrapError(`copy to s3://${this.bucket}/${destinationKey} from ${sourceKey}`, error);
      throw this.fail(error, `copy to s3://${this.bucket}/${destinationKey} from`, sourceKey);
    }
  }

  /** Multipart copy of `source` (over 5 GiB) to `destinationKey`. @returns the new version id. */
  private async copyInParts(
    copySource: string,
    destinationKey: string,
    source: ObjectInfo,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    const created = await this.client.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: destinationKey,
        // A multipart upload takes no MetadataDirective: carry the source's metadata over by hand.
        Metadata: { ...source.metadata },
        ContentType: 'application/vnd.sqlite3',
        ...this.sse,
      }),
      { abortSignal: signal },
    );
    const uploadId = created.UploadId;
    if (!uploadId) throw new Error('CreateMultipartUpload returned no UploadId');
    try {
      const partCount = Math.ceil(source.sizeBytes / COPY_PART_SIZE_BYTES);
      const parts: CompletedPart[] = new Array<CompletedPart>(partCount);
      let next = 0;
      const worker = async (): Promise<void> => {
        for (let index = next++; index < partCount; index = next++) {
          if (signal?.aborted) throw toError(signal.reason);
          const start = index * COPY_PART_SIZE_BYTES;
          const end = Math.min(source.sizeBytes, start + COPY_PART_SIZE_BYTES) - 1;
          const out = await this.client.send(
            new UploadPartCopyCommand({
              Bucket: this.bucket,
              Key: destinationKey,
              UploadId: uploadId,
              PartNumber: index + 1,
              CopySource: copySource,
              CopySourceRange: `bytes=${start}-${end}`,
            }),
            { abortSignal: signal },
          );
          parts[index] = { PartNumber: index + 1, ETag: out.CopyPartResult?.ETag };
        }
      };
      // After the first failure the other workers take no new part.
      const stopOthers = (error: unknown): never => {
        next = partCount;
        throw error;
      };
      await Promise.all(Array.from({ length: Math.min(COPY_QUEUE_SIZE, partCount) }, () => worker().catch(stopOthers)));
      const done = await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: destinationKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
        }),
        { abortSignal: signal },
      );
      return done.VersionId;
    } catch (error) {
      await this.abortUpload(destinationKey, uploadId, AbortSignal.timeout(ABORT_UPLOAD_TIMEOUT_MS));
      throw error;
    }
  }

  async list(prefix: string, options: { signal?: AbortSignal | undefined } = {}): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }), {
          abortSignal: options.signal,
        });
        for (const o of page.Contents ?? []) {
          if (!o.Key) continue;
          out.push({
            key: o.Key,
            versionId: undefined,
            sizeBytes: o.Size ?? 0,
            lastModified: o.LastModified ?? new Date(0),
            isLatest: true,
            metadata: {},
          });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (error) {
      throw this.fail(error, 'list', prefix);
    }
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  /**
   * Every version of exactly `key`. The prefix `key` also matches `KEY.backup.*`, `KEY.lease` and the rest,
   * and S3 lists versions in key order with `key` itself first: paging stops as soon as the listing has
   * moved past `key`, so the thousands of versions of a lease renewed every few seconds in a versioned
   * bucket are never read.
   */
  async listVersions(key: string, options: { signal?: AbortSignal | undefined } = {}): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let keyMarker: string | undefined;
    let versionMarker: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new ListObjectVersionsCommand({
            Bucket: this.bucket,
            Prefix: key,
            KeyMarker: keyMarker,
            VersionIdMarker: versionMarker,
          }),
          { abortSignal: options.signal },
        );
        for (const v of page.Versions ?? []) {
          // The prefix also matches KEY.backup.*; keep exactly this key.
          if (v.Key !== key) continue;
          out.push({
            key,
            versionId: v.VersionId === 'null' ? undefined : v.VersionId,
            sizeBytes: v.Size ?? 0,
            lastModified: v.LastModified ?? new Date(0),
            isLatest: v.IsLatest ?? false,
            metadata: {},
          });
        }
        // The next page starts after (NextKeyMarker, NextVersionIdMarker): once that is past `key`, it holds
        // only other keys.
        const more = page.IsTruncated === true && page.NextKeyMarker === key;
        keyMarker = more ? page.NextKeyMarker : undefined;
        versionMarker = more ? page.NextVersionIdMarker : undefined;
      } while (keyMarker);
    } catch (error) {
      throw this.fail(error, 'list versions of', key);
    }
    return out.sort((a, b) => b.lastModified.getTime() - a.lastModified.getTime() || Number(b.isLatest) - Number(a.isLatest));
  }

  /** GetBucketVersioning: `Enabled`, `Suspended`, or no status at all for a bucket never versioned. */
  async versioning(options: { signal?: AbortSignal | undefined } = {}): Promise<VersioningState> {
    try {
      const out = await this.client.send(new GetBucketVersioningCommand({ Bucket: this.bucket }), { abortSignal: options.signal });
      return out.Status === 'Enabled' ? 'enabled' : out.Status === 'Suspended' ? 'suspended' : 'disabled';
    } catch (error) {
      throw this.fail(error, 'read the versioning of');
    }
  }

  async delete(key: string, options: { signal?: AbortSignal | undefined } = {}): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), {
        abortSignal: options.signal,
      });
    } catch (error) {
      if (isNotFound(error)) return;
      throw this.fail(error, 'delete', key);
    }
  }

  async getBytes(key: string, options: { signal?: AbortSignal | undefined } = {}): Promise<SmallObject | null> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: options.signal });
      if (!out.Body) throw new Error('response has no body');
      const bytes = Buffer.from(await out.Body.transformToByteArray());
      return { bytes, etag: bareEtag(out.ETag) };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw this.fail(error, 'read', key);
    }
  }

  /**
   * Conditional PutObject. With `ifMatch` and the ETag form not yet known, the quoted form goes first and,
   * on 412, the bare one: a real mismatch fails both (one extra request), and the form that succeeds is
   * kept for every later write. Each request is sent once ({@link CONDITIONAL_WRITE_MAX_ATTEMPTS}): a lost
   * answer is a retryable error, never a 412 against the caller's own write.
   */
  async putBytes(
    key: string,
    bytes: Uint8Array,
    condition: WriteCondition,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<string> {
    const send = async (header: { IfNoneMatch: string } | { IfMatch: string }): Promise<string> => {
      const out = await this.conditionalClient.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: bytes, ContentType: 'application/json', ...this.sse, ...header }),
        { abortSignal: options.signal },
      );
      return bareEtag(out.ETag);
    };
    const what = 'ifNoneMatch' in condition ? 'create' : 'replace';
    try {
      if ('ifNoneMatch' in condition) return await send({ IfNoneMatch: '*' });
      const etag = bareEtag(condition.ifMatch);
      const forms = this.ifMatchForm ? [this.ifMatchForm] : (['quoted', 'bare'] as const);
      for (const [i, form] of forms.entries()) {
        try {
          const written = await send({ IfMatch: form === 'quoted' ? `"${etag}"` : etag });
          this.ifMatchForm = form;
          return written;
        } catch (error) {
          if (i === forms.length - 1 || !this.isConditionFailure(error)) throw error;
        }
      }
      throw new Error('unreachable');
    } catch (error) {
      if (this.isConditionFailure(error)) {
        throw new PreconditionFailedError(`${what} s3://${this.bucket}/${key}: the object changed (precondition failed)`, error);
      }
      throw this.fail(error, `conditional ${what}`, key);
    }
  }

  /** 412, 409 (a concurrent conditional write won) or, for If-Match on a missing key, 404. */
  private isConditionFailure(error: unknown): boolean {
    const status = httpStatusOf(error);
    return status === 412 || status === 409 || (isNotFound(error) && (error as Error).name !== 'NoSuchBucket');
  }

  async abortStaleUploads(
    prefix: string,
    options: { initiatedBefore: Date; include?: ((key: string) => boolean) | undefined; signal?: AbortSignal | undefined },
  ): Promise<string[]> {
    const aborted: string[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
          { abortSignal: options.signal },
        );
        for (const u of page.Uploads ?? []) {
          if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated >= options.initiatedBefore) continue;
          if (options.include && !options.include(u.Key)) continue;
          await this.abortUpload(u.Key, u.UploadId, options.signal, true);
          aborted.push(u.Key);
        }
        keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
        uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
      } while (keyMarker);
    } catch (error) {
      throw this.fail(error, 'abort incomplete uploads of', prefix);
    }
    return aborted;
  }

  /** AbortMultipartUpload; an upload already gone is fine. Other failures throw only when `strict`. */
  private async abortUpload(key: string, uploadId: string, signal: AbortSignal | undefined, strict = false): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }), {
        abortSignal: signal,
      });
    } catch (error) {
      if (strict && (error as Error).name !== 'NoSuchUpload') throw error;
    }
  }

  close(): void {
    this.client.destroy();
    if (this.conditionalClient !== this.client) this.conditionalClient.destroy();
  }
}

/**
 * `body`, with its errors mapped through `map` (the SDK's raw stream errors, e.g. `aborted` with code
 * ECONNRESET, become StorageErrors). Destroying the returned stream destroys `body`.
 */
function mapStreamErrors(body: Readable, map: (error: unknown) => Error): Readable {
  const out = new PassThrough({ highWaterMark: body.readableHighWaterMark });
  body.once('error', (error) => out.destroy(map(error)));
  out.once('close', () => body.destroy());
  body.pipe(out);
  return out;
}
