/**
 * Uploading a file to S3 with bounded memory: one PutObject when it fits one part, else a multipart upload
 * whose parts are either streamed from the file (1 MiB reads, hashed on the way) or copied server-side
 * from a previous version (UploadPartCopy).
 *
 * This replaces `@aws-sdk/lib-storage`'s Upload, which reads the file as 64 KiB stream chunks and
 * concatenates them into a fresh buffer per part: ~40-55 MB of garbage at the peak of a 1 GB upload
 * (bench/RESULTS.md). A fixed pool of whole-part buffers came next (32 MiB); streamed parts hold a few MiB.
 *
 * Failure contract: a failed or aborted multipart upload is aborted on the server (briefly, even when the
 * signal already fired), so the key keeps its previous complete object and no parts linger.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { pipeline, Transform, type TransformCallback } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import pRetry from 'p-retry';
import { StorageError, throwIfAborted } from '../errors.js';
import { fileChunks } from '../file-chunks.js';
import { GarbageCadence } from '../young-garbage.js';
import { BLOCK_DIGEST_ALGORITHM, baseHasBlock, digestOf, sameBlock } from './blocks.js';
import type { BlockDigests, ObjectMetadata } from './store.js';
import { toStorageError } from './s3-errors.js';
import type { sseParams } from './s3-store.js';

/** Parts in flight at once. Each streams from the file, so memory does not grow with it. */
export const UPLOAD_CONCURRENCY = 4;
/**
 * A sent part's body is read from the file in pieces of this size, each handed to the socket as it comes:
 * 4 parts in flight hold a few MiB, not 4 whole 8 MiB part buffers (32 MiB, the largest item of a 1 GB
 * upload's peak RSS after Node and the SDK themselves).
 */
const PART_READ_BYTES = 1024 * 1024;
/** Dead read pieces are collected after this many bytes sent (young-garbage.ts). */
const COLLECT_EVERY_BYTES = 4 * 1024 * 1024;
/**
 * Retries of one part. The SDK does not retry a request whose body is a stream (it cannot rewind it), so
 * each part retries itself, with a fresh read of the file, on what retrying can fix (5xx, throttling, a
 * broken connection). Backoff 0.25 s, then up to 2 s: a blip; the caller's own retry covers longer trouble.
 */
const PART_RETRY = { retries: 3, minTimeout: 250, maxTimeout: 2_000, randomize: true } as const;
/** How long an interrupted upload may take to abort its multipart upload before the process moves on. */
export const ABORT_UPLOAD_TIMEOUT_MS = 3_000;

/** Where an upload goes and what it carries. */
export interface UploadTarget {
  readonly client: S3Client;
  readonly bucket: string;
  readonly key: string;
  readonly metadata: ObjectMetadata;
  readonly sse: ReturnType<typeof sseParams>;
  readonly signal?: AbortSignal | undefined;
  /** Called as parts finish, with the bytes done so far (sent or copied). */
  readonly onProgress?: ((doneBytes: number) => void) | undefined;
}

/** A part copy the server refused (not a transient failure): the caller falls back to sending everything. */
export class PartCopyRefusedError extends Error {
  constructor(
    message: string,
    /** Whether the refusal says nothing about this one upload, so later uploads should not try again. */
    readonly permanent: boolean,
    cause: unknown,
  ) {
    super(message, { cause });
    this.name = 'PartCopyRefusedError';
  }
}

const CONTENT_TYPE = 'application/vnd.sqlite3';

function statusOf(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** Read exactly `length` bytes at `position` into the start of `buffer`. */
async function readFully(handle: FileHandle, buffer: Buffer, length: number, position: number): Promise<Buffer> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`the file ended at byte ${position + done}, expected ${position + length}`);
    done += bytesRead;
  }
  return buffer.subarray(0, length);
}

/**
 * One PutObject of the whole file (it must fit `sizeBytes` ≤ a part), read into memory once.
 * @returns the new version id and the file's single block digest.
 */
export async function putWhole(
  target: UploadTarget,
  path: string,
  sizeBytes: number,
): Promise<{ versionId: string | undefined; digest: string }> {
  const handle = await open(path, 'r');
  try {
    const body = await readFully(handle, Buffer.allocUnsafe(sizeBytes), sizeBytes, 0);
    throwIfAborted(target.signal, 'upload');
    const out = await target.client.send(
      new PutObjectCommand({
        Bucket: target.bucket,
        Key: target.key,
        Body: body,
        ContentLength: sizeBytes,
        ContentType: CONTENT_TYPE,
        Metadata: { ...target.metadata },
        ...target.sse,
      }),
      { abortSignal: target.signal },
    );
    target.onProgress?.(sizeBytes);
    return { versionId: out.VersionId, digest: digestOf(body) };
  } finally {
    await handle.close();
  }
}

/** A previous version to copy unchanged blocks from. */
export interface CopyBase {
  readonly blocks: BlockDigests;
  /** `bucket/key?versionId=…`, URL-encoded, for x-amz-copy-source. */
  readonly copySource: string;
}

export interface MultipartResult {
  readonly versionId: string | undefined;
  readonly blocks: BlockDigests;
  readonly copiedBytes: number;
}

/**
 * A multipart upload of the file, one part per block, each streamed from the file and hashed as it is
 * sent. With a `base`, a block the base has at the same length is hashed first, and copied server-side
 * from the base version (UploadPartCopy) when its digest is the base's. Every part but the last is a
 * whole block (≥ 5 MiB).
 * @throws PartCopyRefusedError when the server refuses a part copy (the upload is aborted first).
 */
export async function putMultipart(
  target: UploadTarget,
  path: string,
  sizeBytes: number,
  blockSizeBytes: number,
  base?: CopyBase,
): Promise<MultipartResult> {
  const { client, bucket, key, signal } = target;
  const created = await client.send(
    new CreateMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      ContentType: CONTENT_TYPE,
      Metadata: { ...target.metadata },
      ...target.sse,
    }),
    { abortSignal: signal },
  );
  const uploadId = created.UploadId;
  if (!uploadId) throw new Error('CreateMultipartUpload returned no upload id');
  const blockCount = Math.ceil(sizeBytes / blockSizeBytes);
  const digests: string[] = new Array<string>(blockCount);
  const completed: CompletedPart[] = [];
  let doneBytes = 0;
  let copiedBytes = 0;
  try {
    let next = 0;
    let failed = false;
    const garbage = new GarbageCadence(COLLECT_EVERY_BYTES);
    // Workers take blocks in order. After one fails, the others finish their part and stop.
    const worker = async (): Promise<void> => {
      // For hashing blocks the base may share; one per worker for the whole upload.
      const hashBuffer = base ? Buffer.allocUnsafe(PART_READ_BYTES) : undefined;
      for (let index = next++; index < blockCount && !failed; index = next++) {
        throwIfAborted(signal, 'upload');
        const start = index * blockSizeBytes;
        const length = Math.min(blockSizeBytes, sizeBytes - start);
        const partNumber = index + 1;
        let etag: string | undefined;
        // A block the base has at the same length may be unchanged: hash it first, copy it if it is.
        const comparable = base !== undefined && baseHasBlock(base.blocks, index, length);
        const known = comparable && hashBuffer ? await digestRange(path, start, length, signal, hashBuffer) : undefined;
        if (base && known !== undefined && sameBlock(base.blocks, index, length, known)) {
          etag = await copyPart(target, uploadId, partNumber, start, start + length, base.copySource);
          digests[index] = known;
          copiedBytes += length;
        } else {
          const sent = await sendPart(target, uploadId, partNumber, path, start, length, garbage);
          if (known !== undefined && sent.digest !== known) {
            throw new Error(`block ${index} changed while it was uploaded (the snapshot file must not change)`);
          }
          digests[index] = sent.digest;
          etag = sent.etag;
        }
        if (!etag) throw new Error(`part ${partNumber} came back without an ETag`);
        completed.push({ PartNumber: partNumber, ETag: etag });
        doneBytes += length;
        target.onProgress?.(doneBytes);
      }
    };
    const guarded = (): Promise<void> =>
      worker().catch((error: unknown) => {
        failed = true;
        throw error;
      });
    // allSettled: no worker may still read the file or send a part once this upload is aborted or completed.
    const settled = await Promise.allSettled(Array.from({ length: Math.min(UPLOAD_CONCURRENCY, blockCount) }, guarded));
    const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (rejected) throw rejected.reason;
    completed.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    try {
      const out = await client.send(
        new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: completed } }),
        { abortSignal: signal },
      );
      return { versionId: out.VersionId, blocks: { blockSizeBytes, sizeBytes, digests }, copiedBytes };
    } catch (error) {
      // A copied part below the minimum size is only refused here (NOTES.md: RGW's EntityTooSmall).
      if (base && (error as Error).name === 'EntityTooSmall') {
        throw new PartCopyRefusedError('the server refused a copied part as too small', true, error);
      }
      throw error;
    }
  } catch (error) {
    // Already aborted: send the abort now, briefly, so a process exiting on a second signal leaves no parts.
    await abortMultipart(client, bucket, key, uploadId, signal?.aborted ? AbortSignal.timeout(ABORT_UPLOAD_TIMEOUT_MS) : signal);
    throw error;
  }
}

/** The block digest of `length` bytes of the file at `start`, read through one 1 MiB buffer. */
async function digestRange(path: string, start: number, length: number, signal: AbortSignal | undefined, buffer: Buffer): Promise<string> {
  const hash = createHash(BLOCK_DIGEST_ALGORITHM);
  let read = 0;
  for await (const chunk of fileChunks(path, { signal, startBytes: start, endBytes: start + length, buffer })) {
    hash.update(chunk);
    read += chunk.length;
  }
  if (read !== length) throw new Error(`the file ended at byte ${start + read}, expected ${start + length}`);
  return hash.digest('hex');
}

/** A pass-through that hashes (block digest) and counts what the part's body sends. */
class PartDigest extends Transform {
  private readonly hash = createHash(BLOCK_DIGEST_ALGORITHM);
  bytes = 0;

  constructor(private readonly garbage: GarbageCadence) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.garbage.add(chunk.length);
    callback(null, chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/**
 * UploadPart of `length` bytes of the file at `start`, streamed from the file and hashed on the way;
 * retried (with a fresh read) on transient failures.
 * @returns the part's ETag and its block digest.
 */
async function sendPart(
  target: UploadTarget,
  uploadId: string,
  partNumber: number,
  path: string,
  start: number,
  length: number,
  garbage: GarbageCadence,
): Promise<{ etag: string | undefined; digest: string }> {
  const { client, bucket, key, signal } = target;
  const attempt = async (): Promise<{ etag: string | undefined; digest: string }> => {
    throwIfAborted(signal, 'upload');
    const digest = new PartDigest(garbage);
    const body = pipeline(createReadStream(path, { start, end: start + length - 1, highWaterMark: PART_READ_BYTES }), digest, () => {
      // Errors reach the request through `digest` (pipeline destroys it with the error).
    });
    try {
      const out = await client.send(
        new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: length }),
        { abortSignal: signal },
      );
      if (digest.bytes !== length) throw new Error(`part ${partNumber}: sent ${digest.bytes} bytes of ${length} (the file changed)`);
      return { etag: out.ETag, digest: digest.digest() };
    } finally {
      body.destroy();
    }
  };
  return pRetry(attempt, {
    ...PART_RETRY,
    signal,
    shouldRetry: ({ error }) => {
      if (signal?.aborted === true) return false;
      const classified = toStorageError(error, 'upload part', { bucket, key });
      return classified instanceof StorageError && classified.retryable;
    },
  });
}

async function copyPart(
  target: UploadTarget,
  uploadId: string,
  partNumber: number,
  start: number,
  end: number,
  copySource: string,
): Promise<string | undefined> {
  try {
    const out = await target.client.send(
      new UploadPartCopyCommand({
        Bucket: target.bucket,
        Key: target.key,
        UploadId: uploadId,
        PartNumber: partNumber,
        CopySource: copySource,
        CopySourceRange: `bytes=${start}-${end - 1}`,
      }),
      { abortSignal: target.signal },
    );
    // RGW returns the part's ETag unquoted (NOTES.md); Complete accepts it either way.
    return out.CopyPartResult?.ETag;
  } catch (error) {
    const status = statusOf(error);
    const name = (error as Error).name;
    if (name === 'AbortError' || status === undefined || status === 408 || status === 429 || (status >= 500 && status !== 501)) throw error;
    // 501: the server has no part copies. 404: the base version is gone (this upload only). Other 4xx:
    // refused, e.g. a policy without s3:GetObjectVersion on the source.
    throw new PartCopyRefusedError(`part copy refused: ${name} (HTTP ${status})`, status !== 404, error);
  }
}

/** AbortMultipartUpload; an upload already gone, or a failure to abort, is left to the lifecycle rule. */
export async function abortMultipart(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  await client
    .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }), { abortSignal: signal })
    .catch(() => undefined);
}
