/**
 * Uploading a file to S3 with bounded memory: one PutObject when it fits one part, else a multipart upload
 * whose parts are either sent from a fixed pool of part buffers (filled straight from the file, reused
 * part after part) or copied server-side from a previous version (UploadPartCopy).
 *
 * This replaces `@aws-sdk/lib-storage`'s Upload, which reads the file as 64 KiB stream chunks and
 * concatenates them into a fresh buffer per part: ~40-55 MB of garbage at the peak of a 1 GB upload
 * (bench/RESULTS.md). Here the buffers are `UPLOAD_CONCURRENCY` × the block size, allocated once per upload.
 *
 * Failure contract: a failed or aborted multipart upload is aborted on the server (briefly, even when the
 * signal already fired), so the key keeps its previous complete object and no parts linger.
 */
import { open, type FileHandle } from 'node:fs/promises';
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
import { throwIfAborted } from '../errors.js';
import { digestOf, type PlannedPart } from './blocks.js';
import type { BlockDigests, ObjectMetadata } from './store.js';
import type { sseParams } from './s3-store.js';

/** Parts in flight at once, each with its own buffer: 4 × 8 MiB = 32 MiB of buffers at most. */
export const UPLOAD_CONCURRENCY = 4;
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

/**
 * A multipart upload of `parts` (which must cover the file in order). `send` parts are read into pooled
 * buffers of `blockSizeBytes`, and their digests land in `digests` at their block index; `copy` parts come
 * from `copySource` (`bucket/key?versionId=…`), whose block digests the caller already compared.
 * @returns the new version id.
 * @throws PartCopyRefusedError when the server refuses a part copy (the upload is aborted first).
 */
export async function putMultipart(
  target: UploadTarget,
  path: string,
  parts: readonly PlannedPart[],
  blockSizeBytes: number,
  digests: string[],
  copySource?: string,
): Promise<string | undefined> {
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
  const handle = await open(path, 'r');
  const completed: CompletedPart[] = [];
  let doneBytes = 0;
  try {
    let next = 0;
    let failed = false;
    // Workers take parts in order; each owns one buffer, allocated on its first sent part. After one
    // fails, the others finish their part and stop.
    const worker = async (): Promise<void> => {
      let buffer: Buffer | undefined;
      for (let i = next++; i < parts.length && !failed; i = next++) {
        const part = parts[i] as PlannedPart;
        throwIfAborted(signal, 'upload');
        let etag: string | undefined;
        if (part.source === 'copy') {
          etag = await copyPart(target, uploadId, part, copySource);
        } else {
          buffer ??= Buffer.allocUnsafeSlow(blockSizeBytes);
          const body = await readFully(handle, buffer, part.end - part.start, part.start);
          digests[part.start / blockSizeBytes] = digestOf(body);
          const out = await client.send(
            new UploadPartCommand({
              Bucket: bucket,
              Key: key,
              UploadId: uploadId,
              PartNumber: part.partNumber,
              Body: body,
              ContentLength: body.length,
            }),
            { abortSignal: signal },
          );
          etag = out.ETag;
        }
        if (!etag) throw new Error(`part ${part.partNumber} came back without an ETag`);
        completed.push({ PartNumber: part.partNumber, ETag: etag });
        doneBytes += part.end - part.start;
        target.onProgress?.(doneBytes);
      }
    };
    const guarded = (): Promise<void> =>
      worker().catch((error: unknown) => {
        failed = true;
        throw error;
      });
    // allSettled: no worker may still read the file or send a part once this upload is aborted or completed.
    const settled = await Promise.allSettled(Array.from({ length: Math.min(UPLOAD_CONCURRENCY, parts.length) }, guarded));
    const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (rejected) throw rejected.reason;
    completed.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    try {
      const out = await client.send(
        new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: completed } }),
        { abortSignal: signal },
      );
      return out.VersionId;
    } catch (error) {
      // A copied part below the minimum size is only refused here (NOTES.md: RGW's EntityTooSmall).
      if (copySource && (error as Error).name === 'EntityTooSmall') {
        throw new PartCopyRefusedError('the server refused a copied part as too small', true, error);
      }
      throw error;
    }
  } catch (error) {
    // Already aborted: send the abort now, briefly, so a process exiting on a second signal leaves no parts.
    await abortMultipart(client, bucket, key, uploadId, signal?.aborted ? AbortSignal.timeout(ABORT_UPLOAD_TIMEOUT_MS) : signal);
    throw error;
  } finally {
    await handle.close();
  }
}

async function copyPart(
  target: UploadTarget,
  uploadId: string,
  part: PlannedPart,
  copySource: string | undefined,
): Promise<string | undefined> {
  if (!copySource) throw new Error('a copy part without a copy source');
  try {
    const out = await target.client.send(
      new UploadPartCopyCommand({
        Bucket: target.bucket,
        Key: target.key,
        UploadId: uploadId,
        PartNumber: part.partNumber,
        CopySource: copySource,
        CopySourceRange: `bytes=${part.start}-${part.end - 1}`,
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

/** Every block of the file as a `send` part: a plain multipart upload. */
export function sendEverything(sizeBytes: number, blockSizeBytes: number): PlannedPart[] {
  const parts: PlannedPart[] = [];
  for (let start = 0; start < sizeBytes; start += blockSizeBytes) {
    parts.push({ partNumber: parts.length + 1, start, end: Math.min(start + blockSizeBytes, sizeBytes), source: 'send' });
  }
  return parts;
}

/** Block digests of the file just uploaded, from what the parts recorded. */
export function digestsOf(sizeBytes: number, blockSizeBytes: number, digests: readonly string[]): BlockDigests {
  return { blockSizeBytes, sizeBytes, digests: [...digests] };
}
