/** Sealed segments for the shipper's tests: a small spool file and the record the capture would hand over. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SealedSegment } from '../../src/replication/pending.js';

/** A sealed segment `seq` of `gen` whose spool file (`dir/s<seq>`) holds a few bytes. */
export function sealedSegmentFile(dir: string, seq: number, gen = '20261202T174501Z-9f3a01bc'): SealedSegment {
  const path = join(dir, `s${seq}`);
  writeFileSync(path, `segment ${seq}`);
  return {
    gen,
    seq,
    lastCommitMs: 1000 + seq,
    firstCommitMs: 1000 + seq,
    path,
    sizeBytes: 9,
    pages: 1,
    commits: 1,
    preChecksum: 0n,
    postChecksum: 0n,
  };
}
