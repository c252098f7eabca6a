import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { INVALID_HEADER_LIMIT, WalFollower } from '../../src/replication/wal-follower.js';
import {
  continuity,
  cursorAtStart,
  FRAME_HEADER_BYTES,
  isWalHeader,
  latestFrames,
  parseWalHeader,
  scanFrames,
  WAL_HEADER_BYTES,
  WAL_MAGIC_BE,
  walChecksum,
  type WalHeader,
  type WalScan,
} from '../../src/replication/wal.js';
import { sqlite3, tempDir } from '../helpers/db.js';

const open_: Database.Database[] = [];
afterEach(() => {
  for (const db of open_.splice(0)) db.close();
});

/** An app connection in WAL mode that never checkpoints on its own. */
function appDb(path: string): Database.Database {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  open_.push(db);
  return db;
}

function commit(db: Database.Database, rows: number, bodyBytes = 300): void {
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run('y'.repeat(bodyBytes));
  })();
}

function header(path: string): WalHeader {
  const h = parseWalHeader(readFileSync(path).subarray(0, WAL_HEADER_BYTES));
  if (!isWalHeader(h)) throw new Error(h.invalid);
  return h;
}

async function scanFile(path: string, from = cursorAtStart(header(path))): Promise<WalScan> {
  const handle = await open(path, 'r');
  try {
    return await scanFrames(handle, from, (await handle.stat()).size);
  } finally {
    await handle.close();
  }
}

/** The main file with the scan's latest page images written over it, cut to the last commit's size. */
function reconstruct(dbPath: string, walPath: string, scan: WalScan, out: string): void {
  copyFileSync(dbPath, out);
  const wal = readFileSync(walPath);
  const pageSize = scan.cursor.header.pageSize;
  const db = Buffer.from(readFileSync(out));
  const size = scan.commits.at(-1)!.dbSizePages * pageSize;
  const image = Buffer.alloc(size);
  db.copy(image, 0, 0, Math.min(db.length, size));
  for (const f of latestFrames(scan.frames)) wal.copy(image, (f.pgno - 1) * pageSize, f.dataOffset, f.dataOffset + pageSize);
  writeFileSync(out, image);
}

describe('WAL header and checksum', () => {
  it('parses a header SQLite wrote and rejects a damaged one', () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    commit(appDb(path), 3);
    const h = header(`${path}-wal`);
    expect(h.pageSize).toBe(4096);
    expect(h.bigEndian).toBe(false);
    const bytes = Buffer.from(readFileSync(`${path}-wal`).subarray(0, WAL_HEADER_BYTES));
    bytes[17]! ^= 1;
    expect(parseWalHeader(bytes)).toEqual({ invalid: 'header checksum does not match' });
    expect(parseWalHeader(bytes.subarray(0, 20))).toHaveProperty('invalid');
  });

  it('accepts big-endian checksums (magic 0x377f0683) in a WAL written that way', async () => {
    const dir = tempDir();
    const walPath = join(dir, 'be.db-wal');
    const pageSize = 512;
    const h = Buffer.alloc(WAL_HEADER_BYTES);
    h.writeUInt32BE(WAL_MAGIC_BE, 0);
    h.writeUInt32BE(3007000, 4);
    h.writeUInt32BE(pageSize, 8);
    h.writeUInt32BE(0, 12);
    h.writeUInt32BE(0x11223344, 16);
    h.writeUInt32BE(0x55667788, 20);
    let sum = walChecksum(true, h.subarray(0, 24));
    h.writeUInt32BE(sum[0], 24);
    h.writeUInt32BE(sum[1], 28);
    const frames: Buffer[] = [h];
    for (const [pgno, dbSize] of [
      [1, 0],
      [2, 2],
      [1, 0],
    ] as const) {
      const f = Buffer.alloc(FRAME_HEADER_BYTES + pageSize, pgno);
      f.writeUInt32BE(pgno, 0);
      f.writeUInt32BE(dbSize, 4);
      f.writeUInt32BE(0x11223344, 8);
      f.writeUInt32BE(0x55667788, 12);
      sum = walChecksum(true, f.subarray(0, 8), sum);
      sum = walChecksum(true, f.subarray(FRAME_HEADER_BYTES), sum);
      f.writeUInt32BE(sum[0], 16);
      f.writeUInt32BE(sum[1], 20);
      frames.push(f);
    }
    writeFileSync(walPath, Buffer.concat(frames));
    const parsed = header(walPath);
    expect(parsed.bigEndian).toBe(true);
    const scan = await scanFile(walPath);
    // Two frames through the commit; the third (no commit yet) stays for later.
    expect(scan.frames.map((f) => f.pgno)).toEqual([1, 2]);
    expect(scan.commits).toEqual([{ frame: 2, dbSizePages: 2 }]);
    // Read as little-endian, the same bytes break the chain at once.
    const asLe = Buffer.concat(frames);
    asLe.writeUInt32BE(WAL_MAGIC_BE - 1, 0);
    expect(parseWalHeader(asLe)).toHaveProperty('invalid');
  });
});

describe('scanFrames on WAL files written by SQLite', () => {
  it('consumes every committed transaction; its latest pages over the main file are the database', async () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    const db = appDb(path);
    for (let i = 0; i < 5; i++) commit(db, 20);
    const scan = await scanFile(`${path}-wal`);
    // CREATE TABLE (plus the journal_mode change) and five inserts: one commit frame each.
    expect(scan.commits.length).toBeGreaterThanOrEqual(6);
    expect(scan.commits.at(-1)!.dbSizePages).toBe(Number(db.pragma('page_count', { simple: true })));
    expect(scan.cursor.offset).toBe(readFileSync(`${path}-wal`).length);
    const out = join(dir, 'rebuilt.db');
    reconstruct(path, `${path}-wal`, scan, out);
    expect(sqlite3(out, 'PRAGMA integrity_check')).toBe('ok');
    expect(sqlite3(out, 'SELECT count(*) FROM t')).toBe('100');
  });

  it('continues from a cursor: only the frames committed since', async () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    const db = appDb(path);
    commit(db, 10);
    const first = await scanFile(`${path}-wal`);
    commit(db, 10);
    commit(db, 10);
    const second = await scanFile(`${path}-wal`, first.cursor);
    expect(second.commits).toHaveLength(2);
    expect(second.frames[0]!.frame).toBe(first.cursor.frames + 1);
    expect(await scanFile(`${path}-wal`, second.cursor)).toMatchObject({ frames: [], commits: [], cursor: second.cursor });
  });

  it('leaves a torn tail for later: a cut frame, a damaged frame, a transaction without its commit frame', async () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    const db = appDb(path);
    commit(db, 10);
    const before = await scanFile(`${path}-wal`);
    commit(db, 40); // several frames, the last one the commit frame
    const walPath = `${path}-wal`;
    const full = readFileSync(walPath);
    const frameBytes = FRAME_HEADER_BYTES + 4096;
    const torn = join(dir, 'torn-wal');

    // Cut in the middle of the commit frame.
    writeFileSync(torn, full.subarray(0, full.length - 100));
    expect((await scanFile(torn)).cursor).toEqual(before.cursor);

    // Whole frames, but the commit frame is missing (the writer had not reached it).
    writeFileSync(torn, full.subarray(0, full.length - frameBytes));
    expect((await scanFile(torn)).cursor).toEqual(before.cursor);

    // Every byte there, one flipped in the middle of the transaction: the chain breaks there.
    const flipped = Buffer.from(full);
    flipped[before.cursor.offset + frameBytes + FRAME_HEADER_BYTES + 7]! ^= 0x40;
    writeFileSync(torn, flipped);
    const scan = await scanFile(torn);
    expect(scan.cursor).toEqual(before.cursor);
    expect(scan.frames).toHaveLength(before.frames.length);

    // And the intact file consumes it all.
    truncateSync(torn, 0);
    writeFileSync(torn, full);
    expect((await scanFile(torn)).cursor.offset).toBe(full.length);
  });

  it('stops at frames left from before a restart (old salts)', async () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    const db = appDb(path);
    for (let i = 0; i < 4; i++) commit(db, 30);
    const old = header(`${path}-wal`);
    db.pragma('wal_checkpoint(RESTART)');
    commit(db, 1);
    const now = header(`${path}-wal`);
    expect(now.salt1).toBe((old.salt1 + 1) >>> 0);
    expect(continuity(old, now)).toEqual({ kind: 'restarted' });
    const scan = await scanFile(`${path}-wal`);
    expect(scan.commits).toHaveLength(1);
    // The file is longer: stale frames of the previous generation follow, and are not read as new.
    expect(readFileSync(`${path}-wal`).length).toBeGreaterThan(scan.cursor.offset);
  });

  it('calls anything but salt-1 + 1 a broken continuity', () => {
    const base: WalHeader = { bigEndian: false, pageSize: 4096, checkpointSeq: 3, salt1: 10, salt2: 99, checksum: [1, 2] };
    expect(continuity(base, { ...base })).toEqual({ kind: 'same' });
    // The checkpoint sequence is not relied on.
    expect(continuity(base, { ...base, salt1: 11, salt2: 5, checkpointSeq: 9 })).toEqual({ kind: 'restarted' });
    expect(continuity(base, { ...base, salt1: 12, salt2: 5 }).kind).toBe('broken');
    expect(continuity(base, { ...base, salt2: 5 }).kind).toBe('broken');
    expect(continuity(base, { ...base, pageSize: 8192 }).kind).toBe('broken');
    expect(continuity({ ...base, salt1: 0xffffffff }, { ...base, salt1: 0 }).kind).toBe('restarted');
  });
});

describe('WalFollower', () => {
  async function collect(follower: WalFollower): Promise<{ kind: string; pages: number; commits: number; restarted?: boolean }> {
    let pages = 0;
    const outcome = await follower.poll(async (scan, readPage) => {
      for (const f of latestFrames(scan.frames)) {
        expect((await readPage(f)).length).toBe(scan.cursor.header.pageSize);
        pages++;
      }
    });
    if (outcome.kind === 'frames') return { kind: outcome.kind, pages, commits: outcome.scan.commits.length, restarted: outcome.restarted };
    return { kind: outcome.kind, pages, commits: 0 };
  }

  it('follows commits, is idle without them, and follows a TRUNCATE checkpoint and a restart', async () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    const follower = new WalFollower(`${path}-wal`);
    expect(await collect(follower)).toMatchObject({ kind: 'idle' }); // no WAL yet
    const db = appDb(path);
    commit(db, 5);
    expect(await collect(follower)).toMatchObject({ kind: 'frames', restarted: false });
    expect(await collect(follower)).toMatchObject({ kind: 'idle' });
    commit(db, 5);
    expect(await collect(follower)).toMatchObject({ kind: 'frames', commits: 1 });

    db.pragma('wal_checkpoint(TRUNCATE)');
    expect(await collect(follower)).toMatchObject({ kind: 'idle' });
    commit(db, 5);
    expect(await collect(follower)).toMatchObject({ kind: 'frames', commits: 1, restarted: true });

    db.pragma('wal_checkpoint(RESTART)');
    commit(db, 5);
    expect(await collect(follower)).toMatchObject({ kind: 'frames', commits: 1, restarted: true });
  });

  it('reports a WAL restarted twice unseen as broken', async () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    const follower = new WalFollower(`${path}-wal`);
    const db = appDb(path);
    commit(db, 5);
    await collect(follower);
    for (let i = 0; i < 2; i++) {
      db.pragma('wal_checkpoint(RESTART)');
      commit(db, 5);
    }
    const outcome = await follower.poll(async () => undefined);
    expect(outcome.kind).toBe('broken');
    expect(outcome).toMatchObject({ reason: expect.stringContaining('salt-1') });
  });

  it('reports a header that stays invalid as broken, after a few reads', async () => {
    const dir = tempDir();
    const path = join(dir, 'a.db');
    commit(appDb(path), 5);
    const wal = Buffer.from(readFileSync(`${path}-wal`));
    wal[20]! ^= 1; // salt-2 changed, the header checksum no longer matches
    const fake = join(dir, 'fake-wal');
    writeFileSync(fake, wal);
    const follower = new WalFollower(fake);
    for (let i = 1; i < INVALID_HEADER_LIMIT; i++) expect((await follower.poll(async () => undefined)).kind).toBe('idle');
    expect(await follower.poll(async () => undefined)).toMatchObject({ kind: 'broken', reason: expect.stringContaining('invalid') });
  });
});
