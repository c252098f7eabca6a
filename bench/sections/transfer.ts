/**
 * Sections 1-3 for one database size: snapshot + upload, then restore, each tool measured under GNU time
 * (wall time, CPU time, peak RSS), several runs in rotating order, medians.
 *
 * Upload: `db-sync upload` | `sqlite3 db ".backup tmp"` + `aws s3 cp tmp` (the script users run today) |
 * Litestream's first replication (from `litestream replicate` until its generation's snapshot is in S3).
 * Restore: `db-sync download` | `aws s3 cp` of the same object | `litestream restore` of that replica.
 * Every tool gets its own fresh copy of the database, open by the "app" with a few MB in its WAL.
 */
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { countRows, liveDb, rotate, type Context } from '../lib/context.js';
import * as dbsync from '../lib/dbsync.js';
import { LITESTREAM_BIN, waitForSnapshot, writeConfig } from '../lib/litestream.js';
import { runMeasured, startMeasured, sumUsage, type Usage } from '../lib/proc.js';
import { createBucket, s3Env } from '../lib/s3.js';
import { median, ratio, round } from '../lib/stats.js';

export const UPLOAD_TOOLS = ['db-sync', 'sqlite3+aws', 'litestream'] as const;
export const RESTORE_TOOLS = ['db-sync', 'aws', 'litestream'] as const;
export type UploadTool = (typeof UPLOAD_TOOLS)[number];
export type RestoreTool = (typeof RESTORE_TOOLS)[number];

export interface UsageSummary {
  readonly wallS: number;
  readonly cpuS: number;
  readonly maxRssMB: number;
  /** Database megabytes (10^6 bytes) per wall second. */
  readonly mbPerS: number;
  /** Median seconds of each step, when the tool's steps are known. */
  readonly parts?: Record<string, number>;
}

export interface ToolResult {
  readonly runs: Usage[];
  readonly median: UsageSummary;
}

export interface TransferResult<T extends string> {
  readonly sizeMB: number;
  readonly sizeBytes: number;
  readonly rows: number;
  /** Bytes in the app's WAL when the tool started. */
  readonly walBytes: number;
  readonly tools: Record<T, ToolResult>;
  /** db-sync's median wall time over each peer's (< 1: db-sync is faster). */
  readonly ratios: Record<string, number>;
  /** Row counts of the restored copies (restore only), checked against the uploaded database. */
  readonly check?: Record<string, number>;
}

/**
 * The steady-state sync's change patterns (bench/sections/sync.ts), each with the field of {@link SizeResult}
 * that holds its figures (`sync` is the older, scattered one).
 */
export const SYNC_PATTERNS = [
  { pattern: 'scattered', field: 'sync' },
  { pattern: 'append', field: 'syncAppend' },
] as const;
export type SyncPattern = (typeof SYNC_PATTERNS)[number]['pattern'];

export type SteadySyncResult = TransferResult<'db-sync' | 'sqlite3+aws'> & {
  readonly dbSyncSentMB: number;
  readonly dbSyncCopiedMB: number;
};

export interface SizeResult {
  upload?: TransferResult<UploadTool>;
  /** Steady-state sync (bench/sections/sync.ts), new rows scattered over the user index. */
  sync?: SteadySyncResult;
  /** Steady-state sync, new rows appended at the end of every index. */
  syncAppend?: SteadySyncResult;
  restore?: TransferResult<RestoreTool>;
}

const AWS = '/usr/bin/aws';

export function summarize(runs: readonly Usage[], sizeBytes: number): UsageSummary {
  const wallS = median(runs.map((u) => u.wallS));
  const names = [...new Set(runs.flatMap((u) => Object.keys(u.parts ?? {})))];
  const parts = Object.fromEntries(names.map((n) => [n, round(median(runs.map((u) => u.parts?.[n] ?? Number.NaN)), 3)]));
  return {
    wallS: round(wallS, 3),
    cpuS: round(median(runs.map((u) => u.cpuS)), 3),
    maxRssMB: round(median(runs.map((u) => u.maxRssMB)), 1),
    mbPerS: round(sizeBytes / 1e6 / wallS, 1),
    ...(names.length ? { parts } : {}),
  };
}

export function runsFor(ctx: Context, sizeMB: number): number {
  return sizeMB >= 1000 ? ctx.opts.runsLarge : ctx.opts.runs;
}

/** Upload section for one size. Leaves its objects in `ctx.uploaded` for the restore section. */
export async function uploadSize(ctx: Context, sizeMB: number): Promise<TransferResult<UploadTool>> {
  const runs = runsFor(ctx, sizeMB);
  const bucket = `up-${sizeMB}mb-${Date.now().toString(36)}`;
  await createBucket(ctx.s3, bucket);
  const results: Record<UploadTool, Usage[]> = { 'db-sync': [], 'sqlite3+aws': [], litestream: [] };
  const dbSyncKey = `db-sync/${sizeMB}mb.sqlite3`;
  let lastLitestream: { config: string; dbPath: string } | undefined;
  let sizeBytes = 0;
  let rows = 0;
  let walBytes = 0;
  for (let r = 0; r < runs; r += 1) {
    for (const tool of rotate(UPLOAD_TOOLS, r)) {
      const live = liveDb(ctx, sizeMB, `up-${tool.replace(/\W/g, '')}-${sizeMB}mb.sqlite3`);
      walBytes = live.walBytes;
      rows = live.rows;
      sizeBytes = ctx.database(sizeMB).sizeBytes + live.walBytes;
      const log = join(ctx.logs, `upload-${sizeMB}mb-${tool.replace(/\W/g, '')}.log`);
      try {
        let usage: Usage;
        if (tool === 'db-sync') {
          usage = await dbsync.upload(ctx.info, { bucket, key: dbSyncKey, dbPath: live.path }, log);
        } else if (tool === 'sqlite3+aws') {
          usage = await scriptUpload(ctx, live.path, bucket, `script/${sizeMB}mb.sqlite3`, log);
        } else {
          const path = `litestream/${sizeMB}mb-r${r}`;
          const config = writeConfig(join(ctx.work, `litestream-${sizeMB}mb-r${r}.yml`), ctx.info, {
            dbPath: live.path,
            bucket,
            path,
            endpoint: ctx.info.endpoint,
          });
          usage = await litestreamFirstReplication(ctx, config, bucket, path, log, sizeMB);
          lastLitestream = { config, dbPath: live.path };
        }
        results[tool].push(usage);
        ctx.log(`upload ${sizeMB} MB run ${r + 1}/${runs} ${tool}: ${usage.wallS.toFixed(2)} s, ${usage.maxRssMB.toFixed(0)} MB RSS`);
      } finally {
        live.close();
      }
    }
  }
  if (lastLitestream) {
    ctx.uploaded.set(sizeMB, {
      bucket,
      dbSyncKey,
      litestreamConfig: lastLitestream.config,
      litestreamDbPath: lastLitestream.dbPath,
      rows,
    });
  }
  const tools = {
    'db-sync': { runs: results['db-sync'], median: summarize(results['db-sync'], sizeBytes) },
    'sqlite3+aws': { runs: results['sqlite3+aws'], median: summarize(results['sqlite3+aws'], sizeBytes) },
    litestream: { runs: results.litestream, median: summarize(results.litestream, sizeBytes) },
  };
  return {
    sizeMB,
    sizeBytes,
    rows,
    walBytes,
    tools,
    ratios: {
      'vs sqlite3+aws': round(ratio(tools['db-sync'].median.wallS, tools['sqlite3+aws'].median.wallS), 2),
      'vs litestream': round(ratio(tools['db-sync'].median.wallS, tools.litestream.median.wallS), 2),
    },
  };
}

/** `sqlite3 db ".backup tmp"` then `aws s3 cp tmp s3://…`, as the shell script does; the tmp file is removed. */
export async function scriptUpload(ctx: Context, dbPath: string, bucket: string, key: string, log: string): Promise<Usage> {
  const tmp = `${dbPath}.backup-tmp`;
  rmSync(tmp, { force: true });
  try {
    const backup = await runMeasured('sqlite3', [dbPath, `.backup ${tmp}`], { logFile: log });
    const copy = await runMeasured(
      AWS,
      ['s3', 'cp', tmp, `s3://${bucket}/${key}`, '--endpoint-url', ctx.info.endpoint, '--only-show-errors'],
      {
        env: s3Env(ctx.info),
        logFile: log,
      },
    );
    return sumUsage({ ...backup, parts: { backupS: backup.wallS } }, { ...copy, parts: { copyS: copy.wallS } });
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Start `litestream replicate`, wait until its first snapshot is listed in the bucket, stop it (SIGTERM).
 * Wall time: from the start until the snapshot was seen; CPU and peak RSS: the whole process.
 */
async function litestreamFirstReplication(
  ctx: Context,
  config: string,
  bucket: string,
  path: string,
  log: string,
  sizeMB: number,
): Promise<Usage> {
  const proc = await startMeasured(LITESTREAM_BIN, ['replicate', '-config', config], { logFile: log, env: s3Env(ctx.info) });
  try {
    const seenAt = await waitForSnapshot(ctx.s3, bucket, path, 120_000 + sizeMB * 300, sizeMB >= 200 ? 100 : 25);
    proc.signal('SIGTERM');
    const usage = await proc.done;
    return { ...usage, wallS: (seenAt - proc.startedAt) / 1000 };
  } catch (error) {
    proc.signal('SIGKILL');
    await proc.done.catch(() => undefined);
    throw error;
  }
}

/** Restore section for one size, from what {@link uploadSize} left (it runs first when not done already). */
export async function restoreSize(ctx: Context, sizeMB: number): Promise<TransferResult<RestoreTool>> {
  let src = ctx.uploaded.get(sizeMB);
  if (!src) {
    ctx.log(`restore ${sizeMB} MB: nothing uploaded yet; running the upload section first`);
    await uploadSize(ctx, sizeMB);
    src = ctx.uploaded.get(sizeMB);
    if (!src) throw new Error(`restore ${sizeMB} MB: the upload section left nothing to restore`);
  }
  const { bucket, dbSyncKey, litestreamConfig, litestreamDbPath } = src;
  const runs = runsFor(ctx, sizeMB);
  const results: Record<RestoreTool, Usage[]> = { 'db-sync': [], aws: [], litestream: [] };
  const check: Record<string, number> = {};
  let sizeBytes = 0;
  for (let r = 0; r < runs; r += 1) {
    for (const tool of rotate(RESTORE_TOOLS, r)) {
      const out = ctx.scratch(`restored-${tool.replace(/\W/g, '')}-${sizeMB}mb.sqlite3`);
      const log = join(ctx.logs, `restore-${sizeMB}mb-${tool.replace(/\W/g, '')}.log`);
      let usage: Usage;
      if (tool === 'db-sync') {
        usage = await dbsync.download(ctx.info, { bucket, key: dbSyncKey, dbPath: out }, log);
      } else if (tool === 'aws') {
        usage = await runMeasured(
          AWS,
          ['s3', 'cp', `s3://${bucket}/${dbSyncKey}`, out, '--endpoint-url', ctx.info.endpoint, '--only-show-errors'],
          {
            env: s3Env(ctx.info),
            logFile: log,
          },
        );
      } else {
        usage = await runMeasured(LITESTREAM_BIN, ['restore', '-config', litestreamConfig, '-o', out, litestreamDbPath], {
          env: s3Env(ctx.info),
          logFile: log,
        });
      }
      results[tool].push(usage);
      if (tool === 'aws') sizeBytes = statSync(out).size;
      if (r === 0) check[tool] = countRows(out);
      ctx.log(`restore ${sizeMB} MB run ${r + 1}/${runs} ${tool}: ${usage.wallS.toFixed(2)} s, ${usage.maxRssMB.toFixed(0)} MB RSS`);
      ctx.scratch(out.slice(ctx.work.length + 1));
    }
  }
  const tools = {
    'db-sync': { runs: results['db-sync'], median: summarize(results['db-sync'], sizeBytes) },
    aws: { runs: results.aws, median: summarize(results.aws, sizeBytes) },
    litestream: { runs: results.litestream, median: summarize(results.litestream, sizeBytes) },
  };
  return {
    sizeMB,
    sizeBytes,
    rows: src.rows,
    walBytes: 0,
    tools,
    ratios: {
      'vs aws': round(ratio(tools['db-sync'].median.wallS, tools.aws.median.wallS), 2),
      'vs litestream': round(ratio(tools['db-sync'].median.wallS, tools.litestream.median.wallS), 2),
    },
    check,
  };
}
