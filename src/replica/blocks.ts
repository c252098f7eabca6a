/**
 * Fixed-size blocks of a file and their digests: each block is one part of a multipart upload, copied
 * server-side from the previous version when its digest is unchanged, sent otherwise.
 *
 * Why this works for db-sync: SQLite's backup API writes the same bytes for the same content, page by page,
 * so between two snapshots only the blocks holding changed pages differ, at the same offsets. That pays
 * when changes cluster (appends to a table whose indexes grow at the end: time, autoincrement). It does not
 * when an index on a random key takes the inserts: measured on the benchmark schema (index on user_id),
 * 3,000 new rows changed 2,701 of 49,886 pages of a 200 MB file, spread so that every 1 MiB block changed.
 * Then every block is sent and nothing is lost but the block hashing (SHA-1, ~0.65 s per GB of CPU).
 *
 * The block digest is SHA-1: twice as fast as SHA-256 here (1.5 vs 0.8 GB/s on this machine's CPU), and it
 * only decides which blocks to send. Its weakness is crafted collisions; an undetected one would make the
 * object differ from the snapshot, and every restore compares the whole object with the snapshot's SHA-256
 * (stored in its metadata), so it could never be installed silently.
 */
import { createHash } from 'node:crypto';
import type { BlockDigests, PutBase } from './store.js';

export const BLOCK_DIGEST_ALGORITHM = 'sha1';
/** S3's smallest part (every part but the last). */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
/** S3's most parts per upload. */
export const MAX_PARTS = 10_000;
/** Block (and sent part) size for files up to MAX_PARTS × this: 8 MiB, so 1 GB is ~125 parts. */
export const DEFAULT_BLOCK_BYTES = 8 * 1024 * 1024;

/** The block size for a file of `sizeBytes`: 8 MiB, or larger (whole MiB) so no upload exceeds MAX_PARTS parts. */
export function blockSizeFor(sizeBytes: number): number {
  const mib = 1024 * 1024;
  return Math.max(DEFAULT_BLOCK_BYTES, Math.ceil(sizeBytes / MAX_PARTS / mib) * mib);
}

export function digestOf(bytes: Uint8Array): string {
  return createHash(BLOCK_DIGEST_ALGORITHM).update(bytes).digest('hex');
}

/**
 * Whether the block at `index` of the new file (`lengthBytes` long, digest `digest`) is the same block of
 * the base: same length and digest.
 */
export function sameBlock(base: BlockDigests, index: number, lengthBytes: number, digest: string): boolean {
  return baseHasBlock(base, index, lengthBytes) && base.digests[index] === digest;
}

/** Whether the base has a block at `index` of `lengthBytes`, which the new block may then equal. */
export function baseHasBlock(base: BlockDigests, index: number, lengthBytes: number): boolean {
  const baseLength = Math.min(base.blockSizeBytes, base.sizeBytes - index * base.blockSizeBytes);
  return index < base.digests.length && baseLength === lengthBytes;
}

/** Why `base` cannot serve a file of `sizeBytes` split in `blockSizeBytes` blocks; undefined when it can. */
export function baseMismatch(base: PutBase, blockSizeBytes: number): string | undefined {
  if (base.blocks.blockSizeBytes !== blockSizeBytes) {
    return `block size changed (${base.blocks.blockSizeBytes} then, ${blockSizeBytes} now)`;
  }
  const expected = Math.ceil(base.blocks.sizeBytes / base.blocks.blockSizeBytes);
  if (base.blocks.digests.length !== expected) return 'the recorded block digests are incomplete';
  return undefined;
}
