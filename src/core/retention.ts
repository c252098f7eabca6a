/**
 * Retention of timestamped backups and conflict copies. A backup (`KEY.backup.*`) is deleted only when it
 * is BOTH older than `keepDays` AND not among the newest `keepCount`; conflict copies (`KEY.conflict.*`)
 * follow the same policy, counted among themselves. The newest of each is never deleted, nor is the
 * latest object at KEY. Older versions of KEY are left to the bucket's lifecycle rule.
 */
import type { Logger } from '../logger.js';
import type { ReplicaStore } from '../replica/store.js';
import type { StampedKind } from './backup-key.js';
import { listStamped } from './catalog.js';
import { withRetry } from './retry.js';

const DAY_MS = 86_400_000;

export interface RetentionPolicy {
  readonly keepCount: number;
  readonly keepDays: number;
}

/** Which of these backups (newest first) the policy deletes, as of `now`. Pure, for testing. */
export function backupsToDelete<T extends { key: string; at: Date }>(newestFirst: readonly T[], policy: RetentionPolicy, now: Date): T[] {
  const keepNewest = Math.max(1, policy.keepCount);
  const cutoff = now.getTime() - policy.keepDays * DAY_MS;
  return newestFirst.filter((b, index) => index >= keepNewest && b.at.getTime() < cutoff);
}

/**
 * Delete the backups and conflict copies of `key` that the policy does not keep; logs each deletion.
 * @returns the deleted keys.
 */
export async function pruneBackups(
  store: ReplicaStore,
  key: string,
  policy: RetentionPolicy,
  options: { log: Logger; signal?: AbortSignal | undefined; now?: Date },
): Promise<string[]> {
  const deleted: string[] = [];
  for (const kind of ['backup', 'conflict'] as const satisfies readonly StampedKind[]) {
    const doomed = backupsToDelete(await listStamped(store, key, kind, options), policy, options.now ?? new Date());
    for (const b of doomed) {
      await withRetry(`delete ${b.key}`, () => store.delete(b.key, { signal: options.signal }), options);
      options.log.info(
        { key: b.key, at: b.at.toISOString(), keepCount: policy.keepCount, keepDays: policy.keepDays },
        `old ${kind === 'backup' ? 'backup' : 'conflict copy'} deleted by retention`,
      );
      deleted.push(b.key);
    }
  }
  return deleted;
}

/** {@link pruneBackups}, but a failure is logged, not thrown: retention must never fail a sync. */
export async function pruneQuietly(
  ctx: { store: ReplicaStore; key: string; log: Logger },
  policy: RetentionPolicy,
  signal?: AbortSignal,
): Promise<void> {
  try {
    await pruneBackups(ctx.store, ctx.key, policy, { log: ctx.log, signal });
  } catch (error) {
    ctx.log.warn({ err: (error as Error).message }, 'pruning old backups failed; they are kept');
  }
}
