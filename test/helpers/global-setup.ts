/**
 * Start the project's real local S3 server (Ceph RGW, scripts/s3-server.sh) once per test run and hand
 * its coordinates to the tests. A server already running is reused and left running; one this run
 * started is stopped at the end.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import type { S3ServerInfo } from './s3.js';

const root = join(import.meta.dirname, '..', '..');
const script = join(root, 'scripts', 's3-server.sh');
const stateDir = process.env.S3_SERVER_DIR ?? '/tmp/db-sync-s3';

function running(): boolean {
  try {
    execFileSync('bash', [script, 'status'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export default function setup(project: TestProject): () => void {
  const reused = running();
  if (!reused) {
    console.log('[s3] starting the local S3 server (Ceph RGW) with scripts/s3-server.sh start ...');
    try {
      execFileSync('bash', [script, 'start'], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 300_000 });
    } catch (error) {
      throw new Error(
        `could not start the local S3 server (scripts/s3-server.sh start): ${(error as Error).message}\n` +
          'The integration tests need it; .ci/run installs its Debian packages (ceph-mon ceph-osd radosgw ceph-common).',
      );
    }
  } else {
    console.log('[s3] reusing the local S3 server already running');
  }
  const info = JSON.parse(readFileSync(join(stateDir, 'server.json'), 'utf8')) as S3ServerInfo;
  project.provide('s3', info);
  return () => {
    if (!reused) execFileSync('bash', [script, 'stop'], { stdio: 'inherit', timeout: 120_000 });
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    s3: S3ServerInfo;
  }
}
