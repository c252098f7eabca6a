/**
 * db-sync as the benchmark runs it: the built CLI (`node dist/cli.js`), exactly what the `db-sync` bin runs.
 * `BENCH_DB_SYNC_CLI=/path/to/cli.js` measures another build instead (an A/B of a proposed change).
 */
import { join } from 'node:path';
import { ROOT, s3Env, type ServerInfo } from './s3.js';
import { runMeasured, startMeasured, type Measured, type Usage } from './proc.js';

export const CLI = process.env.BENCH_DB_SYNC_CLI ?? join(ROOT, 'dist', 'cli.js');

export interface DbSyncTarget {
  readonly bucket: string;
  readonly key: string;
  readonly dbPath: string;
  /** S3 endpoint; defaults to the server's (a counting proxy passes its own). */
  readonly endpoint?: string;
  readonly interval?: string;
  /** More settings (the lease's, say). */
  readonly env?: NodeJS.ProcessEnv;
}

export function dbSyncEnv(info: ServerInfo, t: DbSyncTarget): NodeJS.ProcessEnv {
  return {
    ...s3Env(info, t.endpoint),
    DB_S3_BUCKET: t.bucket,
    DB_S3_KEY: t.key,
    DB_LOCAL_PATH: t.dbPath,
    DB_SYNC_HEALTH_PORT: '0',
    LOG_LEVEL: 'info',
    ...(t.interval ? { DB_SYNC_INTERVAL: t.interval } : {}),
    ...t.env,
  };
}

/**
 * `db-sync upload` under GNU time. `parts` splits its wall time with its own log line ("snapshot uploaded"):
 * `snapshotS` (backup API copy + integrity check + sha256), `uploadS`, and `otherS` (process start, config,
 * S3 client, exit).
 */
export async function upload(
  info: ServerInfo,
  t: DbSyncTarget,
  logFile: string,
  onUploaded?: (entry: Record<string, unknown>) => void,
): Promise<Usage> {
  let logged: Record<string, unknown> | undefined;
  const usage = await runMeasured(process.execPath, [CLI, 'upload'], {
    env: dbSyncEnv(info, t),
    logFile,
    onLine: (line) => {
      const entry = parseLogLine(line);
      if (entry?.msg === 'snapshot uploaded') logged = entry;
    },
  });
  if (!logged) return usage;
  onUploaded?.(logged);
  const snapshotS = Number(logged.snapshotMs) / 1000;
  const uploadS = Number(logged.uploadMs) / 1000;
  return { ...usage, parts: { snapshotS, uploadS, otherS: usage.wallS - snapshotS - uploadS } };
}

/** A db-sync JSON log line, or undefined for anything else. */
export function parseLogLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

export function download(info: ServerInfo, t: DbSyncTarget, logFile: string): Promise<Usage> {
  return runMeasured(process.execPath, [CLI, 'download'], { env: dbSyncEnv(info, t), logFile });
}

export interface Daemon {
  readonly proc: Measured;
  /** Resolves when the daemon logged "ready; syncing". */
  readonly ready: Promise<void>;
  /** "snapshot uploaded" log lines so far (each a parsed JSON object). */
  readonly uploads: Array<Record<string, unknown>>;
}

/** Start `db-sync run` under GNU time. */
export async function startDaemon(info: ServerInfo, t: DbSyncTarget, logFile: string, extraArgs: readonly string[] = []): Promise<Daemon> {
  const uploads: Array<Record<string, unknown>> = [];
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  const proc = await startMeasured(process.execPath, [...extraArgs, CLI, 'run'], {
    env: dbSyncEnv(info, t),
    logFile,
    onLine: (line) => {
      const entry = parseLogLine(line);
      if (entry?.msg === 'ready; syncing') markReady();
      if (entry?.msg === 'snapshot uploaded') uploads.push(entry);
    },
  });
  const failed = proc.done.then((u) => {
    throw new Error(`db-sync run exited (${u.exitCode ?? u.signal}) before it was ready; see ${logFile}`);
  });
  return { proc, ready: Promise.race([ready, failed]), uploads };
}
