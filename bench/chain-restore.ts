/**
 * Restore of a base + chain vs the base (KEY) alone: `db-sync download` of a 1 GB database with 15 minutes
 * of changes at 200 transactions/s, against its own local S3 server (port 7490), several runs alternating.
 *
 *   npx tsx bench/chain-restore.ts --prepare [--size-mb 1000] [--seconds 900] [--rate 200]   # build (no server, no lock)
 *   flock /tmp/bench.lock npx tsx bench/chain-restore.ts [--runs 3]                        # measure (own S3 server)
 *
 * The chain is built the way the capture side builds it, without the capture: the "app" commits single-row
 * INSERTs (the benchmark's Django-style table with two indexes) into a WAL database with automatic
 * checkpoints off; after each simulated second the new WAL frames are read, the latest image of each page
 * becomes one segment (the format's own encoder, compressed), and the running checksum is kept with
 * PageHashes. The base is a backup-API copy taken before the first change. Results: bench/chain-restore.json.
 */
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  closeSync,
  fstatSync,
  rmSync,
  writeFileSync,
  readFileSync,
} from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import Database from 'better-sqlite3';
import { sha256File } from '../src/core/hash.js';
import { snapshotMetadata } from '../src/core/metadata.js';
import { hashDatabaseFile } from '../src/replication/checksum.js';
import { chainMetadata, newGenerationId, segmentKey } from '../src/replication/layout.js';
import { encodeSegmentToBuffer, type PageImage } from '../src/replication/segment.js';
import { generateDatabase, INSERT_SQL, rowFactory } from './lib/dbgen.js';
import { CLI, dbSyncEnv } from './lib/dbsync.js';
import { runMeasured, type Usage } from './lib/proc.js';
import { client, createBucket, ROOT, serverSettings, startServer, stopServer } from './lib/s3.js';
import { median, round } from './lib/stats.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '900' },
    rate: { type: 'string', default: '200' },
    runs: { type: 'string', default: '3' },
    'keep-server': { type: 'boolean', default: false },
    prepare: { type: 'boolean', default: false },
  },
});
const sizeMB = Number(values['size-mb']);
const seconds = Number(values.seconds);
const rate = Number(values.rate);
const runs = Number(values.runs);
const work = join(ROOT, 'bench', '.work', 'chain');
mkdirSync(work, { recursive: true });
const log = (m: string): void => void process.stdout.write(`[chain-restore] ${new Date().toISOString().slice(11, 19)} ${m}\n`);
const uptime = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

/** New committed frames of a WAL since `offset`: the latest image per page, and the last commit's page count. */
function readWal(
  walPath: string,
  offset: number,
  pageSize: number,
): { pages: Map<number, Buffer>; pageCount: number; end: number; frames: number } {
  const fd = openSync(walPath, 'r');
  try {
    const size = fstatSync(fd).size;
    const bytes = Buffer.alloc(Math.max(0, size - offset));
    readSync(fd, bytes, 0, bytes.length, offset);
    const frameBytes = 24 + pageSize;
    const pending = new Map<number, Buffer>();
    const pages = new Map<number, Buffer>();
    let pageCount = 0;
    let end = offset;
    let frames = 0;
    for (let at = 0; at + frameBytes <= bytes.length; at += frameBytes) {
      const pgno = bytes.readUInt32BE(at);
      const commitSize = bytes.readUInt32BE(at + 4);
      pending.set(pgno, bytes.subarray(at + 24, at + frameBytes));
      frames++;
      if (commitSize > 0) {
        for (const [p, d] of pending) pages.set(p, d);
        pending.clear();
        pageCount = commitSize;
        end = offset + at + frameBytes;
      }
    }
    return { pages, pageCount, end, frames };
  } finally {
    closeSync(fd);
  }
}

async function buildChain(
  live: string,
  base: string,
  gen: string,
  startMs: number,
): Promise<{ segments: Array<{ key: string; bytes: Buffer }>; rawBytes: number; pageImages: number }> {
  const hashes = await hashDatabaseFile(base);
  const db = new Database(live);
  db.pragma('wal_autocheckpoint = 0');
  const pageSize = Number(db.pragma('page_size', { simple: true }));
  const insert = db.prepare(INSERT_SQL);
  const rows = rowFactory(7, startMs);
  const walPath = `${live}-wal`;
  let offset = 32;
  const segments: Array<{ key: string; bytes: Buffer }> = [];
  let rawBytes = 0;
  let pageImages = 0;
  try {
    for (let s = 1; s <= seconds; s++) {
      const lastCommitMs = startMs + s * 1000;
      for (let i = 0; i < rate; i++) insert.run(...rows.next(lastCommitMs - 1000 + Math.floor((i * 1000) / rate)));
      const wal = readWal(walPath, offset, pageSize);
      offset = wal.end;
      const pre = hashes.checksum;
      hashes.resize(wal.pageCount);
      const pages: PageImage[] = [...wal.pages.entries()].sort((a, b) => a[0] - b[0]).map(([pgno, data]) => ({ pgno, data }));
      for (const p of pages) hashes.setPage(p.pgno, p.data);
      const bytes = await encodeSegmentToBuffer(
        {
          gen,
          seq: s,
          pageSize,
          pageCount: wal.pageCount,
          entries: pages.length,
          commits: rate,
          firstCommitMs: lastCommitMs - 1000,
          lastCommitMs,
          preChecksum: pre,
          postChecksum: hashes.checksum,
          walSalt1: 0,
          walSalt2: 0,
          walFirstFrame: 0,
          walLastFrame: wal.frames,
          compressed: true,
        },
        pages,
      );
      segments.push({ key: segmentKey(`chain/db.sqlite3`, { gen, seq: s, lastCommitMs }), bytes });
      rawBytes += pages.length * (pageSize + 4);
      pageImages += pages.length;
      // Keep the WAL bounded as the capture's seals do: everything read, then a restart.
      if (offset > 64 * 1024 * 1024) {
        db.pragma('wal_checkpoint(TRUNCATE)');
        offset = 32;
      }
      if (s % 60 === 0) log(`built ${s}/${seconds} segments (${(rawBytes / 1e6).toFixed(0)} MB of pages)`);
    }
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
  return { segments, rawBytes, pageImages };
}

interface Prepared {
  readonly gen: string;
  readonly sizeMB: number;
  readonly seconds: number;
  readonly rate: number;
  readonly segments: string[];
  readonly segmentBytes: number;
  readonly rawBytes: number;
  readonly pageImages: number;
  readonly liveRows: number;
}
const base = join(work, 'base.sqlite3');
const segmentDir = join(work, 'segments');
const preparedFile = join(work, 'prepared.json');

/** Generate the database, take the base, build and store the chain (files under bench/.work/chain). */
async function prepare(): Promise<void> {
  const pristine = join(work, `pristine-${sizeMB}.sqlite3`);
  if (!existsSync(pristine)) {
    log(`generating a ${sizeMB} MB database`);
    generateDatabase(pristine, sizeMB * 1e6);
  }
  const live = join(work, 'live.sqlite3');
  for (const f of [live, `${live}-wal`, `${live}-shm`, base, segmentDir]) rmSync(f, { force: true, recursive: true });
  mkdirSync(segmentDir);
  copyFileSync(pristine, live);
  {
    const db = new Database(live);
    await db.backup(base);
    db.close();
  }
  const gen = newGenerationId();
  log('building the chain');
  const built = await buildChain(live, base, gen, Date.now());
  const names: string[] = [];
  built.segments.forEach((segment, i) => {
    const file = join(segmentDir, `${String(i).padStart(6, '0')}.seg`);
    writeFileSync(file, segment.bytes);
    names.push(segment.key);
  });
  const liveRows = Number(execFileSync('sqlite3', [live, 'SELECT count(*) FROM app_event'], { encoding: 'utf8' }).trim());
  const prepared: Prepared = {
    gen,
    sizeMB,
    seconds,
    rate,
    segments: names,
    segmentBytes: built.segments.reduce((n, x) => n + x.bytes.length, 0),
    rawBytes: built.rawBytes,
    pageImages: built.pageImages,
    liveRows,
  };
  writeFileSync(preparedFile, JSON.stringify(prepared));
  log(
    `chain: ${names.length} segments, ${(prepared.segmentBytes / 1e6).toFixed(1)} MB stored, ${(built.rawBytes / 1e6).toFixed(1)} MB of pages, ` +
      `${built.pageImages} page images; live rows ${liveRows}`,
  );
}

/** Start the benchmark's S3 server, upload base (twice: with and without chain metadata) and chain, time restores. */
async function measure(): Promise<void> {
  const prepared = JSON.parse(readFileSync(preparedFile, 'utf8')) as Prepared;
  const { gen, liveRows } = prepared;
  const segmentBytes = prepared.segmentBytes;
  const built = {
    segments: prepared.segments.map((key, i) => ({ key, file: join(segmentDir, `${String(i).padStart(6, '0')}.seg`) })),
    rawBytes: prepared.rawBytes,
    pageImages: prepared.pageImages,
  };
  const settings = serverSettings();
  const info = await startServer(settings);
  const s3 = client(info);
  const bucket = `chain-${Date.now().toString(36)}`;
  try {
    await createBucket(s3, bucket);
    const baseHash = await hashDatabaseFile(base);
    const sha256 = await sha256File(base);
    const meta = snapshotMetadata({ sha256, takenAt: new Date() }, { host: 'bench', toolVersion: 'bench' }, 'none');
    for (const [key, metadata] of [
      ['plain/db.sqlite3', meta],
      ['chain/db.sqlite3', { ...meta, ...chainMetadata({ gen, seq: 0, checksum: baseHash.checksum }) }],
    ] as const) {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: readFileSync(base), Metadata: metadata }));
    }
    log('uploading segments');
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < built.segments.length) {
          const s = built.segments[next++]!;
          await s3.send(new PutObjectCommand({ Bucket: bucket, Key: s.key, Body: readFileSync(s.file) }));
        }
      }),
    );
    const results: Record<'plain' | 'chain', Array<Usage & { load: string; replayMs?: number }>> = { plain: [], chain: [] };
    for (let r = 0; r < runs; r++) {
      for (const which of r % 2 === 0 ? (['plain', 'chain'] as const) : (['chain', 'plain'] as const)) {
        const target = join(work, `restored-${which}.sqlite3`);
        rmSync(target, { force: true });
        const logFile = join(work, `download-${which}-${r}.log`);
        const load = uptime();
        const usage = await runMeasured(process.execPath, [CLI, 'download'], {
          env: dbSyncEnv(info, { bucket, key: `${which}/db.sqlite3`, dbPath: target }),
          logFile,
        });
        const replayed = readFileSync(logFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"chain replayed"'))
          .map((l) => JSON.parse(l) as { ms: number; segments: number })[0];
        if (which === 'chain' && replayed?.segments !== built.segments.length)
          throw new Error(`chain restore applied ${replayed?.segments} segments`);
        const restoredRows = Number(execFileSync('sqlite3', [target, 'SELECT count(*) FROM app_event'], { encoding: 'utf8' }).trim());
        if (which === 'chain' && restoredRows !== liveRows)
          throw new Error(`chain restore has ${restoredRows} rows, the live database ${liveRows}`);
        results[which].push({ ...usage, load, replayMs: replayed?.ms });
        log(
          `${which} run ${r + 1}: ${usage.wallS.toFixed(2)} s wall, ${usage.cpuS.toFixed(2)} s CPU, ${usage.maxRssMB.toFixed(0)} MB RSS, load ${load}${replayed ? `, replay ${replayed.ms} ms` : ''}`,
        );
      }
    }
    const plainS = median(results.plain.map((u) => u.wallS));
    const chainS = median(results.chain.map((u) => u.wallS));
    const summary = {
      at: new Date().toISOString(),
      sizeMB: prepared.sizeMB,
      baseBytes: baseHash.pageCount * baseHash.pageSize,
      seconds: prepared.seconds,
      rate: prepared.rate,
      segments: built.segments.length,
      segmentStoredMB: round(segmentBytes / 1e6, 1),
      pageImagesMB: round(built.rawBytes / 1e6, 1),
      pageImages: built.pageImages,
      liveRows,
      medianWallS: { plain: round(plainS, 2), chain: round(chainS, 2) },
      ratio: round(chainS / plainS, 2),
      medianReplayS: round(median(results.chain.map((u) => (u.replayMs ?? 0) / 1000)), 2),
      runs: results,
      loadAfter: uptime(),
    };
    writeFileSync(join(ROOT, 'bench', 'chain-restore.json'), `${JSON.stringify(summary, null, 2)}\n`);
    log(`median: KEY alone ${plainS.toFixed(2)} s, base + chain ${chainS.toFixed(2)} s, ratio ${summary.ratio}`);
  } finally {
    s3.destroy();
    if (!values['keep-server']) await stopServer(settings);
  }
}

await (values.prepare ? prepare() : measure());
