/**
 * Section 5, request cost: S3 requests by type, scaled to an hour, for each tool behind its own counting
 * proxy (bench/lib/proxy.ts), over the same window, at three loads:
 *   - idle (the app's connection open, no writes);
 *   - one write a minute (the first 30 s into the window);
 *   - a steady writer at `--rate` inserts/s (bench/writer.ts, a separate process) for the whole window.
 * Tools: db-sync at its defaults (continuous replication on for a WAL database: a segment object per
 * second of commits, a base now and then), Litestream at its defaults (1 s sync interval), db-sync with
 * continuous replication off (`DB_SYNC_CONTINUOUS=off`: interval snapshots, idle and 1 write/min only),
 * and db-sync with its single-writer lease on (in an unversioned lease bucket, as RGW needs; on AWS S3 the
 * lease probe passes in the versioned bucket and the lease is on by default), idle.
 * The window starts once every tool has finished starting (db-sync: ready, already in sync; Litestream:
 * first snapshot plus a few seconds; where the app will write, one commit before the window, so db-sync's
 * first base, deferred to the first change, is start-up too), so start-up requests are not counted;
 * shutdown comes after the window.
 * Each process runs under GNU time, so its peak RSS and CPU time (start to exit) are reported too.
 * Runs in the background so the data-at-risk section can share its time (`start`, then `finish`).
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { startWriter, type AppWriter } from '../lib/app-writer.js';
import { liveDb, type Context, type LiveDb } from '../lib/context.js';
import * as dbsync from '../lib/dbsync.js';
import { LITESTREAM_BIN, waitForSnapshot, writeConfig } from '../lib/litestream.js';
import { startMeasured, stopMeasured, type Measured, type Usage } from '../lib/proc.js';
import { byClass, startProxy, type CountingProxy, type Operation, type RequestClass } from '../lib/proxy.js';
import { createBucket, s3Env } from '../lib/s3.js';
import { round } from '../lib/stats.js';

/** What runs: db-sync's modes, or Litestream. */
export type IdleTool = 'db-sync (continuous)' | 'db-sync (interval)' | 'db-sync + lease' | 'litestream';
/** The app's load during the window. */
export type IdleLoad = 'idle' | '1 write/min' | 'steady';

export interface IdleScenarioResult {
  /** Absent in results from before the steady-writer scenarios (the label said it). */
  readonly tool?: IdleTool;
  readonly load?: IdleLoad;
  /** Requests in the window, by operation. */
  readonly counts: Partial<Record<Operation, number>>;
  /** The same scaled to one hour, by billing class. */
  readonly perHour: Record<RequestClass, number>;
  readonly perHourByOp: Partial<Record<Operation, number>>;
  /** Of `perHourByOp`, the requests on db-sync's change objects (`KEY.db-sync/…`): segments, not bases. */
  readonly segmentPerHourByOp?: Partial<Record<Operation, number>>;
  /** Rows the app committed in the window. */
  readonly writes: number;
  /** The process under GNU time, from start to exit (start-up and shutdown included). */
  readonly usage?: Usage;
  /** Something that makes the figures read differently than the label says (e.g. no segment shipped). */
  readonly note?: string;
  readonly error?: string;
}

export interface IdleResult {
  readonly windowS: number;
  readonly sizeMB: number;
  readonly dbSyncInterval: string;
  readonly leaseTtl: string;
  /** Inserts per second of the steady-writer scenarios (absent in older results). */
  readonly rate?: number;
  /** By scenario label (`<tool>, <load>`). */
  readonly scenarios: Partial<Record<string, IdleScenarioResult>>;
}

interface Plan {
  readonly tool: IdleTool;
  readonly load: IdleLoad;
}

/**
 * Every scenario, in start order. db-sync with continuous replication off runs only where it is cheap
 * (idle, 1 write/min): under a steady writer it would snapshot every interval, which the writer section
 * already measures.
 */
const PLANS: readonly Plan[] = [
  { tool: 'db-sync (continuous)', load: 'idle' },
  { tool: 'db-sync (continuous)', load: '1 write/min' },
  { tool: 'db-sync (continuous)', load: 'steady' },
  { tool: 'litestream', load: 'idle' },
  { tool: 'litestream', load: '1 write/min' },
  { tool: 'litestream', load: 'steady' },
  { tool: 'db-sync + lease', load: 'idle' },
  { tool: 'db-sync (interval)', load: 'idle' },
  { tool: 'db-sync (interval)', load: '1 write/min' },
];

/** A scenario's label in results and tables, e.g. `db-sync (continuous), 200 writes/s`. */
export function scenarioLabel(tool: IdleTool, load: IdleLoad, rate: number): string {
  return `${tool}, ${load === 'steady' ? `${rate} writes/s` : load}`;
}

/** db-sync's settings per mode: the continuous one is the defaults, nothing set. */
function dbSyncSettings(tool: IdleTool, leaseBucket: string): NodeJS.ProcessEnv {
  switch (tool) {
    case 'db-sync (interval)':
      return { DB_SYNC_CONTINUOUS: 'off' };
    case 'db-sync + lease':
      return { DB_SYNC_LEASE: 'required', DB_SYNC_LEASE_BUCKET: leaseBucket, DB_SYNC_LEASE_TTL: LEASE_TTL };
    default:
      return {};
  }
}

interface Running {
  readonly plan: Plan;
  readonly label: string;
  readonly proxy: CountingProxy;
  readonly live: LiveDb;
  readonly proc: Measured;
  readonly writerOut: string;
  readonly writerLog: string;
  writer?: AppWriter;
  writeCount: number;
}

export interface IdleRun {
  /** Wait until the window is at least `idleSeconds` long, stop everything, count. */
  finish(): Promise<IdleResult>;
}

const LEASE_TTL = '30s';

export async function startIdle(ctx: Context): Promise<IdleRun> {
  const sizeMB = ctx.opts.idleSizeMB;
  const rate = ctx.opts.rate;
  const bucket = `idle-${Date.now().toString(36)}`;
  const leaseBucket = `${bucket}-locks`;
  await createBucket(ctx.s3, bucket);
  await ctx.s3.send(new CreateBucketCommand({ Bucket: leaseBucket })); // unversioned: RGW's conditional writes work only there
  const running: Running[] = [];
  const failed: Partial<Record<string, IdleScenarioResult>> = {};
  for (const plan of PLANS) {
    const label = scenarioLabel(plan.tool, plan.load, rate);
    const tag = label.replace(/\W+/g, '-');
    const log = join(ctx.logs, `idle-${tag}.log`);
    const live = liveDb(ctx, sizeMB, `idle-${tag}.sqlite3`, 0);
    const proxy = await startProxy(ctx.info.endpoint);
    try {
      let proc: Measured;
      if (plan.tool !== 'litestream') {
        const target = { bucket, key: `${tag}.sqlite3`, dbPath: live.path, env: dbSyncSettings(plan.tool, leaseBucket) };
        await dbsync.upload(ctx.info, target, log); // already in sync at start: no upload at start
        const daemon = await dbsync.startDaemon(ctx.info, { ...target, endpoint: proxy.endpoint }, log);
        proc = daemon.proc;
        try {
          await daemon.ready;
        } catch (error) {
          await stopMeasured(proc, 5_000);
          throw error;
        }
      } else {
        const path = `litestream/${tag}`;
        const config = writeConfig(join(ctx.work, `idle-${tag}.yml`), ctx.info, {
          dbPath: live.path,
          bucket,
          path,
          endpoint: proxy.endpoint,
        });
        proc = await startMeasured(LITESTREAM_BIN, ['replicate', '-config', config], { logFile: log, env: s3Env(ctx.info) });
        await waitForSnapshot(ctx.s3, bucket, path, 120_000);
      }
      running.push({
        plan,
        label,
        proxy,
        live,
        proc,
        writerOut: join(ctx.work, `idle-${tag}-writer.json`),
        writerLog: log,
        writeCount: 0,
      });
    } catch (error) {
      ctx.log(`idle ${label}: did not start: ${(error as Error).message}`);
      failed[label] = {
        tool: plan.tool,
        load: plan.load,
        counts: {},
        perHour: byClass({}),
        perHourByOp: {},
        writes: 0,
        error: (error as Error).message,
      };
      live.close();
      await proxy.close();
    }
  }
  // One commit before the window wherever the app will write, so what a tool does once, on the first
  // change after it started, is start-up and not counted: db-sync uploads its generation's first base only
  // with the first commit (a start without one costs no upload); in a 10-minute window scaled to an hour
  // that one base would count six times. Then time for it to land, and for Litestream's first WAL segment
  // after its snapshot.
  for (const r of running) if (r.plan.load !== 'idle') r.live.insert();
  await sleep(5_000);
  const windowStart = Date.now();
  ctx.log(`idle window started (${ctx.opts.idleSeconds} s or longer, ${running.length} tools)`);
  for (const r of running) {
    if (r.plan.load !== 'steady') continue;
    try {
      r.writer = await startWriter(r.live.path, rate, 0, r.writerOut, r.writerLog);
    } catch (error) {
      ctx.log(`idle ${r.label}: the writer did not start: ${(error as Error).message}`);
    }
  }
  const write = (): void => {
    for (const r of running) {
      if (r.plan.load !== '1 write/min') continue;
      r.live.insert();
      r.writeCount += 1;
    }
  };
  let writer: NodeJS.Timeout | undefined;
  const first = setTimeout(() => {
    write();
    writer = setInterval(write, 60_000);
  }, 30_000);

  return {
    async finish() {
      const remaining = windowStart + ctx.opts.idleSeconds * 1000 - Date.now();
      if (remaining > 0) await sleep(remaining);
      clearTimeout(first);
      clearInterval(writer);
      const windowEnd = Date.now();
      // The steady writers stop at the window's end; the rows they committed inside it are the writes.
      for (const r of running) {
        if (!r.writer) continue;
        r.writer.stop();
        const w = await r.writer.done.catch((error: unknown) => {
          ctx.log(`idle ${r.label}: writer: ${(error as Error).message}`);
          return undefined;
        });
        r.writeCount = w ? w.doneAt.filter((t) => t < windowEnd).length : 0;
      }
      const windowS = (windowEnd - windowStart) / 1000;
      const scale = 3600 / windowS;
      const perHourOf = (counts: Partial<Record<Operation, number>>): Partial<Record<Operation, number>> =>
        Object.fromEntries(Object.entries(counts).map(([op, n]) => [op, round((n ?? 0) * scale, 0)]));
      const scenarios: Partial<Record<string, IdleScenarioResult>> = { ...failed };
      for (const r of running) {
        const counts = r.proxy.counts(windowStart, windowEnd);
        const segments = r.proxy.segmentCounts(windowStart, windowEnd);
        const usage = await stopMeasured(r.proc);
        await r.proxy.close();
        r.live.close();
        const perHour = byClass(counts);
        for (const k of Object.keys(perHour) as RequestClass[]) perHour[k] = round(perHour[k] * scale, 0);
        const shipped = Object.values(segments).reduce((a, b) => a + (b ?? 0), 0);
        // On a build without continuous replication (or a database it does not apply to) the label would
        // be wrong: say so rather than report interval snapshots as continuous replication.
        const note =
          r.plan.tool === 'db-sync (continuous)' && r.writeCount > 0 && shipped === 0
            ? 'no segment was shipped: continuous replication did not run (interval snapshots measured instead)'
            : undefined;
        scenarios[r.label] = {
          tool: r.plan.tool,
          load: r.plan.load,
          counts,
          perHour,
          perHourByOp: perHourOf(counts),
          ...(r.plan.tool === 'litestream' ? {} : { segmentPerHourByOp: perHourOf(segments) }),
          writes: r.writeCount,
          usage,
          ...(note ? { note } : {}),
        };
        ctx.log(
          `idle ${r.label}: ${JSON.stringify(counts)} (segments ${JSON.stringify(segments)}) in ${windowS.toFixed(0)} s; ` +
            `${r.writeCount} writes; peak RSS ${usage.maxRssMB.toFixed(0)} MB, CPU ${usage.cpuS.toFixed(1)} s${note ? `; ${note}` : ''}`,
        );
      }
      return { windowS: round(windowS, 0), sizeMB, rate, dbSyncInterval: '5m (default)', leaseTtl: LEASE_TTL, scenarios };
    },
  };
}
