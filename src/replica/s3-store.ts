/**
 * {@link ReplicaStore} on S3 or any S3-compatible server (MinIO, R2, Ceph RGW, LocalStack).
 *
 * Uploads stream from the file through `@aws-sdk/lib-storage`: a file that fits one part is a plain
 * PutObject, larger ones are multipart with at most `queueSize × partSize` bytes in memory, whatever the
 * database size. A failed or aborted multipart upload is aborted on the server, so S3 keeps the previous
 * complete object and no parts linger (the bucket lifecycle rule catches what a SIGKILL leaves).
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CopyObjectCommand,
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
  type S3ClientConfig,
  type ServerSideEncryption,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { isNotFound, toStorageError } from './s3-errors.js';
import {
  PreconditionFailedError,
  type ConditionalStore,
  type GetResult,
  type ObjectInfo,
  type ObjectMetadata,
  type PutOptions,
  type ReadOptions,
  type ReplicaStore,
  type SmallObject,
  type VersioningState,
  type WriteCondition,
} from './store.js';

/** 8 MiB parts × 4 in flight: ~32 MiB of buffers at most, and 1 GB in ~125 parts. */
export const PART_SIZE_BYTES = 8 * 1024 * 1024;
export const UPLOAD_QUEUE_SIZE = 4;
/** How long an interrupted upload may take to abort its multipart upload before the process moves on. */
export const ABORT_UPLOAD_TIMEOUT_MS = 3_000;

export interface S3StoreOptions {
  readonly bucket: string;
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  readonly forcePathStyle?: boolean | undefined;
  /** Server-side encryption asked for on every write (PutObject, multipart, CopyObject); absent = the bucket's default. */
  readonly sse?: { readonly mode: 'AES256' | 'aws:kms'; readonly kmsKeyId?: string | undefined } | undefined;
  /** Use a prepared client (tests with aws-sdk-client-mock). */
  readonly client?: S3Client | undefined;
}

/** Build the S3 client db-sync uses. Credentials come only from the SDK's default provider chain. */
export function createS3Client(options: Omit<S3StoreOptions, 'client' | 'bucket'>): S3Client {
  const config: S3ClientConfig = {
    region: options.region ?? 'us-east-1',
    forcePathStyle: options.forcePathStyle ?? false,
    // CRC32 computed in JavaScript made a 40 MB multipart upload ~10x slower (measured on Ceph RGW), and
    // streamed PutObject bodies with default checksums get 411 MissingContentLength from RGW. db-sync
    // verifies every object by its own sha256 (native crypto) on restore, so it opts out.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 120_000 },
  };
  if (options.endpoint) config.endpoint = options.endpoint;
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
  private readonly bucket: string;
  /** Sent with every write: CopyObject does not inherit the source's encryption, it takes the request's or the bucket's. */
  private readonly sse: ReturnType<typeof sseParams>;
  /**
   * How this endpoint wants the If-Match ETag: AWS takes the quoted form, Ceph RGW matches only the bare one
   * (NOTES.md). Unknown until a conditional write first succeeds; then only that form is sent.
   */
  private ifMatchForm: 'quoted' | 'bare' | undefined;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.sse = sseParams(options.sse);
    this.client = options.client ?? createS3Client(options);
    this.location = `s3://${options.bucket}${options.endpoint ? ` (${options.endpoint})` : ''}`;
  }

  private fail(error: unknown, operation: string, key?: string): Error {
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
        body: out.Body as Readable,
      };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw this.fail(error, 'download', key);
    }
  }

  async put(key: string, sourcePath: string, options: PutOptions): Promise<ObjectInfo> {
    const body = createReadStream(sourcePath);
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.bucket,
        Key: key,
        Body: body,
        Metadata: { ...options.metadata },
        ContentType: 'application/vnd.sqlite3',
        ...this.sse,
      },
      partSize: PART_SIZE_BYTES,
      queueSize: UPLOAD_QUEUE_SIZE,
      leavePartsOnError: false,
    });
    if (options.onProgress) {
      const onProgress = options.onProgress;
      upload.on('httpUploadProgress', (p) => onProgress(p.loaded ?? 0));
    }
    const onAbort = (): void => void upload.abort().catch(() => undefined);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (options.signal?.aborted) await upload.abort();
      const out = await upload.done();
      // CompleteMultipartUpload returns an empty ETag on some servers and no size: ask once.
      const info = await this.head(key, { versionId: out.VersionId, signal: options.signal });
      if (!info) throw new Error('object missing right after upload');
      return { ...info, isLatest: true };
    } catch (error) {
      // An aborted Upload rejects at once and sends AbortMultipartUpload later, in the background: a process
      // exiting on a second signal never sends it, and the parts would linger. Send it now, briefly.
      if (options.signal?.aborted && upload.uploadId)
        await this.abortUpload(key, upload.uploadId, AbortSignal.timeout(ABORT_UPLOAD_TIMEOUT_MS));
      throw this.fail(error, 'upload', key);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      body.destroy();
    }
  }

  async copy(
    sourceKey: string,
    sourceVersionId: string | undefined,
    destinationKey: string,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<ObjectInfo> {
    const source = `${this.bucket}/${sourceKey.split('/').map(encodeURIComponent).join('/')}`;
    try {
      const out = await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: destinationKey,
          CopySource: sourceVersionId ? `${source}?versionId=${encodeURIComponent(sourceVersionId)}` : source,
          MetadataDirective: 'COPY',
          ...this.sse,
        }),
        { abortSignal: options.signal },
      );
      const info = await this.head(destinationKey, { versionId: out.VersionId, signal: options.signal });
      if (!info) throw new Error('object missing right after copy');
      return { ...info, isLatest: true };
    } catch (error) {
      throw this.fail(error, `copy to s3://${this.bucket}/${destinationKey} from`, sourceKey);
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
   * kept for every later write.
   */
  async putBytes(
    key: string,
    bytes: Uint8Array,
    condition: WriteCondition,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<string> {
    const send = async (header: { IfNoneMatch: string } | { IfMatch: string }): Promise<string> => {
      const out = await this.client.send(
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
  }
}
