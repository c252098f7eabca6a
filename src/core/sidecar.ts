/**
 * The daemon's life, without the process: take the single-writer lease, prepare (restore before anything
 * may use the database), run the sync loop, finish (final snapshot, upload, backup key, release the lease).
 * `run` and `exec` drive it; tests drive it directly. Its phase answers the health server's questions.
 */
import { stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_LEASE_WAIT_WARN_MS, type LeaseMode, type OnUnknownHistory, type VersioningCheck } from '../config.js';
import { DbSyncError, isAbort, toError, wrapError } from '../errors.js';
import { isConditionalStore as isConditional, type ReplicaStore } from '../replica/store.js';
import { FencedStore, Lease, type LeaseHolderInfo, type LeaseStatus } from './lease.js';
import { probeConditionalWrites } from './lease-probe.js';
import { LeaseWaitWatch, type LeaseWaitStatus } from './lease-wait.js';
import { abortLeftoverUploads, prepareLocalDirectory } from './leftovers.js';
import { reconcileLocal } from './reconcile.js';
import { replayFields } from '../replication/replay.js';
import { restoreNewestGood, type Restored } from './restore.js';
import { isRetryable, SHORT_RETRY } from './retry.js';
import { SyncLoop, type FinalSyncResult, type SyncLoopOptions, type SyncStatus } from './sync-loop.js';
import { Replicator, type ReplicationStatus } from '../replication/replicator.js';
import { checkVersioning, type VersioningStatus } from './versioning.js';

export type Phase = 'starting' | 'waiting-for-lease' | 'restoring' | 'ready' | 'stopping' | 'stopped' | 'failed';

/** Longest wait between restore attempts while the store is unreachable at start. */
export const RESTORE_RETRY_MAX_MS = 30_000;

/** How long releasing the lease may take after the final sync, whatever is left of the shutdown deadline. */
export const LEASE_RELEASE_TIMEOUT_MS = 5_000;

export interface SidecarLeaseOptions {
  readonly mode: LeaseMode;
  /** Where the lease object lives (may differ from the database's store: another bucket). */
  readonly store: ReplicaStore;
  readonly key: string;
  readonly ttlMs: number;
  readonly holder: LeaseHolderInfo;
  /** Waiting longer than this for another owner's lease is logged as a stall (DB_SYNC_LEASE_WAIT_WARN); default 60 s. */
  readonly waitWarnMs?: number | undefined;
}

export interface SidecarOptions extends SyncLoopOptions {
  /** The single-writer lease; absent = off. */
  readonly lease?: SidecarLeaseOptions | undefined;
  /** Give up preparing after this long while the store is unreachable; 0 or absent = keep trying. */
  readonly restoreTimeoutMs?: number | undefined;
  /** Check the store's versioning before the restore; absent = off. */
  readonly versioningCheck?: VersioningCheck | undefined;
  /** A local database with no sync history: which copy wins (default `remote`). */
  readonly onUnknownHistory?: OnUnknownHistory | undefined;
  /** Continuous replication of a WAL database (DB_SYNC_CONTINUOUS=auto); absent = off. */
  readonly continuous?: ContinuousOptions | undefined;
}

export interface ContinuousOptions {
  readonly segmentIntervalMs: number;
  readonly baseIntervalMs: number;
  /** undefined = 25 % of the database, at least 64 MiB. */
  readonly spoolMaxBytes: number | undefined;
}

/** The lease as the sidecar reports it: `off` (disabled), `unenforced` (the store cannot enforce it), or the lease's own state. */
export type SidecarLeaseStatus =
  | { readonly state: 'off' }
  /** Checking whether the store enforces conditional writes (retried while it is unreachable). */
  | { readonly state: 'probing'; readonly key: string; readonly location: string }
  | { readonly state: 'unenforced'; readonly key: string; readonly location: string; readonly problems: readonly string[] }
  | LeaseStatus;

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
  /** Every write goes through the fence: put, copy and delete confirm the lease first (when there is one). */
  private readonly options: SyncLoopOptions;
  private lease: Lease | undefined;
  private leaseStatus: SidecarLeaseStatus = { state: 'off' };
  private readonly leaseLostController = new AbortController();
  /** Fires when DB_SYNC_RESTORE_TIMEOUT has passed since preparing began (after the lease); undefined = never. */
  private restoreDeadline: AbortSignal | undefined;
  private leaseWait: LeaseWaitWatch | undefined;
  private versioning: VersioningStatus | undefined;
  /** When preparing the database began, after the lease (monotonic ms); and how long it took, once ready. */
  private restoringSinceMs: number | undefined;
  private restoreMsValue: number | undefined;

  /** Continuous replication; undefined when off. While it covers the database the loop uploads nothing. */
  private replicator: Replicator | undefined;
  /**
   * Nothing needs uploading until the database changes (as of prepare()): it is the store's current copy
   * (restored, or verified identical), or a copy the store's current object must not be replaced by
   * without a change. Continuous replication's first base then waits for the first commit.
   */
  private storeHoldsDatabase = false;
  private startedPromise: Promise<void> = Promise.resolve();

  constructor(private readonly sidecarOptions: SidecarOptions) {
    const fenced = new FencedStore(sidecarOptions.store, () => this.lease);
    this.options = { ...sidecarOptions, store: fenced, superseded: () => this.replicator?.coverage() ?? false };
    this.loop = new SyncLoop(this.options);
    const continuous = sidecarOptions.continuous;
    if (continuous) {
      this.replicator = new Replicator({
        ...this.options,
        ...continuous,
        // One PUT a second: fenced by the lease's local validity, not a renewal request each (bases renew).
        putSegment: (key, path, options) => fenced.putLocallyFenced(key, path, options),
        onBase: (outcome) => void this.loop.recordUpload(outcome),
        storeHoldsDatabase: () => this.storeHoldsDatabase,
      });
    }
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
    const result = await this.prepareDatabase(signal);
    try {
      // After the database is in place, so the first thing an unreachable store is reported for is the
      // restore itself; before ready, so `required` still refuses to start. The unfenced store: reading
      // bucket settings needs no lease. Under the restore deadline, retried as for the restore.
      const check = this.sidecarOptions.versioningCheck ?? 'off';
      this.versioning = await this.untilReachable(signal, (s) =>
        checkVersioning(this.sidecarOptions.store, check, { log: this.options.log, signal: s }),
      );
      return result;
    } catch (error) {
      this.phaseValue = 'failed';
      await this.releaseLease();
      throw isAbort(error, signal) ? wrapError('restore', error) : error;
    }
  }

  private async prepareDatabase(signal: AbortSignal): Promise<PrepareResult> {
    const { store, key, dbPath, log } = this.options;
    try {
      await this.takeLease(signal);
      this.phaseValue = 'restoring';
      this.restoringSinceMs = performance.now();
      // The single writer now: what a killed predecessor left (temp files, multipart uploads) is garbage.
      await prepareLocalDirectory(dbPath, log);
      await abortLeftoverUploads(this.sidecarOptions.store, key, log, signal);
      const timeoutMs = this.sidecarOptions.restoreTimeoutMs;
      this.restoreDeadline = timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined;
      const local = await stat(dbPath).catch(() => null);
      if (local) {
        // Unreachable store: keep trying, as for a restore; deciding without the remote copy could lose data.
        const kept = await this.untilReachable(signal, (s) => this.keepOrReplaceLocal(s));
        if (kept) return kept;
      }
      const restored = await this.restoreWithRetry(signal);
      if (!restored) {
        log.info({ key, location: store.location }, 'no remote copy; first start with an empty database');
        return { action: 'first-start' };
      }
      const intact = restored.skipped.filter((s) => s.checksumMatched);
      if (intact.length > 0) {
        // A newer copy arrived exactly as it was uploaded yet failed the check: it is not damaged in the
        // store, someone put it there. Replacing it is a person's decision, not a start-up side effect.
        log.error(
          { key, rejected: intact, used: { key: restored.info.key, versionId: restored.info.versionId } },
          `the current copy of ${key} failed verification although its sha256 matched (it is stored as it was uploaded); ` +
            'restored an older copy, but the current object is not replaced automatically: inspect it (db-sync verify), ' +
            'then run `db-sync upload` to replace it, or let the next change of the database replace it',
        );
        await this.loop.setSynced({
          sha256: restored.sha256,
          // A timestamped backup is another key: its version id means nothing for KEY.
          versionId: restored.info.key === key ? restored.info.versionId : undefined,
          token: await this.loop.probe(),
        });
        // Replaced by the next change of the database only: continuous replication's first base waits too.
        this.storeHoldsDatabase = true;
      } else if (restored.skipped.length > 0) {
        // After a fallback past copies damaged in transit or in the store: leave the baseline empty so the
        // bad current object is replaced soon.
        this.syncFirst = true;
        this.loop.setBaseline({});
      } else {
        await this.loop.setSynced({ sha256: restored.sha256, versionId: restored.info.versionId, token: await this.loop.probe() });
        this.storeHoldsDatabase = true;
      }
      log.info(
        {
          key: restored.info.key,
          versionId: restored.info.versionId,
          sizeBytes: restored.sizeBytes,
          sha256: restored.sha256,
          checksumVerified: restored.checksumVerified,
          chain: restored.chain && replayFields(restored.chain),
          path: dbPath,
        },
        'database restored',
      );
      return { action: 'restored', restored };
    } catch (error) {
      this.phaseValue = 'failed';
      // Nothing was uploaded under it: hand it on at once rather than make a successor wait for the TTL.
      await this.releaseLease();
      throw isAbort(error, signal) ? wrapError('restore', error) : error;
    }
  }

  /**
   * Before anything else: probe whether the lease's store enforces conditional writes (unless the lease is
   * off), then take the lease, waiting while another owner holds it. Not ready meanwhile.
   * @throws DbSyncError (Usage) when the lease is `required` and the store cannot enforce it.
   */
  private async takeLease(signal: AbortSignal): Promise<void> {
    const options = this.sidecarOptions.lease;
    const { log } = this.options;
    if (!options || options.mode === 'off') return;
    this.phaseValue = 'waiting-for-lease';
    this.leaseStatus = { state: 'probing', key: options.key, location: options.store.location };
    // An unreachable store at start is retried here as for the restore: not ready, backing off, never exiting.
    const probe = await this.untilReachable(signal, (s) => probeConditionalWrites(options.store, options.key, { log, signal: s }));
    if (!probe.enforced) {
      const where = `${options.store.location}/${options.key}`;
      if (options.mode === 'required') {
        throw new DbSyncError('Usage', `lease: ${where} does not enforce conditional writes: ${probe.problems.join('; ')}`, {
          hint:
            'put the lease where conditional writes work: DB_SYNC_LEASE_BUCKET=<an unversioned bucket> (Ceph RGW enforces them only there), ' +
            'or set DB_SYNC_LEASE=auto to run without one',
        });
      }
      this.leaseStatus = { state: 'unenforced', key: options.key, location: options.store.location, problems: probe.problems };
      log.warn(
        { lease: where, problems: probe.problems },
        'the store does not enforce conditional writes here; running WITHOUT a lease: two tasks on this key can overwrite each other ' +
          '(set DB_SYNC_LEASE_BUCKET to an unversioned bucket to enforce one writer)',
      );
      return;
    }
    if (!isConditional(options.store)) return;
    const lease = new Lease({
      store: options.store,
      key: options.key,
      location: options.store.location,
      ttlMs: options.ttlMs,
      holder: options.holder,
      log,
    });
    lease.onLost((error) => this.leaseLost(error));
    this.lease = lease; // status() shows who holds it while this one waits
    const wait = new LeaseWaitWatch({
      warnAfterMs: options.waitWarnMs ?? DEFAULT_LEASE_WAIT_WARN_MS,
      log,
      holder: () => lease.status().holder,
      key: options.key,
      location: options.store.location,
    });
    this.leaseWait = wait;
    try {
      await lease.acquire(signal, () => wait.start());
    } finally {
      wait.stop();
    }
  }

  /**
   * Fires when the lease is lost to another owner (never for a release). `exec` stops its app then: what
   * the app writes from now on can never reach the store.
   */
  get leaseLostSignal(): AbortSignal {
    return this.leaseLostController.signal;
  }

  /** Lost for good: stop uploading, fail health, say so loudly. The final sync will fail too (fenced). */
  private leaseLost(error: Error): void {
    this.phaseValue = 'failed';
    this.leaseLostController.abort(error);
    void this.loop.stop();
    void this.replicator?.stop();
    this.options.log.fatal(
      { err: error.message, lease: this.lease?.status() },
      'LEASE LOST: another db-sync owns the database now; no further uploads from this task (health is failing; stop this task)',
    );
  }

  /** Give the lease up, if held, within {@link LEASE_RELEASE_TIMEOUT_MS}. Never throws. */
  private async releaseLease(): Promise<void> {
    await this.lease?.release(AbortSignal.timeout(LEASE_RELEASE_TIMEOUT_MS)).catch((error: unknown) => {
      this.options.log.warn({ err: toError(error).message }, 'could not release the lease');
    });
  }

  /**
   * A database is already on the volume: keep it unless only the remote moved on since the last sync.
   * @returns the result when the local file was kept; undefined when the remote copy should be restored.
   */
  private async keepOrReplaceLocal(signal: AbortSignal): Promise<PrepareResult | undefined> {
    const { dbPath, log } = this.options;
    const token = await this.loop.probe();
    const r = await reconcileLocal(this.options, signal, SHORT_RETRY);
    switch (r.decision) {
      case 'in-sync':
        await this.loop.setSynced({ sha256: r.sha256, versionId: r.versionId, token });
        this.storeHoldsDatabase = true;
        log.info({ path: dbPath, sha256: r.sha256 }, 'local database present and identical to the remote copy; keeping it');
        return { action: 'kept-local' };
      case 'remote-ahead':
        log.warn(
          { path: dbPath, remoteVersionId: r.remote.versionId },
          'local database has no unsynced changes but the remote copy is newer; restoring it (local kept as .backup)',
        );
        return undefined;
      case 'unknown-history':
        if (this.sidecarOptions.onUnknownHistory !== 'local') {
          const local = await stat(dbPath).catch(() => null);
          log.warn(
            {
              path: dbPath,
              backupPath: `${dbPath}.backup`,
              localSizeBytes: local?.size,
              remoteKey: r.remote.key,
              remoteVersionId: r.remote.versionId,
              remoteSizeBytes: r.remote.sizeBytes,
              remoteLastModified: r.remote.lastModified.toISOString(),
            },
            'no sync history for the local database (no state file) and it differs from the remote copy; restoring the remote copy ' +
              'and keeping the local file as DB_LOCAL_PATH.backup, never uploading it (DB_SYNC_ON_UNKNOWN_HISTORY=local keeps and uploads it instead)',
          );
          return undefined;
        }
        return this.keepLocal(r.decision, r.remoteSha256);
      default:
        return this.keepLocal(r.decision, r.remoteSha256);
    }
  }

  /** Keep the local database and upload it at once rather than after a whole interval: the store lacks it. */
  private keepLocal(decision: 'local-ahead' | 'no-remote' | 'unknown-history', remoteSha256: string | undefined): PrepareResult {
    const { dbPath, log } = this.options;
    this.syncFirst = true;
    this.loop.setBaseline({ sha256: remoteSha256 });
    log.warn(
      { path: dbPath, decision },
      decision === 'local-ahead'
        ? 'local database has changes that never reached the store; keeping it and uploading it now'
        : decision === 'no-remote'
          ? 'local database present and no remote copy yet; keeping it and uploading it now'
          : 'local database has no sync history and differs from the remote copy; keeping it and uploading it now, as DB_SYNC_ON_UNKNOWN_HISTORY=local asks (the remote stays as an older version)',
    );
    return { action: 'kept-local' };
  }

  private async restoreWithRetry(signal: AbortSignal): Promise<Restored | null> {
    const { store, key, dbPath, check, log } = this.options;
    const keepPrevious = await stat(dbPath).then(
      () => true,
      () => false,
    );
    return this.untilReachable(signal, (s) =>
      restoreNewestGood(store, key, dbPath, { check, log, signal: s, keepPrevious, policy: SHORT_RETRY }),
    );
  }

  /**
   * Run `attempt` until it succeeds or fails for a reason retrying cannot fix, backing off while the store is
   * unreachable, until `signal` fires or the restore deadline (DB_SYNC_RESTORE_TIMEOUT) passes.
   * @throws DbSyncError `Failure` when the deadline passes: never "ready" on a database that may be stale or empty.
   */
  private async untilReachable<T>(signal: AbortSignal, attempt: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const { log } = this.options;
    const deadline = this.restoreDeadline;
    const attemptSignal = deadline ? AbortSignal.any([signal, deadline]) : signal;
    let lastError: Error | undefined;
    for (let n = 1; ; n += 1) {
      try {
        try {
          return await attempt(attemptSignal);
        } catch (error) {
          if (!isRetryable(error) || attemptSignal.aborted) throw error;
          lastError = toError(error);
          const delayMs = Math.min(RESTORE_RETRY_MAX_MS, 1_000 * 2 ** n);
          log.error(
            { err: lastError.message, attempt: n, retryInMs: delayMs },
            'cannot reach the store to restore; not ready, retrying (the app will not start on an empty database)',
          );
          await sleep(delayMs, undefined, { signal: attemptSignal });
        }
      } catch (error) {
        if (!deadline?.aborted || signal.aborted) throw error;
        const seconds = (this.sidecarOptions.restoreTimeoutMs ?? 0) / 1000;
        throw new DbSyncError(
          'Failure',
          `restore: gave up after ${seconds}s (DB_SYNC_RESTORE_TIMEOUT) without reaching the store${lastError ? `: ${lastError.message}` : ''}`,
          {
            hint: 'the database was not made ready, so the app must not start; check network access to the store, or unset DB_SYNC_RESTORE_TIMEOUT to keep trying',
            cause: lastError ?? error,
          },
        );
      }
    }
  }

  /**
   * Start syncing; the database is ready for the app from then on. Continuous replication starts first
   * (its first generation's position is taken before the app is told it may write), so a WAL database's
   * interval snapshots stand down from the loop's first run; {@link started} resolves when both run and
   * the phase is `ready` (at once without continuous replication). When continuous replication cannot start
   * (a local failure), interval snapshots carry on, logged.
   */
  start(): void {
    const firstDelayMs = this.syncFirst ? 0 : undefined;
    const replicator = this.replicator;
    const ready = (): void => {
      this.phaseValue = 'ready';
      if (this.restoringSinceMs !== undefined) this.restoreMsValue = performance.now() - this.restoringSinceMs;
    };
    if (!replicator) {
      ready();
      this.loop.start(firstDelayMs);
      return;
    }
    this.startedPromise = replicator
      .start()
      .catch(async (error: unknown) => {
        this.options.log.error(
          { err: toError(error).message },
          'continuous replication could not start; interval snapshots continue (DB_SYNC_CONTINUOUS=off silences this)',
        );
        await replicator.stop();
        this.replicator = undefined;
      })
      .then(() => {
        // Ready only now: the first generation starts before the app is told it may write.
        if (this.phaseValue !== 'restoring' && this.phaseValue !== 'starting') return;
        ready();
        this.loop.start(firstDelayMs);
      });
  }

  /** Resolves once {@link start} has started everything (continuous replication's first generation included). Never rejects. */
  started(): Promise<void> {
    return this.startedPromise;
  }

  /**
   * Stop syncing and run the final sync (upload if changed, then the backup key) under `signal`, then
   * release the lease. When `signal` cut the final sync short (the deadline, or a second signal), the
   * lease is kept instead, as `exec` keeps it: an upload cancelled just now may still land, and a
   * successor must not restore before it has (it takes over after the TTL).
   * @throws when the final sync fails or `signal` fires first.
   */
  async finish(signal: AbortSignal): Promise<FinalSyncResult> {
    this.phaseValue = 'stopping';
    let keepLease = false;
    try {
      const replicator = this.replicator;
      const result = await this.loop.finalSync(signal, new Date(), replicator ? (s) => replicator.finish(s) : undefined);
      this.phaseValue = 'stopped';
      return result;
    } catch (error) {
      this.phaseValue = 'failed';
      keepLease = signal.aborted;
      throw error;
    } finally {
      if (keepLease && this.lease) {
        this.lease.stop();
        this.options.log.warn(
          { lease: this.lease.status().key },
          'final sync cut short: lease kept (not released), so a successor waits out its TTL rather than restore before a cancelled upload lands',
        );
      } else {
        // After the final upload and the backup key, never before: the successor restores what we left.
        // Also after a failed final sync: the changes are lost either way, and the successor need not wait.
        await this.releaseLease();
      }
    }
  }

  /**
   * Stop without a final sync (exec: the app never started, so the database is as restored), then hand the
   * lease on at once rather than make a successor wait out the TTL. Never throws.
   */
  async stopWithoutSync(): Promise<void> {
    await this.loop.stop();
    await this.replicator?.stop();
    this.phaseValue = 'stopped';
    await this.releaseLease();
  }

  /** How long preparing the database took (restore or reconcile, not the lease wait); undefined until ready. */
  get restoreMs(): number | undefined {
    return this.restoreMsValue;
  }

  ready(): boolean {
    return this.phaseValue === 'ready';
  }

  status(): SyncStatus & {
    phase: Phase;
    lease: SidecarLeaseStatus;
    leaseWait: LeaseWaitStatus;
    versioning: VersioningStatus | undefined;
    replication: ReplicationStatus | undefined;
  } {
    return {
      phase: this.phaseValue,
      ...this.loop.status(),
      replication: this.replicator?.status(),
      lease: this.lease?.status() ?? this.leaseStatus,
      leaseWait: this.leaseWait?.status() ?? { since: undefined, stalled: false },
      versioning: this.versioning,
    };
  }

  close(): void {
    this.lease?.stop();
    void this.replicator?.stop();
    this.loop.close();
  }
}
