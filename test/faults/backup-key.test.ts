/**
 * The backup key at stop, against the real S3 server through the fault proxy (review findings 8 and 11):
 * a failed backup copy after a good final upload is reported as exactly that (exit 9 for `run`, the app's
 * own code for `exec`), never as "changes are NOT in the store"; and a stop with nothing changed since
 * the newest backup writes no second full copy. Results are checked with the AWS CLI and sqlite3.
 */
import { describe, expect, it } from 'vitest';
import { startCli, waitFor } from '../helpers/cli.js';
import { addRows } from '../helpers/db.js';
import { bucketAndDatabase, daemonEnv, keys, logged, logLines, proxyForFile, remoteCopy } from './support.js';

const NOT_WRITTEN = /^final upload done; backup key NOT written: /;

describe('fault: the backup copy fails after the final upload', () => {
  it('run: exit 9 and "final upload done; backup key NOT written", with every row in the store', async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(20);
    const daemon = startCli(['run'], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_INTERVAL: '1h' }));
    await waitFor('the first upload', () => logged(daemon, 'snapshot uploaded'));
    addRows(dbPath, 5);
    proxy.set({ kind: 'error', status: 403, code: 'AccessDenied', message: 'Access Denied' }, { match: (r) => r.op === 'CopyObject' });
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(9);
    expect(logLines(daemon, NOT_WRITTEN)).toHaveLength(1);
    expect(daemon.stdout()).not.toContain('FINAL SYNC FAILED');
    expect(daemon.stdout()).not.toContain('NOT in the store');
    const remote = await remoteCopy(bucket, dir);
    expect(remote.rows).toBe(25);
    expect(remote.integrity).toBe('ok');
    expect((await keys(bucket)).filter((k) => k.includes('.backup.'))).toEqual([]);
  });

  it("exec: the app's own exit code stands, and the log says what is missing", async () => {
    const proxy = await proxyForFile();
    const { bucket, dir, dbPath } = await bucketAndDatabase(7);
    proxy.set({ kind: 'error', status: 403, code: 'AccessDenied', message: 'Access Denied' }, { match: (r) => r.op === 'CopyObject' });
    const app = `sqlite3 ${dbPath} "INSERT INTO rows (body) VALUES ('last');" && exit 3`;
    const daemon = startCli(['exec', '--', 'sh', '-c', app], daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_INTERVAL: '1h' }));
    expect(await daemon.exited).toBe(3);
    expect(logLines(daemon, NOT_WRITTEN)).toHaveLength(1);
    expect(daemon.stdout()).not.toContain('FINAL SYNC FAILED');
    expect((await remoteCopy(bucket, dir)).rows).toBe(8);
  });
});

describe('the backup key when nothing changed', () => {
  it('a restart that changed nothing writes no second backup (a crash loop does not pile up full copies)', async () => {
    const proxy = await proxyForFile();
    const { bucket, dbPath } = await bucketAndDatabase(12);
    const env = daemonEnv(bucket, proxy.url, dbPath, { DB_SYNC_INTERVAL: '1h' });
    const backups = async (): Promise<string[]> => (await keys(bucket)).filter((k) => k.startsWith('db.sqlite3.backup.'));

    const first = startCli(['run'], env);
    await waitFor('the first upload', () => logged(first, 'snapshot uploaded'));
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(await backups()).toHaveLength(1);

    const second = startCli(['run'], env);
    await waitFor('ready', () => logged(second, 'ready; syncing'));
    const copies = proxy.mark();
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(logLines(second, /^backup key not written: the newest backup already holds this content/)).toHaveLength(1);
    expect(proxy.count((r) => r.op === 'CopyObject', copies)).toBe(0);
    expect(await backups()).toHaveLength(1);

    addRows(dbPath, 1);
    const third = startCli(['run'], env);
    await waitFor('ready', () => logged(third, 'ready; syncing'));
    third.child.kill('SIGTERM');
    expect(await third.exited).toBe(0);
    expect(await backups()).toHaveLength(2);
  });
});
