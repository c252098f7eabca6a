/**
 * Downloading an object to a file with parallel ranged GETs, hashing in order as the ranges land.
 *
 * - The first range's answer names the version; every other range asks for exactly that version, so the
 *   file is one version's bytes even when the key is overwritten meanwhile.
 * - Each range streams into the file at its offset through a small per-stream buffer; nothing holds a
 *   whole part. The sha256 runs behind the downloads, re-reading each completed prefix from the page cache.
 * - Every 4 MiB received, the sockets' dead read buffers are collected (young-garbage.ts).
 * - Written data is flushed (fdatasync) every FLUSH_EVERY_BYTES while the download runs, so the caller's
 *   final fsync has little left to write.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { GetObjectCommand, type GetObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { FILE_MODE } from '../fs-atomic.js';
import { GarbageCadence } from '../young-garbage.js';

/** Bytes per ranged GET: 8 MiB, AWS's recommended range size; 1 GB is ~120 requests ($0.00005). */
export const DOWNLOAD_RANGE_BYTES = 8 * 1024 * 1024;
/**
 * Per-stream write buffer: network chunks (16-64 KiB) are gathered into 512 KiB writes. Measured at 1 GB
 * with 8 streams: as fast and as little CPU as 1 MiB, 10-15 MB less peak RSS; 256 KiB cost ~7% more time.
 */
const WRITE_BUFFER_BYTES = 512 * 1024;
/**
 * Collect the sockets' dead read buffers after this many bytes received (young-garbage.ts). Measured at
 * 1 GB: no collection 127-146 MB peak RSS; every 8 MiB 112-133 MB; every 4 MiB 97-98 MB, same wall time.
 */
const COLLECT_EVERY_BYTES = 4 * 1024 * 1024;
/** Flush written data to disk this often while downloading. */
export const FLUSH_EVERY_BYTES = 64 * 1024 * 1024;

export interface RangedSource {
  readonly client: S3Client;
  readonly bucket: string;
  readonly key: string;
  readonly versionId: string | undefined;
  readonly concurrency: number;
  readonly signal?: AbortSignal | undefined;
  readonly onProgress?: ((receivedBytes: number, totalBytes: number) => void) | undefined;
}

export interface RangedDownload {
  /** The first answer (metadata, version id, ...). */
  readonly first: GetObjectCommandOutput;
  readonly sizeBytes: number;
  readonly sha256: string;
}

/** `bytes a-b/TOTAL` → TOTAL. */
function totalOf(contentRange: string | undefined): number | undefined {
  const match = /\/(\d+)$/.exec(contentRange ?? '');
  return match ? Number(match[1]) : undefined;
}

/**
 * Write buffers handed from range to range. A buffer allocated per range would live through many young
 * collections, be promoted, and stay after its range until V8's next full collection: measured, tens of
 * MB of dead 1 MiB buffers at the peak. At most one per stream exists.
 */
class WriteBuffers {
  private readonly free: Buffer[] = [];

  async with<T>(use: (buffer: Buffer) => Promise<T>): Promise<T> {
    const buffer = this.free.pop() ?? Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
    try {
      return await use(buffer);
    } finally {
      this.free.push(buffer);
    }
  }
}

/** Stream `body` into `handle` at `position` through `buffer`; @returns the bytes written. */
async function writeAt(
  handle: FileHandle,
  body: Readable,
  position: number,
  buffer: Buffer,
  onBytes: (n: number) => void,
): Promise<number> {
  let filled = 0;
  let written = 0;
  const flush = async (): Promise<void> => {
    let done = 0;
    while (done < filled) done += (await handle.write(buffer, done, filled - done, position + written + done)).bytesWritten;
    written += filled;
    filled = 0;
  };
  for await (const chunk of body as AsyncIterable<Buffer>) {
    for (let at = 0; at < chunk.length;) {
      const n = chunk.copy(buffer, filled, at);
      filled += n;
      at += n;
      if (filled === buffer.length) await flush();
    }
    onBytes(chunk.length);
  }
  await flush();
  return written;
}

/**
 * Download `source` into a new file at `path` (mode 0600).
 * @returns null when the object is absent (`isAbsent` decides from the SDK error).
 */
export async function downloadRanged(
  source: RangedSource,
  path: string,
  isAbsent: (error: unknown) => boolean,
): Promise<RangedDownload | null> {
  const { client, bucket, key, signal } = source;
  const get = (range: string | undefined, versionId: string | undefined): Promise<GetObjectCommandOutput> =>
    client.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId, Range: range }), { abortSignal: signal });
  let first: GetObjectCommandOutput;
  try {
    first = await get(`bytes=0-${DOWNLOAD_RANGE_BYTES - 1}`, source.versionId);
  } catch (error) {
    if (isAbsent(error)) return null;
    // An empty object has no byte 0: 416 InvalidRange. Ask for it whole.
    if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 416) throw error;
    first = await get(undefined, source.versionId);
  }
  const sizeBytes = totalOf(first.ContentRange) ?? first.ContentLength ?? 0;
  const versionId = first.VersionId ?? source.versionId;
  // w+: the hasher reads back what the ranges wrote.
  const handle = await open(path, 'w+', FILE_MODE);
  let received = 0;
  const garbage = new GarbageCadence(COLLECT_EVERY_BYTES);
  const onBytes = (n: number): void => {
    received += n;
    garbage.add(n);
    source.onProgress?.(received, sizeBytes);
  };
  try {
    const ranges: Array<{ start: number; end: number }> = [];
    // A server that ignores Range answers 200 with the whole object: then that one answer is the download.
    const rangeBytes = first.ContentRange ? DOWNLOAD_RANGE_BYTES : Math.max(sizeBytes, 1);
    for (let start = 0; start < sizeBytes; start += rangeBytes) {
      ranges.push({ start, end: Math.min(start + rangeBytes, sizeBytes) });
    }
    const done = ranges.map(() => false);
    const writeBuffers = new WriteBuffers();
    const hasher = new OrderedHasher(handle, ranges, done);
    const fetchRange = async (index: number, body?: Readable): Promise<void> => {
      const range = ranges[index] as { start: number; end: number };
      const stream = body ?? ((await get(`bytes=${range.start}-${range.end - 1}`, versionId)).Body as Readable | undefined);
      if (!stream) throw new Error(`range ${range.start}-${range.end - 1} came back without a body`);
      const written = await writeBuffers.with((buffer) => writeAt(handle, stream, range.start, buffer, onBytes));
      if (written !== range.end - range.start) {
        throw new Error(
          `range ${range.start}-${range.end - 1}: received ${written} bytes, expected ${range.end - range.start} (truncated)`,
        );
      }
      done[index] = true;
      hasher.advance();
    };
    let next = 1;
    let failed = false;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < ranges.length && !failed; i = next++) await fetchRange(i);
    };
    const guarded = (run: () => Promise<void>) => (): Promise<void> =>
      run().catch((error: unknown) => {
        failed = true;
        throw error;
      });
    const firstBody = first.Body as Readable | undefined;
    const tasks = [
      ranges.length > 0 ? guarded(() => fetchRange(0, firstBody))() : Promise.resolve(firstBody?.destroy()),
      ...Array.from({ length: Math.max(0, Math.min(source.concurrency, ranges.length) - 1) }, guarded(worker)),
    ];
    const settled = await Promise.allSettled(tasks);
    const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (rejected) {
      firstBody?.destroy();
      throw rejected.reason;
    }
    const sha256 = await hasher.finish();
    return { first: { ...first, VersionId: versionId }, sizeBytes, sha256 };
  } finally {
    await handle.close();
  }
}

/**
 * sha256 of a file whose ranges complete out of order: hashes each range once every range before it is
 * written, reading it back through one reused buffer; starts a flush every FLUSH_EVERY_BYTES.
 */
class OrderedHasher {
  private readonly hash = createHash('sha256');
  private readonly buffer = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private nextIndex = 0;
  private running: Promise<void> = Promise.resolve();
  private error: unknown;
  private unflushedBytes = 0;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly handle: FileHandle,
    private readonly ranges: ReadonlyArray<{ start: number; end: number }>,
    private readonly done: readonly boolean[],
  ) {}

  /** Hash whatever became contiguous; runs one at a time. */
  advance(): void {
    this.running = this.running
      .then(() => this.drain())
      .catch((error: unknown) => {
        this.error ??= error;
      });
  }

  private async drain(): Promise<void> {
    while (this.nextIndex < this.ranges.length && this.done[this.nextIndex]) {
      const { start, end } = this.ranges[this.nextIndex] as { start: number; end: number };
      for (let at = start; at < end;) {
        const { bytesRead } = await this.handle.read(this.buffer, 0, Math.min(this.buffer.length, end - at), at);
        if (bytesRead === 0) throw new Error(`the downloaded file ended at byte ${at}`);
        this.hash.update(this.buffer.subarray(0, bytesRead));
        at += bytesRead;
      }
      this.nextIndex += 1;
      this.unflushedBytes += end - start;
      if (this.unflushedBytes >= FLUSH_EVERY_BYTES) {
        this.unflushedBytes = 0;
        // One flush at a time, in the background: the downloads keep writing meanwhile.
        this.flushing = this.flushing
          .then(() => this.handle.datasync())
          .catch((error: unknown) => {
            this.error ??= error;
          });
      }
    }
  }

  /** The hex digest, once every range is hashed and background flushes are done. */
  async finish(): Promise<string> {
    await this.running;
    await this.flushing;
    if (this.error) throw this.error;
    if (this.nextIndex !== this.ranges.length) throw new Error('not every range was hashed');
    return this.hash.digest('hex');
  }
}
