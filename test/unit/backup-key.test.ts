import { describe, expect, it } from 'vitest';
import { backupKey, backupPrefix, keyOfBackup, parseBackupKey } from '../../src/core/backup-key.js';

describe('backupKey', () => {
  it('formats KEY.backup.YYYYMMDD_HHMMSS in UTC', () => {
    expect(backupKey('db.sqlite3', new Date('2025-03-04T05:06:07.890Z'))).toBe('db.sqlite3.backup.20250304_050607');
    expect(backupKey('prod/app.db', new Date('1999-12-31T23:59:59Z'))).toBe('prod/app.db.backup.19991231_235959');
  });

  it('uses UTC whatever the offset of the input', () => {
    expect(backupKey('k', new Date('2025-01-01T01:30:00+05:00'))).toBe('k.backup.20241231_203000');
  });

  it('starts with backupPrefix', () => {
    expect(backupKey('k', new Date()).startsWith(backupPrefix('k'))).toBe(true);
    expect(backupPrefix('k')).toBe('k.backup.');
  });
});

describe('parseBackupKey', () => {
  it('round-trips backupKey at second precision', () => {
    for (const iso of ['2025-03-04T05:06:07Z', '2000-02-29T00:00:00Z', '2038-01-19T03:14:08Z']) {
      const at = new Date(iso);
      expect(parseBackupKey('db.sqlite3', backupKey('db.sqlite3', at))?.toISOString()).toBe(at.toISOString());
    }
    const withMs = new Date('2025-03-04T05:06:07.999Z');
    expect(parseBackupKey('k', backupKey('k', withMs))?.toISOString()).toBe('2025-03-04T05:06:07.000Z');
  });

  it.each([
    ['k.backup.20250231_000000', 'February 31st'],
    ['k.backup.20250229_000000', 'February 29th in a non-leap year'],
    ['k.backup.20251301_000000', 'month 13'],
    ['k.backup.20250100_000000', 'day 0'],
    ['k.backup.20250101_240000', 'hour 24'],
    ['k.backup.20250101_006000', 'minute 60'],
    ['k.backup.20250101_000060', 'second 60'],
  ])('rejects %j (%s)', (candidate) => {
    expect(parseBackupKey('k', candidate)).toBeUndefined();
  });

  it.each([
    ['k', 'the key itself'],
    ['other.backup.20250101_000000', 'another key'],
    ['k.backup.20250101_000000.tmp', 'a suffix'],
    ['k.backup.2025010_000000', 'a short date'],
    ['k.backup.20250101000000', 'no underscore'],
    ['k.backup.', 'no stamp'],
    ['kk.backup.20250101_000000', 'a longer key'],
  ])('rejects %j (%s)', (candidate) => {
    expect(parseBackupKey('k', candidate)).toBeUndefined();
  });

  it('treats the key literally (no regex metacharacters)', () => {
    expect(parseBackupKey('a.b', 'aXb.backup.20250101_000000')).toBeUndefined();
    expect(parseBackupKey('a.b', 'a.b.backup.20250101_000000')?.toISOString()).toBe('2025-01-01T00:00:00.000Z');
  });
});

describe('keyOfBackup', () => {
  it('names the key a backup key was made from (where a copied base finds its chain)', () => {
    expect(keyOfBackup('prod/app.db.backup.20261202_174501')).toBe('prod/app.db');
    expect(keyOfBackup('a.backup.b.backup.20261202_174501')).toBe('a.backup.b');
  });
  it.each(['prod/app.db', 'app.db.backup.20261302_174501', 'app.db.backup.latest', '.backup.20261202_174501'])(
    'leaves %s as it is',
    (key) => expect(keyOfBackup(key)).toBe(key),
  );
});
