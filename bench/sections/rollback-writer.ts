/**
 * Section 5, rollback-journal writer: Django's default database (journal_mode=delete), an app inserting at a
 * steady rate with Django's 5 s busy timeout, while the database is snapshotted. In rollback mode a reader's
 * SHARED lock keeps writers from committing, so what matters is how long the copy holds it: the app's worst
 * single wait. Two scenarios per run, alternating: a one-step backup-API copy (how db-sync snapshotted before,
 * holding SHARED for the whole copy) and `db-sync upload` (today's snapshot path), each taken `copies` times
 * while the writer runs. Sizes 200 MB and 1 GB.
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { startWriter, type WriterResult } from '../lib/app-writer.js';
import { copyDb, removeDb, rotate, type Context } from '../lib/context.js';
import * as dbsync from '../lib/dbsync.js';
import { createBucket } from '../lib/s3.js';
import { median, round, summarize, type LatencySummary } from '../lib/stats.js';

export const ROLLBACK_SCENARIOS = ['backup API (db-sync before)', 'db-sync upload'] as const;
export type RollbackScenario = (typeof ROLLBACK_SCENARIOS)[number];

/** Copies taken while the writer runs, per scenario and run. */
const COPIES_PER_RUN = 3;
/** Quiet time around each copy, so each insert overlaps at most one copy. */
const GAP_MS = 1_000;

export interface RollbackScenarioResult {
  /** Inserts that overlapped a copy, per run. */
  readonly runs: LatencySummary[];
  /** Median over runs of the worst single insert (ms). */
  readonly worstMs: number;
  /** The worst insert over all runs (ms). */
  readonly worstOfAllMs: number;
  /** Median over runs of one copy's wall time (the whole `db-sync upload` process, or the backup call), in s. */
  readonly copyS: number;
  /** Inserts that failed (SQLITE_BUSY past the 5 s busy timeout), per run. */
  readonly errors: number[];
  /** 1-minute load average when each run started. */
  readonly load: number[];
}

export interface RollbackSizeResult {
  readonly sizeMB: number;
  readonly rate: number;
  readonly scenarios: Record<RollbackScenario, RollbackScenarioResult>;
}

export interface RollbackWriterResult {
  /** Copies per scenario and run. */
  readonly copies: number;
  readonly sizes: RollbackSizeResult[];
}

interface Window {
  readonly from: number;
  readonly to: number;
}

/** Latencies of the inserts whose [start, commit] overlaps one of `windows` (epoch ms). */
function overlapping(w: WriterResult, windows: readonly Window[]): number[] {
  return w.latenciesMs.filter((lat, i) => {
    const done = w.doneAt[i] as number;
    return windows.some((x) => done - lat <= x.to && done >= x.from);
  });
}

/** The snapshot db-sync took before: the backup API, all pages in one step, SHARED held throughout. */
async function backupApiCopy(dbPath: string, destination: string): Promise<void> {
  const db = new Database(dbPath, { fileMustExist: true, timeout: 30_000 });
  try {
    await db.backup(destination, { progress: () => 0x7fffffff });
  } finally {
    db.close();
  }
}

export async function rollbackWriter(ctx: Context): Promise<RollbackWriterResult> {
  const { rate } = ctx.opts;
  const bucket = `rollback-${Date.now().toString(36)}`;
  await createBucket(ctx.s3, bucket);
  const sizes: RollbackSizeResult[] = [];
  for (const sizeMB of ctx.opts.rollbackSizes) {
    const pristine = ctx.database(sizeMB);
    const runs = sizeMB >= 1000 ? ctx.opts.runsLarge : ctx.opts.runs;
    const acc = {} as Record<
      RollbackScenario,
      { runs: LatencySummary[]; worst: number[]; copyS: number[]; errors: number[]; load: number[] }
    >;
    for (const s of ROLLBACK_SCENARIOS) acc[s] = { runs: [], worst: [], copyS: [], errors: [], load: [] };
    for (let r = 0; r < runs; r += 1) {
      for (const scenario of rotate(ROLLBACK_SCENARIOS, r)) {
        const tag = scenario === 'db-sync upload' ? 'dbsync' : 'backupapi';
        const dbPath = ctx.scratch(`rollback-${sizeMB}-${tag}.sqlite3`);
        copyDb(pristine.path, dbPath);
        const convert = new Database(dbPath);
        convert.pragma('journal_mode = delete');
        convert.close();
        const log = join(ctx.logs, `rollback-${sizeMB}-${tag}.log`);
        const out = join(ctx.work, `rollback-${sizeMB}-${tag}.json`);
        const target = { bucket, key: `rollback/${sizeMB}-r${r}.sqlite3`, dbPath, interval: '5s' };
        acc[scenario].load.push(round(loadavg()[0] ?? 0, 2));
        const writer = await startWriter(dbPath, rate, 0, out, log, ['--journal', 'delete', '--synchronous', 'FULL']);
        const windows: Window[] = [];
        try {
          await sleep(2 * GAP_MS);
          for (let c = 0; c < COPIES_PER_RUN; c += 1) {
            const from = Date.now();
            if (scenario === 'db-sync upload') await dbsync.upload(ctx.info, target, log);
            else {
              const copy = ctx.scratch(`rollback-${sizeMB}-copy.sqlite3`);
              await backupApiCopy(dbPath, copy);
              removeDb(copy);
            }
            const to = Date.now();
            windows.push({ from, to });
            acc[scenario].copyS.push((to - from) / 1000);
            await sleep(GAP_MS);
          }
        } finally {
          writer.stop();
        }
        const result = await writer.done;
        const s = summarize(overlapping(result, windows));
        acc[scenario].runs.push(s);
        acc[scenario].worst.push(s.max);
        acc[scenario].errors.push(result.errors);
        ctx.log(
          `rollback ${sizeMB} MB run ${r + 1}/${runs} ${scenario}: ${s.count} inserts during ${COPIES_PER_RUN} copies, ` +
            `p99 ${s.p99.toFixed(1)} ms, worst ${s.max.toFixed(0)} ms, ${result.errors} errors, load ${acc[scenario].load.at(-1)}`,
        );
        removeDb(dbPath);
      }
    }
    const scenarios = {} as Record<RollbackScenario, RollbackScenarioResult>;
    for (const s of ROLLBACK_SCENARIOS) {
      const a = acc[s];
      scenarios[s] = {
        runs: a.runs,
        worstMs: round(median(a.worst), 1),
        worstOfAllMs: round(Math.max(...a.worst), 1),
        copyS: round(median(a.copyS), 2),
        errors: a.errors,
        load: a.load,
      };
    }
    sizes.push({ sizeMB, rate, scenarios });
  }
  return { copies: COPIES_PER_RUN, sizes };
}
