/**
 * Faults: S3 unreachable at start, and S3 throttling (503 SlowDown), failing (500) or dropping connections
 * while the daemon runs. Produced by the fault proxy in front of the real server; every test ends with the
 * data checked in S3 (AWS CLI) and on disk (sqlite3).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, httpStatus, runCli, startCli, waitFor } from '../helpers/cli.js';
import { addRows, integrity, rowCount } from '../helpers/db.js';
import { s3Info, seededBucket } from '../helpers/s3.js';
import { startWriter } from '../helpers/writer.js';
import {
  bucketAndDatabase,
  daemonEnv,
  healthJson,
  healthProbe,
  keys,
  logged,
  logLines,
  proxyForFile,
  remoteCopy,
  tempFiles,
} from './support.js';

describe('fault: S3 unreachable at start', () => {
  it('stays not ready and says why, retrying with backoff; restores once S3 answers', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir } = await seededBucket(50);

    proxy.set({ kind: 'reset' });
    const mark = proxy.mark();
    const started = Date.now();
    const dbPath = join(dir, 'app', 'db.sqlite3');
    const port = await freePort();
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_HEALTH_PORT: String(port) }));
    await waitFor('the not-ready log line', () => logged(daemon, /^cannot reach the store to restore; not ready, retrying/));
    await waitFor('a second restore attempt', () => logLines(daemon, /^cannot reach the store to restore/).length >= 2, 40_000);

    expect(await httpStatus(port, '/readyz')).toBe(503);
    expect(await httpStatus(port, '/healthz')).toBe(200);
    expect(await healthProbe(port)).toBe(8);
    expect(existsSync(dbPath)).toBe(false);
    const line = logLines(daemon, /^cannot reach the store to restore/)[0];
    expect(String(line?.err)).toMatch(/download s3:\/\/.*db\.sqlite3/);
    // Backoff, not a storm: a few requests a second at most (each attempt is up to 3 SDK tries).
    const seconds = (Date.now() - started) / 1000;
    expect(proxy.count(undefined, mark)).toBeLessThan(5 * seconds);
    const delays = logLines(daemon, /^cannot reach the store to restore/).map((l) => Number(l.retryInMs));
    expect(delays[1]).toBeGreaterThan(delays[0] ?? Infinity);

    proxy.pass();
    await waitFor('readiness once S3 answers', async () => (await httpStatus(port, '/readyz')) === 200, 45_000);
    expect(logged(daemon, 'database restored')).toBe(true);
    expect(rowCount(dbPath)).toBe(50);
    expect(integrity(dbPath)).toBe('ok');
    expect(tempFiles(join(dir, 'app'))).toEqual([]);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect((await remoteCopy(bucket, dir)).rows).toBe(50);
  });

  it('with the lease on (the default), retries its probe too instead of exiting, then restores', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir } = await seededBucket(7);
    proxy.set({ kind: 'reset' });
    const dbPath = join(dir, 'db.sqlite3');
    const port = await freePort();
    const env = daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_HEALTH_PORT: String(port), DB_SYNC_LEASE: 'auto' });
    const daemon = startCli(['run'], env);
    await waitFor('two attempts', () => logLines(daemon, /^cannot reach the store/).length >= 2, 40_000);
    expect(daemon.child.exitCode).toBeNull();
    expect(await httpStatus(port, '/readyz')).toBe(503);
    expect(existsSync(dbPath)).toBe(false);

    proxy.pass();
    await waitFor('readiness once S3 answers', async () => (await httpStatus(port, '/readyz')) === 200, 45_000);
    expect(rowCount(dbPath)).toBe(7);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });

  it('gives up after DB_SYNC_RESTORE_TIMEOUT with exit 1, never ready, no database created', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir } = await seededBucket(5);
    proxy.set({ kind: 'reset' });
    const dbPath = join(dir, 'db.sqlite3');
    const result = await runCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_RESTORE_TIMEOUT: '3s' }));
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('gave up after 3s (DB_SYNC_RESTORE_TIMEOUT)');
    expect(result.stderr).toMatch(/hint: .*must not start/);
    expect(result.stdout).not.toContain('"ready; syncing"');
    expect(existsSync(dbPath)).toBe(false);
    expect(tempFiles(dir)).toEqual([]);
    expect((await remoteCopy(bucket, dir)).rows).toBe(5);
  });

  it('with a database on the volume, keeps trying rather than exiting, then keeps and uploads the local changes', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(20);
    // Synced once by db-sync (which records it beside the database), then changed while it was not running.
    expect((await runCli(['upload'], daemonEnv(bucket, s3Info().endpoint, dbPath))).code).toBe(0);
    addRows(dbPath, 3);

    proxy.set({ kind: 'reset' });
    const port = await freePort();
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_HEALTH_PORT: String(port) }));
    await waitFor('two start attempts', () => logLines(daemon, /^cannot reach the store to restore/).length >= 2, 40_000);
    expect(daemon.child.exitCode).toBeNull();
    expect(await httpStatus(port, '/readyz')).toBe(503);
    expect(String(logLines(daemon, /^cannot reach the store/)[0]?.err)).toMatch(/head s3:\/\/.*db\.sqlite3/);

    proxy.pass();
    await waitFor('readiness', async () => (await httpStatus(port, '/readyz')) === 200, 45_000);
    await waitFor('the local changes uploaded', () => logged(daemon, 'snapshot uploaded'));
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect(rowCount(dbPath)).toBe(23);
    const remote = await remoteCopy(bucket, dir);
    expect(remote.rows).toBe(23);
    expect(remote.integrity).toBe('ok');
  });
});

describe('fault: S3 throttling and failing while running', () => {
  it('keeps running, backs off without a retry storm, reports degraded, and catches up when S3 returns', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(10);
    const port = await freePort();
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_HEALTH_PORT: String(port) }));
    await waitFor('readiness', async () => (await httpStatus(port, '/readyz')) === 200);
    await waitFor('the first upload', () => logged(daemon, 'snapshot uploaded'));
    const writer = startWriter(dbPath, 20);

    proxy.set({ kind: 'slowdown' });
    const mark = proxy.mark();
    const started = Date.now();
    await waitFor('degraded', async () => (await healthJson(port, '/healthz')).body.state === 'degraded', 60_000);
    const seconds = (Date.now() - started) / 1000;
    // One snapshot of the log: the daemon keeps sending requests while the assertions below run.
    const seen = proxy.requests.slice(mark);
    const requests = seen.length;

    // Alive and still ready (a replaced task would lose the changes waiting for S3), and it says so.
    expect((await healthJson(port, '/healthz')).status).toBe(200);
    expect(await httpStatus(port, '/readyz')).toBe(200);
    expect(await healthProbe(port)).toBe(0);
    const status = (await healthJson(port, '/status')).body;
    expect(status.consecutiveFailures).toBeGreaterThanOrEqual(3);
    expect(JSON.stringify(status.lastError)).toContain('SlowDown');
    expect(logged(daemon, /^sync degraded/)).toBe(true);
    expect(logLines(daemon, 'storage call failed; retrying').some((l) => l.code === 'SlowDown')).toBe(true);
    // Backoff, not a storm: every 503 was answered to at most ~2 requests a second overall.
    expect(requests).toBeGreaterThan(3);
    expect(requests).toBeLessThan(2 * seconds + 5);
    // Every request answered so far was throttled (status 0: still in flight when the snapshot was taken).
    expect(seen.filter((r) => r.status !== 503 && r.status !== 0)).toEqual([]);

    proxy.pass();
    await waitFor('recovery', () => logged(daemon, 'sync recovered'), 30_000);
    await waitFor('healthy again', async () => (await healthJson(port, '/healthz')).body.state === 'ready');
    const committed = await writer.stop();
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    const remote = await remoteCopy(bucket, dir);
    expect(remote.rows).toBe(10 + committed);
    expect(remote.integrity).toBe('ok');
    expect(tempFiles(dir)).toEqual([]);
  });

  it('absorbs short bursts of 500s and dropped connections inside one sync, with no failed sync', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(10);
    // The interval loop's snapshot uploads (continuous replication's segment retries: test/unit/pending.test.ts).
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_CONTINUOUS: 'off' }));
    await waitFor('the first upload', () => logged(daemon, 'snapshot uploaded'));

    const mark = proxy.mark();
    proxy.set({ kind: 'internal-error' }, { match: (r) => r.op === 'PutObject', times: 2 });
    addRows(dbPath, 5);
    await waitFor('the second upload', () => logLines(daemon, 'snapshot uploaded').length === 2);
    proxy.set({ kind: 'reset' }, { match: (r) => r.op === 'PutObject', times: 2 });
    addRows(dbPath, 5);
    await waitFor('the third upload', () => logLines(daemon, 'snapshot uploaded').length === 3);

    expect(proxy.count((r) => r.status === 500, mark)).toBe(2);
    expect(proxy.count((r) => r.fault === 'reset', mark)).toBe(2);
    expect(logged(daemon, 'sync failed; will retry')).toBe(false);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    const remote = await remoteCopy(bucket, dir);
    expect(remote.rows).toBe(20);
    expect((await keys(bucket)).filter((k) => k.startsWith('db.sqlite3.backup.'))).toHaveLength(1);
  });
});
