/**
 * The S3 adapter's error vocabulary: SDK failures (made by aws-sdk-client-mock, since a real server cannot be
 * made to throttle or refuse credentials on demand) become null for "absent" and StorageErrors otherwise.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbortedError, ExitCode, StorageError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { withRetry, type RetryPolicy } from '../../src/core/retry.js';
import { S3Store } from '../../src/replica/s3-store.js';
import { tempDir } from '../helpers/db.js';

const BUCKET = 'the-bucket';
const KEY = 'db.sqlite3';

function sdkError(name: string, httpStatusCode: number, fault: 'client' | 'server' = httpStatusCode >= 500 ? 'server' : 'client') {
  return new S3ServiceException({ name, $fault: fault, $metadata: { httpStatusCode }, message: `${name} from the server` });
}

function nodeError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:1`), { code, errno: -111, syscall: 'connect' });
}

function credentialsError(): Error {
  // What @smithy's CredentialsProviderError looks like to us: a plain error with that name and no HTTP status.
  return Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' });
}

async function storageErrorOf(promise: Promise<unknown>): Promise<StorageError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StorageError);
  return error as StorageError;
}

const client = new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' } });
const mock = mockClient(client);
const store = new S3Store({ bucket: BUCKET, client });

beforeEach(() => mock.reset());
afterEach(() => mock.reset());

describe('S3Store: absent objects', () => {
  it.each([
    ['NoSuchKey', 404],
    ['NotFound', 404],
    ['NoSuchVersion', 404],
  ])('%s (%i) → head and get return null', async (name, status) => {
    mock.on(HeadObjectCommand).rejects(sdkError(name, status));
    mock.on(GetObjectCommand).rejects(sdkError(name, status));
    await expect(store.head(KEY)).resolves.toBeNull();
    await expect(store.get(KEY)).resolves.toBeNull();
    expect(mock.commandCalls(HeadObjectCommand)).toHaveLength(1);
    expect(mock.commandCalls(GetObjectCommand)).toHaveLength(1);
  });

  it('delete of an absent key is not an error', async () => {
    mock.on(DeleteObjectCommand).rejects(sdkError('NoSuchKey', 404));
    await expect(store.delete(KEY)).resolves.toBeUndefined();
  });

  it('a missing bucket is not "absent": head throws NoSuchBucket', async () => {
    mock.on(HeadObjectCommand).rejects(sdkError('NoSuchBucket', 404));
    const error = await storageErrorOf(store.head(KEY));
    expect(error.code).toBe('NoSuchBucket');
    expect(error.retryable).toBe(false);
  });

  it('a bare 404 on HEAD is checked against the bucket: missing bucket → NoSuchBucket', async () => {
    // HEAD answers carry no body: S3 says only "NotFound" whether the key or the bucket is missing.
    mock.on(HeadObjectCommand).rejects(sdkError('NotFound', 404));
    mock.on(HeadBucketCommand).rejects(sdkError('NotFound', 404));
    const error = await storageErrorOf(store.head(KEY));
    expect(error.code).toBe('NoSuchBucket');
    expect(error.retryable).toBe(false);
    expect(error.exitCode).toBe(3);
    expect(error.hint).toContain('DB_S3_BUCKET');
  });

  it('a bare 404 on HEAD stays "absent" when the bucket check is inconclusive', async () => {
    mock.on(HeadObjectCommand).rejects(sdkError('NotFound', 404));
    mock.on(HeadBucketCommand).rejects(sdkError('Forbidden', 403));
    await expect(store.head(KEY)).resolves.toBeNull();
    expect(mock.commandCalls(HeadBucketCommand)).toHaveLength(1);
  });
});

describe('S3Store: permanent errors', () => {
  it.each([
    ['AccessDenied', () => sdkError('AccessDenied', 403), /s3:GetObject/],
    ['InvalidAccessKeyId', () => sdkError('InvalidAccessKeyId', 403), /credentials/],
    ['SignatureDoesNotMatch', () => sdkError('SignatureDoesNotMatch', 403), /credentials/],
    ['NoSuchBucket', () => sdkError('NoSuchBucket', 404), /create it.*DB_S3_BUCKET/],
    ['CredentialsProviderError', credentialsError, /AWS_ACCESS_KEY_ID/],
  ])('%s → StorageError, not retryable, exit 3, with a hint naming the fix', async (code, make, hint) => {
    mock.on(HeadObjectCommand).rejects(make());
    mock.on(GetObjectCommand).rejects(make());
    mock.on(ListObjectsV2Command).rejects(make());
    for (const call of [() => store.head(KEY), () => store.get(KEY), () => store.list('db')]) {
      const error = await storageErrorOf(call());
      expect(error.code).toBe(code);
      expect(error.retryable).toBe(false);
      expect(error.kind).toBe('StorageAccess');
      expect(error.exitCode).toBe(ExitCode.StorageAccess);
      expect(error.exitCode).toBe(3);
      expect(error.hint).toMatch(hint);
      expect(error.message).toContain(`s3://${BUCKET}`);
      expect(error.message).toContain(code);
    }
  });

  it('PermanentRedirect → the hint names the region settings', async () => {
    mock.on(HeadObjectCommand).rejects(sdkError('PermanentRedirect', 301));
    const error = await storageErrorOf(store.head(KEY));
    expect(error.code).toBe('PermanentRedirect');
    expect(error.retryable).toBe(false);
    expect(error.hint).toMatch(/DB_S3_REGION/);
    expect(error.hint).toContain(BUCKET);
  });

  it('a 4xx the adapter does not know is permanent with exit 1', async () => {
    mock.on(HeadObjectCommand).rejects(sdkError('InvalidArgument', 400));
    const error = await storageErrorOf(store.head(KEY));
    expect(error.retryable).toBe(false);
    expect(error.exitCode).toBe(ExitCode.Failure);
  });

  it('errors from every operation are mapped, with the operation in the message', async () => {
    const denied = () => sdkError('AccessDenied', 403);
    mock.on(ListObjectVersionsCommand).rejects(denied());
    mock.on(CopyObjectCommand).rejects(denied());
    // The copy looks at its source first (its size decides CopyObject or a multipart copy).
    mock.on(HeadObjectCommand).resolves({ ContentLength: 4096, LastModified: new Date(), VersionId: 'v1', Metadata: {} });
    mock.on(DeleteObjectCommand).rejects(denied());
    mock.on(PutObjectCommand).rejects(denied());
    const file = join(tempDir(), 'small.bin');
    writeFileSync(file, 'hello');
    const cases: Array<[Promise<unknown>, string]> = [
      [store.listVersions(KEY), 'list versions of'],
      [store.copy(KEY, 'v1', `${KEY}.backup.20250101_000000`), 'copy to'],
      [store.delete(KEY), 'delete'],
      [store.put(KEY, file, { metadata: {} }), 'upload'],
    ];
    for (const [promise, operation] of cases) {
      const error = await storageErrorOf(promise);
      expect(error.message.startsWith(operation)).toBe(true);
      expect(error.code).toBe('AccessDenied');
      expect(error.retryable).toBe(false);
    }
    expect(mock.commandCalls(PutObjectCommand)).toHaveLength(1);
  });
});

describe('S3Store: transient errors', () => {
  it.each([
    ['SlowDown', () => sdkError('SlowDown', 503)],
    ['InternalError', () => sdkError('InternalError', 500)],
    ['ServiceUnavailable', () => sdkError('ServiceUnavailable', 503)],
    ['HTTP502', () => new S3ServiceException({ name: 'S3ServiceException', $fault: 'server', $metadata: { httpStatusCode: 502 } })],
    ['ECONNREFUSED', () => nodeError('ECONNREFUSED')],
    ['ECONNRESET', () => nodeError('ECONNRESET')],
  ])('%s → StorageError, retryable', async (code, make) => {
    mock.on(HeadObjectCommand).rejects(make());
    const error = await storageErrorOf(store.head(KEY));
    expect(error.code).toBe(code);
    expect(error.retryable).toBe(true);
    expect(error.exitCode).toBe(ExitCode.Failure);
    expect(error.hint).toBeTruthy();
  });

  it('ECONNREFUSED points at the endpoint setting', async () => {
    mock.on(GetObjectCommand).rejects(nodeError('ECONNREFUSED'));
    expect((await storageErrorOf(store.get(KEY))).hint).toContain('DB_S3_ENDPOINT');
  });

  it('an AbortError from the SDK becomes an AbortedError', async () => {
    mock.on(HeadObjectCommand).rejects(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
    await expect(store.head(KEY)).rejects.toBeInstanceOf(AbortedError);
  });
});

describe('withRetry', () => {
  const policy: RetryPolicy = { retries: 3, minTimeoutMs: 1, maxTimeoutMs: 5 };
  const log = silentLogger();
  const transient = () => new StorageError('slow down', { retryable: true, code: 'SlowDown' });
  const permanent = () => new StorageError('denied', { retryable: false, code: 'AccessDenied' });

  it('retries a retryable error, then returns the result', async () => {
    let calls = 0;
    const result = await withRetry(
      'op',
      async (attempt) => {
        calls += 1;
        expect(attempt).toBe(calls);
        if (calls < 3) throw transient();
        return 'done';
      },
      { log, policy },
    );
    expect(result).toBe('done');
    expect(calls).toBe(3);
  });

  it('gives up after the policy’s retries with the last error', async () => {
    let calls = 0;
    const error = await withRetry(
      'op',
      () => {
        calls += 1;
        return Promise.reject(new StorageError(`slow down #${calls}`, { retryable: true, code: 'SlowDown' }));
      },
      { log, policy },
    ).catch((e: unknown) => e);
    expect(calls).toBe(4);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).message).toBe('slow down #4');
  });

  it('stops at once on a non-retryable error', async () => {
    let calls = 0;
    const error = await withRetry(
      'op',
      () => {
        calls += 1;
        return Promise.reject(permanent());
      },
      { log, policy },
    ).catch((e: unknown) => e);
    expect(calls).toBe(1);
    expect((error as StorageError).code).toBe('AccessDenied');
  });

  it('does not retry errors that are not StorageErrors', async () => {
    let calls = 0;
    await expect(
      withRetry(
        'op',
        () => {
          calls += 1;
          return Promise.reject(new Error('bug'));
        },
        { log, policy },
      ),
    ).rejects.toThrow('bug');
    expect(calls).toBe(1);
  });

  it('stops when the signal fires, with an AbortedError, and starts no further attempt', async () => {
    const controller = new AbortController();
    let calls = 0;
    const error = await withRetry(
      'op',
      () => {
        calls += 1;
        if (calls === 2) controller.abort(new Error('stop'));
        return Promise.reject(transient());
      },
      { log, policy, signal: controller.signal },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortedError);
    expect(calls).toBe(2);
  });

  it('does not call fn at all when the signal has already fired', async () => {
    let calls = 0;
    const error = await withRetry(
      'op',
      () => {
        calls += 1;
        return Promise.resolve(1);
      },
      { log, policy, signal: AbortSignal.abort() },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortedError);
    expect(calls).toBe(0);
  });
});
