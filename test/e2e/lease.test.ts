/**
 * End to end: two `db-sync run` processes on one key, as two ECS tasks during a rolling deploy, against
 * the real local S3 server. The database lives in a versioned bucket; the lease in an unversioned one
 * (DB_SYNC_LEASE_BUCKET), the only place Ceph RGW enforces conditional writes. Results are checked with
 * the AWS CLI and sqlite3, never with db-sync's own code.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, httpStatus, runCli, startCli, waitFor, type Running } from '../helpers/cli.js';
import { integrity, rowCount, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, s3Env, seededBucket } from '../helpers/s3.js';
import { startWriter, type Writer } from '../helpers/writer.js';

const SEED_ROWS = 100;

interface Task {
  readonly env: Record<string, string>;
  readonly dbPath: string;
  readonly port: number;
}

/** A versioned data bucket seeded with a database, an unversioned lease bucket, and a factory for tasks. */
async function deployment(): Promise<{
  bucket: string;
  leaseBucket: string;
  dir: string;
  task: (name: string, extra?: Record<string, string>) => Promise<Task>;
}> {
  const { bucket, dir } = await seededBucket(SEED_ROWS);
  const { bucket: leaseBucket } = await createBucket({ versioned: false });
  const task = async (name: string, extra: Record<string, string> = {}): Promise<Task> => {
    mkdirSync(join(dir, name));
    const dbPath = join(dir, name, 'db.sqlite3');
    const port = await freePort();
    const env = {
      ...s3Env(bucket),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_INTERVAL: '1s',
      DB_SYNC_HEALTH_PORT: String(port),
      DB_SYNC_LEASE: 'required',
      DB_SYNC_LEASE_BUCKET: leaseBucket,
      DB_SYNC_LEASE_TTL: '3s',
      ...extra,
    };
    return { env, dbPath, port };
  };
  return { bucket, leaseBucket, dir, task };
}

/** Interval snapshots only: for the tests whose subject is the interval loop's uploads and idle checks. */
const INTERVAL_ONLY = { DB_SYNC_CONTINUOUS: 'off' };

const logged = (daemon: Running, msg: string): boolean => daemon.logs().some((l) => String(l.msg).startsWith(msg));
const WAITING = 'another db-sync holds the lease; waiting';

/** Start `db-sync run` for `t` and wait until it serves: ready, an app writing rows, one upload made. */
async function startServing(t: Task): Promise<{ daemon: Running; writer: Writer }> {
  const daemon = startCli(['run'], t.env);
  await waitFor('the first task ready', async () => (await httpStatus(t.port, '/readyz')) === 200);
  const writer = startWriter(t.dbPath, 2);
  await waitFor('an upload by the first task', () => logged(daemon, 'snapshot uploaded'));
  return { daemon, writer };
}

/** Start `db-sync run` for `t` and wait until it waits for the lease another task holds. */
async function startWaiting(t: Task): Promise<Running> {
  const daemon = startCli(['run'], t.env);
  await waitFor('the second task to wait for the lease', () => logged(daemon, WAITING));
  return daemon;
}

/** Versions of db.sqlite3, newest first, as the AWS CLI lists them. */
async function versions(bucket: string): Promise<string[]> {
  const out = JSON.parse(await awsCli(bucket, ['s3api', 'list-object-versions', '--bucket', bucket, '--prefix', 'db.sqlite3'])) as {
    Versions?: Array<{ Key: string; VersionId: string; LastModified: string }>;
  };
  return (out.Versions ?? [])
    .filter((v) => v.Key === 'db.sqlite3')
    .sort((a, b) => Date.parse(b.LastModified) - Date.parse(a.LastModified))
    .map((v) => v.VersionId);
}

async function leaseObject(leaseBucket: string): Promise<Record<string, unknown>> {
  const dir = tempDir();
  await awsCli(leaseBucket, ['s3', 'cp', `s3://${leaseBucket}/db.sqlite3.lease`, join(dir, 'lease.json')]);
  return JSON.parse(readFileSync(join(dir, 'lease.json'), 'utf8')) as Record<string, unknown>;
}

describe('db-sync run with a lease (two tasks, one key)', () => {
  it('the second waits, not ready, while the first serves; after its SIGTERM the second restores every row the first committed', async () => {
    const { bucket, leaseBucket, task } = await deployment();
    const a = await task('a');
    const b = await task('b');

    const { daemon: first, writer: writerA } = await startServing(a);
    const second = await startWaiting(b);
    expect((await runCli(['health'], { DB_SYNC_HEALTH_PORT: String(b.port) })).code).toBe(8);
    expect(await httpStatus(b.port, '/readyz')).toBe(503);
    expect(await httpStatus(b.port, '/healthz')).toBe(200);
    // The holder, as `db-sync lease --json` and the lease object itself name it.
    const shown = await runCli(['lease', '--json'], a.env);
    expect(shown.code).toBe(0);
    const status = JSON.parse(shown.stdout.split('\n').find((l) => l.includes('"state"') && !l.includes('"level"')) ?? '{}') as {
      state: string;
      holder: { pid: number };
    };
    expect(status.state).toBe('held');
    expect(status.holder.pid).toBe(first.child.pid);
    expect((await leaseObject(leaseBucket)).pid).toBe(first.child.pid);

    // The deploy stops the old task: its app first (ECS stops the app before the sidecar), then db-sync.
    const committedA = await writerA.stop();
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(logged(first, 'lease released')).toBe(true);

    await waitFor('the second task ready', async () => (await httpStatus(b.port, '/readyz')) === 200);
    expect(integrity(b.dbPath)).toBe('ok');
    expect(rowCount(b.dbPath)).toBe(SEED_ROWS + committedA);
    expect(second.logs().find((l) => l.msg === 'lease acquired')?.how).toBe('released');
    // The restore came after the first task's final upload, never before.
    const restoredAt = second.logs().findIndex((l) => l.msg === 'database restored');
    expect(restoredAt).toBeGreaterThan(second.logs().findIndex((l) => l.msg === 'lease acquired'));

    const writerB = startWriter(b.dbPath, 2);
    await waitFor('the second writer to commit', () => writerB.committed() >= 20);
    const committedB = await writerB.stop();
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    const out = join(tempDir(), 'final.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/db.sqlite3`, out]);
    expect(rowCount(out)).toBe(SEED_ROWS + committedA + committedB);
    expect((await leaseObject(leaseBucket)).released).toBe(true);
  });

  it('takes over from a SIGKILLed owner once its lease has gone unrenewed for the TTL', async () => {
    const { bucket, task } = await deployment();
    // About the interval loop (its snapshot holds the app's rows; its idle checks): continuous replication off.
    // The same takeover with continuous replication is in test/e2e/continuous.test.ts.
    const a = await task('a', INTERVAL_ONLY);
    const b = await task('b', INTERVAL_ONLY);
    const { daemon: first, writer: writerA } = await startServing(a);
    await writerA.stop();

    const second = await startWaiting(b);
    first.child.kill('SIGKILL');
    await first.exited;

    await waitFor('the second task ready', async () => (await httpStatus(b.port, '/readyz')) === 200);
    expect(logged(second, 'lease taken over from an owner that stopped renewing')).toBe(true);
    const remote = join(tempDir(), 'remote.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/db.sqlite3`, remote]);
    expect(integrity(b.dbPath)).toBe('ok');
    expect(rowCount(b.dbPath)).toBe(rowCount(remote));
    expect(rowCount(b.dbPath)).toBeGreaterThan(SEED_ROWS);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });

  it('a paused owner (SIGSTOP past the TTL, then SIGCONT) uploads nothing after losing the lease, and says so', async () => {
    const { bucket, task } = await deployment();
    // About the interval loop (its snapshot holds the app's rows; its idle checks): continuous replication off.
    // The same takeover with continuous replication is in test/e2e/continuous.test.ts.
    const a = await task('a', INTERVAL_ONLY);
    const b = await task('b', INTERVAL_ONLY);
    const { daemon: first, writer: writerA } = await startServing(a);

    const second = await startWaiting(b);
    // Pause while no upload is on the wire: hold the app still until db-sync has seen an idle interval.
    writerA.child.kill('SIGSTOP');
    const idle = first.logs().filter((l) => l.msg === 'no change since last sync; upload skipped').length;
    await waitFor('an idle check', () => first.logs().filter((l) => l.msg === 'no change since last sync; upload skipped').length > idle);
    first.child.kill('SIGSTOP');
    writerA.child.kill('SIGCONT'); // the app keeps writing while its sidecar is frozen

    await waitFor('the second task ready', async () => (await httpStatus(b.port, '/readyz')) === 200);
    const before = await versions(bucket);

    first.child.kill('SIGCONT');
    await waitFor('the first task to notice', () => logged(first, 'LEASE LOST'));
    expect(await httpStatus(a.port, '/healthz')).toBe(503);
    expect(await httpStatus(a.port, '/readyz')).toBe(503);
    await writerA.stop();
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(1);
    expect(logged(first, 'FINAL SYNC FAILED')).toBe(true);

    // Not one version of the database since the second task took over.
    expect(await versions(bucket)).toEqual(before);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });

  it('db-sync lease --force breaks the lease: the holder stops uploading and turns unhealthy', async () => {
    const { task } = await deployment();
    const a = await task('a');
    const holder = startCli(['run'], a.env);
    await waitFor('ready', async () => (await httpStatus(a.port, '/readyz')) === 200);
    const table = await runCli(['lease'], a.env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^STATE\s+held$/m);
    expect(table.stdout).toMatch(new RegExp(`^PID\\s+${holder.child.pid}$`, 'm'));

    const broken = await runCli(['lease', '--force'], a.env);
    expect(broken.code).toBe(0);
    expect(broken.stdout).toContain('broken');
    await waitFor('the holder to notice', () => logged(holder, 'LEASE LOST'));
    expect(await httpStatus(a.port, '/healthz')).toBe(503);
    holder.child.kill('SIGTERM');
    expect(await holder.exited).not.toBe(0);
  });

  it('exec whose app cannot start hands the lease on at once (released), without a final sync', async () => {
    const { leaseBucket, task } = await deployment();
    const a = await task('a');
    const result = await runCli(['exec', '--', 'no-such-command-db-sync-test'], { ...a.env, DB_SYNC_HEALTH_PORT: '0' });
    expect(result.code).toBe(127);
    expect((await leaseObject(leaseBucket)).released).toBe(true);
  });

  it('DB_SYNC_LEASE=required refuses to start where conditional writes are not enforced (a versioned RGW bucket)', async () => {
    const { bucket } = await createBucket();
    const dbPath = join(tempDir(), 'db.sqlite3');
    const result = await runCli(['run'], { ...s3Env(bucket), DB_LOCAL_PATH: dbPath, DB_SYNC_HEALTH_PORT: '0', DB_SYNC_LEASE: 'required' });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('does not enforce conditional writes');
    expect(result.stderr).toContain('DB_SYNC_LEASE_BUCKET');
  });
});
