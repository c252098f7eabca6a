/**
 * The sync loop: every interval, upload a snapshot if (and only if) the database changed.
 *
 * - An unchanged database costs nothing: no snapshot, no request ({@link ChangeDetector}).
 * - A changed database whose snapshot is byte-identical to the last upload costs a snapshot, no request.
 * - The loop never dies on an error: it records it, logs it (rate-limited), retries sooner with backoff
 *   and logs "recovered" when an upload succeeds again.
 * - `syncNow()` shares the in-flight run, so callers (tests, the final sync) never overlap two uploads.
 * It knows nothing of processes or signals: the caller decides when to start, stop and finish.
 */
import type { ObjectInfo } from '../replica/store.js';
import { backupNotWritten, DbSyncError, failureKind, toError } from '../errors.js';
import { ChangeDetector } from './change-detector.js';
import { writeSyncState } from './sync-state.js';
import { pruneQuietly, type RetentionPolicy } from './retention.js';
import { SHORT_RETRY } from './retry.js';
import { snapshotAndUpload, writeBackupKey, type BackupOutcome, type UploadContext, type UploadOutcome } from './upload.js';

/** After a failure, retry after 5 s, 10 s, 20 s, ... but never later than the normal interval. */
export const FAILURE_BACKOFF_MIN_MS = 5_000;

/**
 * After this many failed runs in a row the loop is "degraded" (/healthz says so, with 200: replacing the
 * task would lose the very changes that are waiting for S3). One failed run is a blip; three are not.
 */
export const DEGRADED_AFTER_FAILURES = 3;

/** `continuous`: continuous replication covers the database, so the interval snapshot stood down. */
export type TickResult = 'uploaded' | 'unchanged' | 'identical' | 'no-database' | 'continuous';

/** What the loop knows was last synced: the content's sha256, its version, and the change token then. */
export interface SyncBaseline {
  readonly sha256?: string | undefined;
  readonly versionId?: string | undefined;
  /** Change token of the local database when it matched the remote; undefined = unknown, look next tick. */
  readonly token?: string | null | undefined;
}

export interface SyncStatus {
  readonly running: boolean;
  readonly syncing: boolean;
  readonly lastUpload:
    { readonly at: string; readonly versionId: string | undefined; readonly sizeBytes: number; readonly sha256: string } | undefined;
  readonly lastCheckAt: string | undefined;
  readonly nextRunAt: string | undefined;
  /**
   * Since when changes have been waiting for the store (data at risk since then): the last moment the
   * database was known to be in sync (the last check that found no change, or the start of the snapshot
   * last uploaded or found identical). The change itself came after it, by up to one interval: early,
   * never late, so an alert on it never fires late.
   */
  readonly unsyncedSince: string | undefined;
  readonly uploads: number;
  readonly skippedUnchanged: number;
  readonly consecutiveFailures: number;
  readonly lastError: { readonly message: string; readonly code: string; readonly at: string } | undefined;
}

export interface FinalSyncResult {
  readonly uploaded: ObjectInfo | undefined;
  readonly backup: ObjectInfo | undefined;
  /** When no backup was written because the newest one holds the same content: its key. */
  readonly backupExisting?: string | undefined;
  /**
   * The final state is in the store, but writing the backup key failed (kind `BackupNotWritten`): not a
   * failed final sync, and never reported as one.
   */
  readonly backupError?: DbSyncError | undefined;
  /** Why nothing was written, when nothing was. */
  readonly note?: string;
}

/** The reason a periodic run is cancelled when the final sync starts: its snapshot is superseded anyway. */
class SupersededError extends Error {
  constructor() {
    super('periodic sync cancelled: superseded by the final sync');
    this.name = 'SupersededError';
  }
}

export interface SyncLoopOptions extends UploadContext {
  readonly intervalMs: number;
  /** Prune old timestamped backups after writing one; absent = keep all. */
  readonly retention?: RetentionPolicy | undefined;
  /** Observer for metrics: called after every run with its result or error and its duration. */
  readonly onRun?: (result: TickResult | Error, durationMs: number) => void;
  /**
   * Whether something else keeps the store up to date now (continuous replication's bases and segments):
   * the interval run then uploads nothing. `true`: covered, the run succeeds; an Error: covered but
   * failing (the run fails with it, so failures, "degraded" and the metrics report it); false or absent:
   * the run snapshots as usual.
   */
  readonly superseded?: (() => boolean | Error) | undefined;
}

export class SyncLoop {
  private readonly detector: ChangeDetector;
  private baseline: SyncBaseline = {};
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<TickResult> | undefined;
  /** Cancels the run in flight alone (the final sync supersedes it); {@link abortController} cancels everything. */
  private tickController: AbortController | undefined;
  private running = false;
  private readonly abortController = new AbortController();
  private lastUpload: SyncStatus['lastUpload'];
  private lastCheckAt: Date | undefined;
  private nextRunAt: Date | undefined;
  private unsyncedSince: Date | undefined;
  /** The last moment the local database was known to match the store (see {@link SyncStatus.unsyncedSince}). */
  private inSyncAt: Date | undefined;
  private uploads = 0;
  private skippedUnchanged = 0;
  private failures = 0;
  private lastError: SyncStatus['lastError'];
  private journalModeNoted = false;

  constructor(private readonly options: SyncLoopOptions) {
    this.detector = new ChangeDetector(options.dbPath);
  }

  /** Set what is known to be in the store already (after a restore, or from the remote at start). */
  setBaseline(baseline: SyncBaseline): void {
    this.baseline = { ...baseline };
  }

  /** The change token of the local database right now (null when absent). */
  probe(): Promise<string | null> {
    return this.detector.probe();
  }

  /**
   * Record a sync that happened outside the loop (a restore, a verified match) and persist it in the
   * state file next to the database.
   */
  async setSynced(baseline: SyncBaseline & { sha256: string }): Promise<void> {
    this.baseline = { ...baseline };
    this.inSyncAt = new Date();
    await this.persistState();
  }

  private async persistState(): Promise<void> {
    const { sha256, versionId } = this.baseline;
    if (sha256 === undefined) return;
    try {
      await writeSyncState(this.options.dbPath, { key: this.options.key, sha256, versionId, syncedAt: new Date().toISOString() });
    } catch (error) {
      // The state only sharpens the next start's decision; failing to write it must not fail a sync.
      this.options.log.warn({ err: (error as Error).message }, 'could not write the sync state file');
    }
  }

  /** Start the timer (first run after `firstDelayMs`, default one interval). Idempotent. */
  start(firstDelayMs?: number): void {
    if (this.running) return;
    this.running = true;
    this.schedule(firstDelayMs ?? this.options.intervalMs);
  }

  private schedule(delayMs: number): void {
    if (!this.running) return;
    clearTimeout(this.timer);
    this.nextRunAt = new Date(Date.now() + delayMs);
    this.timer = setTimeout(() => void this.runScheduled(), delayMs);
  }

  private async runScheduled(): Promise<void> {
    this.nextRunAt = undefined;
    let delay = this.options.intervalMs;
    try {
      await this.syncNow();
    } catch {
      delay = Math.min(this.options.intervalMs, FAILURE_BACKOFF_MIN_MS * 2 ** Math.min(this.failures - 1, 16));
    }
    this.schedule(delay);
  }

  /**
   * Look for a change and upload it now. Shares the run already in flight, if any.
   * @throws the run's error (also recorded in {@link status}).
   */
  syncNow(): Promise<TickResult> {
    this.inFlight ??= this.tick().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async tick(): Promise<TickResult> {
    const started = performance.now();
    const controller = new AbortController();
    this.tickController = controller;
    try {
      const result = await this.syncIfChanged(AbortSignal.any([this.abortController.signal, controller.signal]));
      this.recordSuccess();
      this.options.onRun?.(result, performance.now() - started);
      return result;
    } catch (error) {
      const err = toError(error);
      if (controller.signal.reason instanceof SupersededError) throw controller.signal.reason;
      this.recordFailure(err);
      this.options.onRun?.(err, performance.now() - started);
      throw err;
    } finally {
      if (this.tickController === controller) this.tickController = undefined;
    }
  }

  private async syncIfChanged(signal: AbortSignal): Promise<TickResult> {
    const log = this.options.log;
    this.lastCheckAt = new Date();
    const superseded = this.options.superseded?.() ?? false;
    if (superseded instanceof Error) throw superseded;
    if (superseded) {
      log.debug({ key: this.options.key }, 'continuous replication covers the database; no interval snapshot');
      return 'continuous';
    }
    const token = await this.detector.probe();
    if (token === null) {
      log.debug({ path: this.options.dbPath }, 'no database yet; nothing to sync');
      return 'no-database';
    }
    if (this.baseline.token !== undefined && token === this.baseline.token) {
      this.skippedUnchanged += 1;
      this.inSyncAt = this.lastCheckAt;
      log.info({ key: this.options.key }, 'no change since last sync; upload skipped');
      return 'unchanged';
    }
    this.unsyncedSince ??= this.inSyncAt ?? this.lastCheckAt;
    const outcome = await snapshotAndUpload(this.options, { signal, skipIfSha256: this.baseline.sha256, retry: SHORT_RETRY, paced: true });
    await this.adopt(outcome, token);
    if (!outcome.uploaded) {
      this.skippedUnchanged += 1;
      log.info({ key: this.options.key, sha256: outcome.snapshot.sha256 }, 'snapshot identical to last upload; upload skipped');
      return 'identical';
    }
    this.countUpload(outcome.uploaded.versionId, outcome);
    return 'uploaded';
  }

  /** One more upload, and the one `/status` shows as the last. */
  private countUpload(versionId: string | undefined, outcome: UploadOutcome): void {
    this.uploads += 1;
    this.lastUpload = { at: new Date().toISOString(), versionId, sizeBytes: outcome.snapshot.sizeBytes, sha256: outcome.snapshot.sha256 };
  }

  /**
   * Make a snapshot that reached the store (or was identical to what it holds) the new baseline: nothing is
   * at risk any more, and the state file records it.
   */
  private async adopt(outcome: UploadOutcome, token: string): Promise<void> {
    this.noteJournalMode(outcome.snapshot.journalMode);
    this.baseline = { sha256: outcome.snapshot.sha256, versionId: outcome.uploaded?.versionId ?? this.baseline.versionId, token };
    this.unsyncedSince = undefined;
    // A change made while the snapshot was being taken may be in it or not: in sync as of its start.
    this.inSyncAt = outcome.snapshot.takenAt;
    await this.persistState();
  }

  /**
   * Record an upload made outside the loop (a continuous-replication base): the baseline, the state file,
   * `lastUpload` and the upload count follow it, and observers hear of it as of an uploading run.
   */
  async recordUpload(outcome: UploadOutcome): Promise<void> {
    if (!outcome.uploaded) return;
    this.options.onRun?.('uploaded', outcome.uploadMs);
    this.countUpload(outcome.uploaded.versionId, outcome);
    this.baseline = { sha256: outcome.snapshot.sha256, versionId: outcome.uploaded.versionId, token: undefined };
    this.unsyncedSince = undefined;
    this.inSyncAt = outcome.snapshot.takenAt;
    await this.persistState();
  }

  /** Warn once: in rollback-journal mode the snapshot's read lock makes the app's writers wait. */
  private noteJournalMode(journalMode: string): void {
    if (this.journalModeNoted || journalMode.toLowerCase() === 'wal') return;
    this.journalModeNoted = true;
    this.options.log.warn(
      { path: this.options.dbPath, journalMode },
      "the database is in rollback-journal mode: each snapshot blocks the app's writes while it compares the " +
        'database with its copy (a fraction of a second per GB); WAL mode avoids that: PRAGMA journal_mode=WAL',
    );
  }

  /** Whether the last {@link DEGRADED_AFTER_FAILURES} runs or more all failed. */
  degraded(): boolean {
    return this.failures >= DEGRADED_AFTER_FAILURES;
  }

  private recordSuccess(): void {
    if (this.failures > 0) {
      this.options.log.info({ failures: this.failures }, 'sync recovered');
    }
    this.failures = 0;
  }

  private recordFailure(error: Error): void {
    this.failures += 1;
    const code = failureKind(error);
    const changed = this.lastError?.code !== code;
    this.lastError = { message: error.message, code, at: new Date().toISOString() };
    // Rate-limit: log the 1st, 2nd, 4th, 8th... failure in a row, and whenever the kind of failure changes.
    if (changed || (this.failures & (this.failures - 1)) === 0) {
      const hint = error instanceof DbSyncError ? error.hint : undefined;
      this.options.log.error({ err: error.message, code, hint, consecutiveFailures: this.failures }, 'sync failed; will retry');
    }
    if (this.failures === DEGRADED_AFTER_FAILURES) {
      this.options.log.error(
        { consecutiveFailures: this.failures, unsyncedSince: this.unsyncedSince?.toISOString(), err: error.message },
        'sync degraded: changes are waiting and every recent upload failed; still retrying with backoff',
      );
    }
  }

  /** Stop the timer and wait for the run in flight. Idempotent; does not abort the run. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.nextRunAt = undefined;
    await this.inFlight?.catch(() => undefined);
  }

  /** Cancel the run in flight (second signal). The loop cannot run again afterwards. */
  abort(): void {
    this.running = false;
    clearTimeout(this.timer);
    this.abortController.abort(new Error('sync aborted'));
  }

  /**
   * The shutdown sync: stop the loop, upload a last snapshot if anything changed, then write the
   * timestamped backup key from the version now current (unless the newest backup holds that content).
   * A periodic run in flight is cancelled, not awaited: its snapshot is superseded by this one, and
   * waiting for it could spend the whole deadline (a large upload started just before the signal).
   * @throws when the final upload fails: a failed final sync must never look like success. A failed
   * backup key after a good upload is returned as `backupError`, not thrown.
   * @param finalUpload the final upload when continuous replication covers the database (its final base);
   *   when it returns undefined (the database is not in WAL mode), the final snapshot is taken as usual.
   */
  async finalSync(
    signal: AbortSignal,
    at: Date = new Date(),
    finalUpload?: (signal: AbortSignal) => Promise<UploadOutcome | undefined>,
  ): Promise<FinalSyncResult> {
    const onAbort = (): void => this.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      if (this.inFlight) {
        this.options.log.info({ key: this.options.key }, 'cancelling the periodic sync in flight; the final snapshot supersedes it');
        this.tickController?.abort(new SupersededError());
      }
      await this.stop();
      const token = await this.detector.probe();
      if (token === null) return { uploaded: undefined, backup: undefined, note: 'no local database; nothing to upload' };
      let uploaded: ObjectInfo | undefined;
      // Continuous replication's final base, when it covers the database; else the snapshot below.
      const replaced = finalUpload ? await finalUpload(signal) : undefined;
      if (replaced) {
        // Counted by recordUpload (every base is reported there), not here.
        await this.adopt(replaced, token);
        uploaded = replaced.uploaded;
      } else if (this.baseline.token === undefined || token !== this.baseline.token || this.baseline.sha256 === undefined) {
        const outcome = await snapshotAndUpload(this.options, { signal, skipIfSha256: this.baseline.sha256 });
        await this.adopt(outcome, token);
        uploaded = outcome.uploaded;
      }
      let backup: BackupOutcome;
      try {
        backup = await writeBackupKey(this.options, this.baseline.versionId, at, signal, this.baseline.sha256);
      } catch (error) {
        return { uploaded, backup: undefined, backupError: backupNotWritten(error) };
      }
      if (this.options.retention) await pruneQuietly(this.options, this.options.retention, signal);
      return { uploaded, backup: backup.written, backupExisting: backup.existing };
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.detector.close();
    }
  }

  status(): SyncStatus {
    return {
      running: this.running,
      syncing: this.inFlight !== undefined,
      lastUpload: this.lastUpload,
      lastCheckAt: this.lastCheckAt?.toISOString(),
      nextRunAt: this.nextRunAt?.toISOString(),
      unsyncedSince: this.unsyncedSince?.toISOString(),
      uploads: this.uploads,
      skippedUnchanged: this.skippedUnchanged,
      consecutiveFailures: this.failures,
      lastError: this.lastError,
    };
  }

  /** Release the probe connection. Idempotent. */
  close(): void {
    this.detector.close();
  }
}
