/** `db-sync run` as a daemon on a fresh bucket, reached through a fault proxy so S3 can fail on demand. */
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import { freePort, startCli, type Running } from './cli.js';
import { createDatabase, tempDir } from './db.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { createBucket, s3Env, s3Info } from './s3.js';

export interface ProxiedDaemon {
  readonly bucket: string;
  readonly proxy: FaultProxy;
  readonly dbPath: string;
  /** The daemon's health server (/healthz, /readyz, /status, /metrics). */
  readonly port: number;
  readonly daemon: Running;
}

/**
 * Start `db-sync run` on a fresh versioned bucket through a fault proxy (closed when the test ends), with a
 * `rows`-row local database, a 1 s interval and its health server on a free port; `env` goes on top.
 */
export async function startProxiedDaemon(rows: number, env: Record<string, string> = {}): Promise<ProxiedDaemon> {
  const { bucket } = await createBucket();
  const proxy = await startFaultProxy(s3Info().endpoint);
  onTestFinished(() => proxy.close());
  const dbPath = join(tempDir(), 'db.sqlite3');
  createDatabase(dbPath, rows);
  const port = await freePort();
  const daemon = startCli(['run'], {
    ...s3Env(bucket),
    DB_S3_ENDPOINT: proxy.url,
    DB_LOCAL_PATH: dbPath,
    DB_SYNC_INTERVAL: '1s',
    DB_SYNC_HEALTH_PORT: String(port),
    ...env,
  });
  return { bucket, proxy, dbPath, port, daemon };
}
