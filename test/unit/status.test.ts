import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { SyncStatus } from '../../src/core/sync-loop.js';
import { publicConfig, statusDocument, type SidecarStatusLike } from '../../src/http/status.js';

const idle: SyncStatus = {
  running: true,
  syncing: false,
  lastUpload: undefined,
  lastCheckAt: undefined,
  nextRunAt: undefined,
  unsyncedSince: undefined,
  uploads: 0,
  skippedUnchanged: 0,
  consecutiveFailures: 0,
  lastError: undefined,
};

const config = loadConfig({
  DB_S3_BUCKET: 'app-db',
  DB_S3_KEY: 'prod/db.sqlite3',
  DB_LOCAL_PATH: '/data/db.sqlite3',
  DB_S3_ENDPOINT: 'https://s3.eu-west-1.amazonaws.com',
  DB_S3_SSE: 'aws:kms',
  DB_S3_SSE_KMS_KEY_ID: 'alias/app-db',
  DB_SYNC_INTERVAL: '30s',
  DB_SYNC_LEASE_BUCKET: 'app-locks',
  AWS_REGION: 'eu-west-1',
  // Never part of Config; passed here to show that nothing reads them into the document.
  AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz9secret',
  AWS_SESSION_TOKEN: 'IQoJb3JpZ2luX2VjEJr//////////token',
});

const startedAt = new Date('2026-11-23T10:00:00.000Z');
const now = new Date('2026-11-23T10:05:30.400Z');

function doc(sidecar: Partial<SidecarStatusLike> = {}) {
  return statusDocument({
    sidecar: { ...idle, phase: 'ready', ...sidecar },
    config,
    location: 's3://app-db (https://s3.eu-west-1.amazonaws.com)',
    version: '1.2.3',
    startedAt,
    now,
  });
}

describe('status document', () => {
  it('says what runs, since when, and what comes next; absent values are null', () => {
    const d = doc({ nextRunAt: '2026-11-23T10:06:00.000Z', lastCheckAt: '2026-11-23T10:05:30.000Z' });
    expect(d).toMatchObject({
      version: '1.2.3',
      phase: 'ready',
      startedAt: '2026-11-23T10:00:00.000Z',
      uptimeSeconds: 330,
      nextRunAt: '2026-11-23T10:06:00.000Z',
      lastCheckAt: '2026-11-23T10:05:30.000Z',
      lastUpload: null,
      lastError: null,
      unsyncedSince: null,
      dataAtRiskSeconds: 0,
      lease: null,
    });
    // JSON keeps every key: scripts can rely on them.
    const parsed = JSON.parse(JSON.stringify(d)) as Record<string, unknown>;
    expect(Object.keys(parsed)).toEqual(Object.keys(d));
  });

  it('carries the last snapshot, the last error, the data at risk and the lease', () => {
    const lastUpload = { at: '2026-11-23T10:04:00.000Z', versionId: 'v7', sizeBytes: 4096, sha256: 'ab'.repeat(32) };
    const lastError = { message: 'upload s3://app-db/prod/db.sqlite3: SlowDown', code: 'SlowDown', at: '2026-11-23T10:05:00.000Z' };
    const d = doc({
      lastUpload,
      lastError,
      consecutiveFailures: 2,
      unsyncedSince: '2026-11-23T10:04:50.000Z',
      uploads: 3,
      skippedUnchanged: 9,
      lease: { state: 'held', owner: 'task-1' },
    });
    expect(d).toMatchObject({ lastUpload, lastError, consecutiveFailures: 2, uploads: 3, skippedUnchanged: 9 });
    // Not checked yet, not waiting for a lease.
    expect(d).toMatchObject({ versioning: null, leaseWait: { since: null, stalled: false } });
    expect(d.dataAtRiskSeconds).toBe(40);
    expect(d.lease).toEqual({ state: 'held', owner: 'task-1' });
  });

  it('shows the configuration from an allowlist, with no secret anywhere', () => {
    const d = doc();
    expect(d.config).toEqual({
      replica: 's3',
      location: 's3://app-db (https://s3.eu-west-1.amazonaws.com)',
      bucket: 'app-db',
      key: 'prod/db.sqlite3',
      localPath: '/data/db.sqlite3',
      replicaDir: null,
      endpoint: 'https://s3.eu-west-1.amazonaws.com',
      region: 'eu-west-1',
      forcePathStyle: false,
      allowHttp: false,
      sse: 'aws:kms',
      sseKmsKeyId: 'alias/app-db',
      intervalMs: 30_000,
      continuous: { mode: 'auto', segmentIntervalMs: 1_000, baseIntervalMs: 3_600_000, spoolMaxBytes: null },
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      integrityCheck: 'quick',
      keepBackups: config.keepBackups,
      keepBackupsDays: config.keepBackupsDays,
      lease: { mode: 'auto', bucket: 'app-locks', key: null, ttlMs: config.leaseTtlMs, waitWarnMs: 60_000 },
      versioningCheck: 'warn',
      cloudwatchMetrics: null,
      health: { host: '127.0.0.1', port: 8790 },
    });
    const text = JSON.stringify(d);
    expect(text).not.toMatch(/secret|token|password|credential/i);
  });

  it('names the bucket default when no SSE is set, and a directory replica as such', () => {
    const dirConfig = loadConfig({ DB_SYNC_REPLICA_DIR: '/backups' });
    expect(publicConfig(dirConfig, '/backups')).toMatchObject({
      replica: 'directory',
      replicaDir: '/backups',
      bucket: null,
      sse: 'bucket-default',
    });
  });
});
