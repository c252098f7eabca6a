/**
 * Continuous replication's base copy (src/replication/base.ts): a backup from a connection whose read
 * transaction fixes the position, on the main thread. Paced (as while the app runs) it must give the same
 * bytes as unpaced, the state at that position however much another process commits meanwhile.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { copyBase } from '../../src/replication/base.js';
import { databaseChecksum } from '../../src/replication/checksum.js';
import { removeQuietly } from '../../src/fs-atomic.js';
import { createDatabase, integrity, rowCount, tempDir } from '../helpers/db.js';
import { startBatchWriter } from '../helpers/writer.js';

/** A read-only connection holding a read transaction: the base's position. */
function readerAtNow(path: string): Database.Database {
  const x = new Database(path, { readonly: true, fileMustExist: true });
  x.exec('BEGIN');
  x.prepare('SELECT count(*) FROM sqlite_schema').get();
  return x;
}

describe('copyBase', () => {
  it('paced and unpaced give the same bytes and checksum, uncheckpointed WAL frames included', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 6000, { bodyBytes: 1000 }); // ~7 MB: several 2 MiB paced steps
    const app = new Database(path);
    try {
      app.pragma('wal_autocheckpoint = 0');
      app.exec("UPDATE rows SET body = 'in the wal' WHERE id % 7 = 0");
      const unpaced = await copyBase(readerAtNow(path), path, { check: 'quick' });
      const paced = await copyBase(readerAtNow(path), path, { check: 'quick' }, undefined, 0.25);
      try {
        expect(readFileSync(paced.snapshot.path).equals(readFileSync(unpaced.snapshot.path))).toBe(true);
        expect(paced.snapshot.sha256).toBe(unpaced.snapshot.sha256);
        expect(paced.hashes.checksum).toBe(unpaced.hashes.checksum);
        expect(paced.hashes.checksum).toBe(await databaseChecksum(unpaced.snapshot.path));
      } finally {
        await removeQuietly(paced.snapshot.path);
        await removeQuietly(unpaced.snapshot.path);
      }
    } finally {
      app.close();
    }
  });

  it('paced, copies the state at its position while another process commits during the pauses', async () => {
    const dir = tempDir();
    const path = join(dir, 'app.sqlite3');
    createDatabase(path, 6000, { bodyBytes: 1000 });
    const writer = await startBatchWriter(path, { journalMode: 'wal', withUpdate: true, readyAt: 100 });
    try {
      const x = readerAtNow(path);
      const atPosition = Number((x.prepare('SELECT count(*) AS n FROM rows').get() as { n: number }).n);
      const committedBefore = writer.committed();
      const { snapshot } = await copyBase(x, path, { check: 'quick' }, undefined, 0.25);
      try {
        expect(writer.committed()).toBeGreaterThan(committedBefore); // the app went on committing meanwhile
        expect(integrity(snapshot.path)).toBe('ok');
        expect(rowCount(snapshot.path)).toBe(atPosition);
      } finally {
        await removeQuietly(snapshot.path);
      }
    } finally {
      await writer.stop();
    }
  });
});
