/**
 * replayChain on both stores (a directory and the real S3 server): the same chain gives the same file
 * whichever way its segments are fetched (in memory or through temp files, one or many at a time), and the
 * checksum rules for a database that grows and shrinks hold. The CLI-level cases are in test/e2e/replay.test.ts.
 */
import { copyFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import type { ReplicaStore } from '../../src/replica/store.js';
import { replayChain, type ReplayOptions } from '../../src/replication/replay.js';
import { ChainBuilder, dumpOf, putBytes, samePagesFrom2 } from '../helpers/chain.js';
import { createDatabase, integrity, tempDir } from '../helpers/db.js';
import { createBucket } from '../helpers/s3.js';

const KEY = 'db.sqlite3';

const steps: Array<(db: Database.Database) => void> = [
  (db) => db.exec("INSERT INTO rows (body) SELECT printf('%.500c', 'a') FROM rows LIMIT 300"), // grows
  (db) => db.exec('DELETE FROM rows WHERE id % 3 = 0'),
  (db) => db.exec('VACUUM'), // shrinks: pages cut off leave the checksum
  (db) => db.exec('CREATE TABLE big (b BLOB); INSERT INTO big VALUES (zeroblob(200000))'), // grows by overflow pages
  (db) => db.exec('DROP TABLE big; VACUUM'),
  (db) => db.exec("UPDATE rows SET body = 'changed' WHERE id < 50"),
];

async function scenario(store: ReplicaStore, dir: string): Promise<ChainBuilder & { last: string }> {
  const live = join(dir, 'live.sqlite3');
  createDatabase(live, 500, { bodyBytes: 200 });
  const builder = await ChainBuilder.start(KEY, live, dir, { startSeq: 10 });
  let last = builder.base.path;
  for (const step of steps) {
    const s = await builder.next(step);
    await putBytes(store, s.key, s.bytes, dir);
    last = s.statePath;
  }
  return Object.assign(builder, { last });
}

for (const [name, makeStore] of [
  ['a directory', async (): Promise<ReplicaStore> => new DirStore(tempDir())],
  ['S3', async (): Promise<ReplicaStore> => (await createBucket()).store],
] as const) {
  describe(`replayChain on ${name}`, () => {
    it.each<[string, Partial<ReplayOptions>]>([
      ['in memory, 8 at a time', {}],
      ['through temp files, one at a time', { inMemoryMaxBytes: 0, concurrency: 1 }],
      ['through temp files, 3 at a time', { inMemoryMaxBytes: 0, concurrency: 3 }],
    ])('%s: base + chain equals the live state, through growth and shrinking', async (_how, options) => {
      const store = await makeStore();
      const dir = tempDir();
      const chain = await scenario(store, dir);
      const target = join(dir, 'restored.sqlite3');
      copyFileSync(chain.base.path, target);
      const result = await replayChain(store, KEY, chain.base.position, target, { log: silentLogger(), ...options });
      expect(result).toMatchObject({ gen: chain.gen, fromSeq: 10, lastSeq: 16, segments: 6, notApplied: 0, stoppedBecause: undefined });
      expect(result.pages).toBeGreaterThan(6);
      expect(integrity(target)).toBe('ok');
      expect(dumpOf(target)).toBe(dumpOf(chain.last));
      expect(samePagesFrom2(target, chain.last)).toBe(true);
      // Temp files of downloaded segments are gone.
      expect(readdirSync(dir).filter((f) => f.includes('.db-sync-tmp-'))).toEqual([]);
      store.close();
    });

    it('a wrong base checksum stops before the first segment and leaves the base untouched', async () => {
      const store = await makeStore();
      const dir = tempDir();
      const chain = await scenario(store, dir);
      const target = join(dir, 'restored.sqlite3');
      copyFileSync(chain.base.path, target);
      const result = await replayChain(store, KEY, { ...chain.base.position, checksum: chain.base.position.checksum ^ 1n }, target, {
        log: silentLogger(),
        inMemoryMaxBytes: name === 'S3' ? 0 : undefined,
      });
      expect(result).toMatchObject({ segments: 0, lastSeq: 10, notApplied: 6 });
      expect(result.stoppedBecause).toMatch(/^checksum mismatch at 11: the database before it is/);
      expect(samePagesFrom2(target, chain.base.path)).toBe(true);
      store.close();
    });
  });
}
