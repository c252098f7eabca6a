/**
 * Section 5, idle cost: S3 requests by type, scaled to an hour, for each tool at its default settings
 * behind its own counting proxy (bench/lib/proxy.ts), over the same window:
 *   - the database idle (the app's connection open, no writes);
 *   - one write a minute (the first 30 s into the window);
 *   - db-sync with its single-writer lease on (in an unversioned lease bucket, as RGW needs; on AWS S3 the
 *     lease probe passes in the versioned bucket and the lease is on by default), idle.
 * The window starts once every tool has finished starting (db-sync: ready, already in sync; Litestream:
 * first snapshot plus a few seconds), so start-up requests are not counted. Runs in the background so the
 * data-at-risk section can share its time (`start`, then `finish`).
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { liveDb, type Context, type LiveDb } from '../lib/context.js';
import * as dbsync from '../lib/dbsync.js';
import { LITESTREAM_BIN, waitForSnapshot, writeConfig } from '../lib/litestream.js';
import { startMeasured, stopMeasured, type Measured, type Usage } from '../lib/proc.js';
import { byClass, startProxy, type CountingProxy, type Operation, type RequestClass } from '../lib/proxy.js';
import { createBucket, s3Env } from '../lib/s3.js';
import { round } from '../lib/stats.js';

export const IDLE_SCENARIOS = [
  'db-sync, idle',
  'db-sync, 1 write/min',
  'litestream, idle',
  'litestream, 1 write/min',
  'db-sync + lease, idle',
] as const;
export type IdleScenario = (typeof IDLE_SCENARIOS)[number];

export interface IdleScenarioResult {
  /** Requests in the window, by operation. */
  readonly counts: Partial<Record<Operation, number>>;
  /** The same scaled to one hour, by billing class. */
  readonly perHour: Record<RequestClass, number>;
  readonly perHourByOp: Partial<Record<Operation, number>>;
  readonly writes: number;
  readonly usage?: Usage;
  readonly error?: string;
}

export interface IdleResult {
  readonly windowS: number;
  readonly sizeMB: number;
  readonly dbSyncInterval: string;
  readonly leaseTtl: string;
  readonly scenarios: Partial<Record<IdleScenario, IdleScenarioResult>>;
}

interface Running {
  readonly scenario: IdleScenario;
  readonly proxy: CountingProxy;
  readonly live: LiveDb;
  readonly proc: Measured;
  readonly writes: boolean;
  writeCount: number;
}

export interface IdleRun {
  /** Wait until the window is at least `idleSeconds` long, stop everything, count. */
  finish(): Promise<IdleResult>;
}

const LEASE_TTL = '30s';

export async function startIdle(ctx: Context): Promise<IdleRun> {
  const sizeMB = ctx.opts.idleSizeMB;
  const bucket = `idle-${Date.now().toString(36)}`;
  const leaseBucket = `${bucket}-locks`;
  await createBucket(ctx.s3, bucket);
  await ctx.s3.send(new CreateBucketCommand({ Bucket: leaseBucket })); // unversioned: RGW's conditional writes work only there
  const running: Running[] = [];
  const failed: Partial<Record<IdleScenario, IdleScenarioResult>> = {};
  for (const scenario of IDLE_SCENARIOS) {
    const tag = scenario.replace(/\W+/g, '-');
    const log = join(ctx.logs, `idle-${tag}.log`);
    const live = liveDb(ctx, sizeMB, `idle-${tag}.sqlite3`, 0);
    const proxy = await startProxy(ctx.info.endpoint);
    try {
      let proc: Measured;
      if (scenario.startsWith('db-sync')) {
        const target = {
          bucket,
          key: `${tag}.sqlite3`,
          dbPath: live.path,
          env: scenario.includes('lease')
            ? { DB_SYNC_LEASE: 'required', DB_SYNC_LEASE_BUCKET: leaseBucket, DB_SYNC_LEASE_TTL: LEASE_TTL }
            : {},
        };
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
      running.push({ scenario, proxy, live, proc, writes: scenario.includes('write'), writeCount: 0 });
    } catch (error) {
      ctx.log(`idle ${scenario}: did not start: ${(error as Error).message}`);
      failed[scenario] = { counts: {}, perHour: byClass({}), perHourByOp: {}, writes: 0, error: (error as Error).message };
      live.close();
      await proxy.close();
    }
  }
  await sleep(5_000); // Litestream's first WAL segment after its snapshot
  const windowStart = Date.now();
  ctx.log(`idle window started (${ctx.opts.idleSeconds} s or longer, ${running.length} tools)`);
  const write = (): void => {
    for (const r of running) {
      if (!r.writes) continue;
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
      const windowS = (windowEnd - windowStart) / 1000;
      const scale = 3600 / windowS;
      const scenarios: Partial<Record<IdleScenario, IdleScenarioResult>> = { ...failed };
      for (const r of running) {
        const counts = r.proxy.counts(windowStart, windowEnd);
        const usage = await stopMeasured(r.proc);
        await r.proxy.close();
        r.live.close();
        const perHour = byClass(counts);
        for (const k of Object.keys(perHour) as RequestClass[]) perHour[k] = round(perHour[k] * scale, 0);
        const perHourByOp = Object.fromEntries(Object.entries(counts).map(([op, n]) => [op, round((n ?? 0) * scale, 0)]));
        scenarios[r.scenario] = { counts, perHour, perHourByOp, writes: r.writeCount, usage };
        ctx.log(`idle ${r.scenario}: ${JSON.stringify(counts)} in ${windowS.toFixed(0)} s`);
      }
      return { windowS: round(windowS, 0), sizeMB, dbSyncInterval: '5m (default)', leaseTtl: LEASE_TTL, scenarios };
    },
  };
}
