import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { discardSnapshot, takeSnapshot, type Snapshot } from '../../src/core/snapshot.js';
import { runSqliteTask } from '../../src/core/sqlite-worker.js';
import { AbortedError, DbSyncError } from '../../src/errors.js';
import { TEMP_MARKER } from '../../src/fs-atomic.js';
import { createDatabase, integrity, rowCount, sqlite3, tempDir } from '../helpers/db.js';
import { startBatchWriter } from '../helpers/writer.js';

const MB = 1024 * 1024;

/** Names in `dir` that are db-sync temp files. */
function tempFiles(dir: string): string[] {
  return readdirSync(dir).filter((name) => name.includes(TEMP_MARKER));
}

/** A fresh directory holding one database of about `sizeBytes`. */
function databaseOfSize(sizeBytes: number): { dir: string; path: string } {
  const dir = tempDir();
  const path = join(dir, 'app.sqlite3');
  createDatabase(path, Math.ceil(sizeBytes / 4096), { bodyBytes: 4000 });
  return { dir, path };
}

async function withSnapshot<T>(snapshot: Snapshot, fn: (s: Snapshot) => T | Promise<T>): Promise<T> {
  try {
    return await fn(snapshot);
  } finally {
    await discardSnapshot(snapshot);
  }
}

describe('takeSnapshot', () => {
  it('copies a WAL database, including commits still only in the -wal', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 100);
    const writer = new Database(path);
    try {
      writer.pragma('wal_autocheckpoint = 0');
      const insert = writer.prepare('INSERT INTO rows (body) VALUES (?)');
      writer.transaction(() => {
        for (let i = 0; i < 50; i += 1) insert.run(`wal-only ${i}`);
      })();
      expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);

      const snapshot = await takeSnapshot(path, { check: 'full' });
      await withSnapshot(snapshot, (s) => {
        expect(s.path).toContain(TEMP_MARKER);
        expect(s.journalMode).toBe('wal');
        expect(integrity(s.path)).toBe('ok');
        expect(rowCount(s.path)).toBe(150);
        expect(sqlite3(s.path, "SELECT count(*) FROM rows WHERE body LIKE 'wal-only %'")).toBe('50');
        const bytes = readFileSync(s.path);
        expect(s.sizeBytes).toBe(bytes.length);
        expect(s.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
        // Self-contained: no -wal beside the copy.
        expect(readdirSync(dir).filter((n) => n.startsWith(`.app.sqlite3${TEMP_MARKER}`) && n.endsWith('-wal'))).toEqual([]);
      });
      // Still uncheckpointed: the snapshot read the WAL, it did not fold it into the live file.
      expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);
    } finally {
      writer.close();
    }
    expect(tempFiles(dir)).toEqual([]);
  });

  it('copies a rollback-journal database', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 42, { wal: false });
    const snapshot = await takeSnapshot(path, { check: 'quick' });
    await withSnapshot(snapshot, (s) => {
      expect(s.journalMode).toBe('delete');
      expect(rowCount(s.path)).toBe(42);
      expect(integrity(s.path)).toBe('ok');
    });
  });

  it('is consistent under a concurrent writer in another process', async () => {
    const { dir, path } = databaseOfSize(50 * MB);
    const initialRows = rowCount(path);
    // Small transactions, as fast as it can, each reporting its committed count after COMMIT.
    const writer = await startBatchWriter(path, { readyAt: 200 });
    try {
      const committedBefore = writer.committed();
      const snapshots: Snapshot[] = [];
      try {
        for (let i = 0; i < 3; i += 1) snapshots.push(await takeSnapshot(path, { check: 'full' }));
        const committedAfter = writer.committed();
        expect(committedAfter).toBeGreaterThan(committedBefore);
        let previous = 0;
        for (const s of snapshots) {
          expect(integrity(s.path)).toBe('ok');
          const rows = rowCount(s.path);
          expect(rows).toBeGreaterThanOrEqual(initialRows + committedBefore);
          expect(rows).toBeGreaterThanOrEqual(previous);
          // Whole transactions only: the writer commits 5 rows at a time.
          expect((rows - initialRows) % 5).toBe(0);
          previous = rows;
        }
      } finally {
        await Promise.all(snapshots.map((s) => discardSnapshot(s)));
      }
    } finally {
      await writer.stop();
    }
    expect(rowCount(path)).toBeGreaterThanOrEqual(initialRows + writer.committed());
    expect(tempFiles(dir)).toEqual([]);
  });

  it('keeps the event loop turning while it copies a ~100 MB database', async () => {
    const { path } = databaseOfSize(100 * MB);
    let ticks = 0;
    const timer = setInterval(() => (ticks += 1), 5);
    try {
      const snapshot = await takeSnapshot(path, { check: 'quick' });
      await discardSnapshot(snapshot);
      expect(snapshot.sizeBytes).toBeGreaterThan(90 * MB);
      expect(ticks).toBeGreaterThan(0);

      // The SQLite part alone (no async hashing after it): only a worker thread leaves room for timers.
      ticks = 0;
      const destination = join(path, '..', `copy${TEMP_MARKER}x`);
      const result = await runSqliteTask({ op: 'snapshot', source: path, destination, busyTimeoutMs: 1000 });
      const check = await runSqliteTask({ op: 'check', path: destination, check: 'quick' });
      rmSync(destination);
      expect(result.sourceJournalMode).toBe('wal');
      expect(check.ok).toBe(true);
      expect(ticks).toBeGreaterThan(0);
    } finally {
      clearInterval(timer);
    }
  });

  it('rejects a file that is not SQLite and leaves no temp files', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    writeFileSync(path, Buffer.alloc(64 * 1024, 'not a database '));
    const error = await takeSnapshot(path, { check: 'quick' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DbSyncError);
    expect(['Corrupt', 'LocalDatabase']).toContain((error as DbSyncError).kind);
    expect((error as DbSyncError).message).toContain(path);
    expect(tempFiles(dir)).toEqual([]);
    expect(readdirSync(dir)).toEqual(['app.sqlite3']);
  });

  it('rejects a missing database with kind NotFound', async () => {
    const dir = tempDir();
    const error = await takeSnapshot(join(dir, 'absent.sqlite3'), { check: 'quick' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DbSyncError);
    expect((error as DbSyncError).kind).toBe('NotFound');
    expect((error as DbSyncError).exitCode).toBe(4);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('rejects when the signal fires mid-copy and leaves no temp files', async () => {
    const { dir, path } = databaseOfSize(100 * MB);
    const controller = new AbortController();
    const promise = takeSnapshot(path, { check: 'full', signal: controller.signal });
    // Abort once the worker is writing the copy.
    while (tempFiles(dir).length === 0) await new Promise((resolve) => setImmediate(resolve));
    controller.abort(new Error('stop'));
    const error = await promise.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortedError);
    expect(tempFiles(dir)).toEqual([]);
    // A terminated worker must not write anything afterwards: a full snapshot later, still nothing left.
    await discardSnapshot(await takeSnapshot(path, { check: 'quick' }));
    expect(tempFiles(dir)).toEqual([]);
    expect(integrity(path)).toBe('ok');
  });

  it('rejects at once when the signal has already fired', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 10);
    await expect(takeSnapshot(path, { check: 'quick', signal: AbortSignal.abort() })).rejects.toBeInstanceOf(AbortedError);
    expect(tempFiles(dir)).toEqual([]);
  });
});
