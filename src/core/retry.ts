/**
 * Retrying storage calls: transient failures (throttling, 5xx, network) back off and retry; errors that
 * retrying cannot fix (credentials, permissions, a missing bucket) end the retries at once, so the user
 * gets the real message in seconds, not minutes.
 */
import pRetry from 'p-retry';
import { AbortedError, StorageError, toError } from '../errors.js';
import type { Logger } from '../logger.js';

export interface RetryPolicy {
  /** Retries after the first attempt. */
  readonly retries: number;
  readonly minTimeoutMs: number;
  readonly maxTimeoutMs: number;
}

/** For one-shot commands and the final sync: about a minute of trying before giving up. */
export const DEFAULT_RETRY: RetryPolicy = { retries: 5, minTimeoutMs: 1_000, maxTimeoutMs: 20_000 };

/**
 * For callers that back off themselves: each daemon tick (the loop waits 5 s, 10 s … up to the interval
 * between ticks) and each start-up restore attempt (retried until the store answers). A few seconds, for
 * blips only: retrying for a minute inside would multiply the requests a failing S3 sees, delay the
 * "not ready, retrying" and "degraded" reports, and hold up a SIGTERM's final sync, which waits for the
 * tick in flight.
 */
export const SHORT_RETRY: RetryPolicy = { retries: 2, minTimeoutMs: 1_000, maxTimeoutMs: 4_000 };

/** Whether retrying can help. Only storage errors flagged retryable qualify. */
export function isRetryable(error: unknown): boolean {
  return error instanceof StorageError && error.retryable;
}

/**
 * Run `fn` with retries. Resolves with its result; rejects with the last error, or an AbortedError
 * when `signal` fires (no further attempt starts after that).
 */
export async function withRetry<T>(
  operation: string,
  fn: (attempt: number) => Promise<T>,
  options: { log: Logger; signal?: AbortSignal | undefined; policy?: RetryPolicy },
): Promise<T> {
  const policy = options.policy ?? DEFAULT_RETRY;
  try {
    return await pRetry(fn, {
      retries: policy.retries,
      minTimeout: policy.minTimeoutMs,
      maxTimeout: policy.maxTimeoutMs,
      randomize: true,
      signal: options.signal,
      shouldRetry: ({ error }) => isRetryable(error) && options.signal?.aborted !== true,
      onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
        if (!isRetryable(error) || retriesLeft === 0 || options.signal?.aborted) return;
        options.log.warn(
          { operation, attempt: attemptNumber, retriesLeft, err: error.message, code: (error as StorageError).code },
          'storage call failed; retrying',
        );
      },
    });
  } catch (error) {
    if (options.signal?.aborted && !(error instanceof AbortedError)) {
      throw new AbortedError(`${operation}: aborted`, error);
    }
    throw toError(error);
  }
}
