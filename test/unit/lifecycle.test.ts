import { describe, expect, it } from 'vitest';
import { Shutdown } from '../../src/lifecycle.js';

describe('Shutdown', () => {
  it('starts with nothing requested', () => {
    const shutdown = new Shutdown();
    expect(shutdown.graceful.aborted).toBe(false);
    expect(shutdown.hard.aborted).toBe(false);
    expect(shutdown.reason).toBeUndefined();
  });

  it('makes the first request graceful and the second hard', () => {
    const shutdown = new Shutdown();
    expect(shutdown.request('SIGTERM')).toBe('graceful');
    expect(shutdown.graceful.aborted).toBe(true);
    expect(shutdown.hard.aborted).toBe(false);
    expect(shutdown.reason).toBe('SIGTERM');

    expect(shutdown.request('SIGINT')).toBe('hard');
    expect(shutdown.hard.aborted).toBe(true);
    expect(String(shutdown.hard.reason)).toContain('SIGINT');
    // The reason stays the first one.
    expect(shutdown.reason).toBe('SIGTERM');
    expect(shutdown.request('SIGINT')).toBe('hard');
  });

  it('resolves requested() on the first request, and at once after it', async () => {
    const shutdown = new Shutdown();
    let resolved = false;
    const waiting = shutdown.requested().then(() => {
      resolved = true;
    });
    await Promise.resolve();
    expect(resolved).toBe(false);
    shutdown.request('SIGTERM');
    await waiting;
    expect(resolved).toBe(true);
    await expect(shutdown.requested()).resolves.toBeUndefined();
  });

  it('fires the drain signal on the hard stop', () => {
    const shutdown = new Shutdown();
    const drain = shutdown.drainSignal(60_000);
    shutdown.request('SIGTERM');
    expect(drain.aborted).toBe(false);
    shutdown.request('SIGTERM');
    expect(drain.aborted).toBe(true);
  });

  it('fires the drain signal at its deadline', async () => {
    const shutdown = new Shutdown();
    const drain = shutdown.drainSignal(1);
    await new Promise<void>((resolve) => drain.addEventListener('abort', () => resolve(), { once: true }));
    expect(drain.aborted).toBe(true);
    expect(shutdown.hard.aborted).toBe(false);
  });

  it('runs closers once, in reverse order, and collects every failure', async () => {
    const shutdown = new Shutdown();
    const order: string[] = [];
    shutdown.onClose('server', () => order.push('server'));
    shutdown.onClose('store', () => {
      order.push('store');
      throw new Error('store broke');
    });
    shutdown.onClose('loop', async () => {
      await Promise.resolve();
      order.push('loop');
    });
    shutdown.onClose('logger', () => Promise.reject(new Error('flush failed')));

    const failures = await shutdown.close();
    expect(order).toEqual(['loop', 'store', 'server']);
    expect(failures.map((f) => f.message)).toEqual(['close logger: flush failed', 'close store: store broke']);

    expect(await shutdown.close()).toEqual([]);
    expect(order).toHaveLength(3);
  });

  it('waits for an async closer before running the next one', async () => {
    const shutdown = new Shutdown();
    const order: string[] = [];
    shutdown.onClose('first', () => order.push('first'));
    shutdown.onClose('slow', async () => {
      await new Promise((resolve) => setImmediate(resolve));
      order.push('slow');
    });
    await shutdown.close();
    expect(order).toEqual(['slow', 'first']);
  });
});
