/**
 * The Replicator against a real database and a directory store: an app connection commits in WAL mode,
 * the capture ships segments and bases, and a restore (base + chain replay, as every restore path does)
 * yields exactly the app's committed rows. The CLI-level cases (kill -9, S3, SIGTERM) are in
 * test/e2e/continuous.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { restoreExact } from '../../src/core/restore.js';
import { silentLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import type { ObjectInfo, ReplicaStore } from '../../src/replica/store.js';
import { StorageError } from '../../src/errors.js';
import { chainsPrefix } from '../../src/replication/layout.js';
import { Replicator, type ReplicatorOptions } from '../../src/replication/replicator.js';
import { walChecksum, WAL_HEADER_BYTES } from '../../src/replication/wal.js';
import { createDatabase, sqlite3, tempDir } from '../helpers/db.js';
import { startWriter } from '../helpers/writer.js';

const KEY = 'db.sqlite3';
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  dir: string;
  dbPath: string;
  app: Database.Database;
  store: DirStore;
  replicator: Replicator;
  next: () => number;
  /** Commit `rows` rows in one transaction; retried while the capture's barrier holds the write lock. */
  commit: (rows?: number) => Promise<void>;
}

async function setup(options: Partial<ReplicatorOptions> = {}, storeOverride?: (store: DirStore) => ReplicaStore): Promise<Setup> {
  const dir = tempDir('capture-');
  const dbPath = join(dir, 'app.sqlite3');
  const app = new Database(dbPath);
  app.pragma('journal_mode = WAL');
  app.pragma('wal_autocheckpoint = 0');
  // In this process the app and the capture share one thread: a busy wait here would stall the capture too.
  app.pragma('busy_timeout = 0');
  app.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  const insert = app.prepare('INSERT INTO t (id, body) VALUES (?, ?)');
  let id = 0;
  const commit = async (rows = 1): Promise<void> => {
    for (;;) {
      try {
        app.transaction(() => {
          for (let i = 0; i < rows; i++) insert.run(id + i + 1, randomBytes(100).toString('hex'));
        })();
        id += rows;
        return;
      } catch (error) {
        // The barrier is held across an await of the capture, on this very thread: wait it out as a busy handler would.
        if (!String((error as { code?: string }).code).startsWith('SQLITE_BUSY')) throw error;
        await sleep(5);
      }
    }
  };
  const store = new DirStore(join(dir, 'store'));
  const target = storeOverride ? storeOverride(store) : store;
  const replicator = new Replicator({
    store: target,
    key: KEY,
    dbPath,
    check: 'quick',
    origin: { host: 'test', toolVersion: '0' },
    log: silentLogger(),
    putSegment: (key, path, o) => target.put(key, path, o),
    tickMs: 50,
    segmentIntervalMs: 100,
    ...options,
  });
  cleanups.push(() => {
    app.close();
  });
  cleanups.push(() => replicator.stop());
  return { dir, dbPath, app, store, replicator, next: () => id, commit };
}

/** {@link setup}, 5 rows committed, the replicator started and running. */
async function running(options: Partial<ReplicatorOptions> = {}): Promise<Setup> {
  const s = await setup(options);
  await s.commit(5);
  await s.replicator.start();
  await until('running', () => s.replicator.state === 'running');
  return s;
}

async function until(what: string, predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Restore KEY (base + chain) into a fresh file and return its ids. */
async function restoredIds(s: Setup): Promise<number[]> {
  const target = join(tempDir('restored-'), 'r.sqlite3');
  const restored = await restoreExact(s.store, { key: KEY }, target, { check: 'quick', log: silentLogger(), keepPrevious: false });
  expect(restored).not.toBeNull();
  expect(sqlite3(target, 'PRAGMA integrity_check')).toBe('ok');
  const out = sqlite3(target, 'SELECT id FROM t ORDER BY id');
  return out === '' ? [] : out.split('\n').map(Number);
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

/** Wait until every commit so far is in a shipped segment. */
async function shippedAll(s: Setup): Promise<void> {
  await until('everything shipped', () => {
    const st = s.replicator.status();
    return st.state === 'running' && st.lagMs === 0 && st.shipping.queued === 0 && st.shippedSeq === st.sealedSeq;
  });
  // A few more ticks (50 ms each): the commits made just before may not have been read yet.
  await sleep(400);
  await until('everything shipped', () => {
    const st = s.replicator.status();
    return st.lagMs === 0 && st.shipping.queued === 0 && st.shippedSeq === st.sealedSeq;
  });
}

describe('Replicator (capture) on a directory store', () => {
  it('ships commits as segments after a base; a restore holds every committed row', async () => {
    const s = await setup();
    await s.commit(10);
    await s.replicator.start();
    expect(s.replicator.active).toBe(true);
    await until('running', () => s.replicator.state === 'running');
    for (let i = 0; i < 50; i++) {
      await s.commit(3);
      if (i % 10 === 0) await sleep(60);
    }
    await shippedAll(s);
    const st = s.replicator.status();
    expect(st.generations).toBe(1);
    expect(st.shippedSeq).toBeGreaterThanOrEqual(1);
    expect(await restoredIds(s)).toEqual(range(s.next()));
  });

  it('costs nothing while idle: no new object', async () => {
    const s = await running();
    await s.commit(5);
    await shippedAll(s);
    const before = (await s.store.list(chainsPrefix(KEY))).length;
    const versions = (await s.store.listVersions(KEY)).length;
    await sleep(800);
    expect((await s.store.list(chainsPrefix(KEY))).length).toBe(before);
    expect((await s.store.listVersions(KEY)).length).toBe(versions);
  });

  it('keeps the chain across the app’s TRUNCATE and RESTART checkpoints', async () => {
    const s = await running();
    await s.commit(20);
    await shippedAll(s);
    // The pins hold back a restart until everything read is backfilled; the app retries as apps do.
    for (const mode of ['TRUNCATE', 'RESTART', 'TRUNCATE']) {
      for (let attempt = 0; attempt < 50; attempt++) {
        const row = s.app.prepare(`PRAGMA wal_checkpoint(${mode})`).get() as { busy: number };
        if (row.busy === 0) break;
        await sleep(20);
      }
      await s.commit(7);
      await shippedAll(s);
    }
    expect(s.replicator.status().generations).toBe(1);
    expect(await restoredIds(s)).toEqual(range(s.next()));
  });

  it('bounds the WAL: after 1000 frames the seal checkpoints and the app restarts the WAL, same generation', async () => {
    const s = await setup();
    await s.commit(1);
    await s.replicator.start();
    await until('running', () => s.replicator.state === 'running');
    const walPath = `${s.dbPath}-wal`;
    const salt = (): number => readFileSync(walPath).readUInt32BE(16);
    const first = salt();
    for (let i = 0; i < 1300; i++) {
      await s.commit(1);
      if (i % 100 === 0) await sleep(60);
    }
    await shippedAll(s);
    for (let i = 0; i < 500 && salt() === first; i++) {
      await s.commit(1);
      await sleep(10);
    }
    expect(salt()).not.toBe(first);
    await shippedAll(s);
    expect(s.replicator.status().generations).toBe(1);
    // Bounded: far fewer frames than the commits made (each commit writes at least one frame).
    expect(readFileSync(walPath).length / 4120).toBeLessThan(1300);
    expect(await restoredIds(s)).toEqual(range(s.next()));
  });

  it('starts a new generation, with the reason, when the WAL changes unseen; restores stay correct', async () => {
    const s = await running();
    await s.commit(5);
    await shippedAll(s);
    const firstGen = s.replicator.status().generation;
    // Rewrite the WAL header as if it had been restarted twice (salt-1 + 2), with a valid checksum.
    const walPath = `${s.dbPath}-wal`;
    const wal = Buffer.from(readFileSync(walPath));
    wal.writeUInt32BE((wal.readUInt32BE(16) + 2) >>> 0, 16);
    const [c0, c1] = walChecksum(false, wal.subarray(0, 24));
    wal.writeUInt32BE(c0, 24);
    wal.writeUInt32BE(c1, 28);
    writeFileSync(walPath, wal.subarray(0, WAL_HEADER_BYTES), { flag: 'r+' });
    await until('a new generation', () => s.replicator.status().generations === 2 && s.replicator.state === 'running');
    const st = s.replicator.status();
    expect(st.generation).not.toBe(firstGen);
    expect(st.lastBreak?.reason).toMatch(/salt-1/);
    // The new base holds everything so far (the app's view).
    expect(await restoredIds(s)).toEqual(range(s.next()));
  });

  it('over the spool cap while the store refuses writes: drops the spool, then a new generation once the store is back', async () => {
    let down = false;
    const s = await setup(
      { spoolMaxBytes: 20_000 },
      (store) =>
        new Proxy(store, {
          get(target, prop, receiver) {
            const value = Reflect.get(target, prop, receiver) as unknown;
            if ((prop === 'put' || prop === 'putFromPrevious') && typeof value === 'function') {
              return (...args: unknown[]) => {
                if (down) throw new StorageError('store down (test)', { retryable: true, code: 'ECONNREFUSED' });
                return (value as (...a: unknown[]) => Promise<ObjectInfo>).apply(target, args);
              };
            }
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        }),
    );
    await s.commit(5);
    await s.replicator.start();
    await until('running', () => s.replicator.state === 'running');
    const before = s.replicator.status().generation;
    down = true;
    for (let i = 0; i < 40; i++) {
      await s.commit(20);
      await sleep(30);
    }
    await until('the spool cap', () => s.replicator.status().lastBreak?.reason.includes('spool') === true);
    // Every dropped generation's segments are gone. The next generation starts on the next tick, store down or
    // not, and may already have sealed its own first segments (status and listing read in one turn, no tick between).
    const current = s.replicator.status().generation;
    const spooled = readdirSync(join(`${s.dbPath}.db-sync`, 'spool')).filter((n) => n.endsWith('.seg'));
    expect(current).not.toBe(before);
    expect(spooled.filter((n) => current === undefined || !n.startsWith(`${current}-`))).toEqual([]);
    down = false;
    await until('a new generation', () => s.replicator.status().generations >= 2 && s.replicator.state === 'running', 40_000);
    await s.commit(3);
    await shippedAll(s);
    // KEY's newest version is the current generation's base: the bases of the generations dropped while the
    // store was down were cancelled, not uploaded late over it (they did, about one run in three: the
    // restore then held the rows of a dropped chain's base, 485 of 808).
    expect((await s.store.head(KEY))?.metadata['chain-gen']).toBe(s.replicator.status().generation);
    expect(await restoredIds(s)).toEqual(range(s.next()));
  }, 60_000);

  it('finish(): ships the pending commits and uploads a final base at the exact position', async () => {
    const s = await running({ segmentIntervalMs: 60_000 });
    await s.commit(9);
    await sleep(150);
    const outcome = await s.replicator.finish(AbortSignal.timeout(20_000));
    expect(outcome?.uploaded).toBeDefined();
    const st = s.replicator.status();
    expect(st.state).toBe('stopped');
    expect(st.bases).toBe(2);
    const head = await s.store.head(KEY);
    expect(head?.metadata['chain-seq']).toBe(String(st.lastBase?.seq));
    expect(await restoredIds(s)).toEqual(range(s.next()));
  });
});

describe('Replicator with an app in another process', () => {
  it('finish() while the app keeps writing: the final base sits exactly at the chain position', async () => {
    const dir = tempDir('capture-proc-');
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 100);
    const store = new DirStore(join(dir, 'store'));
    const replicator = new Replicator({
      store,
      key: KEY,
      dbPath,
      check: 'quick',
      origin: { host: 'test', toolVersion: '0' },
      log: silentLogger(),
      putSegment: (key, path, o) => store.put(key, path, o),
    });
    cleanups.push(() => replicator.stop());
    await replicator.start();
    await until('running', () => replicator.state === 'running');
    expect(sqlite3(dbPath, 'SELECT count(*) FROM rows')).toBe('100');
    const writer = startWriter(dbPath, 2);
    cleanups.push(async () => void (await writer.stop()));
    await until('200 commits', () => writer.committed() >= 200);
    const outcome = await replicator.finish(AbortSignal.timeout(20_000));
    expect(outcome?.uploaded).toBeDefined();
    expect(replicator.status().lastBreak).toBeUndefined();
  });
});

describe('Replicator when the store already holds the database (restored or verified at start)', () => {
  it('uploads no base for a run without a commit; finish() leaves the decision to the snapshot path', async () => {
    const s = await running({ storeHoldsDatabase: () => true });
    await sleep(300);
    expect(await s.store.listVersions(KEY)).toEqual([]);
    expect(await s.replicator.finish(AbortSignal.timeout(10_000))).toBeUndefined();
    expect(await s.store.listVersions(KEY)).toEqual([]);
    expect(s.replicator.status().bases).toBe(0);
  });

  it('uploads the base taken at start with the first commit, then ships the chain', async () => {
    const s = await running({ storeHoldsDatabase: () => true });
    await sleep(200);
    expect(await s.store.listVersions(KEY)).toEqual([]);
    await s.commit(3);
    // The change starts the base's copy; the segment ships once the base is hashed.
    await until('the base', () => s.replicator.status().bases === 1);
    await until('the first segment', () => s.replicator.status().shippedSeq >= 1);
    await shippedAll(s);
    const head = await s.store.head(KEY);
    expect(head?.metadata['chain-seq']).toBe('0');
    expect(await restoredIds(s)).toEqual(range(s.next()));
    await s.commit(2);
    const outcome = await s.replicator.finish(AbortSignal.timeout(10_000));
    expect(outcome?.uploaded).toBeDefined();
    expect(await restoredIds(s)).toEqual(range(s.next()));
  });
});
