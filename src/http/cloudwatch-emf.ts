/**
 * CloudWatch metrics without an agent and without extra IAM: CloudWatch Embedded Metric Format (EMF)
 * lines in the normal log stream. ECS's `awslogs` driver ships stdout to CloudWatch Logs, and Logs turns
 * every JSON line whose root holds an `_aws` member into metric data points in the namespace it names.
 *
 * One line per emission: every {@link EMF_INTERVAL_MS} while the process runs (so an age keeps rising
 * and a silent task is missing data), and after each sync run that uploaded or failed.
 * Counters (failures, bytes, uploads) are deltas since the previous line; CloudWatch sums them.
 *
 * Spec: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
 * The Prometheus endpoint (metrics.ts) stays; both read the same {@link MetricsSource}.
 */
import type { TickResult } from '../core/sync-loop.js';
import type { UploadOutcome } from '../core/upload.js';
import { leaseWaitSeconds, type MetricsSource } from './metrics.js';

/** Periodic emission: CloudWatch's standard resolution is one minute. */
export const EMF_INTERVAL_MS = 60_000;

/** EMF units used here (a subset of CloudWatch's StandardUnit). */
export type EmfUnit = 'Seconds' | 'Bytes' | 'Count' | 'None';

/** The metric names, for alarms and dashboards (terraform/examples/complete has the alarm). */
export const EMF_METRICS = {
  lastSuccessfulSyncAge: { name: 'LastSuccessfulSyncAgeSeconds', unit: 'Seconds' },
  dataAtRisk: { name: 'DataAtRiskSeconds', unit: 'Seconds' },
  syncFailures: { name: 'SyncFailures', unit: 'Count' },
  uploads: { name: 'Uploads', unit: 'Count' },
  bytesUploaded: { name: 'BytesUploaded', unit: 'Bytes' },
  restoreDuration: { name: 'RestoreDurationSeconds', unit: 'Seconds' },
  leaseHeld: { name: 'LeaseHeld', unit: 'None' },
  leaseWait: { name: 'LeaseWaitSeconds', unit: 'Seconds' },
  ready: { name: 'Ready', unit: 'None' },
} as const satisfies Record<string, { name: string; unit: EmfUnit }>;

/** The one dimension: which database (e.g. `s3://bucket/db.sqlite3`), so tasks of one service aggregate. */
export const EMF_DIMENSION = 'Database';

export interface EmfOptions {
  readonly namespace: string;
  /** The value of the {@link EMF_DIMENSION} dimension. */
  readonly database: string;
  /** Writes one line (without its newline) to the log stream. */
  readonly write: (line: string) => void;
  readonly source: () => MetricsSource;
  /** How long preparing the database took, once it is ready (emitted once). */
  readonly restoreMs?: (() => number | undefined) | undefined;
  readonly intervalMs?: number | undefined;
  /** Wall clock in ms (tests drive it). */
  readonly now?: (() => number) | undefined;
}

export class CloudWatchEmf {
  private failures = 0;
  private uploads = 0;
  private bytes = 0;
  /** Last sync run that ended without an error (uploaded, unchanged or identical); the restore counts as one. */
  private lastSuccessMs: number | undefined;
  private restoreReported = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly options: EmfOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Emit now and every interval until {@link stop}. Idempotent. */
  start(): void {
    if (this.timer) return;
    this.emit();
    this.timer = setInterval(() => this.emit(), this.options.intervalMs ?? EMF_INTERVAL_MS);
    // Metrics never keep the process alive on their own.
    this.timer.unref();
  }

  /** The database is in place: the sync age counts from here until the first run. */
  markReady(): void {
    this.lastSuccessMs ??= this.now();
    this.emit();
  }

  /** Stop the timer and emit a last line (what the final sync did). Idempotent. */
  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.emit();
  }

  /** Observer for {@link UploadOutcome}s (UploadContext.onOutcome). */
  observeOutcome = (outcome: UploadOutcome): void => {
    if (!outcome.uploaded) return;
    this.uploads += 1;
    this.bytes += outcome.snapshot.sizeBytes;
  };

  /** Observer for sync runs (SyncLoopOptions.onRun): emits after a run that uploaded or failed. */
  observeRun = (result: TickResult | Error): void => {
    if (result instanceof Error) this.failures += 1;
    else this.lastSuccessMs = this.now();
    if (result instanceof Error || result === 'uploaded') this.emit();
  };

  /** Build one EMF document from the current state and reset the deltas. Exposed for tests. */
  document(): Record<string, unknown> {
    const nowMs = this.now();
    const s = this.options.source();
    const values: Array<[{ name: string; unit: EmfUnit }, number]> = [
      [EMF_METRICS.dataAtRisk, s.unsyncedSince ? Math.max(0, (nowMs - Date.parse(s.unsyncedSince)) / 1000) : 0],
      [EMF_METRICS.syncFailures, this.failures],
      [EMF_METRICS.uploads, this.uploads],
      [EMF_METRICS.bytesUploaded, this.bytes],
      [EMF_METRICS.ready, s.phase === 'ready' ? 1 : 0],
      [EMF_METRICS.leaseWait, leaseWaitSeconds(s, nowMs)],
    ];
    // Absent until the database is ready: an alarm that treats missing data as breaching then fires for a
    // task that never gets ready, or has stopped reporting at all.
    if (this.lastSuccessMs !== undefined)
      values.push([EMF_METRICS.lastSuccessfulSyncAge, Math.max(0, (nowMs - this.lastSuccessMs) / 1000)]);
    if (s.lease && s.lease.state !== 'off') values.push([EMF_METRICS.leaseHeld, s.lease.state === 'held' ? 1 : 0]);
    const restoreMs = this.restoreReported ? undefined : this.options.restoreMs?.();
    if (restoreMs !== undefined) {
      values.push([EMF_METRICS.restoreDuration, restoreMs / 1000]);
      this.restoreReported = true;
    }
    this.failures = 0;
    this.uploads = 0;
    this.bytes = 0;
    const doc: Record<string, unknown> = {
      _aws: {
        Timestamp: nowMs,
        CloudWatchMetrics: [
          {
            Namespace: this.options.namespace,
            Dimensions: [[EMF_DIMENSION]],
            Metrics: values.map(([m]) => ({ Name: m.name, Unit: m.unit })),
          },
        ],
      },
      [EMF_DIMENSION]: this.options.database,
      phase: s.phase,
      msg: 'metrics',
    };
    for (const [m, v] of values) doc[m.name] = Math.round(v * 1000) / 1000;
    return doc;
  }

  private emit(): void {
    this.options.write(JSON.stringify(this.document()));
  }
}
