/**
 * End to end: what an ECS operator relies on, with the built CLI against the real local S3 server.
 * - bucket versioning is read at start: a warning naming an unversioned bucket (or exit 2 when required),
 *   and the state in /status;
 * - a task that waits for another task's lease longer than DB_SYNC_LEASE_WAIT_WARN says so (a stalled
 *   rolling deploy): a distinct log line, /metrics and /status;
 * - CloudWatch Embedded Metric Format lines on stdout, checked against the EMF specification's structure.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, httpStatus, runCli, startCli, waitFor, type Running } from '../helpers/cli.js';
import { addRows, createDatabase, tempDir } from '../helpers/db.js';
import { createBucket, s3Env, seededBucket } from '../helpers/s3.js';

const logged = (daemon: Running, msg: string): boolean => daemon.logs().some((l) => String(l.msg).startsWith(msg));

async function json(port: number, path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

async function stop(daemon: Running): Promise<number> {
  daemon.child.kill('SIGTERM');
  return daemon.exited;
}

describe('bucket versioning at start', () => {
  const NOT_VERSIONED = 'versioning of s3://';

  it('warns, naming the bucket, when the bucket is not versioned, and shows it in /status', async () => {
    const { bucket } = await createBucket({ versioned: false });
    const port = await freePort();
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: join(tempDir(), 'db.sqlite3'), DB_SYNC_LEASE: 'off', DB_SYNC_HEALTH_PORT: String(port) };
    const daemon = startCli(['run'], env);
    await waitFor('ready', async () => (await httpStatus(port, '/readyz')) === 200);
    const warning = daemon.logs().find((l) => String(l.msg).startsWith(NOT_VERSIONED));
    expect(warning?.level).toBe('warn');
    expect(String(warning?.msg)).toContain(`s3://${bucket}`);
    expect(String(warning?.msg)).toContain('is not enabled');
    expect((await json(port, '/status')).versioning).toBe('disabled');
    expect(await stop(daemon)).toBe(0);
  });

  it('says nothing about a versioned bucket, and /status shows it enabled', async () => {
    const { bucket } = await createBucket();
    const port = await freePort();
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: join(tempDir(), 'db.sqlite3'), DB_SYNC_LEASE: 'off', DB_SYNC_HEALTH_PORT: String(port) };
    const daemon = startCli(['run'], { ...env, DB_SYNC_VERSIONING_CHECK: 'required' });
    await waitFor('ready', async () => (await httpStatus(port, '/readyz')) === 200);
    expect(logged(daemon, NOT_VERSIONED)).toBe(false);
    expect((await json(port, '/status')).versioning).toBe('enabled');
    expect(await stop(daemon)).toBe(0);
  });

  it('refuses to start (exit 2) on an unversioned bucket with DB_SYNC_VERSIONING_CHECK=required, before touching the database', async () => {
    const { bucket } = await createBucket({ versioned: false });
    const dbPath = join(tempDir(), 'db.sqlite3');
    const r = await runCli(['run'], {
      ...s3Env(bucket),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_LEASE: 'off',
      DB_SYNC_HEALTH_PORT: '0',
      DB_SYNC_VERSIONING_CHECK: 'required',
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`versioning of s3://${bucket}`);
    expect(r.stderr).toContain('hint: turn versioning on');
  });
});

describe('a stalled lease wait (rolling deploy that starts before it stops)', () => {
  it('logs LEASE WAIT STALLED once past DB_SYNC_LEASE_WAIT_WARN, shows it in /metrics and /status, and clears it once the lease is taken', async () => {
    const { bucket, dir } = await seededBucket(10);
    const { bucket: leaseBucket } = await createBucket({ versioned: false });
    const task = async (name: string): Promise<{ env: Record<string, string>; port: number }> => {
      const port = await freePort();
      return {
        port,
        env: {
          ...s3Env(bucket),
          DB_LOCAL_PATH: join(dir, `${name}.sqlite3`),
          DB_SYNC_HEALTH_PORT: String(port),
          DB_SYNC_LEASE: 'required',
          DB_SYNC_LEASE_BUCKET: leaseBucket,
          DB_SYNC_LEASE_TTL: '3s',
          DB_SYNC_LEASE_WAIT_WARN: '2s',
        },
      };
    };
    const oldTask = await task('old');
    const old = startCli(['run'], oldTask.env);
    await waitFor('the old task ready', async () => (await httpStatus(oldTask.port, '/readyz')) === 200);
    const newTask = await task('new');
    const next = startCli(['run'], newTask.env);
    try {
      await waitFor('the stall line', () => logged(next, 'LEASE WAIT STALLED'));
      const line = next.logs().find((l) => String(l.msg).startsWith('LEASE WAIT STALLED'));
      expect(line?.level).toBe('error');
      expect(String(line?.hint)).toContain('minimumHealthyPercent 0, maximumPercent 100');
      expect(line?.waitedMs).toBeGreaterThanOrEqual(2_000);
      expect(await metric(newTask.port, 'db_sync_lease_wait_stalled')).toBe(1);
      expect(await metric(newTask.port, 'db_sync_lease_wait_seconds')).toBeGreaterThanOrEqual(2);
      expect(await httpStatus(newTask.port, '/readyz')).toBe(503);
      const waiting = await json(newTask.port, '/status');
      expect(waiting.leaseWait).toMatchObject({ stalled: true });
      // Only once: the old task keeps renewing, and the line is not repeated.
      await new Promise((r) => setTimeout(r, 2_500));
      expect(next.logs().filter((l) => String(l.msg).startsWith('LEASE WAIT STALLED'))).toHaveLength(1);

      expect(await stop(old)).toBe(0);
      await waitFor('the new task ready', async () => (await httpStatus(newTask.port, '/readyz')) === 200);
      expect(logged(next, 'lease wait over')).toBe(true);
      expect(await metric(newTask.port, 'db_sync_lease_wait_stalled')).toBe(0);
      expect(await metric(newTask.port, 'db_sync_lease_wait_seconds')).toBe(0);
      expect((await json(newTask.port, '/status')).leaseWait).toEqual({ since: null, stalled: false });
    } finally {
      old.child.kill('SIGTERM');
      next.child.kill('SIGTERM');
      await Promise.all([old.exited, next.exited]);
    }
  });
});

/** CloudWatch's StandardUnit values (PutMetricData / EMF `Unit`). */
const STANDARD_UNITS = new Set([
  'Seconds', 'Microseconds', 'Milliseconds', 'Bytes', 'Kilobytes', 'Megabytes', 'Gigabytes', 'Terabytes', 'Bits', 'Kilobits',
  'Megabits', 'Gigabits', 'Terabits', 'Percent', 'Count', 'Bytes/Second', 'Kilobytes/Second', 'Megabytes/Second',
  'Gigabytes/Second', 'Terabytes/Second', 'Bits/Second', 'Kilobits/Second', 'Megabits/Second', 'Gigabits/Second',
  'Terabits/Second', 'Count/Second', 'None',
]); // prettier-ignore

/**
 * Check one line against the EMF specification's structure; returns the problems found. The root is an
 * object with `_aws` { Timestamp (ms, number), CloudWatchMetrics: [{ Namespace, Dimensions: [[name…]],
 * Metrics: [{ Name, Unit }] }] }; every dimension is a top-level string member and every metric a
 * top-level number (or array of numbers); at most 30 dimensions per set and 100 metrics per directive.
 */
function emfProblems(doc: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const aws = doc._aws as Record<string, unknown> | undefined;
  if (typeof aws !== 'object' || aws === null) return ['no _aws object'];
  if (typeof aws.Timestamp !== 'number' || !Number.isInteger(aws.Timestamp)) problems.push('_aws.Timestamp is not an integer');
  const directives = aws.CloudWatchMetrics;
  if (!Array.isArray(directives) || directives.length === 0) return [...problems, '_aws.CloudWatchMetrics is not a non-empty array'];
  for (const d of directives as Array<Record<string, unknown>>) {
    if (typeof d.Namespace !== 'string' || d.Namespace.length === 0 || d.Namespace.length > 1024) problems.push('bad Namespace');
    if (!Array.isArray(d.Dimensions)) problems.push('Dimensions is not an array');
    for (const set of (d.Dimensions ?? []) as unknown[]) {
      if (!Array.isArray(set) || set.length > 30) problems.push('a dimension set is not an array of at most 30');
      for (const name of set as unknown[]) {
        if (typeof name !== 'string' || typeof doc[name] !== 'string') problems.push(`dimension ${String(name)} is not a top-level string`);
      }
    }
    if (!Array.isArray(d.Metrics) || d.Metrics.length === 0 || d.Metrics.length > 100) problems.push('Metrics is not 1-100 entries');
    for (const m of (d.Metrics ?? []) as Array<Record<string, unknown>>) {
      if (typeof m.Name !== 'string' || m.Name.length === 0) problems.push('a metric has no Name');
      if (typeof m.Unit !== 'string' || !STANDARD_UNITS.has(m.Unit)) problems.push(`metric ${String(m.Name)} has unit ${String(m.Unit)}`);
      const v = doc[String(m.Name)];
      const numeric = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x);
      if (!(numeric(v) || (Array.isArray(v) && v.every(numeric)))) problems.push(`metric ${String(m.Name)} has no numeric value`);
    }
  }
  return problems;
}

describe('CloudWatch Embedded Metric Format', () => {
  it('writes EMF lines to stdout that follow the specification and carry the key metrics', async () => {
    const { bucket, dir } = await seededBucket(20);
    const dbPath = join(dir, 'app', 'db.sqlite3');
    const port = await freePort();
    const daemon = startCli(['run'], {
      ...s3Env(bucket),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_INTERVAL: '1s',
      DB_SYNC_HEALTH_PORT: String(port),
      DB_SYNC_LEASE: 'off',
      DB_SYNC_CLOUDWATCH_METRICS: 'true',
      DB_SYNC_CLOUDWATCH_NAMESPACE: 'Test/DbSync',
      LOG_LEVEL: 'info',
    });
    await waitFor('ready', async () => (await httpStatus(port, '/readyz')) === 200);
    addRows(dbPath, 50);
    await waitFor('an upload', async () => (await json(port, '/status')).uploads === 1);
    expect(await stop(daemon)).toBe(0);

    const lines = daemon
      .stdout()
      .split('\n')
      .filter((l) => l.includes('"_aws"'));
    const docs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(docs.length).toBeGreaterThanOrEqual(3); // at start, when ready, after the upload, at exit
    for (const doc of docs) expect(emfProblems(doc)).toEqual([]);
    for (const doc of docs) {
      const directive = (doc._aws as { CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][] }> }).CloudWatchMetrics[0];
      expect(directive?.Namespace).toBe('Test/DbSync');
      expect(directive?.Dimensions).toEqual([['Database']]);
      expect(doc.Database).toBe(`s3://${bucket}/db.sqlite3`);
    }
    const sum = (name: string): number => docs.reduce((n, d) => n + (typeof d[name] === 'number' ? d[name] : 0), 0);
    // The deltas add up to what the log says happened (the restore is not an upload; the final sync may add one).
    const uploads = daemon.logs().filter((l) => l.msg === 'snapshot uploaded');
    expect(uploads.length).toBeGreaterThanOrEqual(1);
    expect(sum('Uploads')).toBe(uploads.length);
    expect(sum('BytesUploaded')).toBe(uploads.reduce((n, l) => n + Number(l.sizeBytes), 0));
    expect(sum('SyncFailures')).toBe(0);
    expect(docs.filter((d) => 'RestoreDurationSeconds' in d)).toHaveLength(1);
    const afterReady = docs.filter((d) => d.Ready === 1);
    expect(afterReady.length).toBeGreaterThanOrEqual(2);
    for (const d of afterReady) {
      expect(d.LastSuccessfulSyncAgeSeconds).toBeGreaterThanOrEqual(0);
      expect(d.DataAtRiskSeconds).toBeGreaterThanOrEqual(0);
    }
    // Before the database is ready there is no sync age yet: an alarm treating missing data as breaching fires.
    expect(docs[0]?.Ready).toBe(0);
    expect(docs[0]).not.toHaveProperty('LastSuccessfulSyncAgeSeconds');
  });

  it('writes none by default', async () => {
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 5);
    const daemon = startCli(['run'], { DB_SYNC_REPLICA_DIR: join(dir, 'replica'), DB_LOCAL_PATH: dbPath, DB_SYNC_HEALTH_PORT: '0' });
    await waitFor('ready', () => logged(daemon, 'ready; syncing'));
    expect(await stop(daemon)).toBe(0);
    expect(daemon.stdout()).toContain('final sync complete');
    expect(daemon.stdout()).not.toContain('"_aws"');
  });
});
