/** Collecting streaming's dead buffers early (src/young-garbage.ts). */
import { describe, expect, it } from 'vitest';
import { collectYoungGarbage, GarbageCadence } from '../../src/young-garbage.js';

const MiB = 1024 * 1024;

/** Allocate `count` 64 KiB buffers, as socket reads do, and keep none of them. */
function allocateAndDrop(count: number): number {
  let sum = 0;
  for (let i = 0; i < count; i++) sum += Buffer.allocUnsafe(64 * 1024).length;
  return sum;
}

describe('collectYoungGarbage', () => {
  it('frees buffers nothing refers to any more, and keeps those still in use', () => {
    collectYoungGarbage();
    const kept = Buffer.alloc(8 * MiB, 1);
    const before = process.memoryUsage().arrayBuffers;
    expect(allocateAndDrop(256)).toBe(16 * MiB);
    const piled = process.memoryUsage().arrayBuffers;
    // Without a collection the 16 MiB are still counted: V8 has not noticed them yet.
    expect(piled - before).toBeGreaterThan(8 * MiB);
    expect(collectYoungGarbage()).toBe(true);
    const after = process.memoryUsage().arrayBuffers;
    expect(after - before).toBeLessThan(4 * MiB);
    expect(kept.every((b) => b === 1)).toBe(true);
  });

  it('leaves the global scope as it was (no `gc` appears where it was not)', () => {
    collectYoungGarbage();
    expect(typeof (globalThis as { gc?: unknown }).gc).toBe('undefined');
  });
});

describe('GarbageCadence', () => {
  it('collects once per `everyBytes` streamed, however the bytes are split', () => {
    let collections = 0;
    const cadence = new GarbageCadence(4 * MiB, () => collections++);
    for (let i = 0; i < 63; i++) cadence.add(64 * 1024);
    expect(collections).toBe(0);
    cadence.add(64 * 1024);
    expect(collections).toBe(1);
    cadence.add(3 * MiB);
    expect(collections).toBe(1);
    cadence.add(2 * MiB);
    expect(collections).toBe(2);
  });
});
