/**
 * Graceful shutdown as data: the first stop request starts a drain (with a deadline), a second one
 * aborts at once. Closers registered along the way run in reverse order, like a stack unwinding.
 *
 * This module never touches `process`: the CLI feeds it signals and turns its outcome into an exit code.
 */

export class Shutdown {
  private readonly gracefulController = new AbortController();
  private readonly hardController = new AbortController();
  private readonly closers: Array<{ name: string; close: () => unknown }> = [];
  private firstReason: string | undefined;

  /** Fires on the first stop request: stop taking new work, finish up. */
  get graceful(): AbortSignal {
    return this.gracefulController.signal;
  }

  /** Fires on the second stop request (or a missed deadline): abandon everything now. */
  get hard(): AbortSignal {
    return this.hardController.signal;
  }

  /** What started the shutdown (e.g. `SIGTERM`), if one started. */
  get reason(): string | undefined {
    return this.firstReason;
  }

  /**
   * Ask to stop. The first call fires {@link graceful}; any later call fires {@link hard}.
   * @returns which stage this call triggered.
   */
  request(reason: string): 'graceful' | 'hard' {
    if (!this.gracefulController.signal.aborted) {
      this.firstReason = reason;
      this.gracefulController.abort(new Error(`stop requested (${reason})`));
      return 'graceful';
    }
    this.hardController.abort(new Error(`second stop request (${reason}); aborting`));
    return 'hard';
  }

  /** A promise that resolves when the first stop request arrives. */
  requested(): Promise<void> {
    const signal = this.gracefulController.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  }

  /**
   * A signal for the drain: fires on the hard stop or when `deadlineMs` has passed since now.
   * Built from a controller and a timer, not `AbortSignal.any([hard, AbortSignal.timeout(ms)])`: nothing
   * but the combined signal referenced that timeout signal, and it was seen never to fire (Node 20): a
   * final sync waiting on it ran past its deadline.
   */
  drainSignal(deadlineMs: number): AbortSignal {
    const controller = new AbortController();
    const hard = this.hardController.signal;
    if (hard.aborted) controller.abort(hard.reason);
    const timer = setTimeout(
      () => controller.abort(new DOMException(`the drain deadline of ${deadlineMs} ms passed`, 'TimeoutError')),
      deadlineMs,
    );
    // Not unref'd: a drain stuck on something that holds no handle must still end in a reported failure,
    // not in the process running out of work and exiting 0. The CLI exits explicitly when done.
    hard.addEventListener('abort', () => controller.abort(hard.reason), { once: true });
    controller.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
    return controller.signal;
  }

  /** Register something to close at the end; closers run in reverse order of registration. */
  onClose(name: string, close: () => unknown): void {
    this.closers.push({ name, close });
  }

  /** Run every closer once, in reverse order; collect failures rather than stop at the first one. */
  async close(): Promise<Error[]> {
    const failures: Error[] = [];
    while (this.closers.length > 0) {
      const closer = this.closers.pop();
      try {
        await closer?.close();
      } catch (error) {
        failures.push(new Error(`close ${closer?.name}: ${(error as Error).message}`));
      }
    }
    return failures;
  }
}
