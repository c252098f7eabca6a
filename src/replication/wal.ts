/**
 * Reading a SQLite `-wal` file directly (no VFS, no extension): its header, and the frames of complete
 * transactions after a saved position (docs/continuous-replication.md, "Capture", tick step 2).
 *
 * The WAL format (sqlite.org/fileformat2.html#walformat): a 32-byte header (magic, format version, page
 * size, checkpoint sequence, salt-1, salt-2, checksum of the first 24 bytes), then frames of a 24-byte
 * header (page number, database size in pages after the commit for a commit frame else 0, salt-1, salt-2,
 * cumulative checksum) and one page. Every header field is big-endian; the checksums run over 32-bit words
 * in the byte order the magic names (0x377f0682: little-endian, 0x377f0683: big-endian). A frame is valid
 * when its salts equal the header's and its checksum continues the chain from the previous frame (the
 * header for frame 1). SQLite's recovery uses exactly this rule; so does this reader, and it consumes frames
 * only through the last valid commit frame: a torn or uncommitted tail stays for the next read.
 *
 * This module knows nothing of pins or checkpoints: it reads bytes. Whether frames at an offset can still be
 * trusted (not overwritten by a WAL restart) is the caller's invariant (the pins).
 */
import type { FileHandle } from 'node:fs/promises';

export const WAL_HEADER_BYTES = 32;
export const FRAME_HEADER_BYTES = 24;
/** Magic with little-endian checksums (what x86 and ARM SQLite write); `| 1` = big-endian checksums. */
export const WAL_MAGIC_LE = 0x377f0682;
export const WAL_MAGIC_BE = 0x377f0683;
/** The only WAL format version SQLite has written (3.7.0). */
export const WAL_FORMAT_VERSION = 3007000;
/** Bytes read from the file at once while scanning frames. */
const SCAN_CHUNK_BYTES = 4 * 1024 * 1024;

/** A cumulative checksum: two u32 words. */
export type WalChecksum = readonly [number, number];

export interface WalHeader {
  /** Checksums over big-endian words (magic 0x377f0683). */
  readonly bigEndian: boolean;
  readonly pageSize: number;
  /** SQLite's checkpoint counter. Not relied on: it is not kept consistently across connections. */
  readonly checkpointSeq: number;
  readonly salt1: number;
  readonly salt2: number;
  /** The header's own checksum: where frame 1's chain starts. */
  readonly checksum: WalChecksum;
}

/**
 * The WAL's checksum over `data` (a multiple of 8 bytes), continuing from `start`.
 * `s0 += x[i] + s1; s1 += x[i+1] + s0` over 32-bit words, modulo 2^32.
 */
export function walChecksum(bigEndian: boolean, data: Uint8Array, start: WalChecksum = [0, 0]): [number, number] {
  if (data.length % 8 !== 0) throw new RangeError(`WAL checksum over ${data.length} bytes (must be a multiple of 8)`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const little = !bigEndian;
  let s0 = start[0];
  let s1 = start[1];
  for (let i = 0; i < data.length; i += 8) {
    s0 = (s0 + view.getUint32(i, little) + s1) >>> 0;
    s1 = (s1 + view.getUint32(i + 4, little) + s0) >>> 0;
  }
  return [s0, s1];
}

/**
 * Parse and verify a WAL header.
 * @returns the header, or a reason when the bytes are not a valid one (short, bad magic, version, page size or checksum).
 */
export function parseWalHeader(bytes: Uint8Array): WalHeader | { readonly invalid: string } {
  if (bytes.length < WAL_HEADER_BYTES) return { invalid: `header is ${bytes.length} bytes, not ${WAL_HEADER_BYTES}` };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, WAL_HEADER_BYTES);
  const magic = b.readUInt32BE(0);
  if (magic !== WAL_MAGIC_LE && magic !== WAL_MAGIC_BE) return { invalid: `bad magic 0x${magic.toString(16)}` };
  const version = b.readUInt32BE(4);
  if (version !== WAL_FORMAT_VERSION) return { invalid: `format version ${version} is not ${WAL_FORMAT_VERSION}` };
  const pageSize = b.readUInt32BE(8);
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return { invalid: `page size ${pageSize}` };
  const bigEndian = magic === WAL_MAGIC_BE;
  const [c0, c1] = walChecksum(bigEndian, b.subarray(0, 24));
  const checksum: WalChecksum = [b.readUInt32BE(24), b.readUInt32BE(28)];
  if (c0 !== checksum[0] || c1 !== checksum[1]) return { invalid: 'header checksum does not match' };
  return { bigEndian, pageSize, checkpointSeq: b.readUInt32BE(12), salt1: b.readUInt32BE(16), salt2: b.readUInt32BE(20), checksum };
}

export function isWalHeader(h: WalHeader | { readonly invalid: string }): h is WalHeader {
  return !('invalid' in h);
}

/** Where reading continues: just after the last consumed commit frame of one WAL generation (its header). */
export interface WalCursor {
  readonly header: WalHeader;
  /** Byte offset of the next frame. */
  readonly offset: number;
  /** Frames consumed in this WAL generation (the next frame's number is `frames + 1`). */
  readonly frames: number;
  /** The cumulative checksum through the last consumed frame (the header's for none). */
  readonly checksum: WalChecksum;
}

/** The cursor at the start of a WAL generation: before frame 1. */
export function cursorAtStart(header: WalHeader): WalCursor {
  return { header, offset: WAL_HEADER_BYTES, frames: 0, checksum: header.checksum };
}

/** One consumed frame: which page, and where its image lies in the file. */
export interface WalFrame {
  readonly pgno: number;
  /** Byte offset of the page image (after the frame header). */
  readonly dataOffset: number;
  /** 1-based frame number in its WAL generation. */
  readonly frame: number;
}

/** A commit frame: the end of one transaction. */
export interface WalCommit {
  /** Frame number of the commit frame. */
  readonly frame: number;
  /** The database's size in pages after this commit. */
  readonly dbSizePages: number;
}

/** What a scan consumed: frames of complete transactions only, in file order. */
export interface WalScan {
  /** Every frame through the last commit frame (several may carry the same page: the last one wins). */
  readonly frames: readonly WalFrame[];
  readonly commits: readonly WalCommit[];
  /** After the last commit frame (the input cursor when nothing was committed). */
  readonly cursor: WalCursor;
  /** Bytes read. */
  readonly readBytes: number;
}

function sameSalts(a: WalHeader, b: WalHeader): boolean {
  return a.salt1 === b.salt1 && a.salt2 === b.salt2;
}

/**
 * Scan frames from `from` to `endOffset` (the file's size when the caller looked): keep going while each
 * frame's salts match the header and the checksum chain holds, and consume through the last commit frame.
 * Reads `(endOffset − from.offset)` bytes at most; a partial frame at the end is simply not read.
 */
export async function scanFrames(handle: FileHandle, from: WalCursor, endOffset: number): Promise<WalScan> {
  const { header } = from;
  const frameBytes = FRAME_HEADER_BYTES + header.pageSize;
  const framesPerChunk = Math.max(1, Math.floor(SCAN_CHUNK_BYTES / frameBytes));
  const chunk = Buffer.allocUnsafe(framesPerChunk * frameBytes);
  const frames: WalFrame[] = [];
  const commits: WalCommit[] = [];
  let consumed = 0; // frames of `frames` through the last commit
  let cursor = from;
  let offset = from.offset;
  let frameNo = from.frames;
  let checksum: WalChecksum = from.checksum;
  let readBytes = 0;
  scan: while (offset + frameBytes <= endOffset) {
    const want = Math.min(framesPerChunk, Math.floor((endOffset - offset) / frameBytes)) * frameBytes;
    const { bytesRead } = await handle.read(chunk, 0, want, offset);
    readBytes += bytesRead;
    const whole = Math.floor(bytesRead / frameBytes);
    if (whole === 0) break;
    for (let i = 0; i < whole; i++) {
      const f = chunk.subarray(i * frameBytes, (i + 1) * frameBytes);
      const pgno = f.readUInt32BE(0);
      const dbSize = f.readUInt32BE(4);
      if (pgno === 0 || f.readUInt32BE(8) !== header.salt1 || f.readUInt32BE(12) !== header.salt2) break scan;
      let sum = walChecksum(header.bigEndian, f.subarray(0, 8), checksum);
      sum = walChecksum(header.bigEndian, f.subarray(FRAME_HEADER_BYTES), sum);
      if (sum[0] !== f.readUInt32BE(16) || sum[1] !== f.readUInt32BE(20)) break scan;
      checksum = sum;
      frameNo += 1;
      frames.push({ pgno, dataOffset: offset + FRAME_HEADER_BYTES, frame: frameNo });
      offset += frameBytes;
      if (dbSize !== 0) {
        commits.push({ frame: frameNo, dbSizePages: dbSize });
        consumed = frames.length;
        cursor = { header, offset, frames: frameNo, checksum };
      }
    }
    if (whole * frameBytes < want) break;
  }
  frames.length = consumed;
  return { frames, commits, cursor, readBytes };
}

/** The latest frame of each page among `frames`, in ascending pgno order. */
export function latestFrames(frames: readonly WalFrame[]): WalFrame[] {
  const latest = new Map<number, WalFrame>();
  for (const f of frames) latest.set(f.pgno, f);
  return [...latest.values()].sort((a, b) => a.pgno - b.pgno);
}

/** The WAL file as found now: absent or empty (a TRUNCATE checkpoint, or no write since), invalid, or a header. */
export type WalLook = (
  | { readonly kind: 'empty' }
  | { readonly kind: 'invalid'; readonly reason: string }
  | { readonly kind: 'header'; readonly header: WalHeader }
) & {
  readonly sizeBytes: number;
  /** The file's inode: a different one means the -wal was deleted and created again. */
  readonly ino: number;
};

/** Read the WAL's header and size. A file shorter than a header counts as empty (SQLite treats it so). */
export async function lookAtWal(handle: FileHandle): Promise<WalLook> {
  const { size, ino } = await handle.stat();
  if (size < WAL_HEADER_BYTES) return { kind: 'empty', sizeBytes: size, ino };
  const bytes = Buffer.alloc(WAL_HEADER_BYTES);
  await handle.read(bytes, 0, WAL_HEADER_BYTES, 0);
  const header = parseWalHeader(bytes);
  return isWalHeader(header)
    ? { kind: 'header', header, sizeBytes: size, ino }
    : { kind: 'invalid', reason: header.invalid, sizeBytes: size, ino };
}

/** How a header found now relates to the cursor's WAL generation (docs, "Continuity"). */
export type Continuity =
  | { readonly kind: 'same' }
  /** SQLite restarted the WAL (salt-1 + 1): continue at frame 1 of the new generation. */
  | { readonly kind: 'restarted' }
  | { readonly kind: 'broken'; readonly reason: string };

/**
 * Compare the header now with the cursor's. A restart is accepted on salt-1 = ours + 1 alone: the
 * checkpoint sequence in the header is not kept consistently across connections (observed), and the pin
 * invariant already guarantees that a restart can only follow frames that were read.
 */
export function continuity(cursor: WalHeader, now: WalHeader): Continuity {
  if (now.pageSize !== cursor.pageSize)
    return { kind: 'broken', reason: `the WAL's page size changed from ${cursor.pageSize} to ${now.pageSize}` };
  if (sameSalts(cursor, now)) {
    return now.bigEndian === cursor.bigEndian ? { kind: 'same' } : { kind: 'broken', reason: 'the WAL header changed its byte order' };
  }
  if (now.salt1 === (cursor.salt1 + 1) >>> 0) return { kind: 'restarted' };
  return {
    kind: 'broken',
    reason: `the WAL was restarted more than once unseen or replaced (salt-1 went from ${cursor.salt1} to ${now.salt1}, expected ${(cursor.salt1 + 1) >>> 0})`,
  };
}

/**
 * Whether a frame with the cursor's salts sits at the cursor's offset: the cheap test a tick makes before
 * scanning (two small reads while idle). False for a file that ends there or a stale frame from before a restart.
 */
export async function frameWaiting(handle: FileHandle, cursor: WalCursor, sizeBytes: number): Promise<boolean> {
  if (cursor.offset + FRAME_HEADER_BYTES + cursor.header.pageSize > sizeBytes) return false;
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  await handle.read(b, 0, FRAME_HEADER_BYTES, cursor.offset);
  return b.readUInt32BE(8) === cursor.header.salt1 && b.readUInt32BE(12) === cursor.header.salt2;
}
