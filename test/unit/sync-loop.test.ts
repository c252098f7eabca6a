/**
 * The sync loop and the verified restore, driven directly (no timers) against a real DirStore in a temp dir.
 */
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it, vi } from 'vitest';
import { backupKey } from '../../src/core/backup-key.js';
import { sha256File } from '../../src/core/hash.js';
import { META_SHA256 } from '../../src/core/metadata.js';
import { downloadVerified, restoreNewestGood } from '../../src/core/restore.js';
import { SyncLoop } from '../../src/core/sync-loop.js';
import { DbSyncError, StorageError } from '../../src/errors.js';
import { TEMP_MARKER } from '../../src/fs-atomic.js';
import { silentLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import type {
  DownloadOptions,
  Downloaded,
  GetResult,
  ObjectInfo,
  PutFromPreviousOptions,
  PutFromPreviousResult,
  PutOptions,
  ReadOptions,
  ReplicaStore,
} from '../../src/replica/store.js';
import { addRows, createDatabase, integrity, rowCount, tempDir } from '../helpers/db.js';

const KEY = 'app.sqlite3';
const log = silentLogger();
const origin = { host: 'test-host', toolVersion: '0.0.0-test' };

/** A store that counts writes and can be told to fail them. */
class CountingStore implements ReplicaStore {
  puts = 0;
  copies = 0;
  failPut: Error | undefined;
  failCopy: Error | undefined;
  /** The next put hangs until its signal fires (a large upload in flight), then rejects. */
  holdNextPut = false;

  constructor(readonly inner: ReplicaStore) {}

  get location(): string {
    return this.inner.location;
  }
  head(key: string, options?: ReadOptions): Promise<ObjectInfo | null> {
    return this.inner.head(key, options);
  }
  get(key: string, options?: ReadOptions): Promise<GetResult | null> {
    return this.inner.get(key, options);
  }
  put(key: string, sourcePath: string, options: PutOptions): Promise<ObjectInfo> {
    return this.write(options, () => this.inner.put(key, sourcePath, options));
  }
  putFromPrevious(key: string, sourcePath: string, options: PutFromPreviousOptions): Promise<PutFromPreviousResult> {
    return this.write(options, () => this.inner.putFromPrevious(key, sourcePath, options));
  }
  /** Counts an upload (either kind: the loop uses both), and holds or fails it as told. */
  private write<T>(options: { signal?: AbortSignal | undefined }, send: () => Promise<T>): Promise<T> {
    this.puts += 1;
    if (this.holdNextPut) {
      this.holdNextPut = false;
      return new Promise((_, reject) =>
        options.signal?.addEventListener('abort', () => reject(new Error('upload cancelled')), { once: true }),
      );
    }
    return this.failPut ? Promise.reject(this.failPut) : send();
  }
  download(key: string, path: string, options?: DownloadOptions): Promise<Downloaded | null> {
    return this.inner.download(key, path, options);
  }
  copy(
    sourceKey: string,
    sourceVersionId: string | undefined,
    destinationKey: string,
    options?: { signal?: AbortSignal },
  ): Promise<ObjectInfo> {
    this.copies += 1;
    if (this.failCopy) return Promise.reject(this.failCopy);
    return this.inner.copy(sourceKey, sourceVersionId, destinationKey, options);
  }
  list(prefix: string, options?: { signal?: AbortSignal }): Promise<ObjectInfo[]> {
    return this.inner.list(prefix, options);
  }
  listVersions(key: string, options?: { signal?: AbortSignal }): Promise<ObjectInfo[]> {
    return this.inner.listVersions(key, options);
  }
  delete(key: string, options?: { signal?: AbortSignal }): Promise<void> {
    return this.inner.delete(key, options);
  }
  close(): void {
    this.inner.close();
  }
}

async function readObject(store: ReplicaStore, key: string, versionId?: string): Promise<Buffer> {
  const got = await store.get(key, { versionId });
  if (!got) throw new Error(`${key}@${versionId ?? 'current'} is absent`);
  const chunks: Buffer[] = [];
  for await (const chunk of got.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Rows in a database held in memory (written to a scratch file and read by the sqlite3 CLI). */
function rowsOf(bytes: Buffer, scratchDir: string): number {
  const path = join(scratchDir, `scratch-${randomBytes(4).toString('hex')}.sqlite3`);
  writeFileSync(path, bytes);
  return rowCount(path);
}

function setup(rows = 100): { dir: string; dbPath: string; store: CountingStore; loop: SyncLoop } {
  const dir = tempDir();
  const dbPath = join(dir, KEY);
  createDatabase(dbPath, rows);
  const store = new CountingStore(new DirStore(join(dir, 'replica')));
  const loop = new SyncLoop({ store, key: KEY, dbPath, check: 'quick', origin, log, intervalMs: 60_000 });
  return { dir, dbPath, store, loop };
}

describe('SyncLoop', () => {
  it('uploads on the first sync, skips an idle database, uploads again after a write', async () => {
    const { dir, dbPath, store, loop } = setup(100);
    try {
      expect(await loop.syncNow()).toBe('uploaded');
      expect(store.puts).toBe(1);
      const first = await store.head(KEY);
      expect(first?.metadata[META_SHA256]).toMatch(/^[0-9a-f]{64}$/);
      expect(rowsOf(await readObject(store, KEY), dir)).toBe(100);
      expect(loop.status()).toMatchObject({ uploads: 1, consecutiveFailures: 0, lastError: undefined, unsyncedSince: undefined });
      expect(loop.status().lastUpload?.versionId).toBe(first?.versionId);

      expect(await loop.syncNow()).toBe('unchanged');
      expect(await loop.syncNow()).toBe('unchanged');
      expect(store.puts).toBe(1);
      expect(loop.status().skippedUnchanged).toBe(2);

      addRows(dbPath, 7);
      expect(await loop.syncNow()).toBe('uploaded');
      expect(store.puts).toBe(2);
      expect(rowsOf(await readObject(store, KEY), dir)).toBe(107);
      const versions = await store.listVersions(KEY);
      expect(versions).toHaveLength(2);
      expect(versions[0]?.versionId).toBe(loop.status().lastUpload?.versionId);
      expect(loop.status().uploads).toBe(2);
    } finally {
      loop.close();
    }
  });

  it('shares the run in flight between concurrent syncNow calls', async () => {
    const { store, loop } = setup(10);
    try {
      const [a, b] = await Promise.all([loop.syncNow(), loop.syncNow()]);
      expect(a).toBe('uploaded');
      expect(b).toBe('uploaded');
      expect(store.puts).toBe(1);
    } finally {
      loop.close();
    }
  });

  it('reports no-database without touching the store', async () => {
    const dir = tempDir();
    const store = new CountingStore(new DirStore(join(dir, 'replica')));
    const loop = new SyncLoop({ store, key: KEY, dbPath: join(dir, KEY), check: 'quick', origin, log, intervalMs: 60_000 });
    expect(await loop.syncNow()).toBe('no-database');
    expect(store.puts).toBe(0);
    loop.close();
  });

  it('finalSync writes KEY.backup.* with the content of the latest object', async () => {
    const { dir, store, loop } = setup(30);
    expect(await loop.syncNow()).toBe('uploaded');
    const at = new Date('2025-06-01T12:34:56Z');
    const result = await loop.finalSync(new AbortController().signal, at);
    expect(result.uploaded).toBeUndefined();
    expect(result.backup?.key).toBe(backupKey(KEY, at));
    expect(result.backup?.key).toBe('app.sqlite3.backup.20250601_123456');
    expect(store.puts).toBe(1);
    expect(store.copies).toBe(1);
    const latest = await readObject(store, KEY);
    const backup = await readObject(store, backupKey(KEY, at));
    expect(backup.equals(latest)).toBe(true);
    expect((await store.head(backupKey(KEY, at)))?.metadata[META_SHA256]).toBe((await store.head(KEY))?.metadata[META_SHA256]);
    expect(rowsOf(backup, dir)).toBe(30);
  });

  it('finalSync uploads unsynced changes before writing the backup', async () => {
    const { dir, dbPath, store, loop } = setup(30);
    expect(await loop.syncNow()).toBe('uploaded');
    addRows(dbPath, 3);
    const at = new Date('2025-06-01T00:00:00Z');
    const result = await loop.finalSync(new AbortController().signal, at);
    expect(result.uploaded?.versionId).toBeDefined();
    expect(store.puts).toBe(2);
    const backup = await readObject(store, backupKey(KEY, at));
    expect(backup.equals(await readObject(store, KEY))).toBe(true);
    expect(rowsOf(backup, dir)).toBe(33);
  });

  it('finalSync cancels a periodic upload in flight instead of waiting for it, and uploads its own snapshot', async () => {
    const { dir, dbPath, store, loop } = setup(10);
    store.holdNextPut = true;
    const periodic = loop.syncNow().catch((e: unknown) => e);
    await vi.waitFor(() => expect(store.puts).toBe(1), { timeout: 20_000 });
    addRows(dbPath, 5);
    // Before: the final sync waited for the held upload until its own deadline fired, and then failed.
    const result = await loop.finalSync(AbortSignal.timeout(5_000));
    expect(result.uploaded?.versionId).toBeDefined();
    expect(rowsOf(await readObject(store, KEY), dir)).toBe(15);
    expect(await periodic).toBeInstanceOf(Error);
    // A superseded run is not a failure of the loop.
    expect(loop.status()).toMatchObject({ consecutiveFailures: 0, lastError: undefined });
  });

  it('finalSync: a failed backup copy after a good upload is returned as BackupNotWritten, not thrown as a failed sync', async () => {
    const { dir, dbPath, store, loop } = setup(10);
    addRows(dbPath, 2);
    store.failCopy = new StorageError('copy: InvalidRequest: The specified copy source is larger than the maximum allowable size', {
      retryable: false,
      code: 'InvalidRequest',
    });
    const result = await loop.finalSync(new AbortController().signal);
    expect(result.uploaded?.versionId).toBeDefined();
    expect(rowsOf(await readObject(store, KEY), dir)).toBe(12);
    expect(result.backup).toBeUndefined();
    expect(result.backupError).toBeInstanceOf(DbSyncError);
    expect(result.backupError?.kind).toBe('BackupNotWritten');
    expect(result.backupError?.exitCode).toBe(9);
    expect(result.backupError?.message).toMatch(/^final upload done; backup key NOT written: copy: InvalidRequest/);
  });

  it('finalSync writes no backup when the newest backup already holds the same content, and one again after a change', async () => {
    const { dbPath, store, loop } = setup(10);
    expect(await loop.syncNow()).toBe('uploaded');
    const first = new Date('2025-06-01T00:00:00Z');
    expect((await loop.finalSync(new AbortController().signal, first)).backup?.key).toBe(backupKey(KEY, first));
    // A restart with nothing changed (a crash loop): same content, no second full copy.
    const restarted = new SyncLoop({ store, key: KEY, dbPath, check: 'quick', origin, log, intervalMs: 60_000 });
    const state = loop.status().lastUpload;
    await restarted.setSynced({ sha256: state?.sha256 ?? '', versionId: state?.versionId, token: await restarted.probe() });
    const second = await restarted.finalSync(new AbortController().signal, new Date('2025-06-01T00:05:00Z'));
    expect(second.backup).toBeUndefined();
    expect(second.backupExisting).toBe(backupKey(KEY, first));
    expect(store.copies).toBe(1);
    // After a change the next stop writes a backup again.
    addRows(dbPath, 1);
    const third = new SyncLoop({ store, key: KEY, dbPath, check: 'quick', origin, log, intervalMs: 60_000 });
    third.setBaseline({ sha256: state?.sha256, versionId: state?.versionId });
    const at = new Date('2025-06-01T00:10:00Z');
    expect((await third.finalSync(new AbortController().signal, at)).backup?.key).toBe(backupKey(KEY, at));
    expect(store.copies).toBe(2);
  });

  it('counts data at risk from the last moment the database was known in sync, not from the tick that saw the change', async () => {
    const { dbPath, store, loop } = setup(10);
    try {
      expect(await loop.syncNow()).toBe('uploaded');
      expect(await loop.syncNow()).toBe('unchanged');
      const beforeChange = Date.now();
      await new Promise((resolve) => setTimeout(resolve, 20)); // distinct millisecond stamps
      addRows(dbPath, 1);
      store.failPut = new StorageError('upload: SlowDown', { retryable: false, code: 'SlowDown' });
      await expect(loop.syncNow()).rejects.toThrow();
      const since = Date.parse(loop.status().unsyncedSince ?? '');
      // The write came after `beforeChange`; the risk is counted from no later than that.
      expect(since).toBeLessThanOrEqual(beforeChange);
    } finally {
      loop.close();
    }
  });

  it('records a failed sync, and resets the count when it heals', async () => {
    const { dbPath, store, loop } = setup(10);
    try {
      expect(await loop.syncNow()).toBe('uploaded');
      addRows(dbPath, 1);
      store.failPut = new StorageError('upload s3://b/app.sqlite3: AccessDenied', {
        retryable: false,
        code: 'AccessDenied',
        hint: 'grant s3:PutObject',
      });
      await expect(loop.syncNow()).rejects.toThrow(/AccessDenied/);
      // Not retryable: exactly one attempt.
      expect(store.puts).toBe(2);
      const failed = loop.status();
      expect(failed.consecutiveFailures).toBe(1);
      expect(failed.lastError?.code).toBe('AccessDenied');
      expect(failed.lastError?.message).toContain('AccessDenied');
      expect(failed.unsyncedSince).toBeDefined();
      expect(failed.uploads).toBe(1);

      await expect(loop.syncNow()).rejects.toThrow(/AccessDenied/);
      expect(loop.status().consecutiveFailures).toBe(2);

      store.failPut = undefined;
      expect(await loop.syncNow()).toBe('uploaded');
      const healed = loop.status();
      expect(healed.consecutiveFailures).toBe(0);
      expect(healed.uploads).toBe(2);
      expect(healed.unsyncedSince).toBeUndefined();
      expect(rowCount(dbPath)).toBe(11);
    } finally {
      loop.close();
    }
  });
});

describe('restore', () => {
  /** Put a local file as a new version of KEY with the given sha256 metadata (default: its real sha256). */
  async function putVersion(store: ReplicaStore, path: string, sha256?: string): Promise<ObjectInfo> {
    return store.put(KEY, path, { metadata: { [META_SHA256]: sha256 ?? (await sha256File(path)) } });
  }

  function tempFiles(dir: string): string[] {
    return readdirSync(dir).filter((n) => n.includes(TEMP_MARKER));
  }

  /** A store whose versions are, oldest first: good (12 rows), garbage, truncated, wrong sha256. */
  async function corruptedStore(): Promise<{ dir: string; store: DirStore; good: ObjectInfo }> {
    const dir = tempDir();
    const store = new DirStore(join(dir, 'replica'));
    const goodPath = join(dir, 'good.sqlite3');
    createDatabase(goodPath, 12, { wal: false });
    const good = await putVersion(store, goodPath);

    const garbage = join(dir, 'garbage.bin');
    writeFileSync(garbage, randomBytes(64 * 1024));
    await putVersion(store, garbage);

    const big = join(dir, 'big.sqlite3');
    createDatabase(big, 2000, { wal: false, bodyBytes: 500 });
    const truncated = join(dir, 'truncated.sqlite3');
    const bigBytes = readFileSync(big);
    writeFileSync(truncated, bigBytes.subarray(0, Math.floor(bigBytes.length / 2)));
    await putVersion(store, truncated);

    const other = join(dir, 'other.sqlite3');
    createDatabase(other, 99, { wal: false });
    await putVersion(store, other, 'f'.repeat(64));
    return { dir, store, good };
  }

  it('falls back past corrupt versions to the newest good one, listing why each was skipped', async () => {
    const { dir, store, good } = await corruptedStore();
    const target = join(dir, 'restored.sqlite3');
    const restored = await restoreNewestGood(store, KEY, target, { check: 'full', log, keepPrevious: false });
    expect(restored).not.toBeNull();
    expect(restored?.info.versionId).toBe(good.versionId);
    expect(restored?.checksumVerified).toBe(true);
    expect(restored?.skipped).toHaveLength(3);
    const [wrongSha, truncated, garbage] = restored?.skipped ?? [];
    expect(wrongSha?.reason).toMatch(/sha256 .* does not match the recorded f{64}/);
    expect(truncated?.reason).toMatch(/not a healthy SQLite database/);
    expect(garbage?.reason).toMatch(/not a healthy SQLite database/);
    expect(garbage?.versionId).toBeDefined();
    expect(integrity(target)).toBe('ok');
    expect(rowCount(target)).toBe(12);
    expect(tempFiles(dir)).toEqual([]);
  });

  it('refuses with Corrupt when every copy is bad, and leaves the target untouched', async () => {
    const dir = tempDir();
    const store = new DirStore(join(dir, 'replica'));
    const garbage = join(dir, 'garbage.bin');
    writeFileSync(garbage, randomBytes(32 * 1024));
    await putVersion(store, garbage);
    const valid = join(dir, 'valid.sqlite3');
    createDatabase(valid, 5, { wal: false });
    await putVersion(store, valid, '0'.repeat(64));

    const target = join(dir, 'local.sqlite3');
    createDatabase(target, 3, { wal: false });
    const before = readFileSync(target);

    const error = await restoreNewestGood(store, KEY, target, { check: 'quick', log, keepPrevious: false }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DbSyncError);
    expect((error as DbSyncError).kind).toBe('Corrupt');
    expect((error as DbSyncError).exitCode).toBe(6);
    expect((error as DbSyncError).message).toContain('2 tried');
    expect(readFileSync(target).equals(before)).toBe(true);
    expect(rowCount(target)).toBe(3);
    expect(tempFiles(dir)).toEqual([]);
  });

  it('returns null when there is no copy at all', async () => {
    const dir = tempDir();
    const store = new DirStore(join(dir, 'replica'));
    const target = join(dir, 'local.sqlite3');
    expect(await restoreNewestGood(store, KEY, target, { check: 'quick', log, keepPrevious: false })).toBeNull();
    expect(existsSync(target)).toBe(false);
  });

  it('removes a stale -wal/-shm beside the target so they cannot replay into the restored file', async () => {
    const dir = tempDir();
    const store = new DirStore(join(dir, 'replica'));
    const source = join(dir, 'source.sqlite3');
    createDatabase(source, 40);
    await putVersion(store, source);

    // The old local database, with committed frames still only in its -wal (and its -shm).
    const target = join(dir, 'local.sqlite3');
    createDatabase(target, 1);
    const writer = new Database(target);
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec("CREATE TABLE stale (x); INSERT INTO stale VALUES ('from the old wal'); DELETE FROM rows;");
    copyFileSync(`${target}-wal`, join(dir, 'saved-wal'));
    copyFileSync(`${target}-shm`, join(dir, 'saved-shm'));
    writer.close();
    copyFileSync(join(dir, 'saved-wal'), `${target}-wal`);
    copyFileSync(join(dir, 'saved-shm'), `${target}-shm`);

    const restored = await restoreNewestGood(store, KEY, target, { check: 'quick', log, keepPrevious: false });
    expect(restored?.skipped).toEqual([]);
    expect(existsSync(`${target}-wal`)).toBe(false);
    expect(existsSync(`${target}-shm`)).toBe(false);
    expect(integrity(target)).toBe('ok');
    expect(rowCount(target)).toBe(40);
    expect(readFileSync(target).equals(readFileSync(source))).toBe(true);
  });

  it('keeps the replaced database at TARGET.backup when asked', async () => {
    const dir = tempDir();
    const store = new DirStore(join(dir, 'replica'));
    const source = join(dir, 'source.sqlite3');
    createDatabase(source, 8, { wal: false });
    await putVersion(store, source);
    const target = join(dir, 'local.sqlite3');
    createDatabase(target, 2);
    const restored = await restoreNewestGood(store, KEY, target, { check: 'quick', log, keepPrevious: true });
    expect(restored?.previousKeptAt).toBe(`${target}.backup`);
    expect(rowCount(`${target}.backup`)).toBe(2);
    expect(rowCount(target)).toBe(8);
  });

  it('downloadVerified detects a wrong sha256 and removes its temp file', async () => {
    const dir = tempDir();
    const store = new DirStore(join(dir, 'replica'));
    const source = join(dir, 'source.sqlite3');
    createDatabase(source, 5, { wal: false });
    const realSha = await sha256File(source);
    await putVersion(store, source, 'a'.repeat(64));
    const target = join(dir, 'target.sqlite3');

    const error = await downloadVerified(store, { key: KEY }, target, { check: 'quick', log }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DbSyncError);
    expect((error as DbSyncError).kind).toBe('Corrupt');
    expect((error as DbSyncError).message).toContain(realSha);
    expect((error as DbSyncError).message).toContain('a'.repeat(64));
    expect(tempFiles(dir)).toEqual([]);
    expect(existsSync(target)).toBe(false);

    // The same bytes with the right sha256 verify.
    await putVersion(store, source);
    const copy = await downloadVerified(store, { key: KEY }, target, { check: 'quick', log });
    expect(copy?.sha256).toBe(realSha);
    expect(copy?.checksumVerified).toBe(true);
    expect(copy?.path).toContain(TEMP_MARKER);
    expect(readFileSync(copy?.path ?? '').equals(readFileSync(source))).toBe(true);
    expect(existsSync(target)).toBe(false);

    expect(await downloadVerified(store, { key: 'absent.sqlite3' }, target, { check: 'quick', log })).toBeNull();
  });
});
