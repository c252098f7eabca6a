/**
 * Streamed parts (src/replica/s3-upload.ts): every part's body is the file's bytes, a part that fails
 * transiently is sent again from the file, and a refusal is not retried.
 *
 * aws-sdk-client-mock: the real server cannot be made to fail one given part on demand. The SDK does not
 * retry a streamed body itself, so before this retry a single 503 on one part failed the whole upload.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
  type UploadPartCommandInput,
} from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { StorageError } from '../../src/errors.js';
import { DEFAULT_BLOCK_BYTES } from '../../src/replica/blocks.js';
import { S3Store } from '../../src/replica/s3-store.js';
import { tempDir } from '../helpers/db.js';

const client = new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' } });
const s3 = mockClient(client);
afterAll(() => s3.restore());

const content = randomBytes(2 * DEFAULT_BLOCK_BYTES + 123_456); // 3 parts, the last one short
const path = join(tempDir(), 'db.sqlite3');
writeFileSync(path, content);
const blockOf = (index: number): Buffer => content.subarray(index * DEFAULT_BLOCK_BYTES, (index + 1) * DEFAULT_BLOCK_BYTES);

async function bytesOf(body: unknown): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body as Readable) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function serverError(status: number, name: string): S3ServiceException {
  return new S3ServiceException({
    name,
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status },
    message: name,
  });
}

/** What each UploadPart received, by part number (the last attempt wins). */
let received: Map<number, Buffer>;
let attempts: number[];

beforeEach(() => {
  s3.reset();
  received = new Map();
  attempts = [];
  s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'u1' });
  s3.on(CompleteMultipartUploadCommand).resolves({ VersionId: 'v2' });
  s3.on(AbortMultipartUploadCommand).resolves({});
  s3.on(HeadObjectCommand).resolves({ ContentLength: content.length, LastModified: new Date(), VersionId: 'v2', Metadata: {} });
});

/** UploadPart answers: `fail(partNumber, attempt)` returns an error to throw, or nothing to succeed. */
function partsAnswer(fail: (partNumber: number, attempt: number) => Error | undefined): void {
  s3.on(UploadPartCommand).callsFake(async (input: UploadPartCommandInput) => {
    const partNumber = input.PartNumber ?? 0;
    const attempt = attempts.filter((p) => p === partNumber).length + 1;
    attempts.push(partNumber);
    const bytes = await bytesOf(input.Body);
    expect(input.ContentLength).toBe(bytes.length);
    const error = fail(partNumber, attempt);
    if (error) throw error;
    received.set(partNumber, bytes);
    return { ETag: `"p${partNumber}"` };
  });
}

describe('streamed multipart parts', () => {
  it('sends each part as the file bytes of its block, and records each block digest', async () => {
    partsAnswer(() => undefined);
    const store = new S3Store({ bucket: 'b', client });
    const out = await store.putFromPrevious('db.sqlite3', path, { metadata: { sha256: 'x' }, base: undefined });
    expect([...received.keys()].sort()).toEqual([1, 2, 3]);
    for (const index of [0, 1, 2]) expect(received.get(index + 1)!.equals(blockOf(index))).toBe(true);
    expect(out.blocks?.digests).toEqual([0, 1, 2].map((i) => createHash('sha1').update(blockOf(i)).digest('hex')));
    expect(out.sentBytes).toBe(content.length);
  });

  it('sends a part again, whole, after a transient failure (503 mid-upload)', async () => {
    partsAnswer((partNumber, attempt) => (partNumber === 2 && attempt === 1 ? serverError(503, 'SlowDown') : undefined));
    const store = new S3Store({ bucket: 'b', client });
    const out = await store.putFromPrevious('db.sqlite3', path, { metadata: { sha256: 'x' }, base: undefined });
    expect(attempts.filter((p) => p === 2)).toHaveLength(2);
    expect(received.get(2)!.equals(blockOf(1))).toBe(true);
    expect(out.info.versionId).toBe('v2');
    expect(s3.commandCalls(AbortMultipartUploadCommand)).toHaveLength(0);
  });

  it('does not retry a refusal (403): the upload is aborted and the error says what to fix', async () => {
    partsAnswer((partNumber) => (partNumber === 1 ? serverError(403, 'AccessDenied') : undefined));
    const store = new S3Store({ bucket: 'b', client });
    const error = await store.putFromPrevious('db.sqlite3', path, { metadata: { sha256: 'x' }, base: undefined }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).retryable).toBe(false);
    expect(attempts.filter((p) => p === 1)).toHaveLength(1);
    expect(s3.commandCalls(AbortMultipartUploadCommand)).toHaveLength(1);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
  });
});
