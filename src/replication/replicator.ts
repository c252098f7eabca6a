/**
 * Continuous replication, the capture side (docs/continuous-replication.md, "Capture"): every tick, read
 * the commits that reached the `-wal` file into the pending segment, seal it into a segment after
 * DB_SYNC_SEGMENT_INTERVAL (or 8 MiB), ship segments in order, keep the WAL bounded, and take bases.
 *
 * Guarantees (see the doc's "Guarantees after a crash"):
 * - a segment holds whole transactions only, in commit order after the previous one; seqs have no gaps;
 * - the pin invariant: a read transaction is always held, and every commit present when the newer pin
 *   began is read before the older pin is released, so no committed frame is overwritten unseen;
 * - anything that breaks continuity drops the pending segment and the spool and starts a new generation
 *   from a new base, with the reason logged: never a guess;
 * - idle (no commit) costs no request.
 * The replicator never touches the process; its caller starts it, stops it and finishes it.
 */
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type Database from 'better-sqlite3';
import { DEFAULT_BASE_INTERVAL_MS, DEFAULT_SEGMENT_INTERVAL_MS, MIN_SPOOL_MAX_BYTES } from '../config.js';
import { DbSyncError, toError, wrapError } from '../errors.js';
import { removeQuietly } from '../fs-atomic.js';
import type { Snapshot } from '../core/snapshot.js';
import type { UploadContext, UploadOutcome } from '../core/upload.js';
import { copyBase, uploadBase } from './base.js';
import { formatChecksum, type PageHashes } from './checksum.js';
import { CaptureConnections, isWalDatabase } from './connections.js';
import { newGenerationId, type ChainPosition } from './layout.js';
import { PendingSegment, SEGMENT_SEAL_BYTES, type SealedSegment } from './pending.js';
import { SegmentShipper, type SegmentPut, type ShipperStatus } from './shipper.js';
import { latestFrames } from './wal.js';
import { WalFollower, type FollowOutcome } from './wal-follower.js';

/** How often the capture looks at the WAL. */
export const CAPTURE_TICK_MS = 200;
/** The WAL-bounding seal runs once the current WAL holds this many frames. */
export const SEAL_FRAMES = 1000;
/** The spool cap's default share of the database (at least MIN_SPOOL_MAX_BYTES). */
export const SPOOL_MAX_SHARE = 0.25;
/** A new base once the segments since the last one add up to more than this share of the database. */
export const BASE_AFTER_SEGMENT_SHARE = 0.5;
/** Backoff of a failed generation start: 5 s doubling to 60 s. */
const GENERATION_RETRY_MIN_MS = 5_000;
const GENERATION_RETRY_MAX_MS = 60_000;
/** Failed segment uploads in a row after which the interval loop reports a failure. */
const SHIP_FAILURES_REPORTED = 3;
/** The final sync waits at most this long for queued segments before its base. */
const FINAL_DRAIN_MAX_MS = 5_000;
/** Between attempts of a final base that has no generation to extend. */
const FINAL_RETRY_MS = 250;
/** A database not in WAL mode is looked at again this often (a header read). */
const JOURNAL_MODE_CHECK_MS = 1_000;

export type ReplicatorState = 'waiting-for-wal' | 'starting' | 'running' | 'broken' | 'stopped';

export interface ReplicatorOptions extends UploadContext {
  /** Segments go here (the daemon: the store's put fenced by the lease's local validity). */
  readonly putSegment: SegmentPut;
  readonly segmentIntervalMs?: number | undefined;
  readonly baseIntervalMs?: number | undefined;
  /** Spool cap in bytes; undefined = 25 % of the database, at least 64 MiB. */
  readonly spoolMaxBytes?: number | undefined;
  readonly tickMs?: number | undefined;
  /** Called after each base reached the store. */
  readonly onBase?: ((outcome: UploadOutcome) => void) | undefined;
  /**
   * Whether nothing needs uploading until the database changes (the store's current `KEY` holds it:
   * restored, or verified identical at start): the first generation's base is then uploaded only once a
   * commit follows it.
   */
  readonly storeHoldsDatabase?: (() => boolean) | undefined;
}

export interface ReplicationStatus {
  readonly state: ReplicatorState;
  readonly generation: string | undefined;
  /** Last seq sealed, and last seq that reached the store, in the current generation. */
  readonly sealedSeq: number;
  readonly shippedSeq: number;
  /** Capture time of the last shipped segment's last commit. */
  readonly lastShippedCommitAt: string | undefined;
  /** Age of the oldest captured commit not yet in the store (0 when none waits). */
  readonly lagMs: number;
  readonly segmentsShipped: number;
  readonly bytesShipped: number;
  readonly spoolBytes: number;
  readonly bases: number;
  /** Whether a base is being copied or uploaded right now (its requests are still to come). */
  readonly baseInProgress: boolean;
  readonly lastBase:
    { readonly at: string; readonly gen: string; readonly seq: number; readonly versionId: string | undefined } | undefined;
  readonly generations: number;
  readonly lastBreak: { readonly at: string; readonly reason: string } | undefined;
  readonly shipping: ShipperStatus;
}

interface Generation {
  readonly id: string;
  /** Last seq sealed. */
  seq: number;
  /** The running page hashes; undefined until the generation's first base has been hashed. */
  hashes: PageHashes | undefined;
  pageSize: number | undefined;
  /** Bytes of segments sealed since the last base's position. */
  segmentBytesSinceBase: number;
  /** Whether a segment was shipped since the last base. */
  shippedSinceBase: boolean;
  /** Monotonic ms of the last base's position. */
  baseAtMs: number;
  /** Whether this generation's first base is in the store. */
  based: boolean;
  /**
   * Fires when the generation is dropped: its base copy or upload in flight stops, so a dropped chain's
   * base (older content) can never land as `KEY` after the next generation's.
   */
  readonly dropped: AbortController;
  /**
   * The first base's reader X, its read transaction open at the generation's position, not copied yet:
   * nothing needs uploading until the database changes, so the copy starts with the first commit captured
   * (never, for a run without one). No disk space is spent meanwhile; the open read transaction holds back
   * nothing while nothing is written.
   */
  deferredReader: Database.Database | undefined;
}

export class Replicator {
  private stateValue: ReplicatorState = 'waiting-for-wal';
  private readonly follower: WalFollower;
  private readonly shipper: SegmentShipper;
  private readonly spoolDir: string;
  private connections: CaptureConnections | undefined;
  private gen: Generation | undefined;
  private pending: PendingSegment | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** Serializes ticks, seals and barriers: only one of them touches the WAL cursor and the pins at a time. */
  private exclusiveChain: Promise<unknown> = Promise.resolve();
  private baseInFlight: Promise<void> | undefined;
  /** Fires on {@link stop}: cancels bases in flight. */
  private readonly stopController = new AbortController();
  private generationRetryAtMs = 0;
  private generationFailures = 0;
  private journalCheckAtMs = 0;
  private walHintLogged = false;
  /** The WAL-bounding seal is tried again only after this many more frames (its checkpoint may be held up). */
  private sealRetryFrames = SEAL_FRAMES;
  private overflowCounter = 0;
  // Status.
  private shippedSeq = 0;
  private lastShippedCommitMs: number | undefined;
  private segmentsShipped = 0;
  private bytesShipped = 0;
  private bases = 0;
  private lastBase: ReplicationStatus['lastBase'];
  private generations = 0;
  private lastBreak: ReplicationStatus['lastBreak'];
  /** Since when (Unix ms) commits are not covered by a chain: a break, until the next generation's base is in the store. */
  private unprotectedSinceMs: number | undefined;

  constructor(private readonly options: ReplicatorOptions) {
    this.follower = new WalFollower(`${options.dbPath}-wal`);
    this.spoolDir = join(`${options.dbPath}.db-sync`, 'spool');
    this.shipper = new SegmentShipper({
      key: options.key,
      put: options.putSegment,
      log: options.log,
      onShipped: (segment) => this.shipped(segment),
    });
  }

  get state(): ReplicatorState {
    return this.stateValue;
  }

  /** Whether continuous replication covers the database now (the interval snapshots stand down meanwhile). */
  get active(): boolean {
    return this.stateValue !== 'waiting-for-wal' && this.stateValue !== 'stopped';
  }

  /**
   * For the interval loop: false when continuous replication does not cover the database (not WAL, or
   * stopped), true when it does and works, an Error when it covers it but is failing (a generation that
   * cannot start, segments that keep failing to ship), so the loop reports the failure as its own.
   */
  coverage(): boolean | Error {
    if (!this.active) return false;
    if (this.stateValue === 'broken' && this.lastBreak) {
      return new DbSyncError(
        'Failure',
        `continuous replication: no generation running since ${this.lastBreak.at}: ${this.lastBreak.reason}`,
      );
    }
    const shipping = this.shipper.status();
    const failure = this.shipper.lastFailure;
    if (shipping.consecutiveFailures >= SHIP_FAILURES_REPORTED && failure) {
      // The storage error itself (its kind, code and hint: "was denied; grant the task role …").
      return wrapError(
        `continuous replication: ${shipping.queued} segment(s) not shipped, ${shipping.consecutiveFailures} failures in a row`,
        failure,
      );
    }
    return true;
  }

  private get segmentIntervalMs(): number {
    return this.options.segmentIntervalMs ?? DEFAULT_SEGMENT_INTERVAL_MS;
  }

  /**
   * Start ticking. When the database is in WAL mode now, the first generation starts before this returns
   * (so the caller can stand the interval snapshots down at once); otherwise it is looked at again every second.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.clearSpool();
    await this.exclusive(() => this.tick());
    this.schedule();
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      void this.exclusive(() => this.tick())
        .catch((error: unknown) => this.options.log.error({ err: toError(error).message }, 'capture tick failed'))
        .finally(() => this.schedule());
    }, this.options.tickMs ?? CAPTURE_TICK_MS);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.exclusiveChain.then(fn, fn);
    this.exclusiveChain = run.catch(() => undefined);
    return run;
  }

  private async clearSpool(): Promise<void> {
    // Left by an earlier process: its generation ended with it, and a new one starts from a new base.
    await mkdir(this.spoolDir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.spoolDir)) await removeQuietly(join(this.spoolDir, name));
  }

  private async tick(): Promise<void> {
    const now = performance.now();
    switch (this.stateValue) {
      case 'waiting-for-wal':
        if (now < this.journalCheckAtMs) return;
        this.journalCheckAtMs = now + JOURNAL_MODE_CHECK_MS;
        if (isWalDatabase(this.options.dbPath)) await this.startGeneration('db-sync started');
        else await this.noteNotWal();
        return;
      case 'broken':
        if (now >= this.generationRetryAtMs) await this.startGeneration(this.lastBreak?.reason ?? 'db-sync started');
        return;
      case 'starting':
      case 'running':
        await this.captureTick();
        return;
      case 'stopped':
        return;
    }
  }

  /** Once: say that WAL mode turns continuous replication on, and how. */
  private async noteNotWal(): Promise<void> {
    if (this.walHintLogged) return;
    const exists = await stat(this.options.dbPath).then(
      (s) => s.size > 0,
      () => false,
    );
    if (!exists) return;
    this.walHintLogged = true;
    this.options.log.warn(
      { path: this.options.dbPath },
      'continuous replication is off for this database: it is not in WAL mode, so it is snapshotted every interval instead. ' +
        "WAL mode turns continuous replication on (about a second of commits at risk instead of an interval): PRAGMA journal_mode=wal (Django: OPTIONS={'init_command': 'PRAGMA journal_mode=wal'})",
    );
  }

  // ---- Generations ----

  /**
   * Start a new generation: drop what the old one had not shipped, take the barrier, read the WAL to its
   * end (the new chain starts there), pin, begin the base's read transaction, release the barrier; then
   * copy, hash and upload the base in the background while the capture goes on.
   */
  private async startGeneration(reason: string): Promise<void> {
    const { log } = this.options;
    await this.dropGeneration();
    if (this.baseInFlight) {
      // A dropped generation's base is still settling (its upload aborting). The new generation's base must
      // be the last write to KEY, so it starts on a tick after that one has finished or failed. (Not awaited
      // here: this runs in the exclusive section, which that base may be waiting for.)
      this.stateValue = 'broken';
      this.generationRetryAtMs = 0;
      return;
    }
    if (!isWalDatabase(this.options.dbPath)) {
      this.stateValue = 'waiting-for-wal';
      return;
    }
    let connections: CaptureConnections;
    try {
      connections = this.connections = new CaptureConnections(this.options.dbPath);
    } catch (error) {
      this.generationFailed(`cannot open the database: ${toError(error).message}`);
      return;
    }
    // Read what the WAL holds now without the barrier (a large WAL left by a crash takes a while), so that
    // under the barrier, where the app's writers wait, only what was appended since is read.
    this.follower.reset();
    await this.follower.poll(async () => undefined).catch(() => undefined);
    if (!connections.tryBarrier()) {
      log.debug('generation start: the app holds the write lock; trying again next tick');
      this.stateValue = 'broken';
      return;
    }
    let x: Database.Database;
    try {
      let outcome = await this.follower.poll(async () => undefined);
      if (outcome.kind === 'broken') {
        // Restarted more than once since the read above: read the WAL as it is now, from its start.
        this.follower.reset();
        outcome = await this.follower.poll(async () => undefined);
      }
      if (outcome.kind === 'broken') throw new Error(outcome.reason);
      connections.releaseAllPins();
      connections.beginPin();
      x = connections.openBaseReader();
    } catch (error) {
      this.generationFailed(`generation start: ${toError(error).message}`);
      return;
    } finally {
      connections.endBarrier();
    }
    const gen: Generation = {
      id: newGenerationId(),
      seq: 0,
      hashes: undefined,
      pageSize: undefined,
      segmentBytesSinceBase: 0,
      shippedSinceBase: false,
      baseAtMs: performance.now(),
      based: false,
      dropped: new AbortController(),
      deferredReader: undefined,
    };
    this.gen = gen;
    this.shippedSeq = 0;
    this.generations += 1;
    this.stateValue = 'starting';
    log.info({ gen: gen.id, reason }, 'continuous replication: new generation; taking its base');
    if (this.generations === 1 && this.options.storeHoldsDatabase?.() === true) {
      gen.deferredReader = x;
      this.stateValue = 'running';
      log.info({ gen: gen.id }, 'continuous replication: the store holds this database; its base is taken with the first change');
      return;
    }
    this.startFirstBase(gen, x);
  }

  /** Aborts a base of `gen` on stop (or finish's deadline) and when `gen` is dropped. */
  private baseSignal(gen: Generation): AbortSignal {
    return AbortSignal.any([this.stopController.signal, gen.dropped.signal]);
  }

  private startFirstBase(gen: Generation, x: Database.Database): void {
    this.baseInFlight = this.firstBase(gen, x).finally(() => (this.baseInFlight = undefined));
  }

  /** Close a deferred first base's reader (nothing was written, or the generation ends). */
  private closeDeferredReader(gen: Generation | undefined): void {
    const x = gen?.deferredReader;
    if (!gen || !x) return;
    gen.deferredReader = undefined;
    try {
      if (x.inTransaction) x.exec('ROLLBACK');
      x.close();
    } catch {
      // Best effort: closing a read-only connection.
    }
  }

  private async firstBase(gen: Generation, x: Database.Database): Promise<void> {
    try {
      const { snapshot, hashes } = await copyBase(x, this.options.dbPath, this.options, this.baseSignal(gen), this.options.snapshotPace);
      if (this.gen !== gen) {
        await removeQuietly(snapshot.path);
        return;
      }
      // From now on seals can compute checksums: the base's hashes are the chain's position 0.
      gen.hashes = hashes;
      gen.pageSize = hashes.pageSize;
      await this.uploadFirstBase(gen, snapshot, hashes.checksum);
    } catch (error) {
      await this.firstBaseFailed(gen, error);
    }
  }

  /** Upload a generation's first base; `checksum` is the chain's at seq 0 (the running hashes may have moved on). */
  private async uploadFirstBase(gen: Generation, snapshot: Snapshot, checksum: bigint): Promise<void> {
    const outcome = await uploadBase(this.options, snapshot, { gen: gen.id, seq: 0, checksum }, { signal: this.baseSignal(gen) });
    if (this.gen !== gen) return;
    gen.based = true;
    this.generationFailures = 0;
    this.unprotectedSinceMs = undefined;
    if (this.stateValue === 'starting') this.stateValue = 'running';
    this.recordBase(gen.id, 0, outcome);
  }

  private async firstBaseFailed(gen: Generation, error: unknown): Promise<void> {
    if (this.gen !== gen) return;
    await this.exclusive(async () => {
      if (this.gen !== gen) return;
      await this.dropGeneration();
      this.generationFailed(`base of generation ${gen.id} failed: ${toError(error).message}`);
    });
  }

  private generationFailed(reason: string): void {
    this.generationFailures += 1;
    const delayMs = Math.min(GENERATION_RETRY_MAX_MS, GENERATION_RETRY_MIN_MS * 2 ** Math.min(this.generationFailures - 1, 8));
    this.generationRetryAtMs = performance.now() + delayMs;
    this.stateValue = 'broken';
    this.lastBreak = { at: new Date().toISOString(), reason };
    this.unprotectedSinceMs ??= Date.now();
    this.options.log.error({ reason, retryInMs: delayMs }, 'continuous replication: could not start a generation; retrying');
  }

  /** Continuity broke: log why, drop the pending segment and the spool, and start a new generation next tick. */
  private async breakContinuity(reason: string): Promise<void> {
    const gen = this.gen;
    await this.dropGeneration();
    this.stateValue = 'broken';
    this.generationRetryAtMs = 0;
    this.lastBreak = { at: new Date().toISOString(), reason };
    this.unprotectedSinceMs ??= Date.now();
    this.options.log.warn(
      { gen: gen?.id, lastSeq: gen?.seq, reason },
      `continuous replication: continuity broken (${reason}); starting a new generation from a new base`,
    );
  }

  /** Forget the current generation: release the pins, drop the pending segment and every unshipped segment. */
  private async dropGeneration(): Promise<void> {
    this.gen?.dropped.abort(new Error('the generation was dropped'));
    this.closeDeferredReader(this.gen);
    this.gen = undefined;
    // Reopened by the next generation: the database file may have been replaced (a new inode).
    this.closeConnections();
    await this.pending?.discard();
    this.pending = undefined;
    const dropped = await this.shipper.dropAll();
    if (dropped > 0) this.options.log.warn({ dropped }, 'continuous replication: unshipped segments dropped');
  }

  private closeConnections(): void {
    this.connections?.close();
    this.connections = undefined;
  }

  // ---- The tick ----

  private async captureTick(): Promise<void> {
    const gen = this.gen;
    const connections = this.connections;
    if (!gen || !connections) return;
    connections.beginPin();
    const outcome = await this.readWal(gen);
    connections.releaseOldPin();
    if (outcome.kind === 'broken') {
      await this.breakContinuity(outcome.reason);
      return;
    }
    if (outcome.kind === 'frames' && gen.deferredReader) {
      // The first change since the start: the base at the generation's position is needed now.
      const x = gen.deferredReader;
      gen.deferredReader = undefined;
      this.options.log.info({ gen: gen.id }, 'continuous replication: first change; taking the base');
      this.startFirstBase(gen, x);
    }
    await this.sealIfDue(gen, false);
    if (this.gen !== gen) return;
    const cursor = this.follower.cursor;
    if (outcome.kind === 'frames' && outcome.restarted) this.sealRetryFrames = SEAL_FRAMES;
    if (cursor && cursor.frames >= this.sealRetryFrames) await this.boundWal(gen, connections);
    if (this.gen !== gen) return;
    if (await this.overSpoolCap(gen)) return;
    this.maybeBase(gen);
  }

  /** Read committed frames into the pending segment. */
  private async readWal(gen: Generation): Promise<FollowOutcome> {
    try {
      return await this.follower.poll(async (scan, readPage) => {
        const header = scan.cursor.header;
        if (gen.pageSize !== undefined && header.pageSize !== gen.pageSize) {
          throw new Error(`the page size changed from ${gen.pageSize} to ${header.pageSize}`);
        }
        this.pending ??= new PendingSegment(header.pageSize, join(this.spoolDir, `pending-${++this.overflowCounter}.pages`));
        for (const frame of latestFrames(scan.frames)) await this.pending.addPage(frame.pgno, await readPage(frame));
        this.pending.addCommits({
          commits: scan.commits.length,
          dbSizePages: scan.commits.at(-1)!.dbSizePages,
          atMs: Date.now(),
          walSalt1: header.salt1,
          walSalt2: header.salt2,
          walFirstFrame: scan.frames[0]!.frame,
          walLastFrame: scan.commits.at(-1)!.frame,
        });
      });
    } catch (error) {
      return { kind: 'broken', reason: `reading the WAL failed: ${toError(error).message}` };
    }
  }

  /** Seal the pending segment when due (its oldest commit is a segment interval old, or it is large), or when `force`d. */
  private async sealIfDue(gen: Generation, force: boolean): Promise<SealedSegment | undefined> {
    const pending = this.pending;
    if (!pending || pending.empty || !gen.hashes) return undefined;
    const due =
      force || pending.pageBytes >= SEGMENT_SEAL_BYTES || Date.now() - (pending.oldestCommitMs ?? Date.now()) >= this.segmentIntervalMs;
    if (!due) return undefined;
    const seq = gen.seq + 1;
    const path = join(this.spoolDir, `${gen.id}-${seq.toString(16).padStart(16, '0')}.seg`);
    let sealed: SealedSegment;
    try {
      sealed = await pending.seal(gen.id, seq, gen.hashes, path);
    } catch (error) {
      await removeQuietly(path);
      await this.breakContinuity(`sealing segment ${seq} failed: ${toError(error).message}`);
      return undefined;
    }
    this.pending = undefined;
    await pending.discard();
    gen.seq = seq;
    gen.segmentBytesSinceBase += sealed.sizeBytes;
    this.shipper.enqueue(sealed);
    this.options.log.debug(
      { gen: gen.id, seq, pages: sealed.pages, commits: sealed.commits, sizeBytes: sealed.sizeBytes },
      'segment sealed',
    );
    return sealed;
  }

  private shipped(segment: SealedSegment): void {
    if (this.gen?.id !== segment.gen) return;
    this.shippedSeq = segment.seq;
    this.lastShippedCommitMs = segment.lastCommitMs;
    this.segmentsShipped += 1;
    this.bytesShipped += segment.sizeBytes;
    this.gen.shippedSinceBase = true;
  }

  /**
   * The WAL-bounding seal: with the barrier held, read the WAL to its end, release both pins, run a
   * PASSIVE checkpoint, pin again (on slot 0 when it backfilled everything), release the barrier. The
   * app's next write then restarts the WAL. Skipped when the app holds the write lock past 100 ms.
   */
  private async boundWal(gen: Generation, connections: CaptureConnections): Promise<void> {
    if (!connections.tryBarrier()) return;
    let result: ReturnType<CaptureConnections['checkpointPassive']> | undefined;
    try {
      const outcome = await this.readWal(gen);
      if (outcome.kind === 'broken') {
        connections.endBarrier();
        await this.breakContinuity(outcome.reason);
        return;
      }
      connections.releaseAllPins();
      result = connections.checkpointPassive();
      connections.beginPin();
    } finally {
      connections.endBarrier();
    }
    const frames = this.follower.cursor?.frames ?? 0;
    this.sealRetryFrames = frames + SEAL_FRAMES;
    this.options.log.debug({ frames, ...result }, 'WAL-bounding seal: checkpointed; the next write restarts the WAL');
  }

  /** Over the spool cap: drop the spool and start a new generation when the store answers again. */
  private async overSpoolCap(gen: Generation): Promise<boolean> {
    const spool = this.spoolBytes();
    const cap = this.spoolCap(gen);
    if (spool <= cap) return false;
    await this.breakContinuity(
      `the spool holds ${spool} bytes of unshipped changes, over its cap of ${cap} (DB_SYNC_SPOOL_MAX); the store is unreachable or too slow`,
    );
    return true;
  }

  private spoolBytes(): number {
    return this.shipper.queuedBytes + (this.pending?.diskBytes ?? 0);
  }

  private spoolCap(gen: Generation | undefined): number {
    if (this.options.spoolMaxBytes !== undefined) return this.options.spoolMaxBytes;
    const dbBytes = (gen?.hashes?.pageCount ?? 0) * (gen?.pageSize ?? 0);
    return Math.max(MIN_SPOOL_MAX_BYTES, Math.floor(dbBytes * SPOOL_MAX_SHARE));
  }

  // ---- Bases after the first ----

  /** A base every DB_SYNC_BASE_INTERVAL when segments were shipped since, or when the segments since outgrow half the database. */
  private maybeBase(gen: Generation): void {
    if (this.baseInFlight || !gen.based || !gen.hashes) return;
    const dbBytes = gen.hashes.pageCount * gen.hashes.pageSize;
    const byInterval =
      gen.shippedSinceBase && performance.now() - gen.baseAtMs >= (this.options.baseIntervalMs ?? DEFAULT_BASE_INTERVAL_MS);
    const bySize = gen.segmentBytesSinceBase > dbBytes * BASE_AFTER_SEGMENT_SHARE;
    if (!byInterval && !bySize) return;
    const why = bySize ? 'segments since the last base exceed half the database' : 'base interval';
    this.baseInFlight = this.exactBase(gen, why, undefined)
      .then(() => undefined)
      .catch((error: unknown) => {
        // The chain goes on from the previous base: a failed base only makes a restore replay more.
        this.options.log.error({ gen: gen.id, err: toError(error).message }, 'base failed; the chain continues from the previous base');
        gen.baseAtMs = performance.now();
      })
      .finally(() => (this.baseInFlight = undefined));
  }

  /**
   * A base at an exact position: barrier, read the WAL to its end, seal (its seq is the base's chain-seq),
   * begin X, release the barrier; then copy, check the copy's checksum against the chain's, and upload.
   * @param waitForBarrier keep trying for the barrier until this signal fires (shutdown); undefined = once.
   */
  private async exactBase(gen: Generation, why: string, waitForBarrier: AbortSignal | undefined): Promise<UploadOutcome | undefined> {
    // finish() aborts stopController when its own signal fires, so this covers both, and a dropped generation.
    const signal = this.baseSignal(gen);
    const position = await this.exclusive(async () => {
      const connections = this.connections;
      if (this.gen !== gen || !connections || !gen.hashes) return undefined;
      while (!connections.tryBarrier()) {
        if (!waitForBarrier) return undefined;
        waitForBarrier.throwIfAborted();
      }
      try {
        connections.beginPin();
        const outcome = await this.readWal(gen);
        connections.releaseOldPin();
        if (outcome.kind === 'broken') {
          connections.endBarrier();
          await this.breakContinuity(outcome.reason);
          return undefined;
        }
        await this.sealIfDue(gen, true);
        if (this.gen !== gen) return undefined;
        return { seq: gen.seq, checksum: gen.hashes.checksum, x: connections.openBaseReader(), bytesAtSeal: gen.segmentBytesSinceBase };
      } finally {
        connections.endBarrier();
      }
    });
    if (!position) return undefined;
    this.options.log.info({ gen: gen.id, seq: position.seq, why }, 'taking a base');
    // The final base (waitForBarrier: the shutdown) runs as fast as it can; the others are paced.
    const pace = waitForBarrier ? undefined : this.options.snapshotPace;
    const { snapshot, hashes } = await copyBase(position.x, this.options.dbPath, this.options, signal, pace);
    let chain: ChainPosition = { gen: gen.id, seq: position.seq, checksum: position.checksum };
    if (hashes.checksum !== position.checksum) {
      // The copy is a good snapshot (SQLite made it) but the chain's running checksum disagrees with it: the
      // chain cannot be trusted past this point. Upload the copy as the first base of a generation of its
      // own (no segment follows it), and start a new generation for what comes next. Never guess.
      const reason = `the base's checksum ${formatChecksum(hashes.checksum)} differs from the chain's ${formatChecksum(position.checksum)} at seq ${position.seq}`;
      chain = { gen: newGenerationId(), seq: 0, checksum: hashes.checksum };
      await this.exclusive(() => (this.gen === gen ? this.breakContinuity(reason) : Promise.resolve()));
    }
    const outcome = await uploadBase(this.options, snapshot, chain, { signal });
    if (this.gen === gen) {
      gen.baseAtMs = performance.now();
      gen.shippedSinceBase = false;
      gen.segmentBytesSinceBase -= position.bytesAtSeal;
    }
    this.recordBase(chain.gen, chain.seq, outcome);
    return outcome;
  }

  private recordBase(gen: string, seq: number, outcome: UploadOutcome): void {
    this.bases += 1;
    this.lastBase = { at: new Date().toISOString(), gen, seq, versionId: outcome.uploaded?.versionId };
    this.options.onBase?.(outcome);
  }

  // ---- Stopping ----

  /**
   * The shutdown: stop ticking, seal and ship the pending segment, take and upload a final base at an exact
   * position. Without a running generation (broken, never based), the final base starts a new one.
   * @returns the final base's upload (the backup key is written from it); undefined when the database is
   *   not in WAL mode (the caller falls back to a snapshot).
   * @throws when the final base cannot be uploaded before `signal` fires.
   */
  async finish(signal: AbortSignal): Promise<UploadOutcome | undefined> {
    this.running = false;
    clearTimeout(this.timer);
    // The deadline or a second signal cancels whatever base is in flight, the final one included.
    const cancel = (): void => this.stopController.abort(signal.reason);
    signal.addEventListener('abort', cancel, { once: true });
    try {
      await this.baseInFlight?.catch(() => undefined);
      if (this.stateValue === 'waiting-for-wal' || this.stateValue === 'stopped') return undefined;
      // Until the deadline: a generation whose first base is in the store, then an exact base after its
      // last commit. A break on the way (the barrier's read found the WAL changed) starts a fresh one.
      for (;;) {
        if (signal.aborted)
          throw new Error(`final base failed: ${this.lastBreak?.reason ?? 'no generation could start before the deadline'}`);
        const gen = this.gen;
        if (gen?.deferredReader) {
          const unchanged = await this.exclusive(async () => {
            // Read what came since the last tick: a commit starts the base.
            if (this.gen === gen) await this.captureTick();
            return this.gen === gen && gen.deferredReader !== undefined;
          });
          // Not a single commit since the start: the store holds this database; the final sync says so.
          if (unchanged) return undefined;
          await this.baseInFlight;
          continue;
        }
        if (!gen?.based) {
          await this.exclusive(() => this.startGeneration('final base'));
          // Not (or no longer readable as) a WAL database: the final snapshot decides, and reports why.
          if ((this.stateValue as ReplicatorState) === 'waiting-for-wal') return undefined;
          await this.baseInFlight;
          if (!this.gen?.based) await sleep(FINAL_RETRY_MS, undefined, { signal }).catch(() => undefined);
          continue;
        }
        await this.exclusive(async () => {
          if (this.gen === gen) await this.sealIfDue(gen, true);
        });
        // Bounded: the final base holds these commits anyway, and must keep most of the deadline for itself.
        await this.shipper.drain(signal, FINAL_DRAIN_MAX_MS).catch((error: unknown) => {
          // The base below holds these commits anyway; a store that cannot take a segment will refuse it too.
          this.options.log.warn({ err: toError(error).message }, 'final segments not shipped; the final base holds their commits');
        });
        const outcome = await this.exactBase(gen, 'shutdown', signal);
        if (outcome) return outcome;
      }
    } finally {
      signal.removeEventListener('abort', cancel);
      await this.stop();
    }
  }

  /** Stop without a final base (a second signal, or the app never ran). Idempotent. */
  async stop(): Promise<void> {
    this.running = false;
    // Cancels a base in flight (a copy between steps, an upload): stopping must not wait for one.
    this.stopController.abort(new Error('continuous replication stopped'));
    clearTimeout(this.timer);
    await this.exclusive(async () => {
      this.closeDeferredReader(this.gen);
      await this.shipper.stop();
      await this.pending?.discard();
      this.pending = undefined;
      this.closeConnections();
      this.stateValue = 'stopped';
    });
  }

  status(): ReplicationStatus {
    const oldest = Math.min(
      this.pending?.oldestCommitMs ?? Infinity,
      this.shipper.oldestCommitMs ?? Infinity,
      this.unprotectedSinceMs ?? Infinity,
    );
    return {
      state: this.stateValue,
      generation: this.gen?.id,
      sealedSeq: this.gen?.seq ?? 0,
      shippedSeq: this.shippedSeq,
      lastShippedCommitAt: this.lastShippedCommitMs !== undefined ? new Date(this.lastShippedCommitMs).toISOString() : undefined,
      lagMs: Number.isFinite(oldest) ? Math.max(0, Date.now() - oldest) : 0,
      segmentsShipped: this.segmentsShipped,
      bytesShipped: this.bytesShipped,
      spoolBytes: this.spoolBytes(),
      bases: this.bases,
      baseInProgress: this.baseInFlight !== undefined,
      lastBase: this.lastBase,
      generations: this.generations,
      lastBreak: this.lastBreak,
      shipping: this.shipper.status(),
    };
  }
}
