/**
 * SegmentShipper.drain's contract: it returns once every queued segment is shipped, i.e. its PUT done, its
 * spool file removed and onShipped called. A fresh-clone CI run saw it return while the last segment was
 * still being finished (`expected [ 1, 2 ] to deeply equal [ 1, 2, 3 ]` in pending.test.ts): the queue
 * empties before the file removal. A slow disk makes that window wide; the removal is slowed here on
 * purpose, since a real disk cannot be made slow on demand.
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import type * as FsAtomic from '../../src/fs-atomic.js';
import { silentLogger } from '../../src/logger.js';
import { SegmentShipper } from '../../src/replication/shipper.js';
import type { ObjectInfo } from '../../src/replica/store.js';
import { tempDir } from '../helpers/db.js';
import { sealedSegmentFile } from '../helpers/segments.js';

vi.mock('../../src/fs-atomic.js', async (importOriginal) => {
  const real = await importOriginal<typeof FsAtomic>();
  return {
    ...real,
    removeQuietly: async (path: string): Promise<void> => {
      await sleep(100); // five of drain's 20 ms polls
      await real.removeQuietly(path);
    },
  };
});

describe('SegmentShipper.drain', () => {
  it('returns only after the last segment is finished: file removed, onShipped called', async () => {
    const dir = tempDir();
    const shipped: number[] = [];
    const shipper = new SegmentShipper({
      key: 'db.sqlite3',
      log: silentLogger(),
      put: async (key) => ({ key }) as ObjectInfo,
      onShipped: (s) => shipped.push(s.seq),
    });
    const segments = [1, 2].map((seq) => sealedSegmentFile(dir, seq));
    for (const s of segments) shipper.enqueue(s);
    await shipper.drain(AbortSignal.timeout(10_000));
    expect(shipped).toEqual([1, 2]);
    for (const s of segments) expect(existsSync(s.path)).toBe(false);
  });
});
