/**
 * The pending segment: the latest image of every page changed by the commits captured since the last seal,
 * and sealing it into a segment file (docs/continuous-replication.md, "Capture", tick steps 3 and 5).
 *
 * Pages stay in memory up to {@link PENDING_MEMORY_BYTES}; further images go to an append-only overflow
 * file beside the segment files, so a transaction larger than memory still becomes one segment. Each page
 * is hashed as it is added, so a seal updates the running checksum in O(pages) without reading them again.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { FILE_MODE, removeQuietly } from '../fs-atomic.js';
import { pageHash, type PageHashes } from './checksum.js';
import { encodeSegment, type PageImage, type SegmentHeader } from './segment.js';

/** Page images held in memory before further ones go to the overflow file. */
export const PENDING_MEMORY_BYTES = 8 * 1024 * 1024;
/** A pending segment holding this many bytes of pages is sealed without waiting for the interval. */
export const SEGMENT_SEAL_BYTES = 8 * 1024 * 1024;

interface Entry {
  readonly hash: bigint;
  /** In memory, or at `offset` of the overflow file. */
  readonly data: Buffer | undefined;
  readonly offset: number;
}

/** What a batch of commits adds besides pages (WAL diagnostics and capture time). */
export interface CommitBatch {
  readonly commits: number;
  /** Database size in pages after the batch's last commit. */
  readonly dbSizePages: number;
  /** When the batch was captured (Unix ms). */
  readonly atMs: number;
  readonly walSalt1: number;
  readonly walSalt2: number;
  readonly walFirstFrame: number;
  readonly walLastFrame: number;
}

/** A sealed segment file, ready to ship. */
export interface SealedSegment {
  readonly gen: string;
  readonly seq: number;
  readonly lastCommitMs: number;
  readonly firstCommitMs: number;
  readonly path: string;
  readonly sizeBytes: number;
  readonly pages: number;
  readonly commits: number;
  readonly preChecksum: bigint;
  readonly postChecksum: bigint;
}

export class PendingSegment {
  private readonly entries = new Map<number, Entry>();
  private memoryBytes = 0;
  private overflow: FileHandle | undefined;
  private overflowBytes = 0;
  private commitsValue = 0;
  private firstCommitMs: number | undefined;
  private lastCommitMs = 0;
  private pageCount = 0;
  private salts: [number, number] = [0, 0];
  private firstFrame = 0;
  private lastFrame = 0;

  /**
   * @param overflowPath where images past the memory budget go (created on first use, removed by {@link discard}).
   */
  constructor(
    readonly pageSize: number,
    private readonly overflowPath: string,
    private readonly memoryLimitBytes = PENDING_MEMORY_BYTES,
  ) {}

  /** Whether no commit was captured since the last seal. */
  get empty(): boolean {
    return this.commitsValue === 0;
  }

  get commits(): number {
    return this.commitsValue;
  }

  /** Capture time of the oldest commit waiting (Unix ms); undefined when empty. */
  get oldestCommitMs(): number | undefined {
    return this.firstCommitMs;
  }

  /** Bytes of distinct pages waiting (what the segment's body will hold, uncompressed). */
  get pageBytes(): number {
    return this.entries.size * this.pageSize;
  }

  /** Bytes on local disk (the overflow file). */
  get diskBytes(): number {
    return this.overflowBytes;
  }

  /** Record the newest image of a page (of a commit about to be recorded with {@link addCommits}). */
  async addPage(pgno: number, data: Buffer): Promise<void> {
    if (data.length !== this.pageSize) throw new RangeError(`page ${pgno}: ${data.length} bytes, not ${this.pageSize}`);
    const hash = pageHash(pgno, data);
    const previous = this.entries.get(pgno);
    if (previous?.data) this.memoryBytes -= this.pageSize;
    if (this.memoryBytes + this.pageSize <= this.memoryLimitBytes) {
      this.entries.set(pgno, { hash, data, offset: 0 });
      this.memoryBytes += this.pageSize;
      return;
    }
    this.overflow ??= await open(this.overflowPath, 'w+', FILE_MODE);
    const offset = this.overflowBytes;
    await this.overflow.write(data, 0, data.length, offset);
    this.overflowBytes += data.length;
    this.entries.set(pgno, { hash, data: undefined, offset });
  }

  /** Record the commits whose pages were just added. */
  addCommits(batch: CommitBatch): void {
    if (batch.commits < 1) return;
    if (this.commitsValue === 0) {
      this.firstCommitMs = batch.atMs;
      this.firstFrame = batch.walFirstFrame;
    }
    this.commitsValue += batch.commits;
    this.lastCommitMs = Math.max(batch.atMs, this.firstCommitMs ?? batch.atMs);
    this.pageCount = batch.dbSizePages;
    this.salts = [batch.walSalt1, batch.walSalt2];
    this.lastFrame = batch.walLastFrame;
  }

  /** The pages a segment holds: every page within the final page count, ascending. */
  private async *pages(pgnos: readonly number[]): AsyncGenerator<PageImage> {
    for (const pgno of pgnos) {
      const entry = this.entries.get(pgno)!;
      if (entry.data) {
        yield { pgno, data: entry.data };
        continue;
      }
      const data = Buffer.allocUnsafe(this.pageSize);
      const { bytesRead } = await this.overflow!.read(data, 0, this.pageSize, entry.offset);
      if (bytesRead !== this.pageSize) throw new Error(`pending overflow file: read ${bytesRead} of ${this.pageSize} bytes`);
      yield { pgno, data };
    }
  }

  /**
   * Write the pending commits as segment `seq` of `gen` at `path` and advance `hashes` (the running
   * checksum) past them: `hashes` holds the database at the previous segment on entry, at this one on return.
   * The segment's pre/post checksums are `hashes`' checksum before and after. Pages a later commit of the
   * batch cut off (beyond the final page count) are left out, as the final database does not have them.
   * On failure `hashes` may be partly advanced: the caller starts a new generation.
   */
  async seal(gen: string, seq: number, hashes: PageHashes, path: string, signal?: AbortSignal): Promise<SealedSegment> {
    if (this.empty) throw new Error('seal: no commit pending');
    const pgnos = [...this.entries.keys()].filter((p) => p <= this.pageCount).sort((a, b) => a - b);
    const preChecksum = hashes.checksum;
    hashes.resize(this.pageCount);
    for (const pgno of pgnos) hashes.setHash(pgno, this.entries.get(pgno)!.hash);
    const postChecksum = hashes.checksum;
    const firstCommitMs = this.firstCommitMs ?? this.lastCommitMs;
    const header: SegmentHeader = {
      gen,
      seq,
      pageSize: this.pageSize,
      pageCount: this.pageCount,
      entries: pgnos.length,
      commits: this.commitsValue,
      firstCommitMs,
      lastCommitMs: this.lastCommitMs,
      preChecksum,
      postChecksum,
      walSalt1: this.salts[0],
      walSalt2: this.salts[1],
      walFirstFrame: this.firstFrame,
      walLastFrame: this.lastFrame,
      compressed: true,
    };
    const encoded = await encodeSegment(header, this.pages(pgnos), path, { signal });
    return {
      gen,
      seq,
      lastCommitMs: this.lastCommitMs,
      firstCommitMs,
      path,
      sizeBytes: encoded.sizeBytes,
      pages: pgnos.length,
      commits: this.commitsValue,
      preChecksum,
      postChecksum,
    };
  }

  /** Forget everything and remove the overflow file. Idempotent. */
  async discard(): Promise<void> {
    this.entries.clear();
    this.memoryBytes = 0;
    this.commitsValue = 0;
    this.firstCommitMs = undefined;
    const overflow = this.overflow;
    this.overflow = undefined;
    this.overflowBytes = 0;
    await overflow?.close().catch(() => undefined);
    await removeQuietly(this.overflowPath);
  }
}
