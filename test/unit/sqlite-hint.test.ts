/** Every SQLite failure db-sync reports names its fix, extended result codes included. */
import { describe, expect, it } from 'vitest';
import { sqliteHint } from '../../src/core/sqlite-worker.js';

describe('sqliteHint', () => {
  it('gives extended codes the hint of their primary code, or a closer one', () => {
    expect(sqliteHint('SQLITE_READONLY_DIRECTORY')).toMatch(/make DB_LOCAL_PATH's directory writable/);
    expect(sqliteHint('SQLITE_CANTOPEN_ISDIR')).toMatch(/writable/);
    expect(sqliteHint('SQLITE_BUSY_SNAPSHOT')).toMatch(/stayed locked/);
    expect(sqliteHint('SQLITE_IOERR_FSYNC')).toMatch(/disk I\/O error/);
    expect(sqliteHint('SQLITE_IOERR_SHMSIZE')).toMatch(/-shm/);
    expect(sqliteHint('SQLITE_FULL')).toMatch(/disk is full/);
    expect(sqliteHint('SQLITE_CORRUPT_INDEX')).toMatch(/damaged/);
    expect(sqliteHint('SQLITE_SOMETHING_NEW')).toBeUndefined();
  });
});
