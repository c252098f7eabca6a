/**
 * Section 6, data at risk: the app inserts rows at a steady rate; after a while the sync tool is SIGKILLed
 * (the writer keeps going, as an app would until its own end). Then the database is restored from S3 and
 * the rows that were committed before the kill but are missing from the restored copy are counted.
 *
 * db-sync at its defaults (continuous replication on for a WAL database: a segment of commits shipped
 * about every second), db-sync with continuous replication off (`DB_SYNC_CONTINUOUS=off`: interval snapshots)
 * at its default interval (5 min) and at a short one, and Litestream (1 s sync interval). The kill comes at
 * a different moment in each run (`killAfterS`, cycled), since what is lost depends on where in its cycle
 * the tool was. db-sync at its default interval runs once: within the window it has not synced yet, so it
 * loses everything since its start (up to one interval of writes, by design).
 *
 * db-sync's copy is restored with `db-sync download` (the base, then its chain of segments replayed, as
 * every restore does); Litestream's with `litestream restore`.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startWriter } from '../lib/app-writer.js';
import { copyDb, countRows, type Context } from '../lib/context.js';
import * as dbsync from '../lib/dbsync.js';
import { LITESTREAM_BIN, waitForSnapshot, writeConfig } from '../lib/litestream.js';
import { run, runMeasured, startMeasured, type Measured, type Usage } from '../lib/proc.js';
import { createBucket, s3Env } from '../lib/s3.js';
import { median, round } from '../lib/stats.js';

export interface RiskRun {
  readonly killAfterS: number;
  /** Rows the app had committed when the tool was killed. */
  readonly committed: number;
  /** Of those, rows missing from what the store holds. */
  readonly lost: number;
  /** `lost` in seconds of writes at the writer's rate. */
  readonly lostSeconds: number;
  /** The sync tool under GNU time, from start to the SIGKILL. */
  readonly usage?: Usage;
  /** db-sync: the chain the restore replayed (`chain` of its "database downloaded" log line), if any. */
  readonly chain?: Record<string, unknown>;
}

export interface RiskScenario {
  readonly label: string;
  readonly interval: string;
  readonly runs: RiskRun[];
  readonly medianLost: number;
  readonly medianLostSeconds: number;
  readonly maxLost: number;
}

export interface RiskResult {
  readonly sizeMB: number;
  readonly rate: number;
  readonly scenarios: RiskScenario[];
}

/** db-sync with `env` on top of its defaults (continuous replication on unless `env` turns it off), or Litestream. */
type Tool = { kind: 'db-sync'; interval?: string; env: NodeJS.ProcessEnv } | { kind: 'litestream' };

/** Interval snapshots only: what the interval scenarios' labels say, whatever the default becomes. */
const CONTINUOUS_OFF = { DB_SYNC_CONTINUOUS: 'off' } as const;

/** The continuous scenario's label (the report looks it up). */
export const CONTINUOUS_LABEL = 'db-sync, continuous (default)';

export async function dataAtRisk(ctx: Context): Promise<RiskResult> {
  const { rate, riskSizeMB: sizeMB, shortInterval, killAfterS, killAfterDefaultS, runs } = ctx.opts;
  const bucket = `risk-${Date.now().toString(36)}`;
  await createBucket(ctx.s3, bucket);
  const cycled = Array.from({ length: runs }, (_, i) => killAfterS[i % killAfterS.length] as number);
  const plans: Array<{ label: string; interval: string; tool: Tool; kills: number[] }> = [
    {
      label: CONTINUOUS_LABEL,
      interval: '1s segments (DB_SYNC_SEGMENT_INTERVAL default)',
      tool: { kind: 'db-sync', env: {} },
      kills: cycled,
    },
    {
      label: 'db-sync, default interval',
      interval: '5m, DB_SYNC_CONTINUOUS=off',
      tool: { kind: 'db-sync', env: CONTINUOUS_OFF },
      kills: [killAfterDefaultS],
    },
    {
      label: `db-sync, ${shortInterval} interval`,
      interval: `${shortInterval}, DB_SYNC_CONTINUOUS=off`,
      tool: { kind: 'db-sync', interval: shortInterval, env: CONTINUOUS_OFF },
      kills: cycled,
    },
    { label: 'litestream', interval: '1s (sync-interval)', tool: { kind: 'litestream' }, kills: cycled },
  ];
  const scenarios: RiskScenario[] = [];
  for (const plan of plans) {
    const results: RiskRun[] = [];
    for (const [i, kill] of plan.kills.entries()) {
      const r = await oneRun(ctx, bucket, plan.tool, kill, `${plan.label.replace(/\W+/g, '-')}-r${i}`);
      results.push(r);
      ctx.log(
        `risk ${plan.label} run ${i + 1}/${plan.kills.length}: killed after ${kill} s, ${r.lost} of ${r.committed} committed rows not in S3` +
          (r.usage ? `; peak RSS ${r.usage.maxRssMB.toFixed(0)} MB` : '') +
          (r.chain ? `; chain ${JSON.stringify(r.chain)}` : ''),
      );
    }
    scenarios.push({
      label: plan.label,
      interval: plan.interval,
      runs: results,
      medianLost: median(results.map((x) => x.lost)),
      medianLostSeconds: round(median(results.map((x) => x.lostSeconds)), 2),
      maxLost: Math.max(...results.map((x) => x.lost)),
    });
  }
  return { sizeMB, rate, scenarios };
}

async function oneRun(ctx: Context, bucket: string, tool: Tool, killAfterS: number, tag: string): Promise<RiskRun> {
  const { rate } = ctx.opts;
  const pristine = ctx.database(ctx.opts.riskSizeMB);
  const dbPath = ctx.scratch(`risk-${tag}.sqlite3`);
  copyDb(pristine.path, dbPath);
  const baseline = pristine.rows; // ids 1..rows; the writer's rows come after
  const log = join(ctx.logs, `risk-${tag}.log`);
  const key = `risk/${tag}.sqlite3`;
  const lsPath = `risk/litestream-${tag}`;
  const config = join(ctx.work, `risk-${tag}.yml`);
  let proc: Measured;
  if (tool.kind === 'db-sync') {
    const target = { bucket, key, dbPath, env: tool.env, ...(tool.interval ? { interval: tool.interval } : {}) };
    await dbsync.upload(ctx.info, target, log);
    const daemon = await dbsync.startDaemon(ctx.info, target, log);
    proc = daemon.proc;
    await daemon.ready;
  } else {
    writeConfig(config, ctx.info, { dbPath, bucket, path: lsPath, endpoint: ctx.info.endpoint });
    proc = await startMeasured(LITESTREAM_BIN, ['replicate', '-config', config], { logFile: log, env: s3Env(ctx.info) });
    await waitForSnapshot(ctx.s3, bucket, lsPath, 120_000);
  }
  const writer = await startWriter(dbPath, rate, 0, join(ctx.work, `risk-${tag}.json`), log);
  await sleep(killAfterS * 1000);
  const killedAt = performance.timeOrigin + performance.now();
  proc.signal('SIGKILL');
  const usage = await proc.done;
  await sleep(1_000);
  writer.stop();
  const w = await writer.done;
  const committedIds = w.ids.filter((_, i) => (w.doneAt[i] as number) <= killedAt);
  const maxCommitted = committedIds.length ? Math.max(...committedIds) : baseline;
  const restored = ctx.scratch(`risk-${tag}-restored.sqlite3`);
  let chain: Record<string, unknown> | undefined;
  if (tool.kind === 'db-sync') {
    // What the next start of the task would restore: the newest base and the segments after it.
    await runMeasured(process.execPath, [dbsync.CLI, 'download'], {
      env: dbsync.dbSyncEnv(ctx.info, { bucket, key, dbPath: restored, env: tool.env }),
      logFile: log,
      onLine: (line) => {
        const entry = dbsync.parseLogLine(line);
        if (entry?.msg === 'database downloaded' && entry.chain && typeof entry.chain === 'object') {
          chain = entry.chain as Record<string, unknown>;
        }
      },
    });
  } else {
    await run(LITESTREAM_BIN, ['restore', '-config', config, '-o', restored, dbPath], { env: s3Env(ctx.info) });
  }
  const present = countRows(restored, baseline, maxCommitted);
  const lost = committedIds.length - present;
  return { killAfterS, committed: committedIds.length, lost, lostSeconds: lost / rate, usage, ...(chain ? { chain } : {}) };
}
