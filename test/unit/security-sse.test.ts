/**
 * Server-side encryption reaches every write request: PutObject (small snapshots), CreateMultipartUpload
 * (large ones), CopyObject (backup keys) and the lease's conditional PutObject.
 *
 * Checked with aws-sdk-client-mock because the local Ceph RGW (16.2) refuses every SSE request over plain
 * http (400 InvalidRequest: `rgw crypt require ssl = true`) and has no SSE-S3 or KMS backend configured,
 * so the real server cannot show what was sent. The store is built the way the CLI builds it
 * (loadConfig → createStore), so the test covers the wiring from the environment variables too.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createStore } from '../../src/replica/create-store.js';
import { PART_SIZE_BYTES, S3Store } from '../../src/replica/s3-store.js';
import { tempDir } from '../helpers/db.js';

const s3 = mockClient(S3Client);
afterAll(() => s3.restore());

const dir = tempDir();
const small = join(dir, 'small.sqlite3');
const large = join(dir, 'large.sqlite3');
writeFileSync(small, Buffer.alloc(4096, 1));
writeFileSync(large, Buffer.alloc(PART_SIZE_BYTES + 4096, 2));

beforeEach(() => {
  s3.reset();
  s3.on(PutObjectCommand).resolves({ VersionId: 'v1', ETag: '"e1"' });
  s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'u1' });
  // Parts are streamed from the file, and the uploader checks the whole part went out: read the body as the SDK would.
  s3.on(UploadPartCommand).callsFake(async (input: { Body: AsyncIterable<unknown> }) => {
    for await (const chunk of input.Body) void chunk;
    return { ETag: '"p"' };
  });
  s3.on(CompleteMultipartUploadCommand).resolves({ VersionId: 'v2' });
  s3.on(CopyObjectCommand).resolves({ VersionId: 'v3' });
  s3.on(HeadObjectCommand).resolves({ ContentLength: 4096, LastModified: new Date(), VersionId: 'v1', Metadata: {} });
});

function storeFor(env: Record<string, string>): S3Store {
  const store = createStore(loadConfig({ DB_S3_BUCKET: 'b', AWS_REGION: 'eu-west-1', ...env }));
  expect(store).toBeInstanceOf(S3Store);
  return store as S3Store;
}

/** Every write the store makes for one snapshot upload (small and multipart), one backup copy and one lease write. */
async function writeEverything(store: S3Store): Promise<void> {
  await store.put('db.sqlite3', small, { metadata: { sha256: 'x' } });
  await store.put('db.sqlite3', large, { metadata: { sha256: 'y' } });
  await store.copy('db.sqlite3', 'v1', 'db.sqlite3.backup.20261123_103729');
  await store.putBytes('db.sqlite3.lease', Buffer.from('{}'), { ifNoneMatch: true });
  store.close();
}

const encryptionOf = (input: object) => {
  const i = input as { ServerSideEncryption?: string; SSEKMSKeyId?: string };
  return { ServerSideEncryption: i.ServerSideEncryption, SSEKMSKeyId: i.SSEKMSKeyId };
};

describe('server-side encryption parameters', () => {
  it.each([
    [{ DB_S3_SSE: 'AES256' }, { ServerSideEncryption: 'AES256', SSEKMSKeyId: undefined }],
    [{ DB_S3_SSE: 'aws:kms' }, { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: undefined }],
    [
      { DB_S3_SSE: 'aws:kms', DB_S3_SSE_KMS_KEY_ID: 'arn:aws:kms:eu-west-1:111122223333:key/k-1' },
      { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'arn:aws:kms:eu-west-1:111122223333:key/k-1' },
    ],
  ])('with %j, every write asks for %j', async (env, expected) => {
    await writeEverything(storeFor(env));
    const puts = s3.commandCalls(PutObjectCommand);
    expect(puts).toHaveLength(2); // the small snapshot and the lease
    for (const call of puts) expect(encryptionOf(call.args[0].input)).toEqual(expected);
    const creates = s3.commandCalls(CreateMultipartUploadCommand);
    expect(creates).toHaveLength(1);
    expect(encryptionOf(creates[0]!.args[0].input)).toEqual(expected);
    expect(s3.commandCalls(UploadPartCommand).length).toBeGreaterThanOrEqual(2);
    const copies = s3.commandCalls(CopyObjectCommand);
    expect(copies).toHaveLength(1);
    expect(encryptionOf(copies[0]!.args[0].input)).toEqual(expected);
  });

  it('sends no encryption parameters by default, so the bucket default applies', async () => {
    await writeEverything(storeFor({}));
    const writes = [
      ...s3.commandCalls(PutObjectCommand),
      ...s3.commandCalls(CreateMultipartUploadCommand),
      ...s3.commandCalls(CopyObjectCommand),
    ];
    expect(writes).toHaveLength(4);
    for (const call of writes) {
      expect(call.args[0].input).not.toHaveProperty('ServerSideEncryption');
      expect(call.args[0].input).not.toHaveProperty('SSEKMSKeyId');
    }
  });
});
