/**
 * Ships sealed segments to the store strictly in seq order, one at a time (docs/continuous-replication.md,
 * "Capture", tick step 6). A segment's spool file is deleted only after its PUT succeeded, so a crash at
 * any point leaves it either in the store or still in the spool. Retries the same key with backoff,
 * forever: the loop never dies on an error; it records the error and logs the 1st, 2nd, 4th… failure.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, failureKind, isAbort, toError } from '../errors.js';
import { removeQuietly } from '../fs-atomic.js';
import type { Logger } from '../logger.js';
import type { ObjectInfo, PutOptions } from '../replica/store.js';
import { segmentKey } from './layout.js';
import type { SealedSegment } from './pending.js';

/** Backoff between failed PUTs of the same segment: 250 ms doubling to this. */
export const SHIP_BACKOFF_MAX_MS = 10_000;
const SHIP_BACKOFF_MIN_MS = 250;
/** How often {@link SegmentShipper.drain} looks at the queue. */
const DRAIN_POLL_MS = 20;

/** Where segments go: a put of a local file (in the daemon, fenced by the locally checked lease). */
export type SegmentPut = (key: string, path: string, options: PutOptions) => Promise<ObjectInfo>;

export interface ShipperOptions {
  readonly key: string;
  readonly put: SegmentPut;
  readonly log: Logger;
  /** Called after each segment reached the store. */
  readonly onShipped?: ((segment: SealedSegment) => void) | undefined;
}

export interface ShipperStatus {
  readonly queued: number;
  readonly queuedBytes: number;
  readonly consecutiveFailures: number;
  readonly lastError: { readonly message: string; readonly code: string; readonly at: string } | undefined;
}

export class SegmentShipper {
  private readonly queue: SealedSegment[] = [];
  private running: Promise<void> | undefined;
  private controller = new AbortController();
  private failures = 0;
  private lastError: ShipperStatus['lastError'];
  private lastErrorObject: Error | undefined;
  private stopped = false;

  constructor(private readonly options: ShipperOptions) {}

  /** Queue a sealed segment; seqs must come in order (the replicator seals them so). */
  enqueue(segment: SealedSegment): void {
    const last = this.queue.at(-1);
    if (last && last.gen === segment.gen && segment.seq !== last.seq + 1) {
      throw new Error(`shipper: segment ${segment.seq} queued after ${last.seq}`);
    }
    this.queue.push(segment);
    this.kick();
  }

  private kick(): void {
    if (this.running || this.stopped || this.queue.length === 0) return;
    this.running = this.run().finally(() => {
      this.running = undefined;
      this.kick();
    });
  }

  get queuedBytes(): number {
    return this.queue.reduce((sum, s) => sum + s.sizeBytes, 0);
  }

  /** Capture time of the oldest commit queued; undefined when the queue is empty. */
  get oldestCommitMs(): number | undefined {
    return this.queue[0]?.firstCommitMs;
  }

  get queued(): number {
    return this.queue.length;
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    while (this.queue.length > 0 && !signal.aborted) {
      const segment = this.queue[0]!;
      const key = segmentKey(this.options.key, segment);
      try {
        await this.options.put(key, segment.path, { metadata: {}, signal });
        if (this.failures > 0) this.options.log.info({ failures: this.failures, key }, 'segment shipping recovered');
        this.failures = 0;
        // The same object, unless dropAll() replaced the queue meanwhile.
        if (this.queue[0] === segment) this.queue.shift();
        await removeQuietly(segment.path);
        this.options.onShipped?.(segment);
      } catch (error) {
        if (signal.aborted || isAbort(error, signal)) return;
        const err = toError(error);
        this.failures += 1;
        const code = failureKind(err);
        this.lastError = { message: err.message, code, at: new Date().toISOString() };
        this.lastErrorObject = err;
        if ((this.failures & (this.failures - 1)) === 0) {
          this.options.log.error(
            { key, err: err.message, code, consecutiveFailures: this.failures, queued: this.queue.length },
            'segment upload failed; retrying (the spool keeps it meanwhile)',
          );
        }
        const delayMs = Math.min(SHIP_BACKOFF_MAX_MS, SHIP_BACKOFF_MIN_MS * 2 ** Math.min(this.failures - 1, 10));
        await sleep(delayMs, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /**
   * Wait until every queued segment is shipped, at most `maxMs`.
   * (A plain deadline rather than `AbortSignal.any([signal, AbortSignal.timeout(maxMs)])`: measured on Node
   * 20, such a combined signal never fired, and a SIGTERM'd daemon hung here past its shutdown deadline.)
   * @throws AbortedError when `signal` fires or `maxMs` passes first (naming the last shipping error).
   */
  async drain(signal: AbortSignal, maxMs = Number.POSITIVE_INFINITY): Promise<void> {
    const deadline = performance.now() + maxMs;
    while (this.queue.length > 0) {
      if (signal.aborted || performance.now() >= deadline) {
        const last = this.lastError ? `; last error: ${this.lastError.message}` : '';
        throw new AbortedError(`ship segments: ${this.queue.length} not shipped${last}`, signal.reason);
      }
      this.kick();
      await sleep(DRAIN_POLL_MS);
    }
    // The queue empties as the last PUT succeeds, before its spool file is removed and onShipped called:
    // "shipped" includes those, so wait for the loop to finish it (no PUT or backoff is left in it).
    await this.running?.catch(() => undefined);
  }

  /** Stop shipping and delete every queued segment's file (a new generation supersedes them). */
  async dropAll(): Promise<number> {
    this.controller.abort(new Error('segments dropped'));
    const dropped = this.queue.splice(0);
    await this.running?.catch(() => undefined);
    this.controller = new AbortController();
    await Promise.all(dropped.map((s) => removeQuietly(s.path)));
    return dropped.length;
  }

  /** Stop shipping, keep the files (shutdown cut short). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.controller.abort(new Error('shipper stopped'));
    await this.running?.catch(() => undefined);
  }

  /** The last failure itself (kind, hint, cause), for reports; undefined before the first. */
  get lastFailure(): Error | undefined {
    return this.lastErrorObject;
  }

  status(): ShipperStatus {
    return { queued: this.queue.length, queuedBytes: this.queuedBytes, consecutiveFailures: this.failures, lastError: this.lastError };
  }
}
