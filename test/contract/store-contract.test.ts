/**
 * The ReplicaStore contract: one suite, run against every backend (a temp directory, and S3 on the real
 * local server with versioning on). Anything the domain code relies on is asserted here.
 * The ConditionalStore (compare-and-swap) contract runs against a directory and an unversioned bucket:
 * Ceph RGW enforces conditional writes only there (test/unit/lease-probe.test.ts covers the versioned case).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PutBucketVersioningCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, StorageError } from '../../src/errors.js';
import { DirStore } from '../../src/replica/dir-store.js';
import { PART_SIZE_BYTES, S3Store } from '../../src/replica/s3-store.js';
import { PreconditionFailedError, type ConditionalStore, type ObjectMetadata, type ReplicaStore } from '../../src/replica/store.js';
import { tempDir } from '../helpers/db.js';
import { createBucket, rawClient, s3Info } from '../helpers/s3.js';

const MB = 1024 * 1024;

async function readAll(store: ReplicaStore, key: string, versionId?: string): Promise<Buffer | null> {
  const got = await store.get(key, { versionId });
  if (!got) return null;
  const chunks: Buffer[] = [];
  for await (const chunk of got.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

export function describeStoreContract(name: string, makeStore: () => Promise<ReplicaStore>): void {
  describe(`ReplicaStore contract: ${name}`, () => {
    let store: ReplicaStore;
    let files: string;
    let n = 0;
    /** A key no other test uses. */
    const freshKey = (base = 'db.sqlite3'): string => `t${++n}-${randomBytes(3).toString('hex')}/${base}`;
    /** A local file with these bytes. */
    const file = (bytes: Buffer | string): string => {
      const path = join(files, `f-${++n}`);
      writeFileSync(path, bytes);
      return path;
    };

    beforeAll(async () => {
      files = tempDir();
      store = await makeStore();
    });
    afterAll(() => store.close());

    it('keeps versions, and says so', async () => {
      // Every store in this suite keeps versions (the S3 one runs on a versioned bucket).
      expect(await store.versioning?.()).toBe('enabled');
    });

    it('returns null for head and get of an absent key', async () => {
      const key = freshKey();
      expect(await store.head(key)).toBeNull();
      expect(await store.get(key)).toBeNull();
      expect(await store.listVersions(key)).toEqual([]);
      expect(await store.list(key)).toEqual([]);
    });

    it('round-trips bytes and lowercase metadata through put and get', async () => {
      const key = freshKey();
      const bytes = randomBytes(10_000);
      const metadata: ObjectMetadata = { sha256: sha256(bytes), 'snapshot-at': '2025-01-02T03:04:05.000Z', 'source-host': 'host-1' };
      const put = await store.put(key, file(bytes), { metadata });
      expect(put.key).toBe(key);
      expect(put.sizeBytes).toBe(bytes.length);
      expect(put.versionId).toEqual(expect.any(String));
      expect(put.isLatest).toBe(true);
      expect(put.metadata).toEqual(metadata);

      const head = await store.head(key);
      expect(head).toMatchObject({ key, sizeBytes: bytes.length, versionId: put.versionId, isLatest: true, metadata });
      const got = await store.get(key);
      expect(got?.info).toMatchObject({ key, sizeBytes: bytes.length, versionId: put.versionId, metadata });
      got?.body.destroy();
      expect((await readAll(store, key))?.equals(bytes)).toBe(true);
    });

    it('keeps every version, newest first, and reads an older one by id', async () => {
      const key = freshKey();
      const older = Buffer.from('older content');
      const newer = Buffer.from('newer content, longer');
      const v1 = await store.put(key, file(older), { metadata: { sha256: sha256(older) } });
      const v2 = await store.put(key, file(newer), { metadata: { sha256: sha256(newer) } });
      expect(v1.versionId).not.toBe(v2.versionId);

      const versions = await store.listVersions(key);
      expect(versions.map((v) => v.versionId)).toEqual([v2.versionId, v1.versionId]);
      expect(versions.map((v) => v.isLatest)).toEqual([true, false]);
      expect(versions.map((v) => v.sizeBytes)).toEqual([newer.length, older.length]);
      expect(versions.every((v) => v.key === key)).toBe(true);

      expect((await readAll(store, key))?.equals(newer)).toBe(true);
      expect((await readAll(store, key, v1.versionId))?.equals(older)).toBe(true);
      expect((await store.head(key, { versionId: v1.versionId }))?.metadata.sha256).toBe(sha256(older));
      expect((await store.get(key, { versionId: v1.versionId }))?.info.sizeBytes).toBe(older.length);
    });

    it('lists versions of exactly the key, not of keys it prefixes', async () => {
      const key = freshKey();
      await store.put(key, file('a'), { metadata: {} });
      await store.put(`${key}.backup.20250101_000000`, file('b'), { metadata: {} });
      const versions = await store.listVersions(key);
      expect(versions).toHaveLength(1);
      expect(versions[0]?.key).toBe(key);
    });

    it('copies one version, with its bytes and metadata, to another key', async () => {
      const key = freshKey();
      const first = Buffer.from('first version');
      const v1 = await store.put(key, file(first), { metadata: { sha256: sha256(first), 'snapshot-at': 'one' } });
      await store.put(key, file('second version'), { metadata: { sha256: 'x', 'snapshot-at': 'two' } });

      const destination = `${key}.backup.20250101_000000`;
      const copied = await store.copy(key, v1.versionId, destination);
      expect(copied.key).toBe(destination);
      expect(copied.sizeBytes).toBe(first.length);
      expect(copied.isLatest).toBe(true);
      expect(copied.metadata).toEqual({ sha256: sha256(first), 'snapshot-at': 'one' });
      expect((await readAll(store, destination))?.equals(first)).toBe(true);
      expect((await store.head(destination))?.metadata).toEqual({ sha256: sha256(first), 'snapshot-at': 'one' });

      // Without a version id: the current object.
      const current = await store.copy(key, undefined, `${key}.backup.20250102_000000`);
      expect(current.metadata['snapshot-at']).toBe('two');
      expect((await readAll(store, `${key}.backup.20250102_000000`))?.toString()).toBe('second version');
    });

    it('refuses to copy an absent source with a StorageError', async () => {
      const key = freshKey();
      const error = await store.copy(key, undefined, `${key}.copy`).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StorageError);
      expect((error as StorageError).retryable).toBe(false);
      expect(await store.head(`${key}.copy`)).toBeNull();
    });

    it('lists only the keys under a prefix, sorted', async () => {
      const dir = freshKey('').slice(0, -1);
      for (const k of ['b', 'a.backup.20250102_000000', 'a', 'a.backup.20250101_000000', 'c/d']) {
        await store.put(`${dir}/${k}`, file(k), { metadata: {} });
      }
      await store.put(`${dir}-other/a`, file('other'), { metadata: {} });

      const under = await store.list(`${dir}/`);
      expect(under.map((o) => o.key)).toEqual(
        ['a', 'a.backup.20250101_000000', 'a.backup.20250102_000000', 'b', 'c/d'].map((k) => `${dir}/${k}`),
      );
      expect(under.find((o) => o.key === `${dir}/b`)?.sizeBytes).toBe(1);
      const backups = await store.list(`${dir}/a.backup.`);
      expect(backups.map((o) => o.key)).toEqual([`${dir}/a.backup.20250101_000000`, `${dir}/a.backup.20250102_000000`]);
      expect(await store.list(`${dir}/zzz`)).toEqual([]);
    });

    it('deletes the current object but keeps its versions', async () => {
      const key = freshKey();
      const v1 = await store.put(key, file('one'), { metadata: {} });
      await store.put(key, file('two'), { metadata: {} });
      await store.delete(key);
      expect(await store.head(key)).toBeNull();
      expect(await store.get(key)).toBeNull();
      const versions = await store.listVersions(key);
      expect(versions).toHaveLength(2);
      expect(versions.some((v) => v.isLatest)).toBe(false);
      expect((await readAll(store, key, v1.versionId))?.toString()).toBe('one');
      // Deleting an absent key is not an error.
      await store.delete(key);
      await store.delete(freshKey());
    });

    it('round-trips an object larger than one multipart part', async () => {
      const key = freshKey();
      const bytes = randomBytes(20 * MB);
      expect(bytes.length).toBeGreaterThan(PART_SIZE_BYTES * 2);
      const path = file(bytes);
      const progress: number[] = [];
      const put = await store.put(key, path, { metadata: { sha256: sha256(bytes) }, onProgress: (sent) => progress.push(sent) });
      expect(put.sizeBytes).toBe(bytes.length);
      expect(Math.max(...progress)).toBe(bytes.length);
      expect((await store.head(key))?.sizeBytes).toBe(bytes.length);
      const back = await readAll(store, key);
      expect(back?.length).toBe(bytes.length);
      expect(sha256(back ?? Buffer.alloc(0))).toBe(sha256(readFileSync(path)));
    });

    it('putFromPrevious stores the complete new file whatever the base, and keeps the base version intact', async () => {
      const key = freshKey();
      const first = randomBytes(3 * PART_SIZE_BYTES + 1234);
      const v1 = await store.putFromPrevious(key, file(first), { metadata: { sha256: sha256(first) }, base: undefined });
      expect(v1.mode).toBe('full');
      expect(v1.info).toMatchObject({ key, sizeBytes: first.length, isLatest: true });
      // The second file: block 1 changed, and it grew by a short tail (a last part under 5 MiB).
      const second = Buffer.concat([first, randomBytes(1000)]);
      randomBytes(100).copy(second, PART_SIZE_BYTES + 10);
      const base = v1.blocks && v1.info.versionId ? { versionId: v1.info.versionId, blocks: v1.blocks } : undefined;
      const v2 = await store.putFromPrevious(key, file(second), { metadata: { sha256: sha256(second) }, base });
      expect(v2.info.sizeBytes).toBe(second.length);
      expect(v2.info.metadata).toEqual({ sha256: sha256(second) });
      expect(v2.sentBytes + v2.copiedBytes).toBe(second.length);
      expect((await readAll(store, key))?.equals(second)).toBe(true);
      expect((await readAll(store, key, v1.info.versionId))?.equals(first)).toBe(true);
    });

    it('download writes one version to a file with its sha256, and returns null for an absent key', async () => {
      const key = freshKey();
      const older = randomBytes(2 * PART_SIZE_BYTES + 77);
      const v1 = await store.put(key, file(older), { metadata: { sha256: sha256(older) } });
      const newer = randomBytes(1000);
      await store.put(key, file(newer), { metadata: { sha256: sha256(newer) } });
      const path = join(files, `download-${++n}`);
      const progress: number[] = [];
      const got = await store.download(key, path, { versionId: v1.versionId, onProgress: (received) => progress.push(received) });
      expect(got).toMatchObject({ sha256: sha256(older), sizeBytes: older.length });
      expect(got?.info).toMatchObject({ versionId: v1.versionId, sizeBytes: older.length, metadata: { sha256: sha256(older) } });
      expect(readFileSync(path).equals(older)).toBe(true);
      expect(Math.max(...progress)).toBe(older.length);
      const current = await store.download(key, path);
      expect(current?.sha256).toBe(sha256(newer));
      expect(readFileSync(path).equals(newer)).toBe(true);
      expect(await store.download(freshKey(), join(files, `absent-${++n}`))).toBeNull();
      expect(existsSync(join(files, `absent-${n}`))).toBe(false);
    });

    it('rejects a put whose signal has fired, and keeps the previous object', async () => {
      const key = freshKey();
      const kept = Buffer.from('the previous object');
      const v1 = await store.put(key, file(kept), { metadata: { sha256: sha256(kept) } });
      const error = await store
        .put(key, file(randomBytes(1000)), { metadata: {}, signal: AbortSignal.abort(new Error('stop')) })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AbortedError);
      expect((await readAll(store, key))?.equals(kept)).toBe(true);
      expect((await store.head(key))?.versionId).toBe(v1.versionId);
      expect((await store.listVersions(key)).map((v) => v.versionId)).toEqual([v1.versionId]);
    });

    it('rejects reads whose signal has fired', async () => {
      const key = freshKey();
      await store.put(key, file('x'), { metadata: {} });
      const signal = AbortSignal.abort(new Error('stop'));
      await expect(store.head(key, { signal })).rejects.toBeInstanceOf(AbortedError);
      await expect(store.get(key, { signal })).rejects.toBeInstanceOf(AbortedError);
      await expect(store.list(key, { signal })).rejects.toBeInstanceOf(AbortedError);
      await expect(store.listVersions(key, { signal })).rejects.toBeInstanceOf(AbortedError);
    });
  });
}

export function describeConditionalContract(name: string, makeStore: () => Promise<ReplicaStore & ConditionalStore>): void {
  describe(`ConditionalStore contract: ${name}`, () => {
    let store: ReplicaStore & ConditionalStore;
    let n = 0;
    const freshKey = (): string => `cas${++n}-${randomBytes(3).toString('hex')}/db.sqlite3.lease`;
    const bytes = (text: string): Buffer => Buffer.from(text);
    const failure = (promise: Promise<unknown>): Promise<unknown> =>
      promise.then(
        () => 'succeeded',
        (e: unknown) => e,
      );

    beforeAll(async () => {
      store = await makeStore();
    });
    afterAll(() => store.close());

    it('creates only when absent, and reads back the bytes with the etag the write returned', async () => {
      const key = freshKey();
      expect(await store.getBytes(key)).toBeNull();
      const etag = await store.putBytes(key, bytes('first'), { ifNoneMatch: true });
      expect(etag).toMatch(/^[^"]+$/);
      const got = await store.getBytes(key);
      expect(got?.bytes.toString()).toBe('first');
      expect(got?.etag).toBe(etag);

      const again = await failure(store.putBytes(key, bytes('second'), { ifNoneMatch: true }));
      expect(again).toBeInstanceOf(PreconditionFailedError);
      expect((again as PreconditionFailedError).retryable).toBe(false);
      expect((await store.getBytes(key))?.bytes.toString()).toBe('first');
    });

    it('replaces only the content whose etag it names', async () => {
      const key = freshKey();
      const first = await store.putBytes(key, bytes('one'), { ifNoneMatch: true });
      const wrong = await failure(store.putBytes(key, bytes('two'), { ifMatch: '0'.repeat(32) }));
      expect(wrong).toBeInstanceOf(PreconditionFailedError);
      expect((await store.getBytes(key))?.bytes.toString()).toBe('one');

      const second = await store.putBytes(key, bytes('two'), { ifMatch: first });
      expect(second).not.toBe(first);
      expect(await store.getBytes(key)).toEqual({ bytes: bytes('two'), etag: second });
      // The old etag no longer matches: this is what makes a paused owner's renewal fail.
      expect(await failure(store.putBytes(key, bytes('three'), { ifMatch: first }))).toBeInstanceOf(PreconditionFailedError);
      expect((await store.getBytes(key))?.bytes.toString()).toBe('two');
    });

    it('refuses a replace of an absent object', async () => {
      const key = freshKey();
      expect(await failure(store.putBytes(key, bytes('x'), { ifMatch: '0'.repeat(32) }))).toBeInstanceOf(PreconditionFailedError);
      expect(await store.getBytes(key)).toBeNull();
    });

    it('lets exactly one of several concurrent writes with the same condition win', async () => {
      const key = freshKey();
      const creates = await Promise.all(
        Array.from({ length: 6 }, (_, i) => failure(store.putBytes(key, bytes(`create ${i}`), { ifNoneMatch: true }))),
      );
      // Exactly one wins. Each conditional write is sent once (the lease's own loop retries), so under load a
      // loser may see a transient, retryable failure instead of the 412: never a second success, never anything else.
      const lost = (r: unknown): boolean => r instanceof PreconditionFailedError || (r instanceof StorageError && r.retryable);
      expect(creates.filter((r) => r === 'succeeded')).toHaveLength(1);
      expect(creates.filter((r) => r !== 'succeeded' && !lost(r))).toEqual([]);

      const base = (await store.getBytes(key))?.etag ?? '';
      const replaces = await Promise.all(
        Array.from({ length: 6 }, (_, i) => failure(store.putBytes(key, bytes(`replace ${i}`), { ifMatch: base }))),
      );
      expect(replaces.filter((r) => r === 'succeeded')).toHaveLength(1);
      expect(replaces.filter((r) => r !== 'succeeded' && !lost(r))).toEqual([]);
    });

    it('rejects conditional writes whose signal has fired, and changes nothing', async () => {
      const key = freshKey();
      const signal = AbortSignal.abort(new Error('stop'));
      await expect(store.putBytes(key, bytes('x'), { ifNoneMatch: true }, { signal })).rejects.toBeInstanceOf(AbortedError);
      await expect(store.getBytes(key, { signal })).rejects.toBeInstanceOf(AbortedError);
      expect(await store.getBytes(key)).toBeNull();
    });
  });
}

describeStoreContract('DirStore', () => Promise.resolve(new DirStore(tempDir())));
describeConditionalContract('DirStore', () => Promise.resolve(new DirStore(tempDir())));
describeConditionalContract('S3Store (Ceph RGW, unversioned bucket)', async () => (await createBucket({ versioned: false })).store);

describeStoreContract('S3Store (Ceph RGW)', async () => (await createBucket()).store);

describe('S3Store on the real server', () => {
  it('reports a missing bucket on head as a permanent NoSuchBucket StorageError', async () => {
    await createBucket(); // makes the local server's credentials visible to the SDK
    const s3 = s3Info();
    const store = new S3Store({
      bucket: `missing-${randomBytes(6).toString('hex')}`,
      endpoint: s3.endpoint,
      region: s3.region,
      forcePathStyle: true,
    });
    try {
      for (const call of [() => store.head('db.sqlite3'), () => store.get('db.sqlite3'), () => store.list('db')]) {
        const error = await call().catch((e: unknown) => e);
        expect(error).toBeInstanceOf(StorageError);
        expect((error as StorageError).retryable).toBe(false);
        expect((error as StorageError).code).toBe('NoSuchBucket');
        expect((error as StorageError).hint).toContain('DB_S3_BUCKET');
      }
    } finally {
      store.close();
    }
  });

  it('reads bucket versioning: never enabled, enabled, suspended; a missing bucket is a permanent error', async () => {
    const { bucket, store } = await createBucket({ versioned: false });
    const client = rawClient();
    try {
      expect(await store.versioning()).toBe('disabled');
      await client.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
      expect(await store.versioning()).toBe('enabled');
      await client.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Suspended' } }));
      expect(await store.versioning()).toBe('suspended');
      const s3 = s3Info();
      const missing = new S3Store({
        bucket: `missing-${randomBytes(6).toString('hex')}`,
        endpoint: s3.endpoint,
        region: s3.region,
        forcePathStyle: true,
      });
      const error = await missing.versioning().catch((e: unknown) => e);
      missing.close();
      expect(error).toBeInstanceOf(StorageError);
      expect((error as StorageError).retryable).toBe(false);
      expect((error as StorageError).code).toBe('NoSuchBucket');
    } finally {
      client.destroy();
      store.close();
    }
  });

  it('reports wrong credentials as a permanent StorageError with exit code 3', async () => {
    const { bucket } = await createBucket();
    const s3 = s3Info();
    const client = new S3Client({
      endpoint: s3.endpoint,
      region: s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: 'WRONGKEY', secretAccessKey: 'wrong-secret' },
    });
    const store = new S3Store({ bucket, client });
    try {
      const error = await store.get('db.sqlite3').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StorageError);
      expect((error as StorageError).retryable).toBe(false);
      expect((error as StorageError).exitCode).toBe(3);
      expect((error as StorageError).hint).toMatch(/credentials/);
    } finally {
      store.close();
    }
  });
});
