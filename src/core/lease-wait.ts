/**
 * A stalled deploy, made visible. A task that waits for another task's lease is not ready; with ECS's
 * default rolling deploys (minimum healthy 100 %, maximum 200 %) ECS keeps the old task, which holds the
 * lease, until the new one is healthy, so the wait never ends and the deployment stalls until its circuit
 * breaker rolls it back. Past the threshold (DB_SYNC_LEASE_WAIT_WARN, the health check's start period)
 * this says so once, loudly and distinctly, and the status (and so the metrics) carry it.
 */
import type { Logger } from '../logger.js';
import type { LeaseRecord } from './lease.js';

/** The message of the stall log line, fixed so alerts and log filters can match it. */
export const LEASE_WAIT_STALLED = 'LEASE WAIT STALLED';

export interface LeaseWaitStatus {
  /** When this task started waiting for the lease (ISO 8601); undefined when not waiting. */
  readonly since: string | undefined;
  /** Whether it has waited longer than the threshold (and still waits). */
  readonly stalled: boolean;
}

export class LeaseWaitWatch {
  private sinceMs: number | undefined;
  private stalledValue = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: {
      readonly warnAfterMs: number;
      readonly log: Logger;
      /** The holder this task waits for, as last read (for the log line). */
      readonly holder: () => LeaseRecord | undefined;
      readonly key: string;
      readonly location: string;
      readonly now?: (() => number) | undefined;
    },
  ) {}

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** Waiting begins. Idempotent. */
  start(): void {
    if (this.sinceMs !== undefined) return;
    this.sinceMs = this.now();
    this.timer = setTimeout(() => this.stall(), this.options.warnAfterMs);
    this.timer.unref();
  }

  /** Waiting is over (the lease was taken, or the wait was given up). */
  stop(): void {
    clearTimeout(this.timer);
    if (this.stalledValue && this.sinceMs !== undefined) {
      this.options.log.info({ waitedMs: this.now() - this.sinceMs, key: this.options.key }, 'lease wait over');
    }
    this.sinceMs = undefined;
    this.stalledValue = false;
  }

  private stall(): void {
    if (this.sinceMs === undefined) return;
    const waitedMs = this.now() - this.sinceMs;
    // A timer may fire when the clock has moved a millisecond less than its delay (the event loop's clock
    // and Date.now() round differently): wait out the rest, so "stalled" always means past the threshold.
    if (waitedMs < this.options.warnAfterMs) {
      this.timer = setTimeout(() => this.stall(), this.options.warnAfterMs - waitedMs);
      this.timer.unref();
      return;
    }
    this.stalledValue = true;
    const h = this.options.holder();
    this.options.log.error(
      {
        key: this.options.key,
        location: this.options.location,
        waitedMs,
        thresholdMs: this.options.warnAfterMs,
        holder: h ? { owner: h.owner, host: h.host, task: h.task, renewedAt: h.renewedAt } : undefined,
        hint:
          'another task holds the lease and keeps renewing it; if this is an ECS deployment, the service must stop the old task ' +
          'before starting the new one: deployment minimumHealthyPercent 0, maximumPercent 100 (a default 100/200 deploy stalls here)',
      },
      `${LEASE_WAIT_STALLED}: still waiting for the lease; not ready`,
    );
  }

  status(): LeaseWaitStatus {
    return { since: this.sinceMs === undefined ? undefined : new Date(this.sinceMs).toISOString(), stalled: this.stalledValue };
  }
}
