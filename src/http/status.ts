/**
 * The `GET /status` document: what the daemon is doing, for humans (`curl … | jq`) and scripts.
 *
 * The configuration part is an allowlist of fields, never the whole {@link Config}: a setting added later
 * does not appear here until someone decides it is safe to show. Credentials never reach it: db-sync
 * takes them only from the AWS SDK's chain and never holds them in its configuration, and an endpoint
 * with `user:password@` is refused by the configuration.
 * Fields without a value are `null`, not absent, so scripts can rely on every key being there.
 */
import type { Config } from '../config.js';
import type { SyncStatus } from '../core/sync-loop.js';

/** The sidecar's status (phase, loop counters, lease) as the document reads it. */
export type SidecarStatusLike = SyncStatus & {
  readonly phase: string;
  readonly lease?: unknown;
  /** Since when this task waits for another task's lease, and whether past DB_SYNC_LEASE_WAIT_WARN. */
  readonly leaseWait?: { readonly since: string | undefined; readonly stalled: boolean } | undefined;
  /** The bucket's versioning as checked at start; undefined before the check or when it is off. */
  readonly versioning?: string | undefined;
  /** Continuous replication (docs/continuous-replication.md); undefined when off. */
  readonly replication?: unknown;
};

export interface StatusInput {
  readonly sidecar: SidecarStatusLike;
  readonly config: Config;
  /** The store's location (`s3://bucket (endpoint)` or a directory); never holds credentials. */
  readonly location: string;
  readonly version: string;
  readonly startedAt: Date;
  readonly now?: Date | undefined;
}

/** The configuration as /status shows it: what it syncs, where, how often, and how it protects it. */
export function publicConfig(config: Config, location: string) {
  return {
    replica: config.replicaDir ? 'directory' : 's3',
    location,
    bucket: config.bucket ?? null,
    key: config.key,
    localPath: config.localPath,
    replicaDir: config.replicaDir ?? null,
    endpoint: config.endpoint ?? null,
    region: config.region ?? null,
    forcePathStyle: config.forcePathStyle,
    allowHttp: config.allowHttp,
    sse: config.sse ?? 'bucket-default',
    sseKmsKeyId: config.sseKmsKeyId ?? null,
    intervalMs: config.intervalMs,
    continuous: {
      mode: config.continuous,
      segmentIntervalMs: config.segmentIntervalMs,
      baseIntervalMs: config.baseIntervalMs,
      spoolMaxBytes: config.spoolMaxBytes ?? null,
    },
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    integrityCheck: config.integrityCheck,
    keepBackups: config.keepBackups,
    keepBackupsDays: config.keepBackupsDays,
    lease: {
      mode: config.leaseMode,
      bucket: config.leaseBucket ?? null,
      key: config.leaseKey ?? null,
      ttlMs: config.leaseTtlMs,
      waitWarnMs: config.leaseWaitWarnMs,
    },
    versioningCheck: config.versioningCheck,
    cloudwatchMetrics: config.cloudwatchMetrics ? config.cloudwatchNamespace : null,
    health: { host: config.healthHost, port: config.healthPort },
  };
}

export type StatusDocument = ReturnType<typeof statusDocument>;

/** Build the document. Pure: the same input gives the same document (tests pass `now`). */
export function statusDocument(input: StatusInput) {
  const now = input.now ?? new Date();
  const s = input.sidecar;
  const unsyncedMs = s.unsyncedSince ? now.getTime() - Date.parse(s.unsyncedSince) : 0;
  return {
    version: input.version,
    phase: s.phase,
    startedAt: input.startedAt.toISOString(),
    uptimeSeconds: Math.max(0, Math.round((now.getTime() - input.startedAt.getTime()) / 1000)),
    running: s.running,
    syncing: s.syncing,
    /** The last snapshot that reached the store (time, version, size, sha256). */
    lastUpload: s.lastUpload ?? null,
    lastCheckAt: s.lastCheckAt ?? null,
    nextRunAt: s.nextRunAt ?? null,
    unsyncedSince: s.unsyncedSince ?? null,
    dataAtRiskSeconds: Math.max(0, Math.round(unsyncedMs / 1000)),
    uploads: s.uploads,
    skippedUnchanged: s.skippedUnchanged,
    consecutiveFailures: s.consecutiveFailures,
    lastError: s.lastError ?? null,
    lease: s.lease ?? null,
    leaseWait: { since: s.leaseWait?.since ?? null, stalled: s.leaseWait?.stalled ?? false },
    versioning: s.versioning ?? null,
    /** Continuous replication: state, generation, shipped seq, lag, segments and bytes shipped, spool, bases; null when off. */
    replication: s.replication ?? null,
    config: publicConfig(input.config, input.location),
  };
}
