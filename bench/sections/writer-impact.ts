/**
 * Section 4, writer impact: a separate process inserts rows at a steady rate (one autocommit INSERT each,
 * as a web request would) for a fixed window, timing every insert. Five scenarios, in rotating order:
 * no sync at all; `db-sync run` with interval snapshots only (`DB_SYNC_CONTINUOUS=off`) and a short interval (so
 * several snapshots fall inside the window), paced as shipped and unpaced (`DB_SYNC_SNAPSHOT_PACE=100%`, the
 * lever's effect in the same run); `db-sync run` at its defaults, which on this WAL database is
 * continuous replication (pins, WAL reads, segments every second, the WAL-bounding seal); and
 * `litestream replicate` (after its first snapshot, i.e. steady replication).
 *
 * For db-sync it also reports the inserts that overlapped a snapshot (the backup-API copy + check + hash,
 * from its "snapshot uploaded" log lines), the case the target is about.
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startWriter, type WriterResult } from '../lib/app-writer.js';
import { copyDb, rotate, type Context } from '../lib/context.js';
import * as dbsync from '../lib/dbsync.js';
import { LITESTREAM_BIN, waitForSnapshot, writeConfig } from '../lib/litestream.js';
import { startMeasured, stopMeasured, type Usage } from '../lib/proc.js';
import { createBucket, s3Env } from '../lib/s3.js';
import { median, round, summarize, type LatencySummary } from '../lib/stats.js';

export const WRITER_SCENARIOS = ['no sync', 'db-sync', 'db-sync unpaced', 'db-sync continuous', 'litestream'] as const;
/** The interval-snapshot scenarios, whose inserts during snapshots are reported apart. */
const SNAPSHOT_SCENARIOS: readonly WriterScenario[] = ['db-sync', 'db-sync unpaced'];
export type WriterScenario = (typeof WRITER_SCENARIOS)[number];

export interface LatencyMedians {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export interface ScenarioResult {
  /** Every insert in the window, per run. */
  readonly runs: LatencySummary[];
  readonly median: LatencyMedians;
  /** Inserts that overlapped a db-sync snapshot (copy + check + hash), per run and median. */
  readonly duringSnapshot?: { readonly runs: LatencySummary[]; readonly median: LatencyMedians };
  /** Snapshots uploaded inside the window, per run, and their median copy and upload times. */
  readonly snapshots?: { readonly perRun: number[]; readonly snapshotS: number; readonly uploadS: number };
  /** Inserts that failed (SQLITE_BUSY past the 5 s busy timeout), per run. */
  readonly errors: number[];
  /** The sync tool's process usage (whole run incl. its start and stop), per run. */
  readonly usage?: Usage[];
  /** 1-minute load average when each run started. */
  readonly load: number[];
}

export interface WriterImpactResult {
  readonly sizeMB: number;
  readonly rate: number;
  readonly seconds: number;
  readonly interval: string;
  readonly scenarios: Record<WriterScenario, ScenarioResult>;
  /** Median p99 of each scenario over the no-sync one. */
  readonly p99Ratios: Record<string, number>;
}

function medians(runs: readonly LatencySummary[]): LatencyMedians {
  return {
    count: round(median(runs.map((r) => r.count)), 0),
    p50: round(median(runs.map((r) => r.p50)), 3),
    p99: round(median(runs.map((r) => r.p99)), 3),
    p999: round(median(runs.map((r) => r.p999)), 3),
    max: round(median(runs.map((r) => r.max)), 3),
  };
}

interface Window {
  readonly from: number;
  readonly to: number;
}

/** Latencies of the inserts whose [start, commit] overlaps one of `windows` (epoch ms). */
function overlapping(w: WriterResult, windows: readonly Window[]): number[] {
  const out: number[] = [];
  w.latenciesMs.forEach((lat, i) => {
    const done = w.doneAt[i] as number;
    const start = done - lat;
    if (windows.some((x) => start <= x.to && done >= x.from)) out.push(lat);
  });
  return out;
}

export async function writerImpact(ctx: Context): Promise<WriterImpactResult> {
  const { rate, writerSeconds: seconds, writerSizeMB: sizeMB, shortInterval: interval } = ctx.opts;
  const pristine = ctx.database(sizeMB);
  const bucket = `writer-${Date.now().toString(36)}`;
  await createBucket(ctx.s3, bucket);
  type Acc = {
    runs: LatencySummary[];
    during: LatencySummary[];
    errors: number[];
    usage: Usage[];
    load: number[];
    snapshotCounts: number[];
    snapshotS: number[];
    uploadS: number[];
  };
  const acc = Object.fromEntries(
    WRITER_SCENARIOS.map((s) => [
      s,
      { runs: [], during: [], errors: [], usage: [], load: [], snapshotCounts: [], snapshotS: [], uploadS: [] },
    ]),
  ) as unknown as Record<WriterScenario, Acc>;
  const synchronousFull = ['--synchronous', 'FULL'];
  const runs = ctx.opts.runs;
  for (let r = 0; r < runs; r += 1) {
    for (const scenario of rotate(WRITER_SCENARIOS, r)) {
      const tag = scenario.replace(/\W/g, '');
      const dbPath = ctx.scratch(`writer-${tag}.sqlite3`);
      copyDb(pristine.path, dbPath);
      const log = join(ctx.logs, `writer-${tag}.log`);
      const out = join(ctx.work, `writer-${tag}.json`);
      let result: WriterResult;
      /** The writer's window once `daemon` is ready; the daemon is stopped after it and its usage kept. */
      const writeWhile = async (daemon: dbsync.Daemon, into: Acc): Promise<WriterResult> => {
        try {
          await daemon.ready;
          return await (
            await startWriter(dbPath, rate, seconds, out, log, synchronousFull)
          ).done;
        } finally {
          into.usage.push(await stopMeasured(daemon.proc));
        }
      };
      acc[scenario].load.push(round(loadavg()[0] ?? 0, 2));
      if (scenario === 'no sync') {
        result = await (await startWriter(dbPath, rate, seconds, out, log, synchronousFull)).done;
      } else if (SNAPSHOT_SCENARIOS.includes(scenario)) {
        // Interval snapshots only: this scenario is the snapshot path's cost (issue 17).
        const env: Record<string, string> = { DB_SYNC_CONTINUOUS: 'off' };
        if (scenario === 'db-sync unpaced') env.DB_SYNC_SNAPSHOT_PACE = '100%';
        const target = { bucket, key: `writer/${tag}-r${r}.sqlite3`, dbPath, interval, env };
        await dbsync.upload(ctx.info, target, log); // start in sync: the daemon's first tick comes one interval later
        const daemon = await dbsync.startDaemon(ctx.info, target, log);
        result = await writeWhile(daemon, acc[scenario]);
        const windows: Window[] = [];
        for (const u of daemon.uploads) {
          const loggedAt = Date.parse(String(u.time));
          const snapMs = Number(u.snapshotMs);
          const upMs = Number(u.uploadMs);
          const from = loggedAt - upMs - snapMs;
          if (from < result.startedAt || loggedAt > (result.doneAt.at(-1) ?? 0)) continue; // the final sync, after the window
          windows.push({ from, to: loggedAt - upMs });
          acc[scenario].snapshotS.push(snapMs / 1000);
          acc[scenario].uploadS.push(upMs / 1000);
        }
        acc[scenario].snapshotCounts.push(windows.length);
        acc[scenario].during.push(summarize(overlapping(result, windows)));
      } else if (scenario === 'db-sync continuous') {
        const target = { bucket, key: `writer/cr-r${r}.sqlite3`, dbPath };
        await dbsync.upload(ctx.info, target, log);
        result = await writeWhile(await dbsync.startDaemon(ctx.info, target, log), acc[scenario]);
      } else {
        const path = `writer/litestream-r${r}`;
        const config = writeConfig(join(ctx.work, `writer-litestream-r${r}.yml`), ctx.info, {
          dbPath,
          bucket,
          path,
          endpoint: ctx.info.endpoint,
        });
        const proc = await startMeasured(LITESTREAM_BIN, ['replicate', '-config', config], { logFile: log, env: s3Env(ctx.info) });
        try {
          await waitForSnapshot(ctx.s3, bucket, path, 120_000);
          await sleep(1_000);
          result = await (await startWriter(dbPath, rate, seconds, out, log, synchronousFull)).done;
        } finally {
          acc[scenario].usage.push(await stopMeasured(proc));
        }
      }
      const s = summarize(result.latenciesMs);
      acc[scenario].runs.push(s);
      acc[scenario].errors.push(result.errors);
      ctx.log(
        `writer run ${r + 1}/${runs} ${scenario}: ${s.count} inserts, p50 ${s.p50.toFixed(2)} ms, p99 ${s.p99.toFixed(2)} ms, ` +
          `p99.9 ${s.p999.toFixed(2)} ms, max ${s.max.toFixed(1)} ms, load ${acc[scenario].load.at(-1)}` +
          (result.errors ? `, ${result.errors} errors` : ''),
      );
    }
  }
  const scenarios = {} as Record<WriterScenario, ScenarioResult>;
  for (const scenario of WRITER_SCENARIOS) {
    const a = acc[scenario];
    scenarios[scenario] = {
      runs: a.runs,
      median: medians(a.runs),
      errors: a.errors,
      load: a.load,
      ...(a.usage.length ? { usage: a.usage } : {}),
      ...(SNAPSHOT_SCENARIOS.includes(scenario)
        ? {
            duringSnapshot: { runs: a.during, median: medians(a.during) },
            snapshots: { perRun: a.snapshotCounts, snapshotS: round(median(a.snapshotS), 3), uploadS: round(median(a.uploadS), 3) },
          }
        : {}),
    };
  }
  const base = scenarios['no sync'].median.p99;
  return {
    sizeMB,
    rate,
    seconds,
    interval,
    scenarios,
    p99Ratios: {
      'db-sync (all inserts)': round(scenarios['db-sync'].median.p99 / base, 2),
      'db-sync (during snapshots)': round((scenarios['db-sync'].duringSnapshot?.median.p99 ?? Number.NaN) / base, 2),
      'db-sync unpaced (during snapshots)': round((scenarios['db-sync unpaced'].duringSnapshot?.median.p99 ?? Number.NaN) / base, 2),
      'db-sync continuous': round(scenarios['db-sync continuous'].median.p99 / base, 2),
      litestream: round(scenarios.litestream.median.p99 / base, 2),
    },
  };
}
