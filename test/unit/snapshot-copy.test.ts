/**
 * The snapshot's copy methods: WAL databases through a stepped backup inside one held read transaction,
 * rollback-journal databases through an unlocked file copy and a short locked pass. Both must give the same
 * bytes as a one-step backup-API copy of the same state, and a consistent state under a concurrent writer.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { runSqliteTask, type SnapshotWorkerResult } from '../../src/core/sqlite-worker.js';
import { createDatabase, integrity, rowCount, sqlite3, tempDir } from '../helpers/db.js';
import { startBatchWriter } from '../helpers/writer.js';

const MB = 1024 * 1024;

/** A backup-API copy of `path` in one step, the way snapshots were taken before. */
async function backupApiCopy(path: string, destination: string): Promise<Buffer> {
  const db = new Database(path, { fileMustExist: true });
  try {
    await db.backup(destination, { progress: () => 0x7fffffff });
  } finally {
    db.close();
  }
  return readFileSync(destination);
}

/**
 * Snapshot `path` into `destination` with small steps and chunks, so that every copy takes many of them;
 * `pace` paces it as the sidecar does (the app then commits during its pauses too).
 */
function snapshotSmallSteps(path: string, destination: string, pace?: number): Promise<SnapshotWorkerResult> {
  return runSqliteTask({
    op: 'snapshot',
    source: path,
    destination,
    busyTimeoutMs: 10_000,
    stepBytes: 64 * 1024,
    chunkBytes: 64 * 1024,
    pace,
  });
}

/** A writer process committing 5 rows and one update per transaction; resolves once it has committed 100 rows. */
function startWriter(path: string, journalMode: 'wal' | 'delete'): ReturnType<typeof startBatchWriter> {
  return startBatchWriter(path, { journalMode, withUpdate: true, readyAt: 100 });
}

describe('snapshot copy (WAL): stepped backup inside one read transaction', () => {
  it('gives the same bytes as a one-step backup-API copy, uncheckpointed WAL frames included', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 2000, { bodyBytes: 500 });
    const app = new Database(path);
    try {
      app.pragma('wal_autocheckpoint = 0');
      app.exec("UPDATE rows SET body = 'changed in the wal' WHERE id % 3 = 0");
      const result = await snapshotSmallSteps(path, join(dir, 'stepped.sqlite3'));
      expect(result.sourceJournalMode).toBe('wal');
      await snapshotSmallSteps(path, join(dir, 'paced.sqlite3'), 0.5);
      const reference = await backupApiCopy(path, join(dir, 'reference.sqlite3'));
      expect(reference.length).toBeGreaterThan(MB / 2); // many 64 KiB steps
      expect(readFileSync(join(dir, 'stepped.sqlite3')).equals(reference)).toBe(true);
      expect(readFileSync(join(dir, 'paced.sqlite3')).equals(reference)).toBe(true);
      expect(sqlite3(join(dir, 'stepped.sqlite3'), "SELECT count(*) FROM rows WHERE body = 'changed in the wal'")).toBe('666');
    } finally {
      app.close();
    }
  });

  it('finishes with a consistent copy while another process commits between its steps', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 2500, { bodyBytes: 1000 });
    const initialRows = rowCount(path);
    const writer = await startWriter(path, 'wal');
    try {
      // Without the held read transaction, each commit between two 64 KiB steps restarts the copy, and under
      // this writer it never finishes.
      for (let i = 0; i < 3; i += 1) {
        const before = writer.committed();
        const copy = join(dir, `copy-${i}.sqlite3`);
        await snapshotSmallSteps(path, copy, i === 1 ? 0.5 : undefined); // the second one paced
        expect(integrity(copy)).toBe('ok');
        const rows = rowCount(copy);
        expect(rows).toBeGreaterThanOrEqual(initialRows + before);
        expect((rows - initialRows) % 5).toBe(0); // whole transactions only
      }
    } finally {
      await writer.stop();
    }
  });
});

describe('snapshot copy (rollback journal): unlocked copy, then a locked pass', () => {
  it('gives the same bytes as a backup-API copy of a database another SQLite version wrote', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    // The sqlite3 CLI (another library version than the driver's) writes the header's version field, and
    // several commits move the change counter and the schema cookie away from a fresh file's.
    sqlite3(path, 'CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL); CREATE INDEX rows_body ON rows (body);');
    for (let i = 0; i < 5; i += 1) {
      sqlite3(
        path,
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) INSERT INTO rows (body) SELECT hex(randomblob(200)) FROM n;`,
      );
    }
    sqlite3(path, 'DELETE FROM rows WHERE id % 4 = 0'); // free pages too
    expect(sqlite3(path, 'PRAGMA journal_mode')).toBe('delete');

    const result = await snapshotSmallSteps(path, join(dir, 'copy.sqlite3'));
    expect(result.sourceJournalMode).toBe('delete');
    expect(result.rewrittenBytes).toBe(0); // nobody wrote during the copy
    const copy = readFileSync(join(dir, 'copy.sqlite3'));
    await snapshotSmallSteps(path, join(dir, 'paced.sqlite3'), 0.5);
    const reference = await backupApiCopy(path, join(dir, 'reference.sqlite3'));
    expect(readFileSync(join(dir, 'paced.sqlite3')).equals(reference)).toBe(true);
    expect(copy.subarray(0, 100).equals(reference.subarray(0, 100))).toBe(true);
    expect(copy.equals(reference)).toBe(true);
    // The live database is untouched: its header still differs from the copy's.
    expect(readFileSync(path).subarray(0, 100).equals(copy.subarray(0, 100))).toBe(false);
  });

  it('is consistent under a concurrent writer in another process, and equals the backup-API copy once quiet', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 3000, { wal: false, bodyBytes: 1000 });
    const initialRows = rowCount(path);
    const writer = await startWriter(path, 'delete');
    let rewritten = 0;
    try {
      let previous = 0;
      for (let i = 0; i < 3; i += 1) {
        const before = writer.committed();
        const copy = join(dir, `copy-${i}.sqlite3`);
        const result = await snapshotSmallSteps(path, copy, i === 1 ? 0.5 : undefined); // the second one paced
        rewritten += result.rewrittenBytes ?? 0;
        expect(integrity(copy)).toBe('ok');
        const rows = rowCount(copy);
        expect(rows).toBeGreaterThanOrEqual(initialRows + before);
        expect(rows).toBeGreaterThanOrEqual(previous);
        expect((rows - initialRows) % 5).toBe(0); // whole transactions only
        // Each transaction also rewrote one old row: those it committed are all there.
        expect(Number(sqlite3(copy, "SELECT count(*) FROM rows WHERE body LIKE 'u%'"))).toBeLessThanOrEqual((rows - initialRows) / 5);
        previous = rows;
      }
    } finally {
      await writer.stop();
    }
    // The writer committed during the unlocked copies, so the locked pass had pages to bring up to date.
    expect(rewritten).toBeGreaterThan(0);
    const result = await snapshotSmallSteps(path, join(dir, 'quiet.sqlite3'));
    expect(result.rewrittenBytes).toBe(0);
    expect(readFileSync(join(dir, 'quiet.sqlite3')).equals(await backupApiCopy(path, join(dir, 'reference.sqlite3')))).toBe(true);
  });
});
