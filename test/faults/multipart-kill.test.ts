/**
 * Fault: the process is SIGKILLed (ECS after its stop timeout, the OOM killer) in the middle of a multipart
 * upload. S3 must still hold the previous complete snapshot, and the next start must clean up what the
 * killed one left: the incomplete multipart upload (S3 bills its parts) and the temp snapshot file.
 */
import { statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PART_SIZE_BYTES } from '../../src/replica/s3-store.js';
import { freePort, httpStatus, runCli, startCli, waitFor } from '../helpers/cli.js';
import { addRows, integrity, rowCount } from '../helpers/db.js';
import { s3Info } from '../helpers/s3.js';
import { bucketAndDatabase, daemonEnv, logged, logLines, multipartUploads, proxyForFile, remoteCopy, tempFiles } from './support.js';

describe('fault: SIGKILL during a multipart upload', () => {
  it('leaves the previous snapshot in S3; the next start aborts the orphaned upload and removes the temp file', async () => {
    const proxy = await proxyForFile();
    // Bigger than one part, so the upload is multipart (three parts).
    const { bucket, dir, dbPath } = await bucketAndDatabase(20_000, { bodyBytes: 1_000 });
    expect(statSync(dbPath).size).toBeGreaterThan(2 * PART_SIZE_BYTES);
    // Synced once by db-sync (which records the sync beside the database) straight to the server.
    expect((await runCli(['upload'], daemonEnv(bucket, s3Info().endpoint, dbPath))).code).toBe(0);
    const previous = await remoteCopy(bucket, dir);
    // Local changes the store lacks: the daemon uploads them as soon as it starts.
    addRows(dbPath, 10);

    // Every part but the first is held: the upload is under way and cannot finish.
    proxy.set({ kind: 'blackhole' }, { match: (r) => r.op === 'UploadPart' && r.query.get('partNumber') !== '1' });
    const env = daemonEnv(bucket, proxy.url, dbPath);
    const first = startCli(['run'], env);
    await waitFor('a multipart upload in flight', () => proxy.held() > 0 && proxy.count((r) => r.op === 'CreateMultipartUpload') === 1);
    expect(tempFiles(dir).some((n) => n.includes('snapshot'))).toBe(true);
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe(137);
    proxy.release();
    proxy.pass();

    // What the kill left: an incomplete upload, a temp snapshot, and the previous object untouched.
    expect(await multipartUploads(bucket)).toHaveLength(1);
    expect(tempFiles(dir).length).toBeGreaterThan(0);
    const afterKill = await remoteCopy(bucket, dir);
    expect(afterKill.sha256).toBe(previous.sha256);
    expect(afterKill.rows).toBe(20_000);
    expect(afterKill.integrity).toBe('ok');

    // The next start cleans both up, then uploads the local changes.
    const port = await freePort();
    const second = startCli(['run'], { ...env, DB_SYNC_HEALTH_PORT: String(port) });
    await waitFor('readiness', async () => (await httpStatus(port, '/readyz')) === 200);
    await waitFor('the local changes uploaded', () => logged(second, 'snapshot uploaded'));
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    expect(logLines(second, 'aborted incomplete uploads left by an earlier run that did not finish')[0]?.keys).toEqual(['db.sqlite3']);
    expect(logged(second, 'removed temp files left by an earlier run that did not finish')).toBe(true);
    expect(await multipartUploads(bucket)).toEqual([]);
    expect(tempFiles(dir)).toEqual([]);
    const final = await remoteCopy(bucket, dir);
    expect(final.rows).toBe(20_010);
    expect(final.integrity).toBe('ok');
    expect(rowCount(dbPath)).toBe(20_010);
    expect(integrity(dbPath)).toBe('ok');
  });
});
