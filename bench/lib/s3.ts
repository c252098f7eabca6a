/**
 * The local S3 server (scripts/s3-server.sh: Ceph RGW, memstore, loopback) in its own state directory and
 * ports, so the benchmark never shares (or stops) the server the test suite uses; and a small client.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  S3Client,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { run } from './proc.js';

export const ROOT = join(import.meta.dirname, '..', '..');
const SCRIPT = join(ROOT, 'scripts', 's3-server.sh');

export interface ServerInfo {
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
}

export interface ServerSettings {
  readonly dir: string;
  readonly port: number;
  readonly monPort: number;
  readonly memBytes: number;
}

export function serverSettings(env: NodeJS.ProcessEnv = process.env): ServerSettings {
  return {
    dir: env.BENCH_S3_DIR ?? '/tmp/db-sync-bench-s3',
    port: Number(env.BENCH_S3_PORT ?? 7490),
    monPort: Number(env.BENCH_S3_MON_PORT ?? 16790),
    // Several 1 GB versions per tool; memstore only holds what is written (and RGW frees deleted data
    // only after hours), so the benchmark restarts the server between heavy sections instead.
    memBytes: Number(env.BENCH_S3_MEM_BYTES ?? 12 * 1024 ** 3),
  };
}

function scriptEnv(s: ServerSettings): NodeJS.ProcessEnv {
  return {
    ...process.env,
    S3_SERVER_DIR: s.dir,
    S3_SERVER_PORT: String(s.port),
    S3_SERVER_MON_PORT: String(s.monPort),
    S3_SERVER_MEM_BYTES: String(s.memBytes),
  };
}

export async function startServer(s: ServerSettings): Promise<ServerInfo> {
  await run('bash', [SCRIPT, 'start'], { env: scriptEnv(s) });
  return JSON.parse(readFileSync(join(s.dir, 'server.json'), 'utf8')) as ServerInfo;
}

export async function stopServer(s: ServerSettings): Promise<void> {
  await run('bash', [SCRIPT, 'stop'], { env: scriptEnv(s) });
}

export async function serverRunning(s: ServerSettings): Promise<boolean> {
  return run('bash', [SCRIPT, 'status'], { env: scriptEnv(s) }).then(
    () => true,
    () => false,
  );
}

/** Environment for db-sync, the AWS CLI and Litestream talking to `info` (through `endpoint` if given). */
export function s3Env(info: ServerInfo, endpoint = info.endpoint): NodeJS.ProcessEnv {
  return {
    ...process.env,
    AWS_ACCESS_KEY_ID: info.accessKeyId,
    AWS_SECRET_ACCESS_KEY: info.secretAccessKey,
    AWS_REGION: info.region,
    AWS_DEFAULT_REGION: info.region,
    AWS_EC2_METADATA_DISABLED: 'true',
    // The Debian AWS CLI (2.9) and recent SDKs: no streaming CRC32 trailers, which RGW rejects.
    AWS_REQUEST_CHECKSUM_CALCULATION: 'when_required',
    AWS_RESPONSE_CHECKSUM_VALIDATION: 'when_required',
    DB_S3_ENDPOINT: endpoint,
    DB_S3_FORCE_PATH_STYLE: 'true',
  };
}

/** An SDK client for `info`; `sockets` caps its connections (the SDK's default pool otherwise). */
export function client(info: ServerInfo, sockets?: number): S3Client {
  return new S3Client({
    endpoint: info.endpoint,
    region: info.region,
    forcePathStyle: true,
    credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...(sockets === undefined ? {} : { requestHandler: { httpsAgent: { maxSockets: sockets }, httpAgent: { maxSockets: sockets } } }),
  });
}

/** Create a versioned bucket (as db-sync requires). */
export async function createBucket(s3: S3Client, bucket: string): Promise<void> {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
}

/** Every current key under `prefix`. */
export async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page: ListObjectsV2CommandOutput = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}
