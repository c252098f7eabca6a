/**
 * Shared pieces of the fault-injection suite: the built CLI run against the real S3 server, usually through
 * the fault proxy, and checks made with independent tools (the AWS CLI and the sqlite3 CLI).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import { TEMP_MARKER } from '../../src/fs-atomic.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { httpStatus, runCli, type Running } from '../helpers/cli.js';
import { createDatabase, integrity, rowCount, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, s3Env, s3Info } from '../helpers/s3.js';

/** A fault proxy in front of the local S3 server, closed when the test ends. */
export async function proxyForFile(): Promise<FaultProxy> {
  const proxy = await startFaultProxy(s3Info().endpoint);
  onTestFinished(() => proxy.close());
  return proxy;
}

/**
 * Environment for a `db-sync` subprocess on `bucket` through `endpoint` (the proxy, or the server itself).
 * The lease is off: its probe and renewals would be extra requests in counts that are about the fault.
 */
export function daemonEnv(bucket: string, endpoint: string, dbPath: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...s3Env(bucket),
    DB_S3_ENDPOINT: endpoint,
    DB_LOCAL_PATH: dbPath,
    DB_SYNC_INTERVAL: '1s',
    DB_SYNC_HEALTH_PORT: '0',
    DB_SYNC_LEASE: 'off',
    ...extra,
  };
}

/**
 * A fresh, empty versioned bucket and a `rows`-row database at `dir/db.sqlite3`: a volume whose data the
 * store does not have yet. (For a bucket that already holds a database, see `seededBucket`.)
 */
export async function bucketAndDatabase(
  rows: number,
  options: { wal?: boolean; bodyBytes?: number } = {},
): Promise<{ bucket: string; dir: string; dbPath: string }> {
  const { bucket } = await createBucket();
  const dir = tempDir();
  const dbPath = join(dir, 'db.sqlite3');
  createDatabase(dbPath, rows, options);
  return { bucket, dir, dbPath };
}

export const sha256File = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** db-sync's temp files in `dir` (snapshots, downloads, state files cut short). */
export function tempFiles(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.includes(TEMP_MARKER));
}

/** Incomplete multipart uploads in `bucket`, as the AWS CLI lists them. */
export async function multipartUploads(bucket: string): Promise<Array<{ Key: string; UploadId: string }>> {
  const out = (await awsCli(bucket, ['s3api', 'list-multipart-uploads', '--bucket', bucket])).trim();
  return out === '' ? [] : ((JSON.parse(out) as { Uploads?: Array<{ Key: string; UploadId: string }> }).Uploads ?? []);
}

/** Download `s3://bucket/key` with the AWS CLI to `dir` and describe it with sqlite3. */
export async function remoteCopy(
  bucket: string,
  dir: string,
  key = 'db.sqlite3',
): Promise<{ path: string; rows: number; integrity: string; sha256: string }> {
  const path = join(dir, `remote-${Date.now()}-${Math.random().toString(16).slice(2)}.sqlite3`);
  await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/${key}`, path]);
  return { path, rows: rowCount(path), integrity: integrity(path), sha256: sha256File(path) };
}

/** Keys in `bucket`, as the AWS CLI lists them. */
export async function keys(bucket: string): Promise<string[]> {
  const out = (await awsCli(bucket, ['s3api', 'list-objects-v2', '--bucket', bucket])).trim();
  return out === '' ? [] : ((JSON.parse(out) as { Contents?: Array<{ Key: string }> }).Contents ?? []).map((o) => o.Key);
}

/** Whether a log line with exactly this message was written. */
export function logged(daemon: Running, msg: string | RegExp): boolean {
  return daemon.logs().some((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg))));
}

/** The log lines with this message. */
export function logLines(daemon: Running, msg: string | RegExp): Array<Record<string, unknown>> {
  return daemon.logs().filter((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg))));
}

/** GET a health endpoint: status and parsed JSON body (status 0 when nothing answers). */
export async function healthJson(port: number, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  } catch {
    return { status: 0, body: {} };
  }
}

/** `db-sync health` against the daemon on `port`: its exit code (0 ready, 8 not). */
export async function healthProbe(port: number): Promise<number> {
  return (await runCli(['health'], { DB_SYNC_HEALTH_PORT: String(port) })).code;
}

export { httpStatus };
