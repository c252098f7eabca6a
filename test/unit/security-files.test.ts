/**
 * Modes of the files db-sync creates. The rule (README, "Security"): everything db-sync creates is 0600
 * (snapshot temp files, downloads, the sync state file, `.backup` copies, a database restored where there
 * was none); a restore over an existing database keeps that file's mode and owner, so the app that owns
 * it can still open it. Run with a permissive umask (022), where SQLite's and Node's defaults would give 0644.
 */
import { chmodSync, chownSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preserveDatabase, restoreNewestGood } from '../../src/core/restore.js';
import { discardSnapshot, takeSnapshot } from '../../src/core/snapshot.js';
import { statePath, writeSyncState } from '../../src/core/sync-state.js';
import { snapshotAndUpload } from '../../src/core/upload.js';
import { silentLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import { createDatabase, rowCount, tempDir } from '../helpers/db.js';

const modeOf = (path: string): number => statSync(path).mode & 0o777;
const log = silentLogger();
const origin = { host: 'test', toolVersion: '0.0.0' };

let previousUmask: number;
beforeAll(() => {
  previousUmask = process.umask(0o022);
});
afterAll(() => {
  process.umask(previousUmask);
});

/** A directory replica holding one uploaded snapshot of a 25-row database. */
async function replicaWithSnapshot(): Promise<{ dir: string; store: DirStore }> {
  const dir = tempDir();
  const source = join(dir, 'source.sqlite3');
  createDatabase(source, 25);
  const store = new DirStore(join(dir, 'replica'));
  await snapshotAndUpload({ store, key: 'db.sqlite3', dbPath: source, check: 'quick', origin, log }, {});
  return { dir, store };
}

describe('file modes', () => {
  it('takes snapshots into owner-only temp files, and the directory replica keeps them so', async () => {
    const dir = tempDir();
    const db = join(dir, 'app.sqlite3');
    createDatabase(db, 10);
    chmodSync(db, 0o644);
    const snapshot = await takeSnapshot(db, { check: 'quick' });
    try {
      expect(modeOf(snapshot.path)).toBe(0o600);
    } finally {
      await discardSnapshot(snapshot);
    }

    const { dir: replicaParent } = await replicaWithSnapshot();
    const replica = join(replicaParent, 'replica');
    expect(modeOf(join(replica, 'db.sqlite3'))).toBe(0o600);
  });

  it('writes the sync state file 0600', async () => {
    const dir = tempDir();
    const db = join(dir, 'app.sqlite3');
    await writeSyncState(db, { key: 'db.sqlite3', sha256: 'a'.repeat(64), versionId: 'v1', syncedAt: new Date().toISOString() });
    expect(modeOf(statePath(db))).toBe(0o600);
  });

  it('restores where there was no database as 0600', async () => {
    const { dir, store } = await replicaWithSnapshot();
    const target = join(dir, 'restored.sqlite3');
    await restoreNewestGood(store, 'db.sqlite3', target, { check: 'quick', log, keepPrevious: true });
    expect(rowCount(target)).toBe(25);
    expect(modeOf(target)).toBe(0o600);
  });

  it('keeps the mode of the database it replaces, and keeps the old one 0600 as .backup', async () => {
    const { dir, store } = await replicaWithSnapshot();
    const target = join(dir, 'live.sqlite3');
    createDatabase(target, 3);
    chmodSync(target, 0o640);
    const restored = await restoreNewestGood(store, 'db.sqlite3', target, { check: 'quick', log, keepPrevious: true });
    expect(rowCount(target)).toBe(25);
    expect(modeOf(target)).toBe(0o640);
    expect(restored?.previousKeptAt).toBe(`${target}.backup`);
    expect(rowCount(`${target}.backup`)).toBe(3);
    expect(modeOf(`${target}.backup`)).toBe(0o600);
    expect(readdirSync(dir).filter((n) => n.includes('db-sync-tmp'))).toEqual([]);
  });

  it('keeps a preserved copy 0600 even when the original is world-readable', async () => {
    const dir = tempDir();
    const db = join(dir, 'app.sqlite3');
    createDatabase(db, 4);
    chmodSync(db, 0o644);
    await preserveDatabase(db, join(dir, 'kept.sqlite3'), { check: 'none', log });
    expect(modeOf(join(dir, 'kept.sqlite3'))).toBe(0o600);
  });

  it.skipIf(process.getuid?.() !== 0)('as root, gives a new database the owner of its directory (the app user of the volume)', async () => {
    const { dir, store } = await replicaWithSnapshot();
    const volume = join(dir, 'volume');
    mkdirSync(volume);
    chownSync(volume, 4321, 4322);
    const target = join(volume, 'db.sqlite3');
    await restoreNewestGood(store, 'db.sqlite3', target, { check: 'quick', log, keepPrevious: true });
    const st = statSync(target);
    expect([st.uid, st.gid]).toEqual([4321, 4322]);
    expect(st.mode & 0o777).toBe(0o600);
  });

  it.skipIf(process.getuid?.() !== 0)('as root, keeps the owner of the database it replaces', async () => {
    const { dir, store } = await replicaWithSnapshot();
    const target = join(dir, 'owned.sqlite3');
    createDatabase(target, 2);
    chownSync(target, 1234, 1235);
    await restoreNewestGood(store, 'db.sqlite3', target, { check: 'quick', log, keepPrevious: true });
    const st = statSync(target);
    expect([st.uid, st.gid]).toEqual([1234, 1235]);
  });
});
