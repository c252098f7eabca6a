/**
 * Build a real base + chain from a real WAL-mode database, as the capture side would ship it, with the
 * replication format's own encoder: each segment's pages are the pages that differ between two backup-API
 * copies of the live database (before and after some transactions), so pages 2..N of base + chain equal a
 * backup of the live database by construction, and the checksums are computed independently of replay.ts.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { sha256File } from '../../src/core/hash.js';
import { snapshotMetadata } from '../../src/core/metadata.js';
import type { ReplicaStore } from '../../src/replica/store.js';
import { hashDatabaseFile, headerPageSize } from '../../src/replication/checksum.js';
import { chainMetadata, newGenerationId, segmentKey, type ChainPosition, type SegmentName } from '../../src/replication/layout.js';
import { encodeSegmentToBuffer, type PageImage, type SegmentHeader } from '../../src/replication/segment.js';

export interface BuiltSegment {
  readonly name: SegmentName;
  readonly key: string;
  readonly bytes: Buffer;
  /** A backup-API copy of the live database right after this segment's commits. */
  readonly statePath: string;
}

/** Copy `live` with the backup API (what db-sync's snapshots and bases use). */
export async function backupCopy(live: string, destination: string): Promise<void> {
  const db = new Database(live, { fileMustExist: true });
  try {
    await db.backup(destination);
  } finally {
    db.close();
  }
}

export class ChainBuilder {
  readonly gen: string;
  private seq: number;
  private previous: string;
  private count = 0;

  private constructor(
    readonly key: string,
    private readonly live: string,
    private readonly dir: string,
    readonly base: { readonly path: string; readonly position: ChainPosition },
  ) {
    this.gen = base.position.gen;
    this.seq = base.position.seq;
    this.previous = base.path;
  }

  /** Take a base of `live` (a backup-API copy) at seq `startSeq` of a new generation. */
  static async start(key: string, live: string, dir: string, options: { gen?: string; startSeq?: number } = {}): Promise<ChainBuilder> {
    const gen = options.gen ?? newGenerationId();
    const path = join(dir, `base-${gen}-${options.startSeq ?? 0}.sqlite3`);
    await backupCopy(live, path);
    const checksum = (await hashDatabaseFile(path)).checksum;
    return new ChainBuilder(key, live, dir, { path, position: { gen, seq: options.startSeq ?? 0, checksum } });
  }

  /** Upload the base as a new version of KEY with its chain metadata. */
  async uploadBase(store: ReplicaStore): Promise<void> {
    const sha256 = await sha256File(this.base.path);
    await store.put(this.key, this.base.path, {
      metadata: {
        ...snapshotMetadata({ sha256, takenAt: new Date() }, { host: 'test', toolVersion: 'test' }, 'none'),
        ...chainMetadata(this.base.position),
      },
    });
  }

  /**
   * Run `change` on the live database, then build the next segment from the pages it changed.
   * `lastCommitMs` defaults to now; `compressed` alternates unless given.
   */
  async next(
    change: (db: Database.Database) => void,
    options: { lastCommitMs?: number; compressed?: boolean; commits?: number } = {},
  ): Promise<BuiltSegment> {
    const db = new Database(this.live, { fileMustExist: true });
    try {
      change(db);
    } finally {
      db.close();
    }
    const seq = ++this.seq;
    const statePath = join(this.dir, `state-${this.gen}-${seq}.sqlite3`);
    await backupCopy(this.live, statePath);
    const before = readFileSync(this.previous);
    const after = readFileSync(statePath);
    const pageSize = headerPageSize(after)!;
    const pageCount = after.length / pageSize;
    const pages: PageImage[] = [];
    for (let p = 1; p <= pageCount; p++) {
      const data = after.subarray((p - 1) * pageSize, p * pageSize);
      const old = before.subarray((p - 1) * pageSize, p * pageSize);
      if (old.length !== pageSize || !old.equals(data)) pages.push({ pgno: p, data });
    }
    const lastCommitMs = options.lastCommitMs ?? Date.now();
    const header: SegmentHeader = {
      gen: this.gen,
      seq,
      pageSize,
      pageCount,
      entries: pages.length,
      commits: options.commits ?? 1,
      firstCommitMs: lastCommitMs,
      lastCommitMs,
      preChecksum: (await hashDatabaseFile(this.previous)).checksum,
      postChecksum: (await hashDatabaseFile(statePath)).checksum,
      walSalt1: 1,
      walSalt2: 2,
      walFirstFrame: 1,
      walLastFrame: 1,
      compressed: options.compressed ?? this.count++ % 2 === 1,
    };
    const bytes = await encodeSegmentToBuffer(header, pages);
    this.previous = statePath;
    const name = { gen: this.gen, seq, lastCommitMs };
    return { name, key: segmentKey(this.key, name), bytes, statePath };
  }
}

/** Upload a segment (or any bytes) at `key` through the store. */
export async function putBytes(store: ReplicaStore, key: string, bytes: Buffer, dir: string): Promise<void> {
  const file = join(dir, `upload-${Math.random().toString(16).slice(2)}.bin`);
  writeFileSync(file, bytes);
  await store.put(key, file, { metadata: {} });
}

/** Pages 2..N of two database files are byte-identical (page 1's header differs between backup copies). */
export function samePagesFrom2(a: string, b: string): boolean {
  const x = readFileSync(a);
  const y = readFileSync(b);
  const pageSize = headerPageSize(x)!;
  return x.length === y.length && x.subarray(pageSize).equals(y.subarray(pageSize));
}

/** Schema and every row, as the independent sqlite3 CLI dumps them: a differential fingerprint of content. */
export function dumpOf(path: string): string {
  return execFileSync('sqlite3', [path, '.dump'], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
}
