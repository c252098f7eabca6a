/**
 * Prometheus metrics (`GET /metrics`), with prom-client: the exposition format, histograms and the
 * process metrics are its job, and it does them right (escaping, buckets, content type).
 *
 * Counters and histograms are fed by observers on the sync loop; gauges that describe state (last
 * upload, data at risk, failures in a row) are computed from the sidecar's status at scrape time, so
 * they can never drift from what /status says.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { TickResult } from '../core/sync-loop.js';
import type { UploadOutcome } from '../core/upload.js';
import { failureKind } from '../errors.js';

/** The part of the sidecar's status the gauges read. */
export interface MetricsSource {
  readonly phase: string;
  readonly lastUpload: { readonly at: string } | undefined;
  readonly unsyncedSince: string | undefined;
  readonly consecutiveFailures: number;
  /** The single-writer lease; absent where there is none. */
  readonly lease?: { readonly state: string } | undefined;
  /** Waiting for another task's lease: since when, and whether past DB_SYNC_LEASE_WAIT_WARN. */
  readonly leaseWait?: { readonly since: string | undefined; readonly stalled: boolean } | undefined;
  /** Continuous replication; absent or undefined when off. */
  readonly replication?: ReplicationMetricsSource | undefined;
}

/** The part of the replication status the `db_sync_replication_*` metrics read. */
export interface ReplicationMetricsSource {
  readonly state: string;
  readonly shippedSeq: number;
  readonly lagMs: number;
  readonly segmentsShipped: number;
  readonly bytesShipped: number;
  readonly spoolBytes: number;
  readonly bases: number;
  readonly generations: number;
}

/** Seconds this task has waited for another task's lease (0 when not waiting). */
export function leaseWaitSeconds(source: MetricsSource, nowMs = Date.now()): number {
  const since = source.leaseWait?.since;
  return since ? Math.max(0, (nowMs - Date.parse(since)) / 1000) : 0;
}

const DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class SyncMetrics {
  readonly registry = new Registry();
  private readonly snapshotSeconds: Histogram;
  private readonly uploadSeconds: Histogram;
  private readonly bytesUploaded: Counter;
  private readonly uploads: Counter;
  private readonly skipped: Counter;
  private readonly failures: Counter;

  constructor(source: () => MetricsSource) {
    const registers = [this.registry];
    // prom-client's own names start with process_ and nodejs_: db_sync_process_resident_memory_bytes, ...
    collectDefaultMetrics({ register: this.registry, prefix: 'db_sync_' });
    this.snapshotSeconds = new Histogram({
      name: 'db_sync_snapshot_duration_seconds',
      help: 'Time to take a consistent snapshot (backup API copy + integrity check + sha256).',
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.uploadSeconds = new Histogram({
      name: 'db_sync_upload_duration_seconds',
      help: 'Time to upload a snapshot, retries included.',
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.bytesUploaded = new Counter({ name: 'db_sync_uploaded_bytes_total', help: 'Bytes of snapshots uploaded.', registers });
    this.uploads = new Counter({ name: 'db_sync_uploads_total', help: 'Snapshots uploaded.', registers });
    this.skipped = new Counter({
      name: 'db_sync_uploads_skipped_total',
      help: 'Sync runs that uploaded nothing: reason="unchanged" (no change seen, no snapshot) or "identical" (snapshot equal to the last upload).',
      labelNames: ['reason'],
      registers,
    });
    this.failures = new Counter({
      name: 'db_sync_failures_total',
      help: 'Failed sync runs by kind (the storage error code, or the db-sync error kind).',
      labelNames: ['kind'],
      registers,
    });
    new Gauge({
      name: 'db_sync_last_successful_upload_timestamp_seconds',
      help: 'Unix time of the last successful upload (0 before the first).',
      registers,
      collect() {
        const at = source().lastUpload?.at;
        this.set(at ? Date.parse(at) / 1000 : 0);
      },
    });
    new Gauge({
      name: 'db_sync_data_at_risk_seconds',
      help: 'Seconds since a change was first seen that has not reached the store yet (0 when in sync).',
      registers,
      collect() {
        const since = source().unsyncedSince;
        this.set(since ? Math.max(0, (Date.now() - Date.parse(since)) / 1000) : 0);
      },
    });
    new Gauge({
      name: 'db_sync_consecutive_failures',
      help: 'Failed sync runs in a row (0 when the last one succeeded).',
      registers,
      collect() {
        this.set(source().consecutiveFailures);
      },
    });
    new Gauge({
      name: 'db_sync_lease_held',
      help: '1 while this process holds the single-writer lease, else 0 (waiting, lost, released, or no lease).',
      registers,
      collect() {
        this.set(source().lease?.state === 'held' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'db_sync_lease_wait_seconds',
      help: "Seconds this task has waited for another task's lease (0 when not waiting); not ready meanwhile.",
      registers,
      collect() {
        this.set(leaseWaitSeconds(source()));
      },
    });
    new Gauge({
      name: 'db_sync_lease_wait_stalled',
      help: '1 while this task has waited for the lease longer than DB_SYNC_LEASE_WAIT_WARN: a stalled deployment.',
      registers,
      collect() {
        this.set(source().leaseWait?.stalled ? 1 : 0);
      },
    });
    this.registerReplication(source, registers);
    new Gauge({
      name: 'db_sync_ready',
      help: '1 when the database is restored and syncing, else 0.',
      registers,
      collect() {
        this.set(source().phase === 'ready' ? 1 : 0);
      },
    });
  }

  /**
   * Continuous replication, read from the status at scrape time (0 when it is off). Counters are the
   * replicator's own running totals, so they never drift from /status.
   */
  private registerReplication(source: () => MetricsSource, registers: Registry[]): void {
    const gauge = (name: string, help: string, value: (r: ReplicationMetricsSource) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const r = source().replication;
          this.set(r ? value(r) : 0);
        },
      });
    };
    const counter = (name: string, help: string, value: (r: ReplicationMetricsSource) => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          const r = source().replication;
          this.reset();
          if (r) this.inc(value(r));
        },
      });
    };
    gauge('db_sync_replication_active', '1 while continuous replication covers the database (a WAL database), else 0.', (r) =>
      r.state === 'running' || r.state === 'starting' ? 1 : 0,
    );
    gauge('db_sync_replication_shipped_seq', 'Last segment seq in the store, in the current generation.', (r) => r.shippedSeq);
    gauge(
      'db_sync_replication_lag_seconds',
      'Age of the oldest captured commit not yet in the store (0 when none waits): the data at risk.',
      (r) => r.lagMs / 1000,
    );
    gauge('db_sync_replication_spool_bytes', 'Bytes of sealed or pending segments waiting on local disk.', (r) => r.spoolBytes);
    counter('db_sync_replication_segments_shipped_total', 'Segments uploaded.', (r) => r.segmentsShipped);
    counter('db_sync_replication_shipped_bytes_total', 'Bytes of segments uploaded.', (r) => r.bytesShipped);
    counter('db_sync_replication_bases_total', 'Bases uploaded (full copies at a chain position).', (r) => r.bases);
    counter(
      'db_sync_replication_generations_total',
      'Generations started (one per start, plus one per continuity break).',
      (r) => r.generations,
    );
  }

  /** Observer for {@link UploadOutcome}s (UploadContext.onOutcome). */
  observeOutcome = (outcome: UploadOutcome): void => {
    this.snapshotSeconds.observe(outcome.snapshot.durationMs / 1000);
    if (outcome.uploaded) {
      this.uploadSeconds.observe(outcome.uploadMs / 1000);
      this.uploads.inc();
      this.bytesUploaded.inc(outcome.snapshot.sizeBytes);
    }
  };

  /** Observer for sync runs (SyncLoopOptions.onRun). */
  observeRun = (result: TickResult | Error): void => {
    if (result instanceof Error) {
      this.failures.inc({ kind: failureKind(result) });
    } else if (result === 'unchanged' || result === 'identical') {
      this.skipped.inc({ reason: result });
    }
  };

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
