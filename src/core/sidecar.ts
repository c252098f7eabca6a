/**
 * The daemon's life, without the process: prepare (restore before anything may use the database), run
 * the sync loop, finish (final snapshot, upload, backup key). `run` and `exec` drive it; tests drive it
 * directly. Its phase answers the health server's questions.
 */
import { stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAbort, wrapError } from '../errors.js';
import { reconcileLocal } from './reconcile.js';
import { restoreNewestGood, type Restored } from './restore.js';
import { isRetryable } from './retry.js';
import { SyncLoop, type FinalSyncResult, type SyncLoopOptions, type SyncStatus } from './sync-loop.js';

export type Phase = 'starting' | 'restoring' | 'ready' | 'stopping' | 'stopped' | 'failed';

/** Longest wait between restore attempts while the store is unreachable at start. */
export const RESTORE_RETRY_MAX_MS = 30_000;

export interface PrepareResult {
  /** What happened to the local database. */
  readonly action: 'kept-local' | 'restored' | 'first-start';
  readonly restored?: Restored | undefined;
}

export class Sidecar {
  readonly loop: SyncLoop;
  private phaseValue: Phase = 'starting';
  /** Whether the first sync should run at once (local changes the store lacks, or a bad remote object). */
  private syncFirst = false;

  constructor(private readonly options: SyncLoopOptions) {
    this.loop = new SyncLoop(options);
  }

  get phase(): Phase {
    return this.phaseValue;
  }

  /**
   * Make the local database ready: keep it when present, else restore the newest good remote copy, else
   * note a first start. Retries while the store is unreachable (the app must not start on an empty
   * database when a remote copy may exist), until `signal` fires.
   * @throws on errors retrying cannot fix (credentials, permissions, every copy corrupt), or AbortedError.
   */
  async prepare(signal: AbortSignal): Promise<PrepareResult> {
    const { store, key, dbPath, log } = this.options;
    this.phaseValue = 'restoring';
    try {
      const local = await stat(dbPath).catch(() => null);
      if (local) {
        const kept = await this.keepOrReplaceLocal(signal);
        if (kept) return kept;
      }
      const restored = await this.restoreWithRetry(signal);
      if (!restored) {
        log.info({ key, location: store.location }, 'no remote copy; first start with an empty database');
        return { action: 'first-start' };
      }
      // After a fallback the current remote object is bad: leave the baseline empty so it is replaced soon.
      if (restored.skipped.length > 0) {
        this.syncFirst = true;
        this.loop.setBaseline({});
      } else {
        await this.loop.setSynced({ sha256: restored.sha256, versionId: restored.info.versionId, token: await this.loop.probe() });
      }
      log.info(
        {
          key: restored.info.key,
          versionId: restored.info.versionId,
          sizeBytes: restored.sizeBytes,
          sha256: restored.sha256,
          checksumVerified: restored.checksumVerified,
          path: dbPath,
        },
        'database restored',
      );
      return { action: 'restored', restored };
    } catch (error) {
      this.phaseValue = 'failed';
      throw isAbort(error, signal) ? wrapError('restore', error) : error;
    }
  }

  /**
   * A database is already on the volume: keep it unless only the remote moved on since the last sync.
   * @returns the result when the local file was kept; undefined when the remote copy should be restored.
   */
  private async keepOrReplaceLocal(signal: AbortSignal): Promise<PrepareResult | undefined> {
    const { dbPath, log } = this.options;
    const token = await this.loop.probe();
    const r = await reconcileLocal(this.options, signal);
    switch (r.decision) {
      case 'in-sync':
        await this.loop.setSynced({ sha256: r.sha256, versionId: r.versionId, token });
        log.info({ path: dbPath, sha256: r.sha256 }, 'local database present and identical to the remote copy; keeping it');
        return { action: 'kept-local' };
      case 'remote-ahead':
        log.warn(
          { path: dbPath, remoteVersionId: r.remote.versionId },
          'local database has no unsynced changes but the remote copy is newer; restoring it (local kept as .backup)',
        );
        return undefined;
      default:
        // Upload at once rather than after a whole interval: these are changes the store does not have.
        this.syncFirst = true;
        this.loop.setBaseline({ sha256: r.remoteSha256 });
        log.warn(
          { path: dbPath, decision: r.decision },
          r.decision === 'local-ahead'
            ? 'local database has changes that never reached the store; keeping it and uploading it now'
            : 'local database present and differs from the remote copy; keeping it and uploading it now (the remote stays as an older version)',
        );
        return { action: 'kept-local' };
    }
  }

  private async restoreWithRetry(signal: AbortSignal): Promise<Restored | null> {
    const { store, key, dbPath, check, log } = this.options;
    const keepPrevious = await stat(dbPath).then(
      () => true,
      () => false,
    );
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await restoreNewestGood(store, key, dbPath, { check, log, signal, keepPrevious });
      } catch (error) {
        if (!isRetryable(error) || signal.aborted) throw error;
        const delayMs = Math.min(RESTORE_RETRY_MAX_MS, 1_000 * 2 ** attempt);
        log.error(
          { err: (error as Error).message, attempt, retryInMs: delayMs },
          'cannot reach the store to restore; not ready, retrying (the app will not start on an empty database)',
        );
        await sleep(delayMs, undefined, { signal });
      }
    }
  }

  /** Start syncing; the database is ready for the app from now on. */
  start(): void {
    this.loop.start(this.syncFirst ? 0 : undefined);
    this.phaseValue = 'ready';
  }

  /**
   * Stop syncing and run the final sync (upload if changed, then the backup key) under `signal`.
   * @throws when the final sync fails or `signal` fires first.
   */
  async finish(signal: AbortSignal): Promise<FinalSyncResult> {
    this.phaseValue = 'stopping';
    try {
      const result = await this.loop.finalSync(signal);
      this.phaseValue = 'stopped';
      return result;
    } catch (error) {
      this.phaseValue = 'failed';
      throw error;
    }
  }

  ready(): boolean {
    return this.phaseValue === 'ready';
  }

  status(): SyncStatus & { phase: Phase } {
    return { phase: this.phaseValue, ...this.loop.status() };
  }

  close(): void {
    this.loop.close();
  }
}
