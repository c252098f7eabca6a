/** Pacing of background work (src/core/pacer.ts): how long it pauses, and that it is off at 100%. */
import { describe, expect, it } from 'vitest';
import { Pacer, pauseAfter } from '../../src/core/pacer.js';
import { PACED_STEP_BYTES, SNAPSHOT_STEP_BYTES, stepBytesFor } from '../../src/core/sqlite-worker.js';

describe('pauseAfter', () => {
  it('pauses so that work takes its share of the time', () => {
    expect(pauseAfter(30, 0.25)).toBe(90); // 30 ms of work in 120 ms
    expect(pauseAfter(30, 0.5)).toBe(30);
    expect(pauseAfter(10, 0.1)).toBeCloseTo(90);
  });

  it('never pauses at 100%, for no work, or for a share that is not a share', () => {
    expect(pauseAfter(30, 1)).toBe(0);
    expect(pauseAfter(0, 0.25)).toBe(0);
    expect(pauseAfter(30, 0)).toBe(0);
    expect(pauseAfter(30, Number.NaN)).toBe(0);
    expect(pauseAfter(Number.NaN, 0.25)).toBe(0);
  });

  it('pauses at most a second, however slow the piece of work was', () => {
    expect(pauseAfter(5_000, 0.25)).toBe(1_000);
  });

  it('is self-contained, as the snapshot worker embeds its source', () => {
    const embedded = new Function(`return (${pauseAfter.toString()})`)() as typeof pauseAfter;
    expect(embedded(30, 0.25)).toBe(90);
  });
});

describe('Pacer', () => {
  it('is inactive without a share or at 100%, and then returns without sleeping', async () => {
    for (const share of [undefined, 1]) {
      const pacer = new Pacer(share);
      expect(pacer.active).toBe(false);
      await pacer.pause(AbortSignal.abort()); // an aborted signal would reject a sleep
    }
    expect(new Pacer(0.25).active).toBe(true);
  });

  it('pauses without awaiting, for the bound it is given when the work owes more', () => {
    const pacer = new Pacer(0.01);
    const busyUntil = performance.now() + 20;
    while (performance.now() < busyUntil); // 20 ms of work owe a pause of a second at 1 %
    const started = performance.now();
    pacer.pauseBlocking(5);
    expect(performance.now() - started).toBeGreaterThanOrEqual(4); // it slept (a wait never ends early)
  });

  it('rejects a pause when its signal fires', async () => {
    const pacer = new Pacer(0.01);
    const busyUntil = performance.now() + 20;
    while (performance.now() < busyUntil); // 20 ms of work: a pause of up to a second follows
    await expect(pacer.pause(AbortSignal.abort())).rejects.toThrow();
  });
});

describe('stepBytesFor', () => {
  it('flushes a paced copy in small steps and an unpaced one in large steps', () => {
    // Small flushes keep the app's commit fsyncs from queuing behind a large one (sqlite-worker.ts).
    expect(stepBytesFor(0.25)).toBe(PACED_STEP_BYTES);
    expect(PACED_STEP_BYTES).toBeLessThan(SNAPSHOT_STEP_BYTES);
    for (const unpaced of [undefined, 1]) expect(stepBytesFor(unpaced)).toBe(SNAPSHOT_STEP_BYTES);
  });
});
