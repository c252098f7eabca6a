/** Litestream 0.3.13 (the binary from the npm package @flydotio/litestream-linux-x64) as a peer. */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { setTimeout as sleep } from 'node:timers/promises';
import { listKeys, type ServerInfo } from './s3.js';

export const LITESTREAM_BIN = join(
  dirname(createRequire(import.meta.url).resolve('@flydotio/litestream-linux-x64/package.json')),
  'litestream',
);

export interface LitestreamReplica {
  readonly dbPath: string;
  readonly bucket: string;
  /** Key prefix of the replica in the bucket. */
  readonly path: string;
  /** S3 endpoint (the server, or a counting proxy in front of it). */
  readonly endpoint: string;
  readonly syncInterval?: string;
}

/** Write a Litestream config file for one database with one S3 replica; returns its path. */
export function writeConfig(file: string, info: ServerInfo, r: LitestreamReplica): string {
  const yaml = [
    'dbs:',
    `  - path: ${r.dbPath}`,
    '    replicas:',
    '      - type: s3',
    `        bucket: ${r.bucket}`,
    `        path: ${r.path}`,
    `        endpoint: ${r.endpoint}`,
    `        region: ${info.region}`,
    '        force-path-style: true',
    `        access-key-id: ${info.accessKeyId}`,
    `        secret-access-key: ${info.secretAccessKey}`,
    `        sync-interval: ${r.syncInterval ?? '1s'}`,
    '',
  ].join('\n');
  writeFileSync(file, yaml);
  return file;
}

/**
 * Poll the bucket until a snapshot of the replica exists (`PATH/generations/GEN/snapshots/*.snapshot.lz4`).
 * @returns the time it appeared (performance.now()), or throws after `timeoutMs`.
 */
export async function waitForSnapshot(s3: S3Client, bucket: string, path: string, timeoutMs: number, pollMs = 100): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const keys = await listKeys(s3, bucket, `${path}/generations/`);
    if (keys.some((k) => k.includes('/snapshots/'))) return performance.now();
    await sleep(pollMs);
  }
  throw new Error(`no Litestream snapshot under s3://${bucket}/${path} after ${timeoutMs} ms`);
}
