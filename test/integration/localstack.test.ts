/**
 * The S3 store and a restore round trip against LocalStack, through testcontainers. Runs only where a
 * Docker engine is reachable; elsewhere the suite is skipped and says why.
 */
import { join } from 'node:path';
import { CreateBucketCommand, PutBucketVersioningCommand, S3Client } from '@aws-sdk/client-s3';
import { LocalstackContainer, type StartedLocalStackContainer } from '@testcontainers/localstack';
import { getContainerRuntimeClient } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lease } from '../../src/core/lease.js';
import { probeConditionalWrites } from '../../src/core/lease-probe.js';
import { restoreNewestGood } from '../../src/core/restore.js';
import { snapshotAndUpload } from '../../src/core/upload.js';
import { silentLogger } from '../../src/logger.js';
import { S3Store } from '../../src/replica/s3-store.js';
import { createDatabase, rowCount, tempDir } from '../helpers/db.js';

async function dockerUnavailableReason(): Promise<string | undefined> {
  try {
    await getContainerRuntimeClient();
    return undefined;
  } catch (error) {
    return (error as Error).message.split('\n')[0];
  }
}

const reason = await dockerUnavailableReason();
if (reason) console.log(`[localstack] skipped: no Docker engine reachable (${reason})`);

/**
 * For the enclosing suite: a LocalStack container of `image` with the versioned bucket `bucket`, and an S3
 * store on it (`.store`, set once the suite's setup has run); both closed after the suite.
 */
function localstackBucket(image: string, bucket: string): { readonly store: S3Store } {
  let container: StartedLocalStackContainer | undefined;
  let store: S3Store | undefined;

  beforeAll(async () => {
    container = await new LocalstackContainer(image).start();
    process.env.AWS_ACCESS_KEY_ID = 'test';
    process.env.AWS_SECRET_ACCESS_KEY = 'test';
    const client = new S3Client({ endpoint: container.getConnectionUri(), region: 'us-east-1', forcePathStyle: true });
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    await client.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    client.destroy();
    store = new S3Store({ bucket, endpoint: container.getConnectionUri(), region: 'us-east-1', forcePathStyle: true });
  }, 300_000);

  afterAll(async () => {
    store?.close();
    await container?.stop();
  });

  return {
    get store(): S3Store {
      if (!store) throw new Error(`LocalStack (${image}) did not start`);
      return store;
    },
  };
}

describe.skipIf(reason !== undefined)('S3 store on LocalStack', () => {
  const localstack = localstackBucket('localstack/localstack:3.8', 'db-sync-localstack');

  it('uploads a snapshot and restores it, verified', async () => {
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 25);
    const { store } = localstack;
    const log = silentLogger();
    const ctx = { store, key: 'db.sqlite3', dbPath, check: 'quick' as const, origin: { host: 'test', toolVersion: '0' }, log };
    const outcome = await snapshotAndUpload(ctx, {});
    expect(outcome.uploaded?.versionId).toBeTruthy();
    const target = join(dir, 'restored.sqlite3');
    const restored = await restoreNewestGood(store, 'db.sqlite3', target, { check: 'quick', log, keepPrevious: false });
    expect(restored?.checksumVerified).toBe(true);
    expect(rowCount(target)).toBe(25);
  });
});

/**
 * The lease on LocalStack, which enforces conditional writes in versioned buckets as AWS does (If-Match
 * arrived in LocalStack 4, after the 3.8 image above). Not run on machines without Docker.
 */
describe.skipIf(reason !== undefined)('lease on LocalStack', () => {
  const localstack = localstackBucket('localstack/localstack:4.4', 'db-sync-lease');

  it('probes conditional writes as enforced in a versioned bucket, and hands a lease from one owner to the next', async () => {
    const { store } = localstack;
    const log = silentLogger();
    expect(await probeConditionalWrites(store, 'db.sqlite3.lease', { log })).toMatchObject({ enforced: true, problems: [] });
    const options = { store, key: 'db.sqlite3.lease', location: 'localstack', ttlMs: 30_000, log };
    const first = new Lease({ ...options, holder: { host: 'a', toolVersion: '0' } });
    const second = new Lease({ ...options, holder: { host: 'b', toolVersion: '0' } });
    try {
      expect((await first.tryAcquire()).acquired).toBe(true);
      expect(await second.tryAcquire()).toMatchObject({ acquired: false, holder: { host: 'a' } });
      await first.renew();
      await first.release();
      expect(await second.tryAcquire()).toMatchObject({ acquired: true, how: 'released' });
      await expect(first.renew()).rejects.toThrow();
    } finally {
      first.stop();
      second.stop();
    }
  });
});
