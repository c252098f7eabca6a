/**
 * The restore side's local rules, on the real driver and the directory store: which SQLite failures mean
 * "this copy is bad" and which mean "this machine has a problem", conflict copies under retention, and the
 * live database left unwritten by a snapshot.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { backupKey } from '../../src/core/backup-key.js';
import { downloadVerified } from '../../src/core/restore.js';
import { pruneBackups } from '../../src/core/retention.js';
import { discardSnapshot, takeSnapshot } from '../../src/core/snapshot.js';
import { runSqliteTask } from '../../src/core/sqlite-worker.js';
import { DbSyncError, StorageError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import { createDatabase, rowCount, tempDir } from '../helpers/db.js';

describe('the check of a copy', () => {
  it('answers "not ok" for content SQLite rejects, and throws for a local failure instead', async () => {
    const dir = tempDir();
    const garbage = join(dir, 'garbage.sqlite3');
    writeFileSync(garbage, Buffer.alloc(8192, 7));
    const bad = await runSqliteTask({ op: 'check', path: garbage, check: 'quick' });
    expect(bad.ok).toBe(false);
    expect(bad.problems.join()).toMatch(/SQLITE_NOTADB/);
    // A file that cannot be opened (here a directory) is this machine's problem, not the copy's: thrown (exit 7).
    await expect(runSqliteTask({ op: 'check', path: dir, check: 'quick' })).rejects.toMatchObject({
      kind: 'LocalDatabase',
      message: expect.stringMatching(/SQLITE_IOERR|SQLITE_CANTOPEN/) as unknown,
    });
  });
});

/** `KEY.<kind>.YYYYMMDD_HHMMSS`. */
const stampedKey = (key: string, kind: 'backup' | 'conflict', at: Date): string => backupKey(key, at).replace('.backup.', `.${kind}.`);

describe('retention of conflict copies', () => {
  it('prunes KEY.conflict.* by the same keep-N/keep-days rule as backups, counted among themselves', async () => {
    const store = new DirStore(tempDir());
    const source = join(tempDir(), 'x.sqlite3');
    createDatabase(source, 1);
    const day = 86_400_000;
    const now = new Date('2026-12-01T00:00:00Z');
    const at = (daysAgo: number): Date => new Date(now.getTime() - daysAgo * day);
    for (const d of [1, 20, 30]) await store.put(stampedKey('db.sqlite3', 'conflict', at(d)), source, { metadata: {} });
    for (const d of [2, 40]) await store.put(stampedKey('db.sqlite3', 'backup', at(d)), source, { metadata: {} });
    const deleted = await pruneBackups(store, 'db.sqlite3', { keepCount: 1, keepDays: 7 }, { log: silentLogger(), now });
    expect(deleted.sort()).toEqual(
      [stampedKey('db.sqlite3', 'backup', at(40)), ...[20, 30].map((d) => stampedKey('db.sqlite3', 'conflict', at(d)))].sort(),
    );
    expect((await store.list('db.sqlite3.conflict.')).map((o) => o.key)).toEqual([stampedKey('db.sqlite3', 'conflict', at(1))]);
  });
});

describe('a snapshot of a WAL database', () => {
  it('leaves the live database and its -wal as they were: the read-only source cannot checkpoint on close', async () => {
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    // A WAL database whose WAL holds every row, as a killed app leaves it (no connection open now).
    const writer = new Database(db);
    writer.pragma('journal_mode = WAL');
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec('CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
    const insert = writer.prepare('INSERT INTO rows (body) VALUES (?)');
    for (let i = 0; i < 300; i += 1) insert.run('x'.repeat(200));
    copyFileSync(db, `${db}.main`);
    copyFileSync(`${db}-wal`, `${db}.wal`);
    writer.close(); // checkpoints; put the un-checkpointed state back
    copyFileSync(`${db}.main`, db);
    copyFileSync(`${db}.wal`, `${db}-wal`);
    rmSync(`${db}-shm`, { force: true });
    const before = { main: readFileSync(db), mtimeMs: statSync(db).mtimeMs, wal: readFileSync(`${db}-wal`) };

    const snapshot = await takeSnapshot(db, { check: 'quick' });
    try {
      expect(rowCount(snapshot.path)).toBe(300);
    } finally {
      await discardSnapshot(snapshot);
    }
    expect(readFileSync(db).equals(before.main)).toBe(true);
    expect(statSync(db).mtimeMs).toBe(before.mtimeMs);
    expect(existsSync(`${db}-wal`) && readFileSync(`${db}-wal`).equals(before.wal)).toBe(true);
  });
});

describe('a download onto a full volume', () => {
  it('is a local failure (exit 7) naming the directory, not a retried "cannot reach the store", and leaves nothing', async (ctx) => {
    if (process.getuid?.() !== 0) ctx.skip('mounting a tmpfs needs root');
    const replica = tempDir();
    const source = join(tempDir(), 'db.sqlite3');
    createDatabase(source, 2_000, { bodyBytes: 512 });
    const store = new DirStore(replica);
    await store.put('db.sqlite3', source, { metadata: {} });
    const volume = tempDir('db-sync-full-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', volume]);
    try {
      const target = join(volume, 'db.sqlite3');
      const failure = await downloadVerified(store, { key: 'db.sqlite3' }, target, { check: 'quick', log: silentLogger() }).catch(
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(DbSyncError);
      expect(failure).not.toBeInstanceOf(StorageError);
      expect((failure as DbSyncError).kind).toBe('LocalDatabase');
      expect((failure as DbSyncError).message).toContain(volume);
      expect((failure as DbSyncError).message).toMatch(/ENOSPC/);
      expect(readdirSync(volume)).toEqual([]);
    } finally {
      execFileSync('umount', [volume]);
    }
  });
});
