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
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { isNotFound, toStorageError } from './s3-errors.js';
import type { GetResult, ObjectInfo, ObjectMetadata, PutOptions, ReadOptions, ReplicaStore } from './store.js';

/** 8 MiB parts × 4 in flight: ~32 MiB of buffers at most, and 1 GB in ~125 parts. */
export const PART_SIZE_BYTES = 8 * 1024 * 1024;
export const UPLOAD_QUEUE_SIZE = 4;

export interface S3StoreOptions {
  readonly bucket: string;
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  readonly forcePathStyle?: boolean | undefined;
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

export class S3Store implements ReplicaStore {
  readonly location: string;
  private readonly client: S3Client;
  private readonly bucket: string;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
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
      if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) return;
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
        keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
        versionMarker = page.IsTruncated ? page.NextVersionIdMarker : undefined;
      } while (keyMarker);
    } catch (error) {
      throw this.fail(error, 'list versions of', key);
    }
    return out.sort((a, b) => b.lastModified.getTime() - a.lastModified.getTime() || Number(b.isLatest) - Number(a.isLatest));
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

  close(): void {
    this.client.destroy();
  }
}
