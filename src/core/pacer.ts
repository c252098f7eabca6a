/**
 * Pacing for background work that competes with the app for the CPU: periodic snapshots and continuous
 * replication's bases (copy, check, hashes).
 *
 * Why: on a 2-vCPU task a snapshot of a 200 MB database keeps a core busy for about a second, and the app's
 * commits slow down while it runs even at nice 10 or 19 (measured with a plain busy loop on a worker thread:
 * the app's p99 commit latency during the loop was ×2.7-3 of the same run's p99 outside it; a paced copy at a
 * quarter of the time: ×1.1-1.2). The vCPUs share more than the scheduler sees (caches, memory bandwidth,
 * a hypervisor's time slices), so lowering priority is not enough: the work has to leave the CPU idle.
 *
 * Contract: after each piece of work, {@link Pacer.pause} sleeps so that work takes about `share` of the
 * wall time since the previous pause ended. Work pieces are small (one backup step, one 1 MiB chunk), so
 * the app never waits behind more than one of them. share = 1 never sleeps.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * How long to pause after `workedMs` of work so that work takes `share` (0 < share ≤ 1) of the time.
 * At most 1 s: a slow piece (a loaded disk) must not stretch the work without bound.
 * Self-contained (no imports, no closures): the snapshot worker embeds its source.
 */
export function pauseAfter(workedMs: number, share: number): number {
  if (!(share > 0) || share >= 1 || !(workedMs > 0)) return 0;
  return Math.min(1_000, (workedMs * (1 - share)) / share);
}

export class Pacer {
  private workStart = performance.now();

  /** @param share the share of wall time the work may take, 0 < share ≤ 1 (1 or undefined: no pacing). */
  constructor(private readonly share: number | undefined) {}

  /** Whether this pacer ever sleeps. */
  get active(): boolean {
    return this.share !== undefined && this.share > 0 && this.share < 1;
  }

  /** Call after a piece of work: sleeps its share, then starts timing the next piece. */
  async pause(signal?: AbortSignal): Promise<void> {
    const ms = this.due();
    if (ms >= 1) await sleep(ms, undefined, { signal });
    this.workStart = performance.now();
  }

  /**
   * {@link pause} for callbacks that cannot await (better-sqlite3's backup progress): blocks this thread without
   * using the CPU, for at most `maxMs`, since nothing else runs on it meanwhile.
   */
  pauseBlocking(maxMs: number): void {
    const ms = Math.min(maxMs, this.due());
    if (ms >= 1) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    this.workStart = performance.now();
  }

  /** The pause owed for the work since the last one. */
  private due(): number {
    return this.active ? pauseAfter(performance.now() - this.workStart, this.share as number) : 0;
  }
}
