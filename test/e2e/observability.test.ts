/**
 * End to end: what an operator sees. The built CLI as a subprocess against the real S3 server (through a
 * fault proxy where S3 must fail on demand): /metrics counters and gauges move with what the daemon does,
 * /status tells the same story, and manual transfers draw a progress bar only on a terminal.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CLI, runCli, waitFor } from '../helpers/cli.js';
import { startProxiedDaemon } from '../helpers/daemon.js';
import { addRows, createDatabase, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, s3Env } from '../helpers/s3.js';

const execFileAsync = promisify(execFile);
const VERSION = (JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

/** The /metrics exposition; empty while the health server is not listening yet. */
async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
  if (!res) return '';
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
}

/** The value of one series (`name` or `name{labels}`) in an exposition; 0 when absent. */
function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

interface Status {
  version: string;
  phase: string;
  uptimeSeconds: number;
  startedAt: string;
  nextRunAt: string | null;
  lastUpload: { at: string; versionId: string; sizeBytes: number; sha256: string } | null;
  lastError: { message: string; code: string; at: string } | null;
  consecutiveFailures: number;
  dataAtRiskSeconds: number;
  uploads: number;
  skippedUnchanged: number;
  config: Record<string, unknown>;
}

async function status(port: number): Promise<Status> {
  const res = await fetch(`http://127.0.0.1:${port}/status`);
  expect(res.status).toBe(200);
  return (await res.json()) as Status;
}

describe('db-sync run: /metrics and /status', () => {
  it('counts uploads, bytes and idle skips, shows data at risk and failures while S3 refuses, and recovers', async () => {
    // The interval loop's counters (continuous replication's are db_sync_replication_*, test/e2e/continuous.test.ts).
    const { bucket, proxy, dbPath, port, daemon } = await startProxiedDaemon(20, { DB_SYNC_LEASE: 'off', DB_SYNC_CONTINUOUS: 'off' });
    try {
      // A local database the store lacks is uploaded at once; then idle ticks skip.
      let metrics = '';
      await waitFor('the first upload in /metrics', async () => value((metrics = await scrape(port)), 'db_sync_uploads_total') >= 1);
      await waitFor(
        'an idle tick counted as unchanged',
        async () => value((metrics = await scrape(port)), 'db_sync_uploads_skipped_total{reason="unchanged"}') >= 1,
      );
      expect(value(metrics, 'db_sync_uploads_total')).toBe(1);
      expect(value(metrics, 'db_sync_ready')).toBe(1);
      expect(value(metrics, 'db_sync_data_at_risk_seconds')).toBe(0);
      expect(value(metrics, 'db_sync_snapshot_duration_seconds_count')).toBe(1);
      expect(value(metrics, 'db_sync_upload_duration_seconds_count')).toBe(1);
      const first = await status(port);
      expect(first.lastUpload).not.toBeNull();
      expect(value(metrics, 'db_sync_uploaded_bytes_total')).toBe(first.lastUpload?.sizeBytes);
      expect(value(metrics, 'db_sync_last_successful_upload_timestamp_seconds')).toBe(Date.parse(first.lastUpload?.at ?? '') / 1000);
      expect(first).toMatchObject({ version: VERSION, phase: 'ready', uploads: 1, consecutiveFailures: 0, lastError: null });
      expect(first.skippedUnchanged).toBeGreaterThanOrEqual(1);
      expect(first.config).toMatchObject({
        bucket,
        key: 'db.sqlite3',
        localPath: dbPath,
        endpoint: proxy.url,
        intervalMs: 1000,
        sse: 'bucket-default',
        lease: { mode: 'off' },
      });
      expect(Date.parse(first.nextRunAt ?? '')).toBeGreaterThan(Date.parse(first.startedAt));

      // S3 refuses every upload: the change stays at risk, failures are counted by kind, the daemon stays up.
      proxy.set(
        { kind: 'error', status: 403, code: 'AccessDenied', message: 'denied by the test' },
        { match: (r) => r.op === 'PutObject' },
      );
      addRows(dbPath, 50);
      await waitFor(
        'a failed upload',
        async () => value((metrics = await scrape(port)), 'db_sync_failures_total{kind="AccessDenied"}') >= 1,
      );
      await waitFor('data at risk for a second', async () => value((metrics = await scrape(port)), 'db_sync_data_at_risk_seconds') >= 1);
      expect(value(metrics, 'db_sync_uploads_total')).toBe(1);
      expect(value(metrics, 'db_sync_consecutive_failures')).toBeGreaterThanOrEqual(1);
      const failing = await status(port);
      expect(failing.phase).toBe('ready');
      expect(failing.lastError).toMatchObject({ code: 'AccessDenied' });
      expect(failing.lastError?.message).toContain('AccessDenied');
      expect(failing.dataAtRiskSeconds).toBeGreaterThanOrEqual(1);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

      // S3 is back: the change goes up, nothing is at risk, the failure streak ends.
      proxy.pass();
      // The counter moves as the upload completes, the gauges a moment later, when the run is recorded.
      await waitFor('the recovery upload, recorded', async () => {
        metrics = await scrape(port);
        return (
          value(metrics, 'db_sync_uploads_total') >= 2 &&
          value(metrics, 'db_sync_data_at_risk_seconds') === 0 &&
          value(metrics, 'db_sync_consecutive_failures') === 0
        );
      });
      expect(value(metrics, 'db_sync_uploaded_bytes_total')).toBeGreaterThan(first.lastUpload?.sizeBytes ?? Infinity);
      const healed = await status(port);
      expect(healed).toMatchObject({ uploads: 2, consecutiveFailures: 0, dataAtRiskSeconds: 0 });
      expect(healed.lastError?.code).toBe('AccessDenied'); // the last error stays on record, with its time
      const head = JSON.parse(await awsCli(bucket, ['s3api', 'head-object', '--bucket', bucket, '--key', 'db.sqlite3'])) as {
        VersionId: string;
        ContentLength: number;
        Metadata: Record<string, string>;
      };
      expect(healed.lastUpload).toMatchObject({ versionId: head.VersionId, sizeBytes: head.ContentLength, sha256: head.Metadata.sha256 });
      daemon.child.kill('SIGTERM');
      expect(await daemon.exited).toBe(0);
    } finally {
      daemon.child.kill('SIGKILL');
    }
  });
});

/** Run the CLI under a pseudo-terminal (util-linux `script`), as a person at a shell would. */
async function runOnTerminal(args: readonly string[], env: Record<string, string>): Promise<string> {
  const command = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const { stdout } = await execFileAsync('script', ['-qefc', command, '/dev/null'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', LOG_LEVEL: 'warn', ...env },
  });
  return stdout;
}

describe('progress bars', () => {
  it('draw bytes, total and rate on a terminal, and nothing with --quiet or when stderr is not a terminal', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 300, { bodyBytes: 1000 });
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: dbPath };
    const bar = /\r(upload|download|restore) +\[[█░]{24}\] 100% +[\d.]+ [KM]iB \/ [\d.]+ [KM]iB +[\d.]+ (B|KiB|MiB|GiB)\/s/;

    const upload = await runOnTerminal(['upload'], env);
    expect(upload).toMatch(bar);
    expect(upload).toContain('\rupload ');
    expect(upload).toMatch(/uploaded \d+ bytes/);

    const download = await runOnTerminal(['download', '--force'], env);
    expect(download).toContain('\rdownload ');
    expect(download).toMatch(bar);

    const restore = await runOnTerminal(['restore', '--to', join(dir, 'restored.sqlite3')], env);
    expect(restore).toContain('\rrestore ');

    const quiet = await runOnTerminal(['upload', '--quiet'], env);
    expect(quiet).toMatch(/uploaded \d+ bytes/);
    expect(quiet).not.toContain('\rupload');
    expect(quiet).not.toContain('%');

    for (const args of [['upload'], ['download', '--force']]) {
      const piped = await runCli(args, { ...env, LOG_LEVEL: 'warn' });
      expect(piped.code).toBe(0);
      expect(piped.stderr).toBe('');
      expect(piped.stdout).not.toContain('\r');
    }
  });
});
