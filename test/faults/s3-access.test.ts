/**
 * Faults that retrying cannot fix: wrong credentials, a missing bucket, access denied (a real bucket policy
 * on the real server). db-sync must fail fast with a message naming the fix and exit 3, never loop on
 * retries; while running, it keeps the data local and tries again only at its backoff pace.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, httpStatus, runCli, startCli, waitFor } from '../helpers/cli.js';
import { addRows, createDatabase, integrity, rowCount, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, seededBucket } from '../helpers/s3.js';
import { bucketAndDatabase, daemonEnv, healthJson, logged, logLines, proxyForFile, remoteCopy } from './support.js';

/** A bucket policy that denies every data call to everyone, the bucket's owner included. */
function denyAll(bucket: string): string {
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Deny',
        Principal: '*',
        Action: ['s3:GetObject', 's3:PutObject', 's3:ListBucket', 's3:ListBucketVersions', 's3:ListBucketMultipartUploads'],
        Resource: [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`],
      },
    ],
  });
}

describe('fault: credentials, bucket and permissions', () => {
  it('wrong credentials: run exits 3 at once with the fix, after a couple of requests, creating nothing', async () => {
    const proxy = await proxyForFile();
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    const mark = proxy.mark();
    const result = await runCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { AWS_SECRET_ACCESS_KEY: 'not-the-secret' }));
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/SignatureDoesNotMatch|InvalidAccessKeyId/);
    expect(result.stderr).toMatch(/hint: the AWS credentials are missing, wrong or expired/);
    expect(result.stderr).not.toContain('not-the-secret');
    expect(result.stdout).not.toContain('not-the-secret');
    expect(proxy.count(undefined, mark)).toBeLessThanOrEqual(3);
    expect(existsSync(dbPath)).toBe(false);
  });

  it('missing bucket: run exits 3 naming the bucket, with a local database too, which stays untouched', async () => {
    const proxy = await proxyForFile();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 4);
    const mark = proxy.mark();
    const result = await runCli(['run'], daemonEnv('db-sync-no-such-bucket', proxy.url, dbPath));
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/hint: bucket "db-sync-no-such-bucket" does not exist; create it .* or fix DB_S3_BUCKET/);
    expect(proxy.count(undefined, mark)).toBeLessThanOrEqual(4);
    expect(rowCount(dbPath)).toBe(4);
    expect(integrity(dbPath)).toBe('ok');
  });

  it('access denied at start: exit 3 naming the permissions, no retry loop', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir } = await seededBucket(6);
    await awsCli(bucket, ['s3api', 'put-bucket-policy', '--bucket', bucket, '--policy', denyAll(bucket)]);
    try {
      const dbPath = join(dir, 'db.sqlite3');
      const mark = proxy.mark();
      const result = await runCli(['run'], daemonEnv(bucket, proxy.url, dbPath));
      expect(result.code).toBe(3);
      expect(result.stderr).toMatch(/hint: access to s3:\/\/.* was denied; grant the task role s3:GetObject/);
      expect(proxy.count((r) => r.status === 403, mark)).toBeLessThanOrEqual(3);
      expect(proxy.count(undefined, mark)).toBeLessThanOrEqual(4);
      expect(existsSync(dbPath)).toBe(false);
    } finally {
      await awsCli(bucket, ['s3api', 'delete-bucket-policy', '--bucket', bucket]);
    }
    expect((await remoteCopy(bucket, dir)).rows).toBe(6);
  });

  it('access denied while running: keeps running and ready, one request per attempt at backoff pace, catches up when granted', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(8);
    const port = await freePort();
    // One request per interval run: the interval loop's pace (continuous replication's shipper backs off on its own).
    const daemon = startCli(
      ['run'],
      daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_HEALTH_PORT: String(port), DB_SYNC_CONTINUOUS: 'off' }),
    );
    await waitFor('the first upload', () => logged(daemon, 'snapshot uploaded'));

    await awsCli(bucket, ['s3api', 'put-bucket-policy', '--bucket', bucket, '--policy', denyAll(bucket)]);
    const mark = proxy.mark();
    addRows(dbPath, 2);
    await waitFor('degraded', () => logged(daemon, /^sync degraded/), 30_000);
    const failure = logLines(daemon, 'sync failed; will retry')[0];
    expect(String(failure?.hint)).toMatch(/was denied; grant the task role/);
    // Not retryable: one PUT per failed sync, none retried inside it.
    const puts = proxy.count((r) => r.op === 'PutObject', mark);
    const failures = Number((await healthJson(port, '/status')).body.consecutiveFailures);
    expect(failures).toBeGreaterThanOrEqual(3);
    expect(puts).toBeLessThanOrEqual(failures + 1);
    expect(logged(daemon, 'storage call failed; retrying')).toBe(false);
    expect(await httpStatus(port, '/readyz')).toBe(200);

    await awsCli(bucket, ['s3api', 'delete-bucket-policy', '--bucket', bucket]);
    await waitFor('recovery', () => logged(daemon, 'sync recovered'), 30_000);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect((await remoteCopy(bucket, dir)).rows).toBe(10);
  });
});
