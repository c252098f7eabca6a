/**
 * Restores of a base + chain, end to end: a real WAL-mode database changed by real transactions, a base and
 * segments built with the replication format's encoder and uploaded to the real S3 server, restored by the
 * built CLI as a subprocess, results checked with the sqlite3 CLI and byte for byte against backups of the
 * live database. Bad objects (truncated, bit-flipped, missing, duplicate, a zombie's, a wrong checksum) must
 * end the replay at the last good segment, loudly, and the result must be exactly that segment's state.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, openSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { S3Store } from '../../src/replica/s3-store.js';
import { hashDatabaseFile } from '../../src/replication/checksum.js';
import { segmentKey } from '../../src/replication/layout.js';
import { encodeSegmentToBuffer, type SegmentHeader } from '../../src/replication/segment.js';
import { backupCopy, ChainBuilder, dumpOf, putBytes, samePagesFrom2, type BuiltSegment } from '../helpers/chain.js';
import { runCli } from '../helpers/cli.js';
import { createDatabase, integrity, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, s3Env } from '../helpers/s3.js';

const KEY = 'app/db.sqlite3';

/** Realistic transactions: inserts, updates, deletes, growth by overflow pages, DDL, and a shrinking VACUUM. */
const CHANGES: Array<(db: Database.Database) => void> = [
  (db) => insert(db, 60),
  (db) => db.prepare('UPDATE rows SET body = ? WHERE id % 7 = 0').run(randomBytes(40).toString('hex')),
  (db) => {
    db.exec('CREATE TABLE notes (id INTEGER PRIMARY KEY, note TEXT); CREATE INDEX rows_body ON rows(body)');
    db.prepare('INSERT INTO notes (note) VALUES (?)').run('first note');
  },
  (db) => db.prepare('INSERT INTO notes (note) VALUES (?)').run(randomBytes(30_000).toString('hex')),
  (db) => db.prepare('DELETE FROM rows WHERE id BETWEEN 10 AND 200').run(),
  (db) => insert(db, 120),
  (db) => db.exec('VACUUM'),
  (db) => db.transaction(() => [1, 2, 3].forEach(() => insert(db, 15)))(),
  (db) => db.prepare('UPDATE notes SET note = ? WHERE id = 1').run('edited'),
  (db) => insert(db, 40),
];

function insert(db: Database.Database, n: number): void {
  const stmt = db.prepare('INSERT INTO rows (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) stmt.run(randomBytes(24 + (i % 50)).toString('hex'));
  })();
}

interface Chain {
  readonly bucket: string;
  readonly store: S3Store;
  readonly dir: string;
  readonly env: Record<string, string>;
  readonly live: string;
  readonly builder: ChainBuilder;
  readonly segments: BuiltSegment[];
}

/** A live database, its base uploaded to a fresh bucket, and `count` segments built (not uploaded). */
async function buildChain(count = CHANGES.length, lastCommitMs?: (i: number) => number): Promise<Chain> {
  const { bucket, store } = await createBucket();
  const dir = tempDir();
  const live = join(dir, 'live.sqlite3');
  createDatabase(live, 400, { bodyBytes: 100 });
  const builder = await ChainBuilder.start(KEY, live, dir, { startSeq: 3 });
  await builder.uploadBase(store);
  const segments: BuiltSegment[] = [];
  for (let i = 0; i < count; i++) segments.push(await builder.next(CHANGES[i % CHANGES.length]!, { lastCommitMs: lastCommitMs?.(i) }));
  return { bucket, store, dir, env: { ...s3Env(bucket), DB_S3_KEY: KEY }, live, builder, segments };
}

async function upload(chain: Chain, segments: readonly BuiltSegment[]): Promise<void> {
  for (const s of segments) await putBytes(chain.store, s.key, s.bytes, chain.dir);
}

interface JsonChain {
  gen: string;
  fromSeq: number;
  lastSeq: number;
  lastCommitAt?: string;
  segments: number;
  pages: number;
  notApplied: number;
  stoppedBecause?: string;
}

async function download(chain: Chain): Promise<{ path: string; chain: JsonChain; stdout: string }> {
  const path = join(chain.dir, `restored-${randomBytes(3).toString('hex')}.sqlite3`);
  const r = await runCli(['download', '--json'], { ...chain.env, DB_LOCAL_PATH: path });
  expect(r.code, r.stderr + r.stdout).toBe(0);
  const line = r.stdout.split('\n').find((l) => l.startsWith('{"path"'));
  expect(line, r.stdout).toBeDefined();
  return { path, chain: (JSON.parse(line!) as { chain: JsonChain }).chain, stdout: r.stdout };
}

/** The restored file holds exactly the state after `segment` (or the base when undefined). */
function expectStateOf(path: string, chain: Chain, segment: BuiltSegment | undefined): void {
  const state = segment?.statePath ?? chain.builder.base.path;
  expect(integrity(path)).toBe('ok');
  expect(dumpOf(path)).toBe(dumpOf(state));
  expect(samePagesFrom2(path, state)).toBe(true);
}

describe('restore of a base + chain', () => {
  it('download equals a backup of the live database: every row, integrity, pages 2..N byte for byte', async () => {
    const chain = await buildChain();
    await upload(chain, chain.segments);
    const { path, chain: applied } = await download(chain);
    expect(applied).toMatchObject({ gen: chain.builder.gen, fromSeq: 3, lastSeq: 13, segments: 10, notApplied: 0 });
    expect(applied.stoppedBecause).toBeUndefined();
    // The differential check: a fresh backup of the live database, quiesced now.
    const quiesced = join(chain.dir, 'quiesced.sqlite3');
    await backupCopy(chain.live, quiesced);
    expect(integrity(path)).toBe('ok');
    expect(dumpOf(path)).toBe(dumpOf(chain.live));
    expect(samePagesFrom2(path, quiesced)).toBe(true);
  });

  it('verify reports the chain it applied; startup restores it and logs it', async () => {
    const chain = await buildChain(4);
    await upload(chain, chain.segments);
    const v = await runCli(['verify', '--json'], { ...chain.env, DB_LOCAL_PATH: join(chain.dir, 'unused.sqlite3') });
    expect(v.code, v.stderr + v.stdout).toBe(0);
    const verified = JSON.parse(v.stdout.split('\n').find((l) => l.startsWith('{"ok"'))!) as { chain: JsonChain };
    expect(verified.chain).toMatchObject({ fromSeq: 3, lastSeq: 7, segments: 4 });
    const human = await runCli(['verify'], { ...chain.env, DB_LOCAL_PATH: join(chain.dir, 'unused.sqlite3') });
    expect(human.stdout).toMatch(/chain: +applied segments 4\.\.7 of generation/);

    const target = join(chain.dir, 'started.sqlite3');
    const s = await runCli(['startup'], { ...chain.env, DB_LOCAL_PATH: target });
    expect(s.code, s.stderr + s.stdout).toBe(0);
    const restoredLine = s.stdout.split('\n').find((l) => l.includes('"msg":"database restored"'));
    expect(JSON.parse(restoredLine!)).toMatchObject({ chain: { lastSeq: 7, segments: 4 } });
    expectStateOf(target, chain, chain.segments[3]);
  });

  it('a KEY version without chain metadata restores alone, as before', async () => {
    const chain = await buildChain(2);
    await upload(chain, chain.segments);
    // `db-sync upload` writes a plain snapshot (no chain-gen) on top: its segments folder is not looked at.
    const plain = join(chain.dir, 'plain.sqlite3');
    createDatabase(plain, 5);
    expect((await runCli(['upload'], { ...chain.env, DB_LOCAL_PATH: plain })).code).toBe(0);
    const path = join(chain.dir, 'restored.sqlite3');
    const r = await runCli(['download', '--json'], { ...chain.env, DB_LOCAL_PATH: path });
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/"chain":\{/);
    expect(dumpOf(path)).toBe(dumpOf(plain));
  });
});

describe('a broken or missing change object ends the replay there, loudly', () => {
  /** Upload everything, with segment `bad` (1-based index into the chain) replaced by `replace(bytes)`. */
  async function withBadSegment(bad: number, replace: (s: BuiltSegment) => Array<{ key: string; bytes: Buffer }>): Promise<Chain> {
    const chain = await buildChain(6);
    await upload(
      chain,
      chain.segments.filter((_, i) => i !== bad - 1),
    );
    for (const o of replace(chain.segments[bad - 1]!)) await putBytes(chain.store, o.key, o.bytes, chain.dir);
    return chain;
  }

  /** The restore holds exactly the state after segment index `good` (1-based; 0 = the base) and says why it stopped. */
  async function expectStoppedAfter(chain: Chain, good: number, reason: RegExp): Promise<void> {
    const { path, chain: applied, stdout } = await download(chain);
    expect(applied.segments).toBe(good);
    expect(applied.lastSeq).toBe(3 + good);
    expect(applied.stoppedBecause).toMatch(reason);
    expect(applied.notApplied).toBeGreaterThan(0);
    const loud = stdout.split('\n').find((l) => l.includes('chain replay stopped'));
    expect(loud, stdout).toMatch(/"level":"error"/);
    expect(loud).toMatch(new RegExp(`chain replay stopped at seq ${4 + good}: .*through seq ${3 + good}`));
    expectStateOf(path, chain, good === 0 ? undefined : chain.segments[good - 1]);
  }

  it('a truncated segment', async () => {
    const chain = await withBadSegment(4, (s) => [{ key: s.key, bytes: s.bytes.subarray(0, s.bytes.length - 100) }]);
    await expectStoppedAfter(chain, 3, /^broken segment 7: .*sha256 does not match/);
  });

  it('a bit-flipped segment', async () => {
    const chain = await withBadSegment(2, (s) => {
      const bytes = Buffer.from(s.bytes);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x10;
      return [{ key: s.key, bytes }];
    });
    await expectStoppedAfter(chain, 1, /^broken segment 5: .*sha256/);
  });

  it('a missing seq with later segments present', async () => {
    const chain = await withBadSegment(3, () => []);
    await expectStoppedAfter(chain, 2, /^missing seq 6$/);
  });

  it('two objects claiming one seq', async () => {
    const chain = await withBadSegment(5, (s) => [
      { key: s.key, bytes: s.bytes },
      { key: s.key.replace(/-(\d{13})\.seg$/, (_m, ms: string) => `-${String(Number(ms) + 5).padStart(13, '0')}.seg`), bytes: s.bytes },
    ]);
    await expectStoppedAfter(chain, 4, /^broken segment 8: 2 objects claim seq 8/);
  });

  it('the first segment broken: the base alone', async () => {
    const chain = await withBadSegment(1, (s) => [{ key: s.key, bytes: Buffer.from('garbage') }]);
    await expectStoppedAfter(chain, 0, /^broken segment 4: .*truncated/);
  });

  it("a zombie's late segments: under its old generation they are ignored, misfiled under the new one they stop the replay", async () => {
    // Generation A ships 3 segments; a successor starts generation B with a base at the same state and ships 2.
    const a = await buildChain(3);
    await upload(a, a.segments);
    const b = await ChainBuilder.start(KEY, a.live, a.dir, { startSeq: 0 });
    await b.uploadBase(a.store);
    const bSegments = [await b.next(CHANGES[5]!), await b.next(CHANGES[7]!)];
    for (const s of bSegments) await putBytes(a.store, s.key, s.bytes, a.dir);
    // The paused holder of A wakes up and ships its seq 4 late, under A.
    const late = await a.builder.next(CHANGES[1]!);
    await putBytes(a.store, late.key, late.bytes, a.dir);
    const chainB: Chain = { ...a, builder: b, segments: bSegments };
    let restored = await download(chainB);
    expect(restored.chain).toMatchObject({ gen: b.gen, fromSeq: 0, lastSeq: 2, segments: 2, notApplied: 0 });
    expectStateOf(restored.path, chainB, bSegments[1]);
    // A segment of A put under B's folder with B's next seq (a buggy or confused writer): its header says A.
    await putBytes(a.store, late.key.replace(a.builder.gen, b.gen).replace(/\/[0-9a-f]{16}-/, '/0000000000000003-'), late.bytes, a.dir);
    restored = await download(chainB);
    expect(restored.chain.stoppedBecause).toMatch(/^broken segment 3: .*header (names generation|says seq)/);
    expectStateOf(restored.path, chainB, bSegments[1]);
  });

  it("a segment that does not follow the database's state: checksum mismatch", async () => {
    // Segment 3 built against another history (its pre-checksum is another database's).
    const chain = await buildChain(4);
    const other = await buildChain(3);
    const alien = other.segments[2]!;
    const renamed = { ...alien, key: alien.key.replace(other.builder.gen, chain.builder.gen) };
    const bytes = Buffer.from(renamed.bytes);
    // Give it this chain's generation id in the header (same length), and re-seal it: a well-formed, wrong segment.
    bytes.write(chain.builder.gen, 86, 'ascii');
    const { createHash } = await import('node:crypto');
    createHash('sha256')
      .update(bytes.subarray(0, bytes.length - 32))
      .digest()
      .copy(bytes, bytes.length - 32);
    await upload(
      chain,
      chain.segments.filter((_, i) => i !== 2),
    );
    await putBytes(chain.store, renamed.key, bytes, chain.dir);
    await expectStoppedAfter(chain, 2, /^checksum mismatch at 6/);
  });
});

describe('a chain whose result is not a healthy database', () => {
  it('falls back to the base alone, logged, and reports why', async () => {
    const chain = await buildChain(2);
    await upload(chain, chain.segments.slice(0, 1));
    // Segment 5: well-formed, checksums right, but it writes garbage over the schema's first table page.
    const state = chain.segments[0]!.statePath;
    const broken = join(chain.dir, 'broken.sqlite3');
    copyFileSync(state, broken);
    const garbage = randomBytes(4096);
    const fd = openSync(broken, 'r+');
    writeSync(fd, garbage, 0, garbage.length, 4096);
    closeSync(fd);
    const header: SegmentHeader = {
      gen: chain.builder.gen,
      seq: 5,
      pageSize: 4096,
      pageCount: statSync(broken).size / 4096,
      entries: 1,
      commits: 1,
      firstCommitMs: Date.now(),
      lastCommitMs: Date.now(),
      preChecksum: (await hashDatabaseFile(state)).checksum,
      postChecksum: (await hashDatabaseFile(broken)).checksum,
      walSalt1: 0,
      walSalt2: 0,
      walFirstFrame: 0,
      walLastFrame: 0,
      compressed: false,
    };
    const bytes = await encodeSegmentToBuffer(header, [{ pgno: 2, data: garbage }]);
    await putBytes(chain.store, segmentKey(KEY, { gen: header.gen, seq: 5, lastCommitMs: header.lastCommitMs }), bytes, chain.dir);
    const { path, chain: applied, stdout } = await download(chain);
    expect(applied).toMatchObject({ segments: 0, lastSeq: 3 });
    expect(applied.stoppedBecause).toMatch(/^the chain's result is not a healthy SQLite database/);
    expect(stdout).toMatch(/"level":"error".*restoring the base alone/);
    expectStateOf(path, chain, undefined);
  });
});

describe('point-in-time restore through the chain', () => {
  it('restore --at a random time holds exactly the commits up to it', async () => {
    const startMs = Date.now() + 60_000; // after the base is stored, so --at always picks this base
    const chain = await buildChain(10, (i) => startMs + i * 1000);
    await upload(chain, chain.segments);
    const picks = [-1, ...Array.from({ length: 3 }, () => Math.floor(Math.random() * 10)), 9];
    for (const i of picks) {
      const atMs = startMs + i * 1000 + (i < 0 ? 500 : Math.floor(Math.random() * 1000));
      const target = join(chain.dir, `pitr-${i}-${randomBytes(2).toString('hex')}.sqlite3`);
      const r = await runCli(['restore', '--at', new Date(atMs).toISOString(), '--to', target, '--json'], chain.env);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      const out = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{"path"'))!) as { chain: JsonChain };
      expect(out.chain).toMatchObject({ segments: i + 1, lastSeq: 3 + i + 1, notApplied: 9 - i });
      expect(out.chain.stoppedBecause).toBeUndefined();
      expectStateOf(target, chain, i < 0 ? undefined : chain.segments[i]);
    }
  }, 240_000); // five CLI restores in a row: over the default 60 s on a loaded machine
});

describe('bad objects through the AWS CLI (an independent writer)', () => {
  it('a segment overwritten with a truncated copy by another tool', async () => {
    const chain = await buildChain(3);
    await upload(chain, chain.segments);
    const file = join(chain.dir, 'short.seg');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, chain.segments[1]!.bytes.subarray(0, 200));
    await awsCli(chain.bucket, ['s3', 'cp', file, `s3://${chain.bucket}/${chain.segments[1]!.key}`]);
    const { path, chain: applied } = await download(chain);
    expect(applied).toMatchObject({ segments: 1, lastSeq: 4 });
    expect(applied.stoppedBecause).toMatch(/^broken segment 5/);
    expectStateOf(path, chain, chain.segments[0]);
  });
});
