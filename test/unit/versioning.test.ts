/**
 * The start-up versioning check's decisions. The real server covers versioned, unversioned and suspended
 * buckets (test/contract, test/e2e/ecs.test.ts); AccessDenied (a task role without s3:GetBucketVersioning)
 * and a throttled answer cannot be produced on demand there, so those come from aws-sdk-client-mock.
 */
import { GetBucketVersioningCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { DbSyncError, StorageError } from '../../src/errors.js';
import { checkVersioning } from '../../src/core/versioning.js';
import { createLogger } from '../../src/logger.js';
import { DirStore } from '../../src/replica/dir-store.js';
import { S3Store } from '../../src/replica/s3-store.js';
import { tempDir } from '../helpers/db.js';

const s3 = mockClient(S3Client);
afterAll(() => s3.restore());
beforeEach(() => s3.reset());

function capture(): { lines: () => Array<Record<string, unknown>>; log: ReturnType<typeof createLogger> } {
  let out = '';
  const log = createLogger({ level: 'debug', destination: { write: (s: string) => void (out += s) } });
  return {
    lines: () =>
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    log,
  };
}

const store = (): S3Store => new S3Store({ bucket: 'app-db', client: new S3Client({ region: 'eu-west-1' }) });
const denied = (): S3ServiceException =>
  new S3ServiceException({ name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 }, message: 'Access Denied' });
const throttled = (): S3ServiceException =>
  new S3ServiceException({ name: 'SlowDown', $fault: 'server', $metadata: { httpStatusCode: 503 }, message: 'Slow Down' });

describe('checkVersioning', () => {
  it('is quiet about an enabled bucket', async () => {
    s3.on(GetBucketVersioningCommand).resolves({ Status: 'Enabled' });
    const { lines, log } = capture();
    expect(await checkVersioning(store(), 'required', { log })).toBe('enabled');
    expect(lines().filter((l) => l.level === 'warn')).toEqual([]);
  });

  it('warns, naming the bucket, when versioning is suspended or was never enabled', async () => {
    for (const [status, state] of [
      ['Suspended', 'suspended'],
      [undefined, 'disabled'],
    ] as const) {
      s3.on(GetBucketVersioningCommand).resolves({ Status: status });
      const { lines, log } = capture();
      expect(await checkVersioning(store(), 'warn', { log })).toBe(state);
      const warning = lines().find((l) => l.level === 'warn');
      expect(String(warning?.msg)).toContain('versioning of s3://app-db is');
      expect(warning?.versioning).toBe(state);
    }
  });

  it('refuses with a usage error (exit 2) and a hint when required and not enabled', async () => {
    s3.on(GetBucketVersioningCommand).resolves({ Status: 'Suspended' });
    const error = await checkVersioning(store(), 'required', { log: capture().log }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DbSyncError);
    expect((error as DbSyncError).exitCode).toBe(2);
    expect((error as DbSyncError).hint).toContain('put-bucket-versioning');
  });

  it('without s3:GetBucketVersioning: warns and reports unknown, or refuses (exit 3) when required', async () => {
    s3.on(GetBucketVersioningCommand).rejects(denied());
    const { lines, log } = capture();
    expect(await checkVersioning(store(), 'warn', { log })).toBe('unknown');
    expect(String(lines().find((l) => l.level === 'warn')?.msg)).toContain('grant s3:GetBucketVersioning');
    const error = await checkVersioning(store(), 'required', { log }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).exitCode).toBe(3);
  });

  it('passes a retryable error on (the sidecar retries it as for the restore)', async () => {
    s3.on(GetBucketVersioningCommand).rejects(throttled());
    const error = await checkVersioning(store(), 'warn', { log: capture().log }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).retryable).toBe(true);
  });

  it('does not ask when off; a directory replica is always versioned', async () => {
    expect(await checkVersioning(store(), 'off', { log: capture().log })).toBeUndefined();
    expect(s3.commandCalls(GetBucketVersioningCommand)).toHaveLength(0);
    expect(await checkVersioning(new DirStore(tempDir()), 'required', { log: capture().log })).toBe('enabled');
  });
});
