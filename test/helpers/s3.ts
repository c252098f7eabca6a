/** Access to the real local S3 server for tests: buckets, a raw client, and the AWS CLI. */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, PutBucketVersioningCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { inject } from 'vitest';
import { S3Store } from '../../src/replica/s3-store.js';
import { createDatabase, tempDir } from './db.js';

const execFileAsync = promisify(execFile);

export interface S3ServerInfo {
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
}

export function s3Info(): S3ServerInfo {
  return inject('s3');
}

/** Environment for a db-sync subprocess or the AWS CLI talking to the local server. */
export function s3Env(bucket: string): Record<string, string> {
  const s3 = s3Info();
  return {
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_REGION: s3.region,
    AWS_DEFAULT_REGION: s3.region,
    AWS_EC2_METADATA_DISABLED: 'true',
    DB_S3_ENDPOINT: s3.endpoint,
    DB_S3_FORCE_PATH_STYLE: 'true',
    DB_S3_BUCKET: bucket,
  };
}

let envApplied = false;

/** Make the SDK's default credential chain in this test process find the local server's credentials. */
function applyCredentials(): void {
  if (envApplied) return;
  const s3 = s3Info();
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  envApplied = true;
}

export function rawClient(): S3Client {
  applyCredentials();
  const s3 = s3Info();
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** A fresh bucket (versioned unless asked otherwise) and a store on it. */
export async function createBucket(options: { versioned?: boolean } = {}): Promise<{ bucket: string; store: S3Store }> {
  const bucket = `t-${randomBytes(6).toString('hex')}`;
  const client = rawClient();
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    if (options.versioned !== false) {
      await client.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
  } finally {
    client.destroy();
  }
  const s3 = s3Info();
  return { bucket, store: new S3Store({ bucket, endpoint: s3.endpoint, region: s3.region, forcePathStyle: true }) };
}

/** Run the AWS CLI v2 from Debian (an independent S3 client) against the local server. */
export async function awsCli(bucket: string, args: readonly string[]): Promise<string> {
  const s3 = s3Info();
  const { stdout } = await execFileAsync('/usr/bin/aws', ['--endpoint-url', s3.endpoint, ...args], {
    env: {
      ...process.env,
      ...s3Env(bucket),
      AWS_REQUEST_CHECKSUM_CALCULATION: 'when_required',
      AWS_RESPONSE_CHECKSUM_VALIDATION: 'when_required',
    },
  });
  return stdout;
}

/**
 * A fresh versioned bucket holding a `rows`-row database at `db.sqlite3`, put there with the AWS CLI, and
 * the temp dir it was made in (as `seed.sqlite3`).
 */
export async function seededBucket(rows: number, options: { bodyBytes?: number } = {}): Promise<{ bucket: string; dir: string }> {
  const { bucket } = await createBucket();
  const dir = tempDir();
  const seed = join(dir, 'seed.sqlite3');
  createDatabase(seed, rows, options);
  await awsCli(bucket, ['s3', 'cp', seed, `s3://${bucket}/db.sqlite3`]);
  return { bucket, dir };
}

/**
 * Write `count` versions of `key` (tiny bodies, `concurrency` PUTs in flight) straight through the SDK:
 * thousands of versions in seconds. `metadata(i)` gives each version's user metadata.
 * @returns the version ids, in the order the writes completed.
 */
export async function putVersions(
  bucket: string,
  key: string,
  count: number,
  options: { concurrency?: number; metadata?: (i: number) => Record<string, string> } = {},
): Promise<string[]> {
  const client = rawClient();
  const ids: string[] = [];
  let next = 0;
  try {
    await Promise.all(
      Array.from({ length: options.concurrency ?? 32 }, async () => {
        while (next < count) {
          const i = next++;
          const out = await client.send(
            new PutObjectCommand({ Bucket: bucket, Key: key, Body: `version ${i}`, Metadata: options.metadata?.(i) }),
          );
          if (out.VersionId) ids.push(out.VersionId);
        }
      }),
    );
  } finally {
    client.destroy();
  }
  return ids;
}
