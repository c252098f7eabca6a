/**
 * End to end: the built CLI as a subprocess against the real local S3 server, checked with independent
 * tools (the AWS CLI and the sqlite3 CLI), never with db-sync's own code.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, httpStatus, runCli, startCli, waitFor } from '../helpers/cli.js';
import { addRows, createDatabase, integrity, rowCount, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, s3Env } from '../helpers/s3.js';
import { startWriter } from '../helpers/writer.js';

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('db-sync run (daemon)', () => {
  it('restores on start, uploads while a writer runs, and on SIGTERM uploads every committed row and a backup key', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const seed = join(dir, 'seed.sqlite3');
    createDatabase(seed, 100);
    await awsCli(bucket, ['s3', 'cp', seed, `s3://${bucket}/db.sqlite3`]);

    const dbPath = join(dir, 'app', 'db.sqlite3');
    const port = await freePort();
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: dbPath, DB_SYNC_INTERVAL: '1s', DB_SYNC_HEALTH_PORT: String(port) };
    mkdirSync(join(dir, 'app'));

    const daemon = startCli(['run'], env);
    await waitFor('readiness', async () => (await httpStatus(port, '/readyz')) === 200);
    expect(rowCount(dbPath)).toBe(100);
    expect(daemon.logs().some((l) => l.msg === 'database restored')).toBe(true);

    const writer = startWriter(dbPath, 2);
    await waitFor('an upload while the writer runs', () => daemon.logs().some((l) => l.msg === 'snapshot uploaded'));
    await waitFor('the writer to commit 200 rows', () => writer.committed() >= 200);

    const committedBeforeSignal = writer.committed();
    daemon.child.kill('SIGTERM');
    const code = await daemon.exited;
    const finalCommitted = await writer.stop();
    expect(code).toBe(0);
    expect(daemon.logs().some((l) => l.msg === 'final sync complete')).toBe(true);

    const out = join(dir, 'downloaded.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/db.sqlite3`, out]);
    expect(integrity(out)).toBe('ok');
    const remoteRows = rowCount(out);
    expect(remoteRows).toBeGreaterThanOrEqual(100 + committedBeforeSignal);
    expect(remoteRows).toBeLessThanOrEqual(100 + finalCommitted);

    const listing = JSON.parse(await awsCli(bucket, ['s3api', 'list-objects-v2', '--bucket', bucket])) as {
      Contents: Array<{ Key: string }>;
    };
    const backups = listing.Contents.map((o) => o.Key).filter((k) => /^db\.sqlite3\.backup\.\d{8}_\d{6}$/.test(k));
    expect(backups).toHaveLength(1);
    const backupCopy = join(dir, 'backup.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/${backups[0]}`, backupCopy]);
    expect(sha256(backupCopy)).toBe(sha256(out));

    const head = JSON.parse(await awsCli(bucket, ['s3api', 'head-object', '--bucket', bucket, '--key', 'db.sqlite3'])) as {
      Metadata: Record<string, string>;
    };
    expect(head.Metadata.sha256).toBe(sha256(out));
    expect(head.Metadata['db-sync-version']).toMatch(/^\d+\.\d+\.\d+/);
    expect(Date.parse(head.Metadata['snapshot-at'] ?? '')).not.toBeNaN();
    expect(head.Metadata['source-host']).toBeTruthy();
  });

  it('costs no upload while the database is idle', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 10);
    // The interval loop's idle checks (continuous replication's idle is in test/e2e/continuous.test.ts).
    const daemon = startCli(['run'], {
      ...s3Env(bucket),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_INTERVAL: '1s',
      DB_SYNC_HEALTH_PORT: '0',
      DB_SYNC_CONTINUOUS: 'off',
    });
    await waitFor('the first upload', () => daemon.logs().some((l) => l.msg === 'snapshot uploaded'));
    await waitFor(
      'three idle checks',
      () => daemon.logs().filter((l) => l.msg === 'no change since last sync; upload skipped').length >= 3,
    );
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    const uploads = daemon.logs().filter((l) => l.msg === 'snapshot uploaded');
    expect(uploads).toHaveLength(1);
    const versions = JSON.parse(await awsCli(bucket, ['s3api', 'list-object-versions', '--bucket', bucket, '--prefix', 'db.sqlite3'])) as {
      Versions: Array<{ Key: string }>;
    };
    expect(versions.Versions.filter((v) => v.Key === 'db.sqlite3')).toHaveLength(1);
  });

  it('starts with an empty database on a first start and uploads what the app creates', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    const port = await freePort();
    const daemon = startCli(['run'], {
      ...s3Env(bucket),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_INTERVAL: '1s',
      DB_SYNC_HEALTH_PORT: String(port),
    });
    await waitFor('readiness', async () => (await httpStatus(port, '/readyz')) === 200);
    expect(existsSync(dbPath)).toBe(false);
    expect(daemon.logs().some((l) => l.msg === 'no remote copy; first start with an empty database')).toBe(true);
    createDatabase(dbPath, 7);
    daemon.child.kill('SIGINT');
    expect(await daemon.exited).toBe(0);
    const out = join(dir, 'out.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/db.sqlite3`, out]);
    expect(rowCount(out)).toBe(7);
  });

  it('exits non-zero when the final upload fails', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 3);
    const port = await freePort();
    const daemon = startCli(['run'], {
      ...s3Env(bucket),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_INTERVAL: '1h',
      DB_SYNC_HEALTH_PORT: String(port),
    });
    await waitFor('readiness', async () => (await httpStatus(port, '/readyz')) === 200);
    // Make the final snapshot impossible: the database is replaced by garbage.
    writeFileSync(dbPath, 'this is not a database, and it is long enough to be read as a header........');
    daemon.child.kill('SIGTERM');
    const code = await daemon.exited;
    expect(code).not.toBe(0);
    expect(daemon.logs().some((l) => String(l.msg).startsWith('FINAL SYNC FAILED'))).toBe(true);
  });
});

describe('db-sync manual commands', () => {
  it('upload, then download refuses to overwrite without --force and keeps the old file with it', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 42);
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: dbPath };

    const up = await runCli(['upload', '--json'], env);
    expect(up.code).toBe(0);
    const uploaded = JSON.parse(up.stdout.split('\n').find((l) => l.includes('"sha256"') && !l.includes('"level"')) ?? '{}') as {
      sha256: string;
    };
    const remote = join(dir, 'remote.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/db.sqlite3`, remote]);
    expect(sha256(remote)).toBe(uploaded.sha256);
    expect(rowCount(remote)).toBe(42);

    const before = readFileSync(dbPath);
    const refused = await runCli(['download'], env);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toContain('--force');
    expect(readFileSync(dbPath).equals(before)).toBe(true);

    const forced = await runCli(['download', '--force'], env);
    expect(forced.code).toBe(0);
    expect(rowCount(dbPath)).toBe(42);
    expect(rowCount(`${dbPath}.backup`)).toBe(42);
  });

  it('download of a missing object exits 4 and creates nothing', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    const result = await runCli(['download'], { ...s3Env(bucket), DB_LOCAL_PATH: dbPath });
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('does not exist');
    expect(existsSync(dbPath)).toBe(false);
  });

  it('shutdown uploads and writes a timestamped backup; startup restores into an empty path', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 5);
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: dbPath };
    const down = await runCli(['shutdown'], env);
    expect(down.code).toBe(0);
    const keys = (await awsCli(bucket, ['s3', 'ls', `s3://${bucket}/`])).split('\n').map((l) => l.trim().split(/\s+/).pop());
    expect(keys).toContain('db.sqlite3');
    expect(keys.some((k) => /^db\.sqlite3\.backup\.\d{8}_\d{6}$/.test(k ?? ''))).toBe(true);

    const fresh = join(dir, 'fresh.sqlite3');
    const up = await runCli(['startup'], { ...env, DB_LOCAL_PATH: fresh });
    expect(up.code).toBe(0);
    expect(rowCount(fresh)).toBe(5);
  });

  it('reports every configuration problem at once with exit 2', async () => {
    const result = await runCli(['run'], { DB_SYNC_INTERVAL: 'soon', DB_SYNC_HEALTH_PORT: 'x' });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('DB_SYNC_INTERVAL="soon"');
    expect(result.stderr).toContain('DB_SYNC_HEALTH_PORT="x"');
    const unknown = await runCli(['frobnicate'], {});
    expect(unknown.code).toBe(2);
  });

  it('stops on SIGHUP as on SIGTERM: final sync, exit 0 (unhandled, SIGHUP killed run without one)', async () => {
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 9);
    const daemon = startCli(['run'], {
      DB_SYNC_REPLICA_DIR: join(dir, 'replica'),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_HEALTH_PORT: '0',
      DB_SYNC_INTERVAL: '1h',
    });
    await waitFor('ready', () => daemon.logs().some((l) => l.msg === 'ready; syncing'));
    addRows(dbPath, 3);
    daemon.child.kill('SIGHUP');
    expect(await daemon.exited).toBe(0);
    expect(daemon.logs().some((l) => l.msg === 'final sync complete')).toBe(true);
    expect(rowCount(join(dir, 'replica', 'db.sqlite3'))).toBe(12);
  });

  it('refuses every duration beyond what a Node timer can wait (exit 2, naming the setting and the maximum)', async () => {
    // Before: 600h became a 1 ms timer: the loop spun, the deadlines fired at once, the app was SIGKILLed at once.
    const result = await runCli(['exec', '--interval', '600h', '--', 'true'], {
      DB_SYNC_REPLICA_DIR: tempDir(),
      DB_SYNC_SHUTDOWN_TIMEOUT: '1000h',
      DB_SYNC_CHILD_STOP_TIMEOUT: '1000h',
      DB_SYNC_RESTORE_TIMEOUT: '25000h',
      DB_SYNC_LEASE_TTL: '9999h',
    });
    expect(result.code).toBe(2);
    for (const name of [
      'DB_SYNC_INTERVAL',
      'DB_SYNC_SHUTDOWN_TIMEOUT',
      'DB_SYNC_CHILD_STOP_TIMEOUT',
      'DB_SYNC_RESTORE_TIMEOUT',
      'DB_SYNC_LEASE_TTL',
    ]) {
      expect(result.stderr).toMatch(new RegExp(`${name}="[^"]+" is too long; the maximum is 596h`));
    }
  });

  it('refuses a flag the command does not read (exit 2) instead of ignoring it', async () => {
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    const result = await runCli(['download', '--to', join(dir, 'elsewhere.sqlite3')], { DB_S3_BUCKET: 'unused', DB_LOCAL_PATH: dbPath });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--to is not an option of download (it is for: restore)');
    expect(existsSync(dbPath)).toBe(false);
    expect(existsSync(join(dir, 'elsewhere.sqlite3'))).toBe(false);
    // Flags after `--` belong to exec's child, whatever their name.
    const child = await runCli(['exec', '--replica-dir', dir, '--local-path', dbPath, '--', 'sh', '-c', 'exit 0', 'sh', '--to', 'x'], {
      DB_SYNC_HEALTH_PORT: '0',
      DB_SYNC_LEASE: 'off',
    });
    expect(child.stderr).not.toContain('is not an option');
    expect(child.code).toBe(0);
  });

  it('fails fast with exit 3 and a hint on wrong credentials and on a missing bucket', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 1);
    const badKey = await runCli(['upload'], { ...s3Env(bucket), DB_LOCAL_PATH: dbPath, AWS_SECRET_ACCESS_KEY: 'wrong-secret' });
    expect(badKey.code).toBe(3);
    expect(badKey.stderr).toMatch(/credentials/);
    const noBucket = await runCli(['upload'], { ...s3Env('no-such-bucket-here'), DB_LOCAL_PATH: dbPath });
    expect(noBucket.code).toBe(3);
    expect(noBucket.stderr).toContain('does not exist');
  });

  it('health exits 8 when no daemon answers', async () => {
    const port = await freePort();
    const result = await runCli(['health'], { DB_SYNC_HEALTH_PORT: String(port) });
    expect(result.code).toBe(8);
    expect(result.stdout).toContain('cannot reach');
  });

  it('upload of a file that is not SQLite fails with a clear error and uploads nothing', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    writeFileSync(dbPath, 'hello, I am a text file pretending to be a database'.repeat(10));
    const result = await runCli(['upload'], { ...s3Env(bucket), DB_LOCAL_PATH: dbPath });
    expect([6, 7]).toContain(result.code);
    expect(result.stderr).toMatch(/not a (SQLite )?database|SQLITE_NOTADB/i);
    expect((await awsCli(bucket, ['s3', 'ls', `s3://${bucket}/`])).trim()).toBe('');
  });
});
