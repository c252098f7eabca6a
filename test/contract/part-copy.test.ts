/**
 * S3Store.putFromPrevious on the real server: a new version built from the base version's unchanged blocks
 * (UploadPartCopy) plus the changed ones, and every fallback to a full upload. Each result is read back
 * with the AWS CLI (an independent client) and compared byte for byte; after completion no upload is left.
 * Only the provider's refusal of part copies is simulated (aws-sdk-client-mock): RGW accepts them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { describe, expect, it } from 'vitest';
import { snapshotAndUpload } from '../../src/core/upload.js';
import { readUploadBase } from '../../src/core/upload-base.js';
import { restoreExact } from '../../src/core/restore.js';
import { takeSnapshot, discardSnapshot } from '../../src/core/snapshot.js';
import { silentLogger } from '../../src/logger.js';
import { PART_SIZE_BYTES, S3Store } from '../../src/replica/s3-store.js';
import type { PutBase, PutFromPreviousResult } from '../../src/replica/store.js';
import { createDatabase, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, rawClient, s3Info } from '../helpers/s3.js';

const MIB = 1024 * 1024;
const KEY = 'app/db.sqlite3';
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const dir = tempDir();
let n = 0;
const file = (bytes: Buffer): string => {
  const path = join(dir, `f-${++n}`);
  writeFileSync(path, bytes);
  return path;
};
const baseOf = (r: PutFromPreviousResult): PutBase => {
  if (!r.blocks || !r.info.versionId) throw new Error('no base in this result');
  return { versionId: r.info.versionId, blocks: r.blocks };
};

/** The object as the AWS CLI sees it: its bytes, and the size and ETag get-object reports. */
async function cliView(bucket: string, key = KEY): Promise<{ bytes: Buffer; size: number; etag: string }> {
  const out = join(dir, `cli-${++n}`);
  const answer = JSON.parse(await awsCli(bucket, ['s3api', 'get-object', '--bucket', bucket, '--key', key, out])) as {
    ContentLength: number;
    ETag: string;
  };
  return { bytes: readFileSync(out), size: answer.ContentLength, etag: answer.ETag };
}

/** No multipart upload left behind in `bucket`. */
async function noUploadsLeft(bucket: string): Promise<void> {
  expect(await awsCli(bucket, ['s3api', 'list-multipart-uploads', '--bucket', bucket])).not.toContain('UploadId');
}

/** `bytes` with `count` random bytes written at `at`. */
function changed(bytes: Buffer, at: number, count = 100): Buffer {
  const copy = Buffer.from(bytes);
  randomBytes(count).copy(copy, at);
  return copy;
}

// The AWS CLI takes seconds per call on a loaded machine.
const SLOW_MS = 240_000;

describe('S3Store.putFromPrevious on the real server', { timeout: SLOW_MS }, () => {
  it('copies unchanged blocks from the base version and sends the changed ones; the result is complete', async () => {
    const { bucket, store } = await createBucket();
    const first = randomBytes(4 * PART_SIZE_BYTES + 3 * MIB); // the last block under 5 MiB
    const v1 = await store.putFromPrevious(KEY, file(first), { metadata: { sha256: sha256(first) }, base: undefined });
    expect(v1).toMatchObject({ mode: 'full', sentBytes: first.length, copiedBytes: 0 });
    const second = changed(first, 2 * PART_SIZE_BYTES + 5);
    const v2 = await store.putFromPrevious(KEY, file(second), { metadata: { sha256: sha256(second) }, base: baseOf(v1) });
    expect(v2).toMatchObject({ mode: 'delta', sentBytes: PART_SIZE_BYTES, copiedBytes: second.length - PART_SIZE_BYTES });
    expect(v2.info.metadata).toEqual({ sha256: sha256(second) });
    const seen = await cliView(bucket);
    expect(seen.size).toBe(second.length);
    expect(seen.bytes.equals(second)).toBe(true);
    expect(seen.etag).toMatch(/-5"?$/); // one multipart object of 5 parts
    await noUploadsLeft(bucket);
    // The base version is untouched.
    const old = await store.download(KEY, join(dir, `v1-${++n}`), { versionId: v1.info.versionId });
    expect(old?.sha256).toBe(sha256(first));
    store.close();
  });

  it('handles a database that grew and one that shrank', async () => {
    const { bucket, store } = await createBucket();
    const first = randomBytes(3 * PART_SIZE_BYTES);
    const v1 = await store.putFromPrevious(KEY, file(first), { metadata: {}, base: undefined });
    const grown = Buffer.concat([changed(first, 10), randomBytes(PART_SIZE_BYTES + 2 * MIB)]);
    const v2 = await store.putFromPrevious(KEY, file(grown), { metadata: {}, base: baseOf(v1) });
    expect(v2).toMatchObject({ mode: 'delta', copiedBytes: 2 * PART_SIZE_BYTES });
    expect((await cliView(bucket)).bytes.equals(grown)).toBe(true);
    // Shrunk into the middle of block 2: blocks 0-1 are copied, the short last one is sent.
    const shrunk = grown.subarray(0, 2 * PART_SIZE_BYTES + MIB);
    const v3 = await store.putFromPrevious(KEY, file(shrunk), { metadata: {}, base: baseOf(v2) });
    expect(v3).toMatchObject({ mode: 'delta', copiedBytes: 2 * PART_SIZE_BYTES, sentBytes: MIB });
    const seen = await cliView(bucket);
    expect(seen.size).toBe(shrunk.length);
    expect(seen.bytes.equals(shrunk)).toBe(true);
    store.close();
  });

  it('sends everything when there is no base, or when the key changed under it', async () => {
    const { bucket, store } = await createBucket();
    const first = randomBytes(2 * PART_SIZE_BYTES + 1);
    const v1 = await store.putFromPrevious(KEY, file(first), { metadata: {}, base: undefined });
    expect(v1.fallbackReason).toBeUndefined();
    // Someone else writes the key: the recorded base is no longer the current version.
    await store.put(KEY, file(randomBytes(2 * PART_SIZE_BYTES + 1)), { metadata: {} });
    const next = changed(first, 5);
    const v3 = await store.putFromPrevious(KEY, file(next), { metadata: {}, base: baseOf(v1) });
    expect(v3).toMatchObject({ mode: 'full', copiedBytes: 0, sentBytes: next.length });
    expect(v3.fallbackReason).toMatch(/changed since the last upload/);
    expect((await cliView(bucket)).bytes.equals(next)).toBe(true);
    store.close();
  });

  it('sends a file that fits one part in one PutObject', async () => {
    const { bucket, store } = await createBucket();
    const small = randomBytes(PART_SIZE_BYTES);
    const put = await store.putFromPrevious(KEY, file(small), { metadata: { sha256: sha256(small) }, base: undefined });
    expect(put.blocks?.digests).toHaveLength(1);
    const seen = await cliView(bucket);
    expect(seen.bytes.equals(small)).toBe(true);
    expect(seen.etag).not.toContain('-'); // a multipart ETag ends in -<parts>
    store.close();
  });

  it('falls back to a full upload when the provider refuses part copies, and stops trying for the process', async () => {
    const { bucket } = await createBucket();
    const s3 = s3Info();
    const real = rawClient();
    // Every call goes to the real server, except UploadPartCopy, which answers as a provider without it.
    const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true });
    const mock = mockClient(client);
    const forward = [
      HeadObjectCommand,
      HeadBucketCommand,
      PutObjectCommand,
      CreateMultipartUploadCommand,
      UploadPartCommand,
      CompleteMultipartUploadCommand,
      AbortMultipartUploadCommand,
    ] as const;
    for (const Command of forward) {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each command takes its own input type
      mock.on(Command as any).callsFake((input: any) => real.send(new (Command as any)(input)));
    }
    const notImplemented = Object.assign(new Error('part copies are not implemented'), {
      name: 'NotImplemented',
      $fault: 'server',
      $metadata: { httpStatusCode: 501 },
    });
    mock.on(UploadPartCopyCommand).rejects(notImplemented);
    const store = new S3Store({ bucket, client });
    try {
      const first = randomBytes(2 * PART_SIZE_BYTES + 100);
      const v1 = await store.putFromPrevious(KEY, file(first), { metadata: {}, base: undefined });
      const second = changed(first, 1);
      const v2 = await store.putFromPrevious(KEY, file(second), { metadata: {}, base: baseOf(v1) });
      expect(v2).toMatchObject({ mode: 'full', copiedBytes: 0 });
      expect(v2.fallbackReason).toMatch(/NotImplemented/);
      expect((await cliView(bucket)).bytes.equals(second)).toBe(true);
      const third = changed(second, 2);
      const v3 = await store.putFromPrevious(KEY, file(third), { metadata: {}, base: baseOf(v2) });
      expect(v3.fallbackReason).toMatch(/refused part copies earlier/);
      expect(mock.commandCalls(UploadPartCopyCommand).length).toBeGreaterThan(0);
      const copiesAfterRefusal = mock.commandCalls(UploadPartCopyCommand).length;
      expect((await cliView(bucket)).bytes.equals(third)).toBe(true);
      expect(mock.commandCalls(UploadPartCopyCommand).length).toBe(copiesAfterRefusal);
      await noUploadsLeft(bucket); // the refused attempt was aborted
    } finally {
      mock.restore();
      store.close();
      real.destroy();
    }
  });
});

describe('snapshotAndUpload with part copies', { timeout: SLOW_MS }, () => {
  it('sends only the changed blocks of the second snapshot; the restored copy is the snapshot, byte for byte', async () => {
    const { store } = await createBucket();
    const work = tempDir();
    const dbPath = join(work, 'app.sqlite3');
    // ~30 MB: appended rows land at the end of the file, so the first blocks stay as they were.
    createDatabase(dbPath, 60_000, { bodyBytes: 400 });
    const ctx = { store, key: KEY, dbPath, check: 'quick' as const, origin: { host: 'h', toolVersion: 't' }, log: silentLogger() };
    const first = await snapshotAndUpload(ctx, {});
    expect(await readUploadBase(dbPath, store.location, KEY)).toMatchObject({ versionId: first.uploaded?.versionId });
    createDatabase(dbPath, 200, { bodyBytes: 400 }); // appends rows
    const second = await snapshotAndUpload(ctx, {});
    expect(second.transfer?.mode).toBe('delta');
    expect(second.transfer?.copiedBytes).toBeGreaterThan(second.snapshot.sizeBytes / 2);
    const uploaded = second.uploaded;
    expect(uploaded?.metadata).toMatchObject({ sha256: second.snapshot.sha256, checked: 'quick' });
    expect(await readUploadBase(dbPath, store.location, KEY)).toMatchObject({ versionId: uploaded?.versionId });

    const target = join(work, 'restored.sqlite3');
    const restored = await restoreExact(store, { key: KEY }, target, { check: 'full', log: silentLogger(), keepPrevious: false });
    expect(restored?.sha256).toBe(second.snapshot.sha256);
    // Snapshots are byte-deterministic: a fresh one of the unchanged database is the uploaded file.
    const again = await takeSnapshot(dbPath, { check: 'none' });
    try {
      expect(readFileSync(target).equals(readFileSync(again.path))).toBe(true);
    } finally {
      await discardSnapshot(again);
    }
    store.close();
  });
});
