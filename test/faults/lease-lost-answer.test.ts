/**
 * Fault: S3 applies a lease write but its answer never arrives (review finding 3). The lease lives in an
 * unversioned bucket on the real local S3 server (the only place Ceph RGW enforces conditional writes),
 * reached through the fault proxy, which forwards the write, lets the server apply it, then closes the
 * connection. The holder must recognise its own record afterwards, never declare the lease lost to itself.
 */
import { describe, expect, it } from 'vitest';
import { Lease, parseLeaseRecord } from '../../src/core/lease.js';
import { probeConditionalWrites } from '../../src/core/lease-probe.js';
import { silentLogger } from '../../src/logger.js';
import { S3Store } from '../../src/replica/s3-store.js';
import { createBucket, s3Info } from '../helpers/s3.js';
import { proxyForFile } from './support.js';

const KEY = 'db.sqlite3.lease';
const log = silentLogger();

/** A lease on a fresh unversioned bucket through a fault proxy, after the probe the sidecar runs first. */
async function leaseThroughProxy(): Promise<{
  lease: Lease;
  store: S3Store;
  direct: S3Store;
  proxy: Awaited<ReturnType<typeof proxyForFile>>;
}> {
  const { store: direct, bucket } = await createBucket({ versioned: false });
  const proxy = await proxyForFile();
  const s3 = s3Info();
  const store = new S3Store({ bucket, endpoint: proxy.url, region: s3.region, forcePathStyle: true });
  // As the sidecar does: the probe also teaches the store which If-Match form the server matches.
  expect((await probeConditionalWrites(store, KEY, { log })).enforced).toBe(true);
  const lease = new Lease({
    store,
    key: KEY,
    location: `s3://${bucket}`,
    ttlMs: 30_000,
    holder: { host: 'task-a', toolVersion: 'test' },
    log,
  });
  return { lease, store, direct, proxy };
}

const leaseWrite = (key: string) => (r: { op: string; key: string }) => r.op === 'PutObject' && r.key === key;

describe('fault: a lease write applied by S3 whose answer is lost', () => {
  it('a renewal: the holder adopts its own record and stays the holder', async () => {
    const { lease, store, direct, proxy } = await leaseThroughProxy();
    try {
      expect((await lease.tryAcquire()).acquired).toBe(true);
      const mark = proxy.mark();
      proxy.set({ kind: 'drop-response' }, { match: leaseWrite(KEY), times: 1 });
      // The renewal reaches S3 and is applied; the holder sees a broken connection, not 412.
      await lease.renew().catch(() => undefined);
      const dropped = proxy.requests.slice(mark).filter((r) => r.fault === 'drop-response');
      expect(dropped.map((r) => r.status)).toEqual([200]);
      // The next renewal carries the etag from before the lost answer and fails its condition: against our own record.
      await lease.renew();
      await lease.assertHeld();
      expect(lease.state).toBe('held');
      const record = parseLeaseRecord((await direct.getBytes(KEY))?.bytes ?? Buffer.alloc(0));
      expect(record?.owner).toBe(lease.owner);
    } finally {
      lease.stop();
      store.close();
      direct.close();
    }
  });

  it('the create: the next attempt finds its own record and takes it, without waiting out a TTL', async () => {
    const { lease, store, direct, proxy } = await leaseThroughProxy();
    try {
      proxy.set({ kind: 'drop-response' }, { match: leaseWrite(KEY), times: 1 });
      await expect(lease.tryAcquire()).rejects.toThrow();
      const next = await lease.tryAcquire();
      expect(next).toMatchObject({ acquired: true, how: 'own' });
      expect(lease.state).toBe('held');
    } finally {
      lease.stop();
      store.close();
      direct.close();
    }
  });

  it('the release: the lease ends released, not "taken over"', async () => {
    const { lease, store, direct, proxy } = await leaseThroughProxy();
    try {
      await lease.tryAcquire();
      await lease.renew();
      proxy.set({ kind: 'drop-response' }, { match: leaseWrite(KEY), times: 1 });
      await lease.renew().catch(() => undefined); // applied, answer lost: the lease's etag is stale now
      await lease.release();
      expect(lease.state).toBe('released');
      const record = parseLeaseRecord((await direct.getBytes(KEY))?.bytes ?? Buffer.alloc(0));
      expect(record).toMatchObject({ owner: lease.owner, released: true });
    } finally {
      lease.stop();
      store.close();
      direct.close();
    }
  });
});
