/**
 * The database checksum of docs/continuous-replication.md: `XOR over pages p = 2..N of H(p)`, with
 * `H(p)` the first 8 bytes (big-endian u64) of `SHA-256(be32(p) ‖ page p)`.
 *
 * Page 1 is left out on purpose: the backup API rewrites page 1's header in its copy, so only pages 2..N
 * of a base equal the live database's at the same position. The checksum updates in O(changed pages):
 * `post = pre ⊕ H_old(p) ⊕ H_new(p)`; pages cut off by a shrink are XORed out; pages a growth adds without
 * an image are zero-filled (a restore extends the file with zeros), so they count as `H(p, zeros)`.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { FILE_CHUNK_BYTES, fileChunks } from '../file-chunks.js';
import type { Pacer } from '../core/pacer.js';

/** Smallest and largest SQLite page sizes. */
export const MIN_PAGE_SIZE = 512;
export const MAX_PAGE_SIZE = 65536;

/** Whether `n` is a valid SQLite page size (a power of two, 512..65536). */
export function isValidPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_PAGE_SIZE && n <= MAX_PAGE_SIZE && (n & (n - 1)) === 0;
}

/** H(p): the page hash. `data` is the whole page image. */
export function pageHash(pgno: number, data: Uint8Array): bigint {
  pgnoBytes.writeUInt32BE(pgno, 0);
  return createHash('sha256').update(pgnoBytes).update(data).digest().readBigUInt64BE(0);
}

/** be32(p), reused: pageHash is synchronous and runs for every page of a restore. */
const pgnoBytes = Buffer.alloc(4);

const zeroPageHashes = new Map<number, Uint8Array>();

/** H(p) of an all-zero page of `pageSize` bytes (what a file extended by ftruncate holds). */
export function zeroPageHash(pgno: number, pageSize: number): bigint {
  let zeros = zeroPageHashes.get(pageSize);
  if (!zeros) {
    zeros = new Uint8Array(pageSize);
    zeroPageHashes.set(pageSize, zeros);
  }
  return pageHash(pgno, zeros);
}

/** The checksum as written in metadata: 16 lowercase hex digits. */
export function formatChecksum(checksum: bigint): string {
  return checksum.toString(16).padStart(16, '0');
}

/** Parse 16 hex digits; `undefined` for anything else. */
export function parseChecksum(text: string | undefined): bigint | undefined {
  return text !== undefined && /^[0-9a-f]{16}$/.test(text) ? BigInt(`0x${text}`) : undefined;
}

/** The page size a SQLite header declares (bytes 16-17; the value 1 means 65536); `undefined` if invalid. */
export function headerPageSize(header: Uint8Array): number | undefined {
  if (header.length < 18) return undefined;
  const raw = (header[16]! << 8) | header[17]!;
  const size = raw === 1 ? 65536 : raw;
  return isValidPageSize(size) ? size : undefined;
}

/**
 * Per-page hashes of one database, kept up to date as pages change, and the checksum they XOR to.
 * Memory: 8 bytes per page (2 MiB per GiB at 4 KiB pages). The capture side holds one of these.
 */
export class PageHashes {
  private hashes: BigUint64Array;
  private count: number;
  private sum: bigint;

  /** `hashes[i]` is H(i + 1); entry 0 (page 1) is kept but never counted in the checksum. */
  constructor(
    readonly pageSize: number,
    hashes: BigUint64Array,
    pageCount: number,
  ) {
    this.hashes = hashes;
    this.count = pageCount;
    let sum = 0n;
    for (let i = 1; i < pageCount; i++) sum ^= hashes[i]!;
    this.sum = sum;
  }

  get pageCount(): number {
    return this.count;
  }

  /** The database checksum now. */
  get checksum(): bigint {
    return this.sum;
  }

  /** H(pgno) as last recorded; `undefined` beyond the page count. */
  hashOf(pgno: number): bigint | undefined {
    return pgno >= 1 && pgno <= this.count ? this.hashes[pgno - 1] : undefined;
  }

  /**
   * Record a new image of page `pgno` (1 ≤ pgno ≤ the page count; call {@link resize} first for growth).
   * @returns the new hash.
   */
  setPage(pgno: number, data: Uint8Array): bigint {
    const hash = pageHash(pgno, data);
    this.setHash(pgno, hash);
    return hash;
  }

  /** Record H(pgno) computed elsewhere. */
  setHash(pgno: number, hash: bigint): void {
    if (pgno < 1 || pgno > this.count) throw new RangeError(`page ${pgno} is outside 1..${this.count}`);
    if (pgno >= 2) this.sum ^= this.hashes[pgno - 1]! ^ hash;
    this.hashes[pgno - 1] = hash;
  }

  /**
   * Change the page count. Pages cut off are XORed out; pages added count as zero pages until
   * {@link setPage} gives them an image (the same rule a restore follows when it extends the file).
   */
  resize(pageCount: number): void {
    if (pageCount > this.hashes.length) {
      const grown = new BigUint64Array(Math.max(pageCount, Math.ceil(this.hashes.length * 1.25)));
      grown.set(this.hashes.subarray(0, this.count));
      this.hashes = grown;
    }
    for (let p = pageCount + 1; p <= this.count; p++) if (p >= 2) this.sum ^= this.hashes[p - 1]!;
    for (let p = this.count + 1; p <= pageCount; p++) {
      const hash = zeroPageHash(p, this.pageSize);
      this.hashes[p - 1] = hash;
      if (p >= 2) this.sum ^= hash;
    }
    this.count = pageCount;
  }
}

/**
 * Hash every page of a database file (its length must be a whole number of pages of the size its header
 * declares). Reads the file once, streaming; with a `pacer`, paced chunk by chunk.
 * @throws Error when the file is not a whole number of valid pages.
 */
export async function hashDatabaseFile(path: string, signal?: AbortSignal, pacer?: Pacer): Promise<PageHashes> {
  const handle = await open(path, 'r');
  let pageSize: number | undefined;
  let sizeBytes: number;
  try {
    const header = Buffer.alloc(100);
    await handle.read(header, 0, 100, 0);
    pageSize = headerPageSize(header);
    sizeBytes = (await handle.stat()).size;
  } finally {
    await handle.close();
  }
  if (pageSize === undefined) throw new Error(`${path}: not a SQLite database (no valid page size in its header)`);
  if (sizeBytes % pageSize !== 0) throw new Error(`${path}: ${sizeBytes} bytes is not a whole number of ${pageSize}-byte pages`);
  const pageCount = sizeBytes / pageSize;
  const hashes = new BigUint64Array(pageCount);
  let pgno = 1;
  let carry: Buffer | undefined;
  // A whole number of pages per read, so a short read is the only way a page spans two chunks.
  const bufferBytes = Math.max(1, Math.floor(FILE_CHUNK_BYTES / pageSize)) * pageSize;
  for await (const chunk of fileChunks(path, { signal, bufferBytes, endBytes: sizeBytes })) {
    let data = chunk;
    if (carry) {
      data = Buffer.concat([carry, data]);
      carry = undefined;
    }
    let offset = 0;
    for (; offset + pageSize <= data.length && pgno <= pageCount; offset += pageSize) {
      hashes[pgno - 1] = pageHash(pgno, data.subarray(offset, offset + pageSize));
      pgno++;
    }
    // A copy: the chunk's buffer is reused by the next read.
    if (offset < data.length) carry = Buffer.from(data.subarray(offset));
    await pacer?.pause(signal);
  }
  if (pgno !== pageCount + 1) throw new Error(`${path}: changed while it was hashed (read ${pgno - 1} of ${pageCount} pages)`);
  return new PageHashes(pageSize, hashes, pageCount);
}

/** The database checksum of a file (pages 2..N). */
export async function databaseChecksum(path: string, signal?: AbortSignal): Promise<bigint> {
  return (await hashDatabaseFile(path, signal)).checksum;
}
