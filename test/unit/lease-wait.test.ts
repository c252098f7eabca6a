/** The lease-wait watch (src/core/lease-wait.ts): when it calls a wait stalled. */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { LeaseWaitWatch } from '../../src/core/lease-wait.js';
import type { Logger } from '../../src/logger.js';

describe('LeaseWaitWatch', () => {
  it('calls a wait stalled only once the clock says the threshold has passed, even when its timer fires a little early', async () => {
    // A Node timer may fire when Date.now() has moved a millisecond less than its delay (the event loop's
    // clock and the wall clock round differently): a fresh-clone CI run logged the stall at waitedMs 1999
    // for a 2000 ms threshold. Here the injected clock lags the timer the same way.
    let clock = 1_000;
    const stalls: Array<Record<string, unknown>> = [];
    const log = { error: (fields: Record<string, unknown>) => void stalls.push(fields), info: () => undefined } as unknown as Logger;
    const watch = new LeaseWaitWatch({ warnAfterMs: 20, log, holder: () => undefined, key: 'k', location: 'bucket', now: () => clock });
    watch.start();
    clock = 1_019; // the 20 ms timer fires while the clock says 19 ms
    await sleep(60);
    expect(watch.status().stalled).toBe(false);
    expect(stalls).toEqual([]);
    clock = 1_020;
    await sleep(30);
    expect(watch.status().stalled).toBe(true);
    expect(stalls).toHaveLength(1);
    expect(stalls[0]?.waitedMs).toBe(20);
    watch.stop();
  });
});
