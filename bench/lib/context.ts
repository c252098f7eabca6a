/** What every benchmark section gets: options, paths, the S3 server and its client, logging, databases. */
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import Database from 'better-sqlite3';
import { generateDatabase, INSERT_SQL, openAppDb, rowFactory, TABLE } from './dbgen.js';
import type { NetworkModel, NetworkProxy } from './netmodel.js';
import { client, startServer, stopServer, type ServerInfo, type ServerSettings } from './s3.js';

export type Section = 'upload' | 'restore' | 'sync' | 'writer' | 'rollback' | 'idle' | 'risk' | 'params';
export const SECTIONS: readonly Section[] = ['upload', 'restore', 'sync', 'writer', 'rollback', 'idle', 'risk', 'params'];

export interface Options {
  readonly quick: boolean;
  readonly sections: readonly Section[];
  /** Database sizes in MB (10^6 bytes). */
  readonly sizes: readonly number[];
  readonly runs: number;
  /** Runs for sizes of 1000 MB and more. */
  readonly runsLarge: number;
  readonly writerSizeMB: number;
  /** Database sizes (MB) of the rollback-journal writer section. */
  readonly rollbackSizes: readonly number[];
  readonly writerSeconds: number;
  /** Writer inserts per second (writer impact and data at risk). */
  readonly rate: number;
  readonly idleSeconds: number;
  readonly idleSizeMB: number;
  readonly riskSizeMB: number;
  /** Run the idle-cost window at the same time as the data-at-risk section (saves its duration). */
  readonly overlapIdle: boolean;
  /** db-sync's interval in the writer-impact section and the short interval of the data-at-risk section. */
  readonly shortInterval: string;
  /** Seconds after the writer starts at which the data-at-risk section SIGKILLs the tool (one per run, cycled). */
  readonly killAfterS: readonly number[];
  /** Same, for db-sync at its default interval (5 min): later, so the kill is not right after its start. */
  readonly killAfterDefaultS: number;
  readonly keepServer: boolean;
  readonly keepWork: boolean;
  /** Reuse pristine databases an earlier `--keep-work` run left in the work dir (same seed, same rows). */
  readonly reuseDbs?: boolean;
  /** The network model every tool talks to the server through (`--network`); none: plain loopback. */
  readonly network?: NetworkModel | undefined;
  /** `--network loopback`: no model; results go to results-loopback.json, the loopback side of the side-by-side tables. */
  readonly companion: boolean;
  /** Object sizes (MB) of the SDK-level parameter section (`params`). */
  readonly paramSizes: readonly number[];
}

export interface Context {
  readonly opts: Options;
  readonly work: string;
  readonly logs: string;
  readonly server: ServerSettings;
  /**
   * What the tools under test talk to: the server, through the network model when there is one. The
   * benchmark's own bookkeeping (creating buckets, polling for Litestream's snapshot) uses {@link s3},
   * which talks to the server directly, so the model only slows what is measured.
   */
  info: ServerInfo;
  /** The server itself (no network model). */
  direct: ServerInfo;
  s3: S3Client;
  log(message: string): void;
  /** Path of the pristine generated database of `sizeMB` (generated once per benchmark run). */
  database(sizeMB: number): { path: string; rows: number; sizeBytes: number };
  /** Stop and start the S3 server: RGW frees deleted data only hours later, so this is how memory is returned. */
  freshServer(): Promise<void>;
  /** A fresh scratch path under the work dir (removed first, with SQLite sidecars). */
  scratch(name: string): string;
  /** What the upload section left in S3 for the restore section, by size. */
  readonly uploaded: Map<number, UploadedArtifacts>;
}

/** Objects the upload section left in S3 for one size: the restore section downloads these. */
export interface UploadedArtifacts {
  readonly bucket: string;
  /** db-sync's key (the object both db-sync `download` and `aws s3 cp` fetch). */
  readonly dbSyncKey: string;
  /** Litestream config naming the replica, and the database path it is keyed by. */
  readonly litestreamConfig: string;
  readonly litestreamDbPath: string;
  /** Rows the database held when uploaded (to check the restored copies). */
  readonly rows: number;
}

/** `info` as the tools see it: through the network model's proxy when there is one. */
function throughModel(info: ServerInfo, network: NetworkProxy | undefined): ServerInfo {
  return network ? { ...info, endpoint: network.endpoint } : info;
}

export function createContext(opts: Options, work: string, server: ServerSettings, info: ServerInfo, network?: NetworkProxy): Context {
  const logs = join(work, 'logs');
  mkdirSync(logs, { recursive: true });
  const dbs = new Map<number, { path: string; rows: number; sizeBytes: number }>();
  const started = performance.now();
  const ctx: Context = {
    opts,
    work,
    logs,
    server,
    info: throughModel(info, network),
    direct: info,
    s3: client(info),
    log(message) {
      const t = ((performance.now() - started) / 1000).toFixed(0).padStart(5);
      process.stderr.write(`[bench ${t}s] ${message}\n`);
    },
    database(sizeMB) {
      const known = dbs.get(sizeMB);
      if (known) return known;
      const path = join(work, `pristine-${sizeMB}mb.sqlite3`);
      if (opts.reuseDbs && existsSync(path)) {
        const db = new Database(path, { readonly: true, fileMustExist: true });
        const rows = Number(db.prepare(`SELECT count(*) FROM "${TABLE}"`).pluck().get());
        db.close();
        const reused = { path, rows, sizeBytes: statSync(path).size };
        ctx.log(`reusing ${path}: ${rows} rows`);
        dbs.set(sizeMB, reused);
        return reused;
      }
      removeDb(path);
      const t = performance.now();
      const made = generateDatabase(path, sizeMB * 1e6);
      ctx.log(
        `generated ${path}: ${made.rows} rows, ${(made.sizeBytes / 1e6).toFixed(1)} MB in ${((performance.now() - t) / 1000).toFixed(1)} s`,
      );
      const entry = { path, ...made };
      dbs.set(sizeMB, entry);
      return entry;
    },
    async freshServer() {
      ctx.s3.destroy();
      await stopServer(server);
      // Same port after a restart, so the model's proxy keeps pointing at it.
      ctx.direct = await startServer(server);
      ctx.info = throughModel(ctx.direct, network);
      ctx.s3 = client(ctx.direct);
    },
    scratch(name) {
      const path = join(work, name);
      removeDb(path);
      return path;
    },
    uploaded: new Map(),
  };
  return ctx;
}

/** Remove a database file and its -wal/-shm/-journal and Litestream's `.NAME-litestream` directory. */
export function removeDb(path: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal', '.db-sync.json', '.backup']) rmSync(`${path}${suffix}`, { force: true });
  const slash = path.lastIndexOf('/');
  rmSync(`${path.slice(0, slash + 1)}.${path.slice(slash + 1)}-litestream`, { recursive: true, force: true });
}

/**
 * Copy a database (main file only: the pristine ones are checkpointed, with an empty WAL) and fsync the
 * copy, so its writeback does not compete with the tool measured next.
 */
export function copyDb(from: string, to: string): void {
  removeDb(to);
  copyFileSync(from, to);
  const fd = openSync(to, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A database the "app" has open: a connection holding uncheckpointed rows in the WAL, as a live app's has. */
export interface LiveDb {
  readonly path: string;
  /** Rows in the database, the WAL's included. */
  readonly rows: number;
  readonly walBytes: number;
  /** Insert one row through the app's connection. */
  insert(): void;
  /** Close the app's connection (SQLite then checkpoints the WAL into the file). */
  close(): void;
}

/**
 * Copy the pristine database of `sizeMB` to `name` and open it as the app would, then commit rows one
 * INSERT at a time until the WAL holds about `walBytes` (4 MB: SQLite's automatic checkpoint runs at 1000
 * pages, so a live app's WAL holds up to that). Automatic checkpoints are off on this connection, so the
 * rows stay in the WAL until {@link LiveDb.close}.
 */
export function liveDb(ctx: Context, sizeMB: number, name: string, targetWalBytes = 4_000_000): LiveDb {
  const pristine = ctx.database(sizeMB);
  const path = ctx.scratch(name);
  copyDb(pristine.path, path);
  const db = openAppDb(path);
  db.pragma('wal_autocheckpoint = 0');
  const insert = db.prepare(INSERT_SQL);
  const rows = rowFactory(99);
  let walRows = 0;
  while (targetWalBytes > 0 && fileSize(`${path}-wal`) < targetWalBytes) {
    insert.run(...rows.next());
    walRows += 1;
  }
  const walBytes = fileSize(`${path}-wal`);
  return {
    path,
    rows: pristine.rows + walRows,
    walBytes,
    insert: () => void insert.run(...rows.next(Date.now())),
    close: () => db.close(),
  };
}

function fileSize(path: string): number {
  return existsSync(path) ? statSync(path).size : 0;
}

/** Rows of the benchmark table in `path` with `lo < id <= hi`, or all rows. */
export function countRows(path: string, lo = 0, hi = Number.MAX_SAFE_INTEGER): number {
  if (!existsSync(path)) return 0;
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return (db.prepare(`SELECT count(*) AS n FROM "${TABLE}" WHERE id > ? AND id <= ?`).get(lo, hi) as { n: number }).n;
  } finally {
    db.close();
  }
}

export function maxId(path: string): number {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return (db.prepare(`SELECT coalesce(max(id), 0) AS n FROM "${TABLE}"`).get() as { n: number }).n;
  } finally {
    db.close();
  }
}

/** The run order of `items` for run `r`: rotated, so no tool always goes first (warm caches, server state). */
export function rotate<T>(items: readonly T[], r: number): T[] {
  const k = r % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
