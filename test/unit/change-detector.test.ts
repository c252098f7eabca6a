import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ChangeDetector } from '../../src/core/change-detector.js';
import { addRows, createDatabase, tempDir } from '../helpers/db.js';

const dir = tempDir();
let n = 0;
const detectors: ChangeDetector[] = [];

function setup(options: { wal?: boolean } = {}): { path: string; detector: ChangeDetector } {
  const path = join(dir, `db-${++n}.sqlite3`);
  createDatabase(path, 10, options);
  const detector = new ChangeDetector(path);
  detectors.push(detector);
  return { path, detector };
}

afterEach(() => {
  for (const d of detectors.splice(0)) d.close();
});

describe('ChangeDetector', () => {
  it('returns the same token while the database is idle', async () => {
    const { detector } = setup();
    const first = await detector.probe();
    expect(first).not.toBeNull();
    expect(await detector.probe()).toBe(first);
    expect(await detector.probe()).toBe(first);
  });

  it.each([
    ['WAL', true],
    ['rollback journal', false],
  ])('returns a new token after a write from another connection (%s)', async (_mode, wal) => {
    const { path, detector } = setup({ wal });
    const before = await detector.probe();
    addRows(path, 1);
    const after = await detector.probe();
    expect(after).not.toBeNull();
    expect(after).not.toBe(before);
    expect(await detector.probe()).toBe(after);
  });

  it('sees a commit from a connection that stays open (WAL, no checkpoint)', async () => {
    const { path, detector } = setup();
    const writer = new Database(path);
    try {
      writer.pragma('wal_autocheckpoint = 0');
      const before = await detector.probe();
      writer.prepare('INSERT INTO rows (body) VALUES (?)').run('y');
      expect(await detector.probe()).not.toBe(before);
    } finally {
      writer.close();
    }
  });

  it('returns null when the database does not exist, and a token once it does', async () => {
    const path = join(dir, 'absent.sqlite3');
    const detector = new ChangeDetector(path);
    detectors.push(detector);
    expect(await detector.probe()).toBeNull();
    createDatabase(path, 1);
    expect(await detector.probe()).not.toBeNull();
    rmSync(path);
    rmSync(`${path}-wal`, { force: true });
    rmSync(`${path}-shm`, { force: true });
    expect(await detector.probe()).toBeNull();
  });

  it('returns a new token when the file is replaced by another database', async () => {
    const { path, detector } = setup();
    const other = join(dir, 'replacement.sqlite3');
    createDatabase(other, 10, { wal: false });
    const before = await detector.probe();
    renameSync(other, path);
    const after = await detector.probe();
    expect(after).not.toBeNull();
    expect(after).not.toBe(before);
    // And it watches the new file from now on.
    expect(await detector.probe()).toBe(after);
    addRows(path, 1);
    expect(await detector.probe()).not.toBe(after);
  });

  it('never throws on a file that is not a database; it reports a change every time', async () => {
    const path = join(dir, 'garbage.sqlite3');
    writeFileSync(path, 'this is not a database'.repeat(100));
    const detector = new ChangeDetector(path);
    detectors.push(detector);
    const first = await detector.probe();
    const second = await detector.probe();
    expect(first).not.toBeNull();
    expect(second).not.toBe(first);
  });
});
