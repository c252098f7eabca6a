/**
 * Signals at awkward moments: SIGTERM during the initial restore, during an upload, and twice in a row.
 * The fault proxy slows the link so the restore or upload is really in flight when the signal arrives.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, httpStatus, startCli, waitFor } from '../helpers/cli.js';
import { addRows, integrity, rowCount } from '../helpers/db.js';
import { awsCli, seededBucket } from '../helpers/s3.js';
import { bucketAndDatabase, daemonEnv, keys, logged, multipartUploads, proxyForFile, remoteCopy, tempFiles } from './support.js';

/** 20 MB: three multipart parts, several seconds on the throttled link. */
const ROWS = 20_000;
const BODY_BYTES = 1_000;
const SLOW_LINK = { kind: 'throttle', bytesPerSecond: 2_000_000 } as const;

async function versionsOf(bucket: string, key: string): Promise<number> {
  const out = JSON.parse(await awsCli(bucket, ['s3api', 'list-object-versions', '--bucket', bucket, '--prefix', key])) as {
    Versions?: Array<{ Key: string }>;
  };
  return (out.Versions ?? []).filter((v) => v.Key === key).length;
}

describe('fault: signals at awkward moments', () => {
  it('SIGTERM during the initial restore: stops at once, installs nothing, uploads nothing', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir } = await seededBucket(ROWS, { bodyBytes: BODY_BYTES });
    const before = await remoteCopy(bucket, dir);

    proxy.set(SLOW_LINK, { match: (r) => r.op === 'GetObject' });
    const appDir = join(dir, 'app');
    const dbPath = join(appDir, 'db.sqlite3');
    const port = await freePort();
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_HEALTH_PORT: String(port) }));
    await waitFor('a download in progress', () => existsSync(appDir) && tempFiles(appDir).some((n) => n.includes('restore')));
    expect(await httpStatus(port, '/readyz')).toBe(503);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);

    expect(logged(daemon, 'stopped before the database was ready; nothing uploaded')).toBe(true);
    expect(logged(daemon, 'database restored')).toBe(false);
    expect(existsSync(dbPath)).toBe(false);
    expect(tempFiles(appDir)).toEqual([]);
    expect(await keys(bucket)).toEqual(['db.sqlite3']);
    expect(await versionsOf(bucket, 'db.sqlite3')).toBe(1);
    expect((await remoteCopy(bucket, dir)).sha256).toBe(before.sha256);
  });

  it('SIGTERM during an upload: the periodic upload is cancelled and the final sync uploads everything at once', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(ROWS, { bodyBytes: BODY_BYTES });
    // A periodic upload in flight: the interval loop (continuous replication has none to cancel).
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_SHUTDOWN_TIMEOUT: '60s', DB_SYNC_CONTINUOUS: 'off' }));
    await waitFor('the first upload', () => logged(daemon, 'snapshot uploaded'));

    proxy.set(SLOW_LINK, { match: (r) => r.op === 'UploadPart' });
    addRows(dbPath, 1);
    await waitFor('an upload in flight', () => proxy.count((r) => r.op === 'UploadPart' && r.fault === 'throttle') > 0);
    daemon.child.kill('SIGTERM');
    addRows(dbPath, 1); // a write after the signal, before the app stops: the final sync must carry it
    expect(await daemon.exited).toBe(0);

    expect(logged(daemon, 'cancelling the periodic sync in flight; the final snapshot supersedes it')).toBe(true);
    expect(logged(daemon, 'final sync complete')).toBe(true);
    const remote = await remoteCopy(bucket, dir);
    expect(remote.rows).toBe(ROWS + 2);
    expect(remote.integrity).toBe('ok');
    expect((await keys(bucket)).filter((k) => k.startsWith('db.sqlite3.backup.'))).toHaveLength(1);
    expect(await multipartUploads(bucket)).toEqual([]);
    expect(tempFiles(dir)).toEqual([]);
  });

  it('SIGTERM twice during the final upload: exits 130 at once, says the changes are not in S3, leaves no partial upload', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(ROWS, { bodyBytes: BODY_BYTES });
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_INTERVAL: '1h', DB_SYNC_SHUTDOWN_TIMEOUT: '60s' }));
    await waitFor('the first upload', () => logged(daemon, 'snapshot uploaded'));
    const before = await remoteCopy(bucket, dir);

    proxy.set(SLOW_LINK, { match: (r) => r.op === 'UploadPart' });
    addRows(dbPath, 1);
    daemon.child.kill('SIGTERM');
    await waitFor('the final upload in flight', () => proxy.count((r) => r.op === 'UploadPart' && r.fault === 'throttle') > 0);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(130);

    expect(logged(daemon, 'second stop request; aborting now')).toBe(true);
    expect(logged(daemon, /^FINAL SYNC FAILED \(aborted by a second signal\)/)).toBe(true);
    const remote = await remoteCopy(bucket, dir);
    expect(remote.sha256).toBe(before.sha256);
    expect(remote.integrity).toBe('ok');
    expect(await multipartUploads(bucket)).toEqual([]);
    expect(tempFiles(dir)).toEqual([]);
    expect(rowCount(dbPath)).toBe(ROWS + 1);
    expect(integrity(dbPath)).toBe('ok');
  });
});
