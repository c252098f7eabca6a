/**
 * The segment format: one change object of a chain (docs/continuous-replication.md, "Segment format").
 * This module is the only one that writes or reads it.
 *
 * Layout (big-endian): an 86-byte fixed header, the generation id, the body (`entries` × (pgno u32, page
 * bytes), pgno strictly ascending; raw-deflate compressed as a whole when flag bit 0 is set), then
 * `bodyLength` (u64, the body as stored) and a SHA-256 over every byte before it.
 *
 * Both directions stream: the encoder takes pages from an (async) iterable and writes them out as they come
 * (a segment larger than memory goes spool → file), the decoder yields pages as it reads them. A streaming
 * reader only knows the segment is intact once the page iterator has *returned*: a consumer that must
 * apply a segment whole or not at all collects or stages the pages first, or uses {@link decodeSegment}.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDeflateRaw, createInflateRaw } from 'node:zlib';
import { DbSyncError } from '../errors.js';
import { commitTempFile, FILE_MODE, fsyncFile, removeQuietly, tempPathBeside } from '../fs-atomic.js';
import { isValidPageSize } from './checksum.js';
import { ChunkReader } from './chunk-reader.js';
import { isGenerationId } from './layout.js';

export const SEGMENT_MAGIC = 'DBSYNCSG';
export const SEGMENT_VERSION = 1;
/** Flag bit 0: the body is raw-deflate compressed. No other flag is defined in version 1. */
export const FLAG_DEFLATE = 1;
/** Bytes before the generation id. */
export const FIXED_HEADER_BYTES = 86;
/** `bodyLength` (8) + sha256 (32). */
export const TRAILER_BYTES = 40;
/** Generation ids are 25 ASCII characters; anything much longer is a damaged header. */
const MAX_GEN_LENGTH = 64;
/** Encoder output is written in pieces of about this size. */
const WRITE_BATCH_BYTES = 1024 * 1024;

/** Everything a segment's header says. */
export interface SegmentHeader {
  readonly gen: string;
  readonly seq: number;
  readonly pageSize: number;
  /** Database size in pages after the segment's last commit. */
  readonly pageCount: number;
  /** Number of page entries in the body. */
  readonly entries: number;
  /** Number of transactions covered (≥ 1). */
  readonly commits: number;
  readonly firstCommitMs: number;
  readonly lastCommitMs: number;
  /** Database checksum before and after applying (src/replication/checksum.ts). */
  readonly preChecksum: bigint;
  readonly postChecksum: bigint;
  /** Diagnostics: the WAL generation and frame range the pages came from. */
  readonly walSalt1: number;
  readonly walSalt2: number;
  readonly walFirstFrame: number;
  readonly walLastFrame: number;
  /** Whether the body is raw-deflate compressed. */
  readonly compressed: boolean;
}

/** One page image. `data` is exactly `pageSize` bytes; a decoder's pages may be views into its input. */
export interface PageImage {
  readonly pgno: number;
  readonly data: Uint8Array;
}

/** What a segment's key says it is: the decoder checks the header against it. */
export interface SegmentExpectation {
  readonly gen: string;
  readonly seq: number;
  /** From the key's name; checked when given (point-in-time restores trust the key's value). */
  readonly lastCommitMs?: number | undefined;
}

export interface EncodedSegment {
  readonly sizeBytes: number;
  /** The trailer's sha256, hex. */
  readonly sha256: string;
}

/** A segment that fails any check: damaged, truncated, misnamed or written wrongly. Never retryable. */
export class SegmentError extends DbSyncError {
  constructor(message: string) {
    super('Corrupt', message);
    this.name = 'SegmentError';
  }
}

const u32 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
const u64 = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;

/** Why a header is not valid, or undefined when it is. Shared by the encoder (a bug) and the decoder (damage). */
function headerProblem(h: SegmentHeader): string | undefined {
  if (!isGenerationId(h.gen)) return `generation ${JSON.stringify(h.gen)} is not a generation id`;
  if (!u64(h.seq) || h.seq < 1) return `seq ${h.seq} is not a positive integer`;
  if (!isValidPageSize(h.pageSize)) return `page size ${h.pageSize} is not a power of two in 512..65536`;
  if (!u32(h.pageCount) || h.pageCount < 1) return `page count ${h.pageCount} is not a positive u32`;
  if (!u32(h.entries) || h.entries > h.pageCount) return `${h.entries} entries for ${h.pageCount} pages`;
  if (!u32(h.commits) || h.commits < 1) return `commits ${h.commits} must be at least 1`;
  if (!u64(h.firstCommitMs) || !u64(h.lastCommitMs) || h.firstCommitMs > h.lastCommitMs) {
    return `commit times ${h.firstCommitMs}..${h.lastCommitMs} are not an ascending pair of Unix ms`;
  }
  if (h.preChecksum < 0n || h.preChecksum >= 1n << 64n || h.postChecksum < 0n || h.postChecksum >= 1n << 64n) {
    return 'checksums must be u64';
  }
  for (const [name, v] of [
    ['walSalt1', h.walSalt1],
    ['walSalt2', h.walSalt2],
    ['walFirstFrame', h.walFirstFrame],
    ['walLastFrame', h.walLastFrame],
  ] as const) {
    if (!u32(v)) return `${name} ${v} is not a u32`;
  }
  return undefined;
}

function encodeHeader(h: SegmentHeader): Buffer {
  const gen = Buffer.from(h.gen, 'ascii');
  const b = Buffer.alloc(FIXED_HEADER_BYTES + gen.length);
  b.write(SEGMENT_MAGIC, 0, 'ascii');
  b.writeUInt16BE(SEGMENT_VERSION, 8);
  b.writeUInt16BE(h.compressed ? FLAG_DEFLATE : 0, 10);
  b.writeUInt32BE(h.pageSize, 12);
  b.writeBigUInt64BE(BigInt(h.seq), 16);
  b.writeUInt32BE(h.pageCount, 24);
  b.writeUInt32BE(h.entries, 28);
  b.writeUInt32BE(h.commits, 32);
  b.writeBigUInt64BE(BigInt(h.firstCommitMs), 36);
  b.writeBigUInt64BE(BigInt(h.lastCommitMs), 44);
  b.writeBigUInt64BE(h.preChecksum, 52);
  b.writeBigUInt64BE(h.postChecksum, 60);
  b.writeUInt32BE(h.walSalt1, 68);
  b.writeUInt32BE(h.walSalt2, 72);
  b.writeUInt32BE(h.walFirstFrame, 76);
  b.writeUInt32BE(h.walLastFrame, 80);
  b.writeUInt16BE(gen.length, 84);
  gen.copy(b, FIXED_HEADER_BYTES);
  return b;
}

/** The raw body, validated page by page, in batches of about {@link WRITE_BATCH_BYTES}. */
async function* bodyBatches(h: SegmentHeader, pages: Iterable<PageImage> | AsyncIterable<PageImage>): AsyncGenerator<Buffer> {
  const entryBytes = 4 + h.pageSize;
  const perBatch = Math.max(1, Math.floor(WRITE_BATCH_BYTES / entryBytes));
  let batch = Buffer.allocUnsafe(perBatch * entryBytes);
  let used = 0;
  let count = 0;
  let previous = 0;
  for await (const page of pages) {
    if (!Number.isInteger(page.pgno) || page.pgno <= previous || page.pgno > h.pageCount) {
      throw new RangeError(`segment ${h.seq}: page ${page.pgno} after page ${previous} (pages must ascend within 1..${h.pageCount})`);
    }
    if (page.data.length !== h.pageSize)
      throw new RangeError(`segment ${h.seq}: page ${page.pgno} has ${page.data.length} bytes, not ${h.pageSize}`);
    if (++count > h.entries) throw new RangeError(`segment ${h.seq}: more pages than the ${h.entries} entries its header declares`);
    previous = page.pgno;
    batch.writeUInt32BE(page.pgno, used);
    batch.set(page.data, used + 4);
    used += entryBytes;
    if (used === batch.length) {
      yield batch;
      batch = Buffer.allocUnsafe(perBatch * entryBytes);
      used = 0;
    }
  }
  if (count !== h.entries) throw new RangeError(`segment ${h.seq}: ${count} pages given, its header declares ${h.entries}`);
  if (used > 0) yield batch.subarray(0, used);
}

async function* segmentBytes(
  h: SegmentHeader,
  pages: Iterable<PageImage> | AsyncIterable<PageImage>,
  done: (result: EncodedSegment) => void,
): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  const out = (b: Buffer): Buffer => {
    hash.update(b);
    sizeBytes += b.length;
    return b;
  };
  yield out(encodeHeader(h));
  let bodyLength = 0;
  let stored: AsyncIterable<Buffer> = bodyBatches(h, pages);
  if (h.compressed) {
    const raw = Readable.from(stored);
    const deflate = createDeflateRaw();
    raw.on('error', (error) => deflate.destroy(error));
    raw.pipe(deflate);
    stored = deflate;
  }
  for await (const chunk of stored) {
    bodyLength += chunk.length;
    yield out(chunk);
  }
  const length = Buffer.alloc(8);
  length.writeBigUInt64BE(BigInt(bodyLength));
  yield out(length);
  const digest = hash.digest();
  sizeBytes += digest.length;
  done({ sizeBytes, sha256: digest.toString('hex') });
  yield digest;
}

/**
 * Write a segment. `pages` must come in strictly ascending pgno order, each `pageSize` bytes, exactly
 * `header.entries` of them, all ≤ `header.pageCount`; anything else is a caller bug and throws RangeError.
 *
 * `destination`: a file path (written temp → fsync → rename → fsync dir: the path holds a whole segment or
 * nothing) or a Writable (ended when the segment is complete; destroyed on failure).
 */
export async function encodeSegment(
  header: SegmentHeader,
  pages: Iterable<PageImage> | AsyncIterable<PageImage>,
  destination: string | Writable,
  options: { signal?: AbortSignal | undefined } = {},
): Promise<EncodedSegment> {
  const problem = headerProblem(header);
  if (problem !== undefined) throw new RangeError(`segment header: ${problem}`);
  let result: EncodedSegment | undefined;
  const source = Readable.from(segmentBytes(header, pages, (r) => (result = r)));
  if (typeof destination !== 'string') {
    await pipeline(source, destination, { signal: options.signal });
    return result!;
  }
  const temp = tempPathBeside(destination, 'segment');
  try {
    await pipeline(source, createWriteStream(temp, { mode: FILE_MODE }), { signal: options.signal });
    await fsyncFile(temp);
    await commitTempFile(temp, destination);
  } catch (error) {
    await removeQuietly(temp);
    throw error;
  }
  return result!;
}

/** Encode a segment into memory (small segments, tests). */
export async function encodeSegmentToBuffer(header: SegmentHeader, pages: Iterable<PageImage> | AsyncIterable<PageImage>): Promise<Buffer> {
  const problem = headerProblem(header);
  if (problem !== undefined) throw new RangeError(`segment header: ${problem}`);
  const chunks: Buffer[] = [];
  for await (const chunk of segmentBytes(header, pages, () => undefined)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function parseHeader(fixed: Buffer, gen: string): SegmentHeader {
  return {
    gen,
    seq: Number(fixed.readBigUInt64BE(16)),
    pageSize: fixed.readUInt32BE(12),
    pageCount: fixed.readUInt32BE(24),
    entries: fixed.readUInt32BE(28),
    commits: fixed.readUInt32BE(32),
    firstCommitMs: Number(fixed.readBigUInt64BE(36)),
    lastCommitMs: Number(fixed.readBigUInt64BE(44)),
    preChecksum: fixed.readBigUInt64BE(52),
    postChecksum: fixed.readBigUInt64BE(60),
    walSalt1: fixed.readUInt32BE(68),
    walSalt2: fixed.readUInt32BE(72),
    walFirstFrame: fixed.readUInt32BE(76),
    walLastFrame: fixed.readUInt32BE(80),
    compressed: (fixed.readUInt16BE(10) & FLAG_DEFLATE) !== 0,
  };
}

/** A segment being read: its header (checked), and its pages as they are read. */
export interface SegmentReader {
  readonly header: SegmentHeader;
  /**
   * The pages, in ascending pgno order. Each one was checked for order and bounds; the segment as a whole
   * (sha256, entry count, body length) is verified only when the iterator *returns*. It throws
   * {@link SegmentError} on any problem. Iterate it once.
   */
  readonly pages: AsyncGenerator<PageImage, void, undefined>;
}

/**
 * Start reading a segment from a stream (or bytes), checking magic, version, flags, header fields and the
 * key's gen and seq before the first page.
 * @throws SegmentError when any of those is wrong or the input ends inside the header.
 */
export async function readSegment(source: Uint8Array | AsyncIterable<Uint8Array>, expected: SegmentExpectation): Promise<SegmentReader> {
  const where = `segment ${expected.seq} of ${expected.gen}`;
  const broken = (reason: string): SegmentError => new SegmentError(`${where}: ${reason}`);
  const reader = new ChunkReader(source);
  try {
    const hash = createHash('sha256');
    const fixed = await reader.read(FIXED_HEADER_BYTES);
    if (!fixed) throw broken('truncated inside the header');
    if (fixed.toString('latin1', 0, 8) !== SEGMENT_MAGIC) throw broken('not a db-sync segment (bad magic)');
    const version = fixed.readUInt16BE(8);
    if (version !== SEGMENT_VERSION)
      throw broken(`format version ${version} is not ${SEGMENT_VERSION} (written by another db-sync version?)`);
    const flags = fixed.readUInt16BE(10);
    if ((flags & ~FLAG_DEFLATE) !== 0) throw broken(`unknown flags 0x${flags.toString(16)}`);
    const genLength = fixed.readUInt16BE(84);
    if (genLength > MAX_GEN_LENGTH) throw broken(`generation id length ${genLength} is implausible`);
    const genBytes = await reader.read(genLength);
    if (!genBytes) throw broken('truncated inside the header');
    hash.update(fixed).update(genBytes);
    const header = parseHeader(fixed, genBytes.toString('latin1'));
    const problem = headerProblem(header);
    if (problem !== undefined) throw broken(`bad header: ${problem}`);
    if (header.gen !== expected.gen) throw broken(`header names generation ${header.gen} (the key is in another generation's folder)`);
    if (header.seq !== expected.seq) throw broken(`header says seq ${header.seq} (the key says ${expected.seq})`);
    if (expected.lastCommitMs !== undefined && header.lastCommitMs !== expected.lastCommitMs) {
      throw broken(`header's last commit time ${header.lastCommitMs} differs from the key's ${expected.lastCommitMs}`);
    }
    return { header, pages: segmentPages(reader, hash, header, broken) };
  } catch (error) {
    await reader.close();
    throw error;
  }
}

async function* segmentPages(
  reader: ChunkReader,
  hash: ReturnType<typeof createHash>,
  h: SegmentHeader,
  broken: (reason: string) => SegmentError,
): AsyncGenerator<PageImage, void, undefined> {
  const entryBytes = 4 + h.pageSize;
  const expectedRaw = h.entries * entryBytes;
  let storedLength = 0;
  async function* stored(): AsyncGenerator<Buffer> {
    for await (const chunk of reader.allBut(TRAILER_BYTES)) {
      storedLength += chunk.length;
      hash.update(chunk);
      yield chunk;
    }
  }
  let raw: AsyncIterable<Buffer> = stored();
  let inflate: ReturnType<typeof createInflateRaw> | undefined;
  if (h.compressed) {
    const input = Readable.from(stored());
    inflate = createInflateRaw();
    const sink = inflate;
    input.on('error', (error) => sink.destroy(error));
    input.pipe(sink);
    raw = sink;
  }
  try {
    let rawLength = 0;
    let count = 0;
    let previous = 0;
    let partial: Buffer | undefined;
    let partialUsed = 0;
    const entry = (bytes: Buffer): PageImage => {
      const pgno = bytes.readUInt32BE(0);
      if (pgno <= previous || pgno > h.pageCount) {
        throw broken(`page ${pgno} after page ${previous} (pages must ascend within 1..${h.pageCount})`);
      }
      previous = pgno;
      count++;
      return { pgno, data: bytes.subarray(4) };
    };
    try {
      for await (const chunk of raw) {
        rawLength += chunk.length;
        if (rawLength > expectedRaw) throw broken(`body holds more than the ${h.entries} entries its header declares`);
        let offset = 0;
        if (partial) {
          const use = Math.min(entryBytes - partialUsed, chunk.length);
          chunk.copy(partial, partialUsed, 0, use);
          partialUsed += use;
          offset = use;
          if (partialUsed < entryBytes) continue;
          yield entry(partial);
          partial = undefined;
        }
        for (; offset + entryBytes <= chunk.length; offset += entryBytes) yield entry(chunk.subarray(offset, offset + entryBytes));
        if (offset < chunk.length) {
          partial = Buffer.allocUnsafe(entryBytes);
          partialUsed = chunk.copy(partial, 0, offset);
        }
      }
    } catch (error) {
      if (error instanceof SegmentError) throw error;
      // zlib's errors ("unexpected end of file", "invalid distance") mean damaged compressed data.
      throw broken(`body does not decompress (${(error as Error).message})`);
    }
    const trailer = reader.rest();
    if (trailer.length < TRAILER_BYTES) throw broken('truncated: the trailer is missing');
    hash.update(trailer.subarray(0, 8));
    if (!hash.digest().equals(trailer.subarray(8))) throw broken('sha256 does not match its content (the object is damaged or truncated)');
    const declared = trailer.readBigUInt64BE(0);
    if (declared !== BigInt(storedLength)) throw broken(`trailer says the body is ${declared} bytes, it is ${storedLength}`);
    if (count !== h.entries || rawLength !== expectedRaw) throw broken(`body holds ${count} entries, its header declares ${h.entries}`);
  } finally {
    inflate?.destroy();
    await reader.close();
  }
}

/** A whole segment in memory, verified. */
export interface DecodedSegment {
  readonly header: SegmentHeader;
  /** Views into the input (or the decompressed body): copy them to keep them past the input's life. */
  readonly pages: readonly PageImage[];
}

/**
 * Decode and verify a whole segment held in memory: sha256 first (so damage reads as damage, not as some
 * odd header field), then everything {@link readSegment} checks.
 * @throws SegmentError on any problem.
 */
export async function decodeSegment(bytes: Uint8Array, expected: SegmentExpectation): Promise<DecodedSegment> {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const where = `segment ${expected.seq} of ${expected.gen}`;
  if (buffer.length < FIXED_HEADER_BYTES + TRAILER_BYTES) throw new SegmentError(`${where}: truncated (${buffer.length} bytes)`);
  const body = buffer.subarray(0, buffer.length - 32);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(buffer.subarray(buffer.length - 32))
  ) {
    throw new SegmentError(`${where}: sha256 does not match its content (the object is damaged or truncated)`);
  }
  const reader = await readSegment(buffer, expected);
  const pages: PageImage[] = [];
  for await (const page of reader.pages) pages.push(page);
  return { header: reader.header, pages };
}
