import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { StorageError } from '../../src/errors.js';
import { databaseChecksum, hashDatabaseFile } from '../../src/replication/checksum.js';
import { segmentKey } from '../../src/replication/layout.js';
import { decodeSegment } from '../../src/replication/segment.js';
import { PendingSegment, type SealedSegment } from '../../src/replication/pending.js';
import { SegmentShipper } from '../../src/replication/shipper.js';
import type { ObjectInfo } from '../../src/replica/store.js';
import { createDatabase, tempDir } from '../helpers/db.js';
import { sealedSegmentFile } from '../helpers/segments.js';

const GEN = '20261202T174501Z-9f3a01bc';
const PAGE = 4096;

function page(fill: number): Buffer {
  return Buffer.alloc(PAGE, fill);
}

/** Write `pages` into a copy of the file at `path`, sized to `pageCount` pages (what a restore does). */
function apply(path: string, pages: ReadonlyArray<{ pgno: number; data: Uint8Array }>, pageCount: number): void {
  const file = Buffer.from(readFileSync(path));
  const out = Buffer.alloc(pageCount * PAGE);
  file.copy(out, 0, 0, Math.min(file.length, out.length));
  for (const p of pages) out.set(p.data, (p.pgno - 1) * PAGE);
  writeFileSync(path, out);
}

describe('PendingSegment', () => {
  it('seals the latest image of each page, ascending, within the final page count; pre/post checksums match the file', async () => {
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    createDatabase(db, 200, { wal: false });
    const hashes = await hashDatabaseFile(db);
    const before = hashes.checksum;
    const count = hashes.pageCount;
    const pending = new PendingSegment(PAGE, join(dir, 'overflow'));
    await pending.addPage(3, page(1));
    await pending.addPage(count + 2, page(2)); // a growth
    await pending.addPage(3, page(3)); // a later image of page 3 wins
    await pending.addPage(2, page(4));
    pending.addCommits({ commits: 2, dbSizePages: count + 2, atMs: 1000, walSalt1: 1, walSalt2: 2, walFirstFrame: 1, walLastFrame: 4 });
    await pending.addPage(count + 5, page(5)); // grown, then cut by the last commit below
    pending.addCommits({ commits: 1, dbSizePages: count + 2, atMs: 1500, walSalt1: 1, walSalt2: 2, walFirstFrame: 5, walLastFrame: 5 });
    expect(pending.commits).toBe(3);
    expect(pending.oldestCommitMs).toBe(1000);
    const sealed = await pending.seal(GEN, 7, hashes, join(dir, 'seg'));
    expect(sealed).toMatchObject({ gen: GEN, seq: 7, pages: 3, commits: 3, firstCommitMs: 1000, lastCommitMs: 1500, preChecksum: before });
    const decoded = await decodeSegment(readFileSync(join(dir, 'seg')), { gen: GEN, seq: 7 });
    expect(decoded.header).toMatchObject({ pageCount: count + 2, entries: 3, walFirstFrame: 1, walLastFrame: 5, compressed: true });
    expect(decoded.pages.map((p) => p.pgno)).toEqual([2, 3, count + 2]);
    expect(decoded.pages[1]!.data[0]).toBe(3);
    // The restore's view: the file with the pages applied (the gap page count+1 stays zeros) has exactly the post checksum.
    apply(db, decoded.pages, decoded.header.pageCount);
    expect(await databaseChecksum(db)).toBe(sealed.postChecksum);
    expect(hashes.checksum).toBe(sealed.postChecksum);
  });

  it('spills images past its memory budget to the overflow file, reads them back when sealing, removes the file on discard', async () => {
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    createDatabase(db, 500, { wal: false });
    const hashes = await hashDatabaseFile(db);
    const overflow = join(dir, 'overflow');
    const pending = new PendingSegment(PAGE, overflow, 2 * PAGE);
    for (let p = 2; p <= 6; p++) await pending.addPage(p, page(p));
    pending.addCommits({ commits: 1, dbSizePages: hashes.pageCount, atMs: 1, walSalt1: 0, walSalt2: 0, walFirstFrame: 1, walLastFrame: 5 });
    expect(pending.diskBytes).toBe(3 * PAGE);
    expect(existsSync(overflow)).toBe(true);
    const sealed = await pending.seal(GEN, 1, hashes, join(dir, 'seg'));
    const decoded = await decodeSegment(readFileSync(sealed.path), { gen: GEN, seq: 1 });
    expect(decoded.pages.map((p) => [p.pgno, p.data[100]])).toEqual([
      [2, 2],
      [3, 3],
      [4, 4],
      [5, 5],
      [6, 6],
    ]);
    await pending.discard();
    expect(existsSync(overflow)).toBe(false);
    expect(pending.empty).toBe(true);
  });

  it('refuses to seal without a commit', async () => {
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    createDatabase(db, 5, { wal: false });
    const pending = new PendingSegment(PAGE, join(dir, 'overflow'));
    await pending.addPage(2, page(1)); // an uncommitted tail is never added, but even so
    await expect(pending.seal(GEN, 1, await hashDatabaseFile(db), join(dir, 'seg'))).rejects.toThrow(/no commit/);
  });
});

describe('SegmentShipper', () => {
  const sealed = (dir: string, seq: number): SealedSegment => sealedSegmentFile(dir, seq, GEN);

  it('ships strictly in seq order, retrying a failed PUT of the same key, and deletes each file after its PUT', async () => {
    const dir = tempDir();
    const puts: string[] = [];
    let failures = 2;
    const shipped: number[] = [];
    const shipper = new SegmentShipper({
      key: 'db.sqlite3',
      log: silentLogger(),
      put: async (key, path) => {
        puts.push(key);
        if (key.includes('0000000000000002') && failures-- > 0) throw new StorageError('slow down', { retryable: true, code: 'SlowDown' });
        expect(readFileSync(path, 'utf8')).toMatch(/^segment/);
        return { key } as ObjectInfo;
      },
      onShipped: (s) => shipped.push(s.seq),
    });
    const segments = [1, 2, 3].map((n) => sealed(dir, n));
    for (const s of segments) shipper.enqueue(s);
    await shipper.drain(AbortSignal.timeout(10_000));
    expect(shipped).toEqual([1, 2, 3]);
    const k = (n: number): string => segmentKey('db.sqlite3', { gen: GEN, seq: n, lastCommitMs: 1000 + n });
    expect(puts).toEqual([k(1), k(2), k(2), k(2), k(3)]);
    for (const s of segments) expect(existsSync(s.path)).toBe(false);
    expect(shipper.status()).toMatchObject({ queued: 0, consecutiveFailures: 0 });
  });

  it('dropAll() stops shipping and deletes the queued files', async () => {
    const dir = tempDir();
    const shipper = new SegmentShipper({
      key: 'db.sqlite3',
      log: silentLogger(),
      put: () => Promise.reject(new StorageError('down', { retryable: true, code: 'ECONNREFUSED' })),
    });
    const segments = [1, 2].map((n) => sealed(dir, n));
    for (const s of segments) shipper.enqueue(s);
    expect(shipper.queuedBytes).toBe(18);
    expect(await shipper.dropAll()).toBe(2);
    for (const s of segments) expect(existsSync(s.path)).toBe(false);
    expect(shipper.queued).toBe(0);
  });
});
